//! Guest readiness as an event (issue #14 item 3): a driver's watcher
//! thread sets a [`Readiness`] once the guest reports, or once it can no
//! longer report (its VMM exited), and whoever waits on it wakes then —
//! nobody polls a file or a flag.
//!
//! Two sources: Firecracker's guest connects to a vsock port
//! ([`crate::firecracker::ReadyListener`]); QEMU's guest, and any VMM
//! re-adopted after an executor restart, writes the ready line on its
//! serial console, watched here through root's own descriptor of the
//! console file ([`ConsoleWatch`]), woken by inotify, from the length the
//! file had at the launch.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use crate::VmmError;

/// What a [`Readiness`] has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Nothing yet.
    Waiting,
    /// The guest reported ready.
    Ready,
    /// It can no longer report: the reason (the VMM exited, the watch
    /// failed).
    Ended(String),
}

/// One guest's readiness, set once by its watcher and waited on by any
/// number of callers.
#[derive(Debug)]
pub struct Readiness {
    seen: Mutex<Seen>,
    changed: Condvar,
}

impl Readiness {
    pub fn new() -> Arc<Readiness> {
        Arc::new(Readiness {
            seen: Mutex::new(Seen::Waiting),
            changed: Condvar::new(),
        })
    }

    /// What has been seen so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Settle it (only the first settlement counts) and wake the waiters.
    pub fn settle(&self, to: Seen) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == Seen::Waiting {
            *seen = to;
            self.changed.notify_all();
        }
    }

    /// Wait until it is settled or `timeout` has passed; what was seen.
    pub fn wait(&self, timeout: Duration) -> Seen {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, _) = self
            .changed
            .wait_timeout_while(seen, timeout, |s| *s == Seen::Waiting)
            .unwrap_or_else(|e| e.into_inner());
        seen.clone()
    }
}

/// Bytes of console read at most per wake-up: a guest flooding its
/// console is scanned over several wake-ups, never all at once.
const READ_MAX: usize = 1 << 20;

/// A thread watching a console file for the ready line: it settles its
/// [`Readiness`] on the line, or when the VMM (its pidfd) exits, and ends;
/// dropping this ends it too (bounded, as the VMM's table lock may be
/// held).
#[derive(Debug)]
pub struct ConsoleWatch {
    readiness: Arc<Readiness>,
    /// Written to end the thread.
    stop: Arc<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ConsoleWatch {
    /// Watch `console` (root's descriptor of the serial log, readable) from
    /// `offset` (its length before this launch) for the ready line
    /// (`banger_proto::guest::READY_MARKER`)
    /// while the process behind `pidfd` runs.
    pub fn spawn(
        console: File,
        offset: u64,
        pidfd: OwnedFd,
        vm_id: &str,
    ) -> Result<ConsoleWatch, VmmError> {
        let io = |what: &str| {
            let what = format!("watching the console of VM {vm_id}: {what}");
            move |e: rustix::io::Errno| VmmError::Io {
                what,
                source: e.into(),
            }
        };
        use rustix::fs::inotify;
        let notify = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .map_err(io("inotify"))?;
        // The inode behind root's descriptor, never the file's name (its
        // owner can change that).
        inotify::add_watch(
            &notify,
            format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&console)
            ),
            inotify::WatchFlags::MODIFY,
        )
        .map_err(io("watching the file"))?;
        let stop = Arc::new(
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)
                .map_err(io("eventfd"))?,
        );
        let readiness = Readiness::new();
        let (settle, stopped) = (Arc::clone(&readiness), Arc::clone(&stop));
        let vm = vm_id.to_string();
        let thread = std::thread::Builder::new()
            .name("console-ready".into())
            .spawn(move || {
                let mut scan = Scan::new(offset);
                let seen = watch(&console, &mut scan, &notify, &pidfd, &stopped);
                if let Seen::Ended(why) = &seen {
                    tracing::debug!(vm, why, "console readiness watch ended");
                }
                settle.settle(seen);
            })
            .map_err(|e| VmmError::Io {
                what: format!("watching the console of VM {vm_id}: a thread"),
                source: e,
            })?;
        Ok(ConsoleWatch {
            readiness,
            stop,
            thread: Some(thread),
        })
    }

    pub fn readiness(&self) -> Arc<Readiness> {
        Arc::clone(&self.readiness)
    }
}

impl Drop for ConsoleWatch {
    fn drop(&mut self) {
        let _ = rustix::io::write(&*self.stop, &1u64.to_ne_bytes());
        end_thread(self.thread.take(), "console readiness");
    }
}

/// Wait (at most 2 s: the caller may hold a lock) for a watcher thread
/// told to stop; one that has not ended by then is left to finish.
pub(crate) fn end_thread(thread: Option<std::thread::JoinHandle<()>>, what: &str) {
    let Some(t) = thread else { return };
    let deadline = Instant::now() + Duration::from_secs(2);
    while !t.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    if t.is_finished() {
        let _ = t.join();
    } else {
        tracing::warn!(
            what,
            "a readiness thread did not end within 2 s; left to finish"
        );
    }
}

/// The watch: scan, then sleep until the file changes, the VMM exits or
/// the watch is stopped.
fn watch(
    console: &File,
    scan: &mut Scan,
    notify: &OwnedFd,
    pidfd: &OwnedFd,
    stop: &OwnedFd,
) -> Seen {
    loop {
        // Drained before the scan: a write after it wakes the poll below.
        let mut events = [0u8; 4096];
        while matches!(rustix::io::read(notify, &mut events), Ok(n) if n > 0) {}
        match scan.more(console) {
            Ok(true) => return Seen::Ready,
            Ok(false) => {}
            Err(e) => return Seen::Ended(format!("reading the console: {e}")),
        }
        if scan.behind {
            // More is left to read (a flood): read on before sleeping.
            continue;
        }
        let mut fds = [
            PollFd::new(notify, PollFlags::IN),
            PollFd::new(pidfd, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Seen::Ended(format!("waiting on the console: {e}")),
        }
        if !fds[2].revents().is_empty() {
            return Seen::Ended("the watch was stopped".into());
        }
        if !fds[1].revents().is_empty() {
            // The VMM is gone: what it wrote last still counts.
            return match scan.more(console) {
                Ok(true) => Seen::Ready,
                _ => Seen::Ended("the VMM exited".into()),
            };
        }
    }
}

/// Where a console scan stands: the next offset, and the end of the
/// bytes before it (the marker may straddle two reads).
#[derive(Debug)]
struct Scan {
    pos: u64,
    carry: Vec<u8>,
    /// The last read stopped at [`READ_MAX`] with more to read.
    behind: bool,
}

impl Scan {
    fn new(pos: u64) -> Scan {
        Scan {
            pos,
            carry: Vec::new(),
            behind: false,
        }
    }

    /// Read what was written since (at most [`READ_MAX`] bytes); whether
    /// the ready line is among it. A file shorter than where the scan
    /// stands was emptied (its driver bounds it at launch): it is read
    /// from its start.
    fn more(&mut self, console: &File) -> std::io::Result<bool> {
        let marker = banger_proto::guest::READY_MARKER.as_bytes();
        let len = u64::try_from(rustix::fs::fstat(console)?.st_size).unwrap_or(0);
        if len < self.pos {
            self.pos = 0;
            self.carry.clear();
        }
        let mut buf = vec![0u8; 64 << 10];
        let mut read = 0usize;
        self.behind = false;
        while self.pos < len {
            if read >= READ_MAX {
                self.behind = true;
                break;
            }
            let n = match rustix::io::pread(console.as_fd(), &mut buf, self.pos) {
                Ok(0) => break,
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            read += n;
            self.pos += n as u64;
            self.carry.extend_from_slice(&buf[..n]);
            if self.carry.windows(marker.len()).any(|w| w == marker) {
                return Ok(true);
            }
            let keep = self.carry.len().saturating_sub(marker.len() - 1);
            self.carry.drain(..keep);
        }
        Ok(false)
    }
}

/// Whether the process behind `pidfd` has exited (a poll that does not
/// wait).
pub(crate) fn exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    matches!(rustix::event::poll(&mut fds, Some(&rustix::time::Timespec::default())), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests;
