//! Per-device tun state a holder of a tap sets through its descriptor
//! (filters, vnet header, carrier) against root's take-back: the tap
//! hand-over's tests (`tests_taps`) over a real tap in a fresh network
//! namespace, and frames sent out of the tap to its reader.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use banger_host::net::HostNet as _;

use super::{SLOT, TAP, VM, attach_as_then, host, journal_tap, launch, owner, with_a_tap};

/// `request` on `tun` with a pointer to `value`.
fn tun_set_ptr<T>(tun: &File, request: libc::c_ulong, value: &mut T) -> std::io::Result<()> {
    // SAFETY: each request used here reads or writes one `T` (an int or
    // a `struct tun_filter` head) at `value`, which outlives the call.
    // (`TUNSETTXFILTER` returns how many MACs it matches exactly.)
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), request, value as *mut T) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A frame of the local experimental ether type 0x88b5 to `dst`, sent
/// out of the tap (an `AF_PACKET` socket bound to interface `index`): the
/// tap's reader gets it unless the tap's state drops it.
fn send_frame(index: u32, dst: [u8; 6]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&[0x02, 0xba, 0, 0, 0, 0x77]);
    frame.extend_from_slice(&[0x88, 0xb5]);
    frame.extend_from_slice(b"banger tap state probe");
    // SAFETY: plain syscalls; `addr` is an initialized `sockaddr_ll` of
    // the size passed, and `frame` outlives the call.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst);
        let sent = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(sent, frame.len() as isize, "{err}");
    }
    frame
}

/// Whether a read of `tun` (vnet header of `hdr` bytes first) gets
/// `frame` within a second.
fn reads_frame(tun: &File, hdr: usize, frame: &[u8]) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 2048];
    while std::time::Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, and a read into `buf` of its length.
        let n = unsafe {
            if libc::poll(&mut pfd, 1, 100) != 1 {
                continue;
            }
            libc::read(tun.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
        };
        if n > hdr as isize && buf[hdr..n as usize] == *frame {
            return true;
        }
    }
    false
}

/// What a holder sets on its tap that outlives it: a TX filter letting
/// only frames to one MAC through (`struct tun_filter`: flags, count,
/// then the MAC), a 20-byte little-endian vnet header, carrier off.
fn set_holder_state(tun: &File) -> std::io::Result<()> {
    let mut only = [0u8; 10];
    only[2..4].copy_from_slice(&1u16.to_ne_bytes());
    only[4..10].copy_from_slice(&[0x02, 0xba, 10, 0, 0, 9]);
    tun_set_ptr(tun, libc::TUNSETTXFILTER, &mut only)?;
    tun_set_ptr(tun, libc::TUNSETVNETHDRSZ, &mut 20 as &mut libc::c_int)?;
    tun_set_ptr(tun, libc::TUNSETVNETLE, &mut 1 as &mut libc::c_int)?;
    tun_set_ptr(tun, libc::TUNSETCARRIER, &mut 0 as &mut libc::c_int)?;
    // SAFETY: `TUNSETDEBUG` takes its level by value.
    if unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETDEBUG,
            0xffff_ffff as libc::c_ulong,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The message level (`ETHTOOL_GMSGLVL`, which any process may read) of
/// the tap [`TAP`].
fn msg_level() -> u32 {
    const ETHTOOL_GMSGLVL: u32 = 0x7;
    // `struct ethtool_value`: cmd, data.
    let mut value = [ETHTOOL_GMSGLVL, 0u32];
    // SAFETY: zeroed `ifreq` with the NUL-terminated name copied in and
    // its data pointer at `value`, which outlives the call; the socket
    // is closed after it.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(TAP.bytes()) {
            *d = s as libc::c_char;
        }
        req.ifr_ifru.ifru_data = value.as_mut_ptr().cast();
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        let rc = libc::ioctl(fd, libc::SIOCETHTOOL, &mut req as *mut libc::ifreq);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(rc, 0, "ETHTOOL_GMSGLVL of {TAP}: {err}");
    }
    value[1]
}

/// What the next VMM sees on `tap` (of interface `index`): its vnet
/// header size, its little-endian flag, and whether a frame to a MAC no
/// filter names reaches it, and its debug message level.
fn state_seen(tap: &File, index: u32) -> (libc::c_int, libc::c_int, bool, u32) {
    let mut hdr: libc::c_int = 0;
    tun_set_ptr(tap, libc::TUNGETVNETHDRSZ, &mut hdr).unwrap();
    let mut le: libc::c_int = 0;
    tun_set_ptr(tap, libc::TUNGETVNETLE, &mut le).unwrap();
    let frame = send_frame(index, [0x02, 0xba, 10, 0, 0, 5]);
    (hdr, le, reads_frame(tap, hdr as usize, &frame), msg_level())
}

/// `VM` launched on the journaled tap (a stand-in of `SLOT`), whose
/// slot then sets [`set_holder_state`] on its tap and lets go.
fn launched_and_tampered(
    h: &super::VmHost,
    net: &banger_host::net::RealNet,
    index: u32,
) -> std::process::Child {
    journal_tap(h, Some(index));
    net.set_up(TAP).unwrap();
    let vmm = launch(h);
    let held = attach_as_then(SLOT, set_holder_state).expect("the slot sets its tap's state");
    drop(held);
    vmm
}

/// [`state_seen`] is a fresh tap's.
fn assert_reset(state: (libc::c_int, libc::c_int, bool, u32)) {
    assert_eq!(
        state,
        (10, 0, true, 0),
        "(vnet header size, little-endian, a frame to another MAC reached the tap, debug message level)"
    );
}

/// Third hostile read of the tap hand-over, finding F2: device state a
/// holder sets through its descriptor outlived the give-back — a TX
/// filter (only frames to one MAC reach the tap's reader: the next VM on
/// it lost unicast), the vnet header size and byte order, the carrier.
/// Root's take-back now resets them.
#[test]
fn tun_state_a_holder_set_is_reset_when_the_tap_goes_back() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        let mut vmm = launched_and_tampered(&h, net, index);
        h.stop(VM, Duration::ZERO, true).unwrap();
        let _ = vmm.wait();
        assert_eq!(owner(net), Some(0));
        // The next launch's descriptor (QEMU's, root's).
        let (handed, tap) = h.take_tap_for_qemu(TAP).unwrap();
        let state = state_seen(&File::from(tap), index);
        drop(handed);
        assert_reset(state);
    });
}

/// Hostile read of the fourth round, L1: a Firecracker's hand-over
/// (`hand_tap`) only set owner and group, so device state an escaped VMM
/// left on a tap that was not yet taken back (its VMM gone, no stop or
/// status since) reached the next VMM handed that tap. The hand-over now
/// takes the tap back first (reset, idle MAC), then hands it.
#[test]
fn tun_state_left_on_a_tap_not_yet_taken_back_is_reset_when_it_is_handed() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        let mut vmm = launched_and_tampered(&h, net, index);
        // Gone, but neither stopped nor seen gone: its tap not taken back.
        let _ = vmm.kill();
        let _ = vmm.wait();
        let next = SLOT + 1;
        let handed = h.hand_tap(TAP, (next, next)).unwrap();
        let tap = attach_as_then(next, |_| Ok(())).expect("the next VMM attaches");
        let state = state_seen(&tap, index);
        drop(tap);
        drop(handed);
        assert_reset(state);
    });
}
