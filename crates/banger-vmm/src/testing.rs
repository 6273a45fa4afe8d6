//! Test support: a process that outlives `SIGKILL` while the test wants.
//!
//! A task waiting for the answer to a FUSE request that the filesystem's
//! server has already read sleeps uninterruptibly: a fatal signal stays
//! pending, the task does not exit and its pidfd does not become readable
//! until the request is answered or the connection is aborted (the
//! kernel's `request_wait_answer`, `fs/fuse/dev.c`). [`Held`] serves a tiny
//! FUSE filesystem from a thread of the test process and never answers a
//! read past the end of its one file; a process reading there is held.
//! Nothing here touches cgroups or ptrace, or sets a sysctl: it needs root
//! and `/dev/fuse`, both there on a fresh Debian host, v1 cgroups or not,
//! and the FUSE request timeouts (Linux 6.14 on) off, their default; it
//! refuses to start when one is set rather than be ended by it.

use std::os::fd::{AsFd as _, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;

/// The one file's name in the mount, and its node id (the root is 1).
const FILE: &str = "exe";
const FILE_NODE: u64 = 2;
/// The size the file claims: larger than any content, so nothing stops a
/// reader at a size before it asks for the read that is held.
const CLAIMED_SIZE: u64 = 1 << 20;
/// Read buffer for `/dev/fuse`: the kernel wants room for a request of
/// `max_write` (4 KiB, below) plus headers, and at least 8 KiB.
const BUF: usize = 64 << 10;
/// Kernel request timeouts (Linux 6.14 on): a nonzero one would end the
/// held read by itself. Both are 0 unless an administrator sets them.
const TIMEOUT_SYSCTLS: [&str; 2] = [
    "/proc/sys/fs/fuse/default_request_timeout",
    "/proc/sys/fs/fuse/max_request_timeout",
];

/// FUSE opcodes (`include/uapi/linux/fuse.h`) this server answers.
const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const OPEN: u32 = 14;
const READ: u32 = 15;
const RELEASE: u32 = 18;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const INTERRUPT: u32 = 36;
const BATCH_FORGET: u32 = 42;
/// `FOPEN_DIRECT_IO`: every `read(2)` is one synchronous READ request,
/// never the page cache (whose waits are killable).
const FOPEN_DIRECT_IO: u32 = 1;

/// A FUSE mount served by this process, holding one file at
/// [`Held::path`] (root's, mode 0555): its reads return `content`, then
/// a read past `content` is never answered while the guard lives, and
/// the reader, `SIGKILL`ed or not, stays in the kernel (state `D`), as a
/// VMM stuck in the kernel would. A shell script as `content` (`#!/bin/sh`
/// and its lines) runs, then its shell waits for the rest. Dropped: the
/// connection is aborted (a held reader dies of a pending kill), the
/// mount detached and its directory removed.
#[derive(Debug)]
pub struct Held {
    dir: PathBuf,
    shared: Arc<Shared>,
    /// Closing it (the write end of a pipe) stops the server thread.
    stop: Option<OwnedFd>,
    server: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Pids (host's) of the readers held, in order.
    held: Vec<u32>,
    /// The kernel ended the connection before the guard did.
    ended: Option<String>,
}

impl Held {
    /// Mount a held file whose reads return `content` first. Needs root.
    pub fn new(content: &[u8]) -> Held {
        for s in TIMEOUT_SYSCTLS {
            let v = std::fs::read_to_string(s).unwrap_or_else(|_| "0".into());
            assert_eq!(v.trim(), "0", "{s} is set: FUSE requests time out");
        }
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "banger-held-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let dev = rustix::fs::open(
            "/dev/fuse",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NONBLOCK,
            rustix::fs::Mode::empty(),
        )
        .expect("opening /dev/fuse (needs root and the fuse module)");
        let data = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions",
            std::os::fd::AsRawFd::as_raw_fd(&dev)
        );
        let data = std::ffi::CString::new(data).unwrap();
        rustix::mount::mount(
            "banger-held",
            &dir,
            "fuse",
            rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
            data.as_c_str(),
        )
        .unwrap_or_else(|e| panic!("mounting fuse at {}: {e}", dir.display()));
        let (stop_r, stop_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let shared = Arc::new(Shared::default());
        let server = {
            let (shared, content) = (shared.clone(), content.to_vec());
            std::thread::spawn(move || serve(dev, stop_r, &content, &shared))
        };
        Held {
            dir,
            shared,
            stop: Some(stop_w),
            server: Some(server),
        }
    }

    /// The held file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The pid of the first reader held, waiting up to `timeout` for one.
    pub fn reader(&self, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().unwrap();
        loop {
            assert_eq!(st.ended, None, "the held file's connection ended");
            if let Some(&pid) = st.held.first() {
                return pid;
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no read of {} held", FILE));
            st = self.shared.changed.wait_timeout(st, left).unwrap().0;
        }
    }

    /// Prove the hold: `SIGKILL` `pid` (a held reader), and check that
    /// half a second later it is still there in state `D` and its pidfd
    /// is not readable (it has not exited).
    pub fn assert_outlives_kill(&self, pid: u32) {
        let p = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
        let pidfd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
            .unwrap_or_else(|e| panic!("pidfd of {pid}: {e}"));
        rustix::process::kill_process(p, rustix::process::Signal::KILL).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let ready = rustix::event::poll(&mut fds, Some(&zero)).unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, s)| &s[..1]);
        assert_eq!(
            (ready, state),
            (0, Some("D")),
            "pid {pid} is not held after SIGKILL (pidfd readable, state): {stat}"
        );
        assert_eq!(self.shared.state.lock().unwrap().ended, None);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // The server closes /dev/fuse, the last descriptor of the
        // connection: the kernel aborts it and every held read ends.
        drop(self.stop.take());
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        let _ = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Serve the mount on `dev` until `stop` hangs up.
fn serve(dev: OwnedFd, stop: OwnedFd, content: &[u8], shared: &Shared) {
    let mut buf = vec![0u8; BUF];
    loop {
        let mut fds = [
            PollFd::new(&dev, PollFlags::IN),
            PollFd::new(&stop, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => panic!("polling /dev/fuse: {e}"),
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        let n = match rustix::io::read(&dev, &mut buf) {
            Ok(n) => n,
            // Nothing to read, or a request withdrawn before it was read.
            Err(Errno::AGAIN | Errno::INTR | Errno::NOENT) => continue,
            Err(e) => {
                shared.state.lock().unwrap().ended = Some(e.to_string());
                shared.changed.notify_all();
                return;
            }
        };
        if let Some(reply) = answer(&buf[..n], content, shared) {
            // A reply to a request the kernel has since dropped fails
            // with ENOENT; nothing waits for it.
            let _ = rustix::io::write(dev.as_fd(), &reply);
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
}

/// The reply to the request `req` (`fuse_in_header`, 40 bytes, then the
/// opcode's body), or `None` for none (no reply is due, or it is held).
fn answer(req: &[u8], content: &[u8], shared: &Shared) -> Option<Vec<u8>> {
    let (opcode, unique, node, pid) = (
        u32_at(req, 4),
        u64_at(req, 8),
        u64_at(req, 16),
        u32_at(req, 32),
    );
    let body = &req[40..];
    let reply = |error: i32, out: &[u8]| {
        let mut r = Vec::with_capacity(16 + out.len());
        r.extend_from_slice(&(16 + out.len() as u32).to_ne_bytes());
        r.extend_from_slice(&error.to_ne_bytes());
        r.extend_from_slice(&unique.to_ne_bytes());
        r.extend_from_slice(out);
        Some(r)
    };
    let fail = |errno: Errno| reply(-errno.raw_os_error(), &[]);
    match (opcode, node) {
        (INIT, _) => {
            // fuse_init_out (64 bytes): protocol 7.31, no optional
            // feature (no async reads or direct I/O), max_write 4 KiB.
            let mut out = [0u8; 64];
            out[0..4].copy_from_slice(&7u32.to_ne_bytes());
            out[4..8].copy_from_slice(&31u32.to_ne_bytes());
            out[8..12].copy_from_slice(&body[8..12]); // max_readahead
            out[20..24].copy_from_slice(&4096u32.to_ne_bytes()); // max_write
            out[24..28].copy_from_slice(&1u32.to_ne_bytes()); // time_gran
            reply(0, &out)
        }
        (LOOKUP, 1) if body.split(|&b| b == 0).next() == Some(FILE.as_bytes()) => {
            // fuse_entry_out: node id, generation, entry and attribute
            // validity (an hour), then the attributes.
            let mut out = Vec::with_capacity(128);
            for v in [FILE_NODE, 0, 3600, 3600] {
                out.extend_from_slice(&v.to_ne_bytes());
            }
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&attr(FILE_NODE));
            reply(0, &out)
        }
        (LOOKUP, _) => fail(Errno::NOENT),
        (GETATTR, 1 | FILE_NODE) => {
            // fuse_attr_out: validity, padding, the attributes.
            let mut out = 3600u64.to_ne_bytes().to_vec();
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&attr(node));
            reply(0, &out)
        }
        (OPEN, FILE_NODE) => {
            let mut out = [0u8; 16];
            out[8..12].copy_from_slice(&FOPEN_DIRECT_IO.to_ne_bytes());
            reply(0, &out)
        }
        (READ, FILE_NODE) => {
            let (offset, size) = (u64_at(body, 8), u32_at(body, 16) as usize);
            let from = usize::try_from(offset).unwrap_or(usize::MAX);
            if from < content.len() {
                return reply(0, &content[from..content.len().min(from + size)]);
            }
            shared.state.lock().unwrap().held.push(pid);
            shared.changed.notify_all();
            None
        }
        (RELEASE | FLUSH, _) => reply(0, &[]),
        (FORGET | BATCH_FORGET | INTERRUPT, _) => None,
        _ => fail(Errno::NOSYS),
    }
}

/// `fuse_attr` (88 bytes) of the root directory (node 1) or the file.
fn attr(node: u64) -> [u8; 88] {
    let (mode, nlink, size) = if node == 1 {
        (libc::S_IFDIR | 0o755, 2u32, 0)
    } else {
        (libc::S_IFREG | 0o555, 1, CLAIMED_SIZE)
    };
    let mut a = [0u8; 88];
    a[0..8].copy_from_slice(&node.to_ne_bytes());
    a[8..16].copy_from_slice(&size.to_ne_bytes());
    a[60..64].copy_from_slice(&mode.to_ne_bytes());
    a[64..68].copy_from_slice(&nlink.to_ne_bytes());
    a[80..84].copy_from_slice(&4096u32.to_ne_bytes()); // blksize
    a
}

/// A process standing in for a VMM: `sleep 600`, spawned as a VMM is
/// (kill it at the end: `Spawned::kill` reaps it too).
pub fn sleeper() -> banger_host::runner::Spawned {
    let cmd = banger_host::runner::Cmd::new("sleep").arg("600");
    banger_host::runner::Runner
        .spawn(
            &cmd,
            banger_host::runner::SpawnOptions {
                output: None,
                run_as: None,
            },
        )
        .expect("spawning sleep")
}

/// A pidfd of `vmm`, as a driver duplicates one for its readiness watch.
pub fn pidfd_of(vmm: &banger_host::runner::Spawned) -> std::os::fd::OwnedFd {
    vmm.pidfd()
        .try_clone_to_owned()
        .expect("duplicating a pidfd")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use banger_host::runner::{Cmd, Runner, SpawnOptions};

    use super::Held;

    /// A child reading the held file is held through `SIGKILL` (still
    /// there, state `D`, its pidfd unreadable for half a second and
    /// more), and dies of that kill once the guard goes, leaving no mount.
    #[test]
    fn a_held_reader_outlives_sigkill_until_released() {
        assert_eq!(rustix::process::geteuid().as_raw(), 0, "needs root");
        let held = Held::new(b"");
        let mount = held.dir.display().to_string();
        let mut child = Runner
            .spawn(
                &Cmd::new("cat").arg(held.path()),
                SpawnOptions {
                    output: None,
                    run_as: Some((65_534, 65_534)),
                },
            )
            .unwrap();
        let pid = held.reader(Duration::from_secs(5));
        assert_eq!(pid, child.pid());
        held.assert_outlives_kill(pid);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(child.try_wait().unwrap(), None, "exited while held");
        assert!(child.pidfd_alive(), "its pidfd became readable while held");
        drop(held);
        let status = child
            .wait_timeout(Duration::from_secs(5))
            .unwrap()
            .expect("still running once released");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{status}"
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&mount), "{mount} left mounted");
    }
}
