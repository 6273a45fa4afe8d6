//! Handing the installed units to the running systemd: reload, enable,
//! (re)start, wait until both report ready — and, when that fails, putting
//! the service state back the way it was.
//!
//! `systemctl` runs through [`Runner`]; the [`Systemd`] trait lets unit tests
//! follow the sequence with a recording fake (this host's PID 1 is not
//! systemd, so nothing here can be exercised against a live manager in CI).

use std::path::Path;
use std::time::{Duration, Instant};

use banger_host::runner::{Cmd, RunError, Runner, resolve};

/// Starting a `Type=notify` unit waits for its `READY=1`; the owner daemon
/// sets up the host network first, so give it time.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the units get to be `active` after `systemctl` returned.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error(
        "systemctl is not installed; banger's services need systemd (use --root DIR to only write the files)"
    )]
    Missing,
    #[error(
        "this host is not running systemd (no /run/systemd/system); use --root DIR to only write the files"
    )]
    NotBooted,
    /// `systemctl` ran and failed; the runner's error names the argv and
    /// carries systemctl's last stderr line.
    #[error(transparent)]
    Command(RunError),
    #[error("{unit} is {state}, not active, {secs}s after starting; see `journalctl -u {unit}`")]
    NotReady {
        unit: String,
        state: String,
        secs: u64,
    },
}

/// The few `systemctl` calls the install makes.
pub trait Systemd {
    /// Run `systemctl ARGS`; an error unless it exits 0.
    fn run(&self, args: &[&str], timeout: Duration) -> Result<(), SystemdError>;
    /// Run a query (`is-active`, `is-enabled`): its first output line, and
    /// whether it exited 0.
    fn query(&self, args: &[&str]) -> Result<(bool, String), SystemdError>;
    /// Run a query whose whole output matters (`show`): its stdout, and
    /// whether it exited 0.
    fn capture(&self, args: &[&str]) -> Result<(bool, String), SystemdError>;
}

/// The real `systemctl`.
#[derive(Debug, Default)]
pub struct Systemctl {
    pub runner: Runner,
}

fn command_error(source: RunError) -> SystemdError {
    match source {
        RunError::NotFound { .. } => SystemdError::Missing,
        source => SystemdError::Command(source),
    }
}

impl Systemd for Systemctl {
    fn run(&self, args: &[&str], timeout: Duration) -> Result<(), SystemdError> {
        self.runner
            .run(&Cmd::new("systemctl").args(args).timeout(timeout))
            .map(drop)
            .map_err(command_error)
    }

    fn query(&self, args: &[&str]) -> Result<(bool, String), SystemdError> {
        let out = self
            .runner
            .output(&Cmd::new("systemctl").args(args).timeout(QUICK_TIMEOUT))
            .map_err(command_error)?;
        let first = out.stdout.lines().next().unwrap_or("").trim().to_string();
        Ok((out.status.success(), first))
    }

    fn capture(&self, args: &[&str]) -> Result<(bool, String), SystemdError> {
        let out = self
            .runner
            .output(&Cmd::new("systemctl").args(args).timeout(QUICK_TIMEOUT))
            .map_err(command_error)?;
        Ok((out.status.success(), out.stdout))
    }
}

/// What systemd says about one unit (`systemctl show`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    pub unit: String,
    /// `loaded`, `not-found`, ...
    pub load: String,
    /// `active`, `inactive`, `failed`, `activating`, ...
    pub active: String,
    /// `running`, `dead`, ...
    pub sub: String,
    /// `enabled`, `disabled`, or empty for a unit without a file.
    pub enabled: String,
    /// The main process, when there is one.
    pub main_pid: Option<u32>,
    /// The unit's cgroup below the cgroup root (`/system.slice/...`), while
    /// it has one.
    pub cgroup: Option<String>,
}

/// The properties [`show`] asks for.
const SHOW_PROPS: [&str; 6] = [
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "MainPID",
    "ControlGroup",
];

/// Parse `systemctl show -p ...` output (`Key=value` lines, any order).
pub fn parse_show(unit: &str, text: &str) -> UnitState {
    let mut s = UnitState {
        unit: unit.to_string(),
        ..UnitState::default()
    };
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k {
            "LoadState" => s.load = v.to_string(),
            "ActiveState" => s.active = v.to_string(),
            "SubState" => s.sub = v.to_string(),
            "UnitFileState" => s.enabled = v.to_string(),
            "MainPID" => s.main_pid = v.parse().ok().filter(|p| *p != 0),
            "ControlGroup" if !v.is_empty() => s.cgroup = Some(v.to_string()),
            _ => {}
        }
    }
    s
}

/// Ask systemd about `unit`.
pub fn show(sd: &dyn Systemd, unit: &str) -> Result<UnitState, SystemdError> {
    let mut args = vec!["show"];
    for p in SHOW_PROPS {
        args.extend(["-p", p]);
    }
    args.push(unit);
    let (ok, out) = sd.capture(&args)?;
    let mut state = parse_show(unit, &out);
    if !ok && state.load.is_empty() {
        state.load = "unknown (systemctl show failed; is systemd running?)".into();
    }
    Ok(state)
}

/// Refuse before anything is written when the services could not be started
/// anyway: no `systemctl`, or a host not booted with systemd (sd_booted's
/// test: `/run/systemd/system` is a directory).
pub fn check_available() -> Result<(), SystemdError> {
    if resolve("systemctl".as_ref()).is_none() {
        return Err(SystemdError::Missing);
    }
    if !Path::new("/run/systemd/system").is_dir() {
        return Err(SystemdError::NotBooted);
    }
    Ok(())
}

/// What [`activate`] did, and what it needs to undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub units: Vec<String>,
    /// `started` (nothing changed) or `restarted` (new files).
    pub action: &'static str,
    /// Units only ever enabled and started (`enable --now`), never
    /// restarted, before [`Activation::units`]: the holder of the VMs'
    /// cgroups, whose restart would kill every VM.
    pub held: Vec<String>,
    held_was_enabled: Vec<bool>,
    held_was_active: Vec<bool>,
    was_enabled: Vec<bool>,
    was_active: Vec<bool>,
    /// Steps done so far, for the undo.
    reloaded: bool,
    enabled: bool,
    started: bool,
}

impl Activation {
    /// Nothing done yet for `units`. `changed`: files were written, so
    /// running units restart onto them.
    pub fn new(units: &[&str], changed: bool) -> Activation {
        Activation {
            units: units.iter().map(|u| u.to_string()).collect(),
            action: if changed { "restarted" } else { "started" },
            held: Vec::new(),
            held_was_enabled: Vec::new(),
            held_was_active: Vec::new(),
            was_enabled: Vec::new(),
            was_active: Vec::new(),
            reloaded: false,
            enabled: false,
            started: false,
        }
    }

    /// `held` are enabled and started first, and never restarted, whatever
    /// changed.
    pub fn holding(mut self, held: &[&str]) -> Activation {
        self.held = held.iter().map(|u| u.to_string()).collect();
        self
    }
}

/// Reload systemd, enable and start the held units (`enable --now`: a
/// running one is left running, never restarted), enable the units,
/// (re)start them and wait until every one is active, recording each step
/// in `a` so that [`undo`] can reverse what was done when this fails.
pub fn activate(sd: &dyn Systemd, a: &mut Activation) -> Result<(), SystemdError> {
    let held: Vec<String> = a.held.clone();
    let held: Vec<&str> = held.iter().map(String::as_str).collect();
    let units: Vec<String> = a.units.clone();
    let units: Vec<&str> = units.iter().map(String::as_str).collect();
    for u in &held {
        a.held_was_enabled.push(sd.query(&["is-enabled", u])?.0);
        a.held_was_active.push(sd.query(&["is-active", u])?.0);
    }
    for u in &units {
        a.was_enabled.push(sd.query(&["is-enabled", u])?.0);
        a.was_active.push(sd.query(&["is-active", u])?.0);
    }
    sd.run(&["daemon-reload"], QUICK_TIMEOUT)?;
    a.reloaded = true;
    if !held.is_empty() {
        a.enabled = true;
        a.started = true;
        sd.run(
            &[&["enable", "--now"], held.as_slice()].concat(),
            START_TIMEOUT,
        )?;
    }
    sd.run(&[&["enable"], units.as_slice()].concat(), QUICK_TIMEOUT)?;
    a.enabled = true;
    let verb = if a.action == "restarted" {
        "restart"
    } else {
        "start"
    };
    a.started = true;
    sd.run(&[&[verb], units.as_slice()].concat(), START_TIMEOUT)?;
    wait_active(sd, &[held, units].concat(), READY_TIMEOUT)
}

/// Poll `systemctl is-active` until every unit is `active`.
pub fn wait_active(
    sd: &dyn Systemd,
    units: &[&str],
    timeout: Duration,
) -> Result<(), SystemdError> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut pending = None;
        for u in units {
            let (ok, state) = sd.query(&["is-active", u])?;
            if !ok || state != "active" {
                pending = Some((u.to_string(), state));
                break;
            }
        }
        let Some((unit, state)) = pending else {
            return Ok(());
        };
        // Only `activating` is worth waiting for; `failed` or `inactive`
        // will not change by itself.
        if state != "activating" || Instant::now() >= deadline {
            return Err(SystemdError::NotReady {
                unit,
                state,
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Put the services back as [`activate`] found them, around `restore_files`
/// (which puts the files back): stop and disable what was not running or
/// enabled before, reload, and restart what was running (on the old files)
/// — but a held unit, never restarted: one that ran before is left running.
/// Best-effort: every step is attempted; failures are returned.
pub fn undo(
    sd: &dyn Systemd,
    a: &Activation,
    restore_files: impl FnOnce() -> Vec<String>,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut attempt = |args: &[&str], timeout| {
        if let Err(e) = sd.run(args, timeout) {
            errors.push(banger_proto::error::chain(&e).join(": "));
        }
    };
    let pick_of = |units: &'_ [String], flags: &[bool], want: bool| -> Vec<String> {
        units
            .iter()
            .zip(flags)
            .filter(|(_, f)| **f == want)
            .map(|(u, _)| u.clone())
            .collect()
    };
    let pick = |flags: &[bool], want: bool| pick_of(&a.units, flags, want);
    let held = |flags: &[bool]| pick_of(&a.held, flags, false);
    // The units before the held ones they want (and are ordered after).
    let fresh = [pick(&a.was_active, false), held(&a.held_was_active)].concat();
    let fresh: Vec<&str> = fresh.iter().map(String::as_str).collect();
    if a.started && !fresh.is_empty() {
        attempt(&[&["stop"], fresh.as_slice()].concat(), START_TIMEOUT);
    }
    let not_enabled = [pick(&a.was_enabled, false), held(&a.held_was_enabled)].concat();
    let not_enabled: Vec<&str> = not_enabled.iter().map(String::as_str).collect();
    if a.enabled && !not_enabled.is_empty() {
        attempt(
            &[&["disable"], not_enabled.as_slice()].concat(),
            QUICK_TIMEOUT,
        );
    }
    let file_errors = restore_files();
    // Only if systemd saw the new units; a reload that failed the first
    // time would fail again and say nothing new.
    if a.reloaded {
        attempt(&["daemon-reload"], QUICK_TIMEOUT);
    }
    let running = pick(&a.was_active, true);
    let running: Vec<&str> = running.iter().map(String::as_str).collect();
    if a.started && !running.is_empty() {
        attempt(&[&["restart"], running.as_slice()].concat(), START_TIMEOUT);
    }
    let mut all = file_errors;
    all.extend(errors);
    all
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Records every call; `fail` makes the first call starting with it fail;
    /// `state` is what `is-active` answers once started.
    #[derive(Default)]
    struct Fake {
        calls: RefCell<Vec<String>>,
        fail: Option<&'static str>,
        active_before: bool,
        state_after_start: &'static str,
    }

    impl Systemd for Fake {
        fn run(&self, args: &[&str], _: Duration) -> Result<(), SystemdError> {
            let line = args.join(" ");
            self.calls.borrow_mut().push(line.clone());
            match self.fail {
                Some(f) if line.starts_with(f) => Err(SystemdError::Command(RunError::Timeout {
                    argv: format!("systemctl {line}"),
                    secs: 1,
                })),
                _ => Ok(()),
            }
        }

        fn query(&self, args: &[&str]) -> Result<(bool, String), SystemdError> {
            let line = args.join(" ");
            self.calls.borrow_mut().push(line.clone());
            let started = self
                .calls
                .borrow()
                .iter()
                .any(|c| c.starts_with("start") || c.starts_with("restart"));
            Ok(match args[0] {
                "is-enabled" => (self.active_before, "enabled".into()),
                _ if started => (
                    self.state_after_start == "active",
                    self.state_after_start.into(),
                ),
                _ if self.active_before => (true, "active".into()),
                _ => (false, "inactive".into()),
            })
        }

        fn capture(&self, args: &[&str]) -> Result<(bool, String), SystemdError> {
            self.calls.borrow_mut().push(args.join(" "));
            Ok((true, String::new()))
        }
    }

    const UNITS: [&str; 2] = ["bangerd-root.service", "bangerd.service"];

    fn calls(f: &Fake) -> Vec<String> {
        f.calls
            .borrow()
            .iter()
            .filter(|c| !c.starts_with("is-"))
            .cloned()
            .collect()
    }

    #[test]
    fn a_fresh_install_reloads_enables_and_starts_both() {
        let f = Fake {
            state_after_start: "active",
            ..Fake::default()
        };
        let mut a = Activation::new(&UNITS, true);
        activate(&f, &mut a).unwrap();
        assert_eq!(a.action, "restarted");
        assert_eq!(
            calls(&f),
            [
                "daemon-reload",
                "enable bangerd-root.service bangerd.service",
                "restart bangerd-root.service bangerd.service",
            ]
        );
    }

    #[test]
    fn nothing_changed_only_starts() {
        let f = Fake {
            state_after_start: "active",
            active_before: true,
            ..Fake::default()
        };
        let mut a = Activation::new(&UNITS, false);
        activate(&f, &mut a).unwrap();
        assert_eq!(a.action, "started");
        assert_eq!(calls(&f)[2], "start bangerd-root.service bangerd.service");
    }

    #[test]
    fn a_failed_start_is_undone_around_the_file_restore() {
        let f = Fake {
            fail: Some("restart"),
            ..Fake::default()
        };
        let mut a = Activation::new(&UNITS, true);
        let err = activate(&f, &mut a).unwrap_err();
        assert!(err.to_string().contains("systemctl restart"), "{err}");
        let restored = RefCell::new(false);
        let errors = undo(&f, &a, || {
            *restored.borrow_mut() = true;
            vec![]
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert!(*restored.borrow());
        assert_eq!(
            calls(&f)[3..],
            [
                "stop bangerd-root.service bangerd.service",
                "disable bangerd-root.service bangerd.service",
                "daemon-reload",
            ]
        );
    }

    #[test]
    fn an_upgrade_that_fails_restarts_the_old_services() {
        let f = Fake {
            active_before: true,
            state_after_start: "failed",
            ..Fake::default()
        };
        let mut a = Activation::new(&UNITS, true);
        let err = activate(&f, &mut a).unwrap_err();
        assert!(
            matches!(&err, SystemdError::NotReady { unit, state, .. } if unit == "bangerd-root.service" && state == "failed"),
            "{err}"
        );
        let errors = undo(&f, &a, Vec::new);
        assert!(errors.is_empty());
        assert_eq!(
            calls(&f)[3..],
            [
                "daemon-reload",
                "restart bangerd-root.service bangerd.service"
            ]
        );
    }

    /// The holder of the VMs' cgroups is enabled and started with `enable
    /// --now` before the daemons, and never restarted: not on new files,
    /// not when the upgrade fails and the old daemons are restarted.
    #[test]
    fn a_held_unit_is_only_ever_enabled_and_started() {
        let f = Fake {
            active_before: true,
            state_after_start: "failed",
            ..Fake::default()
        };
        let mut a = Activation::new(&UNITS, true).holding(&["banger-vms.service"]);
        activate(&f, &mut a).unwrap_err();
        undo(&f, &a, Vec::new);
        assert_eq!(
            calls(&f),
            [
                "daemon-reload",
                "enable --now banger-vms.service",
                "enable bangerd-root.service bangerd.service",
                "restart bangerd-root.service bangerd.service",
                "daemon-reload",
                "restart bangerd-root.service bangerd.service",
            ]
        );
        let queried: Vec<String> = f
            .calls
            .borrow()
            .iter()
            .filter(|c| c.starts_with("is-active"))
            .cloned()
            .collect();
        assert!(queried.iter().any(|c| c == "is-active banger-vms.service"));
    }

    /// A fresh install that fails stops and disables the holder it started,
    /// after the daemons that want it.
    #[test]
    fn a_failed_fresh_install_stops_the_holder_it_started() {
        let f = Fake {
            fail: Some("restart"),
            ..Fake::default()
        };
        let mut a = Activation::new(&UNITS, true).holding(&["banger-vms.service"]);
        activate(&f, &mut a).unwrap_err();
        undo(&f, &a, Vec::new);
        assert_eq!(
            calls(&f)[4..],
            [
                "stop bangerd-root.service bangerd.service banger-vms.service",
                "disable bangerd-root.service bangerd.service banger-vms.service",
                "daemon-reload",
            ]
        );
    }

    #[test]
    fn show_output_parses_in_any_order() {
        let s = parse_show(
            "bangerd.service",
            "MainPID=42\nActiveState=active\nSubState=running\nLoadState=loaded\n\
             UnitFileState=enabled\nControlGroup=/system.slice/bangerd.service\nJunk\n",
        );
        assert_eq!(
            s,
            UnitState {
                unit: "bangerd.service".into(),
                load: "loaded".into(),
                active: "active".into(),
                sub: "running".into(),
                enabled: "enabled".into(),
                main_pid: Some(42),
                cgroup: Some("/system.slice/bangerd.service".into()),
            }
        );
        let gone = parse_show(
            "x.service",
            "MainPID=0\nActiveState=inactive\nLoadState=not-found\nControlGroup=\n",
        );
        assert_eq!((gone.main_pid, gone.cgroup), (None, None));
        assert_eq!(gone.load, "not-found");
    }

    #[test]
    fn a_failed_reload_undoes_nothing_it_did_not_do() {
        let f = Fake {
            fail: Some("daemon-reload"),
            ..Fake::default()
        };
        let mut a = Activation::new(&UNITS, true);
        activate(&f, &mut a).unwrap_err();
        f.calls.borrow_mut().clear();
        let restored = RefCell::new(false);
        let errors = undo(&f, &a, || {
            *restored.borrow_mut() = true;
            vec![]
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert!(*restored.borrow());
        assert!(calls(&f).is_empty(), "{:?}", calls(&f));
    }
}
