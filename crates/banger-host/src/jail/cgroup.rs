//! The one check of a [`super::Jail::cgroup`] descriptor, made by
//! `Jail::cgroup` and again by the spawner.

use std::os::fd::BorrowedFd;

use rustix::fs::OFlags;

/// A cgroup a jail joins ([`super::Jail::cgroup`]): its directory and
/// that directory's `cgroup.procs`, opened for writing, checked together
/// by [`check_cgroup`].
#[derive(Debug)]
pub(super) struct CgroupFds {
    pub(super) dir: std::os::fd::OwnedFd,
    pub(super) procs: std::os::fd::OwnedFd,
}

/// The one file a [`Jail::cgroup`] descriptor may be, in its directory.
const CGROUP_PROCS: &str = "cgroup.procs";

/// Refused unless `dir` is a cgroup2 directory and `fd` is that
/// directory's own `cgroup.procs`, opened for writing: writing `0` to any
/// other cgroup2 file (`memory.max`, `pids.max`, `cgroup.freeze`, ...)
/// would change a cgroup instead of joining one. Whose file `fd` is comes
/// from the kernel, not from a name: `cgroup.procs` is opened `O_PATH`
/// beneath `dir` without following a link or crossing a mount
/// (`RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV`: another file
/// bound over that name is refused, where a `fstatat` or the name in
/// `/proc/self/fd` would report the bound file), and `fd` must be that
/// inode on that device.
pub(super) fn check_cgroup(dir: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let refuse = |why: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("a jail cgroup descriptor {why}"),
        )
    };
    for (what, f) in [("directory", dir), ("file", fd)] {
        let magic = rustix::fs::fstatfs(f)?.f_type as u64;
        if magic != crate::probe::CGROUP2_SUPER_MAGIC {
            return Err(refuse(format!("{what} not on cgroup2 (f_type {magic:#x})")));
        }
    }
    let dir_st = rustix::fs::fstat(dir)?;
    if rustix::fs::FileType::from_raw_mode(dir_st.st_mode) != rustix::fs::FileType::Directory {
        return Err(refuse("directory not of a directory".into()));
    }
    let st = rustix::fs::fstat(fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(refuse("not of a regular file".into()));
    }
    let mode = rustix::fs::fcntl_getfl(fd)? & OFlags::ACCMODE;
    if mode != OFlags::WRONLY && mode != OFlags::RDWR {
        return Err(refuse("not opened for writing".into()));
    }
    let own = rustix::fs::openat2(
        dir,
        CGROUP_PROCS,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        rustix::fs::ResolveFlags::BENEATH
            | rustix::fs::ResolveFlags::NO_SYMLINKS
            | rustix::fs::ResolveFlags::NO_XDEV,
    )
    .map_err(|e| {
        refuse(format!(
            "directory's {CGROUP_PROCS} not reached beneath it: {e}"
        ))
    })?;
    let own_st = rustix::fs::fstat(&own)?;
    if (own_st.st_dev, own_st.st_ino) != (st.st_dev, st.st_ino) {
        return Err(refuse(format!(
            "not of its directory's {CGROUP_PROCS} (inode {} on {:#x}, not {} on {:#x})",
            st.st_ino, st.st_dev, own_st.st_ino, own_st.st_dev
        )));
    }
    Ok(())
}
