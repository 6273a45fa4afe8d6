//! Looking at a running install from outside: the version an installed
//! binary reports, and whether each daemon answers on its socket.
//!
//! Nothing here changes anything. The helper serves only the owner's uid,
//! so for any other caller (root included) "serving" means "answered with
//! its refusal frame", which still proves a live helper behind the socket.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::runner::{Cmd, Runner};
use banger_host::socket::{SocketPathError, check_connect_path};
use banger_proto::ErrorCode;
use banger_proto::frame::{read_frame, write_frame};
use banger_proto::privops::{PRIV_PROTOCOL_VERSION, PrivReply, PrivRequest};
use banger_proto::rpc::{DaemonInfo, Request, Response};

use crate::client::{Client, ClientError};

/// How long a socket probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `BINARY --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The version `path --version` prints (`bangerd 0.1.0` → `0.1.0`).
pub fn binary_version(runner: &Runner, path: &Path) -> Result<String, String> {
    let out = runner
        .run(&Cmd::new(path).arg("--version").timeout(VERSION_TIMEOUT))
        .map_err(|e| banger_proto::error::chain(&e).join(": "))?;
    parse_version(&out.stdout)
        .ok_or_else(|| format!("unexpected --version output {:?}", out.stdout))
}

/// The last word of the first line.
pub fn parse_version(text: &str) -> Option<String> {
    text.lines()
        .next()?
        .split_whitespace()
        .last()
        .map(str::to_string)
}

/// What a socket answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The daemon answered and served this caller.
    Serving {
        version: String,
        /// bangerd's own account of itself (pid, uid, mode).
        info: Option<DaemonInfo>,
    },
    /// The daemon answered and refused this caller (the helper refuses
    /// everyone but the owner): alive, version unknown from here.
    Refused { message: String },
    /// Nothing at the path.
    Missing,
    /// Something at the path, but no usable answer.
    Broken { message: String },
}

impl Health {
    pub fn is_alive(&self) -> bool {
        matches!(self, Health::Serving { .. } | Health::Refused { .. })
    }

    pub fn version(&self) -> Option<&str> {
        match self {
            Health::Serving { version, .. } => Some(version),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Serving { .. } => "serving",
            Health::Refused { .. } => "refused",
            Health::Missing => "missing",
            Health::Broken { .. } => "broken",
        }
    }

    pub fn detail(&self) -> Option<&str> {
        match self {
            Health::Refused { message } | Health::Broken { message } => Some(message),
            _ => None,
        }
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    banger_proto::error::chain(e).join(": ")
}

/// Connect to bangerd at `socket` (owned by root or `owner_uid`) and ping it.
/// On success the connection is handed back for more requests.
pub fn daemon(socket: &Path, owner_uid: u32) -> (Health, Option<Client>) {
    if std::fs::symlink_metadata(socket).is_err() {
        return (Health::Missing, None);
    }
    let mut trusted = crate::client::trusted_owners();
    trusted.push(owner_uid);
    let mut client = match Client::connect_trusting(socket, &trusted) {
        Ok(c) => c,
        Err(ClientError::Remote(e)) if e.code == ErrorCode::PermissionDenied => {
            return (
                Health::Refused {
                    message: e.messages.join(": "),
                },
                None,
            );
        }
        Err(e) => {
            return (Health::Broken { message: chain(&e) }, None);
        }
    };
    match client.call(&Request::Ping, |_| {}) {
        Ok(Response::Pong(info)) => (
            Health::Serving {
                version: info.daemon_version.clone(),
                info: Some(info),
            },
            Some(client),
        ),
        Ok(_) => (
            Health::Broken {
                message: "answered a ping with something else".into(),
            },
            None,
        ),
        Err(e) => (Health::Broken { message: chain(&e) }, None),
    }
}

/// Say hello to the helper at `socket` (which must be root's).
pub fn helper(socket: &Path) -> Health {
    match check_connect_path(socket, &[0]) {
        Ok(()) => {}
        Err(SocketPathError::Stat { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Health::Missing;
        }
        Err(e) => {
            return Health::Broken { message: chain(&e) };
        }
    }
    match helper_hello(socket) {
        Ok(PrivReply::Hello { helper_version, .. }) => Health::Serving {
            version: helper_version,
            info: None,
        },
        Ok(PrivReply::Error(e)) if e.code == ErrorCode::PermissionDenied => Health::Refused {
            message: e.messages.join(": "),
        },
        Ok(PrivReply::Error(e)) => Health::Broken {
            message: e.messages.join(": "),
        },
        Ok(PrivReply::Ok(_)) => Health::Broken {
            message: "answered a hello with an operation result".into(),
        },
        Err(message) => Health::Broken { message },
    }
}

fn helper_hello(socket: &Path) -> Result<PrivReply, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connecting: {e}"))?;
    s.set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    // A refusal comes before the helper reads anything: read even when the
    // write failed.
    let sent = write_frame(
        &mut s,
        &PrivRequest::Hello {
            protocol: PRIV_PROTOCOL_VERSION,
        },
    );
    match read_frame::<_, PrivReply>(&mut s) {
        Ok(r) => Ok(r),
        Err(e) => Err(match sent {
            Err(w) => chain(&w),
            Ok(()) => chain(&e),
        }),
    }
}

/// The version of the program running as `pid`, from its own executable
/// (`/proc/PID/exe` still works when the file on disk was replaced since).
/// Needs the right to look at that process: root for the helper.
pub fn running_version(runner: &Runner, pid: u32) -> Option<String> {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    binary_version(runner, &exe).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_the_last_word_of_the_first_line() {
        assert_eq!(parse_version("bangerd 0.1.0\n").as_deref(), Some("0.1.0"));
        assert_eq!(
            parse_version("bangerd-root 1.2.3\nmore\n").as_deref(),
            Some("1.2.3")
        );
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn a_missing_socket_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(helper(&dir.path().join("root.sock")), Health::Missing);
        assert_eq!(
            daemon(&dir.path().join("bangerd.sock"), 1000).0,
            Health::Missing
        );
    }

    #[test]
    fn a_socket_nobody_listens_on_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bangerd.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let (h, _) = daemon(&path, rustix::process::geteuid().as_raw());
        assert!(matches!(h, Health::Broken { .. }), "{h:?}");
        assert!(!h.is_alive());
    }
}
