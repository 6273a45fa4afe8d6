//! Item 16 of issue #13 (fourth review): the state directory itself.

use std::path::{Path, PathBuf};

use banger_host::mounts::testing::{in_mount_ns_of, mount_fuse_without_daemon, mount_new};
use banger_proto::privops::{GrowWorkDisk, PrivOp, VmOp};

use crate::lab::*;

/// `path` as the helper sees it (through its mount namespace's root).
fn in_helper(pid: u32, path: &Path) -> PathBuf {
    Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap())
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    v.sort();
    v
}

/// Fourth review, item 16: the state directory was opened by path and may
/// be a mount point, so a file system the owner mounted over it (FUSE,
/// where `/etc/fuse.conf` has `user_allow_other`) answered every lookup
/// root made beneath it. A real FUSE mount of the owner's, with no daemon
/// (root is not let into it, so nothing root does can wait for one), over
/// the state directory in the helper's own mount namespace: the helper
/// refuses it for its file system type, naming it, and touches nothing.
/// Before the fix (the device the install recorded) it was refused for its
/// device, and root could not tell FUSE from an admin's mount.
#[test]
fn a_state_dir_mounted_over_since_the_install_is_refused() {
    let lab = Lab::new().start();
    let pid = lab.helper.as_ref().unwrap().proc.pid();
    let v = "5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d";
    let (uid, gid) = (lab.owner.uid, lab.owner.gid);
    let state = lab.state();
    let before = names(&state);
    let _fuse = in_mount_ns_of(pid, || mount_fuse_without_daemon(&state, uid, gid));

    let grown = lab.call(PrivOp::Vm(VmOp::GrowWorkDisk(GrowWorkDisk {
        vm_id: v.into(),
        bytes: 64 << 20,
    })));
    let err = grown.expect_err("the state dir on FUSE is refused");
    assert!(
        err.starts_with("permission_denied")
            && err.contains(&format!("refusing the state directory {}", state.display()))
            && err.contains("FUSE file system (fuse, mounted at "),
        "{err}"
    );
    // The host's view of the state directory, under the mount: untouched.
    assert_eq!(names(&state), before);
}

/// The converse: an ordinary kernel file system an admin mounted over the
/// state directory (a tmpfs, in the helper's own mount namespace) is not
/// refused by that check: root grows the owner's work disk on it. Before
/// the fix it was refused for its device.
#[test]
fn a_kernel_file_system_mounted_over_the_state_dir_is_not_refused() {
    let lab = Lab::new().start();
    let pid = lab.helper.as_ref().unwrap().proc.pid();
    let v = "6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e";
    let (uid, gid) = (lab.owner.uid, lab.owner.gid);
    let state = lab.state();
    in_mount_ns_of(pid, || {
        mount_new(
            "tmpfs",
            &state,
            0,
            &format!("size=128m,mode=0755,uid={uid},gid={gid}"),
        );
    });
    // The owner's VM directory on the mount, as bangerd leaves it.
    let dir = in_helper(pid, &lab.vm_dir(v));
    lab.owner_dir(&dir);
    lab.owner_file(&dir.join("root.ext4"), &[0u8; 4096]);
    lab.owner_file(&dir.join("work.ext4"), &[0u8; 4096]);

    let grown = lab.call(PrivOp::Vm(VmOp::GrowWorkDisk(GrowWorkDisk {
        vm_id: v.into(),
        bytes: 64 << 20,
    })));
    if let Err(e) = &grown {
        assert!(!e.contains("refusing the state directory"), "{e}");
    }
    assert_eq!(
        std::fs::metadata(dir.join("work.ext4")).unwrap().len(),
        64 << 20,
        "{grown:?}"
    );
}
