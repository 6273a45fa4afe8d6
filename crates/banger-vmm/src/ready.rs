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
use std::os::fd::{AsFd, AsRawFd as _, OwnedFd};
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

/// Bytes of one console read at most per round: a guest flooding its
/// console is scanned over several rounds, and every other watch (and a
/// stop) is looked at between them.
const READ_MAX: usize = 1 << 20;
/// The most of one console scanned for the ready line: a guest prints far
/// less before it is up. Past it (a flood, or a file its owner made huge
/// or sparse) the watch ends, saying so, rather than read on.
pub const SCAN_MAX: u64 = 256 << 20;
/// How often the consoles are looked at when inotify is unavailable (root's
/// instances used up by others): the one fallback to a poll.
const FALLBACK_POLL: Duration = Duration::from_millis(50);

/// A console watched for the guest's ready line, by the one watcher
/// thread of this process ([`Hub`]): it settles its [`Readiness`] on the
/// line, when the VMM (its pidfd) exits, or when [`SCAN_MAX`] bytes held no
/// line. Dropping this ends the watch at once (no thread to wait for, no
/// lock held across a read).
#[derive(Debug)]
pub struct ConsoleWatch {
    hub: Arc<Hub>,
    id: u64,
    readiness: Arc<Readiness>,
}

impl ConsoleWatch {
    /// Watch `console` (root's descriptor of the serial log, readable) from
    /// `offset` (its length before this launch) for the ready line
    /// (`banger_proto::guest::READY_MARKER`) while the process behind
    /// `pidfd` runs, settling `readiness`.
    pub fn spawn(
        console: File,
        offset: u64,
        pidfd: OwnedFd,
        vm_id: &str,
        readiness: Arc<Readiness>,
    ) -> Result<ConsoleWatch, VmmError> {
        let hub = Hub::get().map_err(|e| VmmError::Io {
            what: format!("watching the console of VM {vm_id}: the watcher thread"),
            source: std::io::Error::other(e),
        })?;
        let id = hub.add(Watched {
            pidfd: Arc::new(pidfd),
            readiness: Arc::clone(&readiness),
            wd: None,
            vm_id: vm_id.to_string(),
            console: Mutex::new((console, Scan::new(offset))),
        });
        Ok(ConsoleWatch { hub, id, readiness })
    }

    pub fn readiness(&self) -> Arc<Readiness> {
        Arc::clone(&self.readiness)
    }
}

impl Drop for ConsoleWatch {
    fn drop(&mut self) {
        self.hub.remove(self.id);
        self.readiness
            .settle(Seen::Ended("the watch was stopped".into()));
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

/// One console being watched. The watcher reads it holding only its own
/// lock, never the hub's: adding and dropping watches never wait for a
/// read.
#[derive(Debug)]
struct Watched {
    /// Shared with the watcher's poll set for one round, so a watch
    /// removed meanwhile never leaves it polling a closed (or reused)
    /// descriptor number.
    pidfd: Arc<OwnedFd>,
    readiness: Arc<Readiness>,
    /// Its inotify watch (shared by every watch of the same inode);
    /// `None`: not woken by inotify, looked at every [`FALLBACK_POLL`].
    wd: Option<i32>,
    vm_id: String,
    console: Mutex<(File, Scan)>,
}

type Watches = std::collections::BTreeMap<u64, Arc<Watched>>;

/// The process's one console watcher: one thread and one inotify instance
/// for every watched console (root's inotify instances are few and shared
/// with the host's other services), woken by a write to any of them, the
/// exit of any of their VMMs, or a new watch.
#[derive(Debug)]
struct Hub {
    /// `None`: inotify could not be had; the consoles are looked at every
    /// [`FALLBACK_POLL`].
    notify: Option<OwnedFd>,
    /// Written when a watch is added, so the next round polls its pidfd.
    wake: OwnedFd,
    /// Every watch; inotify watches are added and removed under this lock
    /// (two watches of one inode share one).
    watches: Mutex<Watches>,
    next: std::sync::atomic::AtomicU64,
    /// Cleared if the watcher thread ever ends (a bug): a new hub is made
    /// for later watches, and this one's are settled as ended.
    alive: std::sync::atomic::AtomicBool,
}

/// The current hub; made on first use, made again when the last one
/// failed to start or its thread died.
static HUB: Mutex<Option<Arc<Hub>>> = Mutex::new(None);

impl Hub {
    fn get() -> Result<Arc<Hub>, String> {
        use std::sync::atomic::Ordering;
        let mut current = HUB.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hub) = current.as_ref()
            && hub.alive.load(Ordering::SeqCst)
        {
            return Ok(Arc::clone(hub));
        }
        use rustix::fs::inotify;
        let notify =
            match inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!(error = %e, "no inotify: consoles are looked at every 50 ms");
                    None
                }
            };
        let wake = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(|e| format!("eventfd: {e}"))?;
        let hub = Arc::new(Hub {
            notify,
            wake,
            watches: Mutex::new(Watches::new()),
            next: std::sync::atomic::AtomicU64::new(0),
            alive: std::sync::atomic::AtomicBool::new(true),
        });
        let run = Arc::clone(&hub);
        std::thread::Builder::new()
            .name("console-ready".into())
            .spawn(move || {
                let _ended = Ended(&run);
                run.run();
            })
            .map_err(|e| format!("spawning it: {e}"))?;
        *current = Some(Arc::clone(&hub));
        Ok(hub)
    }

    fn add(&self, mut w: Watched) -> u64 {
        use rustix::fs::inotify;
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut watches = self.lock();
        // Handed out just as its thread ended: nothing would look at it.
        if !self.alive.load(std::sync::atomic::Ordering::SeqCst) {
            w.readiness
                .settle(Seen::Ended("the console watcher thread ended".into()));
            return id;
        }
        if let Some(notify) = &self.notify {
            // The inode behind root's descriptor, never the file's name
            // (its owner can change that). Under the lock: a removal of
            // another watch of the same inode cannot drop this one's.
            let console = w.console.get_mut().unwrap_or_else(|e| e.into_inner());
            let path = format!("/proc/thread-self/fd/{}", console.0.as_raw_fd());
            match inotify::add_watch(notify, path, inotify::WatchFlags::MODIFY) {
                Ok(wd) => w.wd = Some(wd),
                Err(e) => {
                    tracing::warn!(vm = w.vm_id, error = %e, "no inotify watch of the console; looked at every 50 ms")
                }
            }
        }
        watches.insert(id, Arc::new(w));
        drop(watches);
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        id
    }

    fn remove(&self, id: u64) {
        let mut watches = self.lock();
        if let Some(w) = watches.remove(&id) {
            self.unwatch(&watches, &w);
        }
    }

    /// Drop `gone`'s inotify watch unless another watch (of the same inode)
    /// shares it. Called with the hub's lock held (`watches`).
    fn unwatch(&self, watches: &Watches, gone: &Watched) {
        let (Some(notify), Some(wd)) = (&self.notify, gone.wd) else {
            return;
        };
        if watches.values().all(|w| w.wd != Some(wd)) {
            let _ = rustix::fs::inotify::remove_watch(notify, wd);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watches> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The watcher: a round looks at every console (at most [`READ_MAX`]
    /// new bytes each), settles and drops the watches that are done, then
    /// sleeps until a console changes, a VMM exits or a watch is added —
    /// or not at all while some console has more to read, or
    /// [`FALLBACK_POLL`] while one is not watched by inotify.
    fn run(&self) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let (pidfds, behind, unwatched) = self.round(&mut buf);
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(pidfds.len() + 2);
            fds.push(PollFd::new(&self.wake, PollFlags::IN));
            if let Some(notify) = &self.notify {
                fds.push(PollFd::new(notify, PollFlags::IN));
            }
            fds.extend(pidfds.iter().map(|fd| PollFd::new(&**fd, PollFlags::IN)));
            let timeout = if behind {
                Some(Duration::ZERO)
            } else if unwatched {
                Some(FALLBACK_POLL)
            } else {
                None
            }
            .map(crate::driver::timespec);
            if let Err(e) = rustix::event::poll(&mut fds, timeout.as_ref())
                && e != rustix::io::Errno::INTR
            {
                tracing::warn!(error = %e, "console watcher: poll");
                std::thread::sleep(FALLBACK_POLL);
            }
            drop(fds);
            let mut drain = [0u8; 4096];
            while matches!(rustix::io::read(&self.wake, &mut drain), Ok(n) if n > 0) {}
            if let Some(notify) = &self.notify {
                while matches!(rustix::io::read(notify, &mut drain), Ok(n) if n > 0) {}
            }
        }
    }

    /// One round over every watch, each read holding only its own lock:
    /// the pidfds to wait on next, whether some console has more to read
    /// now, and whether some console is not watched by inotify.
    fn round(&self, buf: &mut [u8]) -> (Vec<Arc<OwnedFd>>, bool, bool) {
        let all: Vec<(u64, Arc<Watched>)> = self
            .lock()
            .iter()
            .map(|(id, w)| (*id, Arc::clone(w)))
            .collect();
        let mut done = Vec::new();
        let mut behind = false;
        for (id, w) in &all {
            // Looked at before the scan: a VMM seen gone has written its
            // last, and that is read below before it is declared gone.
            let exited = exited(&w.pidfd);
            let mut console = w.console.lock().unwrap_or_else(|e| e.into_inner());
            let (file, scan) = &mut *console;
            let seen = match scan.more(file, buf) {
                Ok(true) => Some(Seen::Ready),
                Err(e) => Some(Seen::Ended(format!("reading the console: {e}"))),
                Ok(false) if scan.read > SCAN_MAX => Some(Seen::Ended(format!(
                    "no ready line in the console's first {} MiB",
                    SCAN_MAX >> 20
                ))),
                Ok(false) if scan.behind => {
                    behind = true;
                    None
                }
                Ok(false) if exited => Some(Seen::Ended("the VMM exited".into())),
                Ok(false) => None,
            };
            drop(console);
            if let Some(seen) = seen {
                if let Seen::Ended(why) = &seen {
                    tracing::debug!(vm = w.vm_id, why, "console readiness watch ended");
                }
                w.readiness.settle(seen);
                done.push(*id);
            }
        }
        let mut watches = self.lock();
        for id in done {
            if let Some(w) = watches.remove(&id) {
                self.unwatch(&watches, &w);
            }
        }
        let unwatched = self.notify.is_none() || watches.values().any(|w| w.wd.is_none());
        let pidfds = watches.values().map(|w| Arc::clone(&w.pidfd)).collect();
        (pidfds, behind, unwatched)
    }
}

/// Marks a hub dead when its watcher thread ends (only a bug ends it):
/// its watches are settled as ended, so nobody waits on them forever, and
/// the next watch gets a new hub.
struct Ended<'a>(&'a Hub);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        // Under the hub's lock, so no watch is added after the map is
        // emptied (`add` checks `alive` under it).
        let watches = {
            let mut held = self.0.lock();
            self.0
                .alive
                .store(false, std::sync::atomic::Ordering::SeqCst);
            std::mem::take(&mut *held)
        };
        for w in watches.values() {
            w.readiness
                .settle(Seen::Ended("the console watcher thread ended".into()));
        }
        tracing::error!("the console watcher thread ended; a new one serves later watches");
    }
}

/// Where a console scan stands: the next offset, the end of the bytes
/// before it (the marker may straddle two reads), and how much it has
/// read in all.
#[derive(Debug)]
struct Scan {
    pos: u64,
    carry: Vec<u8>,
    read: u64,
    /// The last round stopped at [`READ_MAX`] with more to read.
    behind: bool,
}

impl Scan {
    fn new(pos: u64) -> Scan {
        Scan {
            pos,
            carry: Vec::new(),
            read: 0,
            behind: false,
        }
    }

    /// Read what was written since (at most [`READ_MAX`] bytes, in `buf`'s
    /// chunks); whether the ready line is among it. A file shorter than
    /// where the scan stands was emptied (its driver bounds it at launch):
    /// it is read from its start.
    fn more(&mut self, console: &File, buf: &mut [u8]) -> std::io::Result<bool> {
        let marker = banger_proto::guest::READY_MARKER.as_bytes();
        let len = u64::try_from(rustix::fs::fstat(console)?.st_size).unwrap_or(0);
        if len < self.pos {
            self.pos = 0;
            self.carry.clear();
        }
        let mut round = 0usize;
        self.behind = false;
        while self.pos < len && self.read <= SCAN_MAX {
            if round >= READ_MAX {
                self.behind = true;
                break;
            }
            let n = match rustix::io::pread(console.as_fd(), &mut *buf, self.pos) {
                Ok(0) => break,
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            round += n;
            self.read += n as u64;
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
    crate::driver::pidfd_exited(pidfd, Duration::ZERO)
}

#[cfg(test)]
mod tests;
