//! Teardown: only what the journal lists, every step attempted, repeatable.

use super::*;
use banger_proto::privops::{NetOp, Teardown};

#[test]
fn teardown_removes_only_what_banger_made_and_is_repeatable() {
    let f = fixture(
        FakeNet::new()
            .with_link("bangerx0", LinkKind::Other("dummy".into()))
            .with_table("inet", "bangerx"),
    )
    .with_bridge_and_taps();
    f.run(PrivOp::Net(NetOp::SyncFirewall(firewall(vec![guest(
        "bangertap0",
        2,
        true,
    )]))))
    .unwrap();
    f.run(PrivOp::Net(NetOp::ApplyResolver(ResolverSpec {
        bridge: "banger0".into(),
        dns: Ipv4Addr::new(10, 0, 0, 1),
    })))
    .unwrap();
    f.net.clear_calls();
    let PrivOutcome::Teardown(report) = f.run(PrivOp::Net(NetOp::Teardown(Teardown))).unwrap()
    else {
        panic!()
    };
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        report.removed,
        [
            "resolver settings of banger0",
            "tap bangertap0",
            "tap bangertap1",
            "bridge banger0",
            "ip_forward (banger turned it on)",
            "nft table inet banger",
            "nft table bridge banger",
        ]
    );
    assert_eq!(
        f.net.mutating_calls(),
        [
            "resolver_revert(banger0)",
            "delete_link(bangertap0)",
            "delete_link(bangertap1)",
            "delete_link(banger0)",
            "set_ip_forward(false)",
            "apply_nft",
        ]
    );
    assert_eq!(
        f.net.state().nft_batches.last().unwrap(),
        "delete table inet banger\ndelete table bridge banger\n"
    );
    assert!(f.net.link_named("bangerx0").is_some());
    let tables: Vec<String> = f.net.state().tables.iter().map(|t| t.to_string()).collect();
    assert_eq!(tables, ["inet bangerx"]);
    let empty = serde_json::to_string_pretty(&journal::Journal::default()).unwrap() + "\n";
    assert_eq!(f.journal_text(), empty);

    f.net.clear_calls();
    let PrivOutcome::Teardown(again) = f.run(PrivOp::Net(NetOp::Teardown(Teardown))).unwrap()
    else {
        panic!()
    };
    assert!(
        again.removed.is_empty() && again.errors.is_empty(),
        "{again:?}"
    );
    assert!(f.net.mutating_calls().is_empty());
}

#[test]
fn teardown_attempts_every_step_and_keeps_what_failed() {
    let f = fixture(FakeNet::new()).with_bridge_and_taps();
    // A journaled tap replaced behind banger's back by something else.
    f.net.delete_link("bangertap1").unwrap();
    let mut state = f.net.state.lock().unwrap();
    state.failing.push("delete_link".into());
    drop(state);
    f.net.create_tap("bangertap1", 1).unwrap();
    let PrivOutcome::Teardown(report) = f.run(PrivOp::Net(NetOp::Teardown(Teardown))).unwrap()
    else {
        panic!()
    };
    // Every delete was attempted and failed, and the tap of another uid
    // under a journaled name was not banger's to delete; each is reported.
    assert_eq!(report.errors.len(), 3, "{:?}", report.errors);
    assert!(report.errors[0].starts_with("deleting bangertap0: "));
    assert!(
        report.errors[1].starts_with("tap bangertap1 is not the tap banger made"),
        "{:?}",
        report.errors
    );
    // Nothing went, and with links left the tables stay as the base rule
    // set (issue #13 F3: its `bangertap*` drops cover a tap off the bridge).
    assert!(report.removed.is_empty(), "{:?}", report.removed);
    let tables = || f.net.state.lock().unwrap().tables.len();
    assert_eq!(tables(), 2);
    let base = f
        .net
        .state
        .lock()
        .unwrap()
        .nft_batches
        .last()
        .cloned()
        .unwrap();
    assert!(base.contains("iifname \"bangertap*\" drop") && !base.contains("masquerade"));
    let journal = f.journal_text();
    assert!(journal.contains("bangertap0") && journal.contains("banger0"));

    f.net.state.lock().unwrap().failing.clear();
    let PrivOutcome::Teardown(report) = f.run(PrivOp::Net(NetOp::Teardown(Teardown))).unwrap()
    else {
        panic!()
    };
    // The other uid's tap stays, and so does its entry; the rest is gone.
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert_eq!(
        report.removed,
        [
            "tap bangertap0",
            "bridge banger0",
            "ip_forward (banger turned it on)"
        ]
    );
    assert_eq!(f.net.link_named("bangertap1").unwrap().tap_owner, Some(1));
    assert_eq!(tables(), 2, "the tables went while a tap remains");
}

#[test]
fn teardown_refuses_to_delete_a_journaled_name_that_changed_kind() {
    let f = fixture(FakeNet::new()).with_bridge_and_taps();
    f.net.delete_link("bangertap0").unwrap();
    let f = {
        f.net
            .state
            .lock()
            .unwrap()
            .links
            .push(banger_host::net::Link {
                index: 99,
                name: "bangertap0".into(),
                kind: LinkKind::Other("veth".into()),
                master: None,
                up: true,
                addresses: vec![],
                link_type: libc::ARPHRD_ETHER,
                tap_owner: None,
                tap_group: None,
            });
        f
    };
    let PrivOutcome::Teardown(report) = f.run(PrivOp::Net(NetOp::Teardown(Teardown))).unwrap()
    else {
        panic!()
    };
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].contains("bangertap0 is a veth, not the tap banger created"));
    assert!(f.net.link_named("bangertap0").is_some());
}

/// Issue #13 F3 and F6: a tap is banger's by the interface index journaled
/// at its creation. Its tun owner changed (the owner may, through an
/// attached descriptor) or cleared, it is still banger's: `EnsureTap`
/// hands it out and a teardown removes it. A tap re-made under the name
/// (another index) is refused by both, whatever its owner.
#[test]
fn a_tap_is_banger_s_by_its_journaled_index_not_its_tun_owner() {
    let f = fixture(FakeNet::new()).with_bridge_and_taps();
    let set_owner = |name: &str, owner: Option<u32>| {
        let mut state = f.net.state.lock().unwrap();
        let link = state.links.iter_mut().find(|l| l.name == name).unwrap();
        link.tap_owner = owner;
    };
    set_owner("bangertap0", None);
    f.run(PrivOp::Net(NetOp::EnsureTap(tap("bangertap0"))))
        .expect("banger's own tap, its tun owner cleared");
    set_owner("bangertap0", Some(1));
    // Re-made under the journaled name, for the journaled uid.
    f.net.delete_link("bangertap1").unwrap();
    f.net.create_tap("bangertap1", 4242).unwrap();
    let err = f
        .run(PrivOp::Net(NetOp::EnsureTap(tap("bangertap1"))))
        .unwrap_err();
    assert!(err.to_string().contains("interface index"), "{err}");

    let PrivOutcome::Teardown(report) = f.run(PrivOp::Net(NetOp::Teardown(Teardown))).unwrap()
    else {
        panic!()
    };
    assert!(
        report.removed.contains(&"tap bangertap0".to_string()),
        "{report:?}"
    );
    assert!(f.net.link_named("bangertap0").is_none());
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(f.net.link_named("bangertap1").is_some());
}
