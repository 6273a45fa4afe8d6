//! The QEMU driver against the real `qemu-system-x86_64` (Debian's 7.2 on
//! the lab hosts), under TCG: the process the driver launches runs under
//! QEMU's own seccomp sandbox, the guest kernel still runs, and QMP still
//! answers, stops and quits it.
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

use std::os::fd::OwnedFd;

use banger_vmm::qemu::{DriveFds, QemuDriver, QemuFiles, QemuVm, QmpSocket, open_tap};
use banger_vmm::{Drive, LaunchSpec};

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
struct Killed(QemuVm);

impl Drop for Killed {
    fn drop(&mut self) {
        if self.0.running() {
            let _ = self.0.kill();
        }
    }
}

/// A uid no account has, distinct per test process: the VM's jail uid.
fn jail_uid() -> u32 {
    3_700_000 + std::process::id() % 100_000
}

/// Issue #13 gap 11: QEMU ran with every system call the owner's uid may
/// make, so a guest escaping into it could spawn programs, raise its
/// privileges through setuid files, and use obsolete system calls. It now
/// runs under `-sandbox on` (seccomp filter mode, `no_new_privs`), inside
/// the jail (finding 11): its own uid and namespaces, every file by
/// descriptor.
#[test]
fn a_launched_qemu_runs_under_its_seccomp_sandbox_and_still_boots_and_quits() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (a network namespace and a tap); run the suite as root, as CI does"
    );
    let image = real_firecracker::debian_image();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("blank.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let run_dir = dir.path().join("run");
    let uid = jail_uid();
    let tap = "bangerqmt0";
    netns::private_netns_with_tap(tap);
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
        run_dir: run_dir.clone(),
        serial_log: dir.path().join("serial.log"),
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
        qmp: QmpSocket::new(
            OwnedFd::from(std::fs::File::open(dir.path()).unwrap()),
            dir.path(),
            "qmp.sock",
        )
        .unwrap(),
        kvm: None,
        cgroup: None,
    };
    let mut vm = Killed(
        QemuDriver::default()
            .launch(&spec, files)
            .unwrap_or_else(|e| panic!("qemu did not start: {e}")),
    );
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
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let serial = std::fs::read_to_string(&spec.serial_log).unwrap_or_default();
        if serial.contains("Linux version") && serial.contains("Run /init as init process") {
            break;
        }
        assert!(vm.running(), "qemu exited; serial:\n{serial}");
        assert!(
            Instant::now() < deadline,
            "the guest did not reach its initramfs in 60 s; serial:\n{serial}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

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
