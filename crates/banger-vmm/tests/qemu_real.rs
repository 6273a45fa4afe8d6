//! The QEMU driver against the real `qemu-system-x86_64` (Debian's 7.2 on
//! the lab hosts), under TCG: the process the driver launches runs under
//! QEMU's own seccomp sandbox, the guest kernel still runs, and QMP still
//! answers, stops and quits it; the driver pauses and resumes it.
//!
//! The kernel and initramfs are those of the cached default image (see
//! `real_firecracker`); the guest gets a blank disk, so it stops in its
//! initramfs, which is far enough to show guest code running.
//!
//! Needs root: it moves its own thread into a new network namespace and
//! creates the VM's tap there, so nothing touches the host's network.

mod netns;
mod real_firecracker;

use std::time::{Duration, Instant};

use std::os::fd::{AsFd as _, OwnedFd};

use banger_vmm::driver::{Found, RunningVmm, VmmDriver};
use banger_vmm::qemu::{
    DriveFds, Incoming, QemuDriver, QemuFiles, QemuVm, Qmp, RootSocket, open_tap,
};
use banger_vmm::ready::Seen;
use banger_vmm::{Drive, LaunchSpec, VmmError};

/// The value of `field` in `/proc/<pid>/status`.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
        .trim()
        .to_string()
}

/// Kills the QEMU when the test ends, however it ends.
#[derive(Debug)]
struct Killed(QemuVm);

impl Drop for Killed {
    fn drop(&mut self) {
        if self.0.running() {
            let _ = self.0.kill();
        }
    }
}

/// A uid no account has, distinct per test process: a VM's jail uid
/// (`base` apart for each test).
fn jail_uid(base: u32) -> u32 {
    base + std::process::id() % 100_000
}

/// The real QEMU launched by the driver in `dir`, jailed as `uid`, on
/// `tap` (made in a network namespace of this thread's own): the cached
/// Debian kernel and initramfs, a blank read-only disk (the guest stops in
/// its initramfs), QMP on `qmp.sock` in `dir`.
fn launched(dir: &std::path::Path, tap: &str, uid: u32) -> (LaunchSpec, Killed) {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (a network namespace and a tap); run the suite as root, as CI does"
    );
    // Built (or found) before the thread leaves the host's network.
    real_firecracker::debian_image();
    let disk = dir.join("blank.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    netns::private_netns_with_tap(tap);
    launch_on(dir, tap, uid, None)
        .map_err(|e| panic!("qemu did not start: {e}"))
        .unwrap()
}

/// [`launched`] on the tap and blank disk already made, restoring
/// `incoming` when given.
fn launch_on(
    dir: &std::path::Path,
    tap: &str,
    uid: u32,
    incoming: Option<Incoming>,
) -> Result<(LaunchSpec, Killed), VmmError> {
    let image = real_firecracker::debian_image();
    let disk = dir.join("blank.raw");
    let spec = LaunchSpec {
        vm_id: "5eccf0a1b2c3d4e5f60718293a4b5c6d".into(),
        vcpus: 1,
        memory_mib: 256,
        kernel: image.kernel.clone(),
        initrd: Some(image.initrd.clone()),
        // No `panic=`: a guest that finds no root waits instead of
        // rebooting (which `-no-reboot` turns into an exit).
        cmdline: "console=ttyS0 root=/dev/vda ro".into(),
        drives: vec![Drive {
            id: "root".into(),
            path: disk,
            read_only: true,
        }],
        tap: tap.into(),
        mac: "02:ba:0a:00:00:03".into(),
        run_dir: dir.join("run"),
        serial_log: dir.join("serial.log"),
        vsock_cid: 3,
        run_as: Some((uid, uid)),
        kvm: false,
    };
    let read_only = |p: &std::path::Path| std::fs::File::open(p).unwrap();
    let files = QemuFiles {
        kernel: read_only(&spec.kernel),
        initrd: Some(read_only(&image.initrd)),
        drives: vec![DriveFds {
            main: OwnedFd::from(read_only(&spec.drives[0].path)),
            read_only: OwnedFd::from(read_only(&spec.drives[0].path)),
        }],
        tap: open_tap(tap).unwrap(),
        serial: std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&spec.serial_log)
            .unwrap(),
        log: tempfile::tempfile().unwrap(),
        qmp: qmp_socket(dir),
        agent: RootSocket::new(
            OwnedFd::from(std::fs::File::open(dir).unwrap()),
            dir,
            "agent.sock",
        )
        .unwrap(),
        kvm: None,
        cgroup: None,
        incoming,
    };
    let vm = QemuDriver::default().launch(&spec, files)?;
    Ok((spec, Killed(vm)))
}

/// Root's QMP socket `qmp.sock` in `dir`: the launch's, or another handle
/// of it.
fn qmp_socket(dir: &std::path::Path) -> RootSocket {
    RootSocket::new(
        OwnedFd::from(std::fs::File::open(dir).unwrap()),
        dir,
        "qmp.sock",
    )
    .unwrap()
}

/// Wait up to 60 s for the guest's kernel to run its initramfs.
fn reached_its_initramfs(vm: &mut QemuVm, spec: &LaunchSpec) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let serial = std::fs::read_to_string(&spec.serial_log).unwrap_or_default();
        if serial.contains("Linux version") && serial.contains("Run /init as init process") {
            return;
        }
        assert!(vm.running(), "qemu exited; serial:\n{serial}");
        assert!(
            Instant::now() < deadline,
            "the guest did not reach its initramfs in 60 s; serial:\n{serial}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue #13 gap 11: QEMU ran with every system call the owner's uid may
/// make, so a guest escaping into it could spawn programs, raise its
/// privileges through setuid files, and use obsolete system calls. It now
/// runs under `-sandbox on` (seccomp filter mode, `no_new_privs`), inside
/// the jail (finding 11): its own uid and namespaces, every file by
/// descriptor.
#[test]
fn a_launched_qemu_runs_under_its_seccomp_sandbox_and_still_boots_and_quits() {
    let dir = tempfile::tempdir().unwrap();
    let uid = jail_uid(3_700_000);
    let (spec, mut vm) = launched(dir.path(), "bangerqmt0", uid);
    let vm = &mut vm.0;
    let pid = vm.pid();

    // Jailed: the VM's uid without groups, pid 1 of its own pid
    // namespace, no capabilities.
    assert_eq!(
        status_field(pid, "Uid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(status_field(pid, "Groups"), "");
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(
        status_field(pid, "NSpid").split_whitespace().last(),
        Some("1")
    );
    // Seccomp: 2 is filter mode; QEMU's sandbox sets no_new_privs first.
    let seccomp = status_field(pid, "Seccomp");
    let nnp = status_field(pid, "NoNewPrivs");
    assert_eq!(
        (seccomp.as_str(), nnp.as_str()),
        ("2", "1"),
        "qemu {pid}: Seccomp {seccomp}, NoNewPrivs {nnp}"
    );

    // The guest runs under the sandbox: its kernel starts its initramfs.
    reached_its_initramfs(vm, &spec);

    // QMP still stops and quits it.
    let mut q = vm.qmp().unwrap();
    assert_eq!(q.status().unwrap(), "running");
    q.execute("stop").unwrap();
    assert_eq!(q.status().unwrap(), "paused");
    q.execute("quit").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while vm.running() {
        assert!(Instant::now() < deadline, "qemu {pid} did not quit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The QMP run state of the QEMU serving `dir`'s `qmp.sock`, over a
/// session of its own.
fn run_state(dir: &std::path::Path) -> String {
    Qmp::connect_socket(&qmp_socket(dir), Duration::from_secs(5))
        .and_then(|mut q| q.status())
        .unwrap()
}

/// Issue #15 item 3 with the real QEMU, launched by the driver as the
/// executor launches it. `pause` (QMP `stop`) makes QEMU report `paused`
/// and `resume` (`cont`) `running`, each asked twice (the second changes
/// nothing and succeeds); while paused the guest writes nothing to its
/// console and its readiness is left alone, and once resumed it boots on.
/// An adopted handle of the same QEMU (root's QMP socket) pauses and
/// resumes it too; one adopted without a control connection says so. A
/// shutdown of a paused QEMU resumes it before the power button (it is
/// `running` while the shutdown waits). Once QEMU is gone, a pause is
/// `NotRunning` at once, never a hang.
#[test]
fn a_real_qemu_pauses_and_resumes_and_is_resumed_before_its_power_off() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, mut vm) = launched(dir.path(), "bangerqmt1", jail_uid(3_600_000));
    let vm = &mut vm.0;
    let pid = vm.pid();
    assert_eq!(run_state(dir.path()), "running");
    for _ in 0..2 {
        RunningVmm::pause(vm).unwrap();
        assert_eq!(run_state(dir.path()), "paused");
    }
    let console = std::fs::metadata(&spec.serial_log).unwrap().len();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        std::fs::metadata(&spec.serial_log).unwrap().len(),
        console,
        "a paused guest wrote to its console"
    );
    let readiness = vm.readiness().expect("a launched QEMU is watched");
    assert_eq!(readiness.seen(), Seen::Waiting);
    for _ in 0..2 {
        RunningVmm::resume(vm).unwrap();
        assert_eq!(run_state(dir.path()), "running");
    }
    reached_its_initramfs(vm, &spec);
    assert_eq!(readiness.seen(), Seen::Waiting);

    let found = |pid: u32| {
        let fd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        Found::new(pid, fd, None, &spec.vm_id)
    };
    let mut adopted = QemuDriver::adopt(found(pid), Some(qmp_socket(dir.path())));
    adopted.pause().unwrap();
    assert_eq!(run_state(dir.path()), "paused");
    adopted.resume().unwrap();
    assert_eq!(run_state(dir.path()), "running");
    let mut blind = QemuDriver::adopt(found(pid), None);
    let err = blind.pause().unwrap_err();
    assert!(matches!(err, VmmError::NoControl { .. }), "{err}");
    assert_eq!(run_state(dir.path()), "running");

    RunningVmm::pause(vm).unwrap();
    let graceful = std::thread::scope(|s| {
        let stop = s.spawn(|| vm.shutdown(Duration::from_secs(4)));
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            run_state(dir.path()),
            "running",
            "the shutdown did not resume the paused guest"
        );
        stop.join().unwrap().unwrap()
    });
    // This guest (an initramfs that found no root) ignores the power
    // button: killed after its timeout.
    assert!(!graceful);
    assert!(!vm.running());

    let asked = Instant::now();
    let err = RunningVmm::pause(vm).unwrap_err();
    assert!(matches!(err, VmmError::NotRunning { .. }), "{err}");
    let err = adopted.resume().unwrap_err();
    assert!(matches!(err, VmmError::NotRunning { .. }), "{err}");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
}

/// Issue #15 item 1 with the real QEMU: a paused guest's state is saved
/// through root's descriptor (QMP `getfd` + `migrate fd:`), QEMU then
/// reports `postmigrate` (which a pause accepts as paused) and resumes;
/// a running guest is refused. A second QEMU, launched to restore that
/// file, loads it, resumes the guest, and then waits for the guest agent
/// (this initramfs guest has none): the launch fails on the agent, after
/// the load, and that QEMU is gone. A file that is not a saved state
/// ends the restoring QEMU, named as a snapshot load.
#[test]
fn a_real_qemu_saves_its_paused_guest_and_a_second_one_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    let uid = jail_uid(3_500_000);
    let (spec, mut vm) = launched(dir.path(), "bangerqmt2", uid);
    reached_its_initramfs(&mut vm.0, &spec);
    let state = dir.path().join("memory");
    let file = std::fs::File::create_new(&state).unwrap();
    let err =
        vm.0.save_state(file.as_fd(), Duration::from_secs(60))
            .unwrap_err();
    assert!(err.to_string().contains("must be paused"), "{err}");
    RunningVmm::pause(&mut vm.0).unwrap();
    let saved = Instant::now();
    let bytes =
        vm.0.save_state(file.as_fd(), Duration::from_secs(60))
            .unwrap();
    eprintln!("saved {bytes} bytes in {:?}", saved.elapsed());
    let len = std::fs::metadata(&state).unwrap().len();
    assert!(
        bytes > 1 << 20 && len >= bytes,
        "{bytes} bytes reported, {len} in the file"
    );
    assert_eq!(run_state(dir.path()), "postmigrate");
    RunningVmm::pause(&mut vm.0).unwrap();
    RunningVmm::resume(&mut vm.0).unwrap();
    assert_eq!(run_state(dir.path()), "running");
    vm.0.kill().unwrap();
    drop(vm);

    let identity = banger_vmm::agent::Identity {
        files: vec![],
        mac: "02:ba:0a:00:00:04".into(),
        ip: std::net::Ipv4Addr::new(10, 0, 0, 4),
        prefix: 24,
        gateway: std::net::Ipv4Addr::new(10, 0, 0, 1),
        hostname: "clone".into(),
        clock: std::time::SystemTime::now(),
    };
    let incoming = |state: OwnedFd| Incoming {
        state,
        identity: identity.clone(),
        nonce: "5eed".into(),
        agent_timeout: Duration::from_secs(2),
    };
    let restore = Instant::now();
    let read = OwnedFd::from(std::fs::File::open(&state).unwrap());
    let err = launch_on(dir.path(), "bangerqmt2", uid, Some(incoming(read))).unwrap_err();
    eprintln!("restore failed at the agent after {:?}", restore.elapsed());
    assert!(
        matches!(&err, VmmError::Timeout { what, .. } if what.contains("guest agent")),
        "{err}"
    );

    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, vec![7u8; 4096]).unwrap();
    let read = OwnedFd::from(std::fs::File::open(&garbage).unwrap());
    let err = launch_on(dir.path(), "bangerqmt2", uid, Some(incoming(read))).unwrap_err();
    assert!(
        matches!(&err, VmmError::EarlyExit { status, .. } if status.contains("snapshot")),
        "{err}"
    );
}
