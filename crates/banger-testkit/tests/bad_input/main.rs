//! Bad input to the privileged seam is refused by both adapters, the same
//! way: the in-process executor (dev mode) and the helper client talking to a
//! real `bangerd-root` (system mode).
//!
//! Every case runs twice, once per adapter, each time in a network namespace
//! of its own (testkit [`NetNs`]): the in-process calls run on a thread that
//! has joined the namespace, the helper is started inside it. So even a
//! validation bug could create nothing outside the test namespace. Both are
//! given the same bridge, as an install records it (`banger0`,
//! 10.77.0.0/24). Each run asserts `bad_request` (or `permission_denied`
//! for a well-formed request the owner may not make), a message naming the
//! bad input, the same message
//! chain from both adapters, and that nothing changed: the namespace's links
//! (names, kinds, masters, up flag, addresses), its nft tables (none) and
//! the executor's journal are exactly what they were before the bad call.
//!
//! Addresses such as 8.8.8.0/24 are only validated, never contacted.
#![allow(clippy::disallowed_methods)] // the tests spawn ip, nft and bangerd-root directly

use std::mem::ManuallyDrop;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use banger_executor::Executor;
use banger_host::net::RealNet;
use banger_host::probe::RealHost;
use banger_proto::install::InstallNetwork;
use banger_proto::net::{BridgeSpec, FirewallSpec, GuestRule, ResolverSpec, TapSpec};
use banger_proto::privops::{
    BuildDebianImage, DeleteTap, ImageOp, NetOp, OpenDnsSockets, PrivOp, PrivOutcome, Teardown,
};
use banger_proto::{ErrorCode, RpcError};
use banger_testkit::*;
use bangerd::privileged::{HelperClient, InProcess, PrivilegedOps};
use serde_json::Value;

// ---------------------------------------------------------------- plumbing

mod harness;
use harness::*;

/// Interface names, whatever op carries them, and the banger prefixes.
fn name_cases() -> Vec<Case> {
    vec![
        bad_name("empty name", "", LENGTH),
        bad_name("name `.`", ".", DOTS),
        bad_name("name `..`", "..", DOTS),
        bad_name("16-byte name", "banger0123456789", LENGTH),
        bad_name("name with /", "banger/0", CHARS),
        bad_name("name with :", "banger:0", CHARS),
        bad_name("name with %", "banger%0", CHARS),
        bad_name("name with a space", "banger 0", CHARS),
        bad_name("name with a tab", "banger\t0", CHARS),
        bad_name("name with a newline", "banger\n0", CHARS),
        bad_name("name with NUL", "banger\u{0}0", CHARS),
        // Issue #13 finding 4: these rewrote the nft rule text through the
        // helper (`iifname "banger" drop`) before names were allow-listed.
        bad_name("nft injection `\"drop#`", "banger\"drop#", CHARS),
        bad_name("nft injection `\";`", "banger\";", CHARS),
        bad_name("name with a backslash", "banger\\x", CHARS),
        bad_name("name with braces", "banger{x}", CHARS),
        bad_name("name with a quote", "banger'x", CHARS),
        bad_name("name with $", "banger$x", CHARS),
        bad_name(
            "upper case after the prefix",
            "bangerX",
            "after `banger`, bridge names have only lowercase letters, digits and `-`",
        ),
        case(
            "tap name `..`",
            &[],
            ensure_tap("..", BRIDGE),
            &["invalid interface name \"..\"", DOTS],
        ),
        case(
            "tap's bridge with /",
            &[],
            ensure_tap("bangertap0", "banger/x"),
            &["invalid interface name \"banger/x\"", CHARS],
        ),
        case(
            "delete_tap with a tab",
            &[],
            PrivOp::Net(NetOp::DeleteTap(DeleteTap {
                name: "bangertap\t0".into(),
            })),
            &["invalid interface name \"bangertap\\t0\"", CHARS],
        ),
        case(
            "firewall bridge `.`",
            &[],
            firewall(".", &[]),
            &["invalid interface name \".\"", DOTS],
        ),
        case(
            "resolver bridge with %",
            &[],
            PrivOp::Net(NetOp::ApplyResolver(ResolverSpec {
                bridge: "banger%0".into(),
                dns: BRIDGE_IP,
            })),
            &["invalid interface name \"banger%0\"", CHARS],
        ),
        case(
            "bridge without the banger prefix",
            &[],
            ensure_bridge("br0", [10, 77, 0, 1], 24),
            &["\"br0\"", "bridge names start with `banger`"],
        ),
        case(
            "bridge named like a tap",
            &[],
            ensure_bridge("bangertap0", [10, 77, 0, 1], 24),
            &["\"bangertap0\"", "not `bangertap`"],
        ),
        case(
            "tap not bangertap<N>: tap0",
            &[],
            ensure_tap("tap0", BRIDGE),
            &["\"tap0\"", "tap names are `bangertap` followed by digits"],
        ),
        case(
            "tap not bangertap<N>: bangertapx",
            &[],
            ensure_tap("bangertapx", BRIDGE),
            &["\"bangertapx\"", "followed by digits"],
        ),
        case(
            "tap not bangertap<N>: banger1",
            &[],
            ensure_tap("banger1", BRIDGE),
            &["\"banger1\"", "followed by digits"],
        ),
        case(
            "delete_tap not bangertap<N>",
            &[],
            PrivOp::Net(NetOp::DeleteTap(DeleteTap {
                name: "eth0".into(),
            })),
            &["\"eth0\"", "followed by digits"],
        ),
    ]
}

/// Suites of `build_debian_image`: a plain word, never an option or a path.
fn suite_cases() -> Vec<Case> {
    let build = |suite: &str| {
        PrivOp::Image(ImageOp::BuildDebianImage(BuildDebianImage {
            suite: suite.into(),
        }))
    };
    vec![
        case(
            "suite that is an option",
            &[],
            build("--mirror=http://127.0.0.1/"),
            &["invalid suite", "lowercase letter"],
        ),
        case(
            "suite with a space",
            &[],
            build("bookworm --include=x"),
            &["invalid suite", "only lowercase letters, digits and '-'"],
        ),
        case(
            "suite that is a path",
            &[],
            build("../../etc"),
            &["invalid suite", "lowercase letter"],
        ),
        case(
            "empty suite",
            &[],
            build(""),
            &["invalid suite", "1 to 32 bytes"],
        ),
        case(
            "suite too long",
            &[],
            build(&"b".repeat(33)),
            &["invalid suite", "1 to 32 bytes"],
        ),
    ]
}

/// Bridge subnets: private, /16../29, a host address, the installed one,
/// no overlap, nothing of the host's inside.
fn subnet_cases() -> Vec<Case> {
    use Setup::*;
    vec![
        case(
            "public subnet",
            &[],
            ensure_bridge(BRIDGE, [8, 8, 8, 1], 24),
            &["8.8.8.1/24", "not in a private range"],
        ),
        case(
            "shared (CGNAT) subnet",
            &[],
            ensure_bridge(BRIDGE, [100, 64, 0, 1], 24),
            &["100.64.0.1/24", "not in a private range"],
        ),
        case(
            "prefix /8",
            &[],
            ensure_bridge(BRIDGE, [10, 0, 0, 1], 8),
            &["10.0.0.1/8", "prefix /8 is outside /16../29"],
        ),
        case(
            "prefix /30",
            &[],
            ensure_bridge(BRIDGE, [10, 77, 0, 1], 30),
            &["10.77.0.1/30", "prefix /30 is outside /16../29"],
        ),
        case(
            "address is the network address",
            &[],
            ensure_bridge(BRIDGE, [10, 77, 0, 0], 24),
            &["10.77.0.0/24", "network address"],
        ),
        case(
            "address is the broadcast address",
            &[],
            ensure_bridge(BRIDGE, [10, 77, 0, 255], 24),
            &["10.77.0.255/24", "broadcast address"],
        ),
        case(
            "subnet containing another interface's route",
            &[RoutedVeth],
            ensure_bridge(BRIDGE, [10, 77, 0, 1], 24),
            &["bridge subnet 10.77.0.0/24 overlaps route 10.77.0.128/25 on bvroute0"],
        ),
        // Issue #13 finding 5: the subnet is the install's, and holds
        // nothing the host reaches elsewhere.
        case(
            "subnet other than the installed one",
            &[],
            ensure_bridge(BRIDGE, [10, 77, 3, 1], 16),
            &["bridge banger0 10.77.3.1/16 is not this install's bridge, banger0 10.77.0.1/24"],
        )
        .denied(),
        case(
            "bridge other than the installed one",
            &[],
            ensure_bridge("banger1", [10, 77, 0, 1], 24),
            &["bridge banger1 10.77.0.1/24 is not this install's bridge"],
        )
        .denied(),
        case(
            "subnet holding the default route's gateway",
            &[OnlinkGateway],
            ensure_bridge(BRIDGE, [10, 77, 0, 1], 24),
            &["bridge subnet 10.77.0.0/24 holds gateway 10.77.0.254 of route 0.0.0.0/0 on bvgw0"],
        ),
        case(
            "subnet holding an address of the host",
            &[HostAddress],
            ensure_bridge(BRIDGE, [10, 77, 0, 1], 24),
            &["bridge subnet 10.77.0.0/24 holds address 10.77.0.9/32 of bvaddr0"],
        ),
    ]
}

/// Firewall guests, with the bridge and taps journaled first.
fn firewall_cases() -> Vec<Case> {
    use Setup::*;
    vec![
        case(
            "guest outside the subnet",
            &[BridgeAndTaps],
            firewall(BRIDGE, &[("bangertap0", [10, 78, 0, 2])]),
            &[
                "firewall guest 10.78.0.2 on bangertap0",
                "outside bridge banger0's subnet 10.77.0.0/24",
            ],
        ),
        case(
            "guest is the bridge address",
            &[BridgeAndTaps],
            firewall(BRIDGE, &[("bangertap0", [10, 77, 0, 1])]),
            &["10.77.0.1 on bangertap0", "bridge banger0's own address"],
        ),
        case(
            "guest is the network address",
            &[BridgeAndTaps],
            firewall(BRIDGE, &[("bangertap0", [10, 77, 0, 0])]),
            &["10.77.0.0 on bangertap0", "network address"],
        ),
        case(
            "guest is the broadcast address",
            &[BridgeAndTaps],
            firewall(BRIDGE, &[("bangertap0", [10, 77, 0, 255])]),
            &["10.77.0.255 on bangertap0", "broadcast address"],
        ),
        case(
            "duplicate guest addresses",
            &[BridgeAndTaps],
            firewall(
                BRIDGE,
                &[
                    ("bangertap0", [10, 77, 0, 2]),
                    ("bangertap1", [10, 77, 0, 2]),
                ],
            ),
            &["address 10.77.0.2 twice"],
        ),
        case(
            "duplicate guest taps",
            &[BridgeAndTaps],
            firewall(
                BRIDGE,
                &[
                    ("bangertap0", [10, 77, 0, 2]),
                    ("bangertap0", [10, 77, 0, 3]),
                ],
            ),
            &["tap bangertap0 twice"],
        ),
        case(
            "firewall tap not in the journal",
            &[BridgeAndTaps],
            firewall(
                BRIDGE,
                &[
                    ("bangertap0", [10, 77, 0, 2]),
                    ("bangertap7", [10, 77, 0, 3]),
                ],
            ),
            &["tap bangertap7 was not created by banger"],
        ),
        case(
            "firewall of a bridge other than the installed one",
            &[BridgeAndTaps],
            firewall("banger1", &[]),
            &["bridge banger1 is not this install's bridge, banger0 10.77.0.1/24"],
        )
        .denied(),
    ]
}

/// Objects banger did not create, or addresses that are not its bridge's.
fn ownership_cases() -> Vec<Case> {
    use Setup::*;
    vec![
        case(
            "delete_tap of a name not in the journal",
            &[BridgeAndTaps],
            PrivOp::Net(NetOp::DeleteTap(DeleteTap {
                name: "bangertap5".into(),
            })),
            &["tap bangertap5 was not created by banger"],
        ),
        case(
            "delete_tap of a foreign tap",
            &[ForeignTap],
            PrivOp::Net(NetOp::DeleteTap(DeleteTap {
                name: "bangertap5".into(),
            })),
            &["tap bangertap5 was not created by banger"],
        ),
        case(
            "ensure_tap over a foreign tap",
            &[BridgeAndTaps, ForeignTap],
            ensure_tap("bangertap5", BRIDGE),
            &["interface bangertap5 exists but banger did not create it"],
        ),
        case(
            "dns sockets on a guest address",
            &[BridgeAndTaps],
            PrivOp::Net(NetOp::OpenDnsSockets(OpenDnsSockets {
                address: Ipv4Addr::new(10, 77, 0, 2),
            })),
            &["address 10.77.0.2 is not this install's bridge, banger0 10.77.0.1/24"],
        )
        .denied(),
        case(
            "dns sockets on the loopback address",
            &[],
            PrivOp::Net(NetOp::OpenDnsSockets(OpenDnsSockets {
                address: Ipv4Addr::LOCALHOST,
            })),
            &["address 127.0.0.1 is not this install's bridge"],
        )
        .denied(),
        case(
            "dns sockets before the bridge exists",
            &[],
            PrivOp::Net(NetOp::OpenDnsSockets(OpenDnsSockets { address: BRIDGE_IP })),
            &["10.77.0.1 is not the address of a bridge banger created"],
        ),
        case(
            "foreign interface named banger0",
            &[ForeignBanger0],
            ensure_bridge(BRIDGE, [10, 77, 0, 1], 24),
            &["interface banger0 exists but banger did not create it"],
        ),
        case(
            "tap onto a foreign banger0",
            &[ForeignBanger0],
            ensure_tap("bangertap0", BRIDGE),
            &["bridge banger0 was not created by banger"],
        ),
    ]
}

// ---------------------------------------------------------------- runner

/// Run `case` against one adapter in a namespace of its own and return the
/// refusal, after checking its code, that it names the input, and that
/// nothing changed.
fn refuse(case: &Case, adapter: Adapter) -> RpcError {
    // Declared first, dropped last: the helper (inside `ns`, files in `dir`)
    // is stopped before either goes.
    let ns = NetNs::new();
    let dir = shared_tempdir();
    let target = Target::new(adapter, &ns, dir.path());
    for s in case.setup {
        setup(*s, &ns, &target);
    }
    let before = snapshot(&ns, &target);
    let result = target.call(case.op.clone());
    let after = snapshot(&ns, &target);
    let err = match result {
        Ok(outcome) => panic!("{adapter:?} accepted {:?}: {outcome:?}", case.op),
        Err(e) => e,
    };
    let msg = err.render();
    assert_eq!(err.code, case.code, "{adapter:?}: {msg}");
    for name in &case.names {
        assert!(
            msg.contains(name.as_str()),
            "{adapter:?}: error does not name {name:?}: {msg}"
        );
    }
    // The rule set included: a setup's EnsureBridge put banger's base
    // tables in, and a refusal leaves them (or their absence) as they were.
    assert_eq!(before, after, "{adapter:?} changed something: {msg}");
    err
}

/// Both adapters refuse `case` with the same chain; the helper only adds
/// which operation it was.
fn refuse_both(case: &Case) -> (RpcError, RpcError) {
    let in_process = refuse(case, Adapter::InProcess);
    let helper = refuse(case, Adapter::Helper);
    assert_eq!(
        helper.messages.first().map(String::as_str),
        Some(format!("privileged operation {}", case.op.name()).as_str()),
        "helper: {}",
        helper.render()
    );
    assert_eq!(
        helper.messages[1..],
        in_process.messages[..],
        "the adapters disagree"
    );
    (in_process, helper)
}

/// Every case against both adapters; all failures are reported together.
fn check_all(cases: Vec<Case>) {
    require_root();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in &cases {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| refuse_both(case)));
        if let Err(panic) = run {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}: {why}", case.what));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn bad_interface_names_are_refused_by_both_adapters() {
    check_all(name_cases());
}

#[test]
fn bad_image_suites_are_refused_by_both_adapters() {
    check_all(suite_cases());
}

#[test]
fn bad_subnets_are_refused_by_both_adapters() {
    check_all(subnet_cases());
}

#[test]
fn bad_firewall_guests_are_refused_by_both_adapters() {
    check_all(firewall_cases());
}

#[test]
fn objects_banger_did_not_create_are_refused_by_both_adapters() {
    check_all(ownership_cases());
}

/// The wording users see, pinned for a few representative refusals.
#[test]
fn refusal_wording_is_pinned() {
    require_root();
    let pinned = [
        (
            case(
                "bridge without the banger prefix",
                &[],
                ensure_bridge("br0", [10, 77, 0, 1], 24),
                &[],
            ),
            "invalid interface name \"br0\": bridge names start with `banger` and not \
             `bangertap` (e.g. banger0)",
        ),
        (
            case(
                "subnet overlap",
                &[Setup::RoutedVeth],
                ensure_bridge(BRIDGE, [10, 77, 0, 1], 24),
                &[],
            ),
            "bridge subnet 10.77.0.0/24 overlaps route 10.77.0.128/25 on bvroute0; choose a \
             private subnet that no other interface routes",
        ),
        (
            case(
                "foreign banger0",
                &[Setup::ForeignBanger0],
                ensure_bridge(BRIDGE, [10, 77, 0, 1], 24),
                &[],
            ),
            "interface banger0 exists but banger did not create it; refusing to touch it",
        ),
        (
            case(
                "guest outside the subnet",
                &[Setup::BridgeAndTaps],
                firewall(BRIDGE, &[("bangertap0", [10, 78, 0, 2])]),
                &[],
            ),
            "firewall guest 10.78.0.2 on bangertap0: outside bridge banger0's subnet 10.77.0.0/24",
        ),
    ];
    for (case, wording) in pinned {
        let (in_process, helper) = refuse_both(&case);
        assert_eq!(in_process.render(), wording, "{}", case.what);
        assert_eq!(
            helper.render(),
            format!("privileged operation ensure_bridge: {wording}")
                .replace("ensure_bridge", case.op.name()),
            "{}",
            case.what
        );
    }
}

/// The foreign `banger0` is left exactly as it was: still a veth, down, no
/// address, no master (beyond the generic snapshot comparison).
#[test]
fn a_foreign_banger0_is_left_untouched() {
    require_root();
    for adapter in [Adapter::InProcess, Adapter::Helper] {
        let ns = NetNs::new();
        let dir = shared_tempdir();
        let target = Target::new(adapter, &ns, dir.path());
        setup(Setup::ForeignBanger0, &ns, &target);
        let err = target
            .call(ensure_bridge(BRIDGE, [10, 77, 0, 1], 24))
            .unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::BadRequest,
            "{adapter:?}: {}",
            err.render()
        );
        let view = links(&ns);
        let b = view
            .iter()
            .find(|l| l.name == BRIDGE)
            .expect("banger0 still there");
        assert_eq!(
            b,
            &LinkView {
                name: BRIDGE.into(),
                kind: "veth".into(),
                master: None,
                admin_up: false,
                addresses: vec![],
            },
            "{adapter:?}"
        );
        assert!(
            !std::fs::exists(target.journal()).unwrap(),
            "{adapter:?}: journal written"
        );
        // A teardown afterwards still leaves it alone: it was never journaled.
        let PrivOutcome::Teardown(report) =
            target.call(PrivOp::Net(NetOp::Teardown(Teardown))).unwrap()
        else {
            panic!("teardown outcome")
        };
        assert!(
            report.removed.is_empty() && report.errors.is_empty(),
            "{report:?}"
        );
        assert_eq!(links(&ns), view, "{adapter:?}: teardown touched it");
    }
}
