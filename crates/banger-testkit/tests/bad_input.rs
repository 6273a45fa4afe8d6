//! Bad input to the privileged seam is refused by both adapters, the same
//! way: the in-process executor (dev mode) and the helper client talking to a
//! real `bangerd-root` (system mode).
//!
//! Every case runs twice, once per adapter, each time in a network namespace
//! of its own (testkit [`NetNs`]): the in-process calls run on a thread that
//! has joined the namespace, the helper is started inside it. So even a
//! validation bug could create nothing outside the test namespace. Each run
//! asserts `bad_request`, a message naming the bad input, the same message
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
use banger_proto::net::{BridgeSpec, FirewallSpec, GuestRule, ResolverSpec, TapSpec};
use banger_proto::privops::{PrivOp, PrivOutcome};
use banger_proto::{ErrorCode, RpcError};
use banger_testkit::*;
use bangerd::privileged::{HelperClient, InProcess, PrivilegedOps};
use serde_json::Value;

// ---------------------------------------------------------------- plumbing

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adapter {
    InProcess,
    Helper,
}

/// One adapter, with everything it touches inside `ns`.
enum Target<'a> {
    InProcess {
        ns: &'a NetNs,
        ops: InProcess,
        journal: PathBuf,
    },
    Helper {
        client: HelperClient,
        journal: PathBuf,
        _helper: RootHelper,
    },
}

impl<'a> Target<'a> {
    fn new(adapter: Adapter, ns: &'a NetNs, dir: &Path) -> Target<'a> {
        match adapter {
            Adapter::InProcess => {
                let journal = dir.join("root-journal.json");
                Target::InProcess {
                    ns,
                    ops: InProcess::new(Executor::new(
                        Arc::new(RealHost::new()),
                        Arc::new(RealNet::new()),
                        journal.clone(),
                    )),
                    journal,
                }
            }
            Adapter::Helper => {
                // The test process (root) plays the owner daemon, so the
                // helper is installed with root as its owner. Root is not a
                // created user: ManuallyDrop keeps TestUser's drop (userdel)
                // from ever running, even if starting the helper panics.
                let me = ManuallyDrop::new(TestUser {
                    name: "root".into(),
                    uid: 0,
                    gid: 0,
                });
                let helper = RootHelper::start_in(ns, dir, &me);
                Target::Helper {
                    client: HelperClient::new(&helper.socket),
                    journal: dir.join("root-state").join("journal.json"),
                    _helper: helper,
                }
            }
        }
    }

    fn call(&self, op: PrivOp) -> Result<PrivOutcome, RpcError> {
        match self {
            // Only this thread joins the namespace; the call runs there.
            Target::InProcess { ns, ops, .. } => ns.run(|| ops.call(op)),
            Target::Helper { client, .. } => client.call(op),
        }
    }

    fn journal(&self) -> &Path {
        match self {
            Target::InProcess { journal, .. } | Target::Helper { journal, .. } => journal,
        }
    }
}

fn run_ok(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e} (needs iproute2 and nftables)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -n NS ARGS…`.
fn ip(ns: &NetNs, args: &[&str]) -> String {
    let mut c = Command::new("ip");
    c.args(["-n", &ns.name]).args(args);
    run_ok(c)
}

/// One link as the kernel reports it: what a refused op must leave alone.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LinkView {
    name: String,
    kind: String,
    master: Option<String>,
    admin_up: bool,
    addresses: Vec<String>,
}

fn links(ns: &NetNs) -> Vec<LinkView> {
    let v: Value = serde_json::from_str(&ip(ns, &["-j", "-d", "addr", "show"])).unwrap();
    let mut out: Vec<LinkView> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let mut addresses: Vec<String> = l["addr_info"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
                        .collect()
                })
                .unwrap_or_default();
            addresses.sort();
            LinkView {
                name: l["ifname"].as_str().unwrap().to_string(),
                kind: l["linkinfo"]["info_kind"]
                    .as_str()
                    .unwrap_or("device")
                    .to_string(),
                master: l["master"].as_str().map(str::to_string),
                admin_up: l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
                addresses,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `nft list tables` in the namespace, as `family name` lines.
fn nft_tables(ns: &NetNs) -> Vec<String> {
    let mut c = ns.exec("nft");
    c.args(["-j", "list", "tables"]);
    let v: Value = serde_json::from_str(&run_ok(c)).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("table"))
        .map(|t| format!("{} {}", t["family"], t["name"]))
        .collect()
}

/// Everything a refused op must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    links: Vec<LinkView>,
    nft: Vec<String>,
    journal: Option<String>,
}

fn snapshot(ns: &NetNs, target: &Target<'_>) -> Snapshot {
    Snapshot {
        links: links(ns),
        nft: nft_tables(ns),
        journal: std::fs::read_to_string(target.journal()).ok(),
    }
}

// ---------------------------------------------------------------- cases

const BRIDGE: &str = "banger0";
const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// What a case's namespace holds before the bad call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// A veth pair (`bvroute0`/`bvroute1`), up, with 10.77.0.1/24 on
    /// `bvroute0`: the route 10.77.0.0/24 belongs to another interface.
    RoutedVeth,
    /// A veth named `banger0` (peer `bvpeer0`), down, no address: a
    /// banger-named interface that banger did not create.
    ForeignBanger0,
    /// A tap named `bangertap5` created with `ip tuntap`, not by banger.
    ForeignTap,
    /// Through the adapter itself: bridge `banger0` 10.77.0.1/24 and taps
    /// `bangertap0`, `bangertap1`, so the journal lists them.
    BridgeAndTaps,
}

fn setup(setup: Setup, ns: &NetNs, target: &Target<'_>) {
    match setup {
        Setup::RoutedVeth => {
            ip(
                ns,
                &[
                    "link", "add", "bvroute0", "type", "veth", "peer", "name", "bvroute1",
                ],
            );
            ip(ns, &["addr", "add", "10.77.0.1/24", "dev", "bvroute0"]);
            ip(ns, &["link", "set", "bvroute0", "up"]);
            ip(ns, &["link", "set", "bvroute1", "up"]);
            let routes = ip(ns, &["-4", "route", "show"]);
            assert!(
                routes.contains("10.77.0.0/24 dev bvroute0"),
                "setup: no connected route: {routes}"
            );
        }
        Setup::ForeignBanger0 => {
            ip(
                ns,
                &[
                    "link", "add", BRIDGE, "type", "veth", "peer", "name", "bvpeer0",
                ],
            );
        }
        Setup::ForeignTap => {
            ip(ns, &["tuntap", "add", "dev", "bangertap5", "mode", "tap"]);
        }
        Setup::BridgeAndTaps => {
            target
                .call(ensure_bridge(BRIDGE, BRIDGE_IP.octets(), 24))
                .unwrap_or_else(|e| panic!("setup: ensure_bridge: {e}"));
            for tap in ["bangertap0", "bangertap1"] {
                target
                    .call(ensure_tap(tap, BRIDGE))
                    .unwrap_or_else(|e| panic!("setup: ensure_tap {tap}: {e}"));
            }
        }
    }
}

fn ensure_bridge(name: &str, a: [u8; 4], prefix_len: u8) -> PrivOp {
    PrivOp::EnsureBridge(BridgeSpec {
        name: name.into(),
        address: Ipv4Addr::from(a),
        prefix_len,
    })
}

fn ensure_tap(name: &str, bridge: &str) -> PrivOp {
    PrivOp::EnsureTap(TapSpec {
        name: name.into(),
        bridge: bridge.into(),
        owner_uid: 0,
    })
}

fn firewall(bridge: &str, guests: &[(&str, [u8; 4])]) -> PrivOp {
    PrivOp::SyncFirewall(FirewallSpec {
        bridge: bridge.into(),
        guests: guests
            .iter()
            .map(|(tap, ip)| GuestRule {
                tap: (*tap).into(),
                ip: Ipv4Addr::from(*ip),
                nat: true,
            })
            .collect(),
        allow_inter_vm: false,
    })
}

struct Case {
    what: &'static str,
    setup: &'static [Setup],
    op: PrivOp,
    /// Each must appear in the error: the bad input, named.
    names: Vec<String>,
}

fn case(what: &'static str, setup: &'static [Setup], op: PrivOp, names: &[&str]) -> Case {
    Case {
        what,
        setup,
        op,
        names: names.iter().map(|s| s.to_string()).collect(),
    }
}

/// A bad interface name, sent as the bridge of `EnsureBridge`; the error
/// quotes it (Rust debug quoting, so a tab reads `\t`).
fn bad_name(what: &'static str, name: &str, reason: &str) -> Case {
    Case {
        what,
        setup: &[],
        op: ensure_bridge(name, [10, 77, 0, 1], 24),
        names: vec![format!("invalid interface name {name:?}"), reason.into()],
    }
}

const LENGTH: &str = "must be 1 to 15 bytes long";
const DOTS: &str = "`.` and `..` are not interface names";
const CHARS: &str = "must not contain `/`, `:`, `%`, whitespace or NUL";

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
            PrivOp::DeleteTap {
                name: "bangertap\t0".into(),
            },
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
            PrivOp::ApplyResolver(ResolverSpec {
                bridge: "banger%0".into(),
                dns: BRIDGE_IP,
            }),
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
            PrivOp::DeleteTap {
                name: "eth0".into(),
            },
            &["\"eth0\"", "followed by digits"],
        ),
    ]
}

/// Bridge subnets: private, /16../29, a host address, no overlap.
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
            "subnet equal to another interface's route",
            &[RoutedVeth],
            ensure_bridge(BRIDGE, [10, 77, 0, 1], 24),
            &["10.77.0.0/24", "on bvroute0"],
        ),
        case(
            "subnet containing another interface's route",
            &[RoutedVeth],
            ensure_bridge(BRIDGE, [10, 77, 3, 1], 16),
            &["bridge subnet 10.77.0.0/16 overlaps route 10.77.0.0/24 on bvroute0"],
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
            "firewall bridge not in the journal",
            &[BridgeAndTaps],
            firewall("banger1", &[]),
            &["bridge banger1 was not created by banger"],
        ),
    ]
}

/// Objects banger did not create, or addresses that are not its bridge's.
fn ownership_cases() -> Vec<Case> {
    use Setup::*;
    vec![
        case(
            "delete_tap of a name not in the journal",
            &[BridgeAndTaps],
            PrivOp::DeleteTap {
                name: "bangertap5".into(),
            },
            &["tap bangertap5 was not created by banger"],
        ),
        case(
            "delete_tap of a foreign tap",
            &[ForeignTap],
            PrivOp::DeleteTap {
                name: "bangertap5".into(),
            },
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
            PrivOp::OpenDnsSockets {
                address: Ipv4Addr::new(10, 77, 0, 2),
            },
            &["10.77.0.2 is not the address of a bridge banger created"],
        ),
        case(
            "dns sockets with no bridge",
            &[],
            PrivOp::OpenDnsSockets {
                address: Ipv4Addr::LOCALHOST,
            },
            &["127.0.0.1 is not the address of a bridge banger created"],
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
    assert!(before.nft.is_empty(), "setup left nft tables: {before:?}");
    let result = target.call(case.op.clone());
    let after = snapshot(&ns, &target);
    let err = match result {
        Ok(outcome) => panic!("{adapter:?} accepted {:?}: {outcome:?}", case.op),
        Err(e) => e,
    };
    let msg = err.render();
    assert_eq!(err.code, ErrorCode::BadRequest, "{adapter:?}: {msg}");
    for name in &case.names {
        assert!(
            msg.contains(name.as_str()),
            "{adapter:?}: error does not name {name:?}: {msg}"
        );
    }
    assert_eq!(before, after, "{adapter:?} changed something: {msg}");
    assert!(
        after.nft.is_empty(),
        "{adapter:?}: nft tables {:?}",
        after.nft
    );
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
            "bridge subnet 10.77.0.0/24 overlaps route 10.77.0.0/24 on bvroute0; choose a \
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
        let PrivOutcome::Teardown(report) = target.call(PrivOp::Teardown).unwrap() else {
            panic!("teardown outcome")
        };
        assert!(
            report.removed.is_empty() && report.errors.is_empty(),
            "{report:?}"
        );
        assert_eq!(links(&ns), view, "{adapter:?}: teardown touched it");
    }
}
