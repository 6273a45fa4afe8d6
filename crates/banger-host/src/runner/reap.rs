//! Killing and reaping a child the runner started: the pidfd taken right
//! after the spawn (a child without one is killed, and whether that kill
//! was confirmed decides its error), the bounded reap after a kill, and
//! the reaper thread for a child a kill did not end in time.

use std::process::ExitStatus;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::{DRAIN_AFTER_EXIT, Piped, RunError};

/// A pidfd of `child`, just spawned; if none can be opened the child is
/// killed ([`no_pidfd`]).
pub(super) fn open_pidfd(
    child: Piped,
    argv: &str,
) -> Result<(Piped, std::os::fd::OwnedFd), RunError> {
    match child.pidfd() {
        Ok(fd) => Ok((child, fd)),
        Err(e) => Err(no_pidfd(child, argv, e)),
    }
}

/// Kill `child`, whose pidfd could not be opened (`e`), and say how that
/// ended: a spawn error once it is reaped, [`RunError::StillRunning`]
/// (with its start time, read first while its pid names it) when it was
/// not reaped in time.
pub(super) fn no_pidfd(child: Piped, argv: &str, e: std::io::Error) -> RunError {
    let pid = child.id();
    let started = crate::jail::start_time(pid).ok();
    if kill_and_reap(child) {
        return RunError::Spawn {
            argv: argv.to_string(),
            source: e,
        };
    }
    RunError::StillRunning {
        argv: argv.to_string(),
        pid,
        started,
        source: e,
    }
}

/// Call `check` until it gives a status or `limit` has passed (`None`).
pub(super) fn poll_until(
    limit: Duration,
    mut check: impl FnMut() -> std::io::Result<Option<ExitStatus>>,
) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    let mut sleep = Duration::from_millis(1);
    loop {
        if let Some(status) = check()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(20));
    }
}

/// SIGKILL `child` by the handle we hold (ours and unreaped, so its pid is
/// still its own) and reap it within [`DRAIN_AFTER_EXIT`] (true), or leave
/// it to [`reap_later`] (false).
pub(super) fn kill_and_reap(mut child: Piped) -> bool {
    let _ = child.kill();
    if matches!(
        poll_until(DRAIN_AFTER_EXIT, || child.try_wait()),
        Ok(Some(_))
    ) {
        return true;
    }
    reap_later(child, Arc::default());
    false
}

/// Reap a killed `child` on a detached thread, its status into `status`.
/// SIGKILL does not always make a child reapable: when a process of its
/// uid has ptrace-attached to it, its exit is reported to that tracer first
/// and the parent's wait sees it only once the tracer detaches; a FUSE
/// request can hold it in the kernel. The caller must not wait for that.
/// The pid cannot be recycled before this thread reaps it, and nothing
/// else reaps it: the child is moved here.
pub(super) fn reap_later(mut child: Piped, status: Arc<OnceLock<ExitStatus>>) {
    let pid = child.id();
    tracing::warn!(
        pid,
        "a killed child was not reaped in time; a thread reaps it"
    );
    let spawned = std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || match child.wait() {
            Ok(s) => {
                tracing::debug!(pid, status = %s, "reaped late");
                let _ = status.set(s);
            }
            Err(error) => tracing::warn!(pid, %error, "reaping a killed child"),
        });
    if let Err(error) = spawned {
        tracing::warn!(pid, %error, "starting a reaper thread; the child stays a zombie");
    }
}
