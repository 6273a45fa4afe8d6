//! The jail spawner: a process forked from `bangerd-root` at start, while
//! the helper is still single-threaded, that keeps the power to mount and
//! make namespaces after the helper has locked itself out of both
//! ([`super::lock_down`]).
//!
//! It holds only `CAP_SYS_ADMIN`, `CAP_NET_ADMIN`, `CAP_SETUID` and
//! `CAP_SETGID`, dies with
//! its parent, never execs anything itself and serves one request at a
//! time on a `SOCK_SEQPACKET` socket: one message in, one message out. A
//! request names a jail (every [`Jail`] field crosses through
//! `Jail::encode` and `Jail::decode`: binds, pass-through descriptors and
//! their numbers, copies, a long-lived process's limits), the program, its
//! argv and environment; its descriptors travel by `SCM_RIGHTS` in a fixed
//! order. The child's stdout and stderr are whichever descriptors the
//! caller sends (pipes, or a VMM's log file): the spawner passes them on.
//! The spawner prepares the jail as a direct spawn does and clones the
//! child with `CLONE_PARENT`, so the child is the helper's: the helper
//! waits for it, times it out and reads its output as before. The answer
//! is the child's pid and pidfd, its (step, errno) report when it
//! failed before `execve` and, for a jail that asked for them
//! ([`Jail::net_handles`]), its network namespace's descriptor and a
//! route netlink socket opened in it ([`super::JailNet`]); or the reason
//! the request was refused.

use std::ffi::OsString;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use rustix::io::IoSlice;
use rustix::io::IoSliceMut;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

use super::{Cloned, Jail};
use crate::mounts::MountKey;
use wire::{Reader, Writer};

/// The wire format's version, the first word of every request.
const VERSION: u32 = 1;
/// The largest request, in bytes.
pub const MAX_REQUEST: usize = 64 << 10;
/// The most descriptors one request carries: room for a jailed QEMU with
/// `banger_vmm::qemu::fds::MAX_DRIVES` (8) drives — the 4 every request
/// has, the tap, the serial log, `run/`, `/dev/kvm`, kernel and initrd
/// copies, and two per drive: 26.
pub const MAX_FDS: usize = 32;
/// The most binds one request carries: each is a mount.
pub const MAX_BINDS: usize = 12;
/// Descriptors every request carries besides its jail's: the program
/// (`O_PATH`), then stdin's read end, stdout's and stderr's write ends.
const FIXED_FDS: usize = 4;

/// The capabilities the spawner keeps: mounts and namespaces
/// (`CAP_SYS_ADMIN`), the child's ids (`CAP_SETUID`, `CAP_SETGID`), and
/// `CAP_NET_ADMIN`: the route netlink socket it opens in a jail's network
/// namespace ([`Jail::net_handles`]) moves a link out of it only if its
/// opener held `CAP_NET_ADMIN` (the kernel checks the socket file's
/// credentials, then the sender's). It uses it for nothing else, and it
/// is no wider than `CAP_SYS_ADMIN`, which already lets it enter and make
/// namespaces. (`linux/capability.h`: 21, 12, 7, 6.)
pub const KEPT_CAPS: [u32; 4] = [21, 12, 7, 6];

/// One spawn: what [`super::spawn`] hands the spawner (or clones itself).
#[derive(Debug)]
pub(super) struct Request {
    pub(super) jail: Jail,
    /// The program, opened `O_PATH`: bound at [`super::EXE`].
    pub(super) program: OwnedFd,
    pub(super) argv0: OsString,
    pub(super) args: Vec<OsString>,
    pub(super) env: Vec<(OsString, OsString)>,
    /// The child's stdin, stdout and stderr.
    pub(super) stdio: [OwnedFd; 3],
}

/// Why a message is not a request the spawner serves.
fn refused(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("jail spawner: {what}"),
    )
}

impl Request {
    /// The request as one message and its descriptors: the program, the
    /// binds (by [`Jail::encode`]), stdin, stdout, stderr.
    fn encode(&self) -> Writer<'_> {
        let mut w = Writer::default();
        w.u32(VERSION);
        w.fd(self.program.as_fd());
        self.jail.encode(&mut w);
        w.bytes(self.argv0.as_bytes());
        w.u32(self.args.len() as u32);
        for a in &self.args {
            w.bytes(a.as_bytes());
        }
        w.u32(self.env.len() as u32);
        for (k, v) in &self.env {
            w.bytes(k.as_bytes());
            w.bytes(v.as_bytes());
        }
        for fd in &self.stdio {
            w.fd(fd.as_fd());
        }
        w
    }

    fn decode(
        mut r: Reader<'_>,
        range: &std::ops::Range<u32>,
        binds_from: &[MountKey],
    ) -> std::io::Result<Request> {
        let version = r.u32()?;
        if version != VERSION {
            return Err(refused(format!("protocol version {version}")));
        }
        let program = r.fd()?;
        let jail = Jail::decode(&mut r, range, binds_from)?;
        let argv0 = r.os()?;
        let mut args = Vec::new();
        for _ in 0..r.u32()? {
            args.push(r.os()?);
        }
        let mut env = Vec::new();
        for _ in 0..r.u32()? {
            env.push((r.os()?, r.os()?));
        }
        let stdio = [r.fd()?, r.fd()?, r.fd()?];
        r.finish()?;
        Ok(Request {
            jail,
            program,
            argv0,
            args,
            env,
            stdio,
        })
    }
}

/// The spawner's first message, once it is set up.
const READY: &[u8; 5] = b"ready";

/// How long the helper waits for the spawner's answer to one request, in
/// milliseconds: it prepares a jail and waits for the child's `execve`.
static DEADLINE_MS: AtomicU64 = AtomicU64::new(30_000);

/// The helper's end of the spawner's socket.
#[derive(Debug)]
pub struct Spawner {
    sock: Mutex<OwnedFd>,
    pid: i32,
    /// Taken right after the fork: the spawner is killed and reaped
    /// through it when an exchange fails.
    pidfd: OwnedFd,
    /// The bind roots' descriptors, held for the helper's life: see
    /// [`BindRoots`].
    _held_roots: Vec<OwnedFd>,
    /// Set once an exchange failed (no answer in time, a broken socket, an
    /// answer that does not parse): every later call fails, none reads an
    /// answer meant for another.
    dead: AtomicBool,
}

static SPAWNER: OnceLock<Spawner> = OnceLock::new();

/// The pids of the children the spawner cloned whose [`super::Child`]
/// has not reaped them yet: [`super::sweep::kill_jailed`] kills them with
/// the rest of their jail uid but leaves each to its own caller to reap
/// (third read of F1, finding c). Added while the spawner's lock is held,
/// which `kill_jailed` runs under too, so an answered child is never
/// missing. Unreaped, a pid listed here names that child.
static OWNED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn own(pid: i32) {
    OWNED.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
}

/// `pid` reaped by its [`super::Child`]: no longer listed.
pub(super) fn disown(pid: i32) {
    OWNED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|&p| p != pid);
}

/// Whether `pid` is a child some [`super::Child`] will reap.
pub(super) fn owned(pid: u32) -> bool {
    OWNED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&(pid as i32))
}

/// How long [`Spawner::end`] waits for the killed spawner to exit, in
/// milliseconds (tests shorten it).
static END_WAIT_MS: AtomicU64 = AtomicU64::new(5_000);

thread_local! {
    /// Set on the thread whose exchange failed, once its [`Spawner::end`]
    /// has returned.
    static ENDED_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The spawner this process started, if any: jails then go through it.
pub(super) fn running() -> Option<&'static Spawner> {
    SPAWNER.get()
}

/// Refused unless this process has exactly one thread: a fork with more
/// may copy a lock another thread held (the child allocates), and a
/// filter binds only the calling thread (review of F1, finding 3).
pub(super) fn one_thread() -> std::io::Result<()> {
    match std::fs::read_dir("/proc/self/task")?.count() {
        1 => Ok(()),
        n => Err(refused(format!("{n} threads, not one"))),
    }
}

/// Fork the spawner. Call while this process has one thread (the child
/// allocates; refused otherwise); `range` is the jail range, the only ids
/// it will run as; `bind_dirs` the directories whose mounts hold every
/// file and directory it will bind (read here, before the fork, by
/// [`bind_roots`]; one that does not exist is left out). Returns the spawner's pid; from then
/// on [`super::spawn`] goes through it. A second call is refused.
pub fn start(range: std::ops::Range<u32>, bind_dirs: &[&std::path::Path]) -> std::io::Result<u32> {
    one_thread()?;
    if range.contains(&0) || range.is_empty() {
        return Err(refused(format!("jail range {range:?}")));
    }
    let binds_from = bind_roots(bind_dirs)?;
    if SPAWNER.get().is_some() {
        return Err(refused("already started"));
    }
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let parent = rustix::process::getpid();
    // SAFETY: fork in a single-threaded process (the caller's promise):
    // the child has a consistent copy of everything, allocator included,
    // and runs only `serve`, which never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop(ours);
        serve(theirs, parent, range, &binds_from);
    }
    drop(theirs);
    // The spawner is this process's child, not yet waited for: the pid is
    // still its.
    let child = rustix::process::Pid::from_raw(pid).ok_or_else(|| refused("fork gave pid 0"))?;
    let pidfd = rustix::process::pidfd_open(child, rustix::process::PidfdFlags::empty())?;
    // The spawner says it is ready once it holds only its three
    // capabilities; it exits instead if it could not get there.
    let mut ready = [0u8; READY.len()];
    match recv(ours.as_fd(), &mut ready)? {
        (n, fds) if n == READY.len() && fds.is_empty() && ready == *READY => {}
        _ => return Err(std::io::Error::other("the jail spawner did not start")),
    }
    let _ = SPAWNER.set(Spawner {
        sock: Mutex::new(ours),
        pid,
        pidfd,
        dead: AtomicBool::new(false),
        _held_roots: binds_from.held,
    });
    Ok(pid as u32)
}

impl Spawner {
    /// The spawner's pid.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Send `r`; the answer is the child's pid, its pidfd and its report
    /// when it failed before `execve` (the child is then still to reap).
    ///
    /// A request that cannot go in one message (more than [`MAX_FDS`]
    /// descriptors or [`MAX_REQUEST`] bytes) is refused before anything
    /// is sent, and the spawner stays usable. Once a request is on its
    /// way, no answer within the deadline, a broken socket or an answer
    /// that does not parse leave the spawner dead: this and every later
    /// call fail, and [`dead`] says so, so that the helper exits and its
    /// service manager restarts it with a new spawner. Before this call
    /// returns, the spawner is killed and reaped, and so is whatever runs
    /// as the request's jail uid (the child it may have cloned late, with
    /// the disk bound writable, is the helper's and nobody else's to
    /// stop: second read of F1, finding 3).
    pub(super) fn spawn(&self, r: Request) -> std::io::Result<Cloned> {
        let sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        if self.dead.load(Ordering::Relaxed) {
            return Err(std::io::Error::other(
                "the jail spawner is dead after a failed exchange: restart the helper",
            ));
        }
        let w = r.encode();
        if w.fds.len() > MAX_FDS || w.bytes.len() > MAX_REQUEST {
            return Err(refused(format!(
                "a request of {} descriptors and {} bytes: at most {MAX_FDS} and {MAX_REQUEST}",
                w.fds.len(),
                w.bytes.len()
            )));
        }
        match send(sock.as_fd(), &w.bytes, &w.fds) {
            Ok(()) => {}
            // Nothing went: the spawner is still in step (third read of
            // F1, finding e).
            Err(e) if sent_nothing(&e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("jail spawner: the request was not sent: {e}"),
                ));
            }
            Err(e) => return Err(self.fail(&sock, r.jail.uid, e)),
        }
        let exchange = || {
            drop(w);
            let mut buf = [0u8; 512];
            let deadline = std::time::Duration::from_millis(DEADLINE_MS.load(Ordering::Relaxed));
            let (n, fds) = recv_within(sock.as_fd(), &mut buf, deadline)?;
            answer(&buf[..n], fds, r.jail.net_handles)
        };
        let got = exchange();
        // The child's ends go now: the spawner holds its own copies until
        // it has cloned, then closes them.
        let uid = r.jail.uid;
        drop(r);
        match got {
            Ok(refused_or_cloned) => refused_or_cloned.inspect(|c| own(c.pid)),
            Err(e) => Err(self.fail(&sock, uid, e)),
        }
    }

    /// An exchange failed after (or while) the request went: mark the
    /// spawner dead, [`Spawner::end`] it, and say so in `e`.
    fn fail(&self, sock: &OwnedFd, uid: u32, e: std::io::Error) -> std::io::Error {
        self.dead.store(true, Ordering::Relaxed);
        let _ = rustix::net::shutdown(sock.as_fd(), rustix::net::Shutdown::Both);
        let ended = match self.end(uid) {
            Ok(()) => String::new(),
            Err(end) => format!(" (and ending it failed: {end})"),
        };
        ENDED_HERE.set(true);
        std::io::Error::new(
            e.kind(),
            format!("jail spawner (now dead, restart the helper): {e}{ended}"),
        )
    }

    /// Whether the spawner is dead after an exchange that failed on this
    /// thread, and this thread's [`Spawner::end`] has returned (the spawner
    /// killed and reaped, and what ran as the request's jail uid or was a
    /// clone not yet switched to it): only then may the helper exit, and
    /// only from this thread, after the failed operation's own clean-up
    /// and reply. Another thread's later call finds the spawner dead and
    /// fails, but is not told to end the helper: it could do so while the
    /// failing thread is still in `end` (third read of F1, finding a).
    fn ended_here(&self) -> bool {
        self.dead.load(Ordering::Relaxed) && ENDED_HERE.get()
    }

    /// Kill the spawner and wait for it, so it clones nothing more; then
    /// kill and reap what runs as jail uid `uid` (or is a clone of its not
    /// yet switched to it) — that too when killing or waiting failed: a
    /// spawner with `SIGKILL` pending completes no clone, and one it made
    /// just before must not outlive the call (hostile read of the merged
    /// spawner, L2). The errors of both steps.
    fn end(&self, uid: u32) -> std::io::Result<()> {
        let stopped = self.stop();
        let killed = super::sweep::kill_jailed(uid).map(drop);
        match (stopped, killed) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Err(stop), Err(kill)) => Err(std::io::Error::new(
                stop.kind(),
                format!("{stop}; and killing what ran as jail uid {uid}: {kill}"),
            )),
        }
    }

    /// Kill the spawner, wait for it to exit and reap it if it can be.
    /// Bounded: the lock every jailed call takes is held here, and a
    /// killed process may not exit (stuck in the kernel) or not become
    /// reapable (traced by another process) for as long as it likes (third
    /// read of F1, finding b).
    fn stop(&self) -> std::io::Result<()> {
        let wait = std::time::Duration::from_millis(END_WAIT_MS.load(Ordering::Relaxed));
        super::sweep::kill_and_reap(&self.pidfd, wait, "spawner")
    }
}

/// Whether this thread should now end the helper for its spawner (with a
/// failure status, for the service manager to restart it): see
/// [`Spawner::ended_here`].
pub fn ended_here() -> bool {
    running().is_some_and(Spawner::ended_here)
}

/// Wait up to `deadline` for a message, then [`recv`] it.
fn recv_within(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    deadline: std::time::Duration,
) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let end = std::time::Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the jail spawner did not answer within {deadline:?}"),
            ));
        }
        let mut fds = [rustix::event::PollFd::new(
            &sock,
            rustix::event::PollFlags::IN,
        )];
        let wait = rustix::time::Timespec::try_from(left).map_err(std::io::Error::other)?;
        match rustix::event::poll(&mut fds, Some(&wait)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => {}
            Ok(_) => return recv(sock, buf),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The spawner's answer: the child's pid, pidfd, report and network
/// handles, or (the inner error) the reason for a refusal; the outer
/// error, an answer that does not parse.
fn answer(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    asked_net: bool,
) -> std::io::Result<std::io::Result<Cloned>> {
    let mut reader = Reader {
        bytes,
        fds: fds.into_iter(),
    };
    let pid = reader.u32()? as i32;
    let step = reader.u32()?;
    let errno = reader.u32()? as i32;
    let why = String::from_utf8_lossy(reader.bytes()?).into_owned();
    let has_net = reader.u32()?;
    if pid == 0 {
        reader.finish()?;
        return Ok(Err(std::io::Error::new(
            std::io::Error::from_raw_os_error(errno).kind(),
            why,
        )));
    }
    let pidfd = reader.fd()?;
    // Handles only for a request that asked for them, and then always:
    // unasked ones would keep the child's namespace alive as long as the
    // `Spawned` (hostile read of the own-netns jail, informational).
    let net = match (has_net, asked_net) {
        (0, false) => None,
        (1, true) => Some(super::JailNet::checked(reader.fd()?, reader.fd()?)?),
        (n, asked) => {
            return Err(refused(format!(
                "network handles flag {n} for a request that {} them",
                if asked {
                    "asked for"
                } else {
                    "did not ask for"
                }
            )));
        }
    };
    reader.finish()?;
    Ok(Ok(Cloned {
        pid,
        pidfd,
        report: (step != 0).then_some((step, errno)),
        net,
    }))
}

/// Whether a failed [`send`] sent nothing and left the spawner in step:
/// an error of the call itself but the peer's going (`EPIPE`,
/// `ECONNRESET`, `ENOTCONN`). A `SOCK_SEQPACKET` message goes whole or
/// not at all; a send cut short (no errno) counts as sent.
fn sent_nothing(e: &std::io::Error) -> bool {
    !matches!(
        e.raw_os_error(),
        None | Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN)
    )
}

/// Send one message with `fds` attached.
fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(refused(format!("{} descriptors", fds.len())));
    }
    let sent = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != bytes.len() {
        return Err(refused("a message sent in part"));
    }
    Ok(())
}

/// Receive one message into `buf` with its descriptors (close-on-exec);
/// a message or a descriptor list cut short is refused, its descriptors
/// closed. 0 bytes with no descriptors: the other end has closed.
fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match rustix::net::recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => {}
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(r) = m {
            fds.extend(r);
        }
    }
    if got.flags.contains(ReturnFlags::TRUNC) || got.flags.contains(ReturnFlags::CTRUNC) {
        return Err(refused("a truncated message"));
    }
    Ok((got.bytes, fds))
}

/// The spawner's whole life: never returns.
/// A panic ends the spawner with `_exit(2)`: never an unwind into the
/// forked copy of the helper's `main`, which would then run on with the
/// spawner's capabilities.
fn serve(
    sock: OwnedFd,
    parent: rustix::process::Pid,
    range: std::ops::Range<u32>,
    binds_from: &[MountKey],
) -> ! {
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serve_unwinding(sock, parent, range, binds_from)
    }));
    let _ = served;
    // SAFETY: _exit ends this forked child without running the parent's
    // atexit handlers or destructors; `serve_unwinding` returns only by
    // panicking.
    unsafe { libc::_exit(2) }
}

/// [`serve`]'s loop; returns only by panicking.
fn serve_unwinding(
    sock: OwnedFd,
    parent: rustix::process::Pid,
    range: std::ops::Range<u32>,
    binds_from: &[MountKey],
) -> ! {
    let (sock, helper) = match setup(sock, parent) {
        Ok(s) => s,
        // SAFETY: _exit ends this forked child without running the
        // parent's atexit handlers or destructors.
        Err(_) => unsafe { libc::_exit(1) },
    };
    if send(sock.as_fd(), READY, &[]).is_err() {
        // SAFETY: as above.
        unsafe { libc::_exit(1) }
    }
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let answer = match recv(sock.as_fd(), &mut buf) {
            Ok((0, fds)) if fds.is_empty() => break,
            Ok((n, fds)) => Request::decode(
                Reader {
                    bytes: &buf[..n],
                    fds: fds.into_iter(),
                },
                &range,
                binds_from,
            )
            .and_then(|r| super::clone_jailed(&r, libc::CLONE_PARENT, helper.as_fd())),
            Err(e)
                if e.raw_os_error().is_some() && e.kind() != std::io::ErrorKind::InvalidInput =>
            {
                break;
            }
            Err(e) => Err(e),
        };
        let mut w = Writer::default();
        match &answer {
            Ok(Cloned {
                pid,
                pidfd,
                report,
                net,
            }) => {
                let (step, errno) = report.unwrap_or((0, 0));
                w.u32(*pid as u32);
                w.u32(step);
                w.u32(errno as u32);
                w.bytes(b"");
                w.u32(u32::from(net.is_some()));
                w.fd(pidfd.as_fd());
                for fd in net.iter().flat_map(super::JailNet::fds) {
                    w.fd(fd);
                }
            }
            Err(e) => {
                w.u32(0);
                w.u32(0);
                w.u32(e.raw_os_error().unwrap_or(libc::EINVAL) as u32);
                let why = e.to_string();
                w.bytes(&why.as_bytes()[..why.len().min(400)]);
                w.u32(0);
            }
        }
        if send(sock.as_fd(), &w.bytes, &w.fds).is_err() {
            break;
        }
    }
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// Dies with `parent`, holds no descriptor but 0-2, the socket (moved
/// to 3) and a pidfd of `parent` (returned with it: the helper, parent of
/// every child cloned with `CLONE_PARENT`), keeps [`KEPT_CAPS`].
fn setup(sock: OwnedFd, parent: rustix::process::Pid) -> std::io::Result<(OwnedFd, OwnedFd)> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    if rustix::process::getppid() != Some(parent) {
        return Err(refused("the helper is gone"));
    }
    // SAFETY: dup3 onto 3, which this process then owns alone (everything
    // from 4 up is closed next); close_range takes no pointers.
    let sock = unsafe {
        if sock.as_raw_fd() != 3 && libc::dup3(sock.as_raw_fd(), 3, libc::O_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        std::mem::forget(sock);
        if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(3)
    };
    // The helper is still this process's parent (checked above, with the
    // death signal armed): the pid is its.
    let helper = rustix::process::pidfd_open(parent, rustix::process::PidfdFlags::empty())?;
    // Not dumpable: the helper (same uid, and its permitted set holds the
    // spawner's) may then neither trace it, nor open its `/proc/<pid>/mem`,
    // `root` or `fd/`, nor use process_vm_writev on it without
    // CAP_SYS_PTRACE, which it has not (hostile review of F1, finding 1).
    // The children it clones inherit this until their `execve`.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    super::caps::drop_capabilities(&KEPT_CAPS)?;
    Ok((sock, helper))
}

mod roots;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod wire;

pub(super) use roots::bind_roots;
