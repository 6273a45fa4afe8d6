//! One SSH master connection per running VM (issue #15 item 5): a
//! handshake with a TCG guest costs about a second, so every workspace
//! prepare and export, and every `vm ssh` of the daemon's own user, rides
//! one connection per boot of the VM (OpenSSH connection sharing).
//!
//! The control sockets live in `RUNTIME_DIR/ssh/` (0700, the daemon's
//! user), named `<first 16 hex of the VM id>.<VMM pid>`: a VM that was
//! restarted has another VMM, so nothing ever reaches a master talking to
//! its previous boot, while a pause keeps the same VMM and so the same
//! master. Whoever connects first (a prepare, or the CLI's `ssh` with
//! `ControlMaster=auto`) opens the master; [`SshMasters::sweep`] ends every
//! master that is not the current one of a running or paused VM (the daemon
//! sweeps after every lifecycle change), [`SshMasters::close_all`] ends them all
//! at shutdown, and `ControlPersist` ends one nobody used for [`KEEP_SECS`]
//! (e.g. after the daemon was killed).

use std::collections::HashSet;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::runner::{Cmd, Runner};

/// How long a master outlives its last client.
pub const KEEP_SECS: u32 = 300;

/// A Unix socket path must fit in `sun_path` (108 bytes with its NUL), and
/// ssh binds the master at the path plus a 17-byte temporary suffix first.
const MAX_SOCKET_PATH: usize = 90;

#[derive(Debug)]
pub struct SshMasters {
    dir: PathBuf,
}

/// The socket's name for VM `vm_id`'s VMM `pid`.
fn name(vm_id: &str, pid: u32) -> String {
    let short = vm_id.get(..16).unwrap_or(vm_id);
    format!("{short}.{pid}")
}

/// Whether `n` is a name [`name`] makes (the sweep leaves anything else).
fn is_name(n: &str) -> bool {
    n.split_once('.').is_some_and(|(id, pid)| {
        id.len() == 16
            && id.bytes().all(|b| b.is_ascii_hexdigit())
            && !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
    })
}

impl SshMasters {
    pub fn new(runtime_dir: &Path) -> SshMasters {
        SshMasters {
            dir: runtime_dir.join("ssh"),
        }
    }

    /// The control socket for VM `vm_id` whose VMM is `pid`; `None` when
    /// the directory cannot be used or the path would not fit (then each
    /// operation uses a connection of its own).
    pub fn path(&self, vm_id: &str, pid: u32) -> Option<PathBuf> {
        let path = self.dir.join(name(vm_id, pid));
        (path.as_os_str().len() <= MAX_SOCKET_PATH && self.dir_ready()).then_some(path)
    }

    /// End every master whose name is not in `live` (the names of the
    /// current masters of running and paused VMs), and remove its socket.
    /// A master of a VM in `unknown` (running, but its VMM's pid is not
    /// known, e.g. the helper did not answer the startup reconcile) is
    /// left alone: it may well be the current one, and sessions ride it.
    pub fn sweep(&self, live: &HashSet<String>, unknown: &HashSet<String>) {
        // The same checks as a path is handed out with: nothing is ended or
        // unlinked in a directory that is not this user's own.
        if !self.dir.exists() || !self.dir_ready() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let n = e.file_name();
            let Some(n) = n.to_str() else { continue };
            let of_unknown = n.get(..16).is_some_and(|id| unknown.contains(id));
            if is_name(n) && !live.contains(n) && !of_unknown {
                close(&e.path());
            }
        }
    }

    /// End every master (daemon shutdown).
    pub fn close_all(&self) {
        self.sweep(&HashSet::new(), &HashSet::new());
    }

    /// The ids [`SshMasters::sweep`] takes as `unknown`.
    pub fn unknown<'a>(ids: impl IntoIterator<Item = &'a str>) -> HashSet<String> {
        ids.into_iter()
            .map(|id| id.get(..16).unwrap_or(id).to_string())
            .collect()
    }

    /// The names [`SshMasters::sweep`] keeps for these (VM id, VMM pid).
    pub fn live<'a>(vms: impl IntoIterator<Item = (&'a str, u32)>) -> HashSet<String> {
        vms.into_iter().map(|(id, pid)| name(id, pid)).collect()
    }

    /// The directory exists, is a real directory of this user and nobody
    /// else may enter it; made 0700 when missing.
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

/// `ssh -O COMMAND` on the control socket `path` (`check`: does a master
/// answer; `exit`: end it). False when none answers or it failed.
pub fn control(path: &Path, command: &str) -> bool {
    let cmd = Cmd::new("ssh")
        .args(["-F", "/dev/null", "-o"])
        .arg(format!("ControlPath={}", path.display()))
        .args(["-O", command, "banger-master"])
        .timeout(Duration::from_secs(10));
    Runner.output(&cmd).is_ok_and(|o| o.status.success())
}

/// End the master at `path` and remove its socket.
fn close(path: &Path) {
    control(path, "exit");
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_and_the_sweep() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(name(id, 4242), "0123456789abcdef.4242");
        assert!(is_name("0123456789abcdef.4242"));
        for other in ["x.1", "0123456789abcdef.", "0123456789abcdef.1a", "notes"] {
            assert!(!is_name(other), "{other}");
        }

        let run = tempfile::tempdir().unwrap();
        let m = SshMasters::new(run.path());
        let p = m.path(id, 4242).expect("a usable path");
        assert_eq!(p, run.path().join("ssh/0123456789abcdef.4242"));
        let mode = std::fs::metadata(run.path().join("ssh")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Stand-ins for sockets: the sweep removes what is not live and
        // leaves what it did not name.
        let old = m.path(id, 4141).unwrap();
        for f in [&p, &old, &run.path().join("ssh/notes")] {
            std::fs::write(f, "").unwrap();
        }
        m.sweep(&SshMasters::live([(id, 4242)]), &HashSet::new());
        assert!(p.exists() && !old.exists());
        assert!(run.path().join("ssh/notes").exists());
        // A running VM whose pid is unknown keeps whatever master it has.
        std::fs::write(&old, "").unwrap();
        m.sweep(&HashSet::new(), &SshMasters::unknown([id]));
        assert!(p.exists() && old.exists());
        m.close_all();
        assert!(!p.exists());
    }

    #[test]
    fn a_long_or_open_directory_is_not_used() {
        let run = tempfile::tempdir().unwrap();
        let long = run.path().join("x".repeat(90));
        std::fs::create_dir(&long).unwrap();
        assert_eq!(SshMasters::new(&long).path("ab", 1), None);

        let open = tempfile::tempdir().unwrap();
        let dir = open.path().join("ssh");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert_eq!(SshMasters::new(open.path()).path("ab", 1), None);
    }
}
