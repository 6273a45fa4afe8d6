//! The access ACL that lets a jailed uid open one file.

use std::os::fd::BorrowedFd;

use rustix::fs::Mode;

/// `system.posix_acl_access` entry tags and the header version.
const ACL_VERSION: u32 = 2;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;
pub const ACL_XATTR: &str = "system.posix_acl_access";

/// The access ACL that keeps `mode`'s owner, group and other permissions
/// and adds `uid` with read-write (`writable`) or read-only access.
pub fn acl_with_user(mode: u32, uid: u32, writable: bool) -> Vec<u8> {
    let user = if writable { 6 } else { 4 };
    let group = ((mode >> 3) & 7) as u16;
    let mut v = ACL_VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (ACL_USER_OBJ, ((mode >> 6) & 7) as u16, ACL_UNDEFINED_ID),
        (ACL_USER, user, uid),
        (ACL_GROUP_OBJ, group, ACL_UNDEFINED_ID),
        (ACL_MASK, user | group, ACL_UNDEFINED_ID),
        (ACL_OTHER, (mode & 7) as u16, ACL_UNDEFINED_ID),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Let `uid` open the file behind `fd` (read-write when `writable`) by an
/// access ACL set on the descriptor; returns the permission bits to give
/// back with [`revoke`]. An ACL, not a chown: the jailed uid does not own
/// the inode, so it cannot chmod it open to everyone.
pub fn grant(fd: BorrowedFd<'_>, uid: u32, writable: bool) -> std::io::Result<u32> {
    let st = rustix::fs::fstat(fd)?;
    let mode = st.st_mode & 0o7777;
    rustix::fs::fsetxattr(
        fd,
        ACL_XATTR,
        &acl_with_user(mode, uid, writable),
        rustix::fs::XattrFlags::empty(),
    )?;
    Ok(mode)
}

/// Undo [`grant`]: remove the access ACL (gone already is fine) and put
/// the permission bits back to `mode`.
pub fn revoke(fd: BorrowedFd<'_>, mode: u32) -> std::io::Result<()> {
    match rustix::fs::fremovexattr(fd, ACL_XATTR) {
        Ok(()) | Err(rustix::io::Errno::NODATA) => {}
        Err(e) => return Err(e.into()),
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
    Ok(())
}
