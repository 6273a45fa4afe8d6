//! Threat-model item 14: a bridge was banger's by its journaled name and
//! kind only. One another agent made under that name once banger's was
//! gone was taken over by `EnsureBridge` (banger's address, MAC, rules)
//! and deleted by `Teardown`. The interface index journaled at creation
//! decides now, as for taps (issue #13 F3).

use banger_proto::privops::{NetOp, PrivOp, Teardown};
use banger_testkit::*;

use crate::lab::*;

#[test]
fn a_bridge_that_took_a_journaled_name_is_left_alone() {
    let lab = Lab::new();
    lab.ensure_bridge();
    run_ok(ip(&lab.h, &format!("link del {BRIDGE}")));
    run_ok(ip(&lab.h, &format!("link add {BRIDGE} type bridge")));
    let theirs = lab.link(BRIDGE).expect("the other bridge");
    let addresses = || run_ok(ip(&lab.h, &format!("-4 addr show dev {BRIDGE}")));
    let err = lab
        .try_ensure_bridge()
        .expect_err("EnsureBridge took over another bridge under the journaled name");
    assert!(err.contains(BRIDGE), "{err}");
    assert_eq!(addresses(), "", "EnsureBridge changed the other bridge");
    // Nor does a tap of banger's go onto it.
    let err = lab
        .ensure_tap(lab.owner.uid)
        .expect_err("EnsureTap put a tap on another bridge");
    assert!(err.contains(BRIDGE), "{err}");
    assert!(lab.link(TAP).is_none(), "a tap was made");
    let report = lab
        .call(PrivOp::Net(NetOp::Teardown(Teardown)))
        .expect("Teardown");
    let left = lab
        .link(BRIDGE)
        .unwrap_or_else(|| panic!("Teardown removed the other bridge: {report}"));
    assert_eq!(left["ifindex"], theirs["ifindex"], "{report}");
    assert_eq!(left["address"], theirs["address"], "its MAC changed");
    assert!(report.to_string().contains(BRIDGE), "{report}");
    run_ok(ip(&lab.h, &format!("link del {BRIDGE}")));
}
