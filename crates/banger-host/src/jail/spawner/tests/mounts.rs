//! The bind allow-list against real mounts: an overlay state directory,
//! and a mount that took a recorded mount's id.

use super::*;

/// Move the calling thread into a mount namespace of its own, with
/// nothing propagating out of it: for a test thread that ends after (the
/// namespace goes with it).
fn own_mount_namespace() {
    // SAFETY: unshare(CLONE_NEWNS) on this thread only (it gets a copy of
    // its file-system attributes): nothing another thread of this process
    // relies on changes, and the caller's thread ends after.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.unwrap();
    rustix::mount::mount_change(
        c"/",
        rustix::mount::MountPropagationFlags::REC | rustix::mount::MountPropagationFlags::PRIVATE,
    )
    .unwrap();
}

/// Mount a new tmpfs at `at` (in a namespace of [`own_mount_namespace`]).
fn mount_tmpfs(at: &std::path::Path) {
    rustix::mount::mount(
        c"tmpfs",
        at,
        c"tmpfs",
        rustix::mount::MountFlags::empty(),
        None::<&std::ffi::CStr>,
    )
    .unwrap();
}

/// Third read of F1, finding d: the bind allow-list compared `st_dev`,
/// which differs between a mount and files on it for btrfs subvolumes
/// and overlayfs (whose files report their layer's device): a disk in
/// such a state directory was refused. It compares mount ids now. Here a
/// state directory that is an overlay (made in a mount namespace of this
/// thread's own, gone with it).
#[test]
fn a_file_on_an_overlay_state_directory_is_bound() {
    super::super::super::tests::require_root();
    let base = tempfile::tempdir().unwrap();
    let got = std::thread::scope(|s| {
        s.spawn(|| {
            own_mount_namespace();
            let at = |n: &str| base.path().join(n);
            mount_tmpfs(&at(""));
            for d in ["lower", "rw", "state"] {
                std::fs::create_dir(at(d)).unwrap();
            }
            // The layers on two file systems: the overlay's files then
            // report their layer's device.
            for d in ["lower", "rw"] {
                mount_tmpfs(&at(d));
            }
            std::fs::write(at("lower").join("disk"), b"disk").unwrap();
            for d in ["rw/upper", "rw/work"] {
                std::fs::create_dir(at(d)).unwrap();
            }
            let opts = format!(
                "lowerdir={},upperdir={},workdir={},xino=off",
                at("lower").display(),
                at("rw/upper").display(),
                at("rw/work").display()
            );
            rustix::mount::mount(
                c"overlay",
                at("state").as_path(),
                c"overlay",
                rustix::mount::MountFlags::empty(),
                Some(std::ffi::CString::new(opts).unwrap().as_c_str()),
            )
            .unwrap();
            let disk = std::fs::File::open(at("state").join("disk")).unwrap();
            let roots = bind_roots(&[at("state").as_path()]).unwrap();
            let got = check_bind_fd(disk.as_fd(), &roots).map_err(|e| e.to_string());
            // Elsewhere (the tmpfs below): still refused.
            let beside = std::fs::File::create(at("beside")).unwrap();
            let beside = check_bind_fd(beside.as_fd(), &roots).map_err(|e| e.to_string());
            (got, beside.is_err())
        })
        .join()
        .unwrap()
    });
    assert_eq!(got, (Ok(()), true), "a disk on an overlay state directory");
}

/// Hostile read of the merged spawner, L1: the allow-list recorded each
/// root's mount id as `statx` gives it without `STATX_MNT_ID_UNIQUE`, an
/// id the kernel hands to the next mount once its mount is gone: a mount
/// made where (or anywhere after) a recorded one was unmounted could take
/// its id, and files on it were bound. Here the recorded tmpfs is
/// unmounted and another mounted in its place (in a mount namespace of
/// this thread's own), retried until the new one takes the old id (a
/// concurrent mount may take it first) or twenty times: a file on it is
/// refused.
#[test]
fn a_file_on_a_mount_that_took_a_recorded_mounts_id_is_refused() {
    super::super::super::tests::require_root();
    let base = tempfile::tempdir().unwrap();
    let at = base.path();
    let (got, reused) = std::thread::scope(|s| {
        s.spawn(|| {
            own_mount_namespace();
            let tmpfs = || mount_tmpfs(at);
            let old_id =
                || crate::mounts::mount_id_of(std::fs::File::open(at).unwrap().as_fd()).unwrap();
            tmpfs();
            let roots = bind_roots(&[at]).unwrap();
            let recorded = old_id();
            let mut reused = false;
            for _ in 0..20 {
                rustix::mount::unmount(at, rustix::mount::UnmountFlags::DETACH).unwrap();
                tmpfs();
                if old_id() == recorded {
                    reused = true;
                    break;
                }
            }
            let disk = std::fs::File::create(at.join("disk")).unwrap();
            let got = check_bind_fd(disk.as_fd(), &roots).map_err(|e| e.to_string());
            drop(disk);
            rustix::mount::unmount(at, rustix::mount::UnmountFlags::DETACH).unwrap();
            (got, reused)
        })
        .join()
        .unwrap()
    });
    let e = got.expect_err(&format!(
        "a file on a new mount bound (the recorded mount's old id reused: {reused})"
    ));
    assert!(e.contains("not on a file system"), "{e}");
    // Whatever the kernel's ids: the recorded mount, held, kept its id.
    assert!(!reused, "the recorded mount's reusable id went to another");
}
