use std::io::Write as _;

use super::*;
use crate::testing::{pidfd_of, sleeper};

const MARKER: &str = banger_proto::guest::READY_MARKER;

fn console(dir: &std::path::Path) -> (File, File) {
    console_named(dir, "serial.log")
}

fn console_named(dir: &std::path::Path, name: &str) -> (File, File) {
    let path = dir.join(name);
    let writer = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    (writer, File::open(&path).unwrap())
}

/// The ready line written after the watch began settles it, and a waiter
/// wakes at once (no poll interval: well under 250 ms).
#[test]
fn the_ready_line_wakes_a_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, r) = console(dir.path());
    let mut vmm = sleeper();
    let watch = ConsoleWatch::spawn(r, 0, pidfd_of(&vmm), "vm").unwrap();
    let readiness = watch.readiness();
    w.write_all(b"booting...\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(readiness.seen(), Seen::Waiting);
    let waiter = std::thread::spawn(move || {
        let seen = readiness.wait(Duration::from_secs(10));
        (seen, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(50));
    let written = Instant::now();
    w.write_all(format!("\n{MARKER}\n").as_bytes()).unwrap();
    let (seen, woke) = waiter.join().unwrap();
    assert_eq!(seen, Seen::Ready);
    assert!(woke.duration_since(written) < Duration::from_millis(200));
    drop(watch);
    vmm.kill().unwrap();
}

/// A marker before the launch's offset (an earlier boot's) does not
/// count; one split across two writes does.
#[test]
fn an_earlier_boot_does_not_count_and_a_split_line_does() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, r) = console(dir.path());
    w.write_all(format!("old boot: {MARKER}\n").as_bytes())
        .unwrap();
    let offset = w.metadata().unwrap().len();
    let mut vmm = sleeper();
    let watch = ConsoleWatch::spawn(r, offset, pidfd_of(&vmm), "vm").unwrap();
    let readiness = watch.readiness();
    assert_eq!(readiness.wait(Duration::from_millis(200)), Seen::Waiting);
    let (a, b) = MARKER.split_at(7);
    w.write_all(a.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(readiness.seen(), Seen::Waiting);
    w.write_all(format!("{b}\n").as_bytes()).unwrap();
    assert_eq!(readiness.wait(Duration::from_secs(5)), Seen::Ready);
    drop(watch);
    vmm.kill().unwrap();
}

/// A console emptied under the watch (its driver bounds it at launch)
/// is read again from its start.
#[test]
fn an_emptied_console_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, r) = console(dir.path());
    w.write_all(&[b'x'; 4096]).unwrap();
    let mut vmm = sleeper();
    let watch = ConsoleWatch::spawn(r, 4096, pidfd_of(&vmm), "vm").unwrap();
    w.set_len(0).unwrap();
    w.write_all(format!("{MARKER}\n").as_bytes()).unwrap();
    assert_eq!(watch.readiness().wait(Duration::from_secs(5)), Seen::Ready);
    drop(watch);
    vmm.kill().unwrap();
}

/// The VMM exiting settles it at once with the reason; its last words
/// are still read first.
#[test]
fn the_vmm_exiting_ends_the_wait_after_its_last_words() {
    let dir = tempfile::tempdir().unwrap();
    let (_w, r) = console(dir.path());
    let mut vmm = sleeper();
    let watch = ConsoleWatch::spawn(r, 0, pidfd_of(&vmm), "vm").unwrap();
    vmm.kill().unwrap();
    let started = Instant::now();
    match watch.readiness().wait(Duration::from_secs(10)) {
        Seen::Ended(why) => assert_eq!(why, "the VMM exited"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));

    let (mut w, r) = console_named(dir.path(), "second.log");
    let mut vmm = sleeper();
    let pidfd = pidfd_of(&vmm);
    // Written, then the VMM dies before the watch has looked.
    let offset = w.metadata().unwrap().len();
    w.write_all(format!("{MARKER}\n").as_bytes()).unwrap();
    vmm.kill().unwrap();
    let watch = ConsoleWatch::spawn(r, offset, pidfd, "vm").unwrap();
    assert_eq!(watch.readiness().wait(Duration::from_secs(5)), Seen::Ready);
}

/// A flood of console output is scanned in bounded reads and the line
/// after it is still found; dropping the watch ends its thread promptly.
#[test]
fn a_flood_is_scanned_in_bounded_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, r) = console(dir.path());
    let mut vmm = sleeper();
    let watch = ConsoleWatch::spawn(r, 0, pidfd_of(&vmm), "vm").unwrap();
    let line = vec![b'y'; 1 << 16];
    for _ in 0..64 {
        w.write_all(&line).unwrap();
    }
    w.write_all(format!("\n{MARKER}\n").as_bytes()).unwrap();
    assert_eq!(watch.readiness().wait(Duration::from_secs(10)), Seen::Ready);
    let started = Instant::now();
    drop(watch);
    assert!(started.elapsed() < Duration::from_secs(1));
    vmm.kill().unwrap();

    // A watch dropped while waiting ends at once too.
    let (_w, r) = console_named(dir.path(), "idle.log");
    let mut vmm = sleeper();
    let watch = ConsoleWatch::spawn(r, 0, pidfd_of(&vmm), "vm").unwrap();
    let readiness = watch.readiness();
    let started = Instant::now();
    drop(watch);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(matches!(readiness.seen(), Seen::Ended(_)));
    vmm.kill().unwrap();
}
