//! A network namespace of the test's own, for the tests that run a real VMM
//! with a tap: nothing they create touches the host's network.

use banger_host::runner::{Cmd, Runner};

/// Move this thread (and the children it spawns) into a fresh network
/// namespace and create `tap` there. The namespace goes when the thread
/// and its children are gone.
#[allow(dead_code)] // each including test target uses its own subset
pub fn private_netns_with_tap(tap: &str) {
    private_netns_with_tap_of(tap, None)
}

/// [`private_netns_with_tap`], the tap's tun owner `owner` when given (a
/// jailed VMM's uid: only it may attach the tap).
#[allow(dead_code)] // each including test target uses its own subset
pub fn private_netns_with_tap_of(tap: &str, owner: Option<u32>) {
    // SAFETY: unshare(CLONE_NEWNET) takes no pointers; it changes only the
    // calling thread's network namespace, which is what this test wants
    // (children spawned from this thread inherit it).
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) (needs root): {}",
        std::io::Error::last_os_error()
    );
    let user = owner.map(|uid| uid.to_string());
    let owned = user.as_deref().map(|uid| ["user", uid]);
    Runner
        .run(
            &Cmd::new("ip")
                .args(["tuntap", "add", "dev", tap, "mode", "tap"])
                .args(owned.iter().flatten()),
        )
        .unwrap();
    Runner
        .run(&Cmd::new("ip").args(["link", "set", tap, "up"]))
        .unwrap();
}

/// The test's [`banger_vmm::firecracker::JailTap`], over `banger_host::net`
/// as the executor's is: the tap by the index it had when this was made,
/// in and out of the jail's namespace, then back on `bridge`, IPv6 off,
/// up. Make it on the thread whose namespace holds the tap.
#[allow(dead_code)] // each including test target uses its own subset
pub struct HostTap {
    pub name: String,
    pub index: u32,
    bridge: u32,
    /// The namespace the tap comes back to: this thread's, opened here.
    home: std::os::fd::OwnedFd,
    net: banger_host::net::RealNet,
}

#[allow(dead_code)]
impl HostTap {
    /// For `tap`, made a port of a new bridge `bridge` (up, IPv6 off), both
    /// in this thread's namespace.
    pub fn on_new_bridge(tap: &str, bridge: &str) -> HostTap {
        use banger_host::net::HostNet as _;
        let net = banger_host::net::RealNet::new();
        net.create_bridge(bridge).unwrap();
        net.disable_ipv6(bridge).unwrap();
        net.set_up(bridge).unwrap();
        net.disable_ipv6(tap).unwrap();
        net.set_master(tap, bridge).unwrap();
        let index = net.link(tap).unwrap().unwrap().index;
        let bridge = net.link(bridge).unwrap().unwrap().index;
        let home = rustix::fs::open(
            "/proc/thread-self/ns/net",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        HostTap {
            name: tap.to_string(),
            index,
            bridge,
            home,
            net,
        }
    }
}

impl banger_vmm::firecracker::JailTap for HostTap {
    fn enter(&mut self, jail_ns: std::os::fd::BorrowedFd<'_>) -> Result<(), String> {
        use banger_host::net::HostNet as _;
        self.net
            .move_link_to_netns(&self.name, self.index, jail_ns)
            .map_err(|e| e.to_string())
    }

    fn leave(&mut self, jail_rtnl: std::os::fd::BorrowedFd<'_>) -> Result<(), String> {
        use banger_host::net::HostNet as _;
        use std::os::fd::AsFd as _;
        let net = &self.net;
        net.move_link_back(jail_rtnl, &self.name, self.index, self.home.as_fd())
            .and_then(|()| net.disable_ipv6(&self.name))
            .and_then(|()| net.set_master_index(self.index, self.bridge))
            .and_then(|()| net.set_up(&self.name))
            .map_err(|e| e.to_string())
    }
}
