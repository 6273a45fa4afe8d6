//! The `jail_scope` check.

use super::*;

/// The `jail_scope` row: scoped passes; unscoped warns with the reason and
/// what it leaves (a host-network Firecracker jail reaching the host's
/// abstract sockets); not said, or the helper unreachable, is unknown.
#[test]
fn jail_scope_states() {
    let row = |scope: Option<JailScopeProbe>, channel: Channel| {
        let r = report(&HostFacts {
            jail_scope: scope,
            privileged_channel: channel,
            ..healthy()
        });
        r.check(ids::JAIL_SCOPE).unwrap().clone()
    };
    let c = row(Some(JailScopeProbe::Scoped), helper());
    assert_eq!((c.status, c.state.as_str()), (CheckStatus::Pass, "scoped"));
    let reason = "landlock_create_ruleset: Invalid argument (os error 22)";
    let c = row(
        Some(JailScopeProbe::Unscoped {
            reason: reason.into(),
        }),
        Channel::InProcess,
    );
    assert_eq!(
        (c.status, c.state.as_str()),
        (CheckStatus::Warn, "unscoped")
    );
    assert!(c.summary.contains(reason), "{}", c.summary);
    assert!(
        c.summary.contains(
            "Every jail, Firecracker's included, still has network and pid namespaces of its own"
        ),
        "{}",
        c.summary
    );
    assert!(c.hint.unwrap().contains("6.12"));
    let c = row(None, helper());
    assert_eq!((c.status, c.state.as_str()), (CheckStatus::Warn, "unknown"));
    let unreachable = Channel::HelperUnreachable {
        socket: "/run/banger/root.sock".into(),
        error: "connection refused".into(),
    };
    let c = row(Some(JailScopeProbe::Scoped), unreachable);
    assert_eq!((c.status, c.state.as_str()), (CheckStatus::Warn, "unknown"));
}
