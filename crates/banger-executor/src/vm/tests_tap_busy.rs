//! A launch's hand-over (`hand_tap`) against a copy of a descriptor a
//! forked child holds: the cold CI of 1f190b8 saw `hand_tap` fail with
//! `EBUSY` on a tap whose last holder had just closed its descriptor — a
//! child forked meanwhile by another thread (another test; in the helper,
//! another request's tool) held a copy until its exec. The hand-over
//! waits that out for up to `BUSY_GRACE`; a tap held longer is refused.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::time::Instant;

use banger_host::net::{BUSY_GRACE, HostNet as _};

use super::VmOpError;
use super::{SLOT, TAP, attach, host, journal_tap, owner, with_a_tap};

/// A forked child holding its copies of `keep[0]` (a tap's descriptor)
/// and `keep[1]` (a pipe's read end) and of no other descriptor: it waits
/// for the pipe to close, holds on `linger_ms` more and exits. Returns
/// its pid.
fn fork_holding(keep: [i32; 2], linger_ms: i64) -> libc::pid_t {
    // SAFETY: the child makes only async-signal-safe calls (close, read,
    // nanosleep, _exit) on its own copies, as a child between fork and
    // exec does; the parent only gets the pid.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        // SAFETY: see above; `byte` and `pause` outlive the calls.
        unsafe {
            for fd in 3..4096 {
                if !keep.contains(&fd) {
                    libc::close(fd);
                }
            }
            let mut byte = 0u8;
            libc::read(keep[1], (&mut byte as *mut u8).cast(), 1);
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: linger_ms * 1_000_000,
            };
            libc::nanosleep(&pause, std::ptr::null_mut());
            libc::_exit(0);
        }
    }
    child
}

/// Reap our child `pid`.
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for our own child; `status` outlives the call.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
}

/// The pipe a [`fork_holding`] child waits on.
fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
}

#[test]
fn a_hand_over_waits_out_a_copy_a_forked_child_holds_until_its_exec() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        let held = attach().expect("a holder attaches");
        let (rd, wr) = pipe();
        let child = fork_holding([held.as_raw_fd(), rd.as_raw_fd()], 100);
        drop(rd);
        drop(held);
        // The child's copy holds the tap: an attach right now is refused.
        let once = net.hand_tap(TAP, index, SLOT, SLOT).unwrap_err();
        assert_eq!(once.errno(), Some(libc::EBUSY), "{once}");
        let started = Instant::now();
        drop(wr);
        let handed = h
            .hand_tap(TAP, (SLOT, SLOT))
            .expect("the hand-over waits the copy out");
        let waited = started.elapsed();
        assert_eq!(owner(net), Some(SLOT));
        drop(handed);
        reap(child);
        assert!(waited < BUSY_GRACE, "waited {waited:?}");
    });
}

#[test]
fn a_tap_held_past_the_grace_is_still_refused() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        let held = attach().expect("a holder attaches");
        let started = Instant::now();
        let err = h.hand_tap(TAP, (SLOT, SLOT)).map(drop).unwrap_err();
        let waited = started.elapsed();
        let VmOpError::HandTap { source, .. } = &err else {
            panic!("not a hand-over error: {err}");
        };
        assert_eq!(source.errno(), Some(libc::EBUSY), "{err}");
        assert!(waited >= BUSY_GRACE / 2, "gave up after {waited:?}");
        assert_eq!(owner(net), Some(0), "its owner unchanged under its holder");
        drop(held);
    });
}
