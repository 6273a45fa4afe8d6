//! `banger system status`: how the install looks from outside. The install
//! metadata and the binaries it names (and their versions), the three units (the two daemons' and `banger-vms.service`, the holder of the VMs' cgroups) as
//! systemd sees them, whether each daemon answers on its socket and with
//! which version, whether the host guard of issue #13 finding 8 (the udev
//! rule, and banger's LVM filter where lvm2 is installed) is there and
//! current, and a summary of the daemon's doctor report. Facts are
//! gathered first; [`problems`] then judges them (a pure function).
//!
//! With `--root DIR` only the files under DIR are looked at.

use std::path::{Path, PathBuf};

use banger_host::runner::Runner;
use banger_proto::doctor::{CheckStatus, DoctorReport};
use banger_proto::install::{DEFAULT_INSTALL_FILE, InstallMeta};
use banger_proto::rpc::{Request, Response};

use super::apply::on_disk;
use super::guard;
use super::plan::{BINARIES, UNIT_DIR};
use super::probe::{self, Health};
use super::systemd::{self, Systemd, UnitState};
use super::units::{HELPER_UNIT, OWNER_UNIT, VMS_UNIT};
use banger_host::devguard::GuardState;

/// One installed binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    pub name: &'static str,
    pub path: PathBuf,
    pub present: bool,
    /// What `--version` printed; `None` when absent or it failed.
    pub version: Option<String>,
}

/// One daemon's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    /// `bangerd` or `bangerd-root`.
    pub daemon: &'static str,
    pub path: PathBuf,
    pub health: Health,
    /// The running daemon's version: from its answer, or (the helper, as
    /// root) from the executable of its main process.
    pub running_version: Option<String>,
}

/// The counts of a doctor report and the checks that did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorSummary {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    /// `id: summary` of every warning and failure.
    pub findings: Vec<String>,
}

impl DoctorSummary {
    pub fn of(r: &DoctorReport) -> DoctorSummary {
        let count = |s| r.checks.iter().filter(|c| c.status == s).count();
        DoctorSummary {
            pass: count(CheckStatus::Pass),
            warn: count(CheckStatus::Warn),
            fail: count(CheckStatus::Fail),
            findings: r
                .checks
                .iter()
                .filter(|c| c.status != CheckStatus::Pass)
                .map(|c| {
                    let level = if c.status == CheckStatus::Fail {
                        "fail"
                    } else {
                        "warn"
                    };
                    format!("{level} {}: {}", c.id, c.summary)
                })
                .collect(),
        }
    }
}

/// Everything `system status` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub root: PathBuf,
    /// `None`: not installed (or the metadata is unreadable: `meta_error`).
    pub meta: Option<InstallMeta>,
    pub meta_error: Option<String>,
    pub binaries: Vec<Binary>,
    /// Unit files present under the root.
    pub unit_files: Vec<(&'static str, bool)>,
    /// `/etc/udev/rules.d/10-banger.rules` against what the paths render.
    pub udev_rule: GuardState,
    /// banger's block in `lvmlocal.conf` (`None`: lvm2 is not installed).
    pub lvm_filter: Option<GuardState>,
    /// `None` with `--root`: the running system was not asked.
    pub units: Option<Vec<UnitState>>,
    pub sockets: Option<Vec<Socket>>,
    /// `None`: not asked (`--root`, `--no-doctor`, or bangerd not serving
    /// this caller); `Err`: the request failed.
    pub doctor: Option<Result<DoctorSummary, String>>,
}

impl Status {
    pub fn installed(&self) -> bool {
        self.meta.is_some()
    }
}

/// What to look at.
#[derive(Debug, Clone)]
pub struct StatusRequest {
    pub root: PathBuf,
    pub live: bool,
    pub doctor: bool,
    pub euid: u32,
}

/// Gather the facts.
pub fn gather(req: &StatusRequest, runner: &Runner, sd: &dyn Systemd) -> Status {
    let root = &req.root;
    let meta_path = on_disk(root, Path::new(DEFAULT_INSTALL_FILE));
    let (meta, meta_error) = if std::fs::symlink_metadata(&meta_path).is_err() {
        (None, None)
    } else {
        match InstallMeta::load(&meta_path) {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(banger_proto::error::chain(&e).join(": "))),
        }
    };
    let bin_dir = meta
        .as_ref()
        .map(|m| m.paths.bin_dir.clone())
        .unwrap_or_else(|| PathBuf::from(super::plan::BIN_DIR));
    let binaries = BINARIES
        .iter()
        .map(|name| {
            let path = on_disk(root, &bin_dir.join(name));
            let present = path.is_file();
            let version = present
                .then(|| probe::binary_version(runner, &path).ok())
                .flatten();
            Binary {
                name,
                path,
                present,
                version,
            }
        })
        .collect();
    let unit_files = [HELPER_UNIT, OWNER_UNIT, VMS_UNIT]
        .into_iter()
        .map(|u| (u, on_disk(root, &Path::new(UNIT_DIR).join(u)).is_file()))
        .collect();
    let paths = meta
        .as_ref()
        .map(|m| m.paths.clone())
        .unwrap_or_else(super::plan::default_paths);
    let udev_rule = guard::udev_state(root, &paths);
    let lvm_filter = guard::lvm_state(runner, root);
    if !req.live {
        return Status {
            root: root.clone(),
            meta,
            meta_error,
            binaries,
            unit_files,
            udev_rule,
            lvm_filter,
            units: None,
            sockets: None,
            doctor: None,
        };
    }
    let units: Vec<UnitState> = [HELPER_UNIT, OWNER_UNIT, VMS_UNIT]
        .into_iter()
        .map(|u| {
            systemd::show(sd, u).unwrap_or_else(|e| UnitState {
                unit: u.to_string(),
                load: format!("unknown ({})", banger_proto::error::chain(&e).join(": ")),
                ..UnitState::default()
            })
        })
        .collect();
    let owner_uid = meta.as_ref().map(|m| m.owner.uid).unwrap_or(0);
    let daemon_socket = paths.runtime_dir.join("bangerd.sock");
    let (daemon_health, client) = probe::daemon(&daemon_socket, owner_uid);
    let helper_health = probe::helper(&paths.root_socket);
    let helper_pid = units[0].main_pid;
    let helper_running = helper_health.version().map(str::to_string).or_else(|| {
        // Root may look at the helper's own executable.
        (req.euid == 0)
            .then(|| helper_pid.and_then(|pid| probe::running_version(runner, pid)))
            .flatten()
    });
    let doctor = match client {
        Some(mut c) if req.doctor => Some(match c.call(&Request::Doctor, |_| {}) {
            Ok(Response::Doctor(r)) => Ok(DoctorSummary::of(&r)),
            Ok(_) => Err("bangerd answered the doctor request with something else".into()),
            Err(e) => Err(banger_proto::error::chain(&e).join(": ")),
        }),
        _ => None,
    };
    let sockets = vec![
        Socket {
            daemon: "bangerd-root",
            path: paths.root_socket.clone(),
            running_version: helper_running,
            health: helper_health,
        },
        Socket {
            daemon: "bangerd",
            path: daemon_socket,
            running_version: daemon_health.version().map(str::to_string),
            health: daemon_health,
        },
    ];
    Status {
        root: root.clone(),
        meta,
        meta_error,
        binaries,
        unit_files,
        udev_rule,
        lvm_filter,
        units: Some(units),
        sockets: Some(sockets),
        doctor,
    }
}

/// Everything wrong with what [`gather`] found, one line each with what to
/// do about it. Empty: healthy.
pub fn problems(s: &Status) -> Vec<String> {
    let mut out = Vec::new();
    let Some(meta) = &s.meta else {
        out.push(match &s.meta_error {
            Some(e) => format!("install metadata is unusable: {e}; reinstall with `sudo banger system install --force`"),
            None => "banger is not installed (no install metadata); install it with `sudo banger system install`".into(),
        });
        return out;
    };
    for b in &s.binaries {
        match (&b.present, &b.version) {
            (false, _) => out.push(format!(
                "{} is missing; reinstall with `sudo banger system install`",
                b.path.display()
            )),
            (true, None) => out.push(format!(
                "{} did not report a version; reinstall with `sudo banger system install`",
                b.path.display()
            )),
            (true, Some(v)) if *v != meta.version => out.push(format!(
                "{} is version {v} but the install metadata says {}; reinstall with `sudo banger system install`",
                b.path.display(),
                meta.version
            )),
            _ => {}
        }
    }
    for (unit, present) in &s.unit_files {
        if !present {
            out.push(format!(
                "unit file {unit} is missing; reinstall with `sudo banger system install`"
            ));
        }
    }
    for (what, state) in [
        ("udev rule", Some(&s.udev_rule)),
        ("LVM filter", s.lvm_filter.as_ref()),
    ] {
        match state {
            None | Some(GuardState::Current) => {}
            Some(GuardState::Missing) => out.push(format!(
                "banger's {what} is missing, so the host's tools may act on guest-written disks; reinstall with `sudo banger system install`"
            )),
            Some(GuardState::Stale(why)) => out.push(format!(
                "banger's {what} is out of date ({why}); reinstall with `sudo banger system install`"
            )),
        }
    }
    if let Some(units) = &s.units {
        for u in units {
            if u.active != "active" {
                out.push(format!(
                    "{} is {}; see `journalctl -u {}`, then `sudo banger system restart`",
                    u.unit,
                    if u.active.is_empty() {
                        "in an unknown state"
                    } else {
                        &u.active
                    },
                    u.unit
                ));
            }
            if u.enabled != "enabled" && !u.enabled.is_empty() {
                out.push(format!(
                    "{} is {}, so it will not start at boot; run `sudo systemctl enable {}`",
                    u.unit, u.enabled, u.unit
                ));
            }
        }
    }
    if let Some(sockets) = &s.sockets {
        let installed = s
            .binaries
            .iter()
            .find(|b| b.name == "bangerd")
            .and_then(|b| b.version.clone());
        for sock in sockets {
            if !sock.health.is_alive() {
                out.push(format!(
                    "{} does not answer on {} ({}{}); see `journalctl -u {}.service`",
                    sock.daemon,
                    sock.path.display(),
                    sock.health.as_str(),
                    sock.health
                        .detail()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default(),
                    sock.daemon
                ));
            }
            if let (Some(running), Some(installed)) = (&sock.running_version, &installed)
                && running != installed
            {
                out.push(format!(
                    "{} runs version {running} but {installed} is installed; run `sudo banger system restart`",
                    sock.daemon
                ));
            }
        }
    }
    // Failing doctor checks are the host's state, not the install's: they
    // are shown in the summary, and `banger doctor` exits non-zero for them.
    if let Some(Err(e)) = &s.doctor {
        out.push(format!("the doctor request failed: {e}"));
    }
    out
}

fn health_json(sock: &Socket) -> serde_json::Value {
    let info = match &sock.health {
        Health::Serving { info: Some(i), .. } => serde_json::json!({
            "pid": i.pid, "uid": i.uid, "mode": i.mode.to_string(),
        }),
        _ => serde_json::Value::Null,
    };
    serde_json::json!({
        "daemon": sock.daemon,
        "path": sock.path,
        "health": sock.health.as_str(),
        "detail": sock.health.detail(),
        "running_version": sock.running_version,
        "daemon_info": info,
    })
}

/// The `--json` document.
pub fn to_json(s: &Status, problems: &[String]) -> serde_json::Value {
    let binaries: Vec<_> = s
        .binaries
        .iter()
        .map(|b| serde_json::json!({"name": b.name, "path": b.path, "present": b.present, "version": b.version}))
        .collect();
    let units = s.units.as_ref().map(|us| {
        us.iter()
            .map(|u| {
                serde_json::json!({
                    "unit": u.unit, "load": u.load, "active": u.active, "sub": u.sub,
                    "enabled": u.enabled, "main_pid": u.main_pid,
                    "file": s.unit_files.iter().any(|(n, p)| *n == u.unit && *p),
                })
            })
            .collect::<Vec<_>>()
    });
    let doctor = match &s.doctor {
        None => serde_json::Value::Null,
        Some(Ok(d)) => serde_json::json!({
            "pass": d.pass, "warn": d.warn, "fail": d.fail, "findings": d.findings,
        }),
        Some(Err(e)) => serde_json::json!({ "error": e }),
    };
    serde_json::json!({
        "root": s.root,
        "installed": s.installed(),
        "owner": s.meta.as_ref().map(|m| serde_json::json!({
            "name": m.owner.name, "uid": m.owner.uid, "gid": m.owner.gid,
        })),
        "version": s.meta.as_ref().map(|m| &m.version),
        "installed_at": s.meta.as_ref().map(|m| &m.installed_at),
        "binaries": binaries,
        "host_guard": {
            "udev_rule": s.udev_rule.as_str(),
            "lvm_filter": s.lvm_filter.as_ref().map(GuardState::as_str),
        },
        "unit_files": s.unit_files.iter().map(|(u, p)| serde_json::json!({"unit": u, "present": p})).collect::<Vec<_>>(),
        "units": units,
        "sockets": s.sockets.as_ref().map(|ss| ss.iter().map(health_json).collect::<Vec<_>>()),
        "doctor": doctor,
        "healthy": problems.is_empty(),
        "problems": problems,
    })
}

/// The human table.
pub fn to_text(s: &Status, problems: &[String]) -> String {
    let mut out = String::new();
    match &s.meta {
        Some(m) => out.push_str(&format!(
            "install     banger {} for {} (uid {}), installed {}{}\n",
            m.version,
            m.owner.name,
            m.owner.uid,
            m.installed_at,
            if s.root == Path::new("/") {
                String::new()
            } else {
                format!(" under {}", s.root.display())
            }
        )),
        None => out.push_str("install     not installed\n"),
    }
    for b in &s.binaries {
        out.push_str(&format!(
            "binary      {:<13} {:<10} {}\n",
            b.name,
            match (&b.present, &b.version) {
                (false, _) => "missing",
                (true, Some(v)) => v.as_str(),
                (true, None) => "unknown",
            },
            b.path.display()
        ));
    }
    match &s.units {
        Some(units) => {
            for u in units {
                let state = if u.active.is_empty() {
                    // systemctl gave no answer; `load` says why.
                    u.load.clone()
                } else {
                    format!(
                        "{}/{} ({})",
                        u.active,
                        u.sub,
                        if u.enabled.is_empty() {
                            "no unit file"
                        } else {
                            &u.enabled
                        }
                    )
                };
                out.push_str(&format!(
                    "unit        {:<21} {state}{}\n",
                    u.unit,
                    u.main_pid.map(|p| format!(" pid {p}")).unwrap_or_default()
                ));
            }
        }
        None => {
            for (u, present) in &s.unit_files {
                out.push_str(&format!(
                    "unit        {u:<21} file {}\n",
                    if *present { "present" } else { "missing" }
                ));
            }
        }
    }
    out.push_str(&format!(
        "guard       udev rule     {}\n",
        s.udev_rule.as_str()
    ));
    out.push_str(&format!(
        "guard       LVM filter    {}\n",
        s.lvm_filter
            .as_ref()
            .map(GuardState::as_str)
            .unwrap_or("no lvm2")
    ));
    for sock in s.sockets.iter().flatten() {
        out.push_str(&format!(
            "socket      {:<13} {:<8} version {} {}{}\n",
            sock.daemon,
            sock.health.as_str(),
            sock.running_version.as_deref().unwrap_or("unknown"),
            sock.path.display(),
            sock.health
                .detail()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ));
    }
    match &s.doctor {
        Some(Ok(d)) => {
            out.push_str(&format!(
                "doctor      {} pass, {} warn, {} fail\n",
                d.pass, d.warn, d.fail
            ));
            for f in &d.findings {
                out.push_str(&format!("            {f}\n"));
            }
            if d.fail > 0 {
                out.push_str("            (run `banger doctor` for how to fix each)\n");
            }
        }
        Some(Err(e)) => out.push_str(&format!("doctor      failed: {e}\n")),
        None => {}
    }
    if problems.is_empty() {
        out.push_str("status      healthy\n");
    } else {
        for p in problems {
            out.push_str(&format!("problem     {p}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use banger_proto::install::{InstallPaths, Owner};

    use super::*;

    fn meta() -> InstallMeta {
        InstallMeta {
            owner: Owner {
                name: "dev".into(),
                uid: 1000,
                gid: 1000,
            },
            version: "1.0.0".into(),
            installed_at: "t".into(),
            paths: InstallPaths {
                bin_dir: "/usr/local/bin".into(),
                state_dir: "/var/lib/banger".into(),
                runtime_dir: "/run/banger".into(),
                root_socket: "/run/banger-root/root.sock".into(),
                root_state_dir: "/var/lib/banger-root".into(),
                state_dev: None,
            },
            vmm: Default::default(),
            network: Default::default(),
            jail: Default::default(),
        }
    }

    fn unit(name: &str, active: &str) -> UnitState {
        UnitState {
            unit: name.into(),
            load: "loaded".into(),
            active: active.into(),
            sub: "running".into(),
            enabled: "enabled".into(),
            main_pid: Some(10),
            cgroup: None,
        }
    }

    fn serving(daemon: &'static str, version: &str) -> Socket {
        Socket {
            daemon,
            path: "/run/x.sock".into(),
            health: Health::Serving {
                version: version.into(),
                info: None,
            },
            running_version: Some(version.into()),
        }
    }

    fn healthy() -> Status {
        Status {
            root: "/".into(),
            meta: Some(meta()),
            meta_error: None,
            binaries: BINARIES
                .iter()
                .map(|name| Binary {
                    name,
                    path: format!("/usr/local/bin/{name}").into(),
                    present: true,
                    version: Some("1.0.0".into()),
                })
                .collect(),
            unit_files: vec![(HELPER_UNIT, true), (OWNER_UNIT, true), (VMS_UNIT, true)],
            udev_rule: GuardState::Current,
            lvm_filter: Some(GuardState::Current),
            units: Some(vec![
                unit(HELPER_UNIT, "active"),
                unit(OWNER_UNIT, "active"),
                UnitState {
                    sub: "exited".into(),
                    main_pid: None,
                    ..unit(VMS_UNIT, "active")
                },
            ]),
            sockets: Some(vec![
                serving("bangerd-root", "1.0.0"),
                serving("bangerd", "1.0.0"),
            ]),
            doctor: Some(Ok(DoctorSummary {
                pass: 10,
                warn: 1,
                fail: 0,
                findings: vec!["warn dm: absent".into()],
            })),
        }
    }

    #[test]
    fn a_healthy_install_has_no_problems() {
        assert_eq!(problems(&healthy()), Vec::<String>::new());
        let text = to_text(&healthy(), &[]);
        assert!(text.ends_with("status      healthy\n"), "{text}");
        let json = to_json(&healthy(), &[]);
        assert_eq!(json["healthy"], true);
        assert_eq!(json["doctor"]["warn"], 1);
    }

    #[test]
    fn not_installed_says_how_to_install() {
        let s = Status {
            meta: None,
            units: None,
            sockets: None,
            doctor: None,
            ..healthy()
        };
        let p = problems(&s);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("not installed"), "{p:?}");
        assert!(p[0].contains("sudo banger system install"), "{p:?}");
    }

    #[test]
    fn a_stale_daemon_asks_for_a_restart() {
        let mut s = healthy();
        s.sockets.as_mut().unwrap()[1] = serving("bangerd", "0.9.0");
        let p = problems(&s);
        assert_eq!(
            p,
            ["bangerd runs version 0.9.0 but 1.0.0 is installed; run `sudo banger system restart`"]
        );
    }

    #[test]
    fn stopped_units_dead_sockets_and_failing_checks_are_reported() {
        let mut s = healthy();
        s.units.as_mut().unwrap()[0] = UnitState {
            enabled: "disabled".into(),
            ..unit(HELPER_UNIT, "failed")
        };
        s.sockets.as_mut().unwrap()[0] = Socket {
            daemon: "bangerd-root",
            path: "/run/banger-root/root.sock".into(),
            health: Health::Missing,
            running_version: None,
        };
        s.doctor = Some(Err("timed out".into()));
        let p = problems(&s);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].starts_with("bangerd-root.service is failed; see `journalctl"));
        assert!(p[1].contains("is disabled, so it will not start at boot"));
        assert!(
            p[2].starts_with(
                "bangerd-root does not answer on /run/banger-root/root.sock (missing)"
            )
        );
        assert_eq!(p[3], "the doctor request failed: timed out");
    }

    #[test]
    fn failing_doctor_checks_are_shown_not_counted_against_the_install() {
        let mut s = healthy();
        s.doctor = Some(Ok(DoctorSummary {
            pass: 1,
            warn: 0,
            fail: 2,
            findings: vec!["fail kvm: unusable".into()],
        }));
        assert!(problems(&s).is_empty());
        let text = to_text(&s, &[]);
        assert!(
            text.contains("doctor      1 pass, 0 warn, 2 fail\n            fail kvm: unusable\n"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_or_stale_guard_is_a_problem() {
        let mut s = healthy();
        s.udev_rule = GuardState::Missing;
        s.lvm_filter = Some(GuardState::Stale("not in effect".into()));
        let p = problems(&s);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("banger's udev rule is missing"), "{p:?}");
        assert!(p[1].starts_with("banger's LVM filter is out of date (not in effect)"));
        s.lvm_filter = None;
        assert_eq!(problems(&s).len(), 1);
        let json = to_json(&s, &[]);
        assert_eq!(json["host_guard"]["udev_rule"], "missing");
        assert_eq!(json["host_guard"]["lvm_filter"], serde_json::Value::Null);
        assert!(to_text(&s, &[]).contains("guard       LVM filter    no lvm2\n"));
    }

    #[test]
    fn a_refusing_helper_is_alive() {
        let mut s = healthy();
        s.sockets.as_mut().unwrap()[0].health = Health::Refused {
            message: "uid 0 may not use the banger root helper".into(),
        };
        assert!(problems(&s).is_empty());
    }

    #[test]
    fn binaries_that_disagree_with_the_metadata_are_named() {
        let mut s = healthy();
        s.binaries[0].version = Some("2.0.0".into());
        s.binaries[2].present = false;
        s.units = None;
        s.sockets = None;
        let p = problems(&s);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains(
            "/usr/local/bin/bangerd is version 2.0.0 but the install metadata says 1.0.0"
        ));
        assert!(p[1].contains("/usr/local/bin/banger is missing"));
    }
}
