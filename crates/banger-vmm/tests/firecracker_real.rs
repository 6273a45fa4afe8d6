//! The Firecracker driver against the real `firecracker` binary.
//!
//! Part of `cargo test --workspace`. The binary is `$BANGER_FIRECRACKER`,
//! else the shared v1.16.1 build at
//! `<workspace>/../shared/firecracker/bin/firecracker` (checked against the
//! sha256 its README states); missing, it fails the test. The kernel is the
//! `vmlinux` inside the cached default image's Debian kernel, the root disk
//! a small ext4 this test makes (see `real_firecracker`).
//!
//! What is asserted holds on every host: the real binary accepts the whole
//! configuration sequence and `InstanceStart` (each answered 2xx, and
//! `GET /vm/config` gives back what was configured while the VMM lives), and
//! the shutdown path leaves no process and no socket. What the guest does
//! next is the host's business (docs/lab.md): where KVM cannot run a stock
//! guest (PVM) the instance either stays `Running` with no guest progress or
//! the VMM exits at the first vCPU exit; both are accepted.
//!
//! Needs root: it moves its own thread into a new network namespace and
//! creates the VM's tap there, so nothing touches the host's network.

mod firecracker_support;
mod netns;
mod real_firecracker;

use std::time::Duration;

use banger_host::jail::testing::status_field_of as status_field;
use banger_host::runner::{Cmd, Runner};
use banger_vmm::firecracker::{
    FirecrackerDriver, FirecrackerVm, InstanceState, RECOMMENDED_BOOT_ARGS, Shutdown, VmStatus,
    log_path,
};
use banger_vmm::{Drive, LaunchSpec};
use firecracker_support::{alive, jailed_files, killed_if_failing, slot_uid};
use netns::{HostTap, private_netns_with_tap, private_netns_with_tap_of};
use serde_json::Value;

fn mkfs_ext4(path: &std::path::Path) {
    Runner
        .run(
            &Cmd::new("mkfs.ext4")
                .args(["-q", "-F", "-L", "fc-real-root"])
                .arg(path)
                .arg("16M"),
        )
        .expect("mkfs.ext4 (e2fsprogs)");
}

#[test]
fn a_real_firecracker_accepts_the_configuration_and_stops() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (a network namespace and a tap); run the suite as root, as CI does"
    );
    let binary = real_firecracker::binary();
    let dir = tempfile::tempdir().unwrap();
    let kernel = real_firecracker::debian_vmlinux(&dir.path().join("vmlinux"));
    let rootfs = dir.path().join("root.ext4");
    mkfs_ext4(&rootfs);
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();

    let tap = "bangerfct0";
    private_netns_with_tap(tap);
    let spec = LaunchSpec {
        vm_id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
        vcpus: 1,
        memory_mib: 256,
        kernel: kernel.clone(),
        initrd: None,
        cmdline: format!("{RECOMMENDED_BOOT_ARGS} root=/dev/vda ro"),
        drives: vec![Drive {
            id: "root".into(),
            path: rootfs.clone(),
            read_only: true,
        }],
        tap: tap.into(),
        mac: "02:ba:0a:00:00:02".into(),
        run_dir: run_dir.clone(),
        serial_log: dir.path().join("serial.log"),
        vsock_cid: 3,
        run_as: None,
        kvm: true,
    };
    // `launch` returns only when every request of the configuration plan,
    // `InstanceStart` last, was answered 2xx by the real binary.
    let mut vm = FirecrackerDriver::new(&binary)
        .launch(&spec)
        .unwrap_or_else(|e| {
            panic!(
                "the real Firecracker refused the configuration: {e}\nserial log:\n{}\nfirecracker log:\n{}",
                std::fs::read_to_string(&spec.serial_log).unwrap_or_default(),
                std::fs::read_to_string(log_path(&spec)).unwrap_or_default()
            )
        });
    let pid = vm.pid() as i32;
    assert!(spec.api_socket().exists() || !alive(pid));
    match vm.status().unwrap() {
        VmStatus::Live(info) => {
            assert_eq!(info.id, spec.vm_id);
            // Started: whatever the guest does, the instance is past
            // InstanceStart.
            assert_eq!(info.state, InstanceState::Running, "{info:?}");
            assert!(info.vmm_version.starts_with("1.16"), "{}", info.vmm_version);
            match vm
                .api()
                .send(&banger_vmm::firecracker::ApiRequest::get("/vm/config"))
            {
                Ok(resp) => check_config(&serde_json::from_slice(&resp.body).unwrap(), &spec),
                // It may exit between the two calls (a vCPU exit on a PVM host).
                Err(e) => assert!(
                    matches!(vm.status(), Ok(VmStatus::Exited(_))),
                    "GET /vm/config failed while the VMM lives: {e}"
                ),
            }
        }
        // A host whose KVM cannot run the guest may end the VMM at the first
        // vCPU exit; the configuration and InstanceStart were still accepted.
        VmStatus::Exited(status) => eprintln!("firecracker exited after InstanceStart: {status}"),
    }
    logged_the_start_and_stops(vm, &spec);
}

/// The Firecracker jail's design steps 4 and 5 with the real binary:
/// launched jailed (`launch_jailed`) in a test network namespace whose
/// tap's tun owner is the slot uid, a port of a bridge there, with a
/// test-made 0666 KVM node, the real Firecracker takes the whole plan —
/// every path the jail's — and `InstanceStart`. It runs in a network
/// namespace of its own; its tap went there for `PUT
/// /network-interfaces` and is back in the test's with its index, on the
/// bridge, up, IPv6 off. It runs as the slot uid and gid with no groups, no
/// capabilities, `no_new_privs`, pid 1 of its own pid namespace, and after
/// `InstanceStart` every one of its tasks is in seccomp filter mode with
/// at least two filters (the jail's and Firecracker's own). Then
/// the shutdown path leaves no process and no socket. On this lab's PVM
/// hosts the instance stays `Running` without guest progress; a host
/// where it exits at the first vCPU exit fails here (its status can no
/// longer be read), saying so.
#[test]
fn a_real_firecracker_runs_jailed_as_its_slot_uid() {
    let uid = slot_uid(4_700_000);
    let dir = tempfile::tempdir().unwrap();
    let (spec, mut vm, tap) = launched_jailed(dir.path(), uid, "bangerfcj0", 0);
    let pid = vm.pid();
    killed_if_failing(&mut vm, |vm| {
        use banger_host::net::HostNet as _;
        use std::os::unix::fs::MetadataExt as _;
        let link = banger_host::net::RealNet::new()
            .link(&tap.name)
            .unwrap()
            .expect("the tap is back in the test's namespace");
        assert_eq!(
            (link.index, link.master.as_deref(), link.up, link.tap_owner),
            (tap.index, Some(BRIDGE), true, Some(uid))
        );
        let ipv6 = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", tap.name);
        assert_eq!(std::fs::read_to_string(ipv6).unwrap().trim(), "1");
        let ns = |p: &str| {
            std::fs::metadata(format!("/proc/{p}/ns/net"))
                .unwrap()
                .ino()
        };
        assert_ne!(
            ns(&pid.to_string()),
            ns("thread-self"),
            "firecracker in the test's namespace"
        );
        let p = pid.to_string();
        match vm.status().unwrap() {
            VmStatus::Live(info) => assert_eq!(info.state, InstanceState::Running, "{info:?}"),
            VmStatus::Exited(status) => panic!(
                "the jailed Firecracker exited after InstanceStart ({status}): its status cannot be read"
            ),
        }
        let ids = format!("{uid}\t{uid}\t{uid}\t{uid}");
        assert_eq!(status_field(&p, "Uid"), ids);
        assert_eq!(status_field(&p, "Gid"), ids);
        assert_eq!(status_field(&p, "Groups"), "");
        assert_eq!(status_field(&p, "CapEff"), "0000000000000000");
        assert_eq!(status_field(&p, "NoNewPrivs"), "1");
        assert_eq!(status_field(&p, "NSpid"), format!("{pid}\t1"));
        let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let seccomp: Vec<(String, String, String)> = tasks
            .iter()
            .map(|t| {
                let task = format!("{pid}/task/{t}");
                (
                    status_field(&task, "Name"),
                    status_field(&task, "Seccomp"),
                    status_field(&task, "Seccomp_filters"),
                )
            })
            .collect();
        eprintln!("tasks (name, Seccomp, Seccomp_filters): {seccomp:?}");
        assert!(tasks.len() >= 2, "{seccomp:?}");
        // Filter mode, and Firecracker's own filter on top of the jail's.
        assert!(
            seccomp
                .iter()
                .all(|(_, mode, n)| mode == "2" && n.parse::<u32>().unwrap() >= 2),
            "{seccomp:?}"
        );
    });
    // Its log, in the bound run/, recorded the start.
    logged_the_start_and_stops(vm, &spec);
}

/// Hostile read of the jailed driver, F1, with the real binary: a serial
/// log (Firecracker's stdout, appended across boots) past the jail's
/// `RLIMIT_FSIZE` made Firecracker's first write raise `SIGXFSZ`, whose
/// handler ends it. A launch now empties a log over `SERIAL_LOG_MAX`
/// first; the log here is sparse past the real limit.
#[test]
fn a_real_jailed_firecracker_starts_on_a_serial_log_past_its_file_size_limit() {
    let uid = slot_uid(5_100_000);
    let dir = tempfile::tempdir().unwrap();
    let past = banger_vmm::VMM_MIN_FILE_SIZE + 1;
    let (spec, mut vm, _tap) = launched_jailed(dir.path(), uid, "bangerfcj2", past);
    killed_if_failing(&mut vm, |vm| match vm.status().unwrap() {
        VmStatus::Live(info) => assert_eq!(info.state, InstanceState::Running, "{info:?}"),
        VmStatus::Exited(status) => panic!("it exited after InstanceStart ({status})"),
    });
    let size = std::fs::metadata(&spec.serial_log).unwrap().len();
    assert!(size < banger_vmm::SERIAL_LOG_MAX, "{size} bytes");
    logged_the_start_and_stops(vm, &spec);
}

/// What the jail leaves a real Firecracker: in its own network namespace
/// it may attach the tap moved there only if its tun owner is its slot uid, and
/// it opens a drive at `/drive-<id>` only where the slot uid was granted
/// the inode. A root-only drive fails `PUT /drives` (`EACCES`); granted,
/// a tap of another uid fails `PUT /network-interfaces` (`EPERM`); each
/// failed launch leaves nothing of the slot uid running.
#[test]
fn a_jailed_real_firecracker_gets_neither_another_uids_tap_nor_an_ungranted_drive() {
    use std::os::unix::fs::PermissionsExt as _;
    let uid = slot_uid(4_900_000);
    let binary = real_firecracker::binary();
    let dir = tempfile::tempdir().unwrap();
    let tap = "bangerfcj1";
    private_netns_with_tap_of(tap, Some(uid + 1));
    let mut moves = HostTap::on_new_bridge(tap, BRIDGE);
    let spec = jailed_spec(dir.path(), uid, tap);
    let rootfs = &spec.drives[0].path;
    let driver = FirecrackerDriver::new(&binary);
    std::fs::set_permissions(rootfs, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = refused(driver.launch_jailed(&spec, jailed_files(dir.path(), &spec), &mut moves));
    assert!(
        err.contains("PUT /drives/root failed (400)") && err.contains("(os error 13)"),
        "{err}"
    );
    assert_eq!(processes_of(uid), Vec::<u32>::new(), "{err}");
    std::fs::set_permissions(rootfs, std::fs::Permissions::from_mode(0o644)).unwrap();
    let again = dir.path().join("again");
    std::fs::create_dir(&again).unwrap();
    let err = refused(driver.launch_jailed(&spec, jailed_files(&again, &spec), &mut moves));
    assert!(
        err.contains("PUT /network-interfaces/eth0 failed (400)") && err.contains("(os error 1)"),
        "{err}"
    );
    assert_eq!(processes_of(uid), Vec::<u32>::new(), "{err}");
    // The refused tap came back all the same, with its index.
    use banger_host::net::HostNet as _;
    let link = banger_host::net::RealNet::new().link(tap).unwrap().unwrap();
    assert_eq!(
        (link.index, link.master.as_deref()),
        (moves.index, Some(BRIDGE))
    );
}

/// The bridge of the jailed tests' taps, in their test namespaces.
const BRIDGE: &str = "bangerfcbr";

/// The real binary launched jailed in `dir` as the slot `uid`, on `tap`
/// (made in a test network namespace with the slot uid its tun owner, a
/// port of [`BRIDGE`]), its serial log first made `serial_len` bytes long
/// (sparse); the tap's mover. A refused launch fails the test with both
/// logs.
fn launched_jailed(
    dir: &std::path::Path,
    uid: u32,
    tap: &str,
    serial_len: u64,
) -> (LaunchSpec, FirecrackerVm, HostTap) {
    let binary = real_firecracker::binary();
    private_netns_with_tap_of(tap, Some(uid));
    let mut moves = HostTap::on_new_bridge(tap, BRIDGE);
    let spec = jailed_spec(dir, uid, tap);
    let files = jailed_files(dir, &spec);
    files.serial.set_len(serial_len).unwrap();
    let vm = FirecrackerDriver::new(&binary)
        .launch_jailed(&spec, files, &mut moves)
        .unwrap_or_else(|e| {
            panic!(
                "the real Firecracker refused the jailed configuration: {e}\nserial log:\n{}\nfirecracker log:\n{}",
                std::fs::read_to_string(&spec.serial_log).unwrap_or_default(),
                std::fs::read_to_string(log_path(&spec)).unwrap_or_default()
            )
        });
    (spec, vm, moves)
}

/// The error of a launch that must fail; one that started is killed
/// before the test fails (a dropped handle leaves the VMM running).
fn refused(launched: Result<FirecrackerVm, banger_vmm::VmmError>) -> String {
    match launched {
        Err(e) => e.to_string(),
        Ok(mut vm) => {
            let killed = vm.kill();
            panic!("the jailed launch was not refused (killed: {killed:?})");
        }
    }
}

/// A jailed launch's spec in `dir` for the slot `uid` on `tap` (which the
/// caller made): the cached Debian `vmlinux`, a small ext4 root drive,
/// read-only and readable by all (the grant the executor gives a read-only
/// drive for the launch), a `run/` of the slot's.
fn jailed_spec(dir: &std::path::Path, uid: u32, tap: &str) -> LaunchSpec {
    let kernel = real_firecracker::debian_vmlinux(&dir.join("vmlinux"));
    let rootfs = dir.join("root.ext4");
    mkfs_ext4(&rootfs);
    firecracker_support::jailed_real_spec(dir, uid, tap, (kernel, rootfs), 256)
}

/// The pids of the processes running as `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let real = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?
                .parse::<u32>()
                .ok()?;
            (real == uid).then_some(pid)
        })
        .collect()
}

/// Firecracker's own log (in `spec.run_dir`) recorded the start; the
/// shutdown path leaves no process and no socket there.
fn logged_the_start_and_stops(mut vm: FirecrackerVm, spec: &LaunchSpec) {
    let log = std::fs::read_to_string(log_path(spec)).unwrap_or_default();
    assert!(
        log.contains("InstanceStart") || log.contains("/actions"),
        "Firecracker's log does not mention the start:\n{log}"
    );
    let pid = vm.pid() as i32;
    let outcome = vm.shutdown(Duration::from_secs(5)).unwrap();
    eprintln!("shutdown: {outcome:?}");
    assert!(
        matches!(
            outcome,
            Shutdown::Killed | Shutdown::Graceful(_) | Shutdown::AlreadyExited(_)
        ),
        "{outcome:?}"
    );
    assert!(!alive(pid), "firecracker (pid {pid}) is still there");
    let left: Vec<_> = std::fs::read_dir(&spec.run_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_file()))
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "sockets left in the run dir: {left:?}");
    assert!(!spec.api_socket().exists());
    assert!(!spec.vsock_socket().exists());
}

/// What `GET /vm/config` reports is what the driver configured.
fn check_config(cfg: &Value, spec: &LaunchSpec) {
    assert_eq!(cfg["machine-config"]["vcpu_count"], 1, "{cfg}");
    assert_eq!(cfg["machine-config"]["mem_size_mib"], 256, "{cfg}");
    assert_eq!(
        cfg["boot-source"]["kernel_image_path"],
        spec.kernel.to_str().unwrap(),
        "{cfg}"
    );
    assert_eq!(cfg["boot-source"]["boot_args"], spec.cmdline, "{cfg}");
    let drive = &cfg["drives"][0];
    assert_eq!(drive["drive_id"], "root", "{cfg}");
    assert_eq!(drive["path_on_host"], spec.drives[0].path.to_str().unwrap());
    assert_eq!(drive["is_root_device"], true);
    assert_eq!(drive["is_read_only"], true);
    let nic = &cfg["network-interfaces"][0];
    assert_eq!(nic["host_dev_name"], spec.tap, "{cfg}");
    assert_eq!(nic["guest_mac"], spec.mac, "{cfg}");
    assert_eq!(cfg["vsock"]["guest_cid"], 3, "{cfg}");
    assert_eq!(
        cfg["vsock"]["uds_path"],
        spec.vsock_socket().to_str().unwrap(),
        "{cfg}"
    );
}

/// Issue #15 item 3 with the real binary, jailed as the executor runs it:
/// past `InstanceStart` the instance is paused (`PATCH /vm` `Paused`;
/// `GET /` then says `Paused`) and resumed (`Running`), each twice (the
/// second changes nothing and still succeeds: a stop's `PATCH /vm`
/// `Resumed`, sent whatever the state, is taken by a running instance
/// too), and so it is through an
/// adopted handle's API client. A shutdown of a paused
/// instance resumes it before `SendCtrlAltDel` (Firecracker's own log
/// has the two requests in that order). Once it is gone a pause is
/// `NotRunning`, at once.
#[test]
fn a_real_firecracker_pauses_resumes_and_is_resumed_before_its_shutdown() {
    use banger_vmm::dir::{OwnerDir, Peer};
    use banger_vmm::driver::{Found, Vcpus, VmmDriver};
    use banger_vmm::firecracker::ApiClient;
    let uid = slot_uid(5_300_000);
    let dir = tempfile::tempdir().unwrap();
    let (spec, mut vm, _tap) = launched_jailed(dir.path(), uid, "bangerfcj3", 0);
    killed_if_failing(&mut vm, |vm| {
        let state = |vm: &mut FirecrackerVm| match vm.status().unwrap() {
            VmStatus::Live(info) => info.state,
            VmStatus::Exited(status) => panic!("it exited after InstanceStart ({status})"),
        };
        assert_eq!(state(vm), InstanceState::Running);
        for _ in 0..2 {
            vm.set_vcpus(Vcpus::Paused).unwrap();
            assert_eq!(state(vm), InstanceState::Paused);
        }
        for _ in 0..2 {
            vm.set_vcpus(Vcpus::Running).unwrap();
            assert_eq!(state(vm), InstanceState::Running);
        }
        // Adopted (as after an executor restart): through its API client,
        // connected only to the socket its pid and slot uid serve.
        let pid = vm.pid();
        let api = ApiClient::new(
            OwnerDir::open(&spec.run_dir, "run directory").unwrap(),
            banger_vmm::API_SOCKET,
            Peer { uid, pid },
            Duration::from_secs(2),
        )
        .unwrap();
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        let mut adopted = FirecrackerDriver::adopt(Found::new(pid, pidfd, None, "fc"), Some(api));
        adopted.pause().unwrap();
        assert_eq!(state(vm), InstanceState::Paused);
        adopted.resume().unwrap();
        assert_eq!(state(vm), InstanceState::Running);
        vm.set_vcpus(Vcpus::Paused).unwrap();
        assert_eq!(state(vm), InstanceState::Paused);
    });
    let pid = vm.pid() as i32;
    let outcome = vm.shutdown(Duration::from_secs(3)).unwrap();
    eprintln!("shutdown of the paused instance: {outcome:?}");
    assert!(!alive(pid), "firecracker (pid {pid}) is still there");
    let log = std::fs::read_to_string(log_path(&spec)).unwrap_or_default();
    let paused = log.rfind(r#"\"state\":\"Paused\""#);
    let resumed = log.rfind(r#"\"state\":\"Resumed\""#);
    let ctrl_alt_del = log.find("SendCtrlAltDel");
    assert!(
        matches!((paused, resumed, ctrl_alt_del), (Some(p), Some(r), Some(c)) if p < r && r < c),
        "no resume between the last pause and SendCtrlAltDel in Firecracker's log:\n{log}"
    );
    let asked = std::time::Instant::now();
    let err = vm.set_vcpus(Vcpus::Paused).unwrap_err();
    assert!(
        matches!(err, banger_vmm::VmmError::NotRunning { .. }),
        "{err}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
}
