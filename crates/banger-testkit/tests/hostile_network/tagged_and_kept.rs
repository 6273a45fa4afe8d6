//! The fifth review: VLAN-tagged frames past the pins, link-local frames
//! teaching the bridge a MAC, and a tap handed to another uid kept after
//! teardown.

use std::fs::File;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd as _;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_proto::privops::{NetOp, PrivOp, Teardown};
use banger_testkit::*;

use crate::lab::*;

/// The bridge's forwarding table in `h`.
pub fn fdb(lab: &Lab) -> String {
    let mut fdb = Command::new("bridge");
    fdb.args(["-n", &lab.h.name, "fdb", "show", "br", BRIDGE]);
    run_ok(fdb)
}

/// An ARP request `who has target? tell sender` with sender MAC `mac`.
pub fn arp_request(mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&mac);
    arp.extend_from_slice(&sender.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target.octets());
    arp
}

/// `payload` (of `ethertype`) behind a VLAN tag of protocol `tpid`, VLAN
/// id 0 (a priority tag).
pub fn tagged(tpid: u16, ethertype: u16, payload: &[u8]) -> (u16, Vec<u8>) {
    let mut p = vec![0, 0];
    p.extend_from_slice(&ethertype.to_be_bytes());
    p.extend_from_slice(payload);
    (tpid, p)
}

/// The frames that come out of `tap` within about a second (each without
/// the virtio-net header) and hold `marker`.
pub fn frames_with(tap: &File, marker: &[u8]) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: tap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one initialized pollfd that outlives the call,
        // and its descriptor is `tap`'s, open for the whole call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
        if ready <= 0 {
            continue;
        }
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes and
        // the descriptor is `tap`'s, open for the whole call.
        let n = unsafe { libc::read(tap.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 10 {
            continue;
        }
        let frame = &buf[10..n as usize];
        if frame.windows(marker.len()).any(|w| w == marker) {
            found.push(frame.to_vec());
        }
    }
    found
}

/// Issue #13 F1 (high): the IPv4 and ARP pins matched `ether type ip`
/// and `ether type arp`, and only 802.1Q tags were dropped. The kernel
/// moves an outer VLAN tag into the packet's metadata before the bridge,
/// so a frame tagged 802.1ad (or 802.1Q, VLAN 0) still reads its tag
/// protocol as `ether type`, passes no pin, and reaches the host's IPv4
/// and ARP untagged. Here an offline guest (`GUEST1_IP` on `TAP1`) sends
/// under its own MAC, tagged, a UDP packet from the NAT guest's address
/// (`GUEST_IP`) to an upstream host, and an ARP request claiming that
/// address: nothing may go upstream, and the host's neighbour entry for
/// `GUEST_IP` must not point at the attacker.
#[test]
fn a_vlan_tagged_frame_gets_no_spoofed_address_past_the_pins() {
    let lab = Lab::with_two_guests();
    let _victim = lab.open_tap();
    let mut attacker = lab.open_tap_named(TAP1);
    let upstream = Lab::listen(&lab.u, UPSTREAM_IP, 9998);
    let bridge_mac = lab.bridge_mac();
    let tap_rx = lab.rx(TAP1);

    let mut leaked = Vec::new();
    let mut poisoned = Vec::new();
    for tpid in [0x88a8u16, 0x8100] {
        let spoofed = udp4(GUEST_IP, UPSTREAM_IP, 9998, b"tagged spoof");
        let (t, p) = tagged(tpid, 0x0800, &spoofed);
        send(&mut attacker, &ether(bridge_mac, GUEST1_MAC, t, &p));
        if let Some(got) = received(&upstream) {
            leaked.push((tpid, got));
        }
        let (t, p) = tagged(tpid, 0x0806, &arp_request(GUEST1_MAC, GUEST_IP, BRIDGE_IP));
        send(&mut attacker, &ether([0xff; 6], GUEST1_MAC, t, &p));
        std::thread::sleep(Duration::from_millis(200));
        let neigh = run_ok(ip(&lab.h, &format!("neigh show {GUEST_IP}")));
        if neigh.contains("02:ba:0a:d5:07:03") {
            poisoned.push((tpid, neigh));
        }
    }
    assert!(
        leaked.is_empty() && poisoned.is_empty(),
        "tagged frames from an offline guest passed as the NAT guest:\n\
         forwarded upstream (tag protocol, payload): {leaked:?}\n\
         the host's neighbour entry for {GUEST_IP}: {poisoned:?}"
    );
    assert!(
        lab.rx(TAP1) >= tap_rx + 4,
        "the tap took none of the frames"
    );
}

/// Issue #13 F2 (high): the bridge learns the source MAC of a frame to a
/// link-local group address (01:80:c2:00:00:0X) before the bridge
/// prerouting hook (for LLDP, 0x0E, with no hook at all), so any tap —
/// even one with no guest entry — could move a guest's MAC to its own port
/// and take the host's traffic to that guest. The guest on `TAP` speaks
/// first (the bridge learns it there), then `TAP1` sends an LLDP frame
/// from the guest's MAC, then the host sends the guest a datagram: it
/// must reach the guest's tap, never `TAP1`.
#[test]
fn a_link_local_frame_does_not_move_a_guests_mac_to_another_tap() {
    let lab = Lab::with_guest(true);
    lab.ensure_tap_named(TAP1, lab.owner.uid)
        .expect("EnsureTap 1");
    let mut victim = lab.open_tap();
    let mut attacker = lab.open_tap_named(TAP1);
    lab.guest_speaks(&mut victim);
    wait_until("the bridge to learn the guest's MAC on its tap", || {
        fdb(&lab).contains(&format!("02:ba:0a:d5:07:02 dev {TAP} "))
    });

    let lldp = ether([0x01, 0x80, 0xc2, 0, 0, 0x0e], GUEST_MAC, 0x88cc, &[0; 46]);
    send(&mut attacker, &lldp);
    std::thread::sleep(Duration::from_millis(200));
    let host = lab.host_socket_to_guest();
    let marker = b"host-to-guest-5d1e";
    host.send_to(marker, (GUEST_IP, 9999)).unwrap();
    let stolen = frames_with(&attacker, marker);
    let table = fdb(&lab);
    assert!(
        stolen.is_empty() && !table.contains(&format!("02:ba:0a:d5:07:02 dev {TAP1} ")),
        "an LLDP frame moved the guest's MAC to {TAP1}: it got {} frame(s) of the host's \
         traffic to the guest; the bridge's table:\n{table}",
        stolen.len()
    );
    host.send_to(marker, (GUEST_IP, 9999)).unwrap();
    assert!(
        !frames_with(&victim, marker).is_empty(),
        "the host's datagram never reached the guest; the test proves nothing"
    );
}

/// Issue #13 F3 (medium): a tap counted as banger's only while its tun
/// owner was the uid it was made for, and whoever may attach to a tap
/// may change that owner (`TUNSETOWNER` needs no capability). The owner
/// attaches to its own tap, hands it to another uid and keeps the
/// descriptor; a teardown then kept the tap as foreign and deleted the
/// bridge and banger's tables, and the host routed whatever the
/// descriptor wrote. After the teardown, a packet written from a spoofed
/// source to an upstream host must not get there.
#[test]
fn a_tap_handed_to_another_uid_is_not_left_routing_after_teardown() {
    let lab = Lab::new();
    lab.ensure_bridge();
    lab.ensure_tap(lab.owner.uid).expect("EnsureTap");
    let (uid, gid) = (lab.owner.uid, lab.owner.gid);
    // As for a launch of the owner's VMM, which then holds the tap.
    lab.hand_tap(TAP, uid);
    let mut tap = lab.h.run(|| {
        become_user(uid, gid);
        let tap = open_tap(TAP);
        // SAFETY: `tap` is an open tun descriptor attached to the tap;
        // TUNSETOWNER takes a uid by value.
        let rc = unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETOWNER, 4242 as libc::c_ulong) };
        assert_eq!(
            rc,
            0,
            "TUNSETOWNER as the owner: {}",
            std::io::Error::last_os_error()
        );
        tap
    });
    let upstream = Lab::listen(&lab.u, UPSTREAM_IP, 9998);
    let report = lab
        .call(PrivOp::Net(NetOp::Teardown(Teardown)))
        .expect("Teardown");
    let kept = lab.link(TAP);
    let mut nft = lab.h.exec("nft");
    nft.args(["list", "tables"]);
    let tables = run_ok(nft);
    let tap_mac = kept
        .as_ref()
        .map(|l| mac(l["address"].as_str().unwrap()))
        .unwrap_or([0xff; 6]);
    let packet = udp4(
        Ipv4Addr::new(203, 0, 113, 9),
        UPSTREAM_IP,
        9998,
        b"after teardown",
    );
    let mut buf = vec![0u8; 10];
    buf.extend_from_slice(&ether(tap_mac, GUEST_MAC, 0x0800, &packet));
    // Once the tap is gone the descriptor writes nothing: an error here is
    // the fix at work.
    let written = tap.write_all(&buf);
    let leaked = received(&upstream);
    assert!(
        leaked.is_none(),
        "after a teardown a tap handed to uid 4242 routed a spoofed packet upstream \
         (write: {written:?}); teardown said {report}; the tap: {kept:?}; tables:\n{tables}"
    );
    assert!(
        kept.is_none() || tables.contains("table inet banger"),
        "the tap was kept with none of banger's tables: {report}"
    );
}
