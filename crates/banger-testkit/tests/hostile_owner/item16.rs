//! Item 16 of issue #13 (fourth review): the state directory itself.

use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use banger_proto::privops::PrivOp;

use crate::lab::*;

/// Run `f` on a thread in the mount namespace of process `pid` (the
/// helper's own, which `ip netns exec` made and which goes with it): what
/// it mounts there the host never sees.
fn in_mount_ns_of<T: Send>(pid: u32, f: impl FnOnce() -> T + Send) -> T {
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

/// `path` as the helper sees it (through its mount namespace's root).
fn in_helper(pid: u32, path: &Path) -> PathBuf {
    Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap())
}

/// Fourth review, item 16: the state directory was opened by path and may
/// be a mount point, so a file system the owner mounted over it (FUSE,
/// where `/etc/fuse.conf` has `user_allow_other`) answered every lookup
/// root made beneath it. The helper now refuses a state directory on
/// another device than the install recorded. No FUSE daemon is installed
/// on the lab hosts: a tmpfs stands in for the owner's mount, mounted (as
/// root) in the helper's own mount namespace over the state directory,
/// holding a VM directory as bangerd leaves it. Before the fix root grew
/// the work disk on the mount.
#[test]
fn a_state_dir_mounted_over_since_the_install_is_refused() {
    let lab = Lab::new().start();
    let pid = lab.helper.as_ref().unwrap().proc.pid();
    let v = "5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d";
    let recorded = std::fs::metadata(lab.state()).unwrap().dev();
    let (uid, gid) = (lab.owner.uid, lab.owner.gid);
    let state = lab.state();
    in_mount_ns_of(pid, || {
        let (src, dst) = (
            std::ffi::CString::new("banger-test").unwrap(),
            std::ffi::CString::new(state.as_os_str().as_encoded_bytes()).unwrap(),
        );
        let (fstype, data) = (
            std::ffi::CString::new("tmpfs").unwrap(),
            std::ffi::CString::new(format!("size=128m,mode=0755,uid={uid},gid={gid}")).unwrap(),
        );
        // SAFETY: NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting a tmpfs: {}",
            std::io::Error::last_os_error()
        );
    });
    // The owner's VM directory on the mount, as bangerd leaves it.
    let dir = in_helper(pid, &lab.vm_dir(v));
    lab.owner_dir(&dir);
    lab.owner_file(&dir.join("root.ext4"), &[0u8; 4096]);
    lab.owner_file(&dir.join("work.ext4"), &[0u8; 4096]);
    assert_ne!(std::fs::metadata(&dir).unwrap().dev(), recorded);

    let grown = lab.call(PrivOp::GrowWorkDisk {
        vm_id: v.into(),
        bytes: 64 << 20,
    });
    assert_eq!(
        std::fs::metadata(dir.join("work.ext4")).unwrap().len(),
        4096,
        "root grew the work disk on the mount ({grown:?})"
    );
    let err = grown.expect_err("the mounted-over state dir is refused");
    assert!(
        err.starts_with("permission_denied") && err.contains("as the install recorded"),
        "{err}"
    );
}
