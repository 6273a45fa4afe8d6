//! systemd-resolved: is it running, and does `/etc/resolv.conf` use it?

use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// resolved's varlink socket; present and accepting while it runs.
pub const RESOLVED_SOCKET: &str = "/run/systemd/resolve/io.systemd.Resolve";
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// resolved's stub listener.
pub const RESOLVED_STUB: &str = "127.0.0.53";
/// systemd-resolved's stub listeners (`127.0.0.53` and the proxy-only
/// `127.0.0.54`).
pub const RESOLVED_STUBS: [Ipv4Addr; 2] =
    [Ipv4Addr::new(127, 0, 0, 53), Ipv4Addr::new(127, 0, 0, 54)];
/// On hosts running systemd-resolved: the real upstream servers, which
/// `/etc/resolv.conf` hides behind the stub address.
pub const RESOLVED_UPSTREAM_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// State of resolved's varlink socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedSocket {
    /// No socket file: resolved is not running (or not installed).
    Absent,
    /// A connection was accepted: resolved is running.
    Accepting,
    /// The file exists but connecting failed (stale socket, permissions).
    Unreachable { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedProbe {
    pub socket_path: PathBuf,
    pub socket: ResolvedSocket,
    /// `/etc/resolv.conf` lists resolved's stub [`RESOLVED_STUB`].
    pub stub_in_resolv_conf: bool,
    /// `nameserver` entries of `/etc/resolv.conf`, in order.
    pub nameservers: Vec<String>,
    /// Why `/etc/resolv.conf` could not be read, if it could not.
    pub resolv_conf_error: Option<String>,
}

impl ResolvedProbe {
    /// resolved answers on its socket.
    pub fn running(&self) -> bool {
        self.socket == ResolvedSocket::Accepting
    }
}

/// Probe the system's resolved socket and `/etc/resolv.conf`.
pub fn probe_resolved() -> ResolvedProbe {
    probe_resolved_at(Path::new(RESOLVED_SOCKET), Path::new(RESOLV_CONF))
}

/// Probe with explicit paths (tests).
pub fn probe_resolved_at(socket: &Path, resolv_conf: &Path) -> ResolvedProbe {
    let socket_state = if !socket.exists() {
        ResolvedSocket::Absent
    } else {
        // Connecting and hanging up costs resolved nothing: no request is sent.
        match UnixStream::connect(socket) {
            Ok(_) => ResolvedSocket::Accepting,
            Err(e) if e.kind() == ErrorKind::NotFound => ResolvedSocket::Absent,
            Err(e) => ResolvedSocket::Unreachable {
                error: format!("connecting to {}: {e}", socket.display()),
            },
        }
    };
    let (nameservers, resolv_conf_error) = match std::fs::read_to_string(resolv_conf) {
        Ok(text) => (nameservers(&text), None),
        Err(e) => (
            Vec::new(),
            Some(format!("reading {}: {e}", resolv_conf.display())),
        ),
    };
    ResolvedProbe {
        socket_path: socket.to_path_buf(),
        socket: socket_state,
        stub_in_resolv_conf: nameservers.iter().any(|n| n == RESOLVED_STUB),
        nameservers,
        resolv_conf_error,
    }
}

/// The `nameserver` entries of a resolv.conf text, in order, as written.
pub fn nameservers(resolv_conf: &str) -> Vec<String> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            words.next().map(str::to_string)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn agrees_with_the_host() {
        let p = probe_resolved();
        eprintln!("{p:?}");
        let sock = Path::new(RESOLVED_SOCKET);
        assert_eq!(p.socket == ResolvedSocket::Absent, !sock.exists());
        if sock.exists() {
            assert_eq!(p.running(), UnixStream::connect(sock).is_ok());
        }
        let grep = crate::runner::Runner
            .output(&crate::runner::Cmd::new("grep").args([
                "-qE",
                r"^[[:space:]]*nameserver[[:space:]]+127\.0\.0\.53([[:space:]]|$)",
                RESOLV_CONF,
            ]))
            .expect("grep runs");
        assert_eq!(p.stub_in_resolv_conf, grep.status.success());
    }

    #[test]
    fn listening_socket_and_stub() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("io.systemd.Resolve");
        let _listener = UnixListener::bind(&sock).unwrap();
        let conf = dir.path().join("resolv.conf");
        std::fs::write(
            &conf,
            "# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n",
        )
        .unwrap();
        let p = probe_resolved_at(&sock, &conf);
        assert!(p.running());
        assert!(p.stub_in_resolv_conf);
        assert_eq!(p.nameservers, ["127.0.0.53"]);
        assert_eq!(p.resolv_conf_error, None);
    }

    #[test]
    fn stale_socket_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("io.systemd.Resolve");
        drop(UnixListener::bind(&sock).unwrap()); // the file stays, nobody listens
        let p = probe_resolved_at(&sock, &dir.path().join("missing.conf"));
        match &p.socket {
            ResolvedSocket::Unreachable { error } => {
                assert!(error.contains("Connection refused"), "{error}")
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(!p.running());
        assert!(p.resolv_conf_error.unwrap().contains("No such file"));
    }

    #[test]
    fn no_socket_and_other_nameservers() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("resolv.conf");
        std::fs::write(
            &conf,
            "nameserver 10.0.0.2\n nameserver\tfe80::1%eth0\nnameserverx 1.1.1.1\n",
        )
        .unwrap();
        let p = probe_resolved_at(&dir.path().join("none"), &conf);
        assert_eq!(p.socket, ResolvedSocket::Absent);
        assert!(!p.stub_in_resolv_conf);
        assert_eq!(p.nameservers, ["10.0.0.2", "fe80::1%eth0"]);
    }
}
