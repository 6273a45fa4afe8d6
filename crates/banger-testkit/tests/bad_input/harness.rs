//! Shared harness of the bad-input tests: adapters, setup steps, snapshots
//! of the namespace, and the case type.

use super::*;
use banger_proto::privops::NetOp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Adapter {
    InProcess,
    Helper,
}

/// One adapter, with everything it touches inside `ns`.
pub(crate) enum Target<'a> {
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
    pub(crate) fn new(adapter: Adapter, ns: &'a NetNs, dir: &Path) -> Target<'a> {
        match adapter {
            Adapter::InProcess => {
                let journal = dir.join("root-journal.json");
                Target::InProcess {
                    ns,
                    ops: InProcess::new(
                        Executor::new(
                            Arc::new(RealHost::new()),
                            Arc::new(RealNet::new()),
                            journal.clone(),
                        )
                        .with_bridge(installed().bridge_spec())
                        .unwrap(),
                    ),
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
                let helper = RootHelper::start_in_with(ns, dir, &me, installed());
                Target::Helper {
                    client: HelperClient::new(&helper.socket),
                    journal: dir.join("root-state").join("journal.json"),
                    _helper: helper,
                }
            }
        }
    }

    pub(crate) fn call(&self, op: PrivOp) -> Result<PrivOutcome, RpcError> {
        match self {
            // Only this thread joins the namespace; the call runs there.
            Target::InProcess { ns, ops, .. } => ns.run(|| ops.call(op)),
            Target::Helper { client, .. } => client.call(op),
        }
    }

    pub(crate) fn journal(&self) -> &Path {
        match self {
            Target::InProcess { journal, .. } | Target::Helper { journal, .. } => journal,
        }
    }
}

/// `ip -n NS ARGS…`.
pub(crate) fn ip(ns: &NetNs, args: &[&str]) -> String {
    let mut c = Command::new("ip");
    c.args(["-n", &ns.name]).args(args);
    run_ok(c)
}

/// One link as the kernel reports it: what a refused op must leave alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkView {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) master: Option<String>,
    pub(crate) admin_up: bool,
    pub(crate) addresses: Vec<String>,
}

pub(crate) fn links(ns: &NetNs) -> Vec<LinkView> {
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
/// `nft list ruleset` in `ns`, by line: tables and their rules (EnsureBridge
/// puts banger's base rule set in, so a setup may hold them).
pub(crate) fn nft_ruleset(ns: &NetNs) -> Vec<String> {
    let mut c = ns.exec("nft");
    c.args(["list", "ruleset"]);
    run_ok(c).lines().map(str::to_string).collect()
}

/// Everything a refused op must leave as it was.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) links: Vec<LinkView>,
    pub(crate) nft: Vec<String>,
    pub(crate) journal: Option<String>,
}

pub(crate) fn snapshot(ns: &NetNs, target: &Target<'_>) -> Snapshot {
    Snapshot {
        links: links(ns),
        nft: nft_ruleset(ns),
        journal: std::fs::read_to_string(target.journal()).ok(),
    }
}

// ---------------------------------------------------------------- cases

pub(crate) const BRIDGE: &str = "banger0";
pub(crate) const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// The bridge both adapters are given, as an install records it: `BRIDGE`
/// with `BRIDGE_IP`/24.
pub(crate) fn installed() -> InstallNetwork {
    InstallNetwork {
        bridge: BRIDGE.into(),
        subnet: "10.77.0.0/24".parse().unwrap(),
    }
}

/// What a case's namespace holds before the bad call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setup {
    /// A veth pair (`bvroute0`/`bvroute1`), up, with 10.77.0.129/25 on
    /// `bvroute0`: the route 10.77.0.128/25 belongs to another interface.
    RoutedVeth,
    /// A veth pair (`bvgw0`/`bvgw1`), up, and a default route through the
    /// on-link gateway 10.77.0.254 on `bvgw0`: no route but the default one
    /// covers the gateway.
    OnlinkGateway,
    /// A veth pair (`bvaddr0`/`bvaddr1`), up, with the host address
    /// 10.77.0.9/32 on `bvaddr0` (no route of its own).
    HostAddress,
    /// A veth named `banger0` (peer `bvpeer0`), down, no address: a
    /// banger-named interface that banger did not create.
    ForeignBanger0,
    /// A tap named `bangertap5` created with `ip tuntap`, not by banger.
    ForeignTap,
    /// Through the adapter itself: bridge `banger0` 10.77.0.1/24 and taps
    /// `bangertap0`, `bangertap1`, so the journal lists them.
    BridgeAndTaps,
}

pub(crate) fn setup(setup: Setup, ns: &NetNs, target: &Target<'_>) {
    match setup {
        Setup::RoutedVeth => {
            ip(
                ns,
                &[
                    "link", "add", "bvroute0", "type", "veth", "peer", "name", "bvroute1",
                ],
            );
            ip(ns, &["addr", "add", "10.77.0.129/25", "dev", "bvroute0"]);
            ip(ns, &["link", "set", "bvroute0", "up"]);
            ip(ns, &["link", "set", "bvroute1", "up"]);
            let routes = ip(ns, &["-4", "route", "show"]);
            assert!(
                routes.contains("10.77.0.128/25 dev bvroute0"),
                "setup: no connected route: {routes}"
            );
        }
        Setup::OnlinkGateway => {
            veth_up(ns, "bvgw0", "bvgw1");
            ip(
                ns,
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    "10.77.0.254",
                    "dev",
                    "bvgw0",
                    "onlink",
                ],
            );
        }
        Setup::HostAddress => {
            veth_up(ns, "bvaddr0", "bvaddr1");
            ip(ns, &["addr", "add", "10.77.0.9/32", "dev", "bvaddr0"]);
            let routes = ip(ns, &["-4", "route", "show"]);
            assert!(!routes.contains("10.77."), "setup: {routes}");
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

/// A veth pair `a`/`b` in `ns`, both ends up.
fn veth_up(ns: &NetNs, a: &str, b: &str) {
    ip(ns, &["link", "add", a, "type", "veth", "peer", "name", b]);
    ip(ns, &["link", "set", a, "up"]);
    ip(ns, &["link", "set", b, "up"]);
}

pub(crate) fn ensure_bridge(name: &str, a: [u8; 4], prefix_len: u8) -> PrivOp {
    PrivOp::Net(NetOp::EnsureBridge(BridgeSpec {
        name: name.into(),
        address: Ipv4Addr::from(a),
        prefix_len,
    }))
}

pub(crate) fn ensure_tap(name: &str, bridge: &str) -> PrivOp {
    PrivOp::Net(NetOp::EnsureTap(TapSpec {
        name: name.into(),
        bridge: bridge.into(),
        owner_uid: 0,
    }))
}

pub(crate) fn firewall(bridge: &str, guests: &[(&str, [u8; 4])]) -> PrivOp {
    PrivOp::Net(NetOp::SyncFirewall(FirewallSpec {
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
    }))
}

pub(crate) struct Case {
    pub(crate) what: &'static str,
    pub(crate) setup: &'static [Setup],
    pub(crate) op: PrivOp,
    /// Each must appear in the error: the bad input, named.
    pub(crate) names: Vec<String>,
    /// The refusal's class: `bad_request` unless the request is well formed
    /// but not the owner's to make (`permission_denied`).
    pub(crate) code: ErrorCode,
}

impl Case {
    /// A refusal of something the owner may not ask for, rather than of
    /// bad input.
    pub(crate) fn denied(self) -> Case {
        Case {
            code: ErrorCode::PermissionDenied,
            ..self
        }
    }
}

pub(crate) fn case(
    what: &'static str,
    setup: &'static [Setup],
    op: PrivOp,
    names: &[&str],
) -> Case {
    Case {
        what,
        setup,
        op,
        names: names.iter().map(|s| s.to_string()).collect(),
        code: ErrorCode::BadRequest,
    }
}

/// A bad interface name, sent as the bridge of `EnsureBridge`; the error
/// quotes it (Rust debug quoting, so a tab reads `\t`).
pub(crate) fn bad_name(what: &'static str, name: &str, reason: &str) -> Case {
    Case {
        what,
        setup: &[],
        op: ensure_bridge(name, [10, 77, 0, 1], 24),
        names: vec![format!("invalid interface name {name:?}"), reason.into()],
        code: ErrorCode::BadRequest,
    }
}

pub(crate) const LENGTH: &str = "must be 1 to 15 bytes long";
pub(crate) const DOTS: &str = "`.` and `..` are not interface names";
pub(crate) const CHARS: &str = "may contain only ASCII letters, digits, `-`, `_` and `.`";
