//! Root's directory of jailed QEMUs' QMP sockets (`vmm-qmp/`, beside the
//! journal), and each VM's sockets in it: QMP's and the guest agent's.

use std::path::Path;

use banger_vmm::qemu::RootSocket;
use rustix::fs::OFlags;

use super::VmHost;
use super::error::{VmOpError, io};

/// Root's directory of jailed QEMUs' QMP sockets, beside the journal.
const QMP_DIR: &str = "vmm-qmp";

impl VmHost {
    /// The QMP socket of the VM's jailed QEMU: `<vm id>.sock` in
    /// [`QMP_DIR`] beside the executor's journal, a directory root makes
    /// (`create`) and keeps 0700: only root can write there, so neither
    /// the owner nor a VMM can swap or remove the socket, and it persists
    /// while QEMU runs (a restarted helper finds it there). Not in the VM
    /// directory: the owner writes that.
    pub(super) fn qmp_socket(&self, vm_id: &str, create: bool) -> Result<RootSocket, VmOpError> {
        self.root_socket(&format!("{vm_id}.sock"), create)
    }

    /// The socket of the guest agent's channel of the VM's jailed QEMU:
    /// `<vm id>.agent.sock` beside its QMP socket, with the same rules.
    pub(super) fn agent_socket(&self, vm_id: &str, create: bool) -> Result<RootSocket, VmOpError> {
        self.root_socket(&format!("{vm_id}.agent.sock"), create)
    }

    /// `name` in [`QMP_DIR`] (made when `create`), checked root's and 0700.
    fn root_socket(&self, name: &str, create: bool) -> Result<RootSocket, VmOpError> {
        let parent = self
            .journal
            .path()
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        let path = parent.join(QMP_DIR);
        let parent_fd = rustix::fs::open(
            &parent,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| io("opening", &parent)(e.into()))?;
        if create {
            match rustix::fs::mkdirat(&parent_fd, QMP_DIR, rustix::fs::Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(io("creating", &path)(e.into())),
            }
        }
        let fd = rustix::fs::openat(
            &parent_fd,
            QMP_DIR,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| io("opening", &path)(e.into()))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io("inspecting", &path)(e.into()))?;
        if st.st_uid != rustix::process::geteuid().as_raw() || st.st_mode & 0o7777 != 0o700 {
            return Err(VmOpError::Invalid {
                what: "QMP socket directory",
                value: path.display().to_string(),
                reason: format!(
                    "uid {} mode {:o}, not this process's uid with mode 700",
                    st.st_uid,
                    st.st_mode & 0o7777
                ),
            });
        }
        RootSocket::new(fd, &path, name).map_err(io("naming a socket in", &path))
    }

    /// Remove the VM's QMP and agent sockets, if any: its VMM is gone.
    pub(super) fn remove_qmp_socket(&self, vm_id: &str) {
        for socket in [
            self.qmp_socket(vm_id, false),
            self.agent_socket(vm_id, false),
        ] {
            let removed = socket.and_then(|s| s.remove().map_err(io("removing", s.path())));
            if let Err(e) = removed {
                tracing::debug!(vm_id, error = %e, "no QEMU socket removed");
            }
        }
    }
}
