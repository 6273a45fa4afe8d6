//! The resolver settings of the bridge (`ApplyResolver`: revert on failure,
//! journal entries) and the installed bridge (only it is set up and served,
//! its subnet checked against the host's resolvers, bridges of an earlier
//! choice removed).

use super::*;
use banger_proto::privops::{NetOp, OpenDnsSockets};

/// Item 20: a failed `ApplyResolver` left what it had set (the `~vm`
/// domain; on an older banger's link, the default route it never turned
/// off). Now the link's settings are reverted, the link is not journaled,
/// and the error carries resolvectl's own words — for a new link and for
/// one an earlier call had set up.
#[test]
fn a_failed_apply_resolver_reverts_the_link_and_journals_nothing() {
    const WORDS: &str = "Unknown command verb 'default-route'.";
    let spec = ResolverSpec {
        bridge: "banger0".into(),
        dns: Ipv4Addr::new(10, 0, 0, 1),
    };
    let check = |f: &Fixture| {
        let err = f
            .run(PrivOp::Net(NetOp::ApplyResolver(spec.clone())))
            .unwrap_err();
        assert!(err.render().contains(WORDS), "{}", err.render());
        assert_eq!(
            f.net.mutating_calls(),
            [
                "resolver_domain(banger0, ~vm)",
                "resolver_no_default_route(banger0)",
                "resolver_revert(banger0)"
            ]
        );
        assert!(
            f.journal_text().contains("\"resolver_links\": []"),
            "{}",
            f.journal_text()
        );
    };
    let fails = FakeNet::new().failing_tool("resolver_no_default_route", "resolvectl", WORDS);
    check(&fixture(fails).with_bridge_and_taps());

    let f = fixture(FakeNet::new()).with_bridge_and_taps();
    f.run(PrivOp::Net(NetOp::ApplyResolver(spec.clone())))
        .unwrap();
    f.net.clear_calls();
    f.net.state.lock().unwrap().failing_tools.push((
        "resolver_no_default_route".into(),
        "resolvectl",
        WORDS.into(),
    ));
    check(&f);

    // When the revert fails too, the error says so and the link stays
    // journaled, for teardown to revert again.
    let f = fixture(
        FakeNet::new()
            .failing_tool("resolver_no_default_route", "resolvectl", WORDS)
            .failing_tool("resolver_revert", "resolvectl", "Link banger0 busy."),
    )
    .with_bridge_and_taps();
    let err = f
        .run(PrivOp::Net(NetOp::ApplyResolver(spec)))
        .unwrap_err()
        .render();
    assert!(
        err.contains(WORDS) && err.contains("Link banger0 busy."),
        "{err}"
    );
    assert_resolver_journaled(&f);
}

/// The journal lists banger0 among the links whose resolver settings
/// banger changed.
fn assert_resolver_journaled(f: &Fixture) {
    assert!(
        f.journal_text()
            .contains("\"resolver_links\": [\n    \"banger0\""),
        "{}",
        f.journal_text()
    );
}

/// Review of item 20 (info): resolvectl gone between two verbs (the first
/// set the `~vm` domain) is no "nothing was set": the link is reverted
/// like after any other failure, and since the revert cannot run either,
/// the link stays journaled for teardown. Before, the "resolvectl
/// missing" return skipped the revert and dropped the entry.
#[test]
fn resolvectl_gone_after_the_first_verb_still_reverts_and_keeps_the_entry() {
    let spec = ResolverSpec {
        bridge: "banger0".into(),
        dns: Ipv4Addr::new(10, 0, 0, 1),
    };
    let f = fixture(FakeNet::new().with_resolvectl_for(1)).with_bridge_and_taps();
    let err = f
        .run(PrivOp::Net(NetOp::ApplyResolver(spec)))
        .unwrap_err()
        .render();
    assert_eq!(
        f.net.mutating_calls(),
        [
            "resolver_domain(banger0, ~vm)",
            "resolver_no_default_route(banger0)",
            "resolver_revert(banger0)"
        ]
    );
    assert!(err.contains("reverting banger0 failed too"), "{err}");
    assert_resolver_journaled(&f);
}

#[test]
fn apply_resolver_routes_vm_and_reports_a_missing_resolvectl() {
    let f = fixture(FakeNet::new()).with_bridge_and_taps();
    let spec = ResolverSpec {
        bridge: "banger0".into(),
        dns: Ipv4Addr::new(10, 0, 0, 1),
    };
    f.run(PrivOp::Net(NetOp::ApplyResolver(spec.clone())))
        .unwrap();
    assert_eq!(
        f.net.mutating_calls(),
        // The routing-only domain before the server: never a moment in
        // which the bridge is a default-route resolver.
        [
            "resolver_domain(banger0, ~vm)",
            "resolver_no_default_route(banger0)",
            "resolver_dns(banger0, 10.0.0.1)"
        ]
    );
    assert!(
        f.journal_text()
            .contains("\"resolver_links\": [\n    \"banger0\"")
    );

    let f = fixture(FakeNet::new().without_resolvectl()).with_bridge_and_taps();
    let err = f.run(PrivOp::Net(NetOp::ApplyResolver(spec))).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert!(
        err.to_string().contains("resolvectl is not installed"),
        "{err}"
    );
    assert!(f.journal_text().contains("\"resolver_links\": []"));
}

/// Issue #13 finding 5: an executor given its bridge sets up and serves that
/// one only, refusing before any host call; and it refuses even that one
/// when the subnet holds something of the host's, before the journal or the
/// host changes.
#[test]
fn only_the_installed_bridge_is_set_up_and_served() {
    let mut f = fixture(FakeNet::new());
    f.exec = f.exec.with_bridge(bridge()).unwrap();
    let other = BridgeSpec {
        address: Ipv4Addr::new(10, 0, 1, 1),
        ..bridge()
    };
    let denied = |f: &Fixture, op: PrivOp, requested: &str| {
        let err = f.run(op).unwrap_err();
        assert_eq!(err.code(), ErrorCode::PermissionDenied, "{err}");
        assert!(
            err.to_string().starts_with(&format!(
                "{requested} is not this install's bridge, banger0 10.0.0.1/24"
            )),
            "{err}"
        );
        assert!(f.net.calls().is_empty(), "{:?}", f.net.calls());
    };
    denied(
        &f,
        PrivOp::Net(NetOp::EnsureBridge(other)),
        "bridge banger0 10.0.1.1/24",
    );
    denied(
        &f,
        PrivOp::Net(NetOp::EnsureTap(TapSpec {
            bridge: "banger1".into(),
            ..tap("bangertap0")
        })),
        "bridge banger1",
    );
    denied(
        &f,
        PrivOp::Net(NetOp::SyncFirewall(FirewallSpec {
            bridge: "banger1".into(),
            ..firewall(vec![])
        })),
        "bridge banger1",
    );
    denied(
        &f,
        PrivOp::Net(NetOp::OpenDnsSockets(OpenDnsSockets {
            address: Ipv4Addr::new(10, 0, 1, 1),
        })),
        "address 10.0.1.1",
    );
    assert!(!f.journal.exists());
    f.run(PrivOp::Net(NetOp::EnsureBridge(bridge()))).unwrap();

    // The executor's own bridge must be a valid one.
    let bad = Executor::new(
        Arc::new(FakeHost::lab_host()),
        Arc::new(FakeNet::new()),
        f.journal.clone(),
    )
    .with_bridge(BridgeSpec {
        address: Ipv4Addr::new(8, 8, 8, 1),
        ..bridge()
    });
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("not in a private range")
    );
}

#[test]
fn a_subnet_holding_the_hosts_resolver_is_refused_before_anything_changes() {
    let f = fixture(FakeNet::new().with_resolvers(&[Ipv4Addr::new(10, 0, 0, 53)]));
    let err = f
        .run(PrivOp::Net(NetOp::EnsureBridge(bridge())))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadRequest);
    assert!(
        err.to_string()
            .starts_with("bridge subnet 10.0.0.0/24 holds resolver 10.0.0.53"),
        "{err}"
    );
    assert!(f.net.mutating_calls().is_empty());
    assert!(!f.journal.exists());
}

/// A bridge of an earlier choice (here journaled by an executor without an
/// installed bridge) is removed, taps first, when the installed one is set
/// up: its route would otherwise keep capturing its subnet.
#[test]
fn setting_up_the_installed_bridge_removes_bridges_of_an_earlier_choice() {
    let f = fixture(FakeNet::new()).with_bridge_and_taps();
    let installed = BridgeSpec {
        name: "banger1".into(),
        address: Ipv4Addr::new(10, 1, 0, 1),
        prefix_len: 24,
    };
    let exec = Executor::new(
        Arc::new(FakeHost::lab_host()),
        f.net.clone(),
        f.journal.clone(),
    )
    .with_bridge(installed.clone())
    .unwrap();
    exec.execute(PrivOp::Net(NetOp::EnsureBridge(installed)))
        .unwrap();
    let calls = f.net.mutating_calls();
    assert_eq!(
        calls[..4],
        [
            "delete_link(bangertap0)",
            "delete_link(bangertap1)",
            "delete_link(banger0)",
            "apply_nft"
        ],
        "{calls:?}"
    );
    assert!(f.net.link_named("banger0").is_none());
    let journal = f.journal_text();
    assert!(
        !journal.contains("banger0") && !journal.contains("bangertap"),
        "{journal}"
    );
    assert!(journal.contains("banger1"), "{journal}");
}

/// Review of dd5b299: the bridge address was exempt from the resolver
/// check whenever the journal listed the bridge under `resolver_links`,
/// even after the bridge (and with it the resolver settings) was gone — a
/// reboot — and the address had become a real resolver of the host's.
#[test]
fn a_stale_resolver_entry_does_not_exempt_a_new_bridges_address() {
    let f = fixture(FakeNet::new()).with_bridge_and_taps();
    f.run(PrivOp::Net(NetOp::ApplyResolver(ResolverSpec {
        bridge: "banger0".into(),
        dns: Ipv4Addr::new(10, 0, 0, 1),
    })))
    .unwrap();
    {
        let mut st = f.net.state.lock().unwrap();
        st.links.retain(|l| !l.name.starts_with("banger"));
        st.routes.clear();
        st.resolvers = vec![Ipv4Addr::new(10, 0, 0, 1)];
    }
    let err = f
        .run(PrivOp::Net(NetOp::EnsureBridge(bridge())))
        .unwrap_err();
    assert!(err.to_string().contains("resolver 10.0.0.1"), "{err}");
}
