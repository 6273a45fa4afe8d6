//! Issue #13 finding 5: the owner cannot steer the host's routing or DNS
//! through the bridge subnet. A real `bangerd-root`, started inside a test
//! namespace that plays the host, sets up the bridge its install metadata
//! names and no other; and it refuses even that one when the subnet holds
//! something the host reaches outside the bridge — its resolver or the
//! gateway of its default route (both behind the default route here, so no
//! route on another interface gives them away), or an address of its own.
//!
//! The test process (root) plays the owner daemon, so the helper is
//! installed with root as its owner. Nothing here leaves the namespaces:
//! the resolver and gateway addresses are only compared, never contacted.
#![allow(clippy::disallowed_methods)] // the tests spawn ip and bangerd-root directly

use std::mem::ManuallyDrop;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use banger_proto::install::InstallNetwork;
use banger_proto::net::{BridgeSpec, TapSpec};
use banger_proto::privops::{NetOp, OpenDnsSockets, PrivOp, PrivOutcome, Teardown, VmOp};
use banger_proto::vmops::{LaunchVmSpec, VmmKind};
use banger_proto::{ErrorCode, RpcError};
use banger_testkit::*;
use bangerd::privileged::{HelperClient, PrivilegedOps};

fn ip(ns: &NetNs, args: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", &ns.name])
        .args(args.split_whitespace())
        .output()
        .expect("running ip (package iproute2)");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespace's links, by name.
fn link_names(ns: &NetNs) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&ip(ns, "-j link show")).unwrap();
    let mut names: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn network(bridge: &str, subnet: &str) -> InstallNetwork {
    InstallNetwork {
        bridge: bridge.into(),
        subnet: subnet.parse().unwrap(),
    }
}

/// The helper, inside `ns`, installed for root with `network`, files in
/// `dir`.
fn helper(ns: &NetNs, dir: &Path, network: InstallNetwork) -> (RootHelper, HelperClient) {
    // Root is not a created user: ManuallyDrop keeps TestUser's drop
    // (userdel) from ever running.
    let me = ManuallyDrop::new(TestUser {
        name: "root".into(),
        uid: 0,
        gid: 0,
    });
    let h = RootHelper::start_in_with(ns, dir, &me, network);
    let client = HelperClient::new(&h.socket);
    (h, client)
}

fn tap_on(name: &str, bridge: &str) -> PrivOp {
    PrivOp::Net(NetOp::EnsureTap(TapSpec {
        name: name.into(),
        bridge: bridge.into(),
        owner_uid: 0,
    }))
}

fn ensure_bridge(name: &str, address: [u8; 4], prefix_len: u8) -> PrivOp {
    PrivOp::Net(NetOp::EnsureBridge(BridgeSpec {
        name: name.into(),
        address: Ipv4Addr::from(address),
        prefix_len,
    }))
}

fn refused(result: Result<PrivOutcome, RpcError>, code: ErrorCode, says: &str) {
    match result {
        Ok(outcome) => panic!("accepted: {outcome:?} (expected a refusal saying {says:?})"),
        Err(e) => {
            assert_eq!(e.code, code, "{}", e.render());
            assert!(e.render().contains(says), "{}", e.render());
        }
    }
}

/// The owner asks for bridges and subnets other than the installed one:
/// each is refused and nothing is created; the installed one works. A
/// bridge left from an earlier install (another subnet) serves nothing
/// once the install names another — no DNS sockets on its address, no new
/// taps, no VM on its old taps — and is removed, taps and all, when the
/// installed bridge is set up.
#[test]
fn the_helper_sets_up_only_the_installed_bridge() {
    require_root();
    let ns = NetNs::new();
    let dir = shared_tempdir();
    let (h, client) = helper(&ns, dir.path(), network("banger0", "10.77.0.0/24"));
    for op in [
        ensure_bridge("banger0", [10, 78, 0, 1], 24),
        ensure_bridge("banger0", [10, 77, 0, 1], 16),
        ensure_bridge("banger0", [10, 77, 0, 9], 24),
        ensure_bridge("banger1", [10, 77, 0, 1], 24),
    ] {
        refused(
            client.call(op.clone()),
            ErrorCode::PermissionDenied,
            "banger0 10.77.0.1/24",
        );
        assert_eq!(link_names(&ns), ["lo"], "{op:?} created something");
    }
    client
        .call(ensure_bridge("banger0", [10, 77, 0, 1], 24))
        .unwrap();
    client.call(tap_on("bangertap0", "banger0")).unwrap();
    assert_eq!(link_names(&ns), ["banger0", "bangertap0", "lo"]);
    drop(client);
    drop(h);

    // Reinstalled with another subnet: the old bridge is still journaled
    // (and up), but it is not the install's any more.
    let (_h, client) = helper(&ns, dir.path(), network("banger2", "10.79.0.0/24"));
    refused(
        client.call(PrivOp::Net(NetOp::OpenDnsSockets(OpenDnsSockets {
            address: Ipv4Addr::new(10, 77, 0, 1),
        }))),
        ErrorCode::PermissionDenied,
        "banger2 10.79.0.1/24",
    );
    refused(
        client.call(tap_on("bangertap1", "banger0")),
        ErrorCode::PermissionDenied,
        "banger2 10.79.0.1/24",
    );
    refused(
        client.call(PrivOp::Vm(VmOp::LaunchVm(LaunchVmSpec {
            vm_id: "a".repeat(32),
            image_id: "b".repeat(32),
            kernel_id: "c".repeat(32),
            vmm: VmmKind::Qemu,
            vcpus: 1,
            memory_mib: 256,
            tap: "bangertap0".into(),
            mac: "02:ba:0a:4d:00:02".into(),
            force_kvm: false,
            restore: None,
        }))),
        ErrorCode::PermissionDenied,
        "bridge banger0 is not this install's bridge, banger2 10.79.0.1/24",
    );
    assert_eq!(link_names(&ns), ["banger0", "bangertap0", "lo"]);
    client
        .call(ensure_bridge("banger2", [10, 79, 0, 1], 24))
        .unwrap();
    assert_eq!(
        link_names(&ns),
        ["banger2", "lo"],
        "the old bridge and its tap are gone"
    );
    let (_, fds) = client
        .call_with_fds(PrivOp::Net(NetOp::OpenDnsSockets(OpenDnsSockets {
            address: Ipv4Addr::new(10, 79, 0, 1),
        })))
        .unwrap();
    assert_eq!(fds.len(), 2);
    drop(fds);
    let PrivOutcome::Teardown(report) =
        client.call(PrivOp::Net(NetOp::Teardown(Teardown))).unwrap()
    else {
        panic!("teardown answered something else")
    };
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(link_names(&ns), ["lo"]);
}

/// A namespace playing a host that reaches everything but one /24 through
/// its default route, whose gateway sits outside every subnet it has an
/// address in (an on-link gateway, as on many cloud hosts); its resolver is
/// out there too, and it has a /32 address of its own. Returned with the
/// namespace at the far end of its uplink.
fn host_behind_a_default_route() -> (NetNs, NetNs) {
    let (ns, wan) = (NetNs::new(), NetNs::new());
    ip(
        &ns,
        &format!("link add wan0 type veth peer name wan1 netns {}", wan.name),
    );
    ip(&ns, "addr add 192.168.60.2/24 dev wan0");
    ip(&ns, "addr add 10.61.0.9/32 dev wan0");
    ip(&ns, "link set wan0 up");
    ip(&wan, "link set wan1 up");
    ip(&ns, "route add default via 10.200.0.1 dev wan0 onlink");
    ns.set_resolv_conf("nameserver 10.53.0.53\n");
    // No route but the default one covers any of the three.
    let routes = ip(&ns, "-4 route show");
    for hidden in ["10.53.", "10.200.0.0", "10.61."] {
        assert!(!routes.contains(hidden), "{routes}");
    }
    (ns, wan)
}

/// A bridge subnet holding the host's resolver, the gateway of its default
/// route or one of its own addresses is refused, even when the install names
/// it (root's mistake is not the owner's opportunity), and nothing is
/// created; a subnet holding none of them is fine.
#[test]
fn the_helper_refuses_a_subnet_holding_the_hosts_resolver_gateway_or_address() {
    require_root();
    let mut accepted = Vec::new();
    for (subnet, says) in [
        ("10.53.0.0/24", "resolver 10.53.0.53"),
        ("10.200.0.0/24", "gateway 10.200.0.1"),
        ("10.61.0.0/24", "address 10.61.0.9/32 of wan0"),
    ] {
        let (ns, _wan) = host_behind_a_default_route();
        let dir = shared_tempdir();
        let installed = network("banger0", subnet);
        let (_h, client) = helper(&ns, dir.path(), installed.clone());
        match client.call(PrivOp::Net(NetOp::EnsureBridge(installed.bridge_spec()))) {
            Ok(outcome) => accepted.push(format!("{subnet} (holds the {says}): {outcome:?}")),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.render());
                assert!(e.render().contains(says), "{}", e.render());
                assert!(e.render().contains(subnet), "{}", e.render());
                assert_eq!(link_names(&ns), ["lo", "wan0"], "{subnet}");
            }
        }
    }
    assert!(accepted.is_empty(), "accepted: {accepted:#?}");

    let (ns, _wan) = host_behind_a_default_route();
    let dir = shared_tempdir();
    let installed = network("banger0", "10.62.0.0/24");
    let (_h, client) = helper(&ns, dir.path(), installed.clone());
    client
        .call(PrivOp::Net(NetOp::EnsureBridge(installed.bridge_spec())))
        .unwrap();
    client.call(PrivOp::Net(NetOp::Teardown(Teardown))).unwrap();
    assert_eq!(link_names(&ns), ["lo", "wan0"]);
}

/// Gap 14: a route through a nexthop object (`ip nexthop`, `RTA_NH_ID`)
/// carries neither its gateway nor its interface once the kernel stops
/// repeating them for old tools (`net.ipv4.nexthop_compat_mode=0`, set
/// here); the subnet checks saw neither, so a default route whose gateway
/// sits inside the installed subnet went unnoticed. Such a route is
/// refused as one banger cannot check, naming it; the same gateway on a
/// plain route is refused as a gateway (the control).
#[test]
fn a_gateway_behind_a_nexthop_object_is_no_blind_spot() {
    require_root();
    for (route, says) in [
        ("route replace default nhid 7", "nexthop object 7"),
        (
            "route replace default via 10.201.0.1 dev wan0 onlink",
            "gateway 10.201.0.1",
        ),
    ] {
        let (ns, _wan) = host_behind_a_default_route();
        ns.run(|| std::fs::write("/proc/sys/net/ipv4/nexthop_compat_mode", "0"))
            .expect("net.ipv4.nexthop_compat_mode in the test namespace");
        ip(&ns, "nexthop add id 7 via 10.201.0.1 dev wan0 onlink");
        ip(&ns, route);
        let dir = shared_tempdir();
        let installed = network("banger0", "10.201.0.0/24");
        let (_h, client) = helper(&ns, dir.path(), installed.clone());
        refused(
            client.call(PrivOp::Net(NetOp::EnsureBridge(installed.bridge_spec()))),
            ErrorCode::BadRequest,
            says,
        );
        assert_eq!(link_names(&ns), ["lo", "wan0"], "{route}");
    }
}
