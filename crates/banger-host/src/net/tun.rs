//! Persistent tap creation through the tun driver's ioctls.
//!
//! `TUNSETIFF` with `IFF_TUN_EXCL` creates the tap or fails if the name is
//! taken (an existing tap is never attached to and adopted), `TUNSETOWNER`
//! lets the owner's VMM open it unprivileged, and `TUNSETPERSIST` keeps it
//! after our descriptor closes. Until that last step succeeds the tap dies
//! with the descriptor, so a failure leaves nothing behind.

use std::fs::{File, OpenOptions};
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
    let fail = |(step, source): (&'static str, io::Error)| NetError::Tun {
        step,
        name: name.to_string(),
        source,
    };
    let tun = attach(name, TAP_FLAGS | libc::IFF_TUN_EXCL).map_err(fail)?;
    let fd = tun.as_raw_fd();
    // SAFETY: `fd` is the tun descriptor now attached to our new tap;
    // TUNSETOWNER takes its argument by value (a uid), no memory is passed.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETOWNER, libc::c_ulong::from(owner_uid)) };
    if rc < 0 {
        return Err(fail(("TUNSETOWNER", io::Error::last_os_error())));
    }
    // SAFETY: as above; TUNSETPERSIST takes a by-value boolean, 1 = persist.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETPERSIST, 1 as libc::c_ulong) };
    if rc < 0 {
        return Err(fail(("TUNSETPERSIST", io::Error::last_os_error())));
    }
    Ok(())
}

/// Open `/dev/net/tun` and attach it to the tap `name` with `flags`
/// (`TUNSETIFF`; with `IFF_TUN_EXCL` only a new tap, made by the attach):
/// the attached descriptor, or the failed step and its error.
fn attach(name: &str, flags: libc::c_int) -> Result<File, (&'static str, io::Error)> {
    check_name(name).map_err(|e| ("checking the name", e))?;
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_DEVICE)
        .map_err(|e| ("opening /dev/net/tun", e))?;
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        // The flag values all fit in 16 bits; the kernel reads a short.
        flags: flags as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `tun` is a live /dev/net/tun descriptor for the whole call;
    // TUNSETIFF reads and writes one `struct ifreq`, and `req` is an
    // initialized #[repr(C)] value with the kernel struct's size and layout
    // (name[16] then the flags short) that outlives the call.
    let rc = unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETIFF,
            &mut req as *mut IfReqFlags,
        )
    };
    if rc < 0 {
        return Err(("TUNSETIFF", io::Error::last_os_error()));
    }
    Ok(tun)
}

/// An interface name: 1 to 15 bytes, no NUL.
fn check_name(name: &str) -> Result<(), io::Error> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.bytes().any(|b| b == 0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface names are 1..15 bytes without NUL",
        ));
    }
    Ok(())
}

/// Make `owner_uid` the tun owner and `group` the tun group of the
/// existing tap `name` whose interface index is `index`, and return
/// root's descriptor attached to it: attach to it as root (`TUNSETIFF`
/// without `IFF_TUN_EXCL`, the flags banger's taps have), check that the
/// name still has that index, `TUNSETGROUP`, `TUNSETOWNER`. The tap stays
/// persistent; dropping the descriptor detaches.
///
/// Both are set: a process that held the tap can have set either (no
/// capability is needed on an attached descriptor), an attach needs the
/// caller to match both, and a group once set can only be changed (the
/// kernel refuses `-1`), never cleared.
///
/// A tap some process holds (a running VMM) is refused with `EBUSY` by
/// the attach: its owner is never changed under it. Between the two index
/// checks the name cannot change hands: renaming or deleting a link needs
/// `CAP_NET_ADMIN`, and the attach holds the tap. When the name is gone,
/// the attach would make a new tap (the tun driver has no flag that
/// attaches only to an existing one; `IFF_TUN_EXCL` is the opposite): the
/// first check refuses that, and a tap made in a race with it is not
/// persistent, so it goes with the descriptor.
pub(super) fn hand_tap(
    name: &str,
    index: u32,
    owner_uid: u32,
    group: u32,
) -> Result<File, NetError> {
    let fail = |(step, source): (&'static str, io::Error)| NetError::HandTap {
        step,
        name: name.to_string(),
        uid: owner_uid,
        source,
    };
    check_name(name).map_err(|e| fail(("checking the name", e)))?;
    let still = |step: &'static str| -> Result<(), NetError> {
        let got = index_of(name);
        if got != Some(index) {
            return Err(fail((
                step,
                io::Error::other(format!(
                    "its interface index is {got:?}, not the journaled {index}"
                )),
            )));
        }
        Ok(())
    };
    still("checking its index before the attach")?;
    let tun = attach(name, TAP_FLAGS).map_err(fail)?;
    still("checking its index after the attach")?;
    for (step, request, id) in [
        ("TUNSETGROUP", libc::TUNSETGROUP, group),
        ("TUNSETOWNER", libc::TUNSETOWNER, owner_uid),
    ] {
        // SAFETY: `tun` is attached to the tap just checked; both
        // requests take their argument by value, no memory is passed.
        let rc = unsafe { libc::ioctl(tun.as_raw_fd(), request, libc::c_ulong::from(id)) };
        if rc < 0 {
            return Err(fail((step, io::Error::last_os_error())));
        }
    }
    Ok(tun)
}

/// `struct ifreq` as `SIOC[GS]IFHWADDR` use it: the name, then a
/// `struct sockaddr` (family, 14 bytes of which an Ethernet MAC is the
/// first 6), padded to 40 bytes.
#[repr(C)]
struct IfReqHwaddr {
    name: [u8; libc::IFNAMSIZ],
    family: libc::sa_family_t,
    data: [u8; 14],
    _pad: [u8; 8],
}

const _: () = assert!(std::mem::size_of::<IfReqHwaddr>() == 40);

/// Give the tap `name` of interface index `index` to root (owner and
/// group 0, [`hand_tap`]), reset the device state its holders could set
/// ([`reset_device`]), make it Ethernet again if a holder changed its
/// link type, and set its MAC to `mac` (through the attached descriptor,
/// so on that tap only, and only when it differs: every write is
/// announced), returning root's attached descriptor.
pub(super) fn take_tap(name: &str, index: u32, mac: [u8; 6]) -> Result<File, NetError> {
    let tun = hand_tap(name, index, 0, 0)?;
    let fail = |step, source| NetError::HandTap {
        step,
        name: name.to_string(),
        uid: 0,
        source,
    };
    reset_device(&tun).map_err(|(step, e)| fail(step, e))?;
    let mut req = IfReqHwaddr {
        name: [0; libc::IFNAMSIZ],
        family: 0,
        data: [0; 14],
        _pad: [0; 8],
    };
    // SAFETY: `tun` is attached to the checked tap; SIOCGIFHWADDR writes
    // one 40-byte `struct ifreq`, which `req` is (repr(C), the kernel's
    // layout) and outlives the call.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req as *mut _) };
    if rc < 0 {
        return Err(fail("SIOCGIFHWADDR", io::Error::last_os_error()));
    }
    // The link type (hostile read of the own-netns jail, F2): a holder can
    // set another while the tap is down (in a jail's namespace, or off its
    // bridge after a failed launch), and a tap of another type gets no MAC
    // (`EINVAL`) and is no bridge port. `SIOCGIFHWADDR` answers the type
    // as the family: only a tap of another is set back to Ethernet (the
    // tap is down then: only root sets a tap up, never one of another
    // type; an up one is `EBUSY`, an error here).
    let retyped = req.family != libc::ARPHRD_ETHER;
    if retyped {
        // SAFETY: as above; `TUNSETLINK` takes the type by value.
        let rc = unsafe {
            libc::ioctl(
                tun.as_raw_fd(),
                libc::TUNSETLINK,
                libc::c_ulong::from(libc::ARPHRD_ETHER),
            )
        };
        if rc < 0 {
            return Err(fail("TUNSETLINK", io::Error::last_os_error()));
        }
    }
    if retyped || req.data[..6] != mac {
        req.family = libc::ARPHRD_ETHER;
        req.data[..6].copy_from_slice(&mac);
        // SAFETY: as above; SIOCSIFHWADDR reads the same struct.
        let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::SIOCSIFHWADDR, &mut req as *mut _) };
        if rc < 0 {
            return Err(fail("SIOCSIFHWADDR", io::Error::last_os_error()));
        }
    }
    Ok(tun)
}

/// The kernel's vnet header size of a new tap: `struct virtio_net_hdr`.
const VNET_HDR_SIZE: libc::c_int = 10;

/// Reset, through `tun` (attached to the tap), the per-device state any
/// holder of a descriptor of the tap can set with no capability, and
/// that outlives that holder: the TX filter (`TUNSETTXFILTER`, no MAC:
/// all frames pass), the classic and eBPF socket filters and the eBPF
/// steering program (detached; unprivileged BPF may be off, the attach
/// is not), the vnet header size (the kernel's first) and byte order
/// (little-endian and big-endian flags off; a kernel without the
/// cross-endian option refuses the big-endian request, `EINVAL`, and then
/// no holder could have set it), the carrier (on), and the debug message
/// level (`TUNSETDEBUG`: off; a holder that raised it made every frame
/// to the tap a host kernel log line). The link type is `take_tap`'s. A VMM sets its own offloads and
/// header size when it attaches; a send buffer is its descriptor's.
fn reset_device(tun: &File) -> Result<(), (&'static str, io::Error)> {
    let set = |step: &'static str, request: libc::c_ulong, arg: *mut libc::c_void| {
        // SAFETY: `tun` is attached to the checked tap; each request
        // below reads (or, for the detach, ignores) the argument at
        // `arg`, a live local of the type the request takes.
        let rc = unsafe { libc::ioctl(tun.as_raw_fd(), request, arg) };
        if rc < 0 {
            return Err((step, io::Error::last_os_error()));
        }
        Ok(())
    };
    // `struct tun_filter`: flags, then a count of 0 (no filter).
    let mut no_filter = [0u16; 2];
    set(
        "TUNSETTXFILTER",
        libc::TUNSETTXFILTER,
        no_filter.as_mut_ptr().cast(),
    )?;
    let mut fprog = libc::sock_fprog {
        len: 0,
        filter: std::ptr::null_mut(),
    };
    set(
        "TUNDETACHFILTER",
        libc::TUNDETACHFILTER,
        (&mut fprog as *mut libc::sock_fprog).cast(),
    )?;
    for (step, request, mut value) in [
        ("TUNSETFILTEREBPF", libc::TUNSETFILTEREBPF, -1),
        ("TUNSETSTEERINGEBPF", libc::TUNSETSTEERINGEBPF, -1),
        ("TUNSETVNETHDRSZ", libc::TUNSETVNETHDRSZ, VNET_HDR_SIZE),
        ("TUNSETVNETLE", libc::TUNSETVNETLE, 0),
        ("TUNSETVNETBE", libc::TUNSETVNETBE, 0),
        ("TUNSETCARRIER", libc::TUNSETCARRIER, 1),
    ] {
        let value: *mut libc::c_int = &mut value;
        match set(step, request, value.cast()) {
            Err((_, e))
                if request == libc::TUNSETVNETBE && e.raw_os_error() == Some(libc::EINVAL) => {}
            other => other?,
        }
    }
    // SAFETY: as above; `TUNSETDEBUG` takes its level by value, not
    // through a pointer.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETDEBUG, 0 as libc::c_ulong) };
    if rc < 0 {
        return Err(("TUNSETDEBUG", io::Error::last_os_error()));
    }
    Ok(())
}

/// The interface index of `name` in this thread's network namespace.
fn index_of(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `if_nametoindex` reads a NUL-terminated string that outlives
    // the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}
