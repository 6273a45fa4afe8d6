//! A helper killed between a disk tool's grant and its revoke: the grant
//! is journaled first, so the next executor on the same state dir and
//! journal puts the disk's ACL and mode back — only on the inode granted.

use std::fs::File;
use std::os::fd::AsFd as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_host::jail::{ACL_XATTR, acl_with_user, read_acl};
use banger_host::net::fake::FakeNet;
use banger_host::probe::fake::FakeHost;

use super::VmHostConfig;
use crate::Executor;

const VM: &str = "0123456789abcdef0123456789abcdef";

/// The disk's access ACL bytes and whole mode.
fn state_of(path: &Path) -> (Option<Vec<u8>>, u32) {
    let f = File::open(path).unwrap();
    (read_acl(f.as_fd()).unwrap(), f.metadata().unwrap().mode())
}

fn config(state: &Path) -> VmHostConfig {
    VmHostConfig {
        state_dir: state.to_path_buf(),
        owner: (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        ),
        qemu_binary: None,
        firecracker_binary: None,
        jail: Default::default(),
    }
}

/// An executor on `state` and `journal`, as the helper builds it at start.
fn executor(state: &Path, journal: &Path) -> Executor {
    Executor::new(
        Arc::new(FakeHost::lab_host()),
        Arc::new(FakeNet::new()),
        journal.to_path_buf(),
    )
    .with_vms(config(state))
}

/// A disk of the owner's in the VM directory, mode 0640, with an ACL of
/// its own (user 4242 may read) when `acl`.
fn disk(state: &Path, name: &str, acl: bool) -> PathBuf {
    let path = state.join("vms").join(VM).join(name);
    std::fs::write(&path, b"disk").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let own = acl_with_user(0o640, 4242, false);
    if acl {
        rustix::fs::setxattr(&path, ACL_XATTR, &own, rustix::fs::XattrFlags::empty()).unwrap();
    }
    path
}

/// Grant the tool uid `path` and "crash": the grant is never revoked.
fn grant_and_crash(exec: &Executor, path: &Path) {
    let host = exec.vm.as_deref().unwrap();
    let f = File::open(path).unwrap();
    let before = state_of(path);
    let grant = host.grant_disk(&f, path, None, true).unwrap();
    assert_ne!(state_of(path), before, "the grant changed nothing");
    std::mem::forget(grant);
}

#[test]
fn a_grant_left_by_a_crash_is_undone_at_the_next_start_on_that_inode_only() {
    assert_eq!(rustix::process::geteuid().as_raw(), 0, "needs root");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("vms").join(VM)).unwrap();
    let journal = dir.path().join("journal.json");
    let with_acl = disk(&state, "root.ext4", true);
    let without = disk(&state, "work.ext4", false);
    let before = [state_of(&with_acl), state_of(&without)];

    let crashed = executor(&state, &journal);
    grant_and_crash(&crashed, &with_acl);
    grant_and_crash(&crashed, &without);
    drop(crashed);
    executor(&state, &journal);
    assert_eq!(
        [state_of(&with_acl), state_of(&without)],
        before,
        "the next executor left the crashed grants in place"
    );

    // A disk replaced after the grant (another inode at the name) is left
    // alone, and the entry dropped.
    let crashed = executor(&state, &journal);
    grant_and_crash(&crashed, &without);
    drop(crashed);
    let granted = state_of(&without);
    let replacement = state.join("vms").join(VM).join("new");
    std::fs::copy(&without, &replacement).unwrap();
    rustix::fs::setxattr(
        &replacement,
        ACL_XATTR,
        granted.0.as_deref().unwrap(),
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::fs::rename(&replacement, &without).unwrap();
    let planted = state_of(&without);
    executor(&state, &journal);
    assert_eq!(state_of(&without), planted, "another inode was changed");
    let text = std::fs::read_to_string(&journal).unwrap();
    let journaled: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(journaled["grants"], serde_json::json!([]), "{text}");
}

/// Review of the grant journal: a crashed grant's restore checked the
/// inode (and, by opening it, owner and link count) but not the group,
/// and put the recorded mode back as root — a set-gid bit included — on a
/// disk whose group had changed since. The owner and group are journaled
/// now and the restore leaves the disk alone unless both match; an entry
/// without them (journaled before) gets its mode back without set-id bits.
#[test]
fn a_crashed_grant_restores_its_mode_only_with_the_same_owner_and_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk");
    std::fs::write(&path, b"disk").unwrap();
    let st = rustix::fs::stat(&path).unwrap();
    let entry = crate::journal::GrantEntry {
        vm_id: VM.into(),
        disk: "root.ext4".into(),
        dev: st.st_dev,
        ino: st.st_ino,
        mode: 0o6640,
        acl: None,
        uid: Some(st.st_uid),
        gid: Some(st.st_gid),
        failed_starts: 0,
    };
    assert_eq!(super::jailed::restored_mode(&entry, &st), Ok(0o6640));

    let mut regrouped = st;
    regrouped.st_gid += 1;
    assert!(super::jailed::restored_mode(&entry, &regrouped).is_err());
    let mut chowned = st;
    chowned.st_uid += 1;
    assert!(super::jailed::restored_mode(&entry, &chowned).is_err());
    let mut other = st;
    other.st_ino += 1;
    assert!(super::jailed::restored_mode(&entry, &other).is_err());

    let older = crate::journal::GrantEntry {
        uid: None,
        gid: None,
        ..entry
    };
    assert_eq!(super::jailed::restored_mode(&older, &st), Ok(0o640));
    assert_eq!(super::jailed::restored_mode(&older, &regrouped), Ok(0o640));
}

/// Review of the grant journal: a start dropped an entry on any error
/// opening its disk (access refused, out of descriptors: the ACL stayed
/// with nothing left to undo it) and kept one whose restore failed for
/// ever. Now an entry is dropped when its disk is gone (`ENOENT`, a dm
/// device no longer there, `EINVAL` from the kernel) or another inode or
/// owner; any other failure keeps it, for at most `MAX_RESTORE_STARTS`
/// starts.
#[test]
fn an_unrestored_grant_is_dropped_when_gone_and_retried_at_most_three_starts() {
    use super::error::VmOpError;
    use super::jailed::{MAX_RESTORE_STARTS, Unrestored, gone, kept_after_failure};
    let errno = std::io::Error::from_raw_os_error;
    let open_io = |e| {
        Unrestored::Open(VmOpError::Io {
            what: "opening",
            path: "/dev/mapper/banger-x".into(),
            source: errno(e),
        })
    };
    for e in [libc::ENOENT, libc::ENODEV, libc::ENXIO, libc::EINVAL] {
        assert!(gone(&open_io(e)), "errno {e}");
    }
    assert!(gone(&Unrestored::Open(VmOpError::Missing {
        what: "file",
        path: "vms/x/root.ext4".into(),
    })));
    assert!(gone(&Unrestored::Other("another inode".into())));
    assert!(gone(&Unrestored::Restore(errno(libc::EINVAL))));
    for e in [libc::EACCES, libc::EMFILE, libc::EIO] {
        assert!(!gone(&open_io(e)), "errno {e}");
        assert!(!gone(&Unrestored::Restore(errno(e))), "errno {e}");
    }
    assert!(!gone(&Unrestored::Open(VmOpError::Invalid {
        what: "granted disk",
        value: "vms/x/root.ext4".into(),
        reason: "2 links".into(),
    })));

    let mut entry = crate::journal::GrantEntry {
        vm_id: VM.into(),
        disk: "root.ext4".into(),
        dev: 1,
        ino: 2,
        mode: 0o640,
        acl: None,
        uid: Some(0),
        gid: Some(0),
        failed_starts: 0,
    };
    let mut starts = 0;
    loop {
        starts += 1;
        match kept_after_failure(entry) {
            Some(kept) => entry = kept,
            None => break,
        }
        assert!(starts < 10, "kept after {starts} failed starts");
    }
    assert_eq!(starts, MAX_RESTORE_STARTS);
}

/// Firecracker jail design, part 2 step 3: a VM slot's uid gets a drive
/// for a launch (read-only or read-write) through the same journaled
/// grant; once the launch is over (the grant dropped) the drive's ACL
/// bytes and mode are exactly as before. Only a slot the launch reserved
/// is granted (`grant_disk` takes the `Slot`, never a bare uid). (Crash
/// restore does not depend on the uid: the tests above.)
///
/// In `/dev/shm`, another file system than the crash tests' above: their
/// forgotten grants stay in this process's table of held grants (a real
/// crash ends the process), keyed by device and inode, and a file made
/// here on an inode number they freed would start from their record.
#[test]
fn a_slots_grant_for_a_launch_leaves_the_drive_as_before() {
    assert_eq!(rustix::process::geteuid().as_raw(), 0, "needs root");
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("vms").join(VM)).unwrap();
    let journal = dir.path().join("journal.json");
    let exec = executor(&state, &journal);
    let host = exec.vm.as_deref().unwrap();
    let reserved = host.reserve_slot().unwrap();
    let slot = reserved.uid();
    for (name, acl) in [("root.ext4", true), ("work.ext4", false)] {
        let path = disk(&state, name, acl);
        let before = state_of(&path);
        let f = File::open(&path).unwrap();
        for writable in [false, true] {
            let grant = host
                .grant_disk(&f, &path, Some(&reserved), writable)
                .unwrap();
            let granted = state_of(&path);
            assert_ne!(granted, before, "{name}: the grant changed nothing");
            if !acl {
                let expected = acl_with_user(before.1 & 0o777, slot, writable);
                assert_eq!(granted.0.as_deref(), Some(&expected[..]), "{name}");
            }
            drop(grant);
            assert_eq!(state_of(&path), before, "{name}, writable {writable}");
        }
    }
    let text = std::fs::read_to_string(&journal).unwrap_or_default();
    assert!(
        !text.contains(&format!("{slot}")),
        "a grant stayed journaled: {text}"
    );
}
