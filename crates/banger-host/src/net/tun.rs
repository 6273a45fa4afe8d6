//! Persistent tap creation through the tun driver's ioctls.
//!
//! `TUNSETIFF` with `IFF_TUN_EXCL` creates the tap or fails if the name is
//! taken (an existing tap is never attached to and adopted), `TUNSETOWNER`
//! lets the owner's VMM open it unprivileged, and `TUNSETPERSIST` keeps it
//! after our descriptor closes. Until that last step succeeds the tap dies
//! with the descriptor, so a failure leaves nothing behind.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use super::NetError;

/// The tun clone device.
pub const TUN_DEVICE: &str = "/dev/net/tun";

/// `struct ifreq` as `TUNSETIFF` uses it: the name, then the flags member of
/// the union, padded to the full 40 bytes of the kernel's struct on LP64.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const _: () = assert!(std::mem::size_of::<IfReqFlags>() == 40);

/// Flags of the taps banger creates: what Firecracker and QEMU (`vnet_hdr=on`)
/// ask for when they attach, which must match for the attach to succeed.
const TAP_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

pub(super) fn create_persistent_tap(name: &str, owner_uid: u32) -> Result<(), NetError> {
    let fail = |step: &'static str, source: io::Error| NetError::Tun {
        step,
        name: name.to_string(),
        source,
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.bytes().any(|b| b == 0) {
        return Err(fail(
            "checking the name",
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface names are 1..15 bytes without NUL",
            ),
        ));
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_DEVICE)
        .map_err(|e| fail("opening /dev/net/tun", e))?;
    let fd = tun.as_raw_fd();

    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        // The flag values all fit in 16 bits; the kernel reads a short.
        flags: (TAP_FLAGS | libc::IFF_TUN_EXCL) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `fd` is a live /dev/net/tun descriptor owned by `tun` for the
    // whole call; TUNSETIFF reads and writes one `struct ifreq`, and `req` is
    // an initialized #[repr(C)] value with the kernel struct's size and layout
    // (name[16] then the flags short) that outlives the call.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut req as *mut IfReqFlags) };
    if rc < 0 {
        return Err(fail("TUNSETIFF", io::Error::last_os_error()));
    }
    // SAFETY: `fd` is the tun descriptor now attached to our new tap;
    // TUNSETOWNER takes its argument by value (a uid), no memory is passed.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETOWNER, libc::c_ulong::from(owner_uid)) };
    if rc < 0 {
        return Err(fail("TUNSETOWNER", io::Error::last_os_error()));
    }
    // SAFETY: as above; TUNSETPERSIST takes a by-value boolean, 1 = persist.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETPERSIST, 1 as libc::c_ulong) };
    if rc < 0 {
        return Err(fail("TUNSETPERSIST", io::Error::last_os_error()));
    }
    Ok(())
}
