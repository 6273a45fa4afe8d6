use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use banger_proto::RpcError;
use banger_proto::privops::VmmKind;

use super::*;

/// Records systemctl calls; every call succeeds.
#[derive(Default)]
struct FakeSd {
    calls: RefCell<Vec<String>>,
    fail_start: bool,
    /// The helper unit's `ControlGroup=`, when it has one.
    cgroup: Option<String>,
    /// The holder's, when it has one (else `cgroup`).
    holder_cgroup: Option<String>,
}

impl Systemd for FakeSd {
    fn run(&self, args: &[&str], _: Duration) -> Result<(), SystemdError> {
        self.calls.borrow_mut().push(args.join(" "));
        if self.fail_start && args[0] == "start" {
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
        self.calls.borrow_mut().push(args[0].to_string());
        // No cgroup unless the test gives one: the leftover-process step
        // then has nothing to look at.
        let holder = args.last() == Some(&VMS_UNIT);
        let cgroup = holder
            .then_some(self.holder_cgroup.as_ref())
            .flatten()
            .or(self.cgroup.as_ref())
            .map(|c| format!("ControlGroup={c}\n"))
            .unwrap_or_default();
        Ok((true, format!("ActiveState=active\n{cgroup}")))
    }
}

/// The daemon side, recording into a shared log.
#[derive(Clone, Default)]
struct FakeDaemon {
    log: Rc<RefCell<Vec<String>>>,
    vms: Vec<(&'static str, &'static str)>,
    stop_fails: bool,
    teardown_errors: Vec<String>,
}

fn vm(name: &str, state: &str) -> VmInfo {
    VmInfo {
        id: "0".repeat(32),
        name: name.into(),
        state: state.parse().unwrap(),
        state_reason: None,
        image: "debian".into(),
        vmm: VmmKind::Qemu,
        vcpus: 1,
        memory_mib: 512,
        disk_bytes: 0,
        nat: false,
        ip: None,
        mac: None,
        dns_name: format!("{name}.vm"),
        tap: None,
        pid: None,
        saved: false,
        created_at: 0,
        updated_at: 0,
    }
}

impl Daemon for FakeDaemon {
    fn vms(&mut self) -> Result<Vec<VmInfo>, ClientError> {
        self.log.borrow_mut().push("vm ls".into());
        Ok(self.vms.iter().map(|(n, s)| vm(n, s)).collect())
    }
    fn stop_vm(&mut self, name: &str) -> Result<(), ClientError> {
        self.log.borrow_mut().push(format!("vm stop {name}"));
        if self.stop_fails {
            return Err(ClientError::Remote(RpcError::new(
                ErrorCode::Internal,
                "guest did not power off",
            )));
        }
        Ok(())
    }
    fn kill_vm(&mut self, name: &str) -> Result<(), ClientError> {
        self.log.borrow_mut().push(format!("vm kill {name}"));
        Ok(())
    }
    fn teardown(&mut self) -> Result<TeardownReport, ClientError> {
        self.log.borrow_mut().push("host teardown".into());
        Ok(TeardownReport {
            removed: vec!["bridge banger0".into()],
            errors: self.teardown_errors.clone(),
        })
    }
}

/// A root with what `install --root` writes (contents do not matter).
fn installed() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for d in [
        "etc/banger",
        "etc/systemd/system",
        "usr/local/bin",
        "var/lib/banger/images",
        "var/lib/banger-root",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let owner = super::super::plan::OwnerAccount {
        name: "dev".into(),
        uid: 1000,
        gid: 1000,
        home: "/home/dev".into(),
    };
    let meta = super::super::plan::metadata(&owner, "t".into());
    std::fs::write(r.join("etc/banger/install.toml"), meta.to_toml()).unwrap();
    for f in [
        "etc/systemd/system/bangerd.service",
        "etc/systemd/system/bangerd-root.service",
        "etc/systemd/system/banger-vms.service",
        "usr/local/bin/bangerd",
        "usr/local/bin/bangerd-root",
        "usr/local/bin/banger",
        "var/lib/banger/images/x.ext4",
        "var/lib/banger-root/journal.json",
    ] {
        std::fs::write(r.join(f), "x").unwrap();
    }
    dir
}

fn req(root: &Path, live: bool, purge: bool, force: bool) -> UninstallRequest {
    UninstallRequest {
        root: root.to_path_buf(),
        live,
        purge,
        force,
    }
}

fn run(
    r: &UninstallRequest,
    sd: &FakeSd,
    daemon: Option<FakeDaemon>,
) -> Result<Report, UninstallError> {
    let mut connect = |_: &InstallPaths| -> Result<Box<dyn Daemon>, ClientError> {
        match &daemon {
            Some(d) => Ok(Box::new(d.clone())),
            None => Err(ClientError::Connect {
                socket: "/run/banger/bangerd.sock".into(),
                source: io::Error::from(io::ErrorKind::ConnectionRefused),
            }),
        }
    };
    uninstall(r, sd, &mut connect)
}

fn left(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for d in ["etc", "usr/local/bin", "var/lib", "etc/systemd/system"] {
        for e in std::fs::read_dir(root.join(d)).unwrap() {
            out.push(format!("{d}/{}", e.unwrap().file_name().to_string_lossy()));
        }
    }
    out.sort();
    out
}

#[test]
fn a_root_uninstall_removes_the_files_and_keeps_the_data() {
    let dir = installed();
    let sd = FakeSd::default();
    let r = run(&req(dir.path(), false, false, false), &sd, None).unwrap();
    assert!(sd.calls.borrow().is_empty(), "--root never calls systemctl");
    assert_eq!(r.owner.as_deref(), Some("dev"));
    assert_eq!(r.removed.len(), 8, "{:?}", r.removed);
    assert_eq!(
        left(dir.path()),
        ["etc/systemd", "var/lib/banger", "var/lib/banger-root"]
    );
    assert_eq!(r.kept.len(), 2);
    assert!(to_text(&r).contains("kept       "));
    // A second run finds nothing to uninstall.
    let err = run(&req(dir.path(), false, false, false), &sd, None).unwrap_err();
    assert!(matches!(err, UninstallError::NotInstalled { .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::NotFound);
}

#[test]
fn purge_removes_the_state_too() {
    let dir = installed();
    let r = run(
        &req(dir.path(), false, true, false),
        &FakeSd::default(),
        None,
    )
    .unwrap();
    assert_eq!(left(dir.path()), ["etc/systemd"]);
    assert!(r.kept.is_empty());
}

#[test]
fn a_symlinked_state_dir_is_not_followed_by_purge() {
    let dir = installed();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("precious"), "x").unwrap();
    std::fs::remove_dir_all(dir.path().join("var/lib/banger")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("var/lib/banger")).unwrap();
    let err = run(
        &req(dir.path(), false, true, false),
        &FakeSd::default(),
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("is a symlink"), "{err}");
    assert!(elsewhere.path().join("precious").exists());
}

#[test]
fn the_live_sequence_tears_down_before_stopping() {
    let dir = installed();
    let sd = FakeSd::default();
    let d = FakeDaemon {
        vms: vec![("old", "stopped")],
        ..FakeDaemon::default()
    };
    let r = run(&req(dir.path(), true, false, false), &sd, Some(d.clone())).unwrap();
    assert_eq!(*d.log.borrow(), ["vm ls", "host teardown"]);
    assert_eq!(r.host_objects, ["bridge banger0"]);
    assert_eq!(
        *sd.calls.borrow(),
        [
            "start bangerd-root.service bangerd.service",
            "show",
            "show",
            "stop bangerd.service",
            "stop bangerd-root.service",
            "stop banger-vms.service",
            "disable bangerd-root.service bangerd.service banger-vms.service",
            "daemon-reload",
            "reset-failed bangerd-root.service bangerd.service banger-vms.service",
        ]
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

#[test]
fn running_vms_refuse_without_force_and_touch_nothing() {
    let dir = installed();
    let sd = FakeSd::default();
    let d = FakeDaemon {
        vms: vec![("a", "running"), ("b", "stopped"), ("c", "starting")],
        ..FakeDaemon::default()
    };
    let err = run(&req(dir.path(), true, false, false), &sd, Some(d.clone())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "2 VM(s) still running: a, c; stop them (`banger vm stop NAME`) or pass --force to stop them"
    );
    assert_eq!(err.code(), ErrorCode::InvalidState);
    assert_eq!(*d.log.borrow(), ["vm ls"]);
    assert_eq!(left(dir.path()).len(), 10, "nothing removed");
}

#[test]
fn force_stops_vms_and_kills_those_that_will_not_stop() {
    let dir = installed();
    let sd = FakeSd::default();
    let d = FakeDaemon {
        vms: vec![("a", "running")],
        stop_fails: true,
        ..FakeDaemon::default()
    };
    let r = run(&req(dir.path(), true, false, true), &sd, Some(d.clone())).unwrap();
    assert_eq!(
        *d.log.borrow(),
        ["vm ls", "vm stop a", "vm kill a", "host teardown"]
    );
    assert_eq!(r.vms_stopped, ["a"]);
    assert!(r.warnings[0].contains("did not stop"), "{:?}", r.warnings);
}

#[test]
fn teardown_errors_stop_the_uninstall_unless_forced() {
    let dir = installed();
    let d = FakeDaemon {
        teardown_errors: vec!["deleting tap bangertap0: busy".into()],
        ..FakeDaemon::default()
    };
    let sd = FakeSd::default();
    let err = run(&req(dir.path(), true, false, false), &sd, Some(d.clone())).unwrap_err();
    assert!(err.to_string().contains("bangertap0: busy"), "{err}");
    assert!(!sd.calls.borrow().iter().any(|c| c.starts_with("stop")));
    assert_eq!(left(dir.path()).len(), 10);

    let r = run(
        &req(dir.path(), true, false, true),
        &FakeSd::default(),
        Some(d),
    )
    .unwrap();
    assert!(r.warnings[0].contains("left behind"), "{:?}", r.warnings);
    assert_eq!(left(dir.path()).len(), 3);
}

#[test]
fn an_unreachable_daemon_refuses_unless_forced() {
    let dir = installed();
    let sd = FakeSd {
        fail_start: true,
        ..FakeSd::default()
    };
    let err = run(&req(dir.path(), true, false, false), &sd, None).unwrap_err();
    assert!(matches!(err, UninstallError::DaemonUnreachable(_)), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(left(dir.path()).len(), 10);

    let r = run(
        &req(dir.path(), true, false, true),
        &FakeSd::default(),
        None,
    )
    .unwrap();
    assert!(
        r.warnings[0].starts_with("bangerd was not reachable"),
        "{:?}",
        r.warnings
    );
    assert_eq!(left(dir.path()).len(), 3);
}

/// Kill what runs in each of a test's cgroups and remove them, deepest
/// first.
fn remove_test_cgroups(dirs: &[&Path]) {
    for dir in dirs {
        let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        let _ = std::fs::remove_dir(dir);
    }
}

/// Design part 3: a jailed VMM runs in `vm-<id>` beneath the holder's
/// cgroup (beneath the helper's unit in an earlier layout), and
/// uninstall read only the unit root's `cgroup.procs`, so it never saw (or
/// killed) a VMM the daemon could not stop. It kills each unit's whole
/// tree now and removes the emptied child cgroups. A real cgroup2 tree
/// beneath this test's own stands for the units' (the fake systemd gives
/// it as both units' `ControlGroup=`; needs root).
#[test]
fn uninstall_kills_what_is_left_in_the_units_vm_cgroups_and_removes_them() {
    use banger_host::runner::{Cmd, Runner, SpawnOptions};
    let own = banger_host::probe::own_cgroup2_dir().unwrap();
    let mount = banger_host::probe::probe_cgroup_v2().cgroup2_mount.unwrap();
    let unit = own.join(format!(
        "banger-test-{}-uninstall.service",
        std::process::id()
    ));
    let vm = unit.join("vm-0123456789abcdef0123456789abcdef");
    std::fs::create_dir(&unit).unwrap();
    std::fs::create_dir(unit.join("helper")).unwrap();
    std::fs::create_dir(&vm).unwrap();
    let mut vmm = Runner
        .spawn(&Cmd::new("sleep").arg("300"), SpawnOptions::default())
        .unwrap();
    std::fs::write(vm.join("cgroup.procs"), vmm.pid().to_string()).unwrap();
    let sd = FakeSd {
        cgroup: Some(format!("/{}", unit.strip_prefix(&mount).unwrap().display())),
        ..FakeSd::default()
    };
    let mut report = Report::default();
    stop_units(&sd, &mut report);
    let exited = vmm.wait_timeout(Duration::from_secs(5)).unwrap();
    let _ = vmm.kill();
    let children: Vec<_> = std::fs::read_dir(&unit)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name())
        .collect();
    remove_test_cgroups(&[&vm, &unit.join("helper"), &unit]);
    assert_eq!(report.leftover_processes, [vmm.pid()]);
    assert!(
        exited.is_some(),
        "the VMM in vm-<id> survived the uninstall"
    );
    assert!(children.is_empty(), "child cgroups left: {children:?}");
}

/// Hostile read of the cgroup branch, finding 1: the VMs' cgroups are the
/// holder's (`banger-vms.service/vm-<id>`). Uninstall kills what is left
/// in each `vm-*` and removes it, but leaves the holder's own process in
/// `keep/` to the holder's stop (systemd's; the fake here does nothing).
/// Real cgroup2 directories beneath this test's own (needs root).
#[test]
fn uninstall_kills_what_is_left_in_the_holders_vm_cgroups_but_not_its_keeper() {
    use banger_host::runner::{Cmd, Runner, SpawnOptions};
    let own = banger_host::probe::own_cgroup2_dir().unwrap();
    let mount = banger_host::probe::probe_cgroup_v2().cgroup2_mount.unwrap();
    let base = own.join(format!("banger-test-{}-holder", std::process::id()));
    let unit = base.join("bangerd-root.service");
    let holder = base.join("banger-vms.service");
    let vm = holder.join("vm-0123456789abcdef0123456789abcdef");
    let keep = holder.join("keep");
    for d in [&base, &unit, &holder, &vm, &keep] {
        std::fs::create_dir(d).unwrap();
    }
    let sleep = || {
        Runner
            .spawn(&Cmd::new("sleep").arg("300"), SpawnOptions::default())
            .unwrap()
    };
    let (mut vmm, mut keeper) = (sleep(), sleep());
    std::fs::write(vm.join("cgroup.procs"), vmm.pid().to_string()).unwrap();
    std::fs::write(keep.join("cgroup.procs"), keeper.pid().to_string()).unwrap();
    let rel = |d: &Path| format!("/{}", d.strip_prefix(&mount).unwrap().display());
    let sd = FakeSd {
        cgroup: Some(rel(&unit)),
        holder_cgroup: Some(rel(&holder)),
        ..FakeSd::default()
    };
    let mut report = Report::default();
    stop_units(&sd, &mut report);
    let exited = vmm.wait_timeout(Duration::from_secs(5)).unwrap();
    let _ = vmm.kill();
    let keeper_ran = keeper
        .wait_timeout(Duration::from_millis(100))
        .unwrap()
        .is_none();
    let _ = keeper.kill();
    let _ = keeper.wait_timeout(Duration::from_secs(5));
    let vm_left = vm.exists();
    let keep_left = keep.exists();
    remove_test_cgroups(&[&vm, &keep, &holder, &unit, &base]);
    assert_eq!(report.leftover_processes, [vmm.pid()]);
    assert!(
        exited.is_some(),
        "the VMM in vm-<id> survived the uninstall"
    );
    assert!(!vm_left, "vm-<id> left");
    assert!(
        keeper_ran,
        "the holder's own process was killed by uninstall"
    );
    assert!(keep_left, "keep/ was removed under the holder");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}
