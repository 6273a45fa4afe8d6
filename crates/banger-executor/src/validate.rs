//! Argument validation that needs neither the host nor the journal: names,
//! addresses, prefix lengths, duplicates. [`op`] runs before anything else
//! for every operation; the journal- and route-dependent checks live beside
//! the operations, still before any change to the host.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use banger_host::net::{Ipv4Cidr, Link, RouteV4};
use banger_proto::net::{
    BridgeSpec, FirewallSpec, IFNAME_MAX, IFNAME_PREFIX, SUBNET_PREFIX_RANGE, TAP_PREFIX,
};
use banger_proto::privops::{
    BuildDebianImage, DeleteTap, DeleteVmDisks, GrowWorkDisk, ImageOp, KillVm, NetOp,
    OpenDnsSockets, PauseVm, PrivOp, ProbeDevice, ProbeJailScope, ProbeKvm, ProbeNftables, ProbeOp,
    ProbeVmms, QueryNetStatus, ResumeVm, StopVm, Teardown, VmOp, VmmStatus, WaitVmReady,
};

use crate::error::ExecError;

/// The checks of `op` that need no host state.
pub fn op(op: &PrivOp) -> Result<(), ExecError> {
    match op {
        PrivOp::Probe(ProbeOp::ProbeKvm(ProbeKvm))
        | PrivOp::Probe(ProbeOp::ProbeDevice(ProbeDevice { .. }))
        | PrivOp::Probe(ProbeOp::ProbeNftables(ProbeNftables))
        | PrivOp::Probe(ProbeOp::ProbeJailScope(ProbeJailScope))
        | PrivOp::Probe(ProbeOp::ProbeVmms(ProbeVmms))
        | PrivOp::Net(NetOp::NetStatus(QueryNetStatus))
        | PrivOp::Net(NetOp::Teardown(Teardown))
        | PrivOp::Net(NetOp::OpenDnsSockets(OpenDnsSockets { .. })) => Ok(()),
        PrivOp::Net(NetOp::EnsureBridge(spec)) => bridge_spec(spec).map(drop),
        PrivOp::Net(NetOp::EnsureTap(spec)) => {
            tap_name(&spec.name)?;
            bridge_name(&spec.bridge)
        }
        PrivOp::Net(NetOp::DeleteTap(DeleteTap { name })) => tap_name(name),
        PrivOp::Net(NetOp::SyncFirewall(spec)) => firewall_shape(spec),
        PrivOp::Net(NetOp::ApplyResolver(spec)) => bridge_name(&spec.bridge),
        // Checked by the VM module (`vm::validate`) before anything is touched.
        PrivOp::Vm(VmOp::CreateVmDisks(_))
        | PrivOp::Vm(VmOp::WriteGuestFiles(_))
        | PrivOp::Vm(VmOp::DeleteVmDisks(DeleteVmDisks { .. }))
        | PrivOp::Vm(VmOp::GrowWorkDisk(GrowWorkDisk { .. }))
        | PrivOp::Vm(VmOp::LaunchVm(_))
        | PrivOp::Vm(VmOp::StopVm(StopVm { .. }))
        | PrivOp::Vm(VmOp::KillVm(KillVm { .. }))
        | PrivOp::Vm(VmOp::VmmStatus(VmmStatus { .. }))
        | PrivOp::Vm(VmOp::WaitVmReady(WaitVmReady { .. }))
        | PrivOp::Vm(VmOp::PauseVm(PauseVm { .. }))
        | PrivOp::Vm(VmOp::ResumeVm(ResumeVm { .. }))
        | PrivOp::Vm(VmOp::SnapshotVm(_)) => Ok(()),
        PrivOp::Image(ImageOp::BuildDebianImage(BuildDebianImage { suite })) => {
            Ok(crate::image::validate_suite(suite)?)
        }
    }
}

fn bad_name(name: &str, reason: impl Into<String>) -> ExecError {
    ExecError::InterfaceName {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// A name the kernel would accept, that cannot be mistaken for a path, and
/// that is safe inside a quoted nft string: an allow-list of characters
/// (ASCII letters, digits, `-`, `_`, `.`), never a deny-list — nft rule
/// text is built from these names.
pub fn interface_name(name: &str) -> Result<(), ExecError> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Err(bad_name(
            name,
            format!("must be 1 to {IFNAME_MAX} bytes long"),
        ));
    }
    if name == "." || name == ".." {
        return Err(bad_name(name, "`.` and `..` are not interface names"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(bad_name(
            name,
            "may contain only ASCII letters, digits, `-`, `_` and `.`",
        ));
    }
    Ok(())
}

/// `banger` followed by lowercase letters, digits and `-`, but not a tap
/// name.
pub fn bridge_name(name: &str) -> Result<(), ExecError> {
    interface_name(name)?;
    if !name.starts_with(IFNAME_PREFIX) || name.starts_with(TAP_PREFIX) {
        return Err(bad_name(
            name,
            format!(
                "bridge names start with `{IFNAME_PREFIX}` and not `{TAP_PREFIX}` (e.g. {IFNAME_PREFIX}0)"
            ),
        ));
    }
    let rest = &name[IFNAME_PREFIX.len()..];
    if !rest
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad_name(
            name,
            format!(
                "after `{IFNAME_PREFIX}`, bridge names have only lowercase letters, digits and `-`"
            ),
        ));
    }
    Ok(())
}

/// `bangertap` followed by one or more digits.
pub fn tap_name(name: &str) -> Result<(), ExecError> {
    interface_name(name)?;
    let digits = name.strip_prefix(TAP_PREFIX).unwrap_or("");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_name(
            name,
            format!("tap names are `{TAP_PREFIX}` followed by digits (e.g. {TAP_PREFIX}0)"),
        ));
    }
    Ok(())
}

/// Name plus address: private range, /16../29, a host address of its subnet.
pub fn bridge_spec(spec: &BridgeSpec) -> Result<Ipv4Cidr, ExecError> {
    bridge_name(&spec.name)?;
    let cidr = Ipv4Cidr::new(spec.address, spec.prefix_len);
    let bad = |reason: String| ExecError::BridgeAddress {
        address: cidr,
        reason,
    };
    if !SUBNET_PREFIX_RANGE.contains(&spec.prefix_len) {
        return Err(bad(format!(
            "prefix /{} is outside /{}../{}",
            spec.prefix_len,
            SUBNET_PREFIX_RANGE.start(),
            SUBNET_PREFIX_RANGE.end()
        )));
    }
    // The prefix is at most 29 here and the network has no host bits.
    let subnet = banger_proto::cidr::Ipv4Cidr::new(cidr.network(), spec.prefix_len)
        .expect("a network address with a prefix of at most 32");
    if let Some(reason) = banger_proto::net::subnet_problem(subnet) {
        return Err(bad(reason));
    }
    if spec.address == cidr.network() {
        return Err(bad(format!(
            "{} is the subnet's network address; use a host address such as {}",
            spec.address,
            Ipv4Addr::from(u32::from(cidr.network()) + 1)
        )));
    }
    if spec.address == cidr.broadcast() {
        return Err(bad(format!(
            "{} is the subnet's broadcast address; use a host address such as {}",
            spec.address,
            Ipv4Addr::from(u32::from(cidr.network()) + 1)
        )));
    }
    Ok(cidr)
}

/// The first route, on an interface other than `bridge`, whose destination
/// overlaps `subnet`. Default routes (`/0`) are not overlaps: every subnet
/// "overlaps" them, and a connected route overrides them.
pub fn no_overlap(subnet: Ipv4Cidr, bridge: &str, routes: &[RouteV4]) -> Result<(), ExecError> {
    let clash = routes.iter().find(|r| {
        r.destination.prefix_len > 0
            && r.interface.as_deref() != Some(bridge)
            && r.destination.overlaps(subnet)
    });
    match clash {
        None => Ok(()),
        Some(r) => Err(ExecError::SubnetOverlap {
            subnet: Ipv4Cidr::new(subnet.network(), subnet.prefix_len),
            route: Ipv4Cidr::new(r.destination.network(), r.destination.prefix_len),
            interface: r
                .interface
                .clone()
                .unwrap_or_else(|| "a multipath route".into()),
        }),
    }
}

/// The first thing of the host's that `subnet` holds although the host
/// reaches it outside `bridge`: an address of another interface, a gateway
/// of a route on another interface (the default route's included: an
/// address reached through it is not routed by any interface of its own, so
/// [`no_overlap`] cannot see it), or a resolver the host uses. Put on the
/// bridge, any of these would be captured by the guests' side: the owner
/// could answer the host's DNS, or take its gateway, with a guest or with
/// the DNS sockets bound on the bridge address. `routed_here` says banger
/// itself routed `~vm` to this bridge (`ApplyResolver`, journaled).
pub fn holds_nothing_of_the_host(
    subnet: Ipv4Cidr,
    bridge: &str,
    links: &[Link],
    routes: &[RouteV4],
    resolvers: &[Ipv4Addr],
    routed_here: bool,
) -> Result<(), ExecError> {
    let addresses = links
        .iter()
        .filter(|l| l.name != bridge)
        .flat_map(|l| l.addresses.iter().map(move |a| (a, l)))
        .find(|(a, _)| subnet.contains(a.address))
        .map(|(a, l)| format!("address {a} of {}", l.name));
    let gateways = || {
        routes
            .iter()
            .filter(|r| r.interface.as_deref() != Some(bridge))
            .flat_map(|r| r.gateways.iter().map(move |g| (g, r)))
            .find(|(g, _)| subnet.contains(**g))
            .map(|(g, r)| {
                format!(
                    "gateway {g} of route {} on {}",
                    Ipv4Cidr::new(r.destination.network(), r.destination.prefix_len),
                    r.interface.as_deref().unwrap_or("several interfaces")
                )
            })
    };
    // The bridge's own address is banger's `.vm` server: once
    // `ApplyResolver` routes `~vm` there, systemd-resolved lists it among
    // the host's name servers, and it must not make the next EnsureBridge
    // of the same bridge refuse (second review). Only then: the same
    // address listed when banger routed nothing there is a real resolver
    // of the host's (third review).
    let resolver = || {
        resolvers
            .iter()
            .filter(|r| !(routed_here && **r == subnet.address))
            .find(|r| subnet.contains(**r))
            .map(|r| format!("resolver {r}, a name server the host uses"))
    };
    if let Some(what) = addresses.or_else(gateways).or_else(resolver) {
        return Err(ExecError::SubnetHoldsHostAddress {
            subnet: Ipv4Cidr::new(subnet.network(), subnet.prefix_len),
            what,
        });
    }
    // Gap 14: a route through a nexthop object reported without its
    // interface or gateway (`net.ipv4.nexthop_compat_mode=0`) may go
    // through any address, this subnet's included: unseen is not clear.
    let unseen = routes.iter().find_map(|r| match r.nexthop_id {
        Some(id) if r.interface.is_none() && r.gateways.is_empty() => Some((r, id)),
        _ => None,
    });
    match unseen {
        None => Ok(()),
        Some((r, id)) => Err(ExecError::UncheckedNexthop {
            route: Ipv4Cidr::new(r.destination.network(), r.destination.prefix_len),
            id,
        }),
    }
}

/// Names and uniqueness of a firewall spec.
pub fn firewall_shape(spec: &FirewallSpec) -> Result<(), ExecError> {
    bridge_name(&spec.bridge)?;
    let mut taps = HashSet::new();
    let mut ips = HashSet::new();
    for g in &spec.guests {
        tap_name(&g.tap)?;
        if !taps.insert(g.tap.as_str()) {
            return Err(ExecError::DuplicateGuest {
                what: "tap",
                value: g.tap.clone(),
            });
        }
        if !ips.insert(g.ip) {
            return Err(ExecError::DuplicateGuest {
                what: "address",
                value: g.ip.to_string(),
            });
        }
    }
    Ok(())
}

/// A guest address inside the bridge subnet and not one of its special
/// addresses.
pub fn guest_address(
    tap: &str,
    ip: Ipv4Addr,
    bridge: &str,
    subnet: Ipv4Cidr,
) -> Result<(), ExecError> {
    let bad = |reason: String| ExecError::GuestAddress {
        tap: tap.to_string(),
        ip,
        reason,
    };
    let net = Ipv4Cidr::new(subnet.network(), subnet.prefix_len);
    if !subnet.contains(ip) {
        return Err(bad(format!("outside bridge {bridge}'s subnet {net}")));
    }
    if ip == subnet.network() {
        return Err(bad(format!("is the network address of {net}")));
    }
    if ip == subnet.broadcast() {
        return Err(bad(format!("is the broadcast address of {net}")));
    }
    if ip == subnet.address {
        return Err(bad(format!("is bridge {bridge}'s own address")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_proto::net::GuestRule;

    fn name_err(name: &str) -> String {
        interface_name(name).unwrap_err().to_string()
    }

    #[test]
    fn interface_names() {
        assert!(name_err("").contains("1 to 15 bytes"));
        assert!(name_err("banger0123456789").contains("1 to 15 bytes"));
        assert!(interface_name("banger012345678").is_ok());
        assert!(name_err(".").contains("`.` and `..`"));
        assert!(name_err("..").contains("`.` and `..`"));
        for bad in [
            "bang/er", "bang:er", "bang%er", "bang er", "bang\ter", "bang\0er", "bang\"er",
            "bang#er", "bang;er", "bang{er", "bang'er", "bang$er", "bang\\er", "bangér",
        ] {
            assert!(name_err(bad).contains("may contain only"), "{bad:?}");
        }
        assert!(interface_name("eth0.100").is_ok());
        assert!(interface_name("br-a_b").is_ok());
    }

    /// Issue #13 finding 4: bridge names that rewrote the nft rule text
    /// (`banger"drop#` rendered `iifname "banger" drop`) are refused, and
    /// after the prefix only `[a-z0-9-]` is ever accepted — every byte
    /// checked at every position a name can have.
    #[test]
    fn bridge_names_carry_only_safe_tokens_after_the_prefix() {
        for injected in [
            "banger\"drop#",
            "banger\";",
            "banger\\x",
            "banger{x}",
            "banger'x",
            "banger$x",
        ] {
            assert!(bridge_name(injected).is_err(), "{injected:?}");
        }
        for pos in 0..(IFNAME_MAX - IFNAME_PREFIX.len()) {
            for b in 0u8..=255 {
                let mut name = IFNAME_PREFIX.as_bytes().to_vec();
                name.extend(std::iter::repeat_n(b'a', pos));
                name.push(b);
                let Ok(name) = String::from_utf8(name) else {
                    continue;
                };
                let safe = b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
                let is_tap = name.starts_with(TAP_PREFIX);
                assert_eq!(bridge_name(&name).is_ok(), safe && !is_tap, "{name:?}");
                // The one rule the install and the owner config check too.
                assert_eq!(
                    banger_proto::net::is_bridge_name(&name),
                    safe && !is_tap,
                    "{name:?}"
                );
            }
        }
    }

    #[test]
    fn bridge_and_tap_prefixes() {
        assert!(bridge_name("banger0").is_ok());
        let e = bridge_name("br0").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid interface name \"br0\": bridge names start with `banger` and not `bangertap` (e.g. banger0)"
        );
        assert!(bridge_name("bangertap0").is_err());
        assert!(tap_name("bangertap0").is_ok());
        assert!(tap_name("bangertap123456").is_ok());
        for bad in ["bangertap", "bangertapx", "bangertap1a", "tap0", "banger0"] {
            assert!(tap_name(bad).is_err(), "{bad}");
        }
    }

    fn spec(a: [u8; 4], p: u8) -> BridgeSpec {
        BridgeSpec {
            name: "banger0".into(),
            address: Ipv4Addr::from(a),
            prefix_len: p,
        }
    }

    #[test]
    fn bridge_addresses() {
        assert!(bridge_spec(&spec([10, 0, 0, 1], 24)).is_ok());
        assert!(bridge_spec(&spec([172, 31, 255, 254], 16)).is_ok());
        assert!(bridge_spec(&spec([192, 168, 7, 1], 29)).is_ok());
        let err = |s| bridge_spec(&s).unwrap_err().to_string();
        assert!(err(spec([8, 8, 8, 1], 24)).contains("not in a private range"));
        assert!(err(spec([172, 32, 0, 1], 24)).contains("not in a private range"));
        assert!(err(spec([100, 64, 0, 1], 24)).contains("not in a private range"));
        assert!(err(spec([10, 0, 0, 1], 15)).contains("prefix /15 is outside /16../29"));
        assert!(err(spec([10, 0, 0, 1], 30)).contains("prefix /30"));
        assert_eq!(
            err(spec([10, 0, 0, 0], 24)),
            "invalid bridge address 10.0.0.0/24: 10.0.0.0 is the subnet's network address; use a host address such as 10.0.0.1"
        );
        assert!(err(spec([10, 0, 0, 255], 24)).contains("broadcast address"));
    }

    fn route(dst: [u8; 4], p: u8, dev: &str) -> RouteV4 {
        RouteV4 {
            destination: Ipv4Cidr::new(Ipv4Addr::from(dst), p),
            interface: Some(dev.into()),
            table: 254,
            gateways: Vec::new(),
            nexthop_id: None,
        }
    }

    /// Issue #13 finding 5: what the host reaches outside the bridge —
    /// through its default route above all, which no overlap check sees —
    /// cannot be put on the bridge.
    #[test]
    fn a_subnet_may_hold_no_address_gateway_or_resolver_of_the_host() {
        let subnet = Ipv4Cidr::new(Ipv4Addr::new(10, 53, 0, 1), 24);
        let link = |name: &str, addr: [u8; 4], p: u8| Link {
            index: 2,
            name: name.into(),
            kind: banger_host::net::LinkKind::Unspecified,
            master: None,
            up: true,
            addresses: vec![Ipv4Cidr::new(Ipv4Addr::from(addr), p)],
            link_type: libc::ARPHRD_ETHER,
            tap_owner: None,
            tap_group: None,
        };
        let via = |dst: [u8; 4], p: u8, gw: [u8; 4], dev: &str| RouteV4 {
            gateways: vec![Ipv4Addr::from(gw)],
            ..route(dst, p, dev)
        };
        let check = |links: &[Link], routes: &[RouteV4], resolvers: &[[u8; 4]]| {
            let resolvers: Vec<Ipv4Addr> = resolvers.iter().map(|r| Ipv4Addr::from(*r)).collect();
            holds_nothing_of_the_host(subnet, "banger0", links, routes, &resolvers, true)
                .map_err(|e| e.to_string())
        };
        // Nothing of the host in 10.53.0.0/24; the bridge's own address and
        // routes through the bridge do not count.
        let wan = link("eth0", [192, 168, 1, 2], 24);
        let default = via([0, 0, 0, 0], 0, [192, 168, 1, 1], "eth0");
        assert_eq!(
            check(
                &[wan.clone(), link("banger0", [10, 53, 0, 1], 24)],
                &[
                    default.clone(),
                    via([10, 9, 0, 0], 16, [10, 53, 0, 7], "banger0")
                ],
                // 10.53.0.1 is the bridge's own address: banger's `.vm`
                // server, listed by resolved once `~vm` routes to it.
                &[[192, 168, 1, 1], [127, 0, 0, 53], [10, 53, 0, 1]],
            ),
            Ok(())
        );
        let (wan, default) = (std::slice::from_ref(&wan), std::slice::from_ref(&default));
        // The bridge's address listed while banger routed nothing there is
        // a resolver of the host's like any other.
        assert!(
            holds_nothing_of_the_host(
                subnet,
                "banger0",
                wan,
                default,
                &[Ipv4Addr::new(10, 53, 0, 1)],
                false
            )
            .unwrap_err()
            .to_string()
            .contains("holds resolver 10.53.0.1")
        );
        assert_eq!(
            check(wan, default, &[[10, 53, 0, 53]]).unwrap_err(),
            "bridge subnet 10.53.0.0/24 holds resolver 10.53.0.53, a name server the host uses, \
             which the host reaches outside banger's bridge; choose a private subnet that holds \
             none of the host's addresses, gateways or resolvers"
        );
        let onlink = via([0, 0, 0, 0], 0, [10, 53, 0, 254], "eth0");
        assert!(
            check(wan, &[onlink], &[])
                .unwrap_err()
                .contains("holds gateway 10.53.0.254 of route 0.0.0.0/0 on eth0")
        );
        // A nexthop object's route without its gateway (compat mode off)
        // is refused, naming it; with its gateway (compat mode on) it is
        // checked like any route.
        let hidden = RouteV4 {
            interface: None,
            nexthop_id: Some(7),
            ..route([0, 0, 0, 0], 0, "x")
        };
        assert!(
            check(wan, std::slice::from_ref(&hidden), &[])
                .unwrap_err()
                .contains("route 0.0.0.0/0 goes through nexthop object 7")
        );
        let shown = RouteV4 {
            interface: Some("eth0".into()),
            gateways: vec![Ipv4Addr::new(192, 168, 1, 1)],
            ..hidden
        };
        assert_eq!(check(wan, &[shown], &[]), Ok(()));
        let multipath = RouteV4 {
            interface: None,
            gateways: vec![Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(10, 53, 0, 9)],
            ..route([10, 70, 0, 0], 16, "x")
        };
        assert!(
            check(wan, &[multipath], &[])
                .unwrap_err()
                .contains("gateway 10.53.0.9 of route 10.70.0.0/16 on several interfaces")
        );
        assert!(
            check(
                &[wan[0].clone(), link("lo", [10, 53, 0, 9], 32)],
                default,
                &[]
            )
            .unwrap_err()
            .contains("holds address 10.53.0.9/32 of lo")
        );
    }

    #[test]
    fn overlaps_ignore_the_bridge_itself_and_default_routes() {
        let subnet = Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 1), 24);
        let routes = [
            route([0, 0, 0, 0], 0, "eth0"),
            route([10, 0, 0, 0], 24, "banger0"),
            route([10, 0, 1, 0], 24, "eth0"),
        ];
        assert!(no_overlap(subnet, "banger0", &routes).is_ok());
        let e = no_overlap(subnet, "banger0", &[route([10, 0, 0, 0], 16, "wg0")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "bridge subnet 10.0.0.0/24 overlaps route 10.0.0.0/16 on wg0; choose a private subnet that no other interface routes"
        );
    }

    fn guest(tap: &str, ip: [u8; 4]) -> GuestRule {
        GuestRule {
            tap: tap.into(),
            ip: Ipv4Addr::from(ip),
            nat: false,
        }
    }

    #[test]
    fn firewall_duplicates_and_guest_addresses() {
        let fw = |guests| FirewallSpec {
            bridge: "banger0".into(),
            guests,
            allow_inter_vm: false,
        };
        assert!(firewall_shape(&fw(vec![guest("bangertap0", [10, 0, 0, 2])])).is_ok());
        let e = firewall_shape(&fw(vec![
            guest("bangertap0", [10, 0, 0, 2]),
            guest("bangertap0", [10, 0, 0, 3]),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("tap bangertap0 twice"), "{e}");
        let e = firewall_shape(&fw(vec![
            guest("bangertap0", [10, 0, 0, 2]),
            guest("bangertap1", [10, 0, 0, 2]),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("address 10.0.0.2 twice"), "{e}");
        assert!(firewall_shape(&fw(vec![guest("eth0", [10, 0, 0, 2])])).is_err());

        let subnet = Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 1), 24);
        let check =
            |ip: [u8; 4]| guest_address("bangertap0", Ipv4Addr::from(ip), "banger0", subnet);
        assert!(check([10, 0, 0, 2]).is_ok());
        assert!(
            check([10, 0, 1, 2])
                .unwrap_err()
                .to_string()
                .contains("outside bridge banger0's subnet 10.0.0.0/24")
        );
        assert!(
            check([10, 0, 0, 0])
                .unwrap_err()
                .to_string()
                .contains("network address")
        );
        assert!(
            check([10, 0, 0, 255])
                .unwrap_err()
                .to_string()
                .contains("broadcast address")
        );
        assert!(
            check([10, 0, 0, 1])
                .unwrap_err()
                .to_string()
                .contains("own address")
        );
    }
}
