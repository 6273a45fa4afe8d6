//! `banger system restart`: restart both services and wait until both are
//! active again. The helper's unit has `KillMode=process`, so its VMM
//! children outlive the restart and the new helper re-adopts them (pid and
//! start time must match its journal); bangerd re-adopts its VMs at start.
//! `banger-vms.service`, the holder of the VMs' cgroups, is left alone (a
//! restart of it would kill every VM); the helper's `Wants=` starts it
//! when it is down.

use std::path::Path;

use banger_proto::ErrorCode;
use banger_proto::install::{DEFAULT_INSTALL_FILE, InstallMeta};

use super::systemd::{self, READY_TIMEOUT, START_TIMEOUT, Systemd, SystemdError, UnitState};
use super::units::{HELPER_UNIT, OWNER_UNIT};

#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("banger system restart must run as root (try `sudo banger system restart`)")]
    NotRoot,
    #[error(
        "banger is not installed (no usable {DEFAULT_INSTALL_FILE}); install it with `sudo banger system install`"
    )]
    NotInstalled,
    #[error(transparent)]
    Systemd(SystemdError),
}

impl RestartError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RestartError::NotRoot => ErrorCode::PermissionDenied,
            RestartError::NotInstalled => ErrorCode::NotFound,
            RestartError::Systemd(SystemdError::Missing | SystemdError::NotBooted) => {
                ErrorCode::Unavailable
            }
            RestartError::Systemd(_) => ErrorCode::Internal,
        }
    }
}

/// Both units before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub before: Vec<UnitState>,
    pub after: Vec<UnitState>,
}

/// Restart both units (the helper first: bangerd `Requires=` it, so systemd
/// orders the pair itself) and wait until both are active.
pub fn restart(sd: &dyn Systemd) -> Result<Report, RestartError> {
    if InstallMeta::load(Path::new(DEFAULT_INSTALL_FILE)).is_err() {
        return Err(RestartError::NotInstalled);
    }
    restart_units(sd)
}

/// The systemd part of [`restart`].
pub fn restart_units(sd: &dyn Systemd) -> Result<Report, RestartError> {
    let units = [HELPER_UNIT, OWNER_UNIT];
    let show_all = || -> Result<Vec<UnitState>, RestartError> {
        units
            .iter()
            .map(|u| systemd::show(sd, u).map_err(RestartError::Systemd))
            .collect()
    };
    let before = show_all()?;
    sd.run(&["restart", HELPER_UNIT, OWNER_UNIT], START_TIMEOUT)
        .map_err(RestartError::Systemd)?;
    systemd::wait_active(sd, &units, READY_TIMEOUT).map_err(RestartError::Systemd)?;
    Ok(Report {
        before,
        after: show_all()?,
    })
}

pub fn to_json(r: &Report) -> serde_json::Value {
    let units: Vec<_> = r
        .before
        .iter()
        .zip(&r.after)
        .map(|(b, a)| {
            serde_json::json!({
                "unit": a.unit,
                "active": a.active,
                "pid_before": b.main_pid,
                "pid_after": a.main_pid,
            })
        })
        .collect();
    serde_json::json!({ "units": units })
}

pub fn to_text(r: &Report) -> String {
    r.before
        .iter()
        .zip(&r.after)
        .map(|(b, a)| {
            let pid = |p: Option<u32>| p.map_or("-".to_string(), |p| p.to_string());
            format!(
                "restarted  {:<21} {} (pid {} -> {})\n",
                a.unit,
                a.active,
                pid(b.main_pid),
                pid(a.main_pid)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::time::Duration;

    use super::*;

    #[derive(Default)]
    struct Fake {
        calls: RefCell<Vec<String>>,
        fail_restart: bool,
    }

    impl Systemd for Fake {
        fn run(&self, args: &[&str], _: Duration) -> Result<(), SystemdError> {
            self.calls.borrow_mut().push(args.join(" "));
            if self.fail_restart && args[0] == "restart" {
                return Err(SystemdError::NotReady {
                    unit: args[1].into(),
                    state: "failed".into(),
                    secs: 1,
                });
            }
            Ok(())
        }
        fn query(&self, args: &[&str]) -> Result<(bool, String), SystemdError> {
            self.calls.borrow_mut().push(args.join(" "));
            Ok((true, "active".into()))
        }
        fn capture(&self, args: &[&str]) -> Result<(bool, String), SystemdError> {
            let restarted = self.calls.borrow().iter().any(|c| c.starts_with("restart"));
            self.calls.borrow_mut().push(args[0].to_string());
            let pid = if restarted { 20 } else { 10 };
            Ok((true, format!("ActiveState=active\nMainPID={pid}\n")))
        }
    }

    #[test]
    fn both_units_restart_and_are_waited_for() {
        let f = Fake::default();
        let r = restart_units(&f).unwrap();
        assert_eq!(
            *f.calls.borrow(),
            [
                "show",
                "show",
                "restart bangerd-root.service bangerd.service",
                "is-active bangerd-root.service",
                "is-active bangerd.service",
                "show",
                "show",
            ]
        );
        assert_eq!(r.before[0].main_pid, Some(10));
        assert_eq!(r.after[1].main_pid, Some(20));
        assert_eq!(
            to_text(&r).lines().next().unwrap(),
            "restarted  bangerd-root.service  active (pid 10 -> 20)"
        );
    }

    #[test]
    fn a_failed_restart_is_reported() {
        let f = Fake {
            fail_restart: true,
            ..Fake::default()
        };
        let err = restart_units(&f).unwrap_err();
        assert!(
            err.to_string().contains("bangerd-root.service is failed"),
            "{err}"
        );
    }
}
