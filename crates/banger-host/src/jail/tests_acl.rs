//! Grants on one file that overlap (two tools on one disk at once).

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use std::os::fd::AsFd as _;

use super::*;

/// The jail range the grants of these tests are made under.
const JAIL_UIDS: std::ops::Range<u32> = 3_400_000..3_400_016;

fn acl_bytes(f: &File) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::fgetxattr(f, ACL_XATTR, &mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("reading the ACL: {e}"),
    }
}

#[test]
fn overlapping_grants_on_one_file_leave_its_acl_and_mode_as_they_were() {
    super::tests::require_root();
    let dir = tempfile::tempdir().unwrap();
    for existing in [false, true] {
        let path = dir.path().join(format!("disk-{existing}"));
        let f = File::create(&path).unwrap();
        f.set_permissions(std::fs::Permissions::from_mode(0o640))
            .unwrap();
        if existing {
            // An ACL of the file's own: user 4242 may read.
            rustix::fs::fsetxattr(
                &f,
                ACL_XATTR,
                &acl_with_user(0o640, 4242, false),
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
        }
        let before = (acl_bytes(&f), f.metadata().unwrap().mode());
        let a = grant(f.as_fd(), 3_400_001, true, JAIL_UIDS).unwrap();
        let b = grant(f.as_fd(), 3_400_002, true, JAIL_UIDS).unwrap();
        revoke(f.as_fd(), a).unwrap();
        // The second tool still holds its grant.
        let held = acl_bytes(&f).unwrap_or_default();
        assert!(
            held.windows(4).any(|w| w == 3_400_002u32.to_le_bytes()),
            "the other grant went with the first revoke"
        );
        revoke(f.as_fd(), b).unwrap();
        let after = (acl_bytes(&f), f.metadata().unwrap().mode());
        assert_eq!(after, before, "existing ACL: {existing}");
    }
}

/// Hostile review F-d: a helper that crashed between a grant and its
/// revoke left `user:<jail uid>:rw-` on the disk; the next grant recorded
/// it as the file's own and every revoke put it back. The record now drops
/// named entries of the jail range (the mask recomputed), and keeps the
/// file's other entries.
#[test]
fn a_stale_jail_entry_is_not_recorded_as_the_files_own() {
    super::tests::require_root();
    let dir = tempfile::tempdir().unwrap();
    let f = File::create(dir.path().join("disk")).unwrap();
    f.set_permissions(std::fs::Permissions::from_mode(0o640))
        .unwrap();
    // The file's own entry (4242 may read) and a crashed helper's.
    let stale = acl::acl_with_users(0o640, &[(4242, false), (3_400_005, true)]);
    rustix::fs::fsetxattr(&f, ACL_XATTR, &stale, rustix::fs::XattrFlags::empty()).unwrap();
    let g = grant(f.as_fd(), 3_400_001, true, JAIL_UIDS).unwrap();
    revoke(f.as_fd(), g).unwrap();
    assert_eq!(
        (acl_bytes(&f), f.metadata().unwrap().mode() & 0o7777),
        (Some(acl_with_user(0o640, 4242, false)), 0o640),
        "the crashed helper's entry came back"
    );
    // Only jail entries: no ACL at all afterwards, the group bits its own.
    let stale = acl_with_user(0o640, 3_400_005, true);
    rustix::fs::fsetxattr(&f, ACL_XATTR, &stale, rustix::fs::XattrFlags::empty()).unwrap();
    let g = grant(f.as_fd(), 3_400_001, true, JAIL_UIDS).unwrap();
    revoke(f.as_fd(), g).unwrap();
    assert_eq!(
        (acl_bytes(&f), f.metadata().unwrap().mode() & 0o7777),
        (None, 0o640)
    );
}
