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
pub const GUEST_CONTRACT_VERSION: u32 = 4;

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

/// The guest agent's virtio-serial port (QEMU): the guest sees it as
/// `/dev/virtio-ports/<AGENT_PORT>`, a channel only the host end can
/// write to, so the agent trusts what arrives on it and nothing else.
pub const AGENT_PORT: &str = "org.banger.agent.0";
/// The guest agent's vsock port (Firecracker, which has no virtio-serial):
/// the host connects through the VMM's vsock socket (`CONNECT 53`); only
/// the host (CID 2) reaches a guest's vsock, so the agent trusts what
/// arrives there as it trusts its virtio-serial port. Images of guest
/// contract 4 do not listen on it yet: a Firecracker restore's agent step
/// fails with that said (docs/guest.md).
pub const AGENT_VSOCK_PORT: u32 = 53;

/// Why `path` is not a guest path banger writes (absolute, normal
/// components of `[A-Za-z0-9._-]`, no `.` or `..`, at most 255 bytes): the
/// ext4 writer's debugfs script and the agent's lines need no quoting.
pub fn check_guest_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') || path.len() < 2 || path.len() > 255 {
        return Err("must be absolute and at most 255 bytes");
    }
    for comp in path[1..].split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return Err("must not contain empty, `.` or `..` components");
        }
        if !comp
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("components may only use A-Z a-z 0-9 . _ -");
        }
    }
    Ok(())
}

/// Why `name` is not a guest hostname (a VM name: one lowercase DNS label
/// of 1 to 63 characters `a-z 0-9 -`, not starting or ending with `-`).
pub fn check_hostname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may only use a-z 0-9 -");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must not start or end with '-'");
    }
    Ok(())
}

pub mod agent;
