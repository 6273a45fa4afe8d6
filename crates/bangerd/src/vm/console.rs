//! The boot console as a failed boot's error quotes it: the serial log
//! past the length it had before the launch, read in bounded chunks,
//! keeping only its last bytes (and stopping at the ready marker). A guest
//! prints what it likes, as much as it likes: nothing here grows with it.
//! Readiness itself is the executor's to observe (`WaitVmReady`).

use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};

/// Bytes of the console kept for an error's tail.
const TAIL_KEEP: usize = 64 << 10;
/// Bytes read at most per poll: a flood is scanned over several polls
/// rather than stalling the wait.
const POLL_MAX: u64 = 16 << 20;
/// Characters of one console line quoted in an error.
const LINE_MAX: usize = 240;

/// A console being watched for `marker`.
#[derive(Debug)]
pub(super) struct ConsoleWatch {
    path: PathBuf,
    marker: &'static [u8],
    /// Where the next read starts.
    pos: u64,
    /// The last bytes read (at most [`TAIL_KEEP`]).
    tail: Vec<u8>,
    found: bool,
}

impl ConsoleWatch {
    /// Watch `path` from `offset`, its length before the launch.
    pub(super) fn new(path: &Path, offset: u64, marker: &'static str) -> ConsoleWatch {
        ConsoleWatch {
            path: path.to_path_buf(),
            marker: marker.as_bytes(),
            pos: offset,
            tail: Vec::new(),
            found: false,
        }
    }

    /// Read what was written since the last poll (up to [`POLL_MAX`]
    /// bytes) and say whether the marker has been seen. A log shorter
    /// than where the watch stands was emptied by the launch (its VMM
    /// driver bounds it): it is read again from its start.
    pub(super) fn poll(&mut self) -> bool {
        if self.found {
            return true;
        }
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return false;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.pos {
            self.pos = 0;
            self.tail.clear();
        }
        if f.seek(std::io::SeekFrom::Start(self.pos)).is_err() {
            return false;
        }
        let mut chunk = vec![0u8; 64 << 10];
        let mut budget = POLL_MAX;
        while budget > 0 {
            let want = chunk
                .len()
                .min(usize::try_from(budget).unwrap_or(usize::MAX));
            let n = match f.read(&mut chunk[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            budget -= n as u64;
            self.pos += n as u64;
            // The marker may straddle two reads: search the kept tail's
            // end together with the new bytes.
            let keep_from = self.tail.len().saturating_sub(self.marker.len());
            self.tail.extend_from_slice(&chunk[..n]);
            if self.tail[keep_from..]
                .windows(self.marker.len())
                .any(|w| w == self.marker)
            {
                self.found = true;
                return true;
            }
            if self.tail.len() > TAIL_KEEP {
                let cut = self.tail.len() - TAIL_KEEP;
                self.tail.drain(..cut);
            }
        }
        false
    }

    /// The last `n` non-empty lines read, each cut to [`LINE_MAX`]
    /// characters, joined for an error.
    pub(super) fn tail(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&self.tail);
        let lines: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| banger_host::runner::cut_at(l, LINE_MAX))
            .collect();
        if lines.is_empty() {
            return "(no console output)".into();
        }
        lines[lines.len().saturating_sub(n)..].join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// A guest that printed hundreds of MiB before its marker made each
    /// poll read all of it again (the wait's memory and its error grew with
    /// the guest's output). The watch reads each byte once, at most
    /// POLL_MAX per poll, finds a marker split across reads, and quotes a
    /// bounded tail.
    #[test]
    fn a_flood_before_the_marker_is_scanned_in_bounded_polls() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let mut f = std::fs::File::create(&log).unwrap();
        f.write_all(b"old boot: banger-guest-ready\n").unwrap();
        let offset = f.metadata().unwrap().len();
        let line = vec![b'x'; 1 << 20];
        for _ in 0..20 {
            f.write_all(&line).unwrap();
        }
        let mut w = ConsoleWatch::new(&log, offset, "banger-guest-ready");
        assert!(!w.poll(), "the old boot's marker counted");
        assert_eq!(w.pos, offset + POLL_MAX, "one poll read past its budget");
        assert!(w.tail.len() <= TAIL_KEEP);
        assert!(!w.poll());
        let tail = w.tail(8);
        assert!(tail.chars().count() <= LINE_MAX + 1, "{}", tail.len());
        // The marker straddles the 64 KiB read boundary.
        let pad = (64 << 10) - 6;
        f.write_all(&vec![b'y'; pad]).unwrap();
        f.write_all(b"\nbanger-guest-ready\n").unwrap();
        assert!(w.poll(), "the marker across two reads was missed");
    }

    /// A log emptied at launch (the VMM driver bounds it) is read from
    /// its start.
    #[test]
    fn a_log_emptied_at_launch_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        std::fs::write(&log, "a long old console\n").unwrap();
        let mut w = ConsoleWatch::new(&log, 1 << 30, "ready");
        std::fs::write(&log, "emptied\n").unwrap();
        assert!(!w.poll());
        assert_eq!(w.tail(8), "emptied");
        std::fs::write(&log, "emptied\nready\n").unwrap();
        assert!(w.poll());
    }
}
