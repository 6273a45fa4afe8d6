//! The names inside banger's state directory: the one definition the owner
//! daemon (`bangerd::layout`, its VM and image services), the executor
//! (which derives every path of a privileged operation from ids and these
//! names, never from a path it is sent), the VMM drivers and the image
//! builder all use.
//!
//! ```text
//! <state_dir>/images/<image_id>/{rootfs.ext4, work-seed.ext4, kernel, initrd}
//! <state_dir>/kernels/<kernel_id>/{kernel, initrd}
//! <state_dir>/vms/<vm_id>/{root.ext4 (or root.cow + root.origin), work.ext4,
//!                          serial.log, vmm.log, handles.json,
//!                          run/{firecracker.sock, vsock.sock}}
//! <state_dir>/snapshots/<snapshot_id>/{memory, root.ext4, work.ext4}
//! ```
//!
//! They are an on-disk format: a renamed file strands every VM or image
//! made before.

/// Images, one directory per image id.
pub const IMAGES_DIR: &str = "images";
/// Kernels, one directory per kernel id.
pub const KERNELS_DIR: &str = "kernels";
/// VMs, one directory per VM id.
pub const VMS_DIR: &str = "vms";
/// One directory per VM snapshot (`snapshots/<snapshot_id>/`): the
/// owner's, made by the daemon; root writes [`SNAPSHOT_MEMORY`] and the
/// disks ([`ROOT_DISK`], [`WORK_DISK`]) into it as the owner's files.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// A snapshot's saved memory (the VMM's own format): QEMU's whole
/// migration stream (its device state included), Firecracker's guest
/// memory.
pub const SNAPSHOT_MEMORY: &str = "memory";
/// A Firecracker snapshot's device state (`snapshot_path`); QEMU
/// snapshots have none.
pub const SNAPSHOT_VMSTATE: &str = "vmstate";

/// An image's root filesystem (also the member of an image bundle and the
/// file of an image build that carries it).
pub const ROOTFS: &str = "rootfs.ext4";
/// An image's managed work seed (optional): each VM's work disk is copied
/// from it.
pub const WORK_SEED: &str = "work-seed.ext4";
/// A kernel's (or an image's own) kernel image.
pub const KERNEL: &str = "kernel";
/// A kernel's (or an image's own) initrd, where it has one.
pub const INITRD: &str = "initrd";

/// A VM's root disk when it is a file (reflink or sparse copy of the
/// image's [`ROOTFS`]).
pub const ROOT_DISK: &str = "root.ext4";
/// A dm-snapshot root disk's copy-on-write store (root-owned, 0600).
pub const COW_FILE: &str = "root.cow";
/// The id of the image a dm-snapshot root disk is taken of (kept for VMs
/// from before the executor journaled it).
pub const ORIGIN_FILE: &str = "root.origin";
/// A VM's work disk.
pub const WORK_DISK: &str = "work.ext4";
/// The VM's serial console, appended across boots.
pub const SERIAL_LOG: &str = "serial.log";
/// QEMU's stdout and stderr, made anew at each launch.
pub const VMM_LOG: &str = "vmm.log";
/// The daemon's record of what a VM holds (tap, VMM).
pub const HANDLES: &str = "handles.json";
/// The VMM's runtime directory (Firecracker's; its sockets live there).
pub const RUN_DIR: &str = "run";

/// Firecracker's API socket, in [`RUN_DIR`].
pub const API_SOCKET: &str = "firecracker.sock";
/// QEMU's QMP socket, in a runtime directory (the executor's jailed QEMU
/// gets root's instead, outside the VM directory).
pub const QMP_SOCKET: &str = "qmp.sock";
/// The host side of a Firecracker guest's vsock, in [`RUN_DIR`].
pub const VSOCK_SOCKET: &str = "vsock.sock";

/// `name` in [`RUN_DIR`], relative to the VM directory
/// (`run/firecracker.sock`).
pub fn in_run_dir(name: &str) -> String {
    format!("{RUN_DIR}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are on-disk format: this pins their spelling.
    #[test]
    fn names_are_pinned() {
        for (name, spelled) in [
            (IMAGES_DIR, "images"),
            (KERNELS_DIR, "kernels"),
            (VMS_DIR, "vms"),
            (ROOTFS, "rootfs.ext4"),
            (WORK_SEED, "work-seed.ext4"),
            (KERNEL, "kernel"),
            (INITRD, "initrd"),
            (ROOT_DISK, "root.ext4"),
            (COW_FILE, "root.cow"),
            (ORIGIN_FILE, "root.origin"),
            (WORK_DISK, "work.ext4"),
            (SERIAL_LOG, "serial.log"),
            (VMM_LOG, "vmm.log"),
            (HANDLES, "handles.json"),
            (RUN_DIR, "run"),
            (API_SOCKET, "firecracker.sock"),
            (QMP_SOCKET, "qmp.sock"),
            (VSOCK_SOCKET, "vsock.sock"),
        ] {
            assert_eq!(name, spelled);
        }
        assert_eq!(in_run_dir(API_SOCKET), "run/firecracker.sock");
    }
}
