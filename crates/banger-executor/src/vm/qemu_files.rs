//! What a jailed QEMU gets (docs/jail.md): every file as a descriptor
//! root opened and checked, never a path QEMU resolves on the host; and
//! its QMP socket, root's, in root's directory beside the journal.

use std::fs::File;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::Path;

use banger_vmm::dir::tail_lines;
use banger_vmm::dir::{OwnerDir, reopen};
use banger_vmm::qemu::{DriveFds, QemuFiles, QmpSocket};
use banger_vmm::{LaunchSpec, VmmError};
use rustix::fs::OFlags;

use super::VmHost;
use super::error::{VmOpError, io};
use super::vmm::SERIAL_LOG;

/// The most bytes of a kernel or of an initrd root copies into a jail.
const MAX_BOOT_FILE: u64 = 256 << 20;

impl VmHost {
    /// Every file a jailed QEMU gets, as descriptors root opened: the
    /// kernel and initrd beneath the state dir without symlinks, each the
    /// owner's regular file with one link of at most 256 MiB (copied
    /// into the jail), each drive as the jailed tools' disks are opened
    /// (checked: the owner's regular file with one link, or the dm device
    /// by number) plus a read-only reopening of the same inode, the serial
    /// log appended (write-only: QEMU's fd set matches the access mode it
    /// asks for), `tap` (root's descriptor attached to the journaled tap,
    /// `VmHost::take_tap_for_qemu`), `/dev/kvm`
    /// when asked for (it must be world read-write: the jail uid has no
    /// groups).
    pub(super) fn qemu_files(
        &self,
        ls: &LaunchSpec,
        vm_dir: &OwnerDir,
        log: File,
        qmp: QmpSocket,
        tap: OwnedFd,
    ) -> Result<QemuFiles, VmOpError> {
        // Root copies these into the jail: only the owner's own regular
        // file with one link (a hard link to a root-only file would put
        // its bytes into guest memory), and at most MAX_BOOT_FILE bytes.
        let beneath = |p: &Path, what: &'static str| -> Result<File, VmOpError> {
            let invalid = |reason: String| VmOpError::Invalid {
                what,
                value: p.display().to_string(),
                reason,
            };
            let rel = p
                .strip_prefix(&self.state_dir)
                .map_err(|_| invalid("not beneath the state directory".into()))?;
            let f = self.open_beneath(rel, OFlags::RDONLY)?;
            let len = super::snapshot::dm::checked_owners(self, &f, p, what)?;
            if len > MAX_BOOT_FILE {
                return Err(invalid(format!(
                    "{len} bytes, more than {MAX_BOOT_FILE}; refusing to copy it"
                )));
            }
            Ok(f)
        };
        let kernel = beneath(&ls.kernel, "kernel")?;
        let initrd = ls
            .initrd
            .as_deref()
            .map(|p| beneath(p, "initrd"))
            .transpose()?;
        let mut drives = Vec::new();
        for d in &ls.drives {
            let read_only = OwnedFd::from(self.open_disk(&d.path, "VM disk")?);
            let main = if d.read_only {
                read_only.try_clone()
            } else {
                reopen(read_only.as_fd(), OFlags::RDWR).map_err(std::io::Error::from)
            }
            .map_err(io("opening", &d.path))?;
            drives.push(DriveFds { main, read_only });
        }
        let serial_path = vm_dir.join(SERIAL_LOG);
        let serial = vm_dir
            .open_append(SERIAL_LOG, 0o640, self.tool_ids())
            .map_err(|source| VmOpError::Launch {
                vm_id: ls.vm_id.clone(),
                source,
            })?;
        let serial = reopen(serial.as_fd(), OFlags::WRONLY | OFlags::APPEND)
            .map(File::from)
            .map_err(|e| io("opening", &serial_path)(e.into()))?;
        let kvm = if ls.kvm { Some(open_kvm()?) } else { None };
        Ok(QemuFiles {
            kernel,
            initrd,
            drives,
            tap,
            serial,
            log,
            qmp,
            kvm,
            cgroup: None,
        })
    }
}

/// `/dev/kvm` for a jailed QEMU (bound into its jail as a device node):
/// the jail uid has no groups, so the node must be world read-write
/// (systemd's default, 0666).
fn open_kvm() -> Result<OwnedFd, VmOpError> {
    let path = Path::new("/dev/kvm");
    let fd = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| io("opening", path)(e.into()))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io("inspecting", path)(e.into()))?;
    let chr =
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::CharacterDevice;
    if !chr || st.st_mode & 0o006 != 0o006 {
        return Err(VmOpError::VmmUnavailable {
            vmm: "qemu",
            reason: format!(
                "QEMU runs as a jail uid without groups, so /dev/kvm must be a world read-write \
                 device node (systemd's default 0666); it has mode {:o}",
                st.st_mode & 0o7777
            ),
        });
    }
    Ok(fd)
}

/// Add the last lines of the VMM's own log to an early-exit error, read
/// from root's descriptor of the file it created (never by its name,
/// which the owner can point elsewhere).
pub(super) fn with_log_tail(e: VmmError, log: &File) -> VmmError {
    match e {
        VmmError::EarlyExit { vmm, status, tail } if tail.is_empty() => VmmError::EarlyExit {
            vmm,
            status,
            tail: tail_lines(log, 5),
        },
        other => other,
    }
}
