//! The per-VM half of the guest contract (docs/guest.md): network config,
//! hostname, resolver, the owner's public key, and SSH host keys banger
//! generates so `known_hosts` is exact and checking strict.
//!
//! Keys: banger's own client key pair is `crate::identity`'s;
//! `state_dir/ssh/known_hosts` holds one `NAME.vm` line per VM.

use std::net::Ipv4Addr;
use std::path::Path;

use banger_proto::RpcError;
use banger_proto::vmops::GuestFile;

use super::internal;
use crate::identity::{keygen, read};

/// A fresh ed25519 host key pair for a guest: (private, public).
pub fn host_key(name: &str) -> Result<(String, String), RpcError> {
    let dir = tempfile::tempdir().map_err(|e| internal(format!("temp dir: {e}")))?;
    let key = dir.path().join("host");
    keygen(&key, &format!("{name}.vm"))?;
    Ok((read(&key)?, read(&key.with_extension("pub"))?))
}

/// What the guest needs to come up as `name` at `ip`.
pub struct GuestNet {
    pub name: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub mac: String,
    pub gateway: Ipv4Addr,
}

pub fn files(net: &GuestNet, owner_keys: &str, host_key: &(String, String)) -> Vec<GuestFile> {
    let root = |path: &str, mode: u32, content: String| GuestFile {
        path: path.to_string(),
        mode,
        uid: 0,
        gid: 0,
        content,
    };
    let GuestNet {
        name,
        ip,
        prefix,
        mac,
        gateway,
    } = net;
    vec![
        root("/etc/hostname", 0o644, format!("{name}\n")),
        root(
            "/etc/hosts",
            0o644,
            format!(
                "127.0.0.1 localhost\n127.0.1.1 {name}.vm {name}\n::1 localhost ip6-localhost\n"
            ),
        ),
        // IPv4 only (banger's bridge has no IPv6): with link-local
        // addressing and RAs on, networkd held the link "configuring" and
        // wait-online used its whole 15 s on every boot.
        root(
            "/etc/systemd/network/10-banger.network",
            0o644,
            format!(
                "# Written by banger for this VM.\n[Match]\nMACAddress={mac}\n\n[Network]\n\
                 Address={ip}/{prefix}\nGateway={gateway}\nDNS={gateway}\nDomains=vm\n\
                 LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
            ),
        ),
        root(
            "/etc/resolv.conf",
            0o644,
            format!("# Written by banger: the host's .vm DNS.\nnameserver {gateway}\nsearch vm\n"),
        ),
        root("/etc/banger/authorized_keys", 0o644, owner_keys.to_string()),
        root("/etc/ssh/ssh_host_ed25519_key", 0o600, host_key.0.clone()),
        root(
            "/etc/ssh/ssh_host_ed25519_key.pub",
            0o644,
            host_key.1.clone(),
        ),
    ]
}

/// One writer of banger's known_hosts at a time: two VM creates at once
/// each read the file, wrote the same `.tmp` and renamed it, so one rename
/// found it gone (ENOENT) and the other's line could be lost.
static KNOWN_HOSTS_WRITER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Replace `alias`'s line in banger's known_hosts with `public_key`.
pub fn set_known_host(
    known_hosts: &Path,
    alias: &str,
    public_key: Option<&str>,
) -> Result<(), RpcError> {
    let _writer = KNOWN_HOSTS_WRITER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    write_known_host(known_hosts, alias, public_key)
}

/// Move `from`'s line in banger's known_hosts to `to` (a pooled clone
/// taken under a new name keeps its host key); nothing when `from` has no
/// line.
pub fn rename_known_host(known_hosts: &Path, from: &str, to: &str) -> Result<(), RpcError> {
    let _writer = KNOWN_HOSTS_WRITER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let text = std::fs::read_to_string(known_hosts).unwrap_or_default();
    let Some(key) = text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some(from)).then(|| parts.collect::<Vec<_>>().join(" "))
    }) else {
        return Ok(());
    };
    write_known_host(known_hosts, to, Some(&key))?;
    write_known_host(known_hosts, from, None)
}

/// Drop every line of banger's known_hosts whose alias is not in `keep`
/// (the startup reconcile: lines a crash left, e.g. a pooled clone's
/// between its take and the move of its line). The aliases dropped.
pub fn retain_known_hosts(
    known_hosts: &Path,
    keep: &std::collections::HashSet<String>,
) -> Result<Vec<String>, RpcError> {
    let _writer = KNOWN_HOSTS_WRITER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let text = std::fs::read_to_string(known_hosts).unwrap_or_default();
    let stale: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|a| !keep.contains(*a))
        .map(str::to_string)
        .collect();
    for alias in &stale {
        write_known_host(known_hosts, alias, None)?;
    }
    Ok(stale)
}

/// [`set_known_host`] under its lock.
fn write_known_host(
    known_hosts: &Path,
    alias: &str,
    public_key: Option<&str>,
) -> Result<(), RpcError> {
    let old = std::fs::read_to_string(known_hosts).unwrap_or_default();
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(alias))
        .map(str::to_string)
        .collect();
    if let Some(k) = public_key {
        // `ssh-ed25519 AAAA… comment` → `alias ssh-ed25519 AAAA…`.
        let mut parts = k.split_whitespace();
        let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
            return Err(internal("generated host key has an unexpected format"));
        };
        lines.push(format!("{alias} {kind} {blob}"));
    }
    let dir = known_hosts.parent().expect("known_hosts has a parent");
    std::fs::create_dir_all(dir)
        .map_err(|e| internal(format!("creating {}: {e}", dir.display())))?;
    let tmp = known_hosts.with_extension("tmp");
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    std::fs::write(&tmp, text).map_err(|e| internal(format!("writing {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, known_hosts)
        .map_err(|e| internal(format!("replacing {}: {e}", known_hosts.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_lines_are_replaced_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        set_known_host(&kh, "a.vm", Some("ssh-ed25519 AAAA1 a.vm")).unwrap();
        set_known_host(&kh, "b.vm", Some("ssh-ed25519 BBBB b.vm")).unwrap();
        set_known_host(&kh, "a.vm", Some("ssh-ed25519 AAAA2 a.vm")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&kh).unwrap(),
            "b.vm ssh-ed25519 BBBB\na.vm ssh-ed25519 AAAA2\n"
        );
        set_known_host(&kh, "b.vm", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(&kh).unwrap(),
            "a.vm ssh-ed25519 AAAA2\n"
        );
    }

    /// A pooled clone's line follows its take; the startup sweep drops
    /// lines of VMs that are gone and keeps the others.
    #[test]
    fn known_hosts_lines_move_with_a_rename_and_stale_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        set_known_host(&kh, "pool-1.vm", Some("ssh-ed25519 PPPP pool-1.vm")).unwrap();
        set_known_host(&kh, "x.vm", Some("ssh-ed25519 XXXX x.vm")).unwrap();
        rename_known_host(&kh, "pool-1.vm", "dev.vm").unwrap();
        rename_known_host(&kh, "gone.vm", "other.vm").unwrap();
        assert_eq!(
            std::fs::read_to_string(&kh).unwrap(),
            "x.vm ssh-ed25519 XXXX\ndev.vm ssh-ed25519 PPPP\n"
        );
        let keep = ["dev.vm".to_string()].into_iter().collect();
        assert_eq!(retain_known_hosts(&kh, &keep).unwrap(), vec!["x.vm"]);
        assert_eq!(
            std::fs::read_to_string(&kh).unwrap(),
            "dev.vm ssh-ed25519 PPPP\n"
        );
    }

    #[test]
    fn guest_files_carry_the_lease() {
        let net = GuestNet {
            name: "dev".into(),
            ip: Ipv4Addr::new(172, 30, 0, 5),
            prefix: 24,
            mac: "02:ba:ac:1e:00:05".into(),
            gateway: Ipv4Addr::new(172, 30, 0, 1),
        };
        let f = files(&net, "ssh-ed25519 K me\n", &("priv".into(), "pub".into()));
        let get = |p: &str| f.iter().find(|g| g.path == p).unwrap();
        assert!(
            get("/etc/systemd/network/10-banger.network")
                .content
                .contains("Address=172.30.0.5/24\nGateway=172.30.0.1\nDNS=172.30.0.1")
        );
        // IPv4 only: with IPv6 autoconfiguration on, wait-online ran into
        // its limit on every boot (docs/guest.md).
        assert!(
            get("/etc/systemd/network/10-banger.network")
                .content
                .ends_with("LinkLocalAddressing=no\nIPv6AcceptRA=no\n")
        );
        assert_eq!(get("/etc/ssh/ssh_host_ed25519_key").mode, 0o600);
        assert_eq!(get("/etc/hostname").content, "dev\n");
    }
}
