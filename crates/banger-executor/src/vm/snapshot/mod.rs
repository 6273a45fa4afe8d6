//! Copy-on-write root disks behind one trait, [`SnapshotBackend`], with
//! three drivers:
//!
//! * `dm` ([`dm::DmSnapshot`]): the image attached read-only to a loop
//!   device as the origin, a sparse per-VM COW file on a second loop
//!   device, and a persistent dm-snapshot `banger-<vm_id>` over both. The
//!   VMM gets the block device `/dev/mapper/banger-<vm_id>`. Every device
//!   is journaled before it is created.
//! * `file` ([`file::Reflink`]): `FICLONE` of the image into
//!   `vms/<id>/root.ext4`; the VMM gets that file.
//! * `file` ([`file::SparseCopy`]): a sparse copy into the same file.
//!
//! New root disks take the first that works: dm-snapshot where
//! `/dev/mapper/control` exists, `DM_VERSION` succeeds on it (the process
//! has `CAP_SYS_ADMIN`: root in dev mode, `bangerd-root` through its unit) and
//! `dmsetup` is installed, else reflink, else the sparse copy. A driver
//! declines with [`VmOpError::SnapshotUnsupported`] and the next is tried:
//! reflink when the filesystem has no `FICLONE`, dm when the kernel refuses
//! (`EPERM`/`EACCES`) a loop or dm operation. An existing root disk is
//! served by the driver that made it, as the executor's journal records
//! (`dm_disks`, `snapshots`); nothing in the owner-writable VM directory
//! decides it.
//!
//! Root disks live from `CreateVmDisks` to `DeleteVmDisks`; `attach` is
//! idempotent and rebuilds dm devices that vanished (a host reboot, a
//! `host teardown`) from the COW file, which keeps the VM's writes.
//!
//! Loop devices are attached by ioctl from descriptors the executor holds
//! (`loopdev`), `dmsetup` runs as a child; both go through the injected
//! [`DiskTools`], so the dm driver is unit-tested against a recording fake.

pub(crate) mod dm;
mod dmloop;
pub(crate) mod dmnode;
pub(crate) mod file;
pub(crate) mod links;
pub(crate) mod loopdev;

use std::fmt::Debug;
use std::fs::File;
use std::path::{Path, PathBuf};

use banger_host::runner::{Cmd, Output, RunError, Runner};
use banger_proto::privops::{DeviceProbe, DeviceState, HostDevice};
use banger_proto::vmops::SnapshotBackend as BackendKind;

use super::VmHost;
use super::error::VmOpError;

pub use file::clone_file;
pub(crate) use loopdev::Backing;

/// A VM's root disk as a VMM (or `debugfs`) opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RootDisk {
    pub backend: BackendKind,
    /// A block device (dm-snapshot) or a regular file (reflink, copy).
    pub path: PathBuf,
    /// Kernel devices behind it (dm name first, then the loop devices);
    /// empty for a file.
    pub devices: Vec<String>,
    /// Apparent size in bytes.
    pub bytes: u64,
}

/// A way of making copy-on-write root disks.
pub(crate) trait SnapshotBackend: Send + Sync + Debug {
    fn kind(&self) -> BackendKind;

    fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    /// Make the root disk of `vm_id` from the root filesystem of
    /// `image_id` and attach it. Leaves nothing behind when it fails;
    /// [`VmOpError::SnapshotUnsupported`] means "try the next backend".
    fn create(&self, host: &VmHost, vm_id: &str, image_id: &str) -> Result<RootDisk, VmOpError>;

    /// The root disk ready for a VMM: the path it opens. Idempotent.
    fn attach(&self, host: &VmHost, vm_id: &str) -> Result<RootDisk, VmOpError>;

    /// Detach and delete the root disk. "Already gone" is success.
    fn remove(&self, host: &VmHost, vm_id: &str) -> Result<(), VmOpError>;
}

/// The child processes, ioctls and device-node changes the snapshot
/// drivers need; [`HostTools`] on a real host, a recording fake in tests.
///
/// Loop devices are numbers here (`/dev/loop<n>`), and a file is handed
/// over as the descriptor the executor opened, never as a path.
pub(crate) trait DiskTools: Send + Sync + Debug {
    /// Run `cmd` and return what it produced; a non-zero exit is not an
    /// error here (see [`run_ok`]).
    fn output(&self, cmd: &Cmd) -> Result<Output, RunError>;
    /// Whether `program` is on the children's `PATH`.
    fn has_program(&self, program: &str) -> bool;
    /// Give a device node to the owner, so the VMM running as the owner can
    /// open it.
    fn chown(&self, path: &Path, owner: (u32, u32)) -> std::io::Result<()>;
    /// `DM_VERSION` on `/dev/mapper/control`: whether this process may
    /// drive device-mapper at all.
    fn dm_version(&self) -> std::io::Result<()>;
    /// A free loop device number.
    fn loop_free(&self) -> std::io::Result<u32>;
    /// Attach `file` (by descriptor) to loop device `n`; `EBUSY` when it
    /// was taken meanwhile. `label` is informational only.
    fn loop_configure(
        &self,
        n: u32,
        file: &File,
        read_only: bool,
        label: &Path,
    ) -> std::io::Result<()>;
    /// The backing file of loop device `n` (`None`: not attached).
    fn loop_backing(&self, n: u32) -> std::io::Result<Option<Backing>>;
    /// Detach loop device `n`.
    fn loop_clear(&self, n: u32) -> std::io::Result<()>;
}

/// [`DiskTools`] through [`Runner`] and ioctls on the real host.
#[derive(Debug, Default)]
pub(crate) struct HostTools;

impl DiskTools for HostTools {
    fn output(&self, cmd: &Cmd) -> Result<Output, RunError> {
        Runner.output(cmd)
    }

    fn has_program(&self, program: &str) -> bool {
        banger_host::runner::resolve(program.as_ref()).is_some()
    }

    fn chown(&self, path: &Path, owner: (u32, u32)) -> std::io::Result<()> {
        std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1))
    }

    fn dm_version(&self) -> std::io::Result<()> {
        loopdev::dm_version().map(drop)
    }

    fn loop_free(&self) -> std::io::Result<u32> {
        loopdev::get_free()
    }

    fn loop_configure(
        &self,
        n: u32,
        file: &File,
        read_only: bool,
        label: &Path,
    ) -> std::io::Result<()> {
        loopdev::configure(n, file, read_only, label)
    }

    fn loop_backing(&self, n: u32) -> std::io::Result<Option<Backing>> {
        loopdev::status(n)
    }

    fn loop_clear(&self, n: u32) -> std::io::Result<()> {
        loopdev::clear(n)
    }
}

/// Whether `e` means "this process may not do that" (no `CAP_SYS_ADMIN`:
/// a process or unit without it, e.g. in a container; `bangerd-root`'s
/// unit grants it): the dm backend then declines.
pub(crate) fn is_denied(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(c) if c == rustix::io::Errno::PERM.raw_os_error()
            || c == rustix::io::Errno::ACCESS.raw_os_error()
    )
}

/// What the executor reports for `/dev/mapper/control`: the node opening
/// is not enough, `DM_VERSION` must succeed too (it needs `CAP_SYS_ADMIN`),
/// so the doctor and `host status` see what `CreateVmDisks` will do.
pub(crate) fn mapper_probe(probe: DeviceProbe, tools: &dyn DiskTools) -> DeviceProbe {
    if probe.device != HostDevice::MapperControl || probe.state != DeviceState::Present {
        return probe;
    }
    match tools.dm_version() {
        Ok(()) => probe,
        Err(e) => DeviceProbe {
            device: probe.device,
            state: DeviceState::Unusable {
                error: if is_denied(&e) {
                    format!("device-mapper refuses this process (needs CAP_SYS_ADMIN): {e}")
                } else {
                    format!("DM_VERSION on /dev/mapper/control: {e}")
                },
            },
        },
    }
}

/// Run `cmd` and require exit status 0.
pub(crate) fn run_ok(tools: &dyn DiskTools, cmd: &Cmd) -> Result<Output, RunError> {
    checked(cmd, tools.output(cmd)?)
}

/// `out` of `cmd`, required to have exited 0.
pub(crate) fn checked(cmd: &Cmd, out: Output) -> Result<Output, RunError> {
    if out.status.success() {
        return Ok(out);
    }
    Err(RunError::Failed {
        argv: cmd.display(),
        status: out.status,
        stderr: out
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string(),
    })
}

impl VmHost {
    /// Whether dm-snapshot can be used: `/dev/mapper/control` opens,
    /// `DM_VERSION` succeeds on it (this process may drive device-mapper)
    /// and `dmsetup` is installed. Loop devices are attached by ioctl.
    pub(crate) fn dm_usable(&self) -> bool {
        let mapper = mapper_probe(
            self.probes.probe_device(HostDevice::MapperControl),
            &*self.tools,
        );
        mapper.state == DeviceState::Present && self.tools.has_program("dmsetup")
    }

    /// The backends new root disks try, in order.
    pub(crate) fn new_disk_backends(&self) -> Vec<&'static dyn SnapshotBackend> {
        let mut order: Vec<&'static dyn SnapshotBackend> = Vec::new();
        if self.dm_usable() {
            order.push(&dm::DmSnapshot);
        }
        order.push(&file::Reflink);
        order.push(&file::SparseCopy);
        order
    }

    /// The backend that serves the existing root disk of `vm_id`, decided
    /// by the executor's own journal (never by files in the owner-writable
    /// VM directory): a VM listed as a dm disk, or with journaled snapshot
    /// devices, is dm-snapshot; anything else is a file.
    pub(crate) fn backend_of(
        &self,
        vm_id: &str,
    ) -> Result<&'static dyn SnapshotBackend, VmOpError> {
        let txn = self.journal.open().map_err(super::error::journal_err)?;
        if txn.state.is_dm_disk(vm_id) {
            Ok(&dm::DmSnapshot)
        } else {
            Ok(&file::Reflink)
        }
    }

    /// Make a new root disk with the first backend that works here.
    pub(crate) fn create_root_disk(
        &self,
        vm_id: &str,
        image_id: &str,
    ) -> Result<RootDisk, VmOpError> {
        let mut last = None;
        for backend in self.new_disk_backends() {
            match backend.create(self, vm_id, image_id) {
                Err(e @ VmOpError::SnapshotUnsupported { .. }) => {
                    tracing::info!(vm_id, backend = backend.name(), error = %e, "snapshot backend declined; trying the next");
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or(VmOpError::NotConfigured))
    }

    /// The VM's root disk, attached.
    pub(crate) fn root_disk(&self, vm_id: &str) -> Result<RootDisk, VmOpError> {
        self.backend_of(vm_id)?.attach(self, vm_id)
    }
}

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;
