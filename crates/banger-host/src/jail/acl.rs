//! The access ACL that lets a jailed uid open one file, and the grants
//! made with it, counted per inode so that overlapping grants (two tools
//! on one disk at once) give back exactly what the file had.

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::sync::{Mutex, PoisonError};

use rustix::fs::Mode;

/// `system.posix_acl_access` entry tags and the header version.
const ACL_VERSION: u32 = 2;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;
pub const ACL_XATTR: &str = "system.posix_acl_access";
/// The largest access ACL read back (an ACL of ~8000 entries).
const ACL_MAX: usize = 64 << 10;

/// The access ACL that keeps `mode`'s owner, group and other permissions
/// and adds `uid` with read-write (`writable`) or read-only access.
pub fn acl_with_user(mode: u32, uid: u32, writable: bool) -> Vec<u8> {
    acl_with_users(mode, &[(uid, writable)])
}

/// [`acl_with_user`] for several uids (one entry each, read-write if any
/// grant of it is).
pub(super) fn acl_with_users(mode: u32, users: &[(u32, bool)]) -> Vec<u8> {
    let mut merged: Vec<(u32, u16)> = Vec::new();
    for &(uid, writable) in users {
        let perm = if writable { 6 } else { 4 };
        match merged.iter_mut().find(|(u, _)| *u == uid) {
            Some((_, p)) => *p |= perm,
            None => merged.push((uid, perm)),
        }
    }
    // The kernel wants named users in ascending order.
    merged.sort_unstable();
    let group = ((mode >> 3) & 7) as u16;
    let mask = merged.iter().fold(group, |m, (_, p)| m | p);
    let mut entries = vec![(ACL_USER_OBJ, ((mode >> 6) & 7) as u16, ACL_UNDEFINED_ID)];
    entries.extend(merged.iter().map(|&(uid, p)| (ACL_USER, p, uid)));
    entries.extend([
        (ACL_GROUP_OBJ, group, ACL_UNDEFINED_ID),
        (ACL_MASK, mask, ACL_UNDEFINED_ID),
        (ACL_OTHER, (mode & 7) as u16, ACL_UNDEFINED_ID),
    ]);
    let mut v = ACL_VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// What a file had before its first outstanding grant, and the grants.
struct Held {
    /// Permission bits (with set-id and sticky) before the first grant.
    mode: u32,
    /// The access ACL's exact bytes before the first grant, if it had one.
    acl: Option<Vec<u8>>,
    /// (uid, writable) of each outstanding grant.
    grants: Vec<(u32, bool)>,
}

/// Outstanding grants by (device, inode), in this process.
static HELD: Mutex<BTreeMap<(u64, u64), Held>> = Mutex::new(BTreeMap::new());

/// One grant made by [`grant`], to hand back to [`revoke`].
#[derive(Debug)]
#[must_use = "a grant is undone only by revoke"]
pub struct Grant {
    key: (u64, u64),
    uid: u32,
    writable: bool,
}

/// The file's access ACL bytes (`None`: it has none).
pub fn read_acl(fd: BorrowedFd<'_>) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; ACL_MAX];
    match rustix::fs::fgetxattr(fd, ACL_XATTR, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NODATA) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The file's mode and access ACL as they were before any grant: named
/// user entries of `jail_uids` are a crashed helper's leftovers (no one
/// else gives those uids anything), so they are dropped and the mask (the
/// mode's group bits) recomputed from what is left; with no named entry
/// left, no ACL at all. Bytes not laid out as an ACL are kept as they are.
fn without_jail_entries(
    mode: u32,
    acl: Option<Vec<u8>>,
    jail_uids: &std::ops::Range<u32>,
) -> (u32, Option<Vec<u8>>) {
    let Some(bytes) = acl else {
        return (mode, None);
    };
    if bytes.len() < 4 || (bytes.len() - 4) % 8 != 0 {
        return (mode, Some(bytes));
    }
    let entries: Vec<(u16, u16, u32)> = bytes[4..]
        .chunks_exact(8)
        .map(|e| {
            let word = |i: usize| u16::from_le_bytes([e[i], e[i + 1]]);
            (
                word(0),
                word(2),
                u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            )
        })
        .collect();
    let stale = |&(tag, _, id): &(u16, u16, u32)| tag == ACL_USER && jail_uids.contains(&id);
    if !entries.iter().any(stale) {
        return (mode, Some(bytes));
    }
    let kept: Vec<_> = entries.into_iter().filter(|e| !stale(e)).collect();
    let group = kept
        .iter()
        .find(|e| e.0 == ACL_GROUP_OBJ)
        .map_or((mode >> 3) & 7, |e| u32::from(e.1));
    let named = kept.iter().filter(|e| e.0 == ACL_USER || e.0 == ACL_GROUP);
    if named.clone().next().is_none() {
        return ((mode & !0o070) | (group << 3), None);
    }
    let mask = named.fold(group as u16, |m, e| m | e.1);
    let mut v = bytes[..4].to_vec();
    for (tag, perm, id) in kept {
        let perm = if tag == ACL_MASK { mask } else { perm };
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    ((mode & !0o070) | (u32::from(mask) << 3), Some(v))
}

/// Let `uid` open the file behind `fd` (read-write when `writable`) by an
/// access ACL set on the descriptor, until [`revoke`]. An ACL, not a
/// chown: the jailed uid does not own the inode, so it cannot chmod it
/// open to everyone. The first outstanding grant on an inode records its
/// mode and ACL (without entries of `jail_uids`, a crashed helper's);
/// later ones add their uid to the same ACL.
pub fn grant(
    fd: BorrowedFd<'_>,
    uid: u32,
    writable: bool,
    jail_uids: std::ops::Range<u32>,
) -> std::io::Result<Grant> {
    grant_recorded(fd, uid, writable, jail_uids, |_| Ok(()))
}

/// What [`restore`] puts back on one inode: its mode and access ACL as
/// they were before the first outstanding grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prior {
    pub dev: u64,
    pub ino: u64,
    /// Permission bits (with set-id and sticky).
    pub mode: u32,
    /// The access ACL's exact bytes, or `None`: the file had none.
    pub acl: Option<Vec<u8>>,
    /// Its owner and group at this grant.
    pub uid: u32,
    pub gid: u32,
}

/// [`grant`], calling `record` with what the inode had before any grant
/// (so a caller can journal it) before the ACL changes; an error from
/// `record` fails the grant with nothing changed.
pub fn grant_recorded(
    fd: BorrowedFd<'_>,
    uid: u32,
    writable: bool,
    jail_uids: std::ops::Range<u32>,
    record: impl FnOnce(&Prior) -> std::io::Result<()>,
) -> std::io::Result<Grant> {
    let st = rustix::fs::fstat(fd)?;
    let key = (st.st_dev, st.st_ino);
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    let h = match held.entry(key) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => {
            let (mode, acl) = without_jail_entries(st.st_mode & 0o7777, read_acl(fd)?, &jail_uids);
            e.insert(Held {
                mode,
                acl,
                grants: Vec::new(),
            })
        }
    };
    let prior = Prior {
        dev: key.0,
        ino: key.1,
        mode: h.mode,
        acl: h.acl.clone(),
        uid: st.st_uid,
        gid: st.st_gid,
    };
    if let Err(e) = record(&prior) {
        if h.grants.is_empty() {
            held.remove(&key);
        }
        return Err(e);
    }
    let mut grants = h.grants.clone();
    grants.push((uid, writable));
    let set = rustix::fs::fsetxattr(
        fd,
        ACL_XATTR,
        &acl_with_users(h.mode, &grants),
        rustix::fs::XattrFlags::empty(),
    );
    if let Err(e) = set {
        if h.grants.is_empty() {
            held.remove(&key);
        }
        return Err(e.into());
    }
    h.grants = grants;
    Ok(Grant { key, uid, writable })
}

/// Undo [`grant`]: while other grants on the inode are outstanding, the
/// ACL keeps theirs; after the last, the ACL bytes the file had (or none)
/// and its permission bits are put back.
pub fn revoke(fd: BorrowedFd<'_>, grant: Grant) -> std::io::Result<()> {
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(h) = held.get_mut(&grant.key) else {
        return Err(std::io::Error::other("revoking a grant not held"));
    };
    if let Some(i) = h
        .grants
        .iter()
        .position(|g| *g == (grant.uid, grant.writable))
    {
        h.grants.remove(i);
    }
    if !h.grants.is_empty() {
        rustix::fs::fsetxattr(
            fd,
            ACL_XATTR,
            &acl_with_users(h.mode, &h.grants),
            rustix::fs::XattrFlags::empty(),
        )?;
        return Ok(());
    }
    let h = held.remove(&grant.key).expect("present above");
    drop(held);
    restore(fd, h.mode, h.acl.as_deref())
}

/// Put `acl` (or no access ACL) and the permission bits `mode` back on the
/// file behind `fd`: the end of the last [`revoke`], and what the executor
/// does at start for a journaled grant a crash left behind (the caller
/// checks that `fd` is the inode granted).
pub fn restore(fd: BorrowedFd<'_>, mode: u32, acl: Option<&[u8]>) -> std::io::Result<()> {
    match acl {
        Some(bytes) => {
            rustix::fs::fsetxattr(fd, ACL_XATTR, bytes, rustix::fs::XattrFlags::empty())?
        }
        None => match rustix::fs::fremovexattr(fd, ACL_XATTR) {
            Ok(()) | Err(rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(e.into()),
        },
    }
    // Always: setting or removing an ACL changes the group bits.
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?;
    Ok(())
}
