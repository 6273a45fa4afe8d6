//! Test support: what the kernel reports about the opens of one file
//! (inotify), for tests that root never opened a file for writing.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

/// An inotify watch on one file, from [`OpenWatch::new`] on.
#[derive(Debug)]
pub struct OpenWatch {
    fd: OwnedFd,
}

/// What was seen since the watch began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Opens {
    /// Opened at all.
    pub opened: bool,
    /// Opened for writing (closed after a write-open) or written.
    pub for_writing: bool,
}

impl OpenWatch {
    pub fn new(path: &Path) -> std::io::Result<OpenWatch> {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        inotify::add_watch(
            &fd,
            path,
            WatchFlags::OPEN | WatchFlags::CLOSE_WRITE | WatchFlags::MODIFY,
        )?;
        Ok(OpenWatch { fd })
    }

    /// The events queued so far (and taken from the queue).
    pub fn seen(&self) -> Opens {
        let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        let mut seen = Opens::default();
        while let Ok(ev) = reader.next() {
            let e = ev.events();
            seen.opened |= e.contains(ReadFlags::OPEN);
            seen.for_writing |= e.intersects(ReadFlags::CLOSE_WRITE | ReadFlags::MODIFY);
        }
        seen
    }
}
