//! The sixth review, item 18: a tap's MAC set, through its tun
//! descriptor, to another guest's or below the bridge's.

use std::fs::File;
use std::os::fd::AsRawFd as _;

use banger_testkit::run_ok;

use crate::lab::*;
use crate::tagged_and_kept::{fdb, frames_with};

/// `struct ifreq` for SIOCSIFHWADDR: the name, then a `struct sockaddr`
/// (family and 14 bytes of address), padded to the kernel's 40 bytes.
#[repr(C)]
struct HwAddrReq {
    name: [u8; libc::IFNAMSIZ],
    family: libc::sa_family_t,
    data: [u8; 14],
    _pad: [u8; 8],
}

/// Set the tap's MAC through its tun descriptor, as whoever holds the
/// descriptor can (no capability needed).
fn set_tap_mac(tap: &File, mac: [u8; 6]) {
    let mut req = HwAddrReq {
        name: [0; libc::IFNAMSIZ],
        family: libc::ARPHRD_ETHER,
        data: [0; 14],
        _pad: [0; 8],
    };
    req.data[..6].copy_from_slice(&mac);
    // SAFETY: `tap` is an open tun descriptor attached to a tap for the
    // whole call; SIOCSIFHWADDR reads one `struct ifreq`, which `req` is
    // (repr(C), the kernel's size and layout) and outlives the call.
    let rc = unsafe {
        libc::ioctl(
            tap.as_raw_fd(),
            libc::SIOCSIFHWADDR,
            &mut req as *mut HwAddrReq,
        )
    };
    assert_eq!(
        rc,
        0,
        "SIOCSIFHWADDR on the tun descriptor: {}",
        std::io::Error::last_os_error()
    );
}

/// `TAP1` handed to the owner as for a launch of its VMM, opened by the
/// owner itself as that VMM opens it, with its MAC then set to `mac`
/// through that descriptor.
fn owner_opens_and_sets_mac(lab: &Lab, mac: [u8; 6]) -> File {
    let (uid, gid) = (lab.owner.uid, lab.owner.gid);
    lab.hand_tap(TAP1, uid);
    lab.h.run(|| {
        become_user(uid, gid);
        let tap = open_tap(TAP1);
        set_tap_mac(&tap, mac);
        tap
    })
}

/// Item 18 (medium): whoever holds a tap's descriptor could set the tap's
/// MAC to another guest's; the bridge then put a local entry for that MAC
/// on the attacker's port and sent the host's traffic for that guest (NAT
/// replies, DNS, the host's own connections) out of the attacker's tap.
/// The host sends the victim a datagram (the victim gets it: the path
/// works), the owner sets the attacker's tap MAC to the victim's, and the
/// host sends again: none of it may come out of the attacker's tap.
#[test]
fn a_tap_given_another_guests_mac_gets_none_of_the_hosts_traffic_to_it() {
    let lab = Lab::with_two_guests();
    let mut victim = lab.open_tap();
    lab.guest_speaks(&mut victim);
    let host = lab.host_socket_to_guest();
    let marker = b"host-to-victim-18a";
    host.send_to(marker, (GUEST_IP, 9999)).unwrap();
    assert!(
        !frames_with(&victim, marker).is_empty(),
        "the host's datagram never reached the guest; the test proves nothing"
    );

    let attacker = owner_opens_and_sets_mac(&lab, GUEST_MAC);
    wait_until("the attacker's tap to forward", || {
        lab.link(TAP1).unwrap()["operstate"] == "UP"
    });
    let table = fdb(&lab);
    for _ in 0..3 {
        host.send_to(marker, (GUEST_IP, 9999)).unwrap();
    }
    let stolen = frames_with(&attacker, marker);
    assert!(
        stolen.is_empty(),
        "with its MAC set to the victim's, {TAP1} got {} frame(s) of the host's traffic \
         to the victim; the bridge's table:\n{table}",
        stolen.len()
    );
}

/// Item 18: with no MAC of its own set, a bridge takes the lowest of its
/// ports' MACs, so whoever holds a tap's descriptor could change the
/// bridge's MAC (every guest's gateway) by giving the tap a low one.
#[test]
fn a_tap_given_a_low_mac_does_not_change_the_bridges_mac() {
    let lab = Lab::with_two_guests();
    let _victim = lab.open_tap();
    let before = lab.bridge_mac();
    let low = [0x02, 0, 0, 0, 0, 0x01];
    let _attacker = owner_opens_and_sets_mac(&lab, low);
    let tap_mac = mac(lab.link(TAP1).expect("the tap exists")["address"]
        .as_str()
        .unwrap());
    assert_eq!(
        tap_mac, low,
        "the tap's MAC did not change; the test proves nothing"
    );
    assert_eq!(
        lab.bridge_mac(),
        before,
        "a tap's MAC changed the bridge's MAC"
    );
}

/// The host's neighbour entries on the bridge, as `ip -j neigh` lists them.
fn bridge_neighbours(lab: &Lab) -> Vec<serde_json::Value> {
    let out = ip(&lab.h, &format!("-j neigh show dev {BRIDGE}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "ip neigh show failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Item 19 (low): `EnsureBridge` set the bridge's MAC on every call; the
/// kernel announces a MAC write even when the MAC is the same
/// (`NETDEV_CHANGEADDR`), and the host then flushes its whole neighbour
/// table on the bridge, permanent entries included — the owner could
/// repeat `EnsureBridge` to drop an admin's pinned entries and disturb
/// the guests' traffic. A second `EnsureBridge` must leave them.
#[test]
fn ensure_bridge_again_keeps_the_bridges_neighbour_entries() {
    let lab = Lab::new();
    lab.ensure_bridge();
    let mac_before = lab.bridge_mac();
    assert_eq!(mac_before, [0x02, 0xba, 10, 213, 7, 1]);
    run_ok(ip(
        &lab.h,
        &format!("neigh add 10.213.7.9 lladdr 02:00:00:00:00:09 dev {BRIDGE} nud permanent"),
    ));
    let pinned = |n: &serde_json::Value| n["dst"] == "10.213.7.9";
    assert!(
        bridge_neighbours(&lab).iter().any(pinned),
        "the pinned entry was never there; the test proves nothing"
    );
    lab.ensure_bridge();
    let after = bridge_neighbours(&lab);
    assert!(
        after.iter().any(pinned),
        "a second EnsureBridge flushed the bridge's neighbour table: {after:?}"
    );
    assert_eq!(lab.bridge_mac(), mac_before);
}
