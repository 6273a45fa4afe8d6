//! The journal is written before the host is changed.

use banger_proto::privops::NetOp;
use std::os::fd::OwnedFd;

use banger_host::net::{Link, NetError, NftTable, RouteV4};

use super::*;

/// A [`FakeNet`] that snapshots the journal file whenever something is
/// created, to prove the entry is written first.
struct JournalPeek {
    inner: FakeNet,
    journal: PathBuf,
    seen: std::sync::Mutex<Vec<String>>,
}

impl JournalPeek {
    fn peek(&self) {
        let text = std::fs::read_to_string(&self.journal).unwrap_or_default();
        self.seen.lock().unwrap().push(text);
    }
}

impl HostNet for JournalPeek {
    fn links(&self) -> Result<Vec<Link>, NetError> {
        self.inner.links()
    }
    fn link(&self, name: &str) -> Result<Option<Link>, NetError> {
        self.inner.link(name)
    }
    fn create_bridge(&self, name: &str) -> Result<(), NetError> {
        self.peek();
        self.inner.create_bridge(name)
    }
    fn add_address(&self, link: &str, address: Ipv4Cidr) -> Result<(), NetError> {
        self.inner.add_address(link, address)
    }
    fn del_address(&self, link: &str, address: Ipv4Cidr) -> Result<(), NetError> {
        self.inner.del_address(link, address)
    }
    fn set_up(&self, link: &str) -> Result<(), NetError> {
        self.inner.set_up(link)
    }
    fn set_down(&self, link: &str) -> Result<(), NetError> {
        self.inner.set_down(link)
    }
    fn set_master(&self, link: &str, master: &str) -> Result<(), NetError> {
        self.inner.set_master(link, master)
    }
    fn set_master_index(&self, link: u32, master: u32) -> Result<(), NetError> {
        self.inner.set_master_index(link, master)
    }
    fn disable_ipv6(&self, link: &str) -> Result<(), NetError> {
        self.inner.disable_ipv6(link)
    }
    fn move_link_to_netns(
        &self,
        name: &str,
        index: u32,
        ns: std::os::fd::BorrowedFd<'_>,
    ) -> Result<(), NetError> {
        self.inner.move_link_to_netns(name, index, ns)
    }
    fn move_link_back(
        &self,
        jail_rtnl: std::os::fd::BorrowedFd<'_>,
        name: &str,
        index: u32,
        host_ns: std::os::fd::BorrowedFd<'_>,
    ) -> Result<(), NetError> {
        self.inner.move_link_back(jail_rtnl, name, index, host_ns)
    }
    fn set_no_linklocal_learn(&self, link: &str) -> Result<(), NetError> {
        self.inner.set_no_linklocal_learn(link)
    }
    fn set_mac(&self, link: &str, mac: [u8; 6]) -> Result<(), NetError> {
        self.inner.set_mac(link, mac)
    }
    fn link_mac(&self, link: &str) -> Result<Option<[u8; 6]>, NetError> {
        self.inner.link_mac(link)
    }
    fn create_tap(&self, name: &str, owner_uid: u32) -> Result<(), NetError> {
        self.peek();
        self.inner.create_tap(name, owner_uid)
    }
    fn hand_tap(&self, name: &str, index: u32, owner_uid: u32, group: u32) -> Result<(), NetError> {
        self.inner.hand_tap(name, index, owner_uid, group)
    }
    fn take_tap(&self, name: &str, index: u32, mac: [u8; 6]) -> Result<OwnedFd, NetError> {
        self.inner.take_tap(name, index, mac)
    }
    fn delete_link(&self, name: &str) -> Result<bool, NetError> {
        self.inner.delete_link(name)
    }
    fn delete_link_index(&self, index: u32) -> Result<bool, NetError> {
        self.inner.delete_link_index(index)
    }
    fn routes_v4(&self) -> Result<Vec<RouteV4>, NetError> {
        self.inner.routes_v4()
    }
    fn resolvers(&self) -> Result<Vec<Ipv4Addr>, NetError> {
        self.inner.resolvers()
    }
    fn apply_nft(&self, batch: &str) -> Result<(), NetError> {
        self.peek();
        self.inner.apply_nft(batch)
    }
    fn nft_tables(&self) -> Result<Vec<NftTable>, NetError> {
        self.inner.nft_tables()
    }
    fn ip_forward(&self) -> Result<bool, NetError> {
        self.inner.ip_forward()
    }
    fn set_ip_forward(&self, on: bool) -> Result<(), NetError> {
        self.inner.set_ip_forward(on)
    }
    fn resolver_dns(&self, link: &str, dns: Ipv4Addr) -> Result<(), NetError> {
        self.peek();
        self.inner.resolver_dns(link, dns)
    }
    fn resolver_domain(&self, link: &str, domain: &str) -> Result<(), NetError> {
        self.inner.resolver_domain(link, domain)
    }
    fn resolver_no_default_route(&self, link: &str) -> Result<(), NetError> {
        self.inner.resolver_no_default_route(link)
    }
    fn resolver_revert(&self, link: &str) -> Result<(), NetError> {
        self.inner.resolver_revert(link)
    }
    fn in_host_netns(&self) -> Option<bool> {
        self.inner.in_host_netns()
    }
}

#[test]
fn the_journal_entry_is_written_before_the_object_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.json");
    let peek = Arc::new(JournalPeek {
        inner: FakeNet::new(),
        journal: journal.clone(),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let exec = Executor::new(Arc::new(FakeHost::lab_host()), peek.clone(), journal);
    exec.execute(PrivOp::Net(NetOp::EnsureBridge(bridge())))
        .unwrap();
    exec.execute(PrivOp::Net(NetOp::EnsureTap(tap("bangertap0"))))
        .unwrap();
    exec.execute(PrivOp::Net(NetOp::SyncFirewall(firewall(vec![guest(
        "bangertap0",
        2,
        true,
    )]))))
    .unwrap();
    exec.execute(PrivOp::Net(NetOp::ApplyResolver(ResolverSpec {
        bridge: "banger0".into(),
        dns: Ipv4Addr::new(10, 0, 0, 1),
    })))
    .unwrap();
    let seen = peek.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    let parse = |t: &str| serde_json::from_str::<journal::Journal>(t).unwrap();
    // The base firewall is journaled before it is applied, before the
    // bridge exists.
    assert!(parse(&seen[0]).firewall);
    assert_eq!(parse(&seen[1]).bridges[0].name, "banger0");
    assert_eq!(parse(&seen[2]).taps[0].name, "bangertap0");
    assert_eq!(parse(&seen[3]).nat_guests, [Ipv4Addr::new(10, 0, 0, 2)]);
    assert_eq!(parse(&seen[4]).resolver_links, ["banger0"]);
}
