//! What a jailed VMM gets (docs/jail.md): every file as a descriptor
//! root opened and checked, never a path the VMM resolves on the host.
//! QEMU's ([`VmHost::qemu_files`]) include its QMP socket, root's, in
//! root's directory beside the journal; Firecracker's
//! ([`VmHost::fc_files`]) its `run/` (the slot's, where it binds its API
//! and vsock sockets) and `/dev/net/tun`. Both share the checks: the
//! kernel and initrd ([`VmHost::boot_file`]), the drives
//! (`VmHost::open_disk`), the device nodes ([`open_device`]).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use banger_proto::layout::SERIAL_LOG;
use banger_vmm::dir::tail_lines;
use banger_vmm::dir::{OwnerDir, reopen};
use banger_vmm::firecracker::FirecrackerFiles;
use banger_vmm::qemu::{DriveFds, QemuFiles, RootSocket};
use banger_vmm::{LaunchSpec, VmmError};
use rustix::fs::OFlags;

use super::VmHost;
use super::error::{VmOpError, io};

/// Lock a VM disk for the VMM or tool about to use it: `flock` on `fd`,
/// exclusive when it is written, shared when read-only, never waiting. A
/// disk locked elsewhere is refused. The lock lasts as long as the open
/// file description behind `fd`: QEMU keeps it in its fd set and a jailed
/// Firecracker gets it passed (`FirecrackerFiles::drives`), so each holds
/// it for its whole life; a jailed disk tool's is root's descriptor,
/// open until the tool has ended (`VmHost::grant_disk`). QEMU's own image
/// locking is off (`banger_vmm::qemu`), and an owner could move one VM's
/// disk into another's directory: this keeps two VMMs (or a VMM and a
/// tool) off one disk (second review of s12, N1; s13 review of the
/// root-side diff, F2). A VMM launched by a helper older than this lock
/// holds none until it stops.
///
/// A block device (a dm-snapshot root disk) is tried again for up to
/// [`DEVICE_LOCK_GRACE`]: udev holds a shared lock on a new device node
/// while it processes the device's events (s14 review of this lock, N2).
pub(super) fn lock_disk(fd: &impl AsFd, path: &Path, read_only: bool) -> Result<(), VmOpError> {
    use rustix::fs::FlockOperation;
    let op = if read_only {
        FlockOperation::NonBlockingLockShared
    } else {
        FlockOperation::NonBlockingLockExclusive
    };
    let device = rustix::fs::fstat(fd).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::BlockDevice
    });
    let deadline = std::time::Instant::now() + DEVICE_LOCK_GRACE;
    loop {
        match rustix::fs::flock(fd, op) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::WOULDBLOCK)
                if device && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(VmOpError::DiskLocked {
                    path: path.display().to_string(),
                });
            }
            Err(e) => return Err(io("locking", path)(e.into())),
        }
    }
}

/// How long a locked block device is tried again ([`lock_disk`]).
const DEVICE_LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

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
        (qmp, agent): (RootSocket, RootSocket),
        tap: OwnedFd,
    ) -> Result<QemuFiles, VmOpError> {
        let (kernel, initrd) = self.boot_files(ls)?;
        let mut drives = Vec::new();
        for d in &ls.drives {
            let read_only = OwnedFd::from(self.open_disk(&d.path, "VM disk")?);
            let main = if d.read_only {
                read_only.try_clone()
            } else {
                reopen(read_only.as_fd(), OFlags::RDWR).map_err(std::io::Error::from)
            }
            .map_err(io("opening", &d.path))?;
            lock_disk(&main, &d.path, d.read_only)?;
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
        let kvm = if ls.kvm {
            Some(open_device(Path::new("/dev/kvm"), "qemu")?)
        } else {
            None
        };
        Ok(QemuFiles {
            kernel,
            initrd,
            drives,
            tap,
            serial,
            log,
            qmp,
            agent,
            kvm,
            cgroup: None,
            incoming: None,
        })
    }

    /// Every file a jailed Firecracker gets (`FirecrackerFiles`), as
    /// descriptors root opened, with QEMU's checks: the kernel (an ELF
    /// vmlinux: Firecracker boots no other) and initrd as
    /// [`VmHost::boot_files`] opens them, each drive opened as a tool's
    /// disk is (`open_disk`: the owner's single-link regular file, or the
    /// dm device by number) and reopened read-write unless read-only,
    /// `/dev/kvm` and `/dev/net/tun` ([`open_device`]), `serial` (root's
    /// descriptor of the serial log) and `run` (the slot's fresh `run/`).
    /// Also returns each drive's checked read-only descriptor, in order:
    /// the slot's grant for the launch is set on it.
    pub(super) fn fc_files(
        &self,
        ls: &LaunchSpec,
        serial: File,
        run: OwnerDir,
    ) -> Result<(FirecrackerFiles, Vec<File>), VmOpError> {
        let (kernel, initrd) = self.boot_files(ls)?;
        // Firecracker boots an uncompressed ELF vmlinux only. Read at
        // offset 0 (the copy into the jail reads the same descriptor).
        let mut magic = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(&kernel, &mut magic, 0)
            .map_err(io("reading", &ls.kernel))?;
        if &magic != b"\x7fELF" {
            return Err(VmOpError::Invalid {
                what: "kernel",
                value: ls.kernel.display().to_string(),
                reason: "Firecracker needs an uncompressed ELF vmlinux; this kernel is not one (use --vmm qemu, or import a vmlinux)".into(),
            });
        }
        let mut drives = Vec::new();
        let mut checked = Vec::new();
        for d in &ls.drives {
            let disk = self.open_disk(&d.path, "VM disk")?;
            let used = if d.read_only {
                disk.try_clone().map(OwnedFd::from)
            } else {
                reopen(disk.as_fd(), OFlags::RDWR).map_err(std::io::Error::from)
            }
            .map_err(io("opening", &d.path))?;
            lock_disk(&used, &d.path, d.read_only)?;
            drives.push(used);
            checked.push(disk);
        }
        let files = FirecrackerFiles {
            kernel,
            initrd,
            drives,
            tun: open_device(Path::new("/dev/net/tun"), "firecracker")?,
            kvm: open_device(Path::new("/dev/kvm"), "firecracker")?,
            serial,
            run,
            cgroup: None,
            restore: None,
        };
        Ok((files, checked))
    }

    /// The kernel and initrd of `ls`, which root copies into a jail: each
    /// opened beneath the state dir without symlinks, only the owner's own
    /// regular file with one link (a hard link to a root-only file would
    /// put its bytes into guest memory), and at most [`MAX_BOOT_FILE`]
    /// bytes.
    fn boot_files(&self, ls: &LaunchSpec) -> Result<(File, Option<File>), VmOpError> {
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
        Ok((kernel, initrd))
    }
}

/// A device node for a jailed VMM of `vmm` (bound into its jail:
/// `/dev/kvm`, `/dev/net/tun`), opened `O_PATH|O_NOFOLLOW`: the jail uid
/// has no groups, so the node must be a world read-write character
/// device (systemd's default for both, 0666).
pub(super) fn open_device(path: &Path, vmm: &'static str) -> Result<OwnedFd, VmOpError> {
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
            vmm,
            reason: format!(
                "{vmm} runs as a jail uid without groups, so {} must be a world read-write \
                 device node (systemd's default 0666); it has mode {:o}",
                path.display(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A node of character device `major:minor` of `mode` in `dir`.
    fn node(dir: &Path, name: &str, (major, minor): (u32, u32), mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(mode),
            rustix::fs::makedev(major, minor),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
        path
    }

    /// A jail uid has no groups: a device node it is given must be world
    /// read-write. A host's 0660 `/dev/kvm` (Debian's udev), a 0600
    /// `/dev/net/tun` (a host without udev), a regular file and a link to
    /// a good node are refused by name, with the mode; 0666 is taken.
    #[test]
    fn a_jailed_vmms_device_must_be_a_world_read_write_node() {
        assert!(rustix::process::geteuid().is_root(), "needs root (mknod)");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let good = node(d, "kvm-0666", (10, 232), 0o666);
        assert!(open_device(&good, "firecracker").is_ok());
        for (name, mode) in [("kvm-0660", 0o660), ("tun-0600", 0o600)] {
            let bad = node(d, name, (10, 232), mode);
            let e = open_device(&bad, "firecracker").unwrap_err();
            let VmOpError::VmmUnavailable { vmm, reason } = &e else {
                panic!("{name}: {e}");
            };
            assert_eq!(*vmm, "firecracker");
            assert!(reason.contains(&format!("has mode {mode:o}")), "{reason}");
            assert!(reason.contains(name), "{reason}");
        }
        let file = d.join("plain");
        std::fs::write(&file, b"").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        assert!(matches!(
            open_device(&file, "qemu"),
            Err(VmOpError::VmmUnavailable { .. })
        ));
        let link = d.join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(
            open_device(&link, "qemu").is_err(),
            "a link is never followed"
        );
    }
}

#[cfg(test)]
mod lock_tests {
    use std::os::fd::OwnedFd;

    use super::lock_disk;
    use crate::vm::error::VmOpError;

    /// Second review of s12, N1: QEMU's image locking is off, so a disk
    /// another QEMU holds (an owner moved it into this VM's directory) is
    /// refused by root's own lock, for as long as the first holder keeps
    /// its descriptor; shared locks of a read-only drive do not exclude
    /// each other.
    #[test]
    fn a_drive_another_vmm_holds_is_refused_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.ext4");
        std::fs::write(&path, b"disk").unwrap();
        let open = || OwnedFd::from(std::fs::File::open(&path).unwrap());
        let first = open();
        lock_disk(&first, &path, false).unwrap();
        let second = open();
        let err = lock_disk(&second, &path, false).unwrap_err();
        assert!(
            matches!(&err, VmOpError::DiskLocked { path: p } if *p == path.display().to_string()),
            "{err}"
        );
        assert!(
            err.to_string().contains("one VMM or tool per disk"),
            "{err}"
        );
        assert_eq!(
            err.code(),
            banger_proto::error::ErrorCode::InvalidState,
            "a disk in use is a state to wait out, not a bad request"
        );
        assert!(lock_disk(&open(), &path, true).is_err());
        drop(first);
        lock_disk(&second, &path, false).unwrap();
        drop(second);
        let (a, b) = (open(), open());
        lock_disk(&a, &path, true).unwrap();
        lock_disk(&b, &path, true).unwrap();
        // Exclusive is refused while shared locks are held.
        assert!(matches!(
            lock_disk(&open(), &path, false),
            Err(VmOpError::DiskLocked { .. })
        ));
    }
}
