//! The owner's state directory as root opens it: not a file system the
//! owner serves, and on the device the install recorded.
//!
//! The state directory is the owner's and is opened by path, so the owner
//! may have mounted something over it — on a host whose `/etc/fuse.conf`
//! has `user_allow_other`, a FUSE file system of its own, whose daemon
//! then answers every lookup root makes beneath it (owners, link counts,
//! file types: the checks root's descriptor work relies on). Root opens it
//! with `O_PATH` (which asks the file system nothing) and refuses it
//! before any lookup beneath it when
//!
//! * its device (`st_dev`) is not the one the install recorded — read
//!   with `statx` for no field and without syncing, which a FUSE file
//!   system answers from its superblock without asking its daemon; then
//! * `fstatfs` says FUSE (`FUSE_SUPER_MAGIC`, set by the kernel whatever
//!   the daemon answers).
//!
//! With a recorded device the first check refuses a FUSE mount (a new
//! anonymous device) without any request reaching its daemon; without one
//! (dev mode, metadata from before banger recorded it) the `fstatfs` of a
//! FUSE file system mounted with `allow_other` is a request its daemon may
//! delay.

use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{AtFlags, StatxFlags};

/// `FUSE_SUPER_MAGIC` (`linux/magic.h`): `f_type` of every FUSE file
/// system (`fuse`, `fuseblk`, `fusectl` aside).
pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Why a state directory is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateDirRefusal {
    #[error(
        "it is on device {found}, not {recorded} as the install recorded: something is mounted over it \
         (if the state directory moved to another file system, run `sudo banger system install` again)"
    )]
    OtherDevice { found: String, recorded: String },
    #[error("it is on a FUSE file system (served by a process, not the kernel)")]
    Fuse,
    #[error("inspecting it: {0}")]
    Unreadable(String),
}

/// `major:minor` of a device number.
pub fn dev_name(dev: u64) -> String {
    format!("{}:{}", rustix::fs::major(dev), rustix::fs::minor(dev))
}

/// The device of the directory behind `fd`, asking its file system
/// nothing (`statx` for no field, `AT_STATX_DONT_SYNC`).
pub fn device_of(fd: BorrowedFd<'_>) -> rustix::io::Result<u64> {
    let st = rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        StatxFlags::empty(),
    )?;
    Ok(rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor))
}

/// A file system type root refuses the state directory on.
pub fn fs_type_refusal(f_type: i64) -> Option<StateDirRefusal> {
    (f_type == FUSE_SUPER_MAGIC).then_some(StateDirRefusal::Fuse)
}

/// Check the state directory behind `fd` (best opened with `O_PATH`):
/// on `recorded` (the install's device) when one is recorded, and not
/// FUSE.
pub fn check_state_dir(fd: impl AsFd, recorded: Option<u64>) -> Result<(), StateDirRefusal> {
    let fd = fd.as_fd();
    let unreadable = |e: rustix::io::Errno| StateDirRefusal::Unreadable(e.to_string());
    if let Some(recorded) = recorded {
        let found = device_of(fd).map_err(unreadable)?;
        if found != recorded {
            return Err(StateDirRefusal::OtherDevice {
                found: dev_name(found),
                recorded: dev_name(recorded),
            });
        }
    }
    let fs = rustix::fs::fstatfs(fd).map_err(unreadable)?;
    match fs_type_refusal(fs.f_type as i64) {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
