//! Host network primitives: links, addresses, routes, taps, nftables,
//! IPv4 forwarding and the systemd-resolved link settings.
//!
//! Everything sits behind [`HostNet`], injected into the executor, so its
//! policy is unit-tested against the recording [`fake::FakeNet`] and
//! exercised for real in throwaway namespaces ([`netns::in_fresh_netns`]).
//! Nothing here decides *whether* to touch an interface; that is the
//! executor's job.
//!
//! [`RealNet`] creates and changes links and addresses over rtnetlink
//! (`netlink-packet-route` on a blocking `netlink-sys` socket), creates taps
//! with the tun ioctls, and runs `nft -f -` and `resolvectl` through
//! [`Runner`]. Every call acts on the network namespace of the calling
//! thread: sockets and children are created on it.
//!
//! The types here are deliberately not serializable: only `banger-proto`
//! defines what crosses a socket.

pub mod fake;
mod netlink;
pub mod netns;
mod sysctl;
mod tun;

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::runner::{Cmd, RunError, Runner};

pub use tun::TUN_DEVICE;

/// `net.ipv4.ip_forward` of the calling thread's network namespace.
pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// The per-link IPv6 settings (`<link>/disable_ipv6`); absent when the
/// kernel runs without IPv6.
pub const IPV6_CONF: &str = "/proc/sys/net/ipv6/conf";

/// How long a hand-over of a tap that should be idle waits out `EBUSY`
/// ([`retry_while_busy`]).
///
/// A tap (not multi-queue) takes one attached descriptor, and a
/// descriptor closed here is still attached while any copy of it lives:
/// a child that another thread of this process forks meanwhile holds
/// copies of all its descriptors, close-on-exec ones included, until it
/// execs — microseconds, or a scheduler's time slice on a loaded host.
/// (The cold CI of 1f190b8 saw a launch's hand-over fail so, once.)
pub const BUSY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// `attempt` until it succeeds, fails with anything for which `busy` is
/// false, or [`BUSY_GRACE`] has passed (then its last error), backing
/// off from 1 ms to 64 ms between tries.
pub fn retry_while_busy<T, E>(
    busy: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = std::time::Instant::now() + BUSY_GRACE;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match attempt() {
            Err(e) if busy(&e) && std::time::Instant::now() + pause < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(64));
            }
            other => return other,
        }
    }
}

/// An IPv4 address with a prefix length, as on an interface or a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// `prefix_len` above 32 is clamped to 32.
    pub fn new(address: Ipv4Addr, prefix_len: u8) -> Ipv4Cidr {
        Ipv4Cidr {
            address,
            prefix_len: prefix_len.min(32),
        }
    }

    pub fn mask(self) -> u32 {
        match self.prefix_len {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p)),
        }
    }

    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & self.mask())
    }

    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !self.mask())
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// The two prefixes share at least one address.
    pub fn overlaps(self, other: Ipv4Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// What kind of interface a link is (`IFLA_INFO_KIND`, refined for tun).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    /// A tun-driver device in tap (ethernet) mode.
    Tap,
    /// A tun-driver device in tun (IP) mode.
    Tun,
    /// Any other `IFLA_INFO_KIND` (`dummy`, `veth`, ...).
    Other(String),
    /// No kind reported: loopback and physical devices.
    Unspecified,
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkKind::Bridge => f.write_str("bridge"),
            LinkKind::Tap => f.write_str("tap"),
            LinkKind::Tun => f.write_str("tun"),
            LinkKind::Other(k) => f.write_str(k),
            LinkKind::Unspecified => f.write_str("device"),
        }
    }
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    /// The bridge (or other master) it is attached to.
    pub master: Option<String>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Its IPv4 addresses.
    pub addresses: Vec<Ipv4Cidr>,
    /// Its link-layer type (`ifi_type`, an `ARPHRD_*`): `ARPHRD_ETHER` for
    /// a bridge or a tap as made; a holder of a tap that is down can
    /// change it (`TUNSETLINK`, no capability needed), and a tap of
    /// another type cannot be a bridge port nor get a MAC.
    pub link_type: u16,
    /// For tun/tap devices with an owner set (`TUNSETOWNER`).
    pub tap_owner: Option<u32>,
    /// For tun/tap devices with a group set (`TUNSETGROUP`; once set, a
    /// group can be changed but never cleared).
    pub tap_group: Option<u32>,
}

impl Link {
    /// Whether its link-layer type is Ethernet (`ARPHRD_ETHER`).
    pub fn ethernet(&self) -> bool {
        self.link_type == libc::ARPHRD_ETHER
    }
}

/// An IPv4 unicast route (any table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteV4 {
    /// Destination prefix; `0.0.0.0/0` for a default route.
    pub destination: Ipv4Cidr,
    /// The output interface, when the route has a single one.
    pub interface: Option<String>,
    pub table: u32,
    /// The IPv4 gateways it goes through: its own, or those of its
    /// multipath next hops; empty for a route on a link.
    pub gateways: Vec<Ipv4Addr>,
    /// The nexthop object it goes through (`RTA_NH_ID`), if any: with
    /// `net.ipv4.nexthop_compat_mode=0` the kernel then reports neither
    /// its gateway nor its interface.
    pub nexthop_id: Option<u32>,
}

/// An nftables table: `family` (`inet`, `bridge`, `ip`, ...) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NftTable {
    pub family: String,
    pub name: String,
}

impl fmt::Display for NftTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.family, self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("opening a route netlink socket")]
    Socket(#[source] io::Error),
    #[error("netlink request `{request}` failed")]
    Request {
        request: String,
        #[source]
        source: io::Error,
    },
    #[error("decoding the netlink reply to `{request}`")]
    Decode {
        request: String,
        #[source]
        source: netlink_packet_core::DecodeError,
    },
    #[error("interface {name} does not exist")]
    NoSuchLink { name: String },
    #[error("creating tap {name}: {step}")]
    Tun {
        step: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("handing tap {name} to uid {uid}: {step}")]
    HandTap {
        step: &'static str,
        name: String,
        uid: u32,
        #[source]
        source: io::Error,
    },
    #[error("running {tool}")]
    Tool {
        tool: &'static str,
        #[source]
        source: RunError,
    },
    #[error("reading {path}")]
    ReadSysctl {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("reading {}", path.display())]
    ReadResolvConf {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}")]
    WriteSysctl {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("switching IPv6 off on {link} ({IPV6_CONF}/{link}/disable_ipv6)")]
    DisableIpv6 {
        link: String,
        #[source]
        source: io::Error,
    },
}

impl NetError {
    /// The host tool needed is not installed (as opposed to failing).
    pub fn is_tool_missing(&self) -> bool {
        matches!(
            self,
            NetError::Tool {
                source: RunError::NotFound { .. },
                ..
            }
        )
    }

    /// The errno of a kernel refusal, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Socket(e)
            | NetError::Request { source: e, .. }
            | NetError::Tun { source: e, .. }
            | NetError::HandTap { source: e, .. } => e.raw_os_error(),
            _ => None,
        }
    }
}

/// The host network operations the executor needs. Every method acts on the
/// calling thread's network namespace.
pub trait HostNet: Send + Sync {
    /// Every link with its IPv4 addresses.
    fn links(&self) -> Result<Vec<Link>, NetError>;
    /// One link by name; `None` when absent.
    fn link(&self, name: &str) -> Result<Option<Link>, NetError> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }
    /// Create a bridge; fails if the name exists.
    fn create_bridge(&self, name: &str) -> Result<(), NetError>;
    fn add_address(&self, link: &str, address: Ipv4Cidr) -> Result<(), NetError>;
    fn del_address(&self, link: &str, address: Ipv4Cidr) -> Result<(), NetError>;
    fn set_up(&self, link: &str) -> Result<(), NetError>;
    /// Set `link` down: a bridge port that is down neither forwards to
    /// nor takes frames from its link.
    fn set_down(&self, link: &str) -> Result<(), NetError>;
    fn set_master(&self, link: &str, master: &str) -> Result<(), NetError>;
    /// Make the link with index `link` a port of the one with index
    /// `master`, both as the caller checked them (no lookup by name).
    fn set_master_index(&self, link: u32, master: u32) -> Result<(), NetError>;
    /// Switch IPv6 off on `link` (`disable_ipv6`): no addresses, no router
    /// advertisements, no IPv6 delivered to the host through it. A kernel
    /// without IPv6 has nothing to switch off: success.
    fn disable_ipv6(&self, link: &str) -> Result<(), NetError>;
    /// Stop bridge `link` learning source MACs from frames sent to
    /// link-local group addresses (01:80:c2:00:00:0X; `no_linklocal_learn`,
    /// `BR_BOOLOPT_NO_LL_LEARN`). The bridge learns those before its
    /// prerouting hook, where nothing can filter them.
    fn set_no_linklocal_learn(&self, link: &str) -> Result<(), NetError>;
    /// Set `link`'s MAC (`IFLA_ADDRESS`). On a bridge this also stops it
    /// taking the lowest of its ports' MACs from then on.
    fn set_mac(&self, link: &str, mac: [u8; 6]) -> Result<(), NetError>;
    /// `link`'s MAC (`IFLA_ADDRESS`); `None` when it has no Ethernet one.
    fn link_mac(&self, link: &str) -> Result<Option<[u8; 6]>, NetError>;
    /// Create a persistent tap owned by `owner_uid`; fails if the name exists.
    fn create_tap(&self, name: &str, owner_uid: u32) -> Result<(), NetError>;
    /// Make `owner_uid` the tun owner and `group` the tun group of the
    /// persistent tap `name`, whose interface index must be `index`
    /// (checked before and after the helper attaches to it); `EBUSY`
    /// (`NetError::errno`) while another descriptor is attached to it
    /// (one attach: a caller that expects the tap idle waits out a
    /// transient copy with [`retry_while_busy`]).
    fn hand_tap(&self, name: &str, index: u32, owner_uid: u32, group: u32) -> Result<(), NetError>;
    /// Hand the persistent tap `name` of interface index `index` to root
    /// (as [`HostNet::hand_tap`] with owner and group 0), reset the
    /// device state a holder of it could set (TX and socket filters, eBPF
    /// programs, vnet header size and byte order, carrier), set its MAC
    /// to `mac`, and return root's descriptor attached to that tap (the
    /// one of that index: it is checked after the attach).
    fn take_tap(&self, name: &str, index: u32, mac: [u8; 6]) -> Result<OwnedFd, NetError>;
    /// Move the link with interface index `index` (called `name`: for
    /// messages; the request names the index) from the calling thread's
    /// network namespace into the one behind `ns` (a jail's,
    /// [`crate::jail::JailNet::ns`]). It loses its master, its up state
    /// and its per-device sysctls on the way.
    fn move_link_to_netns(
        &self,
        name: &str,
        index: u32,
        ns: BorrowedFd<'_>,
    ) -> Result<(), NetError>;
    /// Move the link with interface index `index` (called `name`, for
    /// messages) back from the namespace `jail_rtnl` was opened in (a
    /// jail's, [`crate::jail::JailNet::rtnl`]: a link leaves a namespace
    /// only by a request made there) into the one behind `host_ns`, with
    /// the same index or not at all (`IFLA_NEW_IFINDEX`; `EBUSY` when
    /// another link has it there, and the link stays where it is). It
    /// comes back with no master, down, its sysctls the namespace's
    /// defaults.
    fn move_link_back(
        &self,
        jail_rtnl: BorrowedFd<'_>,
        name: &str,
        index: u32,
        host_ns: BorrowedFd<'_>,
    ) -> Result<(), NetError>;
    /// Delete a link; `Ok(false)` when it was already gone.
    fn delete_link(&self, name: &str) -> Result<bool, NetError>;
    /// Delete the link with interface index `index`; `Ok(false)` when no
    /// link has it (it is gone, whatever now has its old name).
    fn delete_link_index(&self, index: u32) -> Result<bool, NetError>;
    /// IPv4 unicast routes of every table.
    fn routes_v4(&self) -> Result<Vec<RouteV4>, NetError>;
    /// The IPv4 name servers the host's resolver uses: the `nameserver`s of
    /// `/etc/resolv.conf` and, when that points at systemd-resolved's stub,
    /// of resolved's upstream file too. A missing file lists none.
    fn resolvers(&self) -> Result<Vec<Ipv4Addr>, NetError>;
    /// Apply an nft batch (`nft -f -`): one atomic transaction.
    fn apply_nft(&self, batch: &str) -> Result<(), NetError>;
    /// Every nftables table.
    fn nft_tables(&self) -> Result<Vec<NftTable>, NetError>;
    fn ip_forward(&self) -> Result<bool, NetError>;
    fn set_ip_forward(&self, on: bool) -> Result<(), NetError>;
    /// `resolvectl dns LINK DNS`.
    fn resolver_dns(&self, link: &str, dns: Ipv4Addr) -> Result<(), NetError>;
    /// `resolvectl domain LINK DOMAIN`.
    fn resolver_domain(&self, link: &str, domain: &str) -> Result<(), NetError>;
    /// `resolvectl default-route LINK false`: the link answers only the
    /// domains routed to it, whatever systemd-resolved's version would
    /// infer (before v240 every link was a default route).
    fn resolver_no_default_route(&self, link: &str) -> Result<(), NetError>;
    /// `resolvectl revert LINK`.
    fn resolver_revert(&self, link: &str) -> Result<(), NetError>;
    /// Whether the calling thread is in the host's (PID 1's) network
    /// namespace; `None` when that cannot be determined.
    fn in_host_netns(&self) -> Option<bool>;
}

/// [`HostNet`] on the real host (the calling thread's network namespace).
#[derive(Debug, Clone, Default)]
pub struct RealNet {
    runner: Runner,
}

impl RealNet {
    pub fn new() -> RealNet {
        RealNet { runner: Runner }
    }

    fn tool(&self, tool: &'static str, cmd: Cmd) -> Result<String, NetError> {
        self.runner
            .run(&cmd)
            .map(|o| o.stdout)
            .map_err(|source| NetError::Tool { tool, source })
    }
}

impl HostNet for RealNet {
    fn links(&self) -> Result<Vec<Link>, NetError> {
        netlink::Netlink::open()?.links()
    }

    fn create_bridge(&self, name: &str) -> Result<(), NetError> {
        netlink::Netlink::open()?.create_bridge(name)
    }

    fn add_address(&self, link: &str, address: Ipv4Cidr) -> Result<(), NetError> {
        netlink::Netlink::open()?.add_address(link, address)
    }

    fn del_address(&self, link: &str, address: Ipv4Cidr) -> Result<(), NetError> {
        netlink::Netlink::open()?.del_address(link, address)
    }

    fn set_up(&self, link: &str) -> Result<(), NetError> {
        netlink::Netlink::open()?.set_up(link)
    }

    fn set_down(&self, link: &str) -> Result<(), NetError> {
        netlink::Netlink::open()?.set_down(link)
    }

    fn set_master(&self, link: &str, master: &str) -> Result<(), NetError> {
        netlink::Netlink::open()?.set_master(link, master)
    }

    fn set_master_index(&self, link: u32, master: u32) -> Result<(), NetError> {
        netlink::Netlink::open()?.set_master_index(link, master)
    }

    fn create_tap(&self, name: &str, owner_uid: u32) -> Result<(), NetError> {
        tun::create_persistent_tap(name, owner_uid)
    }

    fn hand_tap(&self, name: &str, index: u32, owner_uid: u32, group: u32) -> Result<(), NetError> {
        tun::hand_tap(name, index, owner_uid, group).map(drop)
    }

    fn take_tap(&self, name: &str, index: u32, mac: [u8; 6]) -> Result<OwnedFd, NetError> {
        tun::take_tap(name, index, mac).map(OwnedFd::from)
    }

    fn disable_ipv6(&self, link: &str) -> Result<(), NetError> {
        sysctl::disable_ipv6(link)
    }

    fn set_no_linklocal_learn(&self, link: &str) -> Result<(), NetError> {
        netlink::Netlink::open()?.set_no_linklocal_learn(link)
    }

    fn set_mac(&self, link: &str, mac: [u8; 6]) -> Result<(), NetError> {
        netlink::Netlink::open()?.set_mac(link, mac)
    }

    fn link_mac(&self, link: &str) -> Result<Option<[u8; 6]>, NetError> {
        netlink::Netlink::open()?.link_mac(link)
    }

    fn move_link_to_netns(
        &self,
        name: &str,
        index: u32,
        ns: BorrowedFd<'_>,
    ) -> Result<(), NetError> {
        netlink::Netlink::open()?.move_to_netns(
            name,
            index,
            ns,
            false,
            "into the jail's network namespace",
        )
    }

    fn move_link_back(
        &self,
        jail_rtnl: BorrowedFd<'_>,
        name: &str,
        index: u32,
        host_ns: BorrowedFd<'_>,
    ) -> Result<(), NetError> {
        let socket = jail_rtnl.try_clone_to_owned().map_err(NetError::Socket)?;
        netlink::Netlink::on(socket).move_to_netns(
            name,
            index,
            host_ns,
            true,
            "back from the jail's network namespace",
        )
    }

    fn delete_link(&self, name: &str) -> Result<bool, NetError> {
        netlink::Netlink::open()?.delete_link(name)
    }

    fn delete_link_index(&self, index: u32) -> Result<bool, NetError> {
        netlink::Netlink::open()?.delete_link_index(index)
    }

    fn routes_v4(&self) -> Result<Vec<RouteV4>, NetError> {
        netlink::Netlink::open()?.routes_v4()
    }

    fn resolvers(&self) -> Result<Vec<Ipv4Addr>, NetError> {
        use crate::probe::{RESOLV_CONF, RESOLVED_UPSTREAM_CONF};
        resolvers_in(RESOLV_CONF.as_ref(), RESOLVED_UPSTREAM_CONF.as_ref())
    }

    fn apply_nft(&self, batch: &str) -> Result<(), NetError> {
        self.tool("nft", Cmd::new("nft").args(["-f", "-"]).stdin(batch))
            .map(drop)
    }

    fn nft_tables(&self) -> Result<Vec<NftTable>, NetError> {
        let out = self.tool("nft", Cmd::new("nft").args(["list", "tables"]))?;
        Ok(parse_nft_tables(&out))
    }

    fn ip_forward(&self) -> Result<bool, NetError> {
        let text = std::fs::read_to_string(IP_FORWARD).map_err(|source| NetError::ReadSysctl {
            path: IP_FORWARD,
            source,
        })?;
        Ok(text.trim() == "1")
    }

    fn set_ip_forward(&self, on: bool) -> Result<(), NetError> {
        std::fs::write(IP_FORWARD, if on { "1\n" } else { "0\n" }).map_err(|source| {
            NetError::WriteSysctl {
                path: IP_FORWARD,
                source,
            }
        })
    }

    fn resolver_dns(&self, link: &str, dns: Ipv4Addr) -> Result<(), NetError> {
        self.tool(
            "resolvectl",
            Cmd::new("resolvectl").args(["dns", link, &dns.to_string()]),
        )
        .map(drop)
    }

    fn resolver_domain(&self, link: &str, domain: &str) -> Result<(), NetError> {
        self.tool(
            "resolvectl",
            Cmd::new("resolvectl").args(["domain", link, domain]),
        )
        .map(drop)
    }

    fn resolver_no_default_route(&self, link: &str) -> Result<(), NetError> {
        self.tool(
            "resolvectl",
            Cmd::new("resolvectl").args(["default-route", link, "false"]),
        )
        .map(drop)
    }

    fn resolver_revert(&self, link: &str) -> Result<(), NetError> {
        self.tool("resolvectl", Cmd::new("resolvectl").args(["revert", link]))
            .map(drop)
    }

    fn in_host_netns(&self) -> Option<bool> {
        netns::in_init_netns()
    }
}

/// [`HostNet::resolvers`] with the two files given: the IPv4 `nameserver`s
/// of `resolv_conf` and, when one of them is systemd-resolved's stub, those
/// of `resolved_upstream`.
pub fn resolvers_in(
    resolv_conf: &std::path::Path,
    resolved_upstream: &std::path::Path,
) -> Result<Vec<Ipv4Addr>, NetError> {
    let mut servers = ipv4_nameservers(resolv_conf)?;
    if servers
        .iter()
        .any(|s| crate::probe::RESOLVED_STUBS.contains(s))
    {
        servers.extend(ipv4_nameservers(resolved_upstream)?);
    }
    Ok(servers)
}

/// The IPv4 `nameserver`s of the resolv.conf at `path`; none when it does
/// not exist.
fn ipv4_nameservers(path: &std::path::Path) -> Result<Vec<Ipv4Addr>, NetError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(crate::probe::nameservers(&text)
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(NetError::ReadResolvConf {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `nft list tables` prints one `table FAMILY NAME` per line.
pub fn parse_nft_tables(out: &str) -> Vec<NftTable> {
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("table"), Some(family), Some(name), None) => Some(NftTable {
                    family: family.to_string(),
                    name: name.to_string(),
                }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_move;
