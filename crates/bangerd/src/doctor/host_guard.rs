//! The `host_guard` check: whether the udev rule and the LVM filter that
//! keep the host's udev rules and LVM off banger's loop and dm devices
//! (issue #13 finding 8, `banger_host::devguard`) are in place. `banger
//! system install` writes them; dev mode has no install and so none.

use std::path::Path;

use banger_host::devguard::{self, GuardState};
use banger_host::runner::Runner;
use banger_proto::doctor::{Check, CheckStatus};

use super::{ids, not_pass, pass};

/// What the doctor found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostGuard {
    /// Dev mode: no install, so no guard for its state directory.
    DevMode,
    System {
        udev_rule: GuardState,
        /// `None`: lvm2 is not installed.
        lvm_filter: Option<GuardState>,
    },
}

/// Look at the rule (against `state_dir` and the helper's
/// `root_state_dir`, as the install renders it) and at LVM's filter.
/// `root_state_dir` is `None` in dev mode.
pub fn gather(runner: &Runner, state_dir: &Path, root_state_dir: Option<&Path>) -> HostGuard {
    match root_state_dir {
        None => HostGuard::DevMode,
        Some(root_state) => HostGuard::System {
            udev_rule: devguard::udev_rule_state(
                Path::new(devguard::UDEV_RULE_FILE),
                &[state_dir, root_state],
            ),
            lvm_filter: devguard::lvm_filter_state(runner, Path::new(devguard::LVM_DIR)),
        },
    }
}

pub(super) fn check(g: &HostGuard) -> Check {
    let id = ids::HOST_GUARD;
    let (udev_rule, lvm_filter) = match g {
        HostGuard::DevMode => {
            return not_pass(
                id,
                CheckStatus::Warn,
                "dev_mode",
                "dev mode installs no udev rule or LVM filter: the host's udev rules and LVM \
                 may probe, link and activate what guests write on loop and dm devices"
                    .into(),
                "use `sudo banger system install` on hosts where guests are not trusted",
            );
        }
        HostGuard::System {
            udev_rule,
            lvm_filter,
        } => (udev_rule, lvm_filter),
    };
    let mut wrong = Vec::new();
    for (what, state) in [
        (devguard::UDEV_RULE_FILE, Some(udev_rule)),
        ("banger's LVM filter", lvm_filter.as_ref()),
    ] {
        match state {
            None | Some(GuardState::Current) => {}
            Some(GuardState::Missing) => wrong.push(format!("{what} is missing")),
            Some(GuardState::Stale(why)) => wrong.push(format!("{what} is out of date ({why})")),
        }
    }
    let lvm = match lvm_filter {
        None => "no lvm2 installed",
        Some(_) => "LVM filter in effect",
    };
    if wrong.is_empty() {
        return pass(
            id,
            "current",
            format!("the host's udev rules stay off banger's devices ({lvm})"),
        );
    }
    let state = if matches!(udev_rule, GuardState::Missing)
        || matches!(lvm_filter, Some(GuardState::Missing))
    {
        "missing"
    } else {
        "stale"
    };
    not_pass(
        id,
        CheckStatus::Warn,
        state,
        format!(
            "{}: the host's udev rules or LVM may act on guest-written disks",
            wrong.join("; ")
        ),
        "reinstall with `sudo banger system install`",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(udev_rule: GuardState, lvm_filter: Option<GuardState>) -> Check {
        check(&HostGuard::System {
            udev_rule,
            lvm_filter,
        })
    }

    #[test]
    fn states_and_statuses() {
        let c = system(GuardState::Current, None);
        assert_eq!((c.status, c.state.as_str()), (CheckStatus::Pass, "current"));
        assert!(c.summary.contains("no lvm2"), "{}", c.summary);
        let c = system(GuardState::Current, Some(GuardState::Current));
        assert_eq!(c.status, CheckStatus::Pass);
        let c = system(GuardState::Missing, Some(GuardState::Current));
        assert_eq!((c.status, c.state.as_str()), (CheckStatus::Warn, "missing"));
        assert!(
            c.summary
                .starts_with("/etc/udev/rules.d/10-banger.rules is missing")
        );
        let c = system(GuardState::Current, Some(GuardState::Stale("x".into())));
        assert_eq!((c.status, c.state.as_str()), (CheckStatus::Warn, "stale"));
        assert!(c.summary.contains("banger's LVM filter is out of date (x)"));
        let c = check(&HostGuard::DevMode);
        assert_eq!(
            (c.status, c.state.as_str()),
            (CheckStatus::Warn, "dev_mode")
        );
    }

    /// On a host the rule was never installed on (a temp state dir names
    /// no installed rule), the check is not `current`.
    #[test]
    fn gathering_reads_the_host() {
        assert_eq!(
            gather(&Runner, Path::new("/var/lib/banger"), None),
            HostGuard::DevMode
        );
        let state = tempfile::tempdir().unwrap();
        let HostGuard::System { udev_rule, .. } = gather(
            &Runner,
            state.path(),
            Some(Path::new("/var/lib/banger-root")),
        ) else {
            panic!("system mode")
        };
        assert_ne!(udev_rule, GuardState::Current);
    }
}
