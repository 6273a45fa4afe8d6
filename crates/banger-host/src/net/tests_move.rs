//! Real-kernel tests of moving a link into a jail's network namespace and
//! back ([`HostNet::move_link_to_netns`], [`HostNet::move_link_back`]), in
//! a throwaway test namespace H with a second namespace J standing for a
//! jail's.

use std::os::fd::{AsFd as _, OwnedFd};
use std::time::{Duration, Instant};

use super::netns::{in_fresh_netns, jail_namespace};
use super::*;

/// The calling thread's network namespace.
fn this_thread_ns() -> OwnedFd {
    rustix::fs::open(
        "/proc/thread-self/ns/net",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap()
}

/// Design step 5: a tap moved into J and back keeps its index, name, MAC
/// and tun owner, and comes back with no master, down; a root descriptor
/// attached before the moves still works after them.
#[test]
fn real_a_tap_moved_into_a_jail_namespace_and_back_keeps_its_identity() {
    in_fresh_netns(|| {
        let net = RealNet::new();
        let (j, rtnl) = jail_namespace();
        let host = this_thread_ns();
        net.create_bridge("tmv-br").unwrap();
        net.create_tap("tmv0", 4242).unwrap();
        net.set_master("tmv0", "tmv-br").unwrap();
        net.set_up("tmv0").unwrap();
        let before = net.link("tmv0").unwrap().unwrap();
        let mac = net.link_mac("tmv0").unwrap();
        let held = attach("tmv0");
        net.move_link_to_netns("tmv0", before.index, j.as_fd())
            .unwrap();
        assert_eq!(
            net.link("tmv0").unwrap(),
            None,
            "still in the host namespace"
        );
        net.move_link_back(rtnl.as_fd(), "tmv0", before.index, host.as_fd())
            .unwrap();
        let after = net.link("tmv0").unwrap().unwrap();
        assert_eq!(
            (
                after.index,
                &after.name,
                after.tap_owner,
                after.master,
                after.up
            ),
            (before.index, &before.name, Some(4242), None, false)
        );
        assert_eq!(net.link_mac("tmv0").unwrap(), mac);
        // The descriptor attached before still names the tap.
        assert_eq!(tun_name(&held), Ok("tmv0".to_string()));
        // The socket of J moves only what is in J: the tap is not.
        let again = net.move_link_back(rtnl.as_fd(), "tmv0", before.index, host.as_fd());
        assert_eq!(
            again.as_ref().map_err(NetError::errno),
            Err(Some(libc::ENODEV)),
            "{again:?}"
        );
        drop(held);
        assert!(net.delete_link_index(before.index).unwrap());
    });
}

/// Back with its index taken in the host namespace: refused (`EBUSY`),
/// never renumbered; the tap stays in J and comes back once the index is
/// free. The error names the link and its index.
#[test]
fn real_a_tap_whose_index_is_taken_does_not_come_back_renumbered() {
    in_fresh_netns(|| {
        let net = RealNet::new();
        let (j, rtnl) = jail_namespace();
        let host = this_thread_ns();
        net.create_tap("tmv1", 4242).unwrap();
        let index = net.link("tmv1").unwrap().unwrap().index;
        net.move_link_to_netns("tmv1", index, j.as_fd()).unwrap();
        // Another link takes the index meanwhile.
        let mut squat = netlink_packet_route::link::LinkMessage::default();
        squat.header.index = index;
        squat
            .attributes
            .push(netlink_packet_route::link::LinkAttribute::IfName(
                "tmv-squat".into(),
            ));
        squat
            .attributes
            .push(netlink_packet_route::link::LinkAttribute::LinkInfo(vec![
                netlink_packet_route::link::LinkInfo::Kind(
                    netlink_packet_route::link::InfoKind::Bridge,
                ),
            ]));
        netlink::Netlink::open()
            .unwrap()
            .ack(
                netlink_packet_route::RouteNetlinkMessage::NewLink(squat),
                netlink_packet_core::NLM_F_CREATE | netlink_packet_core::NLM_F_EXCL,
                "create the squatter",
            )
            .unwrap();
        assert_eq!(net.link("tmv-squat").unwrap().unwrap().index, index);
        let e = net
            .move_link_back(rtnl.as_fd(), "tmv1", index, host.as_fd())
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::EBUSY), "{e:?}");
        let text = format!("{e}");
        assert!(text.contains(&format!("#{index} (tmv1)")), "{text}");
        assert_eq!(net.link("tmv1").unwrap(), None, "came back renumbered");
        assert!(net.delete_link("tmv-squat").unwrap());
        net.move_link_back(rtnl.as_fd(), "tmv1", index, host.as_fd())
            .unwrap();
        assert_eq!(net.link("tmv1").unwrap().unwrap().index, index);
        assert!(net.delete_link_index(index).unwrap());
    });
}

/// A tap left in J is deleted with J once nothing holds J: a root
/// descriptor attached to it is then detached (`TUNGETIFF`: `EBADFD`).
#[test]
fn real_a_tap_left_in_a_jail_namespace_dies_with_it() {
    in_fresh_netns(|| {
        let net = RealNet::new();
        let (j, rtnl) = jail_namespace();
        net.create_tap("tmv2", 4242).unwrap();
        let index = net.link("tmv2").unwrap().unwrap().index;
        let held = attach("tmv2");
        net.move_link_to_netns("tmv2", index, j.as_fd()).unwrap();
        assert_eq!(tun_name(&held), Ok("tmv2".to_string()));
        drop((j, rtnl));
        let deadline = Instant::now() + Duration::from_secs(10);
        while tun_name(&held) != Err(libc::EBADFD) {
            assert!(Instant::now() < deadline, "{:?}", tun_name(&held));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(net.link("tmv2").unwrap(), None);
    });
}

/// The name of the tap `tun` is attached to (`TUNGETIFF`), or the errno.
fn tun_name(tun: &std::fs::File) -> Result<String, i32> {
    use std::os::fd::AsRawFd as _;
    let mut req = [0u8; 40];
    // SAFETY: TUNGETIFF writes 40 bytes, the size of `req`, on a live tun
    // descriptor.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNGETIFF, req.as_mut_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    let end = req[..16].iter().position(|&b| b == 0).unwrap_or(16);
    Ok(String::from_utf8_lossy(&req[..end]).into_owned())
}

/// Attach to the tap `name` as a VMM does (`IFF_TAP|IFF_NO_PI|IFF_VNET_HDR`).
fn attach(name: &str) -> std::fs::File {
    super::tests::attach(name)
}
