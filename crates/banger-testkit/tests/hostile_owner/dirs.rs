//! The s13 review of the root-side diff, F1: root opened `vms/<id>` and
//! `snapshots/<sid>` without checking who owns them. Linux asks no
//! permission on a directory moved within its parent (or with its
//! parent), so the owner can bring a directory of another uid's — a jailed
//! Firecracker's `run/`, its slot's — to either name, and root would then
//! create the owner's files in it, or unlink names there.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use banger_proto::privops::{DeleteVmDisks, PrivOp, VmOp};
use banger_proto::vmops::SnapshotVmSpec;

use crate::lab::*;

/// A uid that is neither the owner's nor root's (a VM slot's, as far as
/// the helper can tell).
const OTHER_UID: u32 = 65534;

/// A 0700 directory of [`OTHER_UID`]'s at `p` holding `keep`.
fn foreign_dir(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::write(p.join("keep"), b"keep").unwrap();
    std::os::unix::fs::chown(p.join("keep"), Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(p, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
}

fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `SnapshotVm` into a snapshot directory of another uid's is refused for
/// its owner before anything else is looked at (the VM is not even
/// running: the directory is opened first), and `DeleteVmDisks` of a VM
/// directory of another uid's unlinks nothing there. Before the fix the
/// first failed only for the VM not running (so a running one would have
/// saved into it) and the second removed the disks' names as root.
#[test]
fn root_works_in_no_directory_of_another_uid() {
    let lab = Lab::new();
    let snapshots = lab.state().join("snapshots");
    lab.owner_dir(&snapshots);
    let sid = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
    let vm = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b";
    let sdir = snapshots.join(sid);
    let vdir = lab.vm_dir(vm);
    foreign_dir(&sdir);
    foreign_dir(&vdir);
    for f in ["root.ext4", "work.ext4", "root.cow"] {
        std::fs::write(vdir.join(f), b"keep").unwrap();
    }
    let (sbefore, vbefore) = (names(&sdir), names(&vdir));
    let lab = lab.start();

    let err = lab
        .call(PrivOp::Vm(VmOp::SnapshotVm(SnapshotVmSpec {
            vm_id: vm.into(),
            snapshot_id: sid.into(),
            resume: false,
            memory_only: true,
        })))
        .expect_err("a snapshot directory of another uid's is refused");
    let refused = |err: &str, dir: &Path| {
        assert!(
            err.contains(&dir.display().to_string())
                && err.contains(&format!("owned by uid {OTHER_UID}, not the owner's")),
            "{err}"
        );
    };
    refused(&err, &sdir);

    let err = lab
        .call(PrivOp::Vm(VmOp::DeleteVmDisks(DeleteVmDisks {
            vm_id: vm.into(),
        })))
        .expect_err("a VM directory of another uid's is refused");
    refused(&err, &vdir);

    assert_eq!(names(&sdir), sbefore, "root made or removed a name there");
    assert_eq!(names(&vdir), vbefore, "root made or removed a name there");
}

/// `SnapshotVm` with `memory_only` and `resume` is refused (the s13
/// review's F5): a memory-only save is sound only if the guest never runs
/// on its disks again.
#[test]
fn a_memory_only_save_that_resumes_is_refused() {
    let lab = Lab::new();
    let snapshots = lab.state().join("snapshots");
    lab.owner_dir(&snapshots);
    let sid = "5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c";
    lab.owner_dir(&snapshots.join(sid));
    let lab = lab.start();
    let err = lab
        .call(PrivOp::Vm(VmOp::SnapshotVm(SnapshotVmSpec {
            vm_id: "6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c".into(),
            snapshot_id: sid.into(),
            resume: true,
            memory_only: true,
        })))
        .expect_err("memory-only and resume");
    assert!(
        err.starts_with("bad_request") && err.contains("memory-only save"),
        "{err}"
    );
    assert!(names(&snapshots.join(sid)).is_empty());
}
