//! Readiness over vsock: a local client plays the guest, connecting where
//! Firecracker would forward the guest's `VSOCK-CONNECT:2:52`.

mod firecracker_support;

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_vmm::VmmError;
use banger_vmm::firecracker::vsock::guest_port_socket;
use banger_vmm::firecracker::{
    FirecrackerDriver, READY_MARKER, READY_PORT, ReadyListener, wait_ready_vsock,
};
use firecracker_support::{alive, fake_binary, launch, sample_spec, write_fake_config};

/// Connect to `path` once it exists and send `lines`, like the guest's
/// readiness unit (retrying, as a unit with `Restart=` would).
fn guest(path: PathBuf, lines: &'static [&'static str]) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        for line in lines {
            let mut s = loop {
                match UnixStream::connect(&path) {
                    Ok(s) => break s,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("guest could not connect to {}: {e}", path.display()),
                }
            };
            s.write_all(line.as_bytes()).unwrap();
        }
    })
}

fn port_socket(dir: &Path) -> PathBuf {
    guest_port_socket(&sample_spec(dir), READY_PORT)
}

#[test]
fn the_ready_socket_is_the_vsock_path_with_the_port() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(READY_PORT, 52);
    assert_eq!(READY_MARKER, "banger-guest-ready");
    assert_eq!(port_socket(dir.path()), dir.path().join("vsock.sock_52"));
}

#[test]
fn the_marker_from_the_guest_means_ready() {
    let dir = tempfile::tempdir().unwrap();
    let g = guest(port_socket(dir.path()), &["banger-guest-ready\n"]);
    wait_ready_vsock(&sample_spec(dir.path()), READY_PORT, Duration::from_secs(5)).unwrap();
    g.join().unwrap();
    // The listener's socket is gone with it.
    assert!(!port_socket(dir.path()).exists());
}

#[test]
fn an_empty_probe_connection_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let g = guest(port_socket(dir.path()), &["", "banger-guest-ready\r\n"]);
    wait_ready_vsock(&sample_spec(dir.path()), READY_PORT, Duration::from_secs(5)).unwrap();
    g.join().unwrap();
}

#[test]
fn anything_else_is_an_error_quoting_it() {
    let dir = tempfile::tempdir().unwrap();
    let g = guest(port_socket(dir.path()), &["systemd: failed\n"]);
    let err =
        wait_ready_vsock(&sample_spec(dir.path()), READY_PORT, Duration::from_secs(5)).unwrap_err();
    g.join().unwrap();
    assert!(matches!(err, VmmError::Readiness { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("\"systemd: failed\""), "{msg}");
    assert!(msg.contains("vsock port 52"), "{msg}");
}

#[test]
fn a_guest_that_never_reports_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let err = wait_ready_vsock(
        &sample_spec(dir.path()),
        READY_PORT,
        Duration::from_millis(300),
    )
    .unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(
        matches!(
            err,
            VmmError::Timeout {
                what: "see the guest report ready over vsock",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_listener_bound_before_the_guest_connects_catches_an_early_guest() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sample_spec(dir.path());
    let listener = ReadyListener::bind(&spec, READY_PORT).unwrap();
    // The guest connects and finishes before anyone waits.
    let mut s = UnixStream::connect(listener.path()).unwrap();
    s.write_all(b"banger-guest-ready\n").unwrap();
    drop(s);
    listener.wait(Duration::from_secs(2)).unwrap();
}

#[test]
fn waiting_on_a_vm_whose_vmm_died_fails_fast_with_its_exit() {
    let dir = tempfile::tempdir().unwrap();
    write_fake_config(dir.path(), "exit", serde_json::json!([]));
    let spec = sample_spec(dir.path());
    let listener = ReadyListener::bind(&spec, READY_PORT).unwrap();
    let mut vm = launch(&FirecrackerDriver::new(fake_binary()), &spec).unwrap();
    let pid = vm.pid() as i32;
    vm.process().signal(rustix::process::Signal::KILL).unwrap();
    let start = Instant::now();
    let err = vm
        .wait_ready(&listener, Duration::from_secs(20))
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    match &err {
        VmmError::EarlyExit { status, tail, .. } => {
            assert!(status.contains("SIGKILL"), "{status}");
            assert!(tail.contains("fake firecracker"), "{tail}");
        }
        other => panic!("expected EarlyExit, got {other}"),
    }
    vm.kill().unwrap();
    assert!(!alive(pid));
}

/// Issue #13 finding 1: root bound the readiness socket inside the
/// owner-writable `run/` and then `chown`ed it by path, following symlinks:
/// an owner swapping `run/vsock.sock_52` with a symlink
/// (`renameat2(RENAME_EXCHANGE)`) made root hand any file to the owner. Here
/// a racing thread does exactly that, thousands of times, while the listener
/// binds for a VMM of another uid; the root-owned sentinel the symlink points
/// at keeps its owner and mode. Needs root.
#[test]
fn a_racing_owner_cannot_redirect_the_ready_socket() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    use std::sync::atomic::{AtomicBool, Ordering};
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "this test needs root (it binds as root for a VMM of another uid)"
    );
    let base = tempfile::tempdir().unwrap();
    let sentinel = base.path().join("sentinel");
    std::fs::write(&sentinel, "root's").unwrap();
    std::fs::set_permissions(&sentinel, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = base.path().join("run");
    std::fs::create_dir(&run).unwrap();
    // As in a VM directory: `run/` belongs to the VMM's user.
    std::os::unix::fs::chown(&run, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::symlink(&sentinel, run.join("decoy")).unwrap();
    let mut spec = sample_spec(&run);
    spec.run_as = Some((65534, 65534));

    let stop = AtomicBool::new(false);
    let (mut bound, mut refused) = (0u32, 0u32);
    std::thread::scope(|s| {
        s.spawn(|| {
            let dir = std::fs::File::open(&run).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let _ = rustix::fs::renameat_with(
                    &dir,
                    "decoy",
                    &dir,
                    "vsock.sock_52",
                    rustix::fs::RenameFlags::EXCHANGE,
                );
            }
        });
        for _ in 0..3000 {
            match ReadyListener::bind(&spec, READY_PORT) {
                Ok(l) => {
                    bound += 1;
                    drop(l);
                }
                Err(_) => refused += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    // The socket is the VMM user's own, 0700: nothing root-owned is left
    // in that user's directory.
    let l = ReadyListener::bind(&spec, READY_PORT).unwrap();
    let sock = std::fs::symlink_metadata(l.path()).unwrap();
    assert_eq!(
        (sock.uid(), sock.gid(), sock.mode() & 0o777),
        (65534, 65534, 0o700)
    );
    drop(l);
    let m = std::fs::metadata(&sentinel).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (0, 0, 0o600),
        "root changed the sentinel through the readiness socket ({bound} binds, {refused} refused)"
    );
    assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), "root's");
    eprintln!("{bound} binds, {refused} refused; the sentinel is untouched");
    assert!(bound > 0, "no bind succeeded: the test raced nothing");

    // A run directory reached through a symlink is refused outright.
    let link = base.path().join("runlink");
    std::os::unix::fs::symlink(&run, &link).unwrap();
    let err = ReadyListener::bind(&sample_spec(&link), READY_PORT).unwrap_err();
    assert!(err.to_string().contains("opening the directory"), "{err}");
}

/// Second review A3: a connection that sends nothing held the readiness
/// thread for the whole boot timeout (600 s in the executor), past any stop.
/// It now costs at most `LINE_WAIT`.
#[test]
fn a_silent_connection_holds_the_wait_for_line_wait_at_most() {
    use banger_vmm::firecracker::vsock::LINE_WAIT;
    let dir = tempfile::tempdir().unwrap();
    let spec = sample_spec(dir.path());
    let listener = ReadyListener::bind(&spec, READY_PORT).unwrap();
    let silent = UnixStream::connect(port_socket(dir.path())).unwrap();
    let started = Instant::now();
    let err = listener.wait(Duration::from_secs(120)).unwrap_err();
    let took = started.elapsed();
    assert!(err.to_string().contains("no full line"), "{err}");
    assert!(
        took < LINE_WAIT + Duration::from_secs(2),
        "a silent connection held the wait for {took:?}"
    );
    drop(silent);
}

/// Third review F6: the line wait was a per-read timeout, so a peer that
/// sends one byte every few seconds (the owner can connect to its own
/// `run/` socket) held the readiness thread for up to 256 reads of
/// `LINE_WAIT` each. The whole line now gets `LINE_WAIT`.
#[test]
fn a_trickling_connection_holds_the_wait_for_line_wait_at_most() {
    use banger_vmm::firecracker::vsock::LINE_WAIT;
    let dir = tempfile::tempdir().unwrap();
    let spec = sample_spec(dir.path());
    let listener = ReadyListener::bind(&spec, READY_PORT).unwrap();
    let mut peer = UnixStream::connect(port_socket(dir.path())).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickler = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if peer.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let started = Instant::now();
    let err = listener.wait(Duration::from_secs(120)).unwrap_err();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    trickler.join().unwrap();
    assert!(err.to_string().contains("no full line"), "{err}");
    assert!(
        took < LINE_WAIT + Duration::from_secs(2),
        "a trickling connection held the wait for {took:?}"
    );
}
