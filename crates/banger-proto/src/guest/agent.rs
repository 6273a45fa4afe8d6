//! The guest agent's line protocol (guest contract 4, docs/guest.md).
//!
//! The agent (`/usr/lib/banger/agent` in every image banger builds) reads
//! lines from its host-only channel ([`super::AGENT_PORT`]) and applies an
//! identity to a VM restored from a snapshot, before its network is
//! connected: files, MAC and address, hostname, clock. The host sends
//!
//! ```text
//! file PATH MODE UID GID BASE64     (any number; MODE octal; `-` is empty)
//! net MAC ADDRESS/PREFIX GATEWAY
//! hostname NAME
//! clock SECONDS.NANOS               (Unix time)
//! apply NONCE
//! ```
//!
//! and the agent answers `applied NONCE`, or `failed NONCE REASON` when a
//! line was malformed (then it applies nothing) or a step failed (then it
//! stops there; the host does not keep such a guest). Every
//! token is checked here before it is written and again by the agent: no
//! token holds a space, a newline or a shell metacharacter.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use base64::Engine as _;

use crate::vmops::GuestFile;

/// What a restored VM becomes.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// Written first (the per-VM files of the guest contract).
    pub files: Vec<GuestFile>,
    /// `02:ba:..` (`crate::ids::is_guest_mac`).
    pub mac: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// The VM's name.
    pub hostname: String,
    /// The guest's wall clock is set to this.
    pub clock: SystemTime,
}

impl std::fmt::Debug for Identity {
    // The files hold a private host key: their `Debug` shows lengths only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("files", &self.files)
            .field("mac", &self.mac)
            .field("ip", &self.ip)
            .field("prefix", &self.prefix)
            .field("gateway", &self.gateway)
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// The most one identity's lines may hold (files are at most 1 MiB each
/// before encoding; an identity is a few KiB).
pub const MAX_LINES_BYTES: usize = 4 << 20;

impl Identity {
    /// The lines that apply this identity, ending with `apply NONCE`;
    /// `nonce` is 1 to 32 lowercase hex characters. An error names the
    /// token that is not valid.
    pub fn lines(&self, nonce: &str) -> Result<String, String> {
        if nonce.is_empty()
            || nonce.len() > 32
            || !nonce
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(format!(
                "agent nonce {nonce:?}: expected 1-32 lowercase hex"
            ));
        }
        let mut out = String::new();
        for f in &self.files {
            super::check_guest_path(&f.path)
                .map_err(|r| format!("guest path {:?}: {r}", f.path))?;
            if f.mode > 0o7777 {
                return Err(format!("{}: mode {:o} is over 7777", f.path, f.mode));
            }
            // Never an empty token: the agent splits its lines on spaces.
            let b64 = match f.content.as_str() {
                "" => "-".to_string(),
                c => base64::engine::general_purpose::STANDARD.encode(c.as_bytes()),
            };
            writeln!(
                out,
                "file {} {:o} {} {} {b64}",
                f.path, f.mode, f.uid, f.gid
            )
            .expect("writing to a String");
        }
        if !crate::ids::is_guest_mac(&self.mac) {
            return Err(format!(
                "MAC {:?}: {}",
                self.mac,
                crate::ids::GUEST_MAC_RULE
            ));
        }
        if self.prefix == 0 || self.prefix > 30 {
            return Err(format!("prefix /{}: expected 1 to 30", self.prefix));
        }
        super::check_hostname(&self.hostname)
            .map_err(|r| format!("hostname {:?}: {r}", self.hostname))?;
        let since = self
            .clock
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        writeln!(
            out,
            "net {} {}/{} {}",
            self.mac, self.ip, self.prefix, self.gateway
        )
        .and_then(|()| writeln!(out, "hostname {}", self.hostname))
        .and_then(|()| writeln!(out, "clock {}.{:09}", since.as_secs(), since.subsec_nanos()))
        .and_then(|()| writeln!(out, "apply {nonce}"))
        .expect("writing to a String");
        if out.len() > MAX_LINES_BYTES {
            return Err(format!(
                "the identity's lines hold {} bytes, over {MAX_LINES_BYTES}",
                out.len()
            ));
        }
        Ok(out)
    }
}

/// The agent's answer to `apply NONCE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Applied,
    /// Its reason, as the agent wrote it.
    Failed(String),
}

/// `line` (one line from the agent, without its newline) as the answer
/// for `nonce`: `None` when it answers something else (an earlier
/// request's reply, or noise), which the caller skips.
pub fn reply(line: &str, nonce: &str) -> Option<Reply> {
    let mut words = line.trim_end_matches('\r').splitn(3, ' ');
    let (verb, got) = (words.next()?, words.next()?);
    if got != nonce {
        return None;
    }
    match verb {
        "applied" => Some(Reply::Applied),
        "failed" => Some(Reply::Failed(words.next().unwrap_or("").to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            files: vec![GuestFile {
                path: "/etc/hostname".into(),
                mode: 0o644,
                uid: 0,
                gid: 0,
                content: "dev2\n".into(),
            }],
            mac: "02:ba:0a:00:00:07".into(),
            ip: Ipv4Addr::new(10, 0, 0, 7),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            hostname: "dev2".into(),
            clock: SystemTime::UNIX_EPOCH + Duration::new(1_765_000_000, 5),
        }
    }

    #[test]
    fn an_identity_is_one_line_per_step_ending_with_apply() {
        let lines = identity().lines("ab12").unwrap();
        assert_eq!(
            lines,
            "file /etc/hostname 644 0 0 ZGV2Mgo=\n\
             net 02:ba:0a:00:00:07 10.0.0.7/24 10.0.0.1\n\
             hostname dev2\n\
             clock 1765000000.000000005\n\
             apply ab12\n"
        );
    }

    #[test]
    fn an_empty_file_is_a_dash_not_an_empty_token() {
        let mut id = identity();
        id.files[0].content = String::new();
        let lines = id.lines("1").unwrap();
        assert!(
            lines.starts_with("file /etc/hostname 644 0 0 -\n"),
            "{lines}"
        );
    }

    #[test]
    fn a_token_that_is_not_valid_is_refused_by_name() {
        let mut bad = identity();
        bad.files[0].path = "/etc/a b".into();
        assert!(bad.lines("1").unwrap_err().contains("/etc/a b"));
        let mut bad = identity();
        bad.hostname = "dev;reboot".into();
        assert!(bad.lines("1").unwrap_err().contains("hostname"));
        let mut bad = identity();
        bad.mac = "02:ba:0a:00:00:07\napply 1".into();
        assert!(bad.lines("1").unwrap_err().contains("MAC"));
        assert!(identity().lines("XYZ").unwrap_err().contains("nonce"));
        let mut bad = identity();
        bad.prefix = 31;
        assert!(bad.lines("1").unwrap_err().contains("/31"));
    }

    #[test]
    fn replies_are_matched_to_their_nonce() {
        assert_eq!(reply("applied ab12", "ab12"), Some(Reply::Applied));
        assert_eq!(
            reply("failed ab12 net: RTNETLINK answers: File exists", "ab12"),
            Some(Reply::Failed("net: RTNETLINK answers: File exists".into()))
        );
        assert_eq!(reply("applied 99", "ab12"), None);
        assert_eq!(reply("banger-guest-ready", "ab12"), None);
        assert_eq!(reply("", "ab12"), None);
    }

    #[test]
    fn debug_never_shows_a_file_content() {
        let mut id = identity();
        id.files[0].content = "-----BEGIN OPENSSH PRIVATE KEY----- secret".into();
        assert!(!format!("{id:?}").contains("secret"));
    }
}
