//! Unit tests of the executor against the recording fakes: dispatch,
//! validation before any host call, journal discipline, idempotence and
//! teardown. The real-kernel versions are in `tests/netns.rs`.

mod journal_order;
mod net_config;
mod teardown;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use banger_host::net::fake::FakeNet;
use banger_host::net::{Ipv4Cidr, LinkKind};
use banger_host::probe::fake::FakeHost;
use banger_proto::ErrorCode;
use banger_proto::net::{
    BridgeOutcome, BridgeSpec, FirewallSpec, GuestRule, ResolverSpec, TapOutcome, TapSpec,
};
use banger_proto::privops::{
    DeleteTap, HostDevice, NetOp, OpenDnsSockets, ProbeDevice, ProbeJailScope, ProbeKvm,
    ProbeNftables, ProbeOp, QueryNetStatus,
};

use super::*;

struct Fixture {
    net: Arc<FakeNet>,
    exec: Executor,
    journal: PathBuf,
    _dir: tempfile::TempDir,
}

fn fixture(net: FakeNet) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.json");
    let net = Arc::new(net);
    let exec = Executor::new(Arc::new(FakeHost::lab_host()), net.clone(), journal.clone());
    Fixture {
        net,
        exec,
        journal,
        _dir: dir,
    }
}

impl Fixture {
    fn run(&self, op: PrivOp) -> Result<PrivOutcome, ExecError> {
        self.exec.execute(op).map(|e| e.outcome)
    }

    fn journal_text(&self) -> String {
        std::fs::read_to_string(&self.journal).unwrap_or_default()
    }

    /// banger0 10.0.0.1/24 with taps bangertap0 and bangertap1 (uid 4242).
    fn with_bridge_and_taps(self) -> Fixture {
        self.run(PrivOp::Net(NetOp::EnsureBridge(bridge())))
            .unwrap();
        for t in ["bangertap0", "bangertap1"] {
            self.run(PrivOp::Net(NetOp::EnsureTap(tap(t)))).unwrap();
        }
        self.net.clear_calls();
        self
    }
}

fn bridge() -> BridgeSpec {
    BridgeSpec {
        name: "banger0".into(),
        address: Ipv4Addr::new(10, 0, 0, 1),
        prefix_len: 24,
    }
}

fn tap(name: &str) -> TapSpec {
    TapSpec {
        name: name.into(),
        bridge: "banger0".into(),
        owner_uid: 4242,
    }
}

fn guest(tap: &str, last: u8, nat: bool) -> GuestRule {
    GuestRule {
        tap: tap.into(),
        ip: Ipv4Addr::new(10, 0, 0, last),
        nat,
    }
}

fn firewall(guests: Vec<GuestRule>) -> FirewallSpec {
    FirewallSpec {
        bridge: "banger0".into(),
        guests,
        allow_inter_vm: false,
    }
}

#[test]
fn dispatches_each_probe_to_the_matching_host_call() {
    let fake = Arc::new(FakeHost::lab_host());
    let dir = tempfile::tempdir().unwrap();
    let net = Arc::new(FakeNet::new());
    let exec = Executor::new(fake.clone(), net.clone(), dir.path().join("j.json"));
    let out = exec
        .execute(PrivOp::Probe(ProbeOp::ProbeDevice(ProbeDevice {
            device: HostDevice::MapperControl,
        })))
        .unwrap();
    assert!(out.fds.is_empty());
    assert!(
        matches!(out.outcome, PrivOutcome::Device(ref d) if d.device == HostDevice::MapperControl)
    );
    assert!(matches!(
        exec.execute(PrivOp::Probe(ProbeOp::ProbeKvm(ProbeKvm)))
            .unwrap()
            .outcome,
        PrivOutcome::Kvm(_)
    ));
    assert!(matches!(
        exec.execute(PrivOp::Probe(ProbeOp::ProbeNftables(ProbeNftables)))
            .unwrap()
            .outcome,
        PrivOutcome::Nftables(_)
    ));
    assert_eq!(
        exec.execute(PrivOp::Probe(ProbeOp::ProbeJailScope(ProbeJailScope)))
            .unwrap()
            .outcome,
        PrivOutcome::JailScope(banger_proto::privops::JailScopeProbe::Scoped)
    );
    assert_eq!(
        fake.calls(),
        vec![
            "probe_device(mapper_control)",
            "probe_kvm",
            "probe_nft",
            "probe_jail_scope"
        ]
    );
    assert!(net.calls().is_empty());
    assert!(
        !dir.path().join("j.json").exists(),
        "probes write no journal"
    );
}

/// Every bad input, each refused with `code` and a message containing
/// `needle`, before the host was asked anything.
#[test]
fn bad_input_is_refused_before_any_host_call() {
    let long = "banger0123456789".to_string();
    let name_cases: Vec<(PrivOp, &str)> = vec![
        (bridge_named(""), "1 to 15 bytes"),
        (bridge_named("."), "`.` and `..`"),
        (bridge_named(".."), "`.` and `..`"),
        (bridge_named(&long), "1 to 15 bytes"),
        (bridge_named("banger/0"), "may contain only"),
        (bridge_named("banger:0"), "may contain only"),
        (bridge_named("banger%0"), "may contain only"),
        (bridge_named("banger 0"), "may contain only"),
        (bridge_named("banger\0"), "may contain only"),
        (bridge_named("eth0"), "start with `banger`"),
        (bridge_named("bangertap0"), "not `bangertap`"),
        (
            PrivOp::Net(NetOp::EnsureTap(tap("tap0"))),
            "tap names are `bangertap` followed by digits",
        ),
        (
            PrivOp::Net(NetOp::EnsureTap(tap("bangertapx"))),
            "followed by digits",
        ),
        (
            PrivOp::Net(NetOp::EnsureTap(TapSpec {
                bridge: "br0".into(),
                ..tap("bangertap0")
            })),
            "\"br0\"",
        ),
        (
            PrivOp::Net(NetOp::DeleteTap(DeleteTap {
                name: "../../etc".into(),
            })),
            "may contain only",
        ),
        (
            PrivOp::Net(NetOp::ApplyResolver(ResolverSpec {
                bridge: "eth0".into(),
                dns: Ipv4Addr::new(10, 0, 0, 1),
            })),
            "\"eth0\"",
        ),
        (address(8, 8, 8, 1, 24), "not in a private range"),
        (address(172, 32, 0, 1, 24), "not in a private range"),
        (address(10, 0, 0, 1, 8), "prefix /8 is outside /16../29"),
        (address(10, 0, 0, 1, 30), "prefix /30"),
        (address(10, 0, 0, 0, 24), "network address"),
        (address(10, 0, 0, 255, 24), "broadcast address"),
        (
            PrivOp::Net(NetOp::SyncFirewall(firewall(vec![
                guest("bangertap0", 2, true),
                guest("bangertap0", 3, false),
            ]))),
            "tap bangertap0 twice",
        ),
        (
            PrivOp::Net(NetOp::SyncFirewall(firewall(vec![
                guest("bangertap0", 2, true),
                guest("bangertap1", 2, false),
            ]))),
            "address 10.0.0.2 twice",
        ),
        (
            PrivOp::Net(NetOp::SyncFirewall(firewall(vec![guest("vethx", 2, true)]))),
            "\"vethx\"",
        ),
    ];
    let f = fixture(FakeNet::new());
    for (op, needle) in name_cases {
        let what = format!("{op:?}");
        let err = f.run(op).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadRequest, "{what}: {err}");
        assert!(err.to_string().contains(needle), "{what}: {err}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }
    assert!(f.net.calls().is_empty(), "{:?}", f.net.calls());
    assert!(!f.journal.exists());
}

fn bridge_named(name: &str) -> PrivOp {
    PrivOp::Net(NetOp::EnsureBridge(BridgeSpec {
        name: name.into(),
        ..bridge()
    }))
}

fn address(a: u8, b: u8, c: u8, d: u8, prefix_len: u8) -> PrivOp {
    PrivOp::Net(NetOp::EnsureBridge(BridgeSpec {
        address: Ipv4Addr::new(a, b, c, d),
        prefix_len,
        ..bridge()
    }))
}

/// Refusals that depend on the journal, still before any host call.
#[test]
fn journal_checks_come_before_any_host_call() {
    let f = fixture(FakeNet::new()).with_bridge_and_taps();
    let journal_before = f.journal_text();
    let cases: Vec<(PrivOp, &str)> = vec![
        (
            PrivOp::Net(NetOp::SyncFirewall(firewall(vec![guest(
                "bangertap7",
                2,
                true,
            )]))),
            "tap bangertap7 was not created by banger",
        ),
        (
            PrivOp::Net(NetOp::SyncFirewall(FirewallSpec {
                bridge: "banger9".into(),
                ..firewall(vec![])
            })),
            "bridge banger9 was not created by banger",
        ),
        (
            PrivOp::Net(NetOp::SyncFirewall(firewall(vec![GuestRule {
                ip: Ipv4Addr::new(10, 0, 1, 2),
                ..guest("bangertap0", 0, true)
            }]))),
            "outside bridge banger0's subnet 10.0.0.0/24",
        ),
        (
            PrivOp::Net(NetOp::SyncFirewall(firewall(vec![guest(
                "bangertap0",
                0,
                true,
            )]))),
            "network address",
        ),
        (
            PrivOp::Net(NetOp::SyncFirewall(firewall(vec![guest(
                "bangertap0",
                255,
                true,
            )]))),
            "broadcast address",
        ),
        (
            PrivOp::Net(NetOp::SyncFirewall(firewall(vec![guest(
                "bangertap0",
                1,
                true,
            )]))),
            "bridge banger0's own address",
        ),
        (
            PrivOp::Net(NetOp::DeleteTap(DeleteTap {
                name: "bangertap9".into(),
            })),
            "tap bangertap9 was not created by banger",
        ),
        (
            PrivOp::Net(NetOp::OpenDnsSockets(OpenDnsSockets {
                address: Ipv4Addr::new(10, 0, 0, 2),
            })),
            "10.0.0.2 is not the address of a bridge banger created",
        ),
        (
            PrivOp::Net(NetOp::ApplyResolver(ResolverSpec {
                bridge: "banger0".into(),
                dns: Ipv4Addr::new(10, 0, 0, 9),
            })),
            "(bridge banger0 has 10.0.0.1)",
        ),
        (
            PrivOp::Net(NetOp::ApplyResolver(ResolverSpec {
                bridge: "banger7".into(),
                dns: Ipv4Addr::new(10, 0, 0, 1),
            })),
            "bridge banger7 was not created by banger",
        ),
        (
            PrivOp::Net(NetOp::EnsureTap(TapSpec {
                bridge: "banger7".into(),
                ..tap("bangertap5")
            })),
            "bridge banger7 was not created by banger",
        ),
    ];
    for (op, needle) in cases {
        let what = format!("{op:?}");
        let err = f.run(op).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadRequest, "{what}: {err}");
        assert!(err.to_string().contains(needle), "{what}: {err}");
    }
    assert!(f.net.calls().is_empty(), "{:?}", f.net.calls());
    assert_eq!(f.journal_text(), journal_before);
}

#[test]
fn ensure_bridge_creates_journals_first_and_is_idempotent() {
    let f = fixture(FakeNet::new());
    let out = f.run(PrivOp::Net(NetOp::EnsureBridge(bridge()))).unwrap();
    assert_eq!(
        out,
        PrivOutcome::Bridge(BridgeOutcome {
            name: "banger0".into(),
            created: true
        })
    );
    // The base firewall first, then the bridge, IPv6 and link-local MAC
    // learning off before it is up.
    assert_eq!(
        f.net.mutating_calls(),
        [
            "apply_nft",
            "create_bridge(banger0)",
            "disable_ipv6(banger0)",
            "set_no_linklocal_learn(banger0)",
            "set_mac(banger0, 02:ba:0a:00:00:01)",
            "add_address(banger0, 10.0.0.1/24)",
            "set_up(banger0)",
            "set_ip_forward(true)",
        ]
    );
    let link = f.net.link_named("banger0").unwrap();
    assert_eq!(link.kind, LinkKind::Bridge);
    assert!(link.up);
    assert!(f.journal_text().contains("\"banger0\""));

    f.net.clear_calls();
    let journal = f.journal_text();
    let out = f.run(PrivOp::Net(NetOp::EnsureBridge(bridge()))).unwrap();
    assert_eq!(
        out,
        PrivOutcome::Bridge(BridgeOutcome {
            name: "banger0".into(),
            created: false
        })
    );
    // Only IPv6 and link-local learning are switched off again (writes of
    // what is there); the MAC, already right, is not written (item 19: a
    // write flushes the bridge's neighbour table).
    assert_eq!(
        f.net.mutating_calls(),
        ["disable_ipv6(banger0)", "set_no_linklocal_learn(banger0)",],
        "{:?}",
        f.net.calls()
    );
    assert_eq!(f.journal_text(), journal);
}

/// Run `EnsureBridge` again; the MACs it wrote to `banger0`.
fn mac_writes_of_ensure_bridge(f: &Fixture) -> Vec<String> {
    f.net.clear_calls();
    f.run(PrivOp::Net(NetOp::EnsureBridge(bridge()))).unwrap();
    f.net
        .mutating_calls()
        .iter()
        .filter_map(|c| c.strip_prefix("set_mac(banger0, "))
        .map(|mac| mac.trim_end_matches(')').to_string())
        .collect()
}

#[test]
fn ensure_bridge_writes_the_bridges_mac_only_when_it_differs() {
    let f = fixture(FakeNet::new());
    f.run(PrivOp::Net(NetOp::EnsureBridge(bridge()))).unwrap();
    // Whatever changed it (it cannot be the owner: a bridge with its MAC
    // set no longer follows its ports'), the next call puts it back.
    f.net
        .state
        .lock()
        .unwrap()
        .macs
        .insert("banger0".into(), [0x02, 0, 0, 0, 0, 1]);
    assert_eq!(mac_writes_of_ensure_bridge(&f), ["02:ba:0a:00:00:01"]);
    assert!(mac_writes_of_ensure_bridge(&f).is_empty());
}

/// Review of item 19 (low): a bridge made before item 18 never had its
/// MAC set and follows its lowest port's; when a tap's holder gave that
/// port `02:ba:`+address, the MAC already matched and was never written,
/// so the bridge kept following its ports. A journal entry without
/// `mac_set` now gets the MAC written once, and recorded.
#[test]
fn a_bridge_from_before_item_18_gets_its_mac_pinned_even_when_it_matches() {
    let f = fixture(FakeNet::new());
    f.run(PrivOp::Net(NetOp::EnsureBridge(bridge()))).unwrap();
    // The entry as a banger from before item 18 left it: no `mac_set`.
    // The fake's MAC stays 02:ba:0a:00:00:01, as a port can make it.
    let mut journal: serde_json::Value = serde_json::from_str(&f.journal_text()).unwrap();
    for b in journal["bridges"].as_array_mut().unwrap() {
        b.as_object_mut().unwrap().remove("mac_set");
    }
    std::fs::write(&f.journal, journal.to_string()).unwrap();
    assert_eq!(mac_writes_of_ensure_bridge(&f), ["02:ba:0a:00:00:01"]);
    assert!(
        f.journal_text().contains("\"mac_set\": true"),
        "{}",
        f.journal_text()
    );
    // Once recorded, a matching MAC is left alone again (item 19).
    assert!(mac_writes_of_ensure_bridge(&f).is_empty());
}

#[test]
fn ensure_bridge_replaces_stray_addresses_of_its_own_bridge() {
    let f = fixture(FakeNet::new());
    f.run(PrivOp::Net(NetOp::EnsureBridge(bridge()))).unwrap();
    f.net
        .add_address("banger0", Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 7), 24))
        .unwrap();
    f.net.clear_calls();
    f.run(PrivOp::Net(NetOp::EnsureBridge(bridge()))).unwrap();
    assert_eq!(
        f.net.mutating_calls(),
        [
            "disable_ipv6(banger0)",
            "set_no_linklocal_learn(banger0)",
            "del_address(banger0, 10.0.0.7/24)"
        ]
    );
    assert_eq!(
        f.net.link_named("banger0").unwrap().addresses,
        [Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 1), 24)]
    );
}

#[test]
fn an_interface_banger_did_not_create_is_never_adopted() {
    let f = fixture(FakeNet::new().with_link("banger0", LinkKind::Bridge));
    let err = f
        .run(PrivOp::Net(NetOp::EnsureBridge(bridge())))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "interface banger0 exists but banger did not create it; refusing to touch it"
    );
    assert_eq!(err.code(), ErrorCode::BadRequest);
    assert!(f.net.mutating_calls().is_empty());
    assert!(!f.journal.exists());

    // Same for a tap.
    let f = fixture(FakeNet::new().with_link("bangertap3", LinkKind::Tap));
    f.run(PrivOp::Net(NetOp::EnsureBridge(bridge()))).unwrap();
    f.net.clear_calls();
    let err = f
        .run(PrivOp::Net(NetOp::EnsureTap(tap("bangertap3"))))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("bangertap3 exists but banger did not create it")
    );
    assert!(f.net.mutating_calls().is_empty());
}

#[test]
fn a_subnet_overlapping_another_interface_is_refused() {
    let f = fixture(
        FakeNet::new()
            .with_link("dummy0", LinkKind::Other("dummy".into()))
            .with_route(Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 16), "dummy0"),
    );
    let err = f
        .run(PrivOp::Net(NetOp::EnsureBridge(bridge())))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadRequest);
    assert_eq!(
        err.to_string(),
        "bridge subnet 10.0.0.0/24 overlaps route 10.0.0.0/16 on dummy0; choose a private subnet that no other interface routes"
    );
    assert!(f.net.mutating_calls().is_empty());
    assert!(!f.journal.exists());
}

#[test]
fn a_failed_creation_leaves_no_journal_entry() {
    let f = fixture(FakeNet::new().failing("create_bridge"));
    let err = f
        .run(PrivOp::Net(NetOp::EnsureBridge(bridge())))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);
    assert!(
        err.render().starts_with("creating bridge banger0: "),
        "{}",
        err.render()
    );
    assert!(
        !f.journal_text().contains("banger0"),
        "{}",
        f.journal_text()
    );

    // A failure after creation rolls the new interface back.
    let f = fixture(FakeNet::new().failing("set_up"));
    f.run(PrivOp::Net(NetOp::EnsureBridge(bridge())))
        .unwrap_err();
    assert!(f.net.link_named("banger0").is_none());
    assert!(!f.journal_text().contains("banger0"));
}

/// Review of the bridge index (1831d88): when the journaled bridge was
/// gone (a reboot) and making it again failed — at the creation (EEXIST:
/// someone took the name in between) or while configuring it, rolled back
/// — the entry was left without an index, so a same-named bridge of
/// someone else passed the identity check at the next `EnsureBridge` and
/// was configured as banger's. The entry now keeps an index that matches
/// nothing but banger's own bridge: the old one, or the one just made.
#[test]
fn a_failed_re_creation_leaves_the_bridge_entry_with_an_index() {
    for failing in ["create_bridge", "set_up"] {
        let f = fixture(FakeNet::new());
        f.run(PrivOp::Net(NetOp::EnsureBridge(bridge()))).unwrap();
        f.net.delete_link("banger0").unwrap();
        f.net.state.lock().unwrap().failing.push(failing.into());
        f.run(PrivOp::Net(NetOp::EnsureBridge(bridge())))
            .unwrap_err();
        assert!(f.net.link_named("banger0").is_none(), "{failing}");
        f.net.state.lock().unwrap().failing.clear();

        // Someone else's bridge takes the name.
        f.net.create_bridge("banger0").unwrap();
        f.net.clear_calls();
        let err = f
            .run(PrivOp::Net(NetOp::EnsureBridge(bridge())))
            .unwrap_err();
        assert!(
            matches!(err, ExecError::ReplacedBridge { .. }),
            "{failing}: {}",
            err.render()
        );
        assert_eq!(f.net.mutating_calls(), Vec::<String>::new(), "{failing}");
    }
}

#[test]
fn ensure_tap_creates_attaches_and_is_idempotent() {
    let f = fixture(FakeNet::new());
    f.run(PrivOp::Net(NetOp::EnsureBridge(bridge()))).unwrap();
    f.net.clear_calls();
    let out = f
        .run(PrivOp::Net(NetOp::EnsureTap(tap("bangertap0"))))
        .unwrap();
    assert_eq!(
        out,
        PrivOutcome::Tap(TapOutcome {
            name: "bangertap0".into(),
            created: true
        })
    );
    assert_eq!(
        f.net.mutating_calls(),
        [
            // Root's (Firecracker jail design, part 2 step 2), whoever asks.
            "create_tap(bangertap0, uid 0)",
            "disable_ipv6(bangertap0)",
            "set_master(bangertap0, banger0)",
            "set_up(bangertap0)",
        ]
    );
    assert!(f.journal_text().contains("\"owner_uid\": 0"));
    f.net.clear_calls();
    let out = f
        .run(PrivOp::Net(NetOp::EnsureTap(tap("bangertap0"))))
        .unwrap();
    assert!(matches!(
        out,
        PrivOutcome::Tap(TapOutcome { created: false, .. })
    ));
    assert_eq!(f.net.mutating_calls(), ["disable_ipv6(bangertap0)"]);

    // Handed to the requester's uid (a launch in flight): still accepted.
    let index = f.net.link_named("bangertap0").unwrap().index;
    f.net.hand_tap("bangertap0", index, 4242, 4242).unwrap();
    f.run(PrivOp::Net(NetOp::EnsureTap(tap("bangertap0"))))
        .unwrap();
    // Owned by a uid that is neither root, the requester's nor a slot's:
    // refused rather than silently changed.
    f.net.hand_tap("bangertap0", index, 1000, 1000).unwrap();
    let err = f
        .run(PrivOp::Net(NetOp::EnsureTap(tap("bangertap0"))))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidState);
    assert!(
        err.to_string()
            .contains("owned by uid 1000, not root, uid 4242"),
        "{err}"
    );
}

/// Firecracker jail design, part 2 step 2: with VMs configured, an
/// existing tap handed to a VM slot's uid (a jailed VMM's launch) is
/// accepted; one owned by the tool slot (slot 0) or a uid past the range
/// is not.
#[test]
fn ensure_tap_accepts_a_tap_handed_to_a_vm_slot_only() {
    let f = fixture(FakeNet::new());
    let exec = f
        .exec
        .clone()
        .with_vms(crate::VmHostConfig::for_tests(f._dir.path()));
    let run = |op| exec.execute(op).map(|e| e.outcome);
    run(PrivOp::Net(NetOp::EnsureBridge(bridge()))).unwrap();
    run(PrivOp::Net(NetOp::EnsureTap(tap("bangertap0")))).unwrap();
    let index = f.net.link_named("bangertap0").unwrap().index;
    for uid in [0, 4242, 2_000_001, 2_000_003] {
        f.net.hand_tap("bangertap0", index, uid, uid).unwrap();
        run(PrivOp::Net(NetOp::EnsureTap(tap("bangertap0"))))
            .unwrap_or_else(|e| panic!("uid {uid}: {}", e.render()));
    }
    for uid in [2_000_000, 2_000_004] {
        f.net.hand_tap("bangertap0", index, uid, uid).unwrap();
        let err = run(PrivOp::Net(NetOp::EnsureTap(tap("bangertap0")))).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidState, "uid {uid}");
    }
}

#[test]
fn ensure_tap_needs_the_bridge_to_exist() {
    let f = fixture(FakeNet::new());
    f.run(PrivOp::Net(NetOp::EnsureBridge(bridge()))).unwrap();
    f.net.delete_link("banger0").unwrap();
    f.net.clear_calls();
    let err = f
        .run(PrivOp::Net(NetOp::EnsureTap(tap("bangertap0"))))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidState);
    assert!(f.net.mutating_calls().is_empty());
}

#[test]
fn delete_tap_removes_journaled_taps_and_tolerates_absence() {
    let f = fixture(FakeNet::new()).with_bridge_and_taps();
    f.run(PrivOp::Net(NetOp::DeleteTap(DeleteTap {
        name: "bangertap0".into(),
    })))
    .unwrap();
    assert_eq!(f.net.mutating_calls(), ["delete_link(bangertap0)"]);
    assert!(!f.journal_text().contains("bangertap0"));
    // Removed behind banger's back: absent is success, the entry goes.
    f.net.delete_link("bangertap1").unwrap();
    f.run(PrivOp::Net(NetOp::DeleteTap(DeleteTap {
        name: "bangertap1".into(),
    })))
    .unwrap();
    assert!(!f.journal_text().contains("bangertap1"));
}

/// Review of the link identity checks: a link was checked by its
/// interface index and then deleted, or made a tap's master, by name — a
/// same-named link made in between (another agent's) was the one deleted
/// or attached to. Requests now name the checked index: the replacement
/// is left alone.
#[test]
fn a_link_replaced_after_its_check_is_not_the_one_deleted_or_attached_to() {
    let f = fixture(FakeNet::new()).with_bridge_and_taps();
    let replaced = |name: &str| {
        f.net
            .state
            .lock()
            .unwrap()
            .replaced_before_request
            .push(name.into());
    };
    replaced("bangertap0");
    let _ = f.run(PrivOp::Net(NetOp::DeleteTap(DeleteTap {
        name: "bangertap0".into(),
    })));
    assert!(
        f.net.link_named("bangertap0").is_some(),
        "the replacing tap was deleted: {:?}",
        f.net.mutating_calls()
    );

    replaced("banger0");
    let other = f.net.link_named("banger0").unwrap();
    let _ = f.run(PrivOp::Net(NetOp::EnsureTap(tap("bangertap2"))));
    let on = f.net.link_named("bangertap2").and_then(|l| l.master);
    let replacement = f.net.link_named("banger0").unwrap();
    assert_ne!(replacement.index, other.index);
    assert!(
        on.is_none(),
        "the tap went on the replacing bridge: {:?}",
        f.net.mutating_calls()
    );
}

#[test]
fn sync_firewall_applies_one_batch_and_journals_it() {
    let f = fixture(FakeNet::new().with_table("inet", "bangerx")).with_bridge_and_taps();
    let spec = firewall(vec![
        guest("bangertap0", 2, true),
        guest("bangertap1", 3, false),
    ]);
    assert_eq!(
        f.run(PrivOp::Net(NetOp::SyncFirewall(spec.clone())))
            .unwrap(),
        PrivOutcome::Done
    );
    assert_eq!(f.net.mutating_calls(), ["apply_nft"]);
    let state = f.net.state();
    // The base rule set of EnsureBridge, then this one.
    assert_eq!(state.nft_batches.len(), 2);
    assert!(!state.nft_batches[0].contains("masquerade"));
    assert!(state.nft_batches[1].contains("ip saddr { 10.0.0.2 } masquerade"));
    assert!(!state.nft_batches[1].contains("10.0.0.3 } masquerade"));
    let mut tables: Vec<String> = state.tables.iter().map(|t| t.to_string()).collect();
    tables.sort();
    assert_eq!(tables, ["bridge banger", "inet banger", "inet bangerx"]);
    assert!(f.journal_text().contains("\"firewall\": true"));

    // A failing nft leaves the journal as it was (the base rule set's).
    let f = fixture(FakeNet::new()).with_bridge_and_taps();
    f.net.state.lock().unwrap().failing.push("apply_nft".into());
    let before = f.journal_text();
    let err = f.run(PrivOp::Net(NetOp::SyncFirewall(spec))).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);
    assert_eq!(f.journal_text(), before);
}

#[test]
fn net_status_reports_journal_and_kernel() {
    let f = fixture(FakeNet::new()).with_bridge_and_taps();
    f.run(PrivOp::Net(NetOp::SyncFirewall(firewall(vec![guest(
        "bangertap0",
        2,
        true,
    )]))))
    .unwrap();
    f.net.delete_link("bangertap1").unwrap();
    f.net.clear_calls();
    let PrivOutcome::NetStatus(s) = f
        .run(PrivOp::Net(NetOp::NetStatus(QueryNetStatus)))
        .unwrap()
    else {
        panic!()
    };
    assert!(f.net.mutating_calls().is_empty());
    assert_eq!(s.bridges.len(), 1);
    assert!(s.bridges[0].present && s.bridges[0].up);
    assert_eq!(s.bridges[0].addresses, ["10.0.0.1/24"]);
    assert_eq!(s.taps.len(), 2);
    assert_eq!(s.taps[0].master.as_deref(), Some("banger0"));
    assert!(!s.taps[1].present);
    assert!(s.firewall);
    assert_eq!(s.nat_guests, [Ipv4Addr::new(10, 0, 0, 2)]);
    assert!(s.ip_forward);
}
