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
fn watching(
    spec: &LaunchSpec,
) -> (
    banger_host::runner::Spawned,
    VsockWatch,
    std::path::PathBuf,
    Arc<Readiness>,
) {
    let vmm = sleeper();
    let listener = ReadyListener::bind(spec, READY_PORT).unwrap();
    let socket = listener.path().to_path_buf();
    let readiness = Readiness::new();
    let watch = VsockWatch::spawn(
        listener,
        pidfd_of(&vmm),
        spec.vm_id.clone(),
        Arc::clone(&readiness),
    )
    .unwrap();
    (vmm, watch, socket, readiness)
}

/// Regression: the readiness thread outlived a stopped VMM by up to ten
/// minutes, keeping `run/vsock.sock_52`, and its late cleanup could
/// unlink the socket a later start had bound.
#[test]
fn dropping_the_watch_ends_the_thread_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    let (mut vmm, watch, socket, readiness) = watching(&spec);
    assert!(socket.exists());
    let started = Instant::now();
    drop(watch);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!socket.exists(), "{} is left", socket.display());
    // Dropping it settles nothing: the VMM's console may still report.
    assert_eq!(readiness.seen(), Seen::Waiting);
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
    let (mut vmm, watch, socket, readiness) = watching(&spec);
    let waiter = std::thread::spawn(move || readiness.wait(Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(50));
    let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    std::io::Write::write_all(&mut s, b"banger-guest-ready\n").unwrap();
    assert_eq!(waiter.join().unwrap(), Seen::Ready);
    drop(watch);
    assert!(!socket.exists());
    vmm.kill().unwrap();
}

/// A VMM that exits ends the vsock watch (and removes its socket) without
/// waiting out its ten minutes; it settles nothing: the console watch
/// reports the exit.
#[test]
fn the_vmm_exiting_ends_the_vsock_watch() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    let (mut vmm, watch, socket, readiness) = watching(&spec);
    vmm.kill().unwrap();
    let finished = || watch.thread.as_ref().is_some_and(|t| t.is_finished());
    let deadline = Instant::now() + Duration::from_secs(2);
    while !finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(finished(), "the watch outlived its VMM");
    assert!(!socket.exists(), "its socket outlived it");
    assert_eq!(readiness.seen(), Seen::Waiting);
}

/// Review s11, F3: a Firecracker whose API answers each request just
/// before the client's deadline, and says it is paused, held a stop up by
/// four deadlines (`GET /`, `PATCH /vm`, `GET /`, `SendCtrlAltDel`)
/// before its timeout began. The resume is sent whatever the instance
/// says, and both requests share one deadline: the stop of such an
/// adopted Firecracker ends within its timeout, one request deadline and
/// the kill, well within the executor's bound.
#[test]
fn a_stalling_api_holds_a_stop_up_by_one_request_deadline_at_most() {
    use crate::dir::{OwnerDir, Peer};
    use crate::driver::{Found, VmmDriver as _};
    use banger_proto::privops::STOP_OVERHEAD_MAX_SECS;
    let dir = tempfile::tempdir().unwrap();
    let request = Duration::from_secs(2);
    let api = crate::stand_in::StallingApi::serve(
        &dir.path().join("api.sock"),
        request - Duration::from_millis(300),
    );
    let me = Peer {
        uid: rustix::process::geteuid().as_raw(),
        pid: std::process::id(),
    };
    let run = OwnerDir::open(dir.path(), "run directory").unwrap();
    let client = ApiClient::new(run, "api.sock", me, request).unwrap();
    let mut vmm = sleeper();
    let found = Found::new(vmm.pid(), pidfd_of(&vmm), None, "fc");
    let mut adopted = FirecrackerDriver::adopt(found, Some(client));
    let timeout = Duration::from_secs(1);
    let asked = Instant::now();
    let graceful = adopted.shutdown(timeout).unwrap();
    let took = asked.elapsed();
    assert!(!graceful);
    assert!(!vmm.pidfd_alive(), "the stand-in VMM was not killed");
    assert!(
        took < timeout + request + Duration::from_secs(1),
        "{took:?}"
    );
    assert!(took < timeout + Duration::from_secs(STOP_OVERHEAD_MAX_SECS));
    assert_eq!(api.requests(), ["PATCH /vm", "PUT /actions"]);
    let _ = vmm.kill();
}
