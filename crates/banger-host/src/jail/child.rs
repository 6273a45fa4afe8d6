//! The cloned child: from the clone to `execve`, raw system calls on data
//! the parent prepared (no allocation, no lock: the parent is
//! multithreaded and the child has only a copy of the cloning thread).

use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, RawFd};

use rustix::fs::CWD;
use rustix::mount::{MountPropagationFlags, MoveMountFlags, UnmountFlags};

use super::{ChildFds, ERR_FD, HIGH_FD, Prepared, STAGE};

/// The failed step of a child that never reached `execve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum Step {
    Private = 1,
    AttachRoot,
    Chdir,
    AttachBind,
    PivotRoot,
    DetachOld,
    Groups,
    Gid,
    Uid,
    NoNewPrivs,
    DeathSignal,
    Stdio,
    CloseFds,
    Exec,
    Signals,
    OomScore,
    Limits,
    Seccomp,
    Session,
    PassFd,
    ParentGone,
    Cgroup,
    Scope,
}

impl Step {
    pub(super) fn name(n: u32) -> &'static str {
        match n {
            1 => "making the mounts private",
            2 => "attaching the jail root",
            3 => "entering the jail root",
            4 => "attaching a bind mount",
            5 => "pivot_root",
            6 => "detaching the old root",
            7 => "dropping supplementary groups",
            8 => "setting the gid",
            9 => "setting the uid",
            10 => "setting no_new_privs",
            11 => "setting the parent-death signal",
            12 => "wiring stdio",
            13 => "closing descriptors",
            14 => "execve",
            15 => "resetting signals",
            16 => "setting oom_score_adj",
            17 => "setting resource limits",
            18 => "installing the seccomp filter",
            19 => "starting a session",
            20 => "passing a descriptor",
            21 => "checking that its parent lives",
            22 => "joining its cgroup",
            23 => "entering the Landlock scope",
            _ => "an unknown step",
        }
    }
}

/// Report `step` failing with `errno` on descriptor `fd` (the error pipe)
/// and exit. Raw calls only.
fn fail(fd: RawFd, step: Step, errno: i32) -> ! {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    buf[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: `fd` is the child's own copy of the error pipe's write end,
    // open until the child exits; `_exit` ends the child without running
    // any of the parent's atexit handlers or destructors.
    unsafe {
        let _ = rustix::io::write(BorrowedFd::borrow_raw(fd), &buf);
        libc::_exit(127)
    }
}

/// `Err(ESRCH)` once the process behind the pidfd `parent` has exited
/// (its pidfd readable). One `poll` that does not wait; no allocation.
fn parent_lives(parent: BorrowedFd<'_>) -> Result<(), i32> {
    let mut fds = [rustix::event::PollFd::new(
        &parent,
        rustix::event::PollFlags::IN,
    )];
    let now = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut fds, Some(&now)) {
        Ok(0) => Ok(()),
        Ok(_) => Err(libc::ESRCH),
        Err(e) => Err(e.raw_os_error()),
    }
}

/// The last OS error of a libc call, read without allocating.
fn errno() -> i32 {
    // SAFETY: reads this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// The kernel's `struct sigaction` for `rt_sigaction` (x86_64 and most
/// others: handler, flags, restorer, mask).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Every signal's disposition back to the default and none blocked: a
/// tool must not inherit an ignored `SIGPIPE` (std ignores it in every
/// Rust program) or a mask the calling thread had. `execve` resets handled
/// signals itself but keeps ignored ones and the mask.
fn reset_signals() -> Result<(), i32> {
    let default = KernelSigaction {
        handler: 0, // SIG_DFL
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid struct of the kernel's layout
        // and size 8 (the kernel's sigset); no old action asked for. A
        // number the kernel does not have fails with EINVAL, ignored.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
    let none: u64 = 0;
    // SAFETY: rt_sigprocmask(SIG_SETMASK) from a valid 8-byte set.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &none as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        )
    };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// `oom_score_adj` 1000: under memory pressure a jailed tool goes first.
/// Through the host's `/proc`, still visible before `pivot_root`.
fn oom_first() -> Result<(), i32> {
    let fd = rustix::fs::open(
        c"/proc/self/oom_score_adj",
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| e.raw_os_error())?;
    rustix::io::write(&fd, b"1000").map_err(|e| e.raw_os_error())?;
    Ok(())
}

/// Join the prepared cgroup, if any: `0` (this process) written to the
/// `cgroup.procs` descriptor root opened (`Jail::cgroup`). One raw
/// `write`; a short one is an error.
fn join_cgroup(p: &Prepared) -> Result<(), i32> {
    let Some(procs) = &p.cgroup else {
        return Ok(());
    };
    match rustix::io::write(procs.procs.as_fd(), b"0") {
        Ok(1) => Ok(()),
        Ok(_) => Err(libc::EIO),
        Err(e) => Err(e.raw_os_error()),
    }
}

/// Each prepared resource limit, by raw `prlimit64` on this process.
fn set_limits(p: &Prepared) -> Result<(), i32> {
    for (resource, limit) in &p.limits {
        // SAFETY: prlimit64 on the calling process (pid 0) from a valid
        // struct rlimit64; no old limit asked for.
        let r = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                *resource,
                limit as *const libc::rlimit64,
                std::ptr::null_mut::<libc::rlimit64>(),
            )
        };
        if r < 0 {
            return Err(errno());
        }
    }
    Ok(())
}

/// Install the prepared filter (no_new_privs is already set).
fn install_filter(p: &Prepared) -> Result<(), i32> {
    super::filter::install(&p.filter)
}

/// The cloned child. Raw system calls on prepared data only: no
/// allocation, no lock, no return.
pub(super) fn child(
    p: &Prepared,
    fds: &ChildFds,
    parent: BorrowedFd<'_>,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    let errfd = fds.err.as_raw_fd();
    macro_rules! step {
        ($step:expr, $e:expr) => {
            if let Err(e) = $e {
                fail(errfd, $step, e.raw_os_error());
            }
        };
    }
    macro_rules! raw_step {
        ($step:expr, $e:expr) => {
            if let Err(e) = $e {
                fail(errfd, $step, e);
            }
        };
    }
    // First, while the host's /proc is still reachable.
    raw_step!(Step::OomScore, oom_first());
    // Before anything it does can be charged elsewhere than its VM's
    // cgroup, and while it is still root (the descriptor's opener's
    // credentials are what the kernel checks, but nothing depends on it).
    raw_step!(Step::Cgroup, join_cgroup(p));
    step!(
        Step::Private,
        rustix::mount::mount_change(
            c"/",
            MountPropagationFlags::REC | MountPropagationFlags::PRIVATE
        )
    );
    step!(
        Step::AttachRoot,
        rustix::mount::move_mount(
            p.root.as_fd(),
            c"",
            CWD,
            STAGE,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
        )
    );
    step!(Step::Chdir, rustix::process::chdir(STAGE));
    for (tree, at) in &p.mounts {
        step!(
            Step::AttachBind,
            rustix::mount::move_mount(
                tree.as_fd(),
                c"",
                CWD,
                at.as_c_str(),
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
            )
        );
    }
    step!(Step::PivotRoot, rustix::process::pivot_root(c".", c"."));
    step!(
        Step::DetachOld,
        rustix::mount::unmount(c".", UnmountFlags::DETACH)
    );
    step!(Step::Chdir, rustix::process::chdir(c"/"));
    step!(Step::Groups, rustix::thread::set_thread_groups(&[]));
    // Not root: checked in `spawn`.
    let (uid, gid) = (
        rustix::process::Uid::from_raw(p.uid),
        rustix::process::Gid::from_raw(p.gid),
    );
    step!(Step::Gid, rustix::thread::set_thread_res_gid(gid, gid, gid));
    // Before the uid changes: raising a hard limit back needs the
    // privilege being dropped, and RLIMIT_NPROC is checked at the change.
    raw_step!(Step::Limits, set_limits(p));
    step!(Step::Uid, rustix::thread::set_thread_res_uid(uid, uid, uid));
    step!(Step::NoNewPrivs, rustix::thread::set_no_new_privs(true));
    // No abstract UNIX socket nor signal outside its own domain, where
    // the kernel can scope them (the parent made the ruleset).
    if let Some(scope) = &p.scope {
        raw_step!(Step::Scope, super::landlock::restrict_self(scope.as_fd()));
    }
    raw_step!(Step::Seccomp, install_filter(p));
    if p.long_lived {
        // A session of its own: a signal to the caller's process group
        // (a terminal's ^C to a dev daemon) does not reach it. No
        // parent-death signal: it outlives a restart of its caller.
        step!(Step::Session, rustix::process::setsid().map(drop));
    } else {
        // After the uid change, which clears it. It fires when the parent
        // thread exits: the one that cloned this child, or through the
        // spawner (CLONE_PARENT) the helper thread that forked the
        // spawner, its main thread, whose exit means the helper is gone.
        step!(
            Step::DeathSignal,
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        );
    }
    // A parent that died before the signal was armed never sends it (the
    // child was reparented): give up when the process this child was
    // cloned for has exited. Its pidfd was taken before the clone;
    // `getppid()` cannot tell, being 0 in the child's own pid namespace.
    // A long-lived child checks too: cloned for a helper already gone, it
    // would run unjournaled.
    raw_step!(Step::ParentGone, parent_lives(parent));
    // SAFETY: dup2/dup3 onto 0-2, ERR_FD and the pass-through numbers
    // (all below HIGH_FD) of descriptors this child owns (all at HIGH_FD or
    // above, so none is overwritten before it is moved); then every number
    // below HIGH_FD that is not one of those is closed, and close_range
    // closes HIGH_FD and above: every other descriptor the fork copied,
    // including the binds already used and the moved sources.
    unsafe {
        for (src, dst) in [
            (fds.stdin.as_raw_fd(), 0),
            (fds.stdout.as_raw_fd(), 1),
            (fds.stderr.as_raw_fd(), 2),
        ] {
            if libc::dup2(src, dst) < 0 {
                fail(errfd, Step::Stdio, errno());
            }
        }
        if libc::dup3(errfd, ERR_FD, libc::O_CLOEXEC) < 0 {
            fail(errfd, Step::Stdio, errno());
        }
        for (src, dst) in &fds.passes {
            if libc::dup2(src.as_raw_fd(), *dst) < 0 {
                fail(ERR_FD, Step::PassFd, errno());
            }
        }
        for n in 3..HIGH_FD {
            if n != ERR_FD && !fds.passes.iter().any(|(_, dst)| *dst == n) {
                libc::close(n);
            }
        }
        if libc::syscall(libc::SYS_close_range, HIGH_FD as u32, u32::MAX, 0u32) < 0 {
            fail(ERR_FD, Step::CloseFds, errno());
        }
    }
    // Last: from here a signal acts as it would on the tool itself.
    if let Err(e) = reset_signals() {
        fail(ERR_FD, Step::Signals, e);
    }
    // SAFETY: execve with NUL-terminated strings and null-terminated
    // pointer arrays prepared before the clone; it returns only on failure.
    unsafe {
        libc::execve(p.exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    fail(ERR_FD, Step::Exec, errno())
}
