//! Host-network types of the privileged-ops seam: arguments and results of
//! the bridge, tap, firewall, DNS-socket and resolver operations.
//!
//! Interface names and addresses travel as plain values and are validated by
//! the executor (`banger-executor`), so both adapters reject bad input in
//! the same place, with an error naming the input, before any kernel call.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Every interface banger creates starts with this; the executor touches no
/// other interface, and only those its journal says it created.
pub const IFNAME_PREFIX: &str = "banger";
/// Tap names: `bangertap<N>`.
pub const TAP_PREFIX: &str = "bangertap";
/// The nftables tables banger owns (and no other).
pub const NFT_TABLE: &str = "banger";
/// Port of the `.vm` DNS server on the bridge address.
pub const DNS_PORT: u16 = 53;

/// Create the bridge if missing, give it `address/prefix_len`, bring it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSpec {
    pub name: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
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
