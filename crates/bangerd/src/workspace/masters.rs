//! One SSH master connection kept per running VM (issue #15 item 5): a
//! handshake with a TCG guest costs about a second, so a workspace
//! re-prepare or export rides the connection an earlier operation on the
//! same boot of the same VM opened, instead of opening its own.
//!
//! The control sockets live in `RUNTIME_DIR/ssh/` (0700, the daemon's own
//! user), one per VM id. A master is kept for one boot: its key is the VM's
//! address and the time of its last state change, so a VM that was stopped,
//! restarted or removed never reaches a master talking to its previous
//! boot. [`Masters::sweep`] closes the masters of VMs that are no longer
//! running (the daemon calls it after every VM request), [`Masters::close_all`]
//! closes every one at shutdown, and `ControlPersist` ends a master nobody
//! used for [`KEEP_SECS`] (e.g. after the daemon was killed).

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use banger_proto::RpcError;

use super::guest::{Control, Guest, Multiplexed};

/// How long a kept master outlives its last client.
pub const KEEP_SECS: u32 = 300;

/// A Unix socket path must fit in `sun_path` (108 bytes, with its NUL);
/// ssh also appends a temporary suffix while it binds.
const MAX_SOCKET_PATH: usize = 80;

#[derive(Debug)]
pub struct Masters {
    dir: PathBuf,
    kept: Mutex<HashMap<String, Kept>>,
}

#[derive(Debug, Clone)]
struct Kept {
    boot: String,
    guest: Guest,
}

impl Masters {
    pub fn new(runtime_dir: &Path) -> Masters {
        Masters {
            dir: runtime_dir.join("ssh"),
            kept: Mutex::new(HashMap::new()),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `guest` (VM `vm_id` in its boot `boot`) with its connections riding
    /// the VM's kept master: the one an earlier operation of this boot
    /// opened when it still answers, else a new one (opened by the first
    /// connection). Falls back to a master of the operation's own when the
    /// socket directory cannot be used.
    pub fn connect(&self, vm_id: &str, boot: &str, guest: &Guest) -> Result<Multiplexed, RpcError> {
        let path = self.dir.join(vm_id);
        if path.as_os_str().len() > MAX_SOCKET_PATH || !self.dir_ready() {
            return guest.multiplexed();
        }
        let old = self.kept().remove(vm_id);
        if let Some(old) = old {
            if old.boot == boot && old.guest.control_command("check") {
                self.kept().insert(vm_id.to_string(), old.clone());
                return Ok(Multiplexed::kept(old.guest, true));
            }
            close(&old.guest);
        }
        let mut shared = guest.clone();
        shared.control = Some(Control {
            path,
            persist_secs: KEEP_SECS,
        });
        self.kept().insert(
            vm_id.to_string(),
            Kept {
                boot: boot.to_string(),
                guest: shared.clone(),
            },
        );
        Ok(Multiplexed::kept(shared, false))
    }

    /// Close the masters whose VM is gone or in another boot: `boot_of`
    /// gives a VM's current boot key, `None` when it is not running.
    pub fn sweep(&self, boot_of: impl Fn(&str) -> Option<String>) {
        let ids: Vec<String> = self.kept().keys().cloned().collect();
        for id in ids {
            let current = boot_of(&id);
            let stale = {
                let mut kept = self.kept();
                match kept.get(&id) {
                    Some(k) if current.as_deref() != Some(k.boot.as_str()) => kept.remove(&id),
                    _ => None,
                }
            };
            if let Some(k) = stale {
                close(&k.guest);
            }
        }
    }

    /// Whether any master is kept (so a sweep has anything to do).
    pub fn any(&self) -> bool {
        !self.kept().is_empty()
    }

    /// Close every kept master (daemon shutdown).
    pub fn close_all(&self) {
        let all: Vec<Kept> = self.kept().drain().map(|(_, k)| k).collect();
        for k in all {
            close(&k.guest);
        }
    }

    /// The socket directory exists, is a real directory of this user and
    /// nobody else may enter it; made 0700 when missing.
    fn dir_ready(&self) -> bool {
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "no SSH control directory");
                return false;
            }
        }
        let ok = std::fs::symlink_metadata(&self.dir).is_ok_and(|m| {
            m.is_dir() && m.uid() == rustix::process::geteuid().as_raw() && m.mode() & 0o077 == 0
        });
        if !ok {
            tracing::warn!(dir = %self.dir.display(), "SSH control directory is not this user's own 0700 directory; one connection per operation");
        }
        ok
    }
}

/// End a kept master and remove its socket.
fn close(guest: &Guest) {
    guest.control_command("exit");
    if let Some(c) = &guest.control {
        let _ = std::fs::remove_file(&c.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(name: &str) -> Guest {
        Guest {
            name: name.into(),
            ip: std::net::Ipv4Addr::new(192, 0, 2, 7),
            user: "banger".into(),
            identity: "/nonexistent/id".into(),
            known_hosts: "/nonexistent/known_hosts".into(),
            control: None,
        }
    }

    #[test]
    fn a_boot_keeps_its_socket_and_a_new_boot_or_a_sweep_drops_it() {
        let run = tempfile::tempdir().unwrap();
        let m = Masters::new(run.path());
        let a = m.connect("aaaa", "boot1", &guest("a")).unwrap();
        assert!(!a.reused, "nothing to reuse yet");
        let path = a.control.as_ref().unwrap().path.clone();
        assert_eq!(path, run.path().join("ssh/aaaa"));
        let mode = std::fs::metadata(run.path().join("ssh")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700);
        // No master answers (nothing listens on the socket): a new one.
        let again = m.connect("aaaa", "boot1", &guest("a")).unwrap();
        assert!(!again.reused);
        assert!(m.any());
        // The sweep keeps a VM whose boot is the same, drops the others.
        m.sweep(|id| (id == "aaaa").then(|| "boot1".to_string()));
        assert!(m.any());
        m.sweep(|_| Some("boot2".to_string()));
        assert!(!m.any());
        m.connect("bbbb", "b", &guest("b")).unwrap();
        m.close_all();
        assert!(!m.any());
    }

    #[test]
    fn a_long_or_foreign_directory_falls_back_to_one_master_per_operation() {
        let run = tempfile::tempdir().unwrap();
        let long = run.path().join("x".repeat(90));
        std::fs::create_dir(&long).unwrap();
        let m = Masters::new(&long);
        let g = m.connect("aaaa", "boot", &guest("a")).unwrap();
        assert!(!m.any(), "nothing kept");
        assert!(g.control.as_ref().unwrap().path.starts_with("/tmp"));

        let open = tempfile::tempdir().unwrap();
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(open.path().join("ssh"))
            .unwrap();
        std::fs::set_permissions(
            open.path().join("ssh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let m = Masters::new(open.path());
        m.connect("aaaa", "boot", &guest("a")).unwrap();
        assert!(!m.any(), "a directory others may enter is not used");
    }
}
