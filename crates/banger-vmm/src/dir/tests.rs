//! `OwnerDir` against real files and sockets in a temp dir.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use super::*;

fn me() -> Peer {
    Peer {
        uid: rustix::process::geteuid().as_raw(),
        pid: std::process::id(),
    }
}

fn open(dir: &Path) -> OwnerDir {
    OwnerDir::open(dir, "test directory").unwrap()
}

fn refused(e: VmmError, needle: &str) {
    assert!(matches!(e, VmmError::Refused { .. }), "{e}");
    assert!(e.to_string().contains(needle), "{needle:?} not in {e}");
}

/// (mode, length, bytes) of a file that must not change.
fn snapshot(p: &Path) -> (u32, u64, Vec<u8>) {
    let m = std::fs::metadata(p).unwrap();
    (m.mode() & 0o7777, m.len(), std::fs::read(p).unwrap())
}

#[test]
fn a_symlinked_directory_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let real = base.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, base.path().join("link")).unwrap();
    let err = OwnerDir::open(&base.path().join("link"), "run directory").unwrap_err();
    assert!(
        err.to_string().contains("opening the run directory"),
        "{err}"
    );
}

#[test]
fn create_makes_a_new_file_with_exactly_its_mode_and_never_reuses_one() {
    let base = tempfile::tempdir().unwrap();
    let dir = open(base.path());
    let f = dir.create("new", 0o640, None).unwrap();
    assert_eq!(f.metadata().unwrap().mode() & 0o7777, 0o640);
    refused(dir.create("new", 0o600, None).unwrap_err(), "appeared");
    // Not through a dangling symlink either.
    std::os::unix::fs::symlink(base.path().join("target"), base.path().join("dangling")).unwrap();
    refused(dir.create("dangling", 0o600, None).unwrap_err(), "dangling");
    assert!(!base.path().join("target").exists());
    // One entry's name only: the link that names it resolves no further.
    std::fs::create_dir(base.path().join("sub")).unwrap();
    for bad in ["sub/x", "..", ".", ""] {
        refused(
            dir.create(bad, 0o600, None).unwrap_err(),
            "not one directory entry's name",
        );
    }
    assert_eq!(
        std::fs::read_dir(base.path().join("sub")).unwrap().count(),
        0
    );
}

#[test]
fn recreate_replaces_only_a_sole_file_of_the_owner() {
    let base = tempfile::tempdir().unwrap();
    let dir = open(base.path());
    std::fs::write(base.path().join("log"), "old run\n").unwrap();
    let mut f = dir.recreate("log", 0o600, None).unwrap();
    f.write_all(b"new run\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(base.path().join("log")).unwrap(),
        "new run\n"
    );

    // A hard link to another file: refused, both names and the file kept.
    let victim = base.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(base.path().join("log")).unwrap();
    std::fs::hard_link(&victim, base.path().join("log")).unwrap();
    let before = snapshot(&victim);
    refused(
        dir.recreate("log", 0o600, None).unwrap_err(),
        "2 hard links, not 1",
    );
    assert_eq!(snapshot(&victim), before);
    assert!(base.path().join("log").exists());

    // A symlink, a directory: refused.
    std::os::unix::fs::symlink(&victim, base.path().join("sym")).unwrap();
    refused(dir.recreate("sym", 0o600, None).unwrap_err(), "Symlink");
    std::fs::create_dir(base.path().join("sub")).unwrap();
    refused(dir.recreate("sub", 0o600, None).unwrap_err(), "Directory");
    assert_eq!(snapshot(&victim), before);
}

#[test]
fn open_append_keeps_the_log_and_refuses_what_is_not_a_sole_file() {
    let base = tempfile::tempdir().unwrap();
    let dir = open(base.path());
    let mut f = dir.open_append("serial.log", 0o640, None).unwrap();
    f.write_all(b"boot 1\n").unwrap();
    drop(f);
    let mut f = dir.open_append("serial.log", 0o640, None).unwrap();
    f.write_all(b"boot 2\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(base.path().join("serial.log")).unwrap(),
        "boot 1\nboot 2\n"
    );
    // Readable too (error tails are read from this descriptor).
    assert_eq!(tail_lines(&f, 5), "boot 1 | boot 2");

    let victim = base.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let before = snapshot(&victim);
    std::fs::hard_link(&victim, base.path().join("linked.log")).unwrap();
    refused(
        dir.open_append("linked.log", 0o640, None).unwrap_err(),
        "hard links",
    );
    std::os::unix::fs::symlink(&victim, base.path().join("sym.log")).unwrap();
    refused(
        dir.open_append("sym.log", 0o640, None).unwrap_err(),
        "Symlink",
    );
    assert_eq!(snapshot(&victim), before);
    // A FIFO is refused without being opened (opening it would block).
    rustix::fs::mknodat(
        &dir,
        "fifo.log",
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    refused(
        dir.open_append("fifo.log", 0o640, None).unwrap_err(),
        "Fifo",
    );
}

#[test]
fn the_tail_comes_from_the_descriptor_whatever_the_name_now_holds() {
    let base = tempfile::tempdir().unwrap();
    let dir = open(base.path());
    let mut f = dir.create("vmm.log", 0o600, None).unwrap();
    f.write_all(b"one\n\ntwo\nthree\n").unwrap();
    let secret = base.path().join("secret");
    std::fs::write(&secret, "SECRET\n").unwrap();
    std::fs::remove_file(base.path().join("vmm.log")).unwrap();
    std::os::unix::fs::symlink(&secret, base.path().join("vmm.log")).unwrap();
    assert_eq!(tail_lines(&f, 2), "two | three");
    assert_eq!(
        tail_lines(&dir.create("empty", 0o600, None).unwrap(), 2),
        "(no output)"
    );
}

#[test]
fn stale_sockets_go_but_other_files_stay() {
    let base = tempfile::tempdir().unwrap();
    let dir = open(base.path());
    drop(UnixListener::bind(base.path().join("s.sock")).unwrap());
    dir.remove_stale_socket("s.sock").unwrap();
    assert!(!base.path().join("s.sock").exists());
    dir.remove_stale_socket("s.sock").unwrap();
    std::fs::write(base.path().join("f"), "keep").unwrap();
    refused(dir.remove_stale_socket("f").unwrap_err(), "not a socket");
    assert_eq!(
        std::fs::read_to_string(base.path().join("f")).unwrap(),
        "keep"
    );
}

#[test]
fn connect_reaches_only_a_socket_served_by_the_expected_process() {
    let base = tempfile::tempdir().unwrap();
    let dir = open(base.path());
    let listener = UnixListener::bind(base.path().join("vmm.sock")).unwrap();
    listener.set_nonblocking(true).unwrap();
    // Served by this process: accepted.
    dir.connect("vmm.sock", me()).unwrap();
    assert!(listener.accept().is_ok());
    // Another pid expected (the VMM is somebody else): dropped.
    let other = Peer {
        pid: std::process::id() + 1,
        ..me()
    };
    let err = dir.connect("vmm.sock", other).unwrap_err();
    assert!(err.to_string().contains("not the VMM's pid"), "{err}");
    // Another uid expected: refused before connecting.
    let err = dir
        .connect("vmm.sock", Peer { uid: 65534, ..me() })
        .unwrap_err();
    assert!(err.to_string().contains("owned by uid"), "{err}");

    // A symlink to a live socket elsewhere is refused, never followed.
    let elsewhere = tempfile::tempdir().unwrap();
    let foreign = UnixListener::bind(elsewhere.path().join("foreign.sock")).unwrap();
    foreign.set_nonblocking(true).unwrap();
    std::os::unix::fs::symlink(
        elsewhere.path().join("foreign.sock"),
        base.path().join("link.sock"),
    )
    .unwrap();
    let err = dir.connect("link.sock", me()).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        foreign.accept().is_err(),
        "a connection reached the socket the symlink points at"
    );
    // A missing socket is NotFound (callers wait for it to appear).
    let err = dir.connect("absent.sock", me()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

/// Fourth review F3: names went through a lossy UTF-8 conversion (a
/// non-UTF-8 name was never removed, so the tree could not be) and all of
/// them were held at once. More entries than one round, a non-UTF-8 name
/// and a nested directory all go.
#[test]
fn remove_tree_removes_many_entries_and_names_that_are_not_utf8() {
    use std::os::unix::ffi::OsStrExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    for i in 0..(REMOVE_BATCH * 2 + 7) {
        std::fs::write(run.join(format!("f{i}")), b"").unwrap();
    }
    let odd = std::ffi::OsStr::from_bytes(b"odd\xff\xfe");
    std::fs::write(run.join(odd), b"x").unwrap();
    std::fs::create_dir_all(run.join("a").join(odd)).unwrap();
    std::fs::write(run.join("a").join(odd).join("f"), b"").unwrap();
    open(tmp.path()).remove_tree("run", None).unwrap();
    assert!(!run.exists(), "run/ is still there");
}

/// An escaped VMM's `run/` (its uid's): a directory it made mode 000
/// inside, and its own bits taken off a directory it left (`r-x`): both
/// go with its file-system ids (its owner may give itself the bits back,
/// and the removal does). A mode 000 directory of another uid's (root's)
/// inside is neither entered nor changed: the removal fails on it
/// (`EPERM`: the kernel refuses its `chmod`).
#[test]
fn remove_tree_enters_what_its_owner_locked_and_nothing_of_anyone_elses() {
    const NOBODY: u32 = 65534;
    let tmp = tempfile::tempdir().unwrap();
    // Its parent is its uid's too (a VM directory is the owner's).
    std::os::unix::fs::chown(tmp.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let run = tmp.path().join("run");
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    let make = |extra: bool| {
        std::fs::create_dir_all(run.join("locked/deeper")).unwrap();
        std::fs::create_dir_all(run.join("readonly")).unwrap();
        std::fs::write(run.join("readonly/f"), b"").unwrap();
        std::fs::write(run.join("locked/deeper/f"), b"").unwrap();
        if extra {
            std::fs::create_dir_all(run.join("roots")).unwrap();
        }
        for p in [
            "",
            "locked",
            "locked/deeper",
            "readonly",
            "readonly/f",
            "locked/deeper/f",
        ] {
            std::os::unix::fs::chown(run.join(p), Some(NOBODY), Some(NOBODY)).unwrap();
        }
        mode(&run.join("locked/deeper"), 0o000);
        mode(&run.join("locked"), 0o000);
        mode(&run.join("readonly"), 0o500);
        if extra {
            mode(&run.join("roots"), 0o000);
        }
    };
    make(false);
    open(tmp.path())
        .remove_tree("run", Some((NOBODY, NOBODY)))
        .unwrap();
    assert!(!run.exists(), "run/ is still there");
    make(true);
    let err = open(tmp.path())
        .remove_tree("run", Some((NOBODY, NOBODY)))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let roots = std::fs::metadata(run.join("roots")).unwrap();
    assert_eq!((roots.uid(), roots.mode() & 0o7777), (0, 0o000));
    std::fs::remove_dir_all(&run).unwrap();
}

/// A tree its uid left in a VMM's `run/`, as an escape of uid `NOBODY`
/// would (hostile read of fcexec, F2): a file and a locked directory
/// whose names are not UTF-8, and a chain of `deep` nested directories
/// `d` with a file at the bottom, its deepest `deep - 14` locked 000.
fn escape_tree(run: &Path, deep: usize) {
    use std::os::unix::ffi::OsStrExt as _;
    const NOBODY: u32 = 65534;
    let odd = run.join(std::ffi::OsStr::from_bytes(b"x\xff"));
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::write(odd.join("f"), b"").unwrap();
    std::fs::write(run.join(std::ffi::OsStr::from_bytes(b"f\xfe")), b"").unwrap();
    let mut chain = vec![run.to_path_buf()];
    for _ in 0..deep {
        chain.push(chain.last().unwrap().join("d"));
    }
    std::fs::create_dir_all(chain.last().unwrap()).unwrap();
    let bottom = chain.last().unwrap().join("f");
    std::fs::write(&bottom, b"").unwrap();
    let files = [
        odd.join("f"),
        run.join(std::ffi::OsStr::from_bytes(b"f\xfe")),
        bottom,
    ];
    for p in chain.iter().chain([&odd]).chain(&files) {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    std::fs::set_permissions(&odd, std::fs::Permissions::from_mode(0o000)).unwrap();
    for d in chain.iter().skip(15).rev() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
}

/// Hostile read of fcexec, F2: a chain deeper than [`MAX_TREE_DEPTH`]
/// was refused (`ELOOP`), so the tree stayed. Its too-deep part is moved
/// up to the top of the tree under a fresh name and removed from there;
/// names that are not UTF-8 and locked directories go too.
#[test]
fn remove_tree_takes_a_chain_past_its_depth_limit_and_names_that_are_not_utf8() {
    const NOBODY: u32 = 65534;
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(tmp.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    escape_tree(&run, 3 * MAX_TREE_DEPTH + 5);
    open(tmp.path())
        .remove_tree("run", Some((NOBODY, NOBODY)))
        .unwrap();
    assert!(!run.exists(), "run/ is still there");
}

/// The same tree emptied from its own directory (as the executor empties
/// a slot's `run/` with the slot's ids, hostile read of fcexec, F2: its
/// top-level names that were not UTF-8 were skipped): all of it goes, the
/// directory stays.
#[test]
fn empty_takes_everything_in_its_directory_and_keeps_it() {
    const NOBODY: u32 = 65534;
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    escape_tree(&run, 2 * MAX_TREE_DEPTH + 3);
    open(&run).empty(Some((NOBODY, NOBODY))).unwrap();
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0, "not emptied");
}

/// Moving deep directories up is bounded work too: a chain of 400 levels
/// with a budget of 100 fails, naming the directory and what is left.
#[test]
fn a_deep_chain_past_the_budget_fails_naming_what_is_left() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut bottom = run.clone();
    for _ in 0..400 {
        bottom.push("d");
    }
    std::fs::create_dir_all(&bottom).unwrap();
    let err = open(&run).empty_upto(None, 100).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("keeps filling up"), "{msg}");
    assert!(msg.contains(&run.display().to_string()), "{msg}");
    let left = std::fs::read_dir(&run).unwrap().count();
    assert!(left > 0, "nothing left: {msg}");
    assert!(
        msg.contains(&format!("{left} entries left in it (e.g. ")),
        "{msg}"
    );
    eprintln!("{msg}");
}

/// Fifth review F4: removal went on while every round removed something,
/// so an owner refilling `run/` as fast as root emptied it kept a helper
/// thread busy for ever. A call removes at most its budget, then fails
/// naming the directory.
#[test]
fn remove_tree_gives_up_past_its_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    for i in 0..3000 {
        std::fs::write(run.join(format!("f{i}")), b"").unwrap();
    }
    let err = open(tmp.path())
        .remove_tree_upto("run", None, 100)
        .unwrap_err();
    assert!(err.to_string().contains("keeps filling up"), "{err}");
    assert!(err.to_string().contains("run"), "{err}");
    let left = std::fs::read_dir(&run).unwrap().count();
    assert_eq!(left, 2900, "removed more than its budget");
}

/// Review of c1fb10c: a subdirectory whose contents used up the budget
/// exactly was then removed itself and charged one more unit — the
/// budget wrapped (a panic in debug builds; no limit in release).
#[test]
fn a_subdirectory_that_uses_up_the_budget_exactly_does_not_wrap_it() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(run.join("a")).unwrap();
    for i in 0..100 {
        std::fs::write(run.join("a").join(format!("f{i}")), b"").unwrap();
    }
    let err = open(tmp.path())
        .remove_tree_upto("run", None, 100)
        .unwrap_err();
    assert!(err.to_string().contains("keeps filling up"), "{err}");
}

/// Hostile read of the jailed driver, F3: an error tail quoted each line
/// whole (a VMM's serial line of 60 KiB went into the error). Each line is
/// cut as the runner cuts a tool's stderr.
#[test]
fn a_long_tail_line_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let d = OwnerDir::open(dir.path(), "test").unwrap();
    let f = d.create("serial.log", 0o600, None).unwrap();
    let long = "y".repeat(60_000);
    std::io::Write::write_all(&mut &f, format!("short\n{long}\n").as_bytes()).unwrap();
    let tail = tail_lines(&f, 5);
    let cut = banger_host::runner::STDERR_LINE_MAX;
    assert!(tail.starts_with("short | yyy"), "{}", &tail[..40]);
    assert_eq!(
        tail.chars().count(),
        "short | ".len() + cut + 1,
        "{} characters",
        tail.len()
    );
    assert!(tail.ends_with('…'));
}

/// Final review of issue #13, M1: a file root made for another uid was
/// root's, mode 0600, one link, between its creation and its `fchown` —
/// exactly what the dm backend accepts as root's own COW file, so the
/// owner renaming it into another VM's `root.cow` in that window got a
/// COW that then became theirs. A file made for another uid must never
/// be seen root's with any permission bit: made with none, handed over,
/// then given its mode. A thread watches the name while it is made and
/// removed again and again.
#[test]
fn a_file_made_for_another_uid_is_never_seen_roots_with_permissions() {
    assert!(rustix::process::geteuid().is_root(), "needs root");
    let base = tempfile::tempdir().unwrap();
    let dir = open(base.path());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen = 0u32;
            let name = base.path().join("work.ext4");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(m) = std::fs::symlink_metadata(&name)
                    && m.uid() == 0
                    && m.mode() & 0o7777 != 0
                {
                    seen += 1;
                }
            }
            seen
        });
        for _ in 0..3000 {
            drop(dir.create("work.ext4", 0o600, Some((4242, 4242))).unwrap());
            std::fs::remove_file(base.path().join("work.ext4")).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().unwrap()
    });
    assert_eq!(
        seen, 0,
        "times the file was seen root's with permission bits"
    );
}
