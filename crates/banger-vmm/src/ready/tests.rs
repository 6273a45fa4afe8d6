use std::io::Write as _;

use super::*;
use crate::testing::{pidfd_of, sleeper};

const MARKER: &str = banger_proto::guest::READY_MARKER;

/// A console file in `dir`: the writer (the VMM's side) and root's
/// readable descriptor.
fn console(dir: &std::path::Path, name: &str) -> (File, File) {
    let path = dir.join(name);
    let writer = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    (writer, File::open(&path).unwrap())
}

/// A stand-in VMM and a watch of `r` from `offset` with it.
fn watch(r: File, offset: u64) -> (banger_host::runner::Spawned, ConsoleWatch) {
    let vmm = sleeper();
    let w = ConsoleWatch::spawn(r, offset, pidfd_of(&vmm), "vm", Readiness::new()).unwrap();
    (vmm, w)
}

/// The ready line written after the watch began settles it, and a waiter
/// wakes at once (no poll interval: well under 250 ms).
#[test]
fn the_ready_line_wakes_a_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, r) = console(dir.path(), "serial.log");
    let (mut vmm, watch) = watch(r, 0);
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
    let (mut w, r) = console(dir.path(), "serial.log");
    w.write_all(format!("old boot: {MARKER}\n").as_bytes())
        .unwrap();
    let offset = w.metadata().unwrap().len();
    let (mut vmm, watch) = watch(r, offset);
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
    let (mut w, r) = console(dir.path(), "serial.log");
    w.write_all(&[b'x'; 4096]).unwrap();
    let (mut vmm, watch) = watch(r, 4096);
    w.set_len(0).unwrap();
    w.write_all(format!("{MARKER}\n").as_bytes()).unwrap();
    assert_eq!(watch.readiness().wait(Duration::from_secs(5)), Seen::Ready);
    drop(watch);
    vmm.kill().unwrap();
}

/// The VMM exiting settles it at once with the reason; a line it wrote
/// before it exited still counts.
#[test]
fn the_vmm_exiting_ends_the_wait_after_its_last_words() {
    let dir = tempfile::tempdir().unwrap();
    let (_w, r) = console(dir.path(), "serial.log");
    let (mut vmm, watch) = watch(r, 0);
    vmm.kill().unwrap();
    let started = Instant::now();
    match watch.readiness().wait(Duration::from_secs(10)) {
        Seen::Ended(why) => assert_eq!(why, "the VMM exited"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));

    let (mut w, r) = console(dir.path(), "second.log");
    let mut vmm = sleeper();
    let pidfd = pidfd_of(&vmm);
    w.write_all(format!("{MARKER}\n").as_bytes()).unwrap();
    vmm.kill().unwrap();
    // Gone before the watch looked: its last words are read first.
    let watch = ConsoleWatch::spawn(r, 0, pidfd, "vm", Readiness::new()).unwrap();
    assert_eq!(watch.readiness().wait(Duration::from_secs(5)), Seen::Ready);
}

/// One scan round reads at most `READ_MAX` bytes and says it is behind;
/// the line past a flood is still found over the next rounds.
#[test]
fn a_flood_is_scanned_in_bounded_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, r) = console(dir.path(), "serial.log");
    let line = vec![b'y'; 1 << 16];
    for _ in 0..64 {
        w.write_all(&line).unwrap();
    }
    w.write_all(format!("\n{MARKER}\n").as_bytes()).unwrap();
    let mut scan = Scan::new(0);
    let mut buf = vec![0u8; 64 << 10];
    let mut rounds = 0;
    loop {
        let before = scan.pos;
        let found = scan.more(&r, &mut buf).unwrap();
        rounds += 1;
        assert!(scan.pos - before <= READ_MAX as u64 + buf.len() as u64);
        if found {
            break;
        }
        assert!(scan.behind, "stopped before the end without the line");
    }
    assert!(rounds >= 4, "{rounds} rounds for 4 MiB");
    assert!(scan.carry.len() < MARKER.len() + buf.len());

    // And through the watcher.
    let (_w2, r) = console(dir.path(), "serial.log");
    let (mut vmm, watch) = watch(r, 0);
    assert_eq!(watch.readiness().wait(Duration::from_secs(10)), Seen::Ready);
    drop(watch);
    vmm.kill().unwrap();
}

/// Hostile read of the readiness watch, finding 1: the owner made the
/// console a huge sparse file (here 1 TiB; 16 TiB in the report), and root
/// read zeros for hours, deaf to
/// stops and to the VMM's exit. The watch now gives up after `SCAN_MAX`
/// bytes, saying so, within seconds; and other watches are served
/// meanwhile.
#[test]
fn a_huge_sparse_console_ends_the_watch_and_does_not_stall_others() {
    let dir = tempfile::tempdir().unwrap();
    let (w, r) = console(dir.path(), "sparse.log");
    w.set_len(1 << 40).unwrap();
    let (mut vmm, huge) = watch(r, 0);
    let (mut other_w, other_r) = console(dir.path(), "other.log");
    let (mut other_vmm, other) = watch(other_r, 0);
    other_w.write_all(format!("{MARKER}\n").as_bytes()).unwrap();
    assert_eq!(other.readiness().wait(Duration::from_secs(5)), Seen::Ready);
    let started = Instant::now();
    match huge.readiness().wait(Duration::from_secs(60)) {
        Seen::Ended(why) => assert!(why.contains("no ready line"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    drop((huge, other));
    vmm.kill().unwrap();
    other_vmm.kill().unwrap();
}

/// Dropping a watch settles it as stopped at once, and the watcher forgets
/// it (a later write is not read for it).
#[test]
fn dropping_a_watch_ends_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, r) = console(dir.path(), "serial.log");
    let (mut vmm, watch) = watch(r, 0);
    let readiness = watch.readiness();
    let started = Instant::now();
    drop(watch);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        readiness.seen(),
        Seen::Ended("the watch was stopped".into())
    );
    w.write_all(format!("{MARKER}\n").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        readiness.seen(),
        Seen::Ended("the watch was stopped".into())
    );
    vmm.kill().unwrap();
}

/// Second hostile read, finding 1: the watcher held its one lock through
/// a whole round of reads, so with consoles behind (huge sparse files)
/// adding or dropping a watch waited up to a second. Each watch is read
/// under its own lock now.
#[test]
fn adding_and_dropping_watches_never_wait_for_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut busy = Vec::new();
    for i in 0..6 {
        let (w, r) = console(dir.path(), &format!("huge{i}.log"));
        w.set_len(1 << 40).unwrap();
        busy.push(watch(r, 0));
    }
    // The watcher is reading them now.
    std::thread::sleep(Duration::from_millis(50));
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let (_w, r) = console(dir.path(), &format!("small{i}.log"));
        let started = Instant::now();
        let (mut vmm, w) = watch(r, 0);
        let added = started.elapsed();
        let started = Instant::now();
        drop(w);
        slowest = slowest.max(added).max(started.elapsed());
        vmm.kill().unwrap();
    }
    assert!(slowest < Duration::from_millis(100), "{slowest:?}");
    for (mut vmm, w) in busy {
        drop(w);
        vmm.kill().unwrap();
    }
}

/// Second hostile read, finding 2: two watches of one inode share its
/// inotify watch; dropping one must leave the other woken by writes.
#[test]
fn two_watches_of_one_console_share_its_inotify_watch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, r) = console(dir.path(), "shared.log");
    let again = File::open(dir.path().join("shared.log")).unwrap();
    let (mut first_vmm, first) = watch(r, 0);
    let (mut second_vmm, second) = watch(again, 0);
    drop(first);
    std::thread::sleep(Duration::from_millis(50));
    let written = Instant::now();
    w.write_all(format!("{MARKER}\n").as_bytes()).unwrap();
    assert_eq!(second.readiness().wait(Duration::from_secs(5)), Seen::Ready);
    assert!(
        written.elapsed() < Duration::from_millis(500),
        "{:?}",
        written.elapsed()
    );
    drop(second);
    first_vmm.kill().unwrap();
    second_vmm.kill().unwrap();
}
