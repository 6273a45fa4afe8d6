//! The facts of banger's guest contract (docs/guest.md) that more than one
//! side relies on: the image builder bakes them into every image
//! (`banger_imagebuild::guest`, which holds the files themselves), the
//! executor boots and formats disks with them, the Firecracker driver and
//! the daemon wait for the guest's readiness line, and the daemon logs in
//! as the guest user. One definition here, so the sides cannot drift.

/// Version of the guest contract. Bump it when anything the images carry
/// changes (this module or `banger_imagebuild::guest`): it is part of the
/// image build's cache key, so a new contract never reuses an old image,
/// and it is recorded in the image as `/etc/banger/guest-contract`.
pub const GUEST_CONTRACT_VERSION: u32 = 3;

/// The guest user banger logs in as.
pub const GUEST_USER: &str = "banger";
/// The guest user's uid: the owner of the work disk's root directory.
pub const GUEST_UID: u32 = 1000;
/// The guest user's group.
pub const GUEST_GID: u32 = 1000;

/// Label of the work disk (the work seed and every VM's copy of it, or a
/// fresh one): the guest's fstab mounts it by this label.
pub const WORK_LABEL: &str = "banger-work";

/// The line the guest's `banger-ready.service` writes to the serial
/// console, and sends to the host over vsock, once it is ready.
pub const READY_MARKER: &str = "banger-guest-ready";
/// Host-side vsock port the readiness line is sent to (CID 2, the host).
pub const READY_VSOCK_PORT: u32 = 52;

/// The kernel command line every banger guest boots with.
pub const KERNEL_CMDLINE: &str = "console=ttyS0 root=/dev/vda rw panic=-1";
