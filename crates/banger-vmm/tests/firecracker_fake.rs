//! The Firecracker driver against `banger-fake-firecracker`, a recording
//! fake that validates every request against the swagger spec and answers
//! like Firecracker; plus start-up failures with shell scripts standing in
//! for the binary. Every process started here is stopped through the
//! driver's pidfd and checked gone.

mod firecracker_support;
mod netns;

use std::time::{Duration, Instant};

use banger_host::jail::testing::status_field_of as status_field;
use banger_vmm::VmmError;
use banger_vmm::firecracker::{
    ApiRequest, FirecrackerDriver, FirecrackerVm, InstanceState, Shutdown, VmStatus, log_path,
};
use firecracker_support::{
    alive, fake_binary, jailed_files, killed_if_failing, launch, read_pid, read_record,
    sample_spec, script, slot_run_dir, slot_uid, write_fake_config,
};
use serde_json::{Value, json};

fn driver() -> FirecrackerDriver {
    FirecrackerDriver::new(fake_binary())
}

#[test]
fn launch_sends_the_sequence_and_a_graceful_shutdown_ends_the_process() {
    let dir = tempfile::tempdir().unwrap();
    write_fake_config(dir.path(), "exit", json!([]));
    let spec = sample_spec(dir.path());
    let mut vm = launch(&driver(), &spec).unwrap();
    let pid = vm.pid() as i32;
    assert_eq!(read_pid(dir.path(), "fake-firecracker.pid"), pid);

    let record = read_record(dir.path());
    let calls: Vec<String> = record
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap(),
                r["status"]
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            "PUT /logger 204",
            "PUT /machine-config 204",
            "PUT /boot-source 204",
            "PUT /drives/root 204",
            "PUT /drives/work 204",
            "PUT /network-interfaces/eth0 204",
            "PUT /vsock 204",
            "PUT /actions 204",
        ]
    );
    let body = |i: usize| record[i]["body"].clone();
    assert_eq!(
        body(0),
        json!({"log_path": log_path(&spec).to_str().unwrap(), "level": "Info",
               "show_level": true, "show_log_origin": false})
    );
    assert_eq!(body(1), json!({"vcpu_count": 2, "mem_size_mib": 512}));
    assert_eq!(body(2)["boot_args"], json!(spec.cmdline));
    assert_eq!(body(3)["is_root_device"], json!(true));
    assert_eq!(body(4)["drive_id"], json!("work"));
    assert_eq!(body(5)["host_dev_name"], json!("bangertap3"));
    assert_eq!(body(6)["guest_cid"], json!(7));
    assert_eq!(body(7), json!({"action_type": "InstanceStart"}));
    // The file Firecracker is told to open exists before it is asked to;
    // no metrics file (none is configured: it would only grow).
    assert!(log_path(&spec).is_file());
    assert!(!spec.run_dir.join("firecracker.metrics").exists());
    // The fake's stdout is the serial log.
    let serial = std::fs::read_to_string(&spec.serial_log).unwrap();
    assert!(
        serial.contains("fake firecracker 0123456789abcdef"),
        "{serial}"
    );

    match vm.status().unwrap() {
        VmStatus::Live(info) => {
            assert_eq!(info.state, InstanceState::Running);
            assert_eq!(info.id, spec.vm_id);
        }
        other => panic!("{other:?}"),
    }
    let outcome = vm.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(outcome, Shutdown::Graceful("exit status: 0".into()));
    assert!(!alive(pid));
    assert!(!spec.api_socket().exists());
    // The resume is sent whatever the state (no `GET /` first), then
    // the keys.
    let record = read_record(dir.path());
    let last: Vec<_> = record[record.len() - 2..]
        .iter()
        .map(|r| (r["method"].clone(), r["path"].clone(), r["body"].clone()))
        .collect();
    assert_eq!(
        last,
        [
            (json!("PATCH"), json!("/vm"), json!({"state": "Resumed"})),
            (
                json!("PUT"),
                json!("/actions"),
                json!({"action_type": "SendCtrlAltDel"})
            ),
        ]
    );
    assert!(matches!(vm.status().unwrap(), VmStatus::Exited(_)));
}

#[test]
fn a_firecracker_fault_surfaces_verbatim_and_nothing_is_left_running() {
    let dir = tempfile::tempdir().unwrap();
    let fault = "Unable to create the block device: BackingFile(Os { code: 2, kind: NotFound })";
    write_fake_config(
        dir.path(),
        "exit",
        json!([{"method": "PUT", "path": "/drives/work", "status": 400, "fault_message": fault}]),
    );
    let spec = sample_spec(dir.path());
    let err = launch(&driver(), &spec).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, VmmError::Api { .. }), "{msg}");
    assert!(msg.contains("PUT /drives/work failed (400)"), "{msg}");
    assert!(msg.contains(fault), "{msg}");
    let pid = read_pid(dir.path(), "fake-firecracker.pid");
    assert!(!alive(pid), "firecracker pid {pid} left running");
    // Nothing after the failed call was sent: no InstanceStart.
    let record = read_record(dir.path());
    assert_eq!(record.last().unwrap()["path"], json!("/drives/work"));
    assert!(!spec.api_socket().exists());
}

#[test]
fn the_fake_refuses_bodies_the_spec_refuses_and_the_error_says_why() {
    let dir = tempfile::tempdir().unwrap();
    write_fake_config(dir.path(), "exit", json!([]));
    let mut vm = launch(&driver(), &sample_spec(dir.path())).unwrap();
    let bad = ApiRequest {
        method: "PUT",
        path: "/actions".into(),
        body: Some(json!({"action_type": "Reboot"})),
    };
    let msg = vm.api().send(&bad).unwrap_err().to_string();
    assert!(msg.contains("PUT /actions failed (400)"), "{msg}");
    assert!(msg.contains("\"Reboot\" is not one of"), "{msg}");
    // Pre-boot calls after InstanceStart are refused as Firecracker does.
    let late = ApiRequest::put(
        "/machine-config",
        &json!({"vcpu_count": 1, "mem_size_mib": 128}),
    );
    let msg = vm.api().send(&late).unwrap_err().to_string();
    assert!(msg.contains("not supported after starting"), "{msg}");
    vm.kill().unwrap();
}

#[test]
fn a_process_that_exits_during_start_up_reports_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let bin = script(
        dir.path(),
        "firecracker",
        "#!/bin/sh\necho 'Error creating the VMM: Kvm(Error(13))' >&2\nexit 3\n",
    );
    let spec = sample_spec(dir.path());
    let err = launch(&FirecrackerDriver::new(bin), &spec).unwrap_err();
    let msg = err.to_string();
    match &err {
        VmmError::EarlyExit { status, tail, .. } => {
            assert_eq!(status, "exit status: 3");
            assert!(tail.contains("Kvm(Error(13))"), "{tail}");
        }
        other => panic!("expected EarlyExit, got {other}"),
    }
    assert!(
        msg.starts_with("firecracker exited during start-up"),
        "{msg}"
    );
}

#[test]
fn an_api_socket_that_never_appears_times_out_and_the_process_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    // $2 is the API socket path: record the pid beside it, then hang.
    let bin = script(
        dir.path(),
        "firecracker",
        "#!/bin/sh\necho $$ > \"$(dirname \"$2\")/script.pid\"\nexec sleep 30\n",
    );
    let mut driver = FirecrackerDriver::new(bin);
    driver.api_timeout = Duration::from_millis(500);
    let start = Instant::now();
    let err = launch(&driver, &sample_spec(dir.path())).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(
            err,
            VmmError::Timeout {
                what: "open its API socket",
                ..
            }
        ),
        "{err}"
    );
    let pid = read_pid(dir.path(), "script.pid");
    assert!(!alive(pid), "pid {pid} left running");
}

#[test]
fn shutdown_kills_a_guest_that_ignores_ctrl_alt_del() {
    let dir = tempfile::tempdir().unwrap();
    write_fake_config(dir.path(), "ignore", json!([]));
    let mut vm = launch(&driver(), &sample_spec(dir.path())).unwrap();
    let pid = vm.pid() as i32;
    let start = Instant::now();
    let outcome = vm.shutdown(Duration::from_millis(400)).unwrap();
    assert_eq!(outcome, Shutdown::Killed);
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert!(!alive(pid));
    let record = read_record(dir.path());
    assert_eq!(
        record.last().unwrap()["body"],
        json!({"action_type": "SendCtrlAltDel"})
    );
    // A second shutdown sees the exit and does nothing else.
    assert!(matches!(
        vm.shutdown(Duration::from_secs(1)).unwrap(),
        Shutdown::AlreadyExited(_)
    ));
}

#[test]
fn a_missing_binary_is_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-firecracker-here");
    let err = launch(&FirecrackerDriver::new(&missing), &sample_spec(dir.path())).unwrap_err();
    assert!(matches!(err, VmmError::BinaryMissing { .. }), "{err}");
    assert!(err.to_string().contains(missing.to_str().unwrap()), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // A bare name is not looked up on PATH, even if one exists there.
    let err = launch(&FirecrackerDriver::new("sh"), &sample_spec(dir.path())).unwrap_err();
    assert!(matches!(err, VmmError::BinaryMissing { .. }), "{err}");
}

#[test]
fn a_bad_spec_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    write_fake_config(dir.path(), "exit", json!([]));
    let mut spec = sample_spec(dir.path());
    spec.mac = "not-a-mac".into();
    let err = launch(&driver(), &spec).unwrap_err();
    assert!(err.to_string().contains("mac \"not-a-mac\""), "{err}");
    assert!(!dir.path().join("fake-firecracker.pid").exists());
}

#[test]
fn a_stale_api_socket_from_a_crashed_run_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    write_fake_config(dir.path(), "exit", json!([]));
    let spec = sample_spec(dir.path());
    drop(std::os::unix::net::UnixListener::bind(spec.api_socket()).unwrap());
    let mut vm = launch(&driver(), &spec).unwrap();
    vm.kill().unwrap();
}

#[test]
fn the_vmm_runs_as_the_requested_user_and_can_use_its_files() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let dir = tempfile::tempdir().unwrap();
    // The unprivileged VMM must be able to create its socket in run_dir.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    write_fake_config(dir.path(), "exit", json!([]));
    let mut spec = sample_spec(dir.path());
    let nobody = (65534, 65534);
    spec.run_as = Some(nobody);
    // The unprivileged VMM must be able to execute its binary: the build's
    // copy may sit in a checkout other users cannot enter (e.g. under a
    // 0700 /root), so it runs from a copy in the test's own directory.
    let binary = dir.path().join("firecracker");
    std::fs::copy(fake_binary(), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut vm = launch(&FirecrackerDriver::new(binary), &spec).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", vm.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
    assert_eq!(uids, ["65534"; 4], "{uid_line}");
    let m = std::fs::metadata(log_path(&spec)).unwrap();
    assert_eq!((m.uid(), m.gid()), nobody);
    let record: Vec<Value> = read_record(dir.path());
    assert_eq!(record.len(), 8);
    vm.kill().unwrap();
}

/// Issue #13 finding 1: the driver opened the log and metrics files in
/// `run_dir` with `O_NOFOLLOW` on the last component only, so a `run_dir`
/// that is a symlink (the owner's `run/` swapped for one) made root create,
/// truncate and hand over files in the directory it points at. A
/// symlinked run dir is refused now, before anything starts, and the files
/// there keep their bytes and mode.
#[test]
fn a_symlinked_run_dir_is_refused_and_nothing_there_changes() {
    use std::os::unix::fs::PermissionsExt as _;
    let base = tempfile::tempdir().unwrap();
    let elsewhere = base.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let files = ["firecracker.log", "firecracker.metrics"].map(|n| elsewhere.join(n));
    for f in &files {
        std::fs::write(f, "precious\n").unwrap();
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let link = base.path().join("run");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let bin = script(base.path(), "firecracker", "#!/bin/sh\nexit 1\n");
    let mut spec = sample_spec(&link);
    spec.serial_log = base.path().join("serial.log");
    let err = launch(&FirecrackerDriver::new(bin), &spec).unwrap_err();
    for f in &files {
        let m = std::fs::metadata(f).unwrap();
        assert_eq!(
            (
                std::fs::read_to_string(f).unwrap().as_str(),
                m.permissions().mode() & 0o7777
            ),
            ("precious\n", 0o600),
            "{} changed through the symlinked run dir ({err})",
            f.display()
        );
    }
    assert!(err.to_string().contains("run directory"), "{err}");
}

/// The fake launched jailed as `uid` in `dir`: its `run/` (configured to
/// exit on `SendCtrlAltDel`), its spec — a writable root drive the
/// slot's and a read-only work drive readable by all (the grants the
/// executor gives for a launch), a kernel and a serial log in `dir`, the
/// log first made `serial_len` bytes long (sparse) — and the VM.
fn launched_jailed_fake(
    dir: &std::path::Path,
    uid: u32,
    serial_len: u64,
) -> (std::path::PathBuf, banger_vmm::LaunchSpec, FirecrackerVm) {
    let (run, spec) = jailed_fake_spec(dir, uid);
    let files = jailed_files(dir, &spec);
    files.serial.set_len(serial_len).unwrap();
    let mut tap = firecracker_support::RecordingTap::default();
    let vm = driver().launch_jailed(&spec, files, &mut tap).unwrap();
    assert_eq!(tap.calls, ["enter(netns, not ours)", "leave(netlink)"]);
    (run, spec, vm)
}

/// [`launched_jailed_fake`]'s `run/` and spec, not launched.
fn jailed_fake_spec(
    dir: &std::path::Path,
    uid: u32,
) -> (std::path::PathBuf, banger_vmm::LaunchSpec) {
    use std::os::unix::fs::PermissionsExt as _;
    let run = slot_run_dir(dir, uid);
    write_fake_config(&run, "exit", json!([]));
    let mut spec = sample_spec(&run);
    spec.run_as = Some((uid, uid));
    spec.serial_log = dir.join("serial.log");
    spec.kernel = dir.join("vmlinux");
    std::fs::write(&spec.kernel, "kernel bytes").unwrap();
    spec.drives[0].path = dir.join("root.ext4");
    spec.drives[1].path = dir.join("work.ext4");
    spec.drives[1].read_only = true;
    std::fs::write(&spec.drives[0].path, "root").unwrap();
    std::os::unix::fs::chown(&spec.drives[0].path, Some(uid), Some(uid)).unwrap();
    std::fs::write(&spec.drives[1].path, "work").unwrap();
    std::fs::set_permissions(&spec.drives[1].path, std::fs::Permissions::from_mode(0o644)).unwrap();
    (run, spec)
}

/// Hostile read of the jailed driver, F1: `RLIMIT_FSIZE` (the larger of
/// the writable drives and `VMM_MIN_FILE_SIZE`) bounds the serial log,
/// which is appended across boots, so once it had grown past the limit
/// every later boot died of `SIGXFSZ` at its first console byte. A
/// launch now empties a serial log over `SERIAL_LOG_MAX` through its
/// descriptor. The log is made sparse past the real limit (no disk used);
/// the jailed fake prints a line on its stdout (the serial log) first.
#[test]
fn a_serial_log_past_the_file_size_limit_is_emptied_at_launch() {
    let uid = slot_uid(5_000_000);
    let dir = tempfile::tempdir().unwrap();
    let past = banger_vmm::VMM_MIN_FILE_SIZE + 1;
    let (run, spec, mut vm) = launched_jailed_fake(dir.path(), uid, past);
    killed_if_failing(&mut vm, |_| {
        assert_eq!(read_pid(&run, "fake-firecracker.pid"), 1);
        let serial = std::fs::read_to_string(&spec.serial_log).unwrap();
        assert!(serial.len() < 4096, "{} bytes", serial.len());
        assert!(serial.contains("emptied at this launch"), "{serial}");
        assert!(serial.contains("fake firecracker"), "{serial}");
    });
    let outcome = vm.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(outcome, Shutdown::Graceful("exit status: 0".into()));
}

/// Hostile read of the jailed driver, F2: a read-only drive is bound
/// read-only, but opening a device node ignores the mount's read-only
/// flag, so a read-only drive that is a block device was guarded by the
/// node's mode and ACL alone. The jailed launch refuses such a drive. A
/// 0666 node of a read-only loop device stands for it.
#[test]
fn a_jailed_read_only_drive_that_is_a_block_device_is_refused() {
    let uid = slot_uid(5_200_000);
    let dir = tempfile::tempdir().unwrap();
    let (run, mut spec) = jailed_fake_spec(dir.path(), uid);
    let device = firecracker_support::LoopNode::new(dir.path());
    spec.drives[1].path = device.node.clone();
    let launched = driver().launch_jailed(
        &spec,
        jailed_files(dir.path(), &spec),
        &mut firecracker_support::RecordingTap::default(),
    );
    let err = match launched {
        Err(e) => e,
        Ok(mut vm) => {
            let record = read_record(&run);
            let killed = vm.kill();
            panic!("launched (killed: {killed:?}); the fake recorded {record:?}");
        }
    };
    let msg = err.to_string();
    assert!(
        msg.contains("drive work") && msg.contains("BlockDevice, not a regular file"),
        "{msg}"
    );
    assert!(!run.join("fake-firecracker.pid").exists(), "{msg}");
    drop(device);
}

/// Hardening after the hostile read of the jailed driver: a jailed launch
/// took `FirecrackerFiles::run` on trust as the slot uid's 0700 `run/`,
/// and bound it read-write into the jail whatever it was. A `run/` of
/// another uid, or open to others, is refused before anything is made.
#[test]
fn a_jailed_launch_refuses_a_run_dir_not_the_slots_own() {
    use std::os::unix::fs::PermissionsExt as _;
    let uid = slot_uid(5_300_000);
    let dir = tempfile::tempdir().unwrap();
    let (run, spec) = jailed_fake_spec(dir.path(), uid);
    let open = |mode: u32| std::fs::set_permissions(&run, std::fs::Permissions::from_mode(mode));
    for (owner, mode, want) in [
        (uid, 0o755, "mode 755"),
        (uid + 1, 0o700, &*format!("owned by uid {}", uid + 1)),
    ] {
        std::os::unix::fs::chown(&run, Some(owner), None).unwrap();
        open(mode).unwrap();
        // A directory of its own for each try's KVM node.
        let nodes = dir.path().join(format!("nodes-{owner}-{mode:o}"));
        std::fs::create_dir(&nodes).unwrap();
        let mut tap = firecracker_support::RecordingTap::default();
        let err = match driver().launch_jailed(&spec, jailed_files(&nodes, &spec), &mut tap) {
            Err(e) => e.to_string(),
            Ok(mut vm) => {
                let killed = vm.kill();
                panic!("launched on a run/ of uid {owner}, mode {mode:o} (killed: {killed:?})");
            }
        };
        assert!(err.contains(want), "{err}");
        assert!(!run.join("firecracker.log").exists(), "{err}");
    }
}

/// Design step 5: the tap goes into the jailed VMM's network namespace
/// for `PUT /network-interfaces` only. When it cannot go in, or cannot
/// come back, the launch fails naming the step (and that a tap still in
/// the namespace is deleted with it), the VMM is killed, and
/// `InstanceStart` is never sent; the move back is tried even after the
/// request failed.
#[test]
fn a_jailed_launch_whose_tap_cannot_move_fails_and_leaves_nothing_running() {
    let uid = slot_uid(5_300_000);
    for (step, calls, said) in [
        (
            "enter",
            vec!["enter(netns, not ours)"],
            "into the jail's network namespace: enter failed",
        ),
        (
            "leave",
            vec!["enter(netns, not ours)", "leave(netlink)"],
            "deleted with that namespace when firecracker is killed",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (run, spec) = jailed_fake_spec(dir.path(), uid);
        let mut tap = firecracker_support::RecordingTap {
            fail: Some(step),
            ..Default::default()
        };
        let err = match driver().launch_jailed(&spec, jailed_files(dir.path(), &spec), &mut tap) {
            Err(e) => e,
            Ok(mut vm) => {
                let killed = vm.kill();
                panic!("launched with a failing {step} (killed: {killed:?})");
            }
        };
        assert!(matches!(err, VmmError::JailTap { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(said), "{text}");
        assert_eq!(tap.calls, calls);
        let paths: Vec<String> = read_record(&run)
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect();
        let put = paths.iter().any(|p| p.starts_with("/network-interfaces/"));
        assert_eq!(put, step == "leave", "{paths:?}");
        assert!(!paths.iter().any(|p| p == "/actions"), "{paths:?}");
        assert!(!run.join(banger_vmm::API_SOCKET).exists(), "{text}");
    }
}

/// Design step 5, the hostile side (the host-network jail's hostile
/// read): the stand-in, jailed, attaches at `PUT /network-interfaces`
/// the tap moved into its network namespace, but not another tap of its
/// slot uid left in the test's namespace (`EPERM`: the name is no tap in
/// its namespace, and making one needs `CAP_NET_ADMIN`). Its own tap is
/// back on the bridge afterwards.
#[test]
fn a_jailed_fake_attaches_only_the_tap_moved_into_its_namespace() {
    use banger_host::net::HostNet as _;
    let uid = slot_uid(5_500_000);
    let dir = tempfile::tempdir().unwrap();
    let (own, other) = ("bangerfcf0", "bangerfcf1");
    netns::private_netns_with_tap_of(own, Some(uid));
    let net = banger_host::net::RealNet::new();
    net.create_tap(other, uid).unwrap();
    let mut moves = netns::HostTap::on_new_bridge(own, "bangerfcbr");
    let (run, mut spec) = jailed_fake_spec(dir.path(), uid);
    spec.tap = own.into();
    let config = run.join("fake-firecracker.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    c["tap_probe"] = json!([other]);
    std::fs::write(&config, c.to_string()).unwrap();
    let mut vm = driver()
        .launch_jailed(&spec, jailed_files(dir.path(), &spec), &mut moves)
        .unwrap();
    let record = read_record(&run);
    let put = record
        .iter()
        .find(|r| r["path"] == json!("/network-interfaces/eth0"))
        .expect("no PUT /network-interfaces");
    let eperm = std::io::Error::from_raw_os_error(libc::EPERM).to_string();
    assert_eq!(put["attached"], json!({own: "ok", other: eperm}), "{put}");
    let link = net.link(own).unwrap().unwrap();
    assert_eq!(
        (link.index, link.master.as_deref(), link.up),
        (moves.index, Some("bangerfcbr"), true)
    );
    vm.kill().unwrap();
}

/// The Firecracker jail's design step 4: the fake launched jailed
/// (`launch_jailed`) runs as the slot uid and gid, pid 1 of its own pid
/// namespace, sees no `/proc`, and opens its drives by the jail's paths —
/// `/drive-root` read-write, `/drive-work` read-only — where the
/// configuration names them; its log and sockets are in the
/// bound `run/`. A graceful shutdown ends it.
#[test]
fn the_fake_runs_jailed_as_its_slot_uid_and_opens_its_drives_at_the_jails_paths() {
    let uid = slot_uid(4_600_000);
    let dir = tempfile::tempdir().unwrap();
    let (run, spec, mut vm) = launched_jailed_fake(dir.path(), uid, 0);
    let pid = vm.pid() as i32;
    killed_if_failing(&mut vm, |_| {
        let me: Value = serde_json::from_str(
            &std::fs::read_to_string(run.join("fake-firecracker.self")).unwrap(),
        )
        .unwrap();
        assert_eq!(me, json!({"uid": uid, "gid": uid, "proc": false}));
        // Its own pid, as it sees it.
        assert_eq!(read_pid(&run, "fake-firecracker.pid"), 1);
        // Its stdout and stderr (the serial log) are write-only and
        // appending: it cannot read the log's earlier boots, nor write
        // anywhere but at its end (hostile read of the jailed driver, F4).
        for fd in [1, 2] {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map(|f| i32::from_str_radix(f.trim(), 8).unwrap())
                .unwrap();
            assert_eq!(flags & libc::O_ACCMODE, libc::O_WRONLY, "fd {fd}: {info}");
            assert_eq!(flags & libc::O_APPEND, libc::O_APPEND, "fd {fd}: {info}");
        }
        let ids = format!("{uid}\t{uid}\t{uid}\t{uid}");
        assert_eq!(status_field(&pid.to_string(), "Uid"), ids);
        assert_eq!(status_field(&pid.to_string(), "Gid"), ids);
        assert_eq!(status_field(&pid.to_string(), "NSpid"), format!("{pid}\t1"));
        let record = read_record(&run);
        let drives: Vec<(Value, Value)> = record
            .iter()
            .filter(|r| r["path"].as_str().unwrap().starts_with("/drives/"))
            .map(|r| (r["body"]["path_on_host"].clone(), r["opened"].clone()))
            .collect();
        assert_eq!(
            drives,
            [
                (json!("/drive-root"), json!("ok")),
                (json!("/drive-work"), json!("ok")),
            ]
        );
        let body = |path: &str| {
            record
                .iter()
                .find(|r| r["path"] == json!(path))
                .map(|r| r["body"].clone())
                .unwrap()
        };
        assert_eq!(body("/logger")["log_path"], json!("/run/firecracker.log"));
        assert_eq!(body("/boot-source")["kernel_image_path"], json!("/kernel"));
        assert_eq!(body("/vsock")["uds_path"], json!("/run/vsock.sock"));
        assert_eq!(record.last().unwrap()["status"], json!(204));
        assert!(log_path(&spec).is_file());
    });
    let outcome = vm.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(outcome, Shutdown::Graceful("exit status: 0".into()));
    assert!(!alive(pid));
    assert!(!spec.api_socket().exists());
}

/// A jailed launch runs Firecracker as the VM's slot uid, which the
/// caller gives to another VM once the launch has failed: so a failed
/// launch whose Firecracker outlives its kill must say so (QEMU's twin:
/// `qemu::tests::a_launch_whose_qemu_outlives_its_kill_says_so`). A
/// jailed stand-in that never serves its API is held (it outlives
/// `SIGKILL` while held, `banger_vmm::testing::Held`): the launch's error
/// must say it may still run.
#[test]
fn a_jailed_launch_whose_firecracker_outlives_its_kill_says_so() {
    let uid = slot_uid(4_800_000);
    let dir = tempfile::tempdir().unwrap();
    let run = slot_run_dir(dir.path(), uid);
    let mut spec = sample_spec(&run);
    spec.run_as = Some((uid, uid));
    spec.serial_log = dir.path().join("serial.log");
    spec.kernel = dir.path().join("vmlinux");
    std::fs::write(&spec.kernel, "kernel bytes").unwrap();
    for d in spec.drives.iter_mut() {
        d.path = dir.path().join(format!("{}.ext4", d.id));
        std::fs::write(&d.path, "disk").unwrap();
    }
    // The stand-in is a script on the held file: its shell runs it, then
    // waits in the kernel for the rest of it, outliving SIGKILL.
    let held = banger_vmm::testing::Held::new(b"#!/bin/sh\n");
    let mut driver = FirecrackerDriver::new(held.path());
    driver.api_timeout = Duration::from_millis(500);
    let (err, pid) = std::thread::scope(|s| {
        let launch = s.spawn(|| {
            driver
                .launch_jailed(
                    &spec,
                    jailed_files(dir.path(), &spec),
                    &mut firecracker_support::RecordingTap::default(),
                )
                .unwrap_err()
        });
        let pid = held.reader(Duration::from_secs(8));
        held.assert_outlives_kill(pid);
        (launch.join().unwrap(), pid)
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    drop(held);
    assert!(
        status.lines().any(|l| l.starts_with("Uid:")
            && l.split_whitespace().nth(1) == Some(&uid.to_string())),
        "the held process is not the jailed stand-in: {status}"
    );
    eprintln!("{err}");
    assert!(
        matches!(err, VmmError::StillRunning { .. }),
        "the launch failed as if its Firecracker were gone: {err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("may still be running"), "{msg}");
    assert!(msg.contains("did not open its API socket"), "{msg}");
}
