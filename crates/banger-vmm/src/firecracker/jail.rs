//! The jail a Firecracker runs in (docs/jail.md "Firecracker jailed"):
//! built from [`FirecrackerFiles`] for a [`LaunchSpec`], and the checks of
//! the descriptors it binds.

use std::os::fd::AsFd as _;

use banger_host::jail::Jail;

use super::{FirecrackerDriver, FirecrackerFiles, MEMORY_OVERHEAD, THREADS, VMM, paths};
use crate::dir::OwnerDir;
use crate::{LaunchSpec, VmmError};

impl FirecrackerDriver {
    /// The jail Firecracker runs in for `spec`: the slot ids of
    /// `spec.run_as`, a network namespace of its own whose handles come
    /// back with the child ([`Jail::net_handles`]), `/dev/net/tun` and
    /// `/dev/kvm` bound, `run/` bound read-write at `/run`, each drive
    /// bound at `/drive-<id>` (writable only when the drive is), the kernel
    /// and initrd copied in, limits from the guest's size.
    pub(super) fn jail(
        &self,
        spec: &LaunchSpec,
        files: &FirecrackerFiles,
    ) -> Result<Jail, VmmError> {
        let invalid = |what: String| VmmError::InvalidSpec { vmm: VMM, what };
        let (uid, gid) = spec.run_as.ok_or_else(|| {
            invalid("run_as: a jailed Firecracker needs its VM's slot ids".into())
        })?;
        if files.drives.len() != spec.drives.len() {
            return Err(invalid(format!(
                "drives: {} in the spec, {} descriptors",
                spec.drives.len(),
                files.drives.len()
            )));
        }
        if files.initrd.is_some() != spec.initrd.is_some() {
            return Err(invalid(
                "initrd: the spec and the descriptors disagree".into(),
            ));
        }
        let io = |what: &str| {
            let what = what.to_string();
            move |source| VmmError::Io {
                what: format!("jailing firecracker: {what}"),
                source,
            }
        };
        let drives = spec.drives.iter().zip(&files.drives);
        let mut limits = crate::vmm_limits(
            VMM,
            spec,
            MEMORY_OVERHEAD,
            THREADS,
            drives.map(|(d, fd)| (d, fd.as_fd())),
        )?;
        // A snapshot's memory file, written into `run/`, is the guest's
        // memory size.
        limits.file_size = limits.file_size.max(u64::from(spec.memory_mib) << 20);
        let mut jail = Jail::new(uid, gid)
            .long_lived(limits)
            .net_handles()
            .bind_tun(files.tun.as_fd())
            .and_then(|j| j.bind_kvm(files.kvm.as_fd()))
            .and_then(|j| j.bind(files.run.as_fd(), paths::RUN, true))
            .and_then(|j| j.copy_in(files.kernel.as_fd(), paths::KERNEL))
            .map_err(io("its files"))?;
        if let Some(initrd) = &files.initrd {
            jail = jail
                .copy_in(initrd.as_fd(), paths::INITRD)
                .map_err(io("the initrd"))?;
        }
        for (at, (d, fd)) in (super::DRIVE_LOCKS..).zip(spec.drives.iter().zip(&files.drives)) {
            if d.read_only {
                read_only_drive(d, fd.as_fd())?;
            }
            jail = jail
                .bind(fd.as_fd(), &paths::drive(&d.id), !d.read_only)
                .and_then(|j| j.pass(fd.as_fd(), at))
                .map_err(io(&format!("drive {}", d.id)))?;
        }
        if let Some(r) = &files.restore {
            for (f, at) in [
                (&r.state, super::paths::RESTORE_STATE),
                (&r.memory, super::paths::RESTORE_MEMORY),
            ] {
                // Read-only binds of regular files (checked, as a
                // read-only drive's: a device node would open for writing).
                let d = crate::Drive {
                    id: at.into(),
                    path: at.into(),
                    read_only: true,
                };
                read_only_drive(&d, f.as_fd())?;
                jail = jail.bind(f.as_fd(), at, false).map_err(io(at))?;
            }
        }
        if let Some(cg) = &files.cgroup {
            jail = jail
                .cgroup(cg.dir.as_fd(), cg.procs.as_fd())
                .map_err(io("its cgroup"))?;
        }
        Ok(jail)
    }
}

/// Refused unless `run` (a jailed launch's `run/`, bound read-write into
/// the jail) is a directory of the slot uid's (`spec.run_as`), mode 0700:
/// what the executor makes, and nothing another uid can reach.
pub(super) fn slot_run_dir(spec: &LaunchSpec, run: &OwnerDir) -> Result<(), VmmError> {
    let st = rustix::fs::fstat(run).map_err(|e| VmmError::Io {
        what: format!("jailing firecracker: inspecting {}", run.path().display()),
        source: e.into(),
    })?;
    let uid = spec.vmm_uid();
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    let mode = st.st_mode & 0o7777;
    let reason = if kind != rustix::fs::FileType::Directory {
        format!("a {kind:?}, not a directory")
    } else if st.st_uid != uid {
        format!("owned by uid {}, not the slot uid {uid}", st.st_uid)
    } else if mode != 0o700 {
        format!("mode {mode:o}, not 700")
    } else {
        return Ok(());
    };
    Err(VmmError::Refused {
        path: run.path().display().to_string(),
        reason: format!("a jailed Firecracker's run directory {reason}"),
    })
}

/// Refused unless the read-only drive `d`, behind `fd`, can be bound
/// read-only to effect: a regular file. A block device node opens for
/// writing through a read-only bind (the mount's flag does not apply to
/// device nodes; only the node's mode and ACL would stop the slot uid),
/// so a read-only block device is refused rather than trusted to its
/// permissions.
fn read_only_drive(d: &crate::Drive, fd: std::os::fd::BorrowedFd<'_>) -> Result<(), VmmError> {
    let st = rustix::fs::fstat(fd).map_err(|e| VmmError::Io {
        what: format!("jailing firecracker: inspecting drive {}", d.id),
        source: e.into(),
    })?;
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if kind != rustix::fs::FileType::RegularFile {
        return Err(VmmError::InvalidSpec {
            vmm: VMM,
            what: format!(
                "drive {} ({}): read-only, but {kind:?}, not a regular file (a device \
                 node opens for writing through a read-only bind); give a read-only \
                 drive as a regular file",
                d.id,
                d.path.display()
            ),
        });
    }
    Ok(())
}
