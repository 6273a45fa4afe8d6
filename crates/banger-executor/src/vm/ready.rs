//! A Firecracker VM's vsock readiness listener, on a thread owned with
//! the VMM's table entry (`proc::Proc::Firecracker`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[cfg(test)]
use banger_vmm::firecracker::READY_PORT;
use banger_vmm::firecracker::ReadyListener;

/// How long the vsock readiness listener of a Firecracker VM waits.
const READY_WAIT: Duration = Duration::from_secs(600);

/// The readiness listener's thread: it ends when the guest reports, when
/// [`READY_WAIT`] runs out, or when this handle is dropped (the VMM was
/// stopped, killed or seen dead) — then the listener and its socket in the
/// VM's `run/` go with it, never outliving the VMM.
#[derive(Debug)]
pub(super) struct ReadyWatch {
    /// Set when the guest reported ready.
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReadyWatch {
    pub(super) fn spawn(listener: ReadyListener, vm_id: String) -> ReadyWatch {
        let ready = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let reported = Arc::clone(&ready);
        let thread = std::thread::spawn(move || {
            let stopped = || {
                if flag.load(Ordering::SeqCst) {
                    Err(banger_vmm::VmmError::Readiness {
                        vmm: "firecracker",
                        what: "the VMM was stopped".into(),
                    })
                } else {
                    Ok(())
                }
            };
            match listener.wait_while(READY_WAIT, stopped) {
                Ok(()) => reported.store(true, Ordering::SeqCst),
                Err(_) if flag.load(Ordering::SeqCst) => {}
                Err(e) => tracing::warn!(vm_id, error = %e, "no vsock readiness from the guest"),
            }
            // `listener` drops here: its socket file is removed.
        });
        ReadyWatch {
            ready,
            stop,
            thread: Some(thread),
        }
    }
}

impl ReadyWatch {
    /// Whether the guest reported ready.
    pub(super) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(t) = self.thread.take() else { return };
        // It polls every 10 ms; a read from a guest connection ends when the
        // VMM (dead by now) closed it. Waited for, so the socket is gone
        // before a later launch binds it again — but never for long: a
        // caller may hold the process table's lock.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            tracing::warn!("the vsock readiness thread did not end within 2 s; left to finish");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::vmm::KERNEL_CMDLINE;
    use banger_vmm::LaunchSpec;
    use std::path::Path;

    fn spec(run_dir: &Path) -> LaunchSpec {
        LaunchSpec {
            vm_id: "0123456789abcdef0123456789abcdef".into(),
            vcpus: 1,
            memory_mib: 128,
            kernel: run_dir.join("vmlinux"),
            initrd: None,
            cmdline: KERNEL_CMDLINE.into(),
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

    /// Regression: the readiness thread outlived a stopped VMM by up to ten
    /// minutes, keeping `run/vsock.sock_52`, and its late cleanup could
    /// unlink the socket a later start had bound.
    #[test]
    fn dropping_the_watch_ends_the_thread_and_removes_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path());
        let listener = ReadyListener::bind(&spec, READY_PORT).unwrap();
        let socket = listener.path().to_path_buf();
        let watch = ReadyWatch::spawn(listener, spec.vm_id.clone());
        assert!(socket.exists());
        let started = Instant::now();
        drop(watch);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(!socket.exists(), "{} is left", socket.display());
        // A new listener on the same path is not disturbed by the old one.
        let again = ReadyListener::bind(&spec, READY_PORT).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(again.path().exists());
    }

    #[test]
    fn the_watch_reports_the_guest_ready() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path());
        let listener = ReadyListener::bind(&spec, READY_PORT).unwrap();
        let socket = listener.path().to_path_buf();
        let watch = ReadyWatch::spawn(listener, spec.vm_id.clone());
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        std::io::Write::write_all(&mut s, b"banger-guest-ready\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !watch.ready.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(watch.ready.load(Ordering::SeqCst));
        drop(watch);
        assert!(!socket.exists());
    }
}
