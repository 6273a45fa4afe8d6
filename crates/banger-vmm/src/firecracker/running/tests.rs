use std::path::Path;
use std::time::Instant;

use super::*;
use crate::firecracker::READY_PORT;
use crate::testing::{pidfd_of, sleeper};

fn spec(run_dir: &Path) -> LaunchSpec {
    LaunchSpec {
        vm_id: "0123456789abcdef0123456789abcdef".into(),
        vcpus: 1,
        memory_mib: 128,
        kernel: run_dir.join("vmlinux"),
        initrd: None,
        cmdline: banger_proto::guest::KERNEL_CMDLINE.into(),
        drives: Vec::new(),
        tap: "bangertap0".into(),
        mac: "02:ba:0a:00:00:02".into(),
        run_dir: run_dir.to_path_buf(),
        serial_log: run_dir.join("serial.log"),
        vsock_cid: 3,
        run_as: None,
        kvm: false,
    }
}

/// A stand-in VMM, and a watch of the vsock readiness socket of `spec`
/// with it.
fn watching(spec: &LaunchSpec) -> (banger_host::runner::Spawned, VsockWatch, std::path::PathBuf) {
    let vmm = sleeper();
    let listener = ReadyListener::bind(spec, READY_PORT).unwrap();
    let socket = listener.path().to_path_buf();
    let watch = VsockWatch::spawn(listener, pidfd_of(&vmm), spec.vm_id.clone());
    (vmm, watch, socket)
}

/// Regression: the readiness thread outlived a stopped VMM by up to ten
/// minutes, keeping `run/vsock.sock_52`, and its late cleanup could
/// unlink the socket a later start had bound.
#[test]
fn dropping_the_watch_ends_the_thread_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    let (mut vmm, watch, socket) = watching(&spec);
    assert!(socket.exists());
    let readiness = Arc::clone(&watch.readiness);
    let started = Instant::now();
    drop(watch);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!socket.exists(), "{} is left", socket.display());
    assert!(matches!(readiness.seen(), Seen::Ended(_)));
    // A new listener on the same path is not disturbed by the old one.
    let again = ReadyListener::bind(&spec, READY_PORT).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(again.path().exists());
    vmm.kill().unwrap();
}

/// The guest's line settles the readiness, and a waiter wakes on it
/// without polling.
#[test]
fn the_watch_reports_the_guest_ready_to_a_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    let (mut vmm, watch, socket) = watching(&spec);
    let readiness = Arc::clone(&watch.readiness);
    let waiter = std::thread::spawn(move || readiness.wait(Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(50));
    let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    std::io::Write::write_all(&mut s, b"banger-guest-ready\n").unwrap();
    assert_eq!(waiter.join().unwrap(), Seen::Ready);
    drop(watch);
    assert!(!socket.exists());
    vmm.kill().unwrap();
}

/// A VMM that exits before its guest reported ends the wait at once, with
/// the reason: nobody waits out the timeout for a dead VMM.
#[test]
fn the_vmm_exiting_ends_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    let (mut vmm, watch, _) = watching(&spec);
    vmm.kill().unwrap();
    let started = Instant::now();
    let seen = watch.readiness.wait(Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    match seen {
        Seen::Ended(why) => assert!(why.contains("the VMM exited"), "{why}"),
        other => panic!("{other:?}"),
    }
}
