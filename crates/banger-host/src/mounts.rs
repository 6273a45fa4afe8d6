//! Which mount a descriptor is on, without asking its file system, and the
//! state-directory check built on it.
//!
//! The owner's state directory is opened by path, so the owner may have
//! mounted something over it — on a host whose `/etc/fuse.conf` has
//! `user_allow_other`, a FUSE file system of its own, whose daemon then
//! answers every lookup root makes beneath it (owners, link counts, file
//! types: the checks root's descriptor work relies on). Root opens it with
//! `O_PATH` (which asks the file system nothing) and refuses it before any
//! lookup beneath it when its mount is FUSE:
//!
//! * the mount id comes from `statx` on that descriptor with
//!   `AT_STATX_DONT_SYNC` and no attribute asked for: the VFS fills the
//!   mount id in (`STATX_MNT_ID` in the answer's mask, since Linux 5.8)
//!   whatever the file system says, and FUSE answers a call that may not
//!   sync from its cache, sending its daemon nothing. Asking for
//!   `STATX_MNT_ID` instead makes FUSE answer `EACCES` to a caller not
//!   allowed into the mount (no `allow_other`), so the refusal could not
//!   name the file system; any error, or an answer without the mount id,
//!   refuses too;
//! * the mount's file system type comes from the caller's own
//!   `mountinfo` (its mount namespace), read through a descriptor: the
//!   kernel writes it, no daemon does.
//!
//! No `statfs`: on a FUSE mount with `allow_other` that is a request the
//! owner's daemon can stall. Nothing is recorded at install either:
//! device numbers change across reboots and deploys.

use std::io::{BufRead, Read as _};
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{AtFlags, StatxFlags};

/// The kernel's table of the mounts in the caller's mount namespace.
/// (`thread-self`: a thread that entered another mount namespace reads
/// its own; the helper has one.)
pub const MOUNTINFO: &str = "/proc/thread-self/mountinfo";

/// The longest `mountinfo` line kept: a longer one that is not the mount
/// looked for is read to its newline without being kept; the mount's own
/// refuses.
pub const MAX_LINE: usize = 64 << 10;

/// The most of `mountinfo` read looking for one mount: past it the lookup
/// refuses (an owner's mounts can make the table this long).
pub const MAX_TABLE: u64 = 64 << 20;

/// One line of `mountinfo`, the fields banger reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount id (`statx`'s `stx_mnt_id`).
    pub id: u64,
    /// Where it is mounted, unescaped (lossy where it is not UTF-8).
    pub mount_point: String,
    /// The file system type, with its subtype (`fuse.sshfs`).
    pub fs_type: String,
}

/// Why a state directory is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateDirRefusal {
    #[error(
        "it is on a FUSE file system ({fs_type}, mounted at {mount_point}): served by a process, \
         not the kernel"
    )]
    Fuse {
        fs_type: String,
        mount_point: String,
    },
    #[error("finding its mount: {0}")]
    Unreadable(String),
}

/// Undo `mountinfo`'s escapes: `\ooo` (three octal digits) is that byte
/// (space, tab, newline and backslash are written so).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')))
            .and_then(|n| u8::try_from(n).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse one `mountinfo` line: `id parent major:minor root mount-point
/// options [optional fields...] - type source super-options`.
pub fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let id = fields.first()?.parse().ok()?;
    let mount_point = unescape(fields.get(4)?);
    // The optional fields end at a lone `-`, after the six fixed ones.
    let sep = 6 + fields.get(6..)?.iter().position(|f| *f == "-")?;
    let fs_type = unescape(fields.get(sep + 1)?);
    Some(MountEntry {
        id,
        mount_point,
        fs_type,
    })
}

/// The entry of mount `id` in `mountinfo` read from `r`.
pub fn find_mount(r: impl BufRead, id: u64) -> Result<Option<MountEntry>, String> {
    scan(r, id, &mut Vec::new())
}

/// The lookup, line by line: a line is compared by its first field (the
/// mount id, as bytes) before anything is unescaped or decoded; `kept`
/// holds at most `MAX_LINE` bytes of one line (a longer line is read to
/// its end unkept), and past `MAX_TABLE` bytes the lookup refuses.
fn scan(mut r: impl BufRead, id: u64, kept: &mut Vec<u8>) -> Result<Option<MountEntry>, String> {
    let want = format!("{id} ");
    let mut total = 0u64;
    loop {
        kept.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64)
            .read_until(b'\n', kept)
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(None);
        }
        total += n as u64;
        let whole = kept.ends_with(b"\n");
        if !whole && n == MAX_LINE {
            total += skip_line(&mut r, total).map_err(|e| e.to_string())?;
        }
        if total > MAX_TABLE {
            return Err(format!("more than {MAX_TABLE} bytes of mount table"));
        }
        if !kept.starts_with(want.as_bytes()) {
            continue;
        }
        if !whole && n == MAX_LINE {
            return Err(format!("mount {id}'s line is longer than {MAX_LINE} bytes"));
        }
        let line = String::from_utf8_lossy(kept);
        return parse_mountinfo_line(line.trim_end_matches('\n'))
            .map(Some)
            .ok_or_else(|| format!("mount {id}'s line is not understood"));
    }
}

/// Read to the end of the line, keeping nothing; the bytes read. Stops
/// once the table's total passes `MAX_TABLE`.
fn skip_line(r: &mut impl BufRead, mut total: u64) -> std::io::Result<u64> {
    let start = total;
    while total <= MAX_TABLE {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let (used, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        r.consume(used);
        total += used as u64;
        if end {
            break;
        }
    }
    Ok(total - start)
}

/// Whether `fs_type` is FUSE (`fuse`, `fuseblk`, either with a
/// `.<subtype>`): what comes before the first `.`.
pub fn is_fuse(fs_type: &str) -> bool {
    matches!(fs_type.split('.').next(), Some("fuse" | "fuseblk"))
}

/// The mount id of the file behind `fd`: `statx` for no attribute and
/// without syncing, which asks no file system daemon; the VFS adds the
/// mount id.
pub fn mount_id_of(fd: BorrowedFd<'_>) -> rustix::io::Result<u64> {
    let st = rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        StatxFlags::empty(),
    )?;
    if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        // A kernel before 5.8.
        return Err(rustix::io::Errno::NOSYS);
    }
    Ok(st.stx_mnt_id)
}

/// `STATX_MNT_ID_UNIQUE` (`linux/stat.h`, Linux 6.8): not among rustix's
/// flags.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// A mount as the jail spawner's bind allow-list compares it: by the
/// kernel's unique mount id where it has one (Linux 6.8+), never given to
/// another mount; on an older kernel by the reusable id [`mount_id_of`]
/// gives, which the kernel hands to a later mount once this one is gone
/// (the allow-list then keeps its mounts alive: `jail::spawner`). The two
/// never compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKey {
    Unique(u64),
    Reusable(u64),
}

impl std::fmt::Display for MountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountKey::Unique(id) => write!(f, "unique mount id {id}"),
            MountKey::Reusable(id) => write!(f, "mount id {id}"),
        }
    }
}

/// The [`MountKey`] of the file behind `fd`: `statx` asking for
/// `STATX_MNT_ID_UNIQUE` only, without syncing (an older kernel ignores
/// the bit and answers with the reusable id). Not for the state
/// directory's FUSE check: a FUSE mount answers a request for anything
/// with `EACCES` to a process it does not allow in ([`mount_id_of`]).
pub fn mount_key_of(fd: BorrowedFd<'_>) -> rustix::io::Result<MountKey> {
    let st = rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE),
    )?;
    if st.stx_mask & STATX_MNT_ID_UNIQUE != 0 {
        Ok(MountKey::Unique(st.stx_mnt_id))
    } else if st.stx_mask & StatxFlags::MNT_ID.bits() != 0 {
        Ok(MountKey::Reusable(st.stx_mnt_id))
    } else {
        // A kernel before 5.8.
        Err(rustix::io::Errno::NOSYS)
    }
}

/// The mount the file behind `fd` is on, in the caller's mount namespace.
pub fn mount_of(fd: BorrowedFd<'_>) -> Result<MountEntry, String> {
    let id = mount_id_of(fd).map_err(|e| format!("statx: {e}"))?;
    let f = std::fs::File::open(MOUNTINFO).map_err(|e| format!("{MOUNTINFO}: {e}"))?;
    find_mount(std::io::BufReader::new(f), id)
        .map_err(|e| format!("{MOUNTINFO}: {e}"))?
        .ok_or_else(|| format!("mount {id} is not in {MOUNTINFO}"))
}

/// Check the state directory behind `fd` (opened with `O_PATH`): refused
/// on FUSE, and when its mount cannot be found. The caller names the path.
pub fn check_state_dir(fd: impl AsFd) -> Result<(), StateDirRefusal> {
    let m = mount_of(fd.as_fd()).map_err(StateDirRefusal::Unreadable)?;
    if is_fuse(&m.fs_type) {
        return Err(StateDirRefusal::Fuse {
            fs_type: m.fs_type,
            mount_point: m.mount_point,
        });
    }
    Ok(())
}

// Test support only, like `watch`.
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

#[cfg(test)]
mod tests;
