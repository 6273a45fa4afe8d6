//! The runner's pipes: feeding a child's stdin and draining its stdout
//! and stderr on threads, never blocking in a read or a write, and bounded
//! by the deadline set once the child is gone.

use std::io::Read;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::RunError;

/// Write `input` into the child's stdin on a thread ([`write_pipe`]), then
/// close it. If the write fails other than by the child's leaving
/// ([`the_child_left`]), or panics, the child is killed through `pidfd`
/// first: at EOF it would take the part it got for the whole input.
pub(super) fn feed(
    pipe: Option<std::os::fd::OwnedFd>,
    input: Option<Vec<u8>>,
    exited: &Arc<OnceLock<Instant>>,
    pidfd: std::os::fd::OwnedFd,
    write: WriteStdin,
) -> Option<std::thread::JoinHandle<std::io::Result<()>>> {
    let (pipe, input) = (pipe?, input?);
    let exited = Arc::clone(exited);
    Some(std::thread::spawn(move || {
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write(&pipe, &input, &exited)
        }))
        .unwrap_or_else(|_| Err(std::io::Error::other("the stdin writer panicked")));
        if let Err(e) = &written
            && !the_child_left(e)
        {
            // By the pidfd: the child may have exited and been reaped
            // meanwhile, and its pid be another process's. Once the send
            // returns a SIGKILLed process runs no more of its own code, so
            // it never sees the EOF below.
            let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
        }
        // Closes the child's stdin (EOF).
        drop(pipe);
        written
    }))
}

/// How the stdin writer writes: [`write_pipe`].
pub(super) type WriteStdin =
    fn(&std::os::fd::OwnedFd, &[u8], &OnceLock<Instant>) -> std::io::Result<()>;

/// Write all of `input` into `pipe` without ever blocking in a write: the
/// pipe is made non-blocking and room is awaited with `poll(POLLOUT)`
/// until the deadline in `exited`. Past it the rest is given up (item 20:
/// a grandchild holding stdin unread held the writer, its thread and the
/// input for as long as it liked).
pub(super) fn write_pipe(
    pipe: &std::os::fd::OwnedFd,
    input: &[u8],
    exited: &OnceLock<Instant>,
) -> std::io::Result<()> {
    rustix::io::ioctl_fionbio(pipe, true)?;
    let mut left = input;
    while !left.is_empty() {
        match rustix::io::write(pipe, left) {
            Ok(n) => left = &left[n..],
            Err(rustix::io::Errno::AGAIN) => {
                if !wait_ready(pipe, rustix::event::PollFlags::OUT, exited)? {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("{} bytes of stdin still unread at the deadline", left.len()),
                    ));
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Read `pipe` on a thread until EOF, keeping at most `cap` bytes (the
/// flag says the child wrote more; the pipe is closed then, so it sees
/// EPIPE), and stopping at the deadline in `exited` ([`read_pipe`]) — the
/// deadline is set by the caller when the child is gone, because a
/// grandchild may hold the write end open. [`Runner::output`] keeps what
/// arrived by then: a tool's captured output is checked by its caller.
pub(super) fn drain<R: Read + std::os::fd::AsFd + Send + 'static>(
    pipe: Option<R>,
    cap: usize,
    exited: &Arc<OnceLock<Instant>>,
) -> std::thread::JoinHandle<(Vec<u8>, bool)> {
    let exited = Arc::clone(exited);
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let Some(mut p) = pipe else {
            return (buf, false);
        };
        let end = read_pipe(&mut p, &exited, |chunk| {
            if buf.len() + chunk.len() > cap {
                let keep = cap - buf.len();
                buf.extend_from_slice(&chunk[..keep]);
                return Ok(false);
            }
            buf.extend_from_slice(chunk);
            Ok(true)
        });
        let over = matches!(end, Ok(PipeEnd::Stopped));
        (buf, over)
    })
}

/// How [`read_pipe`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PipeEnd {
    /// The pipe reached its end: every writer closed it.
    Eof,
    /// The consumer refused a chunk (a cap).
    Stopped,
    /// The deadline passed with the pipe still open.
    Cut,
}

/// Read `pipe` until its end, handing each chunk to `take` (`Ok(false)`
/// stops: [`PipeEnd::Stopped`]). Until the deadline in `exited` is set this
/// waits as long as it takes; once it has passed, only the bytes buffered
/// in the pipe at that moment (`FIONREAD`) are read, once, so a writer that
/// keeps it full cannot stretch the call (item 20), and the pipe is
/// [`PipeEnd::Cut`] unless it is then at its end.
///
/// The pipe is made non-blocking first: the uid a tool runs as can open
/// the tool's end through `/proc/<pid>/fd` (a second reader and writer)
/// and take what a poll reported before the read gets it, and a blocking
/// read then waited for as long as that writer stayed. Its reopened
/// descriptor is a file description of its own, so it cannot undo this.
pub(super) fn read_pipe<R: Read + std::os::fd::AsFd>(
    pipe: &mut R,
    exited: &OnceLock<Instant>,
    mut take: impl FnMut(&[u8]) -> std::io::Result<bool>,
) -> std::io::Result<PipeEnd> {
    rustix::io::ioctl_fionbio(&*pipe, true)?;
    let mut chunk = vec![0u8; 1 << 16];
    while wait_ready(pipe, rustix::event::PollFlags::IN, exited)? {
        match pipe.read(&mut chunk) {
            Ok(0) => return Ok(PipeEnd::Eof),
            Ok(n) => {
                if !take(&chunk[..n])? {
                    return Ok(PipeEnd::Stopped);
                }
            }
            // Taken by another reader since the poll: wait again.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Past the deadline. The pipe is non-blocking, so these reads of at
    // most what is buffered never wait; bytes another reader took first
    // end them.
    let mut left = rustix::io::ioctl_fionread(&*pipe)?;
    while left > 0 {
        let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        match pipe.read(&mut chunk[..want]) {
            Ok(0) => return Ok(PipeEnd::Eof),
            Ok(n) => {
                left = left.saturating_sub(n as u64);
                if !take(&chunk[..n])? {
                    return Ok(PipeEnd::Stopped);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(PipeEnd::Cut),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // At its end only if every writer is gone and nothing more came.
    let mut fds = [rustix::event::PollFd::new(
        &*pipe,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let hung_up = matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        && fds[0].revents().contains(rustix::event::PollFlags::HUP);
    if hung_up && rustix::io::ioctl_fionread(&*pipe)? == 0 {
        return Ok(PipeEnd::Eof);
    }
    Ok(PipeEnd::Cut)
}

/// Wait until `pipe` is ready for `what` (`IN`: a read is worth making —
/// it has data or is at its end, the read says which; `OUT`: a write has
/// room or fails): `Ok(true)` then, `Ok(false)` once the deadline in
/// `exited` has passed first. Until the deadline is set this waits as
/// long as it takes.
pub(super) fn wait_ready(
    pipe: &impl std::os::fd::AsFd,
    what: rustix::event::PollFlags,
    exited: &OnceLock<Instant>,
) -> std::io::Result<bool> {
    loop {
        let left = match exited.get() {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_millis(100),
        };
        if left.is_zero() {
            return Ok(false);
        }
        let tick = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: left.min(Duration::from_millis(100)).subsec_nanos().into(),
        };
        let mut fds = [rustix::event::PollFd::new(pipe, what)];
        match rustix::event::poll(&mut fds, Some(&tick)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => {}
            Ok(_) => return Ok(true),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Join the stdin writer: it ends by the deadline in `exited` at the
/// latest ([`write_pipe`]), so no thread is left behind. The child may
/// exit without reading everything (EPIPE), or leave stdin to something
/// that does not read it (the deadline, set only once the child is gone);
/// its status and stderr say what went wrong, so those are only logged.
/// Any other failure, the writer's panic included, is
/// [`RunError::Stdin`]: the child may have been fed nothing.
pub(super) fn finish_feeding(
    writer: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    argv: &str,
) -> Result<(), RunError> {
    let Some(w) = writer else { return Ok(()) };
    let source = match w.join() {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) if the_child_left(&e) => {
            tracing::debug!(%argv, error = %e, "writing stdin");
            return Ok(());
        }
        Ok(Err(e)) => e,
        Err(_) => std::io::Error::other("the stdin writer panicked"),
    };
    Err(RunError::Stdin {
        argv: argv.to_string(),
        source,
    })
}

/// Whether a stdin write failed by the child's leaving: EPIPE (it exited
/// without reading everything) or the drain deadline (what it left holds
/// stdin unread).
pub(super) fn the_child_left(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::TimedOut
    )
}
