//! Test support: mounts made in a mount namespace other than the host's (a
//! test thread's own, or the helper's), so the host never sees them: a
//! kernel file system, or a FUSE file system with no daemon behind it.

use std::ffi::CString;
use std::os::fd::AsRawFd as _;
use std::path::Path;

/// `mount(2)` of a new `fstype` file system on `target`, which must succeed.
pub fn mount_new(fstype: &str, target: &Path, flags: libc::c_ulong, data: &str) {
    let c = |s: &[u8]| CString::new(s).unwrap();
    let (src, dst) = (c(b"banger-test"), c(target.as_os_str().as_encoded_bytes()));
    let (ty, data) = (c(fstype.as_bytes()), c(data.as_bytes()));
    // SAFETY: NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            ty.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mounting {fstype} on {}: {}",
        target.display(),
        std::io::Error::last_os_error()
    );
}

/// Mount FUSE over `target` for `uid` without `allow_other`, with no
/// daemon: root is not let into it, so no request of root's reaches the
/// connection, and none would be answered. The returned `/dev/fuse`
/// descriptor holds the connection.
pub fn mount_fuse_without_daemon(target: &Path, uid: u32, gid: u32) -> std::fs::File {
    let fuse = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .expect("/dev/fuse (the fuse module)");
    let data = format!(
        "fd={},rootmode=40000,user_id={uid},group_id={gid}",
        fuse.as_raw_fd()
    );
    mount_new("fuse", target, libc::MS_NOSUID | libc::MS_NODEV, &data);
    fuse
}

/// Run `f` on a thread in the mount namespace of process `pid` (what it
/// mounts there only that namespace sees).
pub fn in_mount_ns_of<T: Send>(pid: u32, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).unwrap();
            // SAFETY: a flag only; this thread gets its own copy of root and
            // cwd, which setns into a mount namespace requires.
            let rc = unsafe { libc::unshare(libc::CLONE_FS) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_FS): {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a descriptor this thread holds and a flag; it moves
            // only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) };
            assert_eq!(rc, 0, "setns(mnt): {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

/// Run `f` on a thread in a new mount namespace, private from the host's
/// (children it spawns start there too): what it mounts goes with it.
pub fn in_private_mount_ns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: flags only; changes only this thread's mount namespace
            // (and its own copy of root, cwd and umask).
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNS): {}",
                std::io::Error::last_os_error()
            );
            let root = CString::new("/").unwrap();
            // SAFETY: a NUL-terminated path; null source, type and data are
            // what a propagation change takes.
            let rc = unsafe {
                libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            };
            assert_eq!(
                rc,
                0,
                "making / private: {}",
                std::io::Error::last_os_error()
            );
            f()
        })
        .join()
        .unwrap()
    })
}
