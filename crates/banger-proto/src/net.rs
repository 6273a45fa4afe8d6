//! Host-network types of the privileged-ops seam: arguments and results of
//! the bridge, tap, firewall, DNS-socket and resolver operations.
//!
//! Interface names and addresses travel as plain values and are validated by
//! the executor (`banger-executor`), so both adapters reject bad input in
//! the same place, with an error naming the input, before any kernel call.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Cidr;

/// Every interface banger creates starts with this; the executor touches no
/// other interface, and only those its journal says it created.
pub const IFNAME_PREFIX: &str = "banger";
/// Tap names: `bangertap<N>`.
pub const TAP_PREFIX: &str = "bangertap";
/// The nftables tables banger owns (and no other).
pub const NFT_TABLE: &str = "banger";
/// Port of the `.vm` DNS server on the bridge address.
pub const DNS_PORT: u16 = 53;
/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;
/// The bridge banger sets up unless configured otherwise.
pub const DEFAULT_BRIDGE: &str = "banger0";
/// Guest subnet prefix lengths accepted: big enough for a few guests,
/// small enough not to swallow a whole private range.
pub const SUBNET_PREFIX_RANGE: RangeInclusive<u8> = 16..=29;
/// The RFC 1918 ranges a guest subnet must lie in.
pub const PRIVATE_RANGES: [(Ipv4Addr, u8); 3] = [
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
];

/// The guest subnet banger uses unless configured otherwise, 172.30.0.0/24.
pub fn default_subnet() -> Ipv4Cidr {
    Ipv4Cidr::new(Ipv4Addr::new(172, 30, 0, 0), 24).expect("172.30.0.0/24 is a network address")
}

/// A bridge name banger may create: [`IFNAME_PREFIX`] followed by lowercase
/// letters, digits and `-`, at most [`IFNAME_MAX`] bytes, and not a tap name.
/// (The executor re-checks with an error naming what is wrong.)
pub fn is_bridge_name(name: &str) -> bool {
    name.len() <= IFNAME_MAX
        && !name.starts_with(TAP_PREFIX)
        && name.strip_prefix(IFNAME_PREFIX).is_some_and(|rest| {
            rest.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Why a subnet cannot be a guest subnet: its prefix is outside
/// [`SUBNET_PREFIX_RANGE`] or it is not inside one of [`PRIVATE_RANGES`].
pub fn subnet_problem(subnet: Ipv4Cidr) -> Option<String> {
    if !SUBNET_PREFIX_RANGE.contains(&subnet.prefix()) {
        return Some(format!(
            "prefix /{} is outside /{}../{}",
            subnet.prefix(),
            SUBNET_PREFIX_RANGE.start(),
            SUBNET_PREFIX_RANGE.end()
        ));
    }
    let private = PRIVATE_RANGES.iter().any(|(net, len)| {
        Ipv4Cidr::new(*net, *len).is_some_and(|r| r.contains(subnet.addr()))
            && subnet.prefix() >= *len
    });
    (!private)
        .then(|| "not in a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)".to_string())
}

/// Create the bridge if missing, give it `address/prefix_len`, bring it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSpec {
    pub name: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl BridgeSpec {
    /// The bridge banger sets up for `subnet`: named `name`, holding the
    /// subnet's first host address.
    pub fn for_subnet(name: &str, subnet: Ipv4Cidr) -> BridgeSpec {
        BridgeSpec {
            name: name.to_string(),
            address: subnet.first_host(),
            prefix_len: subnet.prefix(),
        }
    }
}

/// Create a persistent tap owned by `owner_uid`, attached to `bridge`, up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapSpec {
    pub name: String,
    pub bridge: String,
    pub owner_uid: u32,
}

/// One guest as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestRule {
    /// The guest's tap; must be one the executor created.
    pub tap: String,
    /// The guest's leased address; must lie in the bridge subnet.
    pub ip: Ipv4Addr,
    /// Masquerade this guest's traffic to the outside.
    pub nat: bool,
}

/// The whole firewall state: the executor replaces banger's tables with
/// exactly this, atomically (one nft batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallSpec {
    pub bridge: String,
    pub guests: Vec<GuestRule>,
    /// Let guests reach each other across the bridge.
    pub allow_inter_vm: bool,
}

/// Route the `~vm` domain to `dns` on the bridge link (systemd-resolved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverSpec {
    pub bridge: String,
    pub dns: Ipv4Addr,
}

/// What `EnsureBridge` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeOutcome {
    pub name: String,
    /// False when the bridge already existed as specified.
    pub created: bool,
}

/// What `EnsureTap` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapOutcome {
    pub name: String,
    pub created: bool,
}

/// A tap as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapStatus {
    pub name: String,
    pub present: bool,
    pub master: Option<String>,
    pub up: bool,
}

/// The host network as the kernel and the executor's journal report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetStatus {
    /// Bridges in the journal, with whether each still exists.
    pub bridges: Vec<BridgeStatus>,
    pub taps: Vec<TapStatus>,
    /// banger's nft tables exist.
    pub firewall: bool,
    /// Guests with masquerade in the current firewall.
    pub nat_guests: Vec<Ipv4Addr>,
    /// `net.ipv4.ip_forward` in the executor's network namespace.
    pub ip_forward: bool,
    /// Resolver routing applied to these links.
    pub resolver_links: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeStatus {
    pub name: String,
    pub present: bool,
    pub addresses: Vec<String>,
    pub up: bool,
}

/// What `Teardown` removed; teardown is best-effort and reports every error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeardownReport {
    pub removed: Vec<String>,
    pub errors: Vec<String>,
}

/// Index of a file descriptor passed beside a reply (SCM_RIGHTS), in the
/// order the descriptors were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FdIndex(pub u32);

/// DNS sockets bound on the bridge address, port 53; the descriptors travel
/// beside the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSockets {
    pub address: Ipv4Addr,
    pub udp: FdIndex,
    pub tcp: FdIndex,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_and_subnets() {
        assert!(is_bridge_name("banger0"));
        assert!(is_bridge_name("banger-a1"));
        assert!(is_bridge_name("banger"));
        for bad in [
            "br0",
            "bangertap0",
            "banger_0",
            "bangerA",
            "banger012345678x",
            "banger\"x",
        ] {
            assert!(!is_bridge_name(bad), "{bad}");
        }
        let s = |t: &str| t.parse::<Ipv4Cidr>().unwrap();
        assert_eq!(subnet_problem(default_subnet()), None);
        assert_eq!(subnet_problem(s("192.168.7.0/29")), None);
        assert_eq!(subnet_problem(s("10.0.0.0/16")), None);
        assert!(
            subnet_problem(s("10.0.0.0/15"))
                .unwrap()
                .contains("/15 is outside /16../29")
        );
        assert!(subnet_problem(s("10.0.0.0/30")).unwrap().contains("/30"));
        assert!(
            subnet_problem(s("172.32.0.0/24"))
                .unwrap()
                .contains("not in a private range")
        );
        assert!(
            subnet_problem(s("100.64.0.0/24"))
                .unwrap()
                .contains("not in a private range")
        );
        assert_eq!(
            BridgeSpec::for_subnet("banger0", default_subnet()),
            BridgeSpec {
                name: "banger0".into(),
                address: Ipv4Addr::new(172, 30, 0, 1),
                prefix_len: 24
            }
        );
    }
}
