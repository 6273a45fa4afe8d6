//! Why an operation was refused or failed.

use std::net::Ipv4Addr;

use banger_host::net::{Ipv4Cidr, NetError};
use banger_proto::{ErrorCode, RpcError};

use crate::journal::JournalError;

/// Why an operation was refused or failed.
///
/// Refusals (bad input, objects banger did not create) come before any
/// change to the host and map to `bad_request` or `invalid_state`; failures of
/// the host itself map to `internal`, or `unavailable` when a host facility is
/// missing.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    // ---- refusals: nothing was changed ----
    #[error("invalid interface name {name:?}: {reason}")]
    InterfaceName { name: String, reason: String },
    #[error("invalid bridge address {address}: {reason}")]
    BridgeAddress { address: Ipv4Cidr, reason: String },
    #[error(
        "bridge subnet {subnet} overlaps route {route} on {interface}; choose a private subnet \
         that no other interface routes"
    )]
    SubnetOverlap {
        subnet: Ipv4Cidr,
        route: Ipv4Cidr,
        interface: String,
    },
    #[error(
        "bridge subnet {subnet} holds {what}, which the host reaches outside banger's bridge; \
         choose a private subnet that holds none of the host's addresses, gateways or resolvers"
    )]
    SubnetHoldsHostAddress { subnet: Ipv4Cidr, what: String },
    #[error(
        "route {route} goes through nexthop object {id}, whose gateway and interface the kernel \
         does not report (net.ipv4.nexthop_compat_mode=0), so banger cannot check that the bridge \
         subnet holds neither; set net.ipv4.nexthop_compat_mode=1"
    )]
    UncheckedNexthop { route: Ipv4Cidr, id: u32 },
    #[error(
        "{requested} is not this install's bridge, {installed}: the bridge and its subnet are \
         root's choice (`banger system install --bridge/--subnet`; in dev mode, the daemon's \
         configuration)"
    )]
    NotInstalledBridge {
        requested: String,
        installed: String,
    },
    #[error(
        "bridge {new} would take over the subnet of {old}, which banger set up under the old name; \
         run `banger host teardown` before renaming the bridge"
    )]
    RenamedBridge { old: String, new: String },
    #[error("interface {name} exists but banger did not create it; refusing to touch it")]
    NotOurs { name: String },
    #[error("{what} {name} was not created by banger (it is not in banger's journal)")]
    NotJournaled { what: &'static str, name: String },
    #[error("tap {tap} belongs to bridge {journaled}, not {bridge}")]
    TapOnOtherBridge {
        tap: String,
        bridge: String,
        journaled: String,
    },
    #[error("firewall guest {ip} on {tap}: {reason}")]
    GuestAddress {
        tap: String,
        ip: Ipv4Addr,
        reason: String,
    },
    #[error("firewall guests name {what} {value} twice; each guest has its own tap and address")]
    DuplicateGuest { what: &'static str, value: String },
    #[error("{address} is not the address of a bridge banger created{hint}")]
    NotBridgeAddress { address: Ipv4Addr, hint: String },
    #[error(
        "interface {name} is a {actual}, not the {expected} banger created; refusing to touch it"
    )]
    WrongKind {
        name: String,
        expected: &'static str,
        actual: String,
    },
    #[error(
        "tap {name} is owned by uid {owner}, not root, uid {requested} or a VM slot uid; \
         delete it first"
    )]
    TapOwner {
        name: String,
        owner: u32,
        requested: u32,
    },
    #[error(
        "tap {name} is not the tap banger made: it belongs to {}, banger made it for uid \
         {journaled}; refusing to touch it (remove it, then run teardown again)",
        owner.map_or_else(|| "no uid (or could not be read)".to_string(), |u| format!("uid {u}"))
    )]
    ForeignTap {
        name: String,
        owner: Option<u32>,
        journaled: u32,
    },
    #[error(
        "tap {name} is not the tap banger made: it has interface index {index}, banger's had \
         {journaled}; refusing to touch it (remove it, then run teardown again)"
    )]
    ReplacedTap {
        name: String,
        index: u32,
        journaled: u32,
    },
    #[error(
        "tap {name} is handed to a launch in flight (a jailed Firecracker's tap is in its jail's \
         network namespace meanwhile); {op} refused: run it again once that launch has ended"
    )]
    TapInFlight { name: String, op: &'static str },
    #[error(
        "bridge {name} is not banger's: interface index {index}, journaled \
         {journaled}; refusing to touch it (remove it, then run teardown again)"
    )]
    ReplacedBridge {
        name: String,
        index: u32,
        journaled: u32,
    },
    #[error(
        "bridge {name} was left: without the link listing it cannot be checked against its          journaled interface index"
    )]
    UncheckedBridge { name: String },
    #[error("bridge {name} is in banger's journal but does not exist; ensure the bridge first")]
    BridgeMissing { name: String },
    #[error(
        "tap {name} for uid {requested} refused: taps belong to uid {owner}, who runs the VMMs"
    )]
    TapForOtherUser {
        name: String,
        requested: u32,
        owner: u32,
    },
    #[error(
        "banger's nftables tables (inet banger, bridge banger) are missing (the host's ruleset \
         was flushed?): no tap or VM goes on bridge {bridge} without them; ensure the bridge \
         again (restarting bangerd does), which puts them back"
    )]
    FirewallMissing { bridge: String },

    /// A VM operation (disks, guest files, VMM processes).
    #[error(transparent)]
    Vm(#[from] crate::vm::VmOpError),

    /// The default image build (`BuildDebianImage`).
    #[error(transparent)]
    Image(#[from] crate::image::ImageBuildError),

    // ---- host failures ----
    #[error("reading the host's interfaces")]
    ReadLinks(#[source] NetError),
    #[error("reading the host's IPv4 routes")]
    ReadRoutes(#[source] NetError),
    #[error("reading the host's resolver configuration")]
    ReadResolvers(#[source] NetError),
    #[error("creating bridge {name}")]
    CreateBridge {
        name: String,
        #[source]
        source: NetError,
    },
    #[error("setting address {address} on {name}")]
    SetAddress {
        name: String,
        address: Ipv4Cidr,
        #[source]
        source: NetError,
    },
    #[error("removing stray address {address} from {name}")]
    RemoveAddress {
        name: String,
        address: Ipv4Cidr,
        #[source]
        source: NetError,
    },
    #[error("bringing {name} up")]
    SetUp {
        name: String,
        #[source]
        source: NetError,
    },
    #[error("enabling IPv4 forwarding")]
    IpForward(#[source] NetError),
    #[error("switching IPv6 off on {name}")]
    DisableIpv6 {
        name: String,
        #[source]
        source: NetError,
    },
    #[error("turning link-local MAC learning off on bridge {name}")]
    NoLinkLocalLearn {
        name: String,
        #[source]
        source: NetError,
    },
    #[error("setting bridge {name}'s MAC")]
    SetMac {
        name: String,
        #[source]
        source: NetError,
    },
    #[error("creating tap {name}")]
    CreateTap {
        name: String,
        #[source]
        source: NetError,
    },
    #[error("attaching {name} to bridge {bridge}")]
    SetMaster {
        name: String,
        bridge: String,
        #[source]
        source: NetError,
    },
    #[error("deleting {name}")]
    DeleteLink {
        name: String,
        #[source]
        source: NetError,
    },
    #[error("applying the firewall of bridge {bridge}")]
    ApplyFirewall {
        bridge: String,
        #[source]
        source: NetError,
    },
    #[error("listing nftables tables")]
    ListTables(#[source] NetError),
    #[error("deleting banger's nftables tables")]
    DeleteTables(#[source] NetError),
    #[error("binding the DNS {proto} socket on {address}:53")]
    BindDns {
        proto: &'static str,
        address: Ipv4Addr,
        #[source]
        source: std::io::Error,
    },
    #[error("routing ~vm to {dns} on {link} through systemd-resolved")]
    Resolver {
        link: String,
        dns: Ipv4Addr,
        #[source]
        source: NetError,
    },
    /// `ApplyResolver` failed part way and undoing it failed too: the link
    /// stays journaled, so teardown reverts it again.
    #[error(
        "routing ~vm to {dns} on {link} through systemd-resolved (and reverting {link} failed too: {revert})"
    )]
    ResolverNotReverted {
        link: String,
        dns: Ipv4Addr,
        revert: String,
        #[source]
        source: Box<NetError>,
    },
    #[error("reverting the systemd-resolved settings of {link}")]
    ResolverRevert {
        link: String,
        #[source]
        source: NetError,
    },
    #[error(
        "resolver routing for {link} refused: the executor cannot confirm it is in the host's network \
         namespace (PID 1's), and systemd-resolved would apply it to whichever host link shares the index"
    )]
    ResolverNotHostNamespace { link: String },
    #[error(
        "cannot route .vm names on {link}: resolvectl is not installed (install systemd-resolved)"
    )]
    ResolverUnavailable {
        link: String,
        #[source]
        source: NetError,
    },
    #[error("banger's network journal")]
    Journal(#[source] JournalError),
}

impl ExecError {
    pub fn code(&self) -> ErrorCode {
        use ExecError::*;
        match self {
            InterfaceName { .. }
            | BridgeAddress { .. }
            | SubnetOverlap { .. }
            | SubnetHoldsHostAddress { .. }
            | UncheckedNexthop { .. }
            | RenamedBridge { .. }
            | NotOurs { .. }
            | NotJournaled { .. }
            | TapOnOtherBridge { .. }
            | GuestAddress { .. }
            | DuplicateGuest { .. }
            | NotBridgeAddress { .. } => ErrorCode::BadRequest,
            WrongKind { .. }
            | TapOwner { .. }
            | ForeignTap { .. }
            | ReplacedTap { .. }
            | TapInFlight { .. }
            | ReplacedBridge { .. }
            | UncheckedBridge { .. }
            | BridgeMissing { .. }
            | FirewallMissing { .. } => ErrorCode::InvalidState,
            NotInstalledBridge { .. } | TapForOtherUser { .. } => ErrorCode::PermissionDenied,
            ResolverUnavailable { .. } | ResolverNotHostNamespace { .. } => ErrorCode::Unavailable,
            ReadLinks(_)
            | ReadRoutes(_)
            | ReadResolvers(_)
            | CreateBridge { .. }
            | SetAddress { .. }
            | RemoveAddress { .. }
            | SetUp { .. }
            | IpForward(_)
            | DisableIpv6 { .. }
            | NoLinkLocalLearn { .. }
            | SetMac { .. }
            | CreateTap { .. }
            | SetMaster { .. }
            | DeleteLink { .. }
            | ApplyFirewall { .. }
            | ListTables(_)
            | DeleteTables(_)
            | ResolverRevert { .. }
            | BindDns { .. }
            | Resolver { .. }
            | ResolverNotReverted { .. }
            | Journal(_) => ErrorCode::Internal,
            Vm(e) => e.code(),
            Image(e) => e.code(),
        }
    }

    pub fn to_rpc(&self) -> RpcError {
        RpcError::from_error(self.code(), self)
    }

    /// The whole chain on one line, for logs and teardown reports.
    pub fn render(&self) -> String {
        banger_proto::error::chain(self).join(": ")
    }
}

impl From<JournalError> for ExecError {
    fn from(e: JournalError) -> Self {
        ExecError::Journal(e)
    }
}
