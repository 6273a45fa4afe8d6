//! VM types of the privileged-ops seam: disks, guest files, VMM processes.
//!
//! Nothing here names a host path. The executor derives every path from the
//! ids (32 lowercase hex characters) under the state directory it was
//! configured with, with the names of [`crate::layout`]:
//! `vms/<vm_id>/{root.ext4,work.ext4,serial.log,vmm.log,run/}`
//! (with dm-snapshot, `root.cow` + `root.origin` instead of `root.ext4`),
//! `images/<image_id>/{rootfs.ext4,work-seed.ext4}`,
//! `kernels/<kernel_id>/{kernel,initrd}`. The kernel command line and the
//! VMM argv are built by the executor too.

use serde::{Deserialize, Serialize};

/// Every device-mapper device banger makes is named `banger-<vm_id>`; the
/// executor creates and removes only such names, and the host guard
/// (`banger_host::devguard`) keeps the host's udev rules and LVM off them.
pub const DM_NAME_PREFIX: &str = "banger-";

word_enum! {
    /// Which hypervisor runs a VM.
    pub enum VmmKind ("VMM") {
        Firecracker => "firecracker",
        Qemu => "qemu",
    }
}

word_enum! {
    /// How a copy-on-write root disk is made. One spelling everywhere: the
    /// seam's `VmDisksOutcome`, `host status`, the doctor's state and logs.
    pub enum SnapshotBackend ("snapshot backend") {
        /// dm-snapshot over loop devices.
        DmSnapshot => "dm_snapshot",
        /// FICLONE: shares extents with the image until written.
        Reflink => "reflink",
        /// A sparse copy (holes stay holes).
        SparseCopy => "sparse_copy",
    }
}

impl SnapshotBackend {
    /// The backend new root disks get: dm-snapshot where device-mapper is
    /// usable (`/dev/mapper/control` and `dmsetup`), else reflink where the
    /// state filesystem shares extents, else a sparse copy. The executor
    /// decides with this, and the doctor and `host status` report with it.
    pub fn select(dm_usable: bool, reflink_supported: bool) -> SnapshotBackend {
        if dm_usable {
            SnapshotBackend::DmSnapshot
        } else if reflink_supported {
            SnapshotBackend::Reflink
        } else {
            SnapshotBackend::SparseCopy
        }
    }
}

/// Create a VM's disks: the root disk as a copy-on-write clone of the
/// image's root filesystem, the work disk from the image's work seed (or a
/// fresh ext4 when the image has none) grown to `work_disk_bytes`.
/// Preconditions: ids are well formed; the image exists; the VM directory
/// exists and holds no disks yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDisksSpec {
    pub vm_id: String,
    pub image_id: String,
    pub work_disk_bytes: u64,
    /// Copy both disks from this snapshot's (`snapshots/<id>/`) instead:
    /// the root disk as a file (reflink or sparse copy, whatever the
    /// backend of new disks), the work disk at the snapshot's size
    /// (`work_disk_bytes` is not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDisksOutcome {
    pub backend: SnapshotBackend,
    pub root_bytes: u64,
    pub work_bytes: u64,
}

/// One file written into the VM's root disk (an ext4 mutation). Its
/// `Debug` shows the content's length, never the content: the helper logs
/// every operation, and one of these files is the guest's SSH host key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestFile {
    /// Absolute guest path of normal components (`[A-Za-z0-9._-]`), no `..`.
    /// Missing parent directories are created (0755, root).
    pub path: String,
    /// Permission bits (≤ 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub content: String,
}

impl std::fmt::Debug for GuestFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .finish()
    }
}

#[cfg(test)]
mod guest_file_tests {
    use super::GuestFile;

    #[test]
    fn debug_never_shows_the_content() {
        let f = GuestFile {
            path: "/etc/ssh/ssh_host_ed25519_key".into(),
            mode: 0o600,
            uid: 0,
            gid: 0,
            content: "-----BEGIN OPENSSH PRIVATE KEY----- secret".into(),
        };
        let shown = format!("{f:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("ssh_host_ed25519_key"), "{shown}");
        assert!(shown.contains("<42 bytes>"), "{shown}");
    }
}

/// Write files into a stopped VM's root disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestFilesSpec {
    pub vm_id: String,
    pub files: Vec<GuestFile>,
}

/// Boot a VM. The executor derives the disk, kernel and socket paths from
/// the ids, and the kernel command line itself.
/// Preconditions: the VM's disks exist; the kernel exists; `tap` is a tap
/// the executor created; no VMM of this VM is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchVmSpec {
    pub vm_id: String,
    /// The image's own initrd (`images/<id>/initrd`) wins over the kernel's.
    pub image_id: String,
    pub kernel_id: String,
    pub vmm: VmmKind,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub tap: String,
    pub mac: String,
    /// Use KVM even where the executor's own probe finds that a stock
    /// guest cannot run under it (the owner's `diagnostics.assume_kvm_usable`).
    /// Otherwise the executor decides from its probe: with KVM usable both
    /// VMMs use it, without it QEMU runs TCG and Firecracker refuses.
    pub force_kvm: bool,
    /// Restore this snapshot instead of booting (QEMU only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Box<RestoreSpec>>,
}

/// What a launch restores and what the restored guest becomes. The
/// executor keeps the VM's tap down until the guest's agent has applied
/// `identity` (with the launch's MAC and root's clock), so nobody reaches
/// the clone under its source's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreSpec {
    /// `snapshots/<snapshot_id>/memory` is loaded; the VM's disks were
    /// copied from the same snapshot (`VmDisksSpec::from_snapshot`).
    pub snapshot_id: String,
    pub identity: GuestIdentity,
}

/// A restored guest's identity, as the agent applies it (guest contract
/// 4): the per-VM files (as `WriteGuestFiles` would write them), its
/// address on the bridge, its hostname.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestIdentity {
    pub files: Vec<GuestFile>,
    pub ip: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
    pub hostname: String,
}

/// Save a running (or paused) VM's memory and device state and a copy of
/// its disks into `snapshots/<snapshot_id>/` (the owner's empty
/// directory): the VM is paused for the copy, and runs again afterwards
/// when `resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotVmSpec {
    pub vm_id: String,
    pub snapshot_id: String,
    /// Resume the guest once saved (it was running); else it stays paused.
    pub resume: bool,
    /// Save the memory and device state only, no disk copies (`vm stop
    /// --save`: the VM's own disks stay as the saved memory knows them,
    /// since its VMM is killed without running the guest again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub memory_only: bool,
}

/// What [`SnapshotVmSpec`] saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSaved {
    /// Bytes of memory and device state written.
    pub memory_bytes: u64,
    /// Apparent sizes of the root and work disk copies.
    pub root_bytes: u64,
    pub work_bytes: u64,
    /// How the disks were copied; `None` when they were not
    /// (`memory_only`).
    #[serde(default)]
    pub backend: Option<SnapshotBackend>,
    /// Milliseconds the guest was paused for (0 when it was paused
    /// before and stays so).
    pub paused_ms: u64,
}

/// A VMM process as the executor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmState {
    pub vm_id: String,
    /// The VMM process is alive.
    pub running: bool,
    pub pid: Option<u32>,
    pub vmm: Option<VmmKind>,
    /// Set when the executor found the process through its journal after a
    /// restart (re-adopted) rather than as a child it spawned.
    pub adopted: bool,
    /// Guest readiness the VMM itself observed (Firecracker: the guest's
    /// vsock message); `None` where the VMM has no such channel (QEMU here:
    /// the daemon watches the serial console instead).
    #[serde(default)]
    pub ready: Option<bool>,
    /// `/proc/<pid>/stat` start time (clock ticks since boot) of `pid`, when
    /// known: with the pid it names the process exactly.
    #[serde(default)]
    pub start_time: Option<u64>,
    /// The VMM's sockets, relative to the VM directory (`run/qmp.sock`;
    /// `run/firecracker.sock`, `run/vsock.sock`). Names, not host paths.
    #[serde(default)]
    pub sockets: Vec<String>,
    /// Kernel devices behind the root disk: with dm-snapshot the dm name
    /// and the two loop devices (`banger-<vm_id>`, `loop3`, `loop4`); empty
    /// for a root disk that is a plain file (reflink or sparse copy).
    #[serde(default)]
    pub root_devices: Vec<String>,
}

/// Result of a stop request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStopped {
    /// The guest powered off by itself within the timeout (false: killed,
    /// or it was not running).
    pub graceful: bool,
    pub was_running: bool,
}
