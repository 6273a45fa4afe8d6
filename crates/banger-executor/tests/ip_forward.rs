//! Threat-model item 15: `EnsureBridge` turns on host-wide IPv4
//! forwarding. Teardown (what `banger system uninstall` and `banger host
//! teardown` run) turns it back off only when banger turned it on and it is
//! still on; a value that was already 1 is never touched. Each case in a
//! private network namespace of its own (`ip_forward` is per namespace).

use std::path::Path;
use std::sync::Arc;

use banger_executor::Executor;
use banger_host::net::RealNet;
use banger_host::net::netns::in_fresh_netns;
use banger_host::probe::RealHost;
use banger_proto::net::BridgeSpec;
use banger_proto::privops::{NetOp, PrivOp, PrivOutcome, Teardown};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

fn forwarding() -> String {
    std::fs::read_to_string(IP_FORWARD).unwrap()
}

fn executor(dir: &Path) -> Executor {
    Executor::new(
        Arc::new(RealHost::new()),
        Arc::new(RealNet::new()),
        dir.join("journal.json"),
    )
}

fn bridge() -> BridgeSpec {
    BridgeSpec {
        name: "banger0".into(),
        address: std::net::Ipv4Addr::new(10, 0, 0, 1),
        prefix_len: 24,
    }
}

/// Forwarding `before` in a fresh namespace, then `EnsureBridge` and
/// `Teardown` (by a new executor on the same journal, as after a restart):
/// the value after each.
fn bridge_then_teardown(before: &str) -> (String, String) {
    assert!(rustix::process::geteuid().is_root(), "needs root");
    let dir = tempfile::tempdir().unwrap();
    in_fresh_netns(|| {
        std::fs::write(IP_FORWARD, before).unwrap();
        executor(dir.path())
            .execute(PrivOp::Net(NetOp::EnsureBridge(bridge())))
            .unwrap();
        let with_bridge = forwarding();
        let out = executor(dir.path())
            .execute(PrivOp::Net(NetOp::Teardown(Teardown)))
            .unwrap()
            .outcome;
        assert!(
            matches!(out, PrivOutcome::Teardown(ref t) if t.errors.is_empty()),
            "{out:?}"
        );
        (with_bridge, forwarding())
    })
}

#[test]
fn forwarding_banger_turned_on_is_turned_off_by_teardown() {
    assert_eq!(bridge_then_teardown("0\n"), ("1\n".into(), "0\n".into()));
}

#[test]
fn forwarding_that_was_already_on_stays_on_after_teardown() {
    assert_eq!(bridge_then_teardown("1\n"), ("1\n".into(), "1\n".into()));
}
