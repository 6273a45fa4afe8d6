//! The state-directory checks against real file systems: a temp dir's
//! own, and a tmpfs and a FUSE file system mounted over it in a mount
//! namespace of the test thread's own (gone with the thread; nothing
//! propagates to the host).

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::*;

fn open_path(p: &Path) -> OwnedFd {
    rustix::fs::open(
        p,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// `mount(2)`, which must succeed.
fn mount(source: &str, target: &Path, fstype: Option<&str>, flags: libc::c_ulong, data: &str) {
    let (src, dst) = (cstr(source), cstr(target.to_str().unwrap()));
    let fstype = fstype.map(cstr);
    let data = cstr(data);
    // SAFETY: NUL-terminated strings that outlive the call; a null type is
    // what a propagation change takes.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            flags,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mount {source} on {} ({fstype:?}): {}",
        target.display(),
        std::io::Error::last_os_error()
    );
}

/// Run `f` on a thread in a mount namespace of its own, private from the
/// host's: what it mounts goes when the thread ends.
fn in_private_mount_ns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: takes flags only and changes only this thread's mount
            // namespace (and, implied, its own copy of root/cwd/umask).
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNS) (needs root): {}",
                std::io::Error::last_os_error()
            );
            mount(
                "none",
                Path::new("/"),
                None,
                libc::MS_REC | libc::MS_PRIVATE,
                "",
            );
            f()
        })
        .join()
        .unwrap()
    })
}

#[test]
fn fuse_is_refused_by_its_magic_and_kernel_file_systems_are_not() {
    assert_eq!(
        fs_type_refusal(FUSE_SUPER_MAGIC),
        Some(StateDirRefusal::Fuse)
    );
    // tmpfs, ext4, XFS, btrfs.
    for kernel in [0x0102_1994, 0xEF53, 0x5846_5342, 0x9123_683E] {
        assert_eq!(fs_type_refusal(kernel), None, "{kernel:#x}");
    }
}

#[test]
fn the_recorded_device_passes_and_a_mount_over_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dev = std::fs::metadata(dir.path()).unwrap().dev();
    let fd = open_path(dir.path());
    assert_eq!(device_of(fd.as_fd()).unwrap(), dev);
    check_state_dir(&fd, Some(dev)).unwrap();
    check_state_dir(&fd, None).unwrap();
    in_private_mount_ns(|| {
        mount("banger-test", dir.path(), Some("tmpfs"), 0, "size=1m");
        let over = open_path(dir.path());
        let err = check_state_dir(&over, Some(dev)).unwrap_err();
        assert!(
            matches!(&err, StateDirRefusal::OtherDevice { recorded, .. } if *recorded == dev_name(dev)),
            "{err}"
        );
        // A tmpfs as such is fine (a state directory may be one).
        check_state_dir(&over, None).unwrap();
    });
    // The host never saw it.
    check_state_dir(open_path(dir.path()), Some(dev)).unwrap();
}

/// A real FUSE mount with no daemon behind it: mounted for another uid
/// without `allow_other`, so the kernel sends none of root's requests to
/// it — the state-dir checks must come out without any answer.
#[test]
fn a_fuse_mount_is_refused_without_asking_its_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let dev = std::fs::metadata(dir.path()).unwrap().dev();
    in_private_mount_ns(|| {
        let fuse = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("/dev/fuse (the fuse module)");
        let data = format!(
            "fd={},rootmode=40000,user_id=65534,group_id=65534",
            fuse.as_raw_fd()
        );
        mount(
            "banger-test",
            dir.path(),
            Some("fuse"),
            libc::MS_NOSUID | libc::MS_NODEV,
            &data,
        );
        let over = open_path(dir.path());
        // Without a recorded device: refused by the file system's type.
        assert_eq!(check_state_dir(&over, None), Err(StateDirRefusal::Fuse));
        // With one: refused by the device first.
        assert!(
            matches!(
                check_state_dir(&over, Some(dev)),
                Err(StateDirRefusal::OtherDevice { .. })
            ),
            "{:?}",
            check_state_dir(&over, Some(dev))
        );
    });
}
