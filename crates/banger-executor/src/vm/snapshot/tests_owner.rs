//! The dm driver against an owner that plants files in its own VM
//! directory.

use super::*;

/// A root-only secret on the state directory's file system, as the
/// owner's hard link to it would be (`fs.protected_hardlinks=0`).
const SECRET: &str = "root:$y$j9T$SECRETSALT$SECRETHASH";

fn plant_secret(e: &Env) -> PathBuf {
    let secret = e.state.join("shadow");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    secret
}

fn forget_devices(e: &Env) {
    let mut st = e.tools.st();
    st.loops.clear();
    st.dms.clear();
}

fn assert_no_secret(err: &VmOpError) {
    let text = banger_proto::error::chain(err).join(": ");
    assert!(
        !text.contains("SECRET") && !text.contains("root:"),
        "the file's bytes reached the error: {text}"
    );
}

/// Hostile review (final), finding 1: attach read the image id from the
/// owner-writable `root.origin` and echoed what it read in the error, so a
/// hard link to a root-only file there returned its first 64 bytes. The
/// image id is now root's record (the journal); the marker is not read.
#[test]
fn a_hard_linked_origin_marker_never_reaches_the_error() {
    let e = env();
    DmSnapshot.create(&e.host, VM, IMG).unwrap();
    forget_devices(&e);
    let secret = plant_secret(&e);
    std::fs::remove_file(e.vm_file("root.origin")).unwrap();
    std::fs::hard_link(&secret, e.vm_file("root.origin")).unwrap();
    match e.host.root_disk(VM) {
        // Root's record names the image: the marker is not even opened.
        Ok(disk) => assert_eq!(disk.bytes, IMAGE_BYTES),
        Err(err) => {
            assert_no_secret(&err);
            panic!("attach failed: {err}");
        }
    }
}

/// A VM created before root kept the image id (no journal record): the
/// marker is read once, only as the owner's single-link file, and what it
/// holds is never echoed.
#[test]
fn an_old_marker_is_read_only_as_the_owners_single_link_file() {
    let e = env();
    DmSnapshot.create(&e.host, VM, IMG).unwrap();
    forget_devices(&e);
    let old_journal = |e: &Env| {
        let mut txn = e.host.journal.open().unwrap();
        txn.state.dm_origins.clear();
        txn.save().unwrap();
    };
    old_journal(&e);
    // A hard link to root's file: refused by its link count, unread.
    let secret = plant_secret(&e);
    std::fs::remove_file(e.vm_file("root.origin")).unwrap();
    std::fs::hard_link(&secret, e.vm_file("root.origin")).unwrap();
    let err = e.host.root_disk(VM).unwrap_err();
    assert_no_secret(&err);
    assert!(err.to_string().contains("2 hard links"), "{err}");
    // The owner's own file with something else in it: not echoed either.
    std::fs::remove_file(e.vm_file("root.origin")).unwrap();
    std::fs::write(e.vm_file("root.origin"), SECRET).unwrap();
    let err = e.host.root_disk(VM).unwrap_err();
    assert_no_secret(&err);
    assert!(err.to_string().contains("not a valid image id"), "{err}");
    // A good marker attaches and is recorded: the marker is not read again.
    std::fs::write(e.vm_file("root.origin"), format!("{IMG}\n")).unwrap();
    e.host.root_disk(VM).unwrap();
    let txn = e.host.journal.open().unwrap();
    assert_eq!(txn.state.dm_origins.get(VM).map(String::as_str), Some(IMG));
}

/// Hostile review (final), finding 2: the udev guard matches a loop
/// device's `backing_file`, which names the path the attached descriptor
/// was opened by. The owner could rename its image (or root's COW in its
/// directory) out of the state dirs while root held the descriptor and
/// before `LOOP_CONFIGURE`, so the device's uevent missed the rule. Loop
/// devices are now attached from root's own hard link in its state dir,
/// which the owner cannot rename; teardown removes the link.
#[test]
fn a_loop_device_names_roots_link_whatever_the_owner_renames() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    // The state dir, the owner's directory in it, and one outside.
    let state = base.join("state");
    let owner = state.join("owner");
    let away = base.join("away");
    for d in [&state, &owner, &away] {
        std::fs::create_dir(d).unwrap();
    }
    let links = LinkDir::in_state(&state);
    let path = owner.join("rootfs.ext4");
    let held = real::loop_disk(&path);
    let id = loopdev::identity(&held).unwrap();
    let journal = crate::journal::JournalFile::new(base.join("journal.json"));
    let tools = super::super::HostTools;
    let mut guard = real::LoopGuard { n: None, id };

    // The owner renames the file out and back for as long as root attaches.
    let stop = AtomicBool::new(false);
    let dev = std::thread::scope(|s| {
        s.spawn(|| {
            let there = away.join("rootfs.ext4");
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::rename(&path, &there);
                let _ = std::fs::rename(&there, &path);
            }
        });
        let mut txn = journal.open().unwrap();
        let dev = real::attach_origin(&tools, &mut txn, &links, &held, &path);
        stop.store(true, Ordering::Relaxed);
        dev.unwrap()
    });
    let n = dm::loop_number(&dev).unwrap();
    guard.n = Some(n);
    // And once more for certain, after the attach.
    std::fs::rename(&path, away.join("rootfs.ext4")).unwrap();
    let sys = PathBuf::from(format!("/sys/block/loop{n}/loop/backing_file"));
    let backing = PathBuf::from(std::fs::read_to_string(&sys).unwrap().trim());
    assert!(
        backing.starts_with(links.path()),
        "loop{n} backs {}, not a name under root's {}",
        backing.display(),
        links.path().display()
    );
    assert_eq!(loopdev::status(n).unwrap(), Some(id));

    // Teardown detaches the device and leaves no link behind.
    let mut entry = journal.open().unwrap().state.snapshot(VM).unwrap().clone();
    let (removed, errors) = dm::teardown_entry(&tools, Some(&links), &mut entry);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(removed, [format!("loop device {dev}")]);
    assert_eq!(loopdev::status(n).unwrap(), None);
    assert!(!backing.exists(), "{} left behind", backing.display());
    assert_eq!(
        std::fs::metadata(away.join("rootfs.ext4")).unwrap().nlink(),
        1
    );
}

/// Root's links are counted out of the one-link checks (two VMs on one
/// image, a running VM attached again), removed with the VM, and swept by
/// `host teardown` when no journaled device is left for their VM.
#[test]
fn roots_links_are_discounted_removed_and_swept() {
    const VM2: &str = "00000000000000000000000000000002";
    let e = env();
    std::fs::create_dir_all(e.state.join("vms").join(VM2)).unwrap();
    DmSnapshot.create(&e.host, VM, IMG).unwrap();
    DmSnapshot.create(&e.host, VM2, IMG).unwrap();
    let links = e.host.links();
    let names = |l: &LinkDir| {
        let mut n: Vec<String> = std::fs::read_dir(l.path())
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        names(&links),
        [
            format!("{VM2}.cow"),
            format!("{VM2}.origin"),
            format!("{VM}.cow"),
            format!("{VM}.origin")
        ]
    );
    assert_eq!(std::fs::metadata(e.image()).unwrap().nlink(), 3);
    let mode = std::fs::metadata(links.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    e.host.root_disk(VM).unwrap();
    DmSnapshot.remove(&e.host, VM2).unwrap();
    assert_eq!(names(&links), [format!("{VM}.cow"), format!("{VM}.origin")]);
    // A link whose VM has no journaled devices (a crash between the link
    // and its entry) goes at `host teardown`, with the devices.
    std::fs::hard_link(e.image(), links.path().join(format!("{VM2}.origin"))).unwrap();
    let mut txn = e.host.journal.open().unwrap();
    let (removed, errors) = dm::teardown_all(&*e.tools, Some(&links), &mut txn.state);
    txn.save().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        removed.contains(&format!("loop link {VM2}.origin")),
        "{removed:?}"
    );
    assert!(names(&links).is_empty(), "{:?}", names(&links));
    assert_eq!(std::fs::metadata(e.image()).unwrap().nlink(), 1);
}

/// Root's state dir on another file system than the owner's: no link, so
/// the dm driver declines before any loop device is claimed.
#[test]
fn a_link_across_file_systems_declines_dm() {
    let owner = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir_in("/dev/shm").unwrap();
    let path = owner.path().join("rootfs.ext4");
    std::fs::write(&path, [0u8; 4096]).unwrap();
    let held = std::fs::File::open(&path).unwrap();
    let journal = crate::journal::JournalFile::new(root.path().join("journal.json"));
    let tools = FakeTools::new(&root.path().join("journal.json"));
    let mut txn = journal.open().unwrap();
    let links = LinkDir::in_state(root.path());
    let err = real::attach_origin(&tools, &mut txn, &links, &held, &path).unwrap_err();
    assert!(
        matches!(err, VmOpError::SnapshotUnsupported { .. })
            && err.to_string().contains("another file system"),
        "{err}"
    );
    assert!(tools.take_calls().is_empty());
    assert!(txn.state.snapshots.is_empty());
}

/// The owner swaps its own directory in for `root-loops` while a dm VM is
/// attached (hostile read of the loop links, finding 1): root's links can
/// only be in a directory of root's, so a foreign one holds nothing to
/// remove, and removing the VM still detaches both loop devices and
/// forgets them; before, teardown stopped at the first link.
#[test]
fn an_owners_root_loops_planted_after_the_attach_does_not_stop_the_removal() {
    let e = env();
    DmSnapshot.create(&e.host, VM, IMG).unwrap();
    let links = e.host.links();
    std::fs::rename(links.path(), e.state.join("old")).unwrap();
    std::fs::create_dir(links.path()).unwrap();
    std::os::unix::fs::chown(links.path(), Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(links.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    DmSnapshot.remove(&e.host, VM).unwrap();
    let txn = e.host.journal.open().unwrap();
    assert!(txn.state.snapshots.is_empty(), "{:?}", txn.state.snapshots);
    assert!(!txn.state.dm_origins.contains_key(VM));
    // The directory the owner planted is left as it was.
    assert_eq!(std::fs::metadata(links.path()).unwrap().uid(), 65534);
}

/// `host teardown` with no state dir at all (a host where no VM was ever
/// made, or the dir removed): nothing to sweep. The cold proof of the
/// loop links failed three network tests here with `sweeping
/// …/state/root-loops: No such file or directory`.
#[test]
fn sweeping_the_links_of_a_state_dir_that_does_not_exist_is_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let links = LinkDir::in_state(&dir.path().join("state"));
    assert_eq!(links.sweep(&[]).unwrap(), Vec::<String>::new());
    links.remove("x.cow").unwrap();
}
