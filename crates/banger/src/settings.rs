//! Configuration resolved from the command line and the host.

use std::path::{Path, PathBuf};

use crate::args::GlobalArgs;

/// Socket of an installed (system-mode) daemon.
pub const SYSTEM_SOCKET: &str = "/run/banger/bangerd.sock";
/// Socket of `bangerd --dev` with its default runtime directory.
pub const DEV_SOCKET: &str = "/run/banger-dev/bangerd.sock";

/// Where the socket path came from, for `-v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketSource {
    /// `--socket` or `$BANGER_SOCKET`.
    Given,
    /// The system socket exists.
    System,
    /// Nothing else applied: the dev default.
    DevDefault,
}

impl std::fmt::Display for SocketSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SocketSource::Given => "from --socket or BANGER_SOCKET",
            SocketSource::System => "system socket",
            SocketSource::DevDefault => "dev default",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub socket: PathBuf,
    pub socket_source: SocketSource,
    pub json: bool,
    pub verbose: u8,
}

impl Settings {
    pub fn resolve(global: &GlobalArgs) -> Settings {
        // "Exists" includes a symlink: the client then refuses it loudly
        // rather than silently falling back to the dev socket.
        let system_exists = std::fs::symlink_metadata(SYSTEM_SOCKET).is_ok();
        let (socket, socket_source) = discover(global.socket.as_deref(), system_exists);
        Settings {
            socket,
            socket_source,
            json: global.json,
            verbose: global.verbose,
        }
    }
}

/// `--socket`/`$BANGER_SOCKET`, else the system socket if it exists, else the
/// dev default.
fn discover(given: Option<&Path>, system_exists: bool) -> (PathBuf, SocketSource) {
    match given {
        Some(p) if !p.as_os_str().is_empty() => (p.to_path_buf(), SocketSource::Given),
        _ if system_exists => (PathBuf::from(SYSTEM_SOCKET), SocketSource::System),
        _ => (PathBuf::from(DEV_SOCKET), SocketSource::DevDefault),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_order() {
        let check = |given: Option<&str>, system: bool, want: &str, src: SocketSource| {
            assert_eq!(
                discover(given.map(Path::new), system),
                (PathBuf::from(want), src)
            );
        };
        check(
            Some("/tmp/a.sock"),
            true,
            "/tmp/a.sock",
            SocketSource::Given,
        );
        check(None, true, SYSTEM_SOCKET, SocketSource::System);
        check(None, false, DEV_SOCKET, SocketSource::DevDefault);
        // An empty BANGER_SOCKET= means "not set".
        check(Some(""), false, DEV_SOCKET, SocketSource::DevDefault);
    }
}
