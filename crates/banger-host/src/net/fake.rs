//! A recording fake of [`HostNet`] for unit tests of code injected with one
//! (the executor). It keeps a small model of the host (links, routes, nft
//! tables, forwarding, resolver settings) so idempotence can be tested, and
//! records every call in order, reads included, e.g. `"links"`,
//! `"create_bridge(banger0)"`, `"add_address(banger0, 10.0.0.1/24)"`.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Mutex;

use super::{HostNet, Ipv4Cidr, Link, LinkKind, NetError, NftTable, RouteV4};
use crate::runner::RunError;

/// The calls that only read; everything else changes the host.
pub const READ_CALLS: [&str; 7] = [
    "links",
    "link_mac(",
    "routes_v4",
    "resolvers",
    "nft_tables",
    "ip_forward",
    "link(",
];

/// The modelled host.
#[derive(Debug, Clone, Default)]
pub struct FakeNetState {
    pub links: Vec<Link>,
    pub routes: Vec<RouteV4>,
    /// What `resolvers` answers.
    pub resolvers: Vec<Ipv4Addr>,
    pub tables: Vec<NftTable>,
    pub ip_forward: bool,
    /// Every batch given to `apply_nft`, in order.
    pub nft_batches: Vec<String>,
    pub resolvectl_installed: bool,
    /// How many more runs find resolvectl before it is gone (a package
    /// removed between two calls); `None`: as `resolvectl_installed` says.
    pub resolvectl_runs_left: Option<usize>,
    /// Per link: the DNS server and domain set through the resolver.
    pub resolver: BTreeMap<String, (Option<Ipv4Addr>, Option<String>)>,
    /// Call names (`"create_tap"`, `"apply_nft"`, ...) that fail with EIO.
    pub failing: Vec<String>,
    /// Call names that fail as their host tool fails: `(call, tool, the
    /// tool's stderr)`, a non-zero exit with those words.
    pub failing_tools: Vec<(String, &'static str, String)>,
    /// The MACs set with `set_mac`, per link (forgotten when it is
    /// deleted); a link without one has none.
    pub macs: BTreeMap<String, [u8; 6]>,
    /// Links whose IPv6 is switched off (forgotten when they are deleted).
    pub ipv6_off: std::collections::BTreeSet<String>,
    /// The highest index ever given: like the kernel, a new link never
    /// takes a deleted one's index.
    pub last_index: u32,
    /// Names whose link another agent replaces (deletes and makes again
    /// under that name, with a new index) just before a deletion or a
    /// `set_master` request reaches the fake: a race the caller lost.
    pub replaced_before_request: Vec<String>,
    /// Taps a process holds (a running VMM): `hand_tap` fails with `EBUSY`.
    pub attached_taps: Vec<String>,
    /// Links moved into a jail's network namespace (`move_link_to_netns`)
    /// and not back yet: gone from `links`, no master, down.
    pub in_jail: Vec<Link>,
}

#[derive(Debug)]
pub struct FakeNet {
    pub state: Mutex<FakeNetState>,
    pub calls: Mutex<Vec<String>>,
}

impl Default for FakeNet {
    fn default() -> Self {
        FakeNet::new()
    }
}

impl FakeNet {
    /// A host with only `lo` (127.0.0.1/8, up), forwarding off, resolvectl
    /// installed.
    pub fn new() -> FakeNet {
        let lo = Link {
            index: 1,
            name: "lo".into(),
            kind: LinkKind::Unspecified,
            master: None,
            up: true,
            addresses: vec![Ipv4Cidr::new(Ipv4Addr::LOCALHOST, 8)],
            link_type: libc::ARPHRD_LOOPBACK,
            tap_owner: None,
            tap_group: None,
        };
        FakeNet {
            state: Mutex::new(FakeNetState {
                links: vec![lo],
                resolvectl_installed: true,
                ..FakeNetState::default()
            }),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Add a link of `kind` (down, no addresses); its index is the next free one.
    pub fn with_link(self, name: &str, kind: LinkKind) -> FakeNet {
        self.lock().add_link(name, kind);
        self
    }

    /// Add a route to `destination` through `interface` in the main table.
    pub fn with_route(self, destination: Ipv4Cidr, interface: &str) -> FakeNet {
        self.lock().routes.push(RouteV4 {
            destination,
            interface: Some(interface.into()),
            table: 254,
            gateways: Vec::new(),
            nexthop_id: None,
        });
        self
    }

    /// Add a route to `destination` through `gateway` on `interface`, in the
    /// main table.
    pub fn with_gateway_route(
        self,
        destination: Ipv4Cidr,
        gateway: Ipv4Addr,
        interface: &str,
    ) -> FakeNet {
        self.lock().routes.push(RouteV4 {
            destination,
            interface: Some(interface.into()),
            table: 254,
            gateways: vec![gateway],
            nexthop_id: None,
        });
        self
    }

    /// Give `name` the address `address` (the link must exist).
    pub fn with_address(self, name: &str, address: Ipv4Cidr) -> FakeNet {
        if let Some(l) = self.lock().links.iter_mut().find(|l| l.name == name) {
            l.addresses.push(address);
        }
        self
    }

    /// The host's resolver uses `servers`.
    pub fn with_resolvers(self, servers: &[Ipv4Addr]) -> FakeNet {
        self.lock().resolvers = servers.to_vec();
        self
    }

    pub fn with_table(self, family: &str, name: &str) -> FakeNet {
        self.lock().tables.push(NftTable {
            family: family.into(),
            name: name.into(),
        });
        self
    }

    pub fn without_resolvectl(self) -> FakeNet {
        self.lock().resolvectl_installed = false;
        self
    }

    /// resolvectl is found by the next `runs` calls that run it, then it
    /// is gone.
    pub fn with_resolvectl_for(self, runs: usize) -> FakeNet {
        self.lock().resolvectl_runs_left = Some(runs);
        self
    }

    /// Make calls named `call` fail (with EIO).
    pub fn failing(self, call: &str) -> FakeNet {
        self.lock().failing.push(call.into());
        self
    }

    /// Make calls named `call` fail as `tool` does when it exits 1 saying
    /// `stderr`.
    pub fn failing_tool(self, call: &str, tool: &'static str, stderr: &str) -> FakeNet {
        self.lock()
            .failing_tools
            .push((call.into(), tool, stderr.into()));
        self
    }

    /// The recorded calls so far.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The recorded calls that change the host.
    pub fn mutating_calls(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| !READ_CALLS.iter().any(|r| c.starts_with(r)))
            .collect()
    }

    pub fn clear_calls(&self) {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// A copy of the modelled host.
    pub fn state(&self) -> FakeNetState {
        self.lock().clone()
    }

    /// The name of the link with `index`, or `#<index>` when none has it.
    fn name_of(&self, index: u32) -> String {
        self.lock()
            .links
            .iter()
            .find(|l| l.index == index)
            .map_or_else(|| format!("#{index}"), |l| l.name.clone())
    }

    /// Delete the link `name` from the model.
    fn delete_link_unrecorded(&self, name: &str) -> Result<bool, NetError> {
        let mut state = self.lock();
        let before = state.links.len();
        state.links.retain(|l| l.name != name);
        state.ipv6_off.remove(name);
        state.macs.remove(name);
        let removed = state.links.len() != before;
        for l in &mut state.links {
            if l.master.as_deref() == Some(name) {
                l.master = None;
            }
        }
        state
            .routes
            .retain(|r| r.interface.as_deref() != Some(name));
        Ok(removed)
    }

    pub fn link_named(&self, name: &str) -> Option<Link> {
        self.lock().links.iter().find(|l| l.name == name).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeNetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `call`; fail it if its name is in `failing`.
    fn record(&self, name: &str, call: String) -> Result<(), NetError> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call.clone());
        if self.lock().failing.iter().any(|f| f == name) {
            return Err(NetError::Request {
                request: call,
                source: io::Error::from_raw_os_error(libc::EIO),
            });
        }
        let failing_tool = self
            .lock()
            .failing_tools
            .iter()
            .find(|(f, ..)| f == name)
            .map(|(_, tool, stderr)| (*tool, stderr.clone()));
        if let Some((tool, stderr)) = failing_tool {
            use std::os::unix::process::ExitStatusExt as _;
            return Err(NetError::Tool {
                tool,
                source: RunError::Failed {
                    argv: call,
                    status: std::process::ExitStatus::from_raw(1 << 8),
                    stderr,
                },
            });
        }
        Ok(())
    }

    fn with_link_mut<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Link) -> Result<T, NetError>,
    ) -> Result<T, NetError> {
        let mut state = self.lock();
        let link = state
            .links
            .iter_mut()
            .find(|l| l.name == name)
            .ok_or_else(|| NetError::NoSuchLink { name: name.into() })?;
        f(link)
    }

    fn tool_missing(&self, tool: &'static str) -> Result<(), NetError> {
        let mut state = self.lock();
        if let Some(left) = state.resolvectl_runs_left.as_mut() {
            match left.checked_sub(1) {
                Some(rest) => *left = rest,
                None => state.resolvectl_installed = false,
            }
        }
        if state.resolvectl_installed {
            return Ok(());
        }
        Err(NetError::Tool {
            tool,
            source: RunError::NotFound {
                program: tool.into(),
            },
        })
    }
}

impl FakeNetState {
    /// Replace the link `name` (same kind, new index) if it is in
    /// `replaced_before_request`.
    fn race(&mut self, name: &str) {
        if let Some(i) = self.replaced_before_request.iter().position(|n| n == name)
            && let Some(at) = self.links.iter().position(|l| l.name == name)
        {
            self.replaced_before_request.remove(i);
            let kind = self.links.remove(at).kind;
            self.add_link(name, kind);
        }
    }

    fn add_link(&mut self, name: &str, kind: LinkKind) -> &mut Link {
        let highest = self.links.iter().map(|l| l.index).max().unwrap_or(0);
        let index = highest.max(self.last_index) + 1;
        self.last_index = index;
        self.links.push(Link {
            index,
            name: name.into(),
            kind,
            master: None,
            up: false,
            addresses: Vec::new(),
            link_type: libc::ARPHRD_ETHER,
            tap_owner: None,
            tap_group: None,
        });
        self.links.last_mut().expect("just pushed")
    }

    fn create(&mut self, name: &str, kind: LinkKind, call: &str) -> Result<&mut Link, NetError> {
        if self.links.iter().any(|l| l.name == name) {
            return Err(NetError::Request {
                request: call.into(),
                source: io::Error::from_raw_os_error(libc::EEXIST),
            });
        }
        Ok(self.add_link(name, kind))
    }

    /// Apply a batch the way nft would, for the statements that matter to
    /// the model: `add table F N`, `delete table F N`, `table F N {`.
    fn apply_batch(&mut self, batch: &str) -> Result<(), NetError> {
        let mut tables = self.tables.clone();
        for line in batch.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (verb, family, name) = match words.as_slice() {
                ["add", "table", f, n, ..] => ("add", *f, *n),
                ["delete", "table", f, n, ..] => ("delete", *f, *n),
                ["table", f, n, "{", ..] => ("add", *f, *n),
                _ => continue,
            };
            let table = NftTable {
                family: family.into(),
                name: name.into(),
            };
            let present = tables.contains(&table);
            match verb {
                "add" if !present => tables.push(table),
                "delete" if present => tables.retain(|t| *t != table),
                "delete" => {
                    // nft refuses the whole transaction; nothing changes.
                    return Err(NetError::Request {
                        request: format!("delete table {table}"),
                        source: io::Error::from_raw_os_error(libc::ENOENT),
                    });
                }
                _ => {}
            }
        }
        self.tables = tables;
        self.nft_batches.push(batch.into());
        Ok(())
    }
}

impl HostNet for FakeNet {
    fn links(&self) -> Result<Vec<Link>, NetError> {
        self.record("links", "links".into())?;
        Ok(self.lock().links.clone())
    }

    fn link(&self, name: &str) -> Result<Option<Link>, NetError> {
        self.record("link", format!("link({name})"))?;
        Ok(self.link_named(name))
    }

    fn create_bridge(&self, name: &str) -> Result<(), NetError> {
        let call = format!("create_bridge({name})");
        self.record("create_bridge", call.clone())?;
        self.lock().create(name, LinkKind::Bridge, &call).map(drop)
    }

    fn add_address(&self, link: &str, address: Ipv4Cidr) -> Result<(), NetError> {
        let call = format!("add_address({link}, {address})");
        self.record("add_address", call.clone())?;
        self.with_link_mut(link, |l| {
            if l.addresses.contains(&address) {
                return Err(NetError::Request {
                    request: call,
                    source: io::Error::from_raw_os_error(libc::EEXIST),
                });
            }
            l.addresses.push(address);
            Ok(())
        })
    }

    fn del_address(&self, link: &str, address: Ipv4Cidr) -> Result<(), NetError> {
        self.record("del_address", format!("del_address({link}, {address})"))?;
        self.with_link_mut(link, |l| {
            l.addresses.retain(|a| *a != address);
            Ok(())
        })
    }

    fn set_down(&self, link: &str) -> Result<(), NetError> {
        self.record("set_down", format!("set_down({link})"))?;
        self.with_link_mut(link, |l| {
            l.up = false;
            Ok(())
        })
    }

    fn set_up(&self, link: &str) -> Result<(), NetError> {
        self.record("set_up", format!("set_up({link})"))?;
        self.with_link_mut(link, |l| {
            l.up = true;
            Ok(())
        })
    }

    fn set_master(&self, link: &str, master: &str) -> Result<(), NetError> {
        self.record("set_master", format!("set_master({link}, {master})"))?;
        self.lock().race(master);
        if self.link_named(master).is_none() {
            return Err(NetError::NoSuchLink {
                name: master.into(),
            });
        }
        self.with_link_mut(link, |l| {
            l.master = Some(master.into());
            Ok(())
        })
    }

    /// Recorded as `set_master(<link>, <master>)` by the names the
    /// indexes had when the request came.
    fn set_master_index(&self, link: u32, master: u32) -> Result<(), NetError> {
        let name = self.name_of(link);
        let master_name = self.name_of(master);
        self.record("set_master", format!("set_master({name}, {master_name})"))?;
        self.lock().race(&master_name);
        let mut state = self.lock();
        if !state.links.iter().any(|l| l.index == master) {
            return Err(NetError::NoSuchLink { name: master_name });
        }
        match state.links.iter_mut().find(|l| l.index == link) {
            Some(l) => {
                l.master = Some(master_name);
                Ok(())
            }
            None => Err(NetError::NoSuchLink { name }),
        }
    }

    fn disable_ipv6(&self, link: &str) -> Result<(), NetError> {
        self.record("disable_ipv6", format!("disable_ipv6({link})"))?;
        self.with_link_mut(link, |_| Ok(()))?;
        self.lock().ipv6_off.insert(link.into());
        Ok(())
    }

    fn set_no_linklocal_learn(&self, link: &str) -> Result<(), NetError> {
        self.record(
            "set_no_linklocal_learn",
            format!("set_no_linklocal_learn({link})"),
        )?;
        self.with_link_mut(link, |_| Ok(()))
    }

    fn set_mac(&self, link: &str, mac: [u8; 6]) -> Result<(), NetError> {
        let [a, b, c, d, e, g] = mac;
        self.record(
            "set_mac",
            format!("set_mac({link}, {a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x})"),
        )?;
        self.with_link_mut(link, |_| Ok(()))?;
        self.lock().macs.insert(link.into(), mac);
        Ok(())
    }

    fn link_mac(&self, link: &str) -> Result<Option<[u8; 6]>, NetError> {
        self.record("link_mac", format!("link_mac({link})"))?;
        self.with_link_mut(link, |_| Ok(()))?;
        Ok(self.lock().macs.get(link).copied())
    }

    fn create_tap(&self, name: &str, owner_uid: u32) -> Result<(), NetError> {
        let call = format!("create_tap({name}, uid {owner_uid})");
        self.record("create_tap", call.clone())?;
        let mut state = self.lock();
        let link = state.create(name, LinkKind::Tap, &call)?;
        link.tap_owner = Some(owner_uid);
        Ok(())
    }

    fn hand_tap(&self, name: &str, index: u32, owner_uid: u32, group: u32) -> Result<(), NetError> {
        self.record(
            "hand_tap",
            format!("hand_tap({name}, uid {owner_uid}, gid {group})"),
        )?;
        let fail = |step: &'static str, source: io::Error| NetError::HandTap {
            step,
            name: name.to_string(),
            uid: owner_uid,
            source,
        };
        if self.lock().attached_taps.iter().any(|t| t == name) {
            return Err(fail("TUNSETIFF", io::Error::from_raw_os_error(libc::EBUSY)));
        }
        self.with_link_mut(name, |link| {
            if link.kind != LinkKind::Tap || link.index != index {
                return Err(fail(
                    "checking its index before the attach",
                    io::Error::other(format!("index {}, not {index}", link.index)),
                ));
            }
            link.tap_owner = Some(owner_uid);
            link.tap_group = Some(group);
            Ok(())
        })
    }

    /// As `hand_tap` to root, then the MAC as `set_mac` keeps it; the
    /// descriptor is `/dev/null`'s (the fake has no tap to attach to).
    fn move_link_to_netns(
        &self,
        name: &str,
        index: u32,
        _ns: BorrowedFd<'_>,
    ) -> Result<(), NetError> {
        self.record("move_link_to_netns", format!("move_link_to_netns({name})"))?;
        let mut state = self.lock();
        let Some(at) = state.links.iter().position(|l| l.index == index) else {
            return Err(NetError::Request {
                request: format!("move link #{index} ({name}) into the jail's network namespace"),
                source: io::Error::from_raw_os_error(libc::ENODEV),
            });
        };
        let mut link = state.links.remove(at);
        state.ipv6_off.remove(&link.name);
        link.master = None;
        link.up = false;
        state.in_jail.push(link);
        Ok(())
    }

    fn move_link_back(
        &self,
        _jail_rtnl: BorrowedFd<'_>,
        name: &str,
        index: u32,
        _host_ns: BorrowedFd<'_>,
    ) -> Result<(), NetError> {
        self.record("move_link_back", format!("move_link_back({name})"))?;
        let mut state = self.lock();
        let request =
            || format!("move link #{index} ({name}) back from the jail's network namespace");
        let Some(at) = state.in_jail.iter().position(|l| l.index == index) else {
            return Err(NetError::Request {
                request: request(),
                source: io::Error::from_raw_os_error(libc::ENODEV),
            });
        };
        // IFLA_NEW_IFINDEX: the same index or not at all.
        if state.links.iter().any(|l| l.index == index) {
            return Err(NetError::Request {
                request: request(),
                source: io::Error::from_raw_os_error(libc::EBUSY),
            });
        }
        let link = state.in_jail.remove(at);
        state.links.push(link);
        Ok(())
    }

    fn take_tap(&self, name: &str, index: u32, mac: [u8; 6]) -> Result<OwnedFd, NetError> {
        self.hand_tap(name, index, 0, 0)?;
        self.lock().macs.insert(name.into(), mac);
        let null = std::fs::File::open("/dev/null").map_err(|source| NetError::HandTap {
            step: "opening /dev/null",
            name: name.to_string(),
            uid: 0,
            source,
        })?;
        Ok(null.into())
    }

    fn delete_link(&self, name: &str) -> Result<bool, NetError> {
        self.record("delete_link", format!("delete_link({name})"))?;
        self.lock().race(name);
        self.delete_link_unrecorded(name)
    }

    /// Recorded as `delete_link(<name>)` by the name the index had when
    /// the request came; deletes only the link that still has it.
    fn delete_link_index(&self, index: u32) -> Result<bool, NetError> {
        let name = self.name_of(index);
        self.record("delete_link", format!("delete_link({name})"))?;
        self.lock().race(&name);
        let current = self
            .lock()
            .links
            .iter()
            .find(|l| l.index == index)
            .map(|l| l.name.clone());
        match current {
            Some(name) => self.delete_link_unrecorded(&name),
            None => Ok(false),
        }
    }

    fn routes_v4(&self) -> Result<Vec<RouteV4>, NetError> {
        self.record("routes_v4", "routes_v4".into())?;
        let state = self.lock();
        let mut routes = state.routes.clone();
        // Connected routes of addresses on up links, as the kernel adds them.
        for l in state.links.iter().filter(|l| l.up) {
            for a in &l.addresses {
                routes.push(RouteV4 {
                    destination: Ipv4Cidr::new(a.network(), a.prefix_len),
                    interface: Some(l.name.clone()),
                    table: 254,
                    gateways: Vec::new(),
                    nexthop_id: None,
                });
            }
        }
        Ok(routes)
    }

    fn resolvers(&self) -> Result<Vec<Ipv4Addr>, NetError> {
        self.record("resolvers", "resolvers".into())?;
        Ok(self.lock().resolvers.clone())
    }

    fn apply_nft(&self, batch: &str) -> Result<(), NetError> {
        self.record("apply_nft", "apply_nft".into())?;
        self.lock().apply_batch(batch)
    }

    fn nft_tables(&self) -> Result<Vec<NftTable>, NetError> {
        self.record("nft_tables", "nft_tables".into())?;
        Ok(self.lock().tables.clone())
    }

    fn ip_forward(&self) -> Result<bool, NetError> {
        self.record("ip_forward", "ip_forward".into())?;
        Ok(self.lock().ip_forward)
    }

    fn set_ip_forward(&self, on: bool) -> Result<(), NetError> {
        self.record("set_ip_forward", format!("set_ip_forward({on})"))?;
        self.lock().ip_forward = on;
        Ok(())
    }

    fn resolver_dns(&self, link: &str, dns: Ipv4Addr) -> Result<(), NetError> {
        self.record("resolver_dns", format!("resolver_dns({link}, {dns})"))?;
        self.tool_missing("resolvectl")?;
        self.lock().resolver.entry(link.into()).or_default().0 = Some(dns);
        Ok(())
    }

    fn resolver_domain(&self, link: &str, domain: &str) -> Result<(), NetError> {
        self.record(
            "resolver_domain",
            format!("resolver_domain({link}, {domain})"),
        )?;
        self.tool_missing("resolvectl")?;
        self.lock().resolver.entry(link.into()).or_default().1 = Some(domain.into());
        Ok(())
    }

    fn resolver_no_default_route(&self, link: &str) -> Result<(), NetError> {
        self.record(
            "resolver_no_default_route",
            format!("resolver_no_default_route({link})"),
        )?;
        self.tool_missing("resolvectl")
    }

    fn resolver_revert(&self, link: &str) -> Result<(), NetError> {
        self.record("resolver_revert", format!("resolver_revert({link})"))?;
        self.tool_missing("resolvectl")?;
        self.lock().resolver.remove(link);
        Ok(())
    }

    /// The fake always plays the host's own namespace.
    fn in_host_netns(&self) -> Option<bool> {
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_links_and_records_calls() {
        let net = FakeNet::new();
        net.create_bridge("br0").unwrap();
        assert!(net.create_bridge("br0").is_err());
        net.add_address("br0", Ipv4Cidr::new(Ipv4Addr::new(10, 9, 0, 1), 24))
            .unwrap();
        net.set_up("br0").unwrap();
        net.create_tap("t0", 4242).unwrap();
        net.set_master("t0", "br0").unwrap();
        let t0 = net.link("t0").unwrap().unwrap();
        assert_eq!(t0.kind, LinkKind::Tap);
        assert_eq!(t0.master.as_deref(), Some("br0"));
        assert_eq!(t0.tap_owner, Some(4242));
        assert!(
            net.routes_v4()
                .unwrap()
                .iter()
                .any(|r| r.interface.as_deref() == Some("br0"))
        );
        assert!(net.delete_link("t0").unwrap());
        assert!(!net.delete_link("t0").unwrap());
        assert_eq!(
            net.mutating_calls(),
            [
                "create_bridge(br0)",
                "create_bridge(br0)",
                "add_address(br0, 10.9.0.1/24)",
                "set_up(br0)",
                "create_tap(t0, uid 4242)",
                "set_master(t0, br0)",
                "delete_link(t0)",
                "delete_link(t0)",
            ]
        );
    }

    #[test]
    fn nft_batches_replace_tables_atomically() {
        let net = FakeNet::new().with_table("inet", "other");
        net.apply_nft("add table inet b\ndelete table inet b\ntable inet b {\n}\n")
            .unwrap();
        assert_eq!(net.nft_tables().unwrap().len(), 2);
        // A delete of an absent table fails the whole batch.
        assert!(
            net.apply_nft("add table bridge b\ndelete table inet nope\n")
                .is_err()
        );
        assert_eq!(net.state().tables.len(), 2);
    }

    #[test]
    fn missing_resolvectl_is_reported_as_missing() {
        let net = FakeNet::new().without_resolvectl();
        let err = net.resolver_revert("br0").unwrap_err();
        assert!(err.is_tool_missing(), "{err}");
    }

    #[test]
    fn failures_are_injected_by_call_name() {
        let net = FakeNet::new().failing("create_tap");
        let err = net.create_tap("t0", 1).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EIO));
        assert!(net.link_named("t0").is_none());
    }
}
