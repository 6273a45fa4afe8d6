//! The one check of a [`super::Jail::cgroup`] descriptor, made by
//! `Jail::cgroup` and again by the spawner.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;

use rustix::fs::OFlags;

/// The one file name a [`Jail::cgroup`] descriptor may have.
const CGROUP_PROCS: &str = "cgroup.procs";

/// Refused unless `fd` is a `cgroup.procs` file of cgroup2 (`fstatfs`
/// magic `CGROUP2_SUPER_MAGIC`, a regular file, named so as the kernel
/// reports it in `/proc/self/fd`) opened for writing: writing `0` to any
/// other cgroup2 file (`memory.max`, `pids.max`, `cgroup.freeze`, ...)
/// would change a cgroup instead of joining one. cgroup2 files cannot be
/// renamed, and a cgroup (a directory) named `cgroup.procs` is not a
/// regular file.
pub(super) fn check_cgroup(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let refuse = |why: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("a jail cgroup descriptor {why}"),
        )
    };
    let magic = rustix::fs::fstatfs(fd)?.f_type as u64;
    if magic != crate::probe::CGROUP2_SUPER_MAGIC {
        return Err(refuse(format!("not on cgroup2 (f_type {magic:#x})")));
    }
    let st = rustix::fs::fstat(fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(refuse("not of a regular file".into()));
    }
    let mode = rustix::fs::fcntl_getfl(fd)? & OFlags::ACCMODE;
    if mode != OFlags::WRONLY && mode != OFlags::RDWR {
        return Err(refuse("not opened for writing".into()));
    }
    use std::os::fd::AsRawFd as _;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if link.file_name() != Some(OsStr::new(CGROUP_PROCS)) {
        return Err(refuse(format!(
            "of {}, not of a {CGROUP_PROCS} file",
            link.display()
        )));
    }
    Ok(())
}
