//! Root's own names for the files it attaches to loop devices.
//!
//! A loop device's `loop/backing_file` (what the udev guard of
//! `banger_host::devguard` matches) is the path of the dentry the attached
//! descriptor was opened through, kept by the kernel as the file is renamed.
//! A descriptor opened in the owner's tree names the owner's directory, and
//! the owner can rename the file (its image, or root's COW file in its VM
//! directory) anywhere on the same file system before the device's uevent,
//! so the rule would miss it (final review finding 2). The dm driver
//! therefore attaches each loop device through a hard link of the checked
//! descriptor in `root-loops/`, a 0700 directory of root's directly in the
//! state dir (`/var/lib/banger/root-loops`). The owner cannot rename or
//! remove a name in it, nor move the directory to another parent (that
//! needs write access to the directory itself); it can only rename the
//! directory within the state dir, so `backing_file` always names a path
//! under the state dir, which the rule matches. It is in the state dir, not
//! root's own `/var/lib/banger-root`, because a hard link cannot cross
//! mounts and the helper's unit sees the two as separate bind mounts
//! (`ProtectSystem=strict` with `ReadWritePaths=`/`StateDirectory=`).
//!
//! The directory is made with `mkdir` (which never follows a link), opened
//! `O_NOFOLLOW` and must be the executor's own with mode 0700; everything
//! after is relative to that descriptor. The link is made with `linkat` of
//! `/proc/thread-self/fd/<n>` (the inode held, never a path re-resolved), opened
//! again without following links, and must be the held inode (device and
//! inode). Names are `<vm_id>.origin`/`<vm_id>.cow`; a leftover of the same
//! name is replaced. They are removed when their loop device is gone
//! (`dm::teardown_entry`), by `DeleteVmDisks`, and by `host teardown`'s
//! sweep of names whose VM has no journaled devices. While linked, a file
//! has one link more than the owner made; the link-count checks discount
//! root's own ([`LinkDir::count`]).
//!
//! Should linking fail with `EXDEV` (a state dir whose `images/` or `vms/`
//! is another mount is refused anyway, `RESOLVE_NO_XDEV`), the dm driver
//! declines: a new VM gets reflink or a copy; an existing dm VM cannot be
//! attached, with an error that says why.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::Backing;

/// The directory's name in the state dir.
pub(crate) const LINK_DIR: &str = "root-loops";

/// Root's directory of loop-backing links.
#[derive(Debug, Clone)]
pub(crate) struct LinkDir {
    state: PathBuf,
    path: PathBuf,
}

/// The link's name for `vm_id`'s `which` file (`origin`, `cow`).
pub(crate) fn link_name(vm_id: &str, which: &str) -> String {
    format!("{vm_id}.{which}")
}

impl LinkDir {
    /// The directory in the state dir `state_dir`.
    pub(crate) fn in_state(state_dir: &Path) -> LinkDir {
        LinkDir {
            state: state_dir.to_path_buf(),
            path: state_dir.join(LINK_DIR),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory, opened without following a link; it must be the
    /// executor's own with no group or other access. `None`: absent (and
    /// not asked to create it), or, when only looking (`!create`), not
    /// root's directory: root's links can only be in one of root's, so a
    /// link, file or directory the owner put at that name holds nothing to
    /// remove or count (hostile read of the loop links, finding 1: it
    /// stopped every teardown at the first link).
    fn open(&self, create: bool) -> io::Result<Option<OwnedFd>> {
        let state = match rustix::fs::open(
            &self.state,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // No state dir: no link of root's in it either.
            Err(rustix::io::Errno::NOENT) if !create => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if create {
            match rustix::fs::mkdirat(&state, LINK_DIR, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // No symlink, no mount (a FUSE mount the owner made there).
        let fd = match rustix::fs::openat2(
            &state,
            LINK_DIR,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            banger_vmm::dir::RESOLVE,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) if !create => return Ok(None),
            Err(
                e @ (rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR | rustix::io::Errno::XDEV),
            ) if !create => {
                tracing::warn!(path = %self.path.display(), error = %e, "not root's link directory; nothing of root's in it");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        let me = rustix::process::geteuid().as_raw();
        if st.st_uid != me || st.st_mode & 0o077 != 0 {
            if !create {
                tracing::warn!(
                    path = %self.path.display(),
                    uid = st.st_uid,
                    mode = format!("{:04o}", st.st_mode & 0o7777),
                    "not root's link directory; nothing of root's in it"
                );
                return Ok(None);
            }
            return Err(io::Error::other(format!(
                "{} is not the executor's own 0700 directory (uid {}, mode {:04o})",
                self.path.display(),
                st.st_uid,
                st.st_mode & 0o7777
            )));
        }
        Ok(Some(fd))
    }

    /// Link the inode `file` holds as `name`, and open that link with
    /// `flags` (the descriptor to attach). The link must be the held
    /// inode; a leftover of the same name is replaced.
    pub(crate) fn link(&self, file: &File, name: &str, flags: OFlags) -> io::Result<File> {
        let dir = self
            .open(true)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        unlink(&dir, name)?;
        let want = super::loopdev::identity(file)?;
        // The calling thread's table (`thread-self`), should a thread ever
        // unshare it.
        let held = format!("/proc/thread-self/fd/{}", file.as_raw_fd());
        rustix::fs::linkat(
            rustix::fs::CWD,
            held.as_str(),
            &dir,
            name,
            AtFlags::SYMLINK_FOLLOW,
        )?;
        let opened = rustix::fs::openat(
            &dir,
            name,
            flags | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from);
        let same = match &opened {
            Ok(f) => super::loopdev::identity(f).map(|id| id == want),
            Err(_) => Ok(false),
        };
        match (opened, same) {
            (Ok(f), Ok(true)) => Ok(f),
            (other, same) => {
                unlink(&dir, name)?;
                other?;
                same?;
                Err(io::Error::other(format!(
                    "{} is not the inode linked (dev {:#x} inode {})",
                    self.path.join(name).display(),
                    want.dev,
                    want.ino
                )))
            }
        }
    }

    /// Remove `name`; already gone (or no directory) is fine.
    pub(crate) fn remove(&self, name: &str) -> io::Result<()> {
        match self.open(false)? {
            Some(dir) => unlink(&dir, name),
            None => Ok(()),
        }
    }

    /// Remove every link whose VM is not in `keep`.
    pub(crate) fn sweep(&self, keep: &[&str]) -> io::Result<Vec<String>> {
        let Some(dir) = self.open(false)? else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for name in names(&dir)? {
            let vm = name.split('.').next().unwrap_or("");
            if !keep.contains(&vm) {
                unlink(&dir, &name)?;
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// How many of root's names are links to `id`: the links a file's
    /// link count has beyond the owner's.
    pub(crate) fn count(&self, id: Backing) -> io::Result<u64> {
        let Some(dir) = self.open(false)? else {
            return Ok(0);
        };
        let mut n = 0;
        for name in names(&dir)? {
            match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st)
                    if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                        && Backing::of_dev(st.st_dev) == id.dev
                        && st.st_ino == id.ino =>
                {
                    n += 1
                }
                Ok(_) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }
}

/// The names in the directory `dir` (by its descriptor).
fn names(dir: &OwnedFd) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            out.push(name);
        }
    }
    Ok(out)
}

fn unlink(dir: &OwnedFd, name: &str) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
