//! Root's work inside a directory another uid can write.
//!
//! A VM's directory (`vms/<id>/`) and its `run/` belong to the VM's owner,
//! who can rename, replace, symlink or hard-link anything in them at any
//! moment. So root never acts there on a path: it holds a descriptor of
//! the directory ([`OwnerDir`], opened without following any symlink, or
//! handed over by the executor, which made it) and works relative to it —
//! `openat` with `O_NOFOLLOW`, new files made unnamed (`O_TMPFILE`) and
//! linked in only once handed over and given their mode (`linkat` refuses
//! an existing name), `fchown` only on a descriptor of a file it just
//! created, existing files
//! checked by `fstat` (a regular file of the expected uid with one link),
//! sockets connected through a descriptor of the socket inode and checked
//! by `SO_PEERCRED`, names removed with `unlinkat`. Every name is looked
//! up with `openat2` and [`RESOLVE`]: no symlink, no `..` out of the
//! directory (one that stays beneath it resolves: callers pass plain
//! names or validated ids), and no mount
//! point crossed (a mount planted there — a FUSE mount of the owner's —
//! is neither walked into nor allowed to stall root). A tree is removed
//! with the owner's file-system ids ([`with_fs_ids`]), so root takes away
//! only what the owner could. The path is kept for messages and for the
//! arguments a VMM (running as the owner) gets.
//!
//! Removing a name in such a directory takes nothing from anyone whatever
//! the name holds at that instant (even a hard link to a file of root's:
//! its other links, bytes, owner and mode stay), so a stale file or socket
//! is removed by `unlinkat` after a check that only serves clear errors;
//! what root then uses is what it created with `O_EXCL`.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags};

use crate::VmmError;

mod tree;
use tree::{Walk, empty_at, left_in, remove_tree_at};

/// How every name is looked up beneath a directory another uid can
/// write: never through a symlink, never out of it (`..`), never across a
/// mount point.
pub const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Names read from a directory per round of [`remove_tree_at`].
const REMOVE_BATCH: usize = 1024;

/// Entries one [`OwnerDir::remove_tree`] removes at most.
pub const REMOVE_MAX: usize = 1 << 20;

/// How deep [`OwnerDir::remove_tree`] goes: a directory deeper than this
/// is moved up to the top of the tree (under a fresh name, [`hoist`]) and
/// taken from there in a later round, so the thread's stack and the
/// names it holds stay bounded whatever the depth.
const MAX_TREE_DEPTH: usize = 16;

/// The name a too-deep directory is moved up to the top under: this
/// prefix and a count (the first one free, `RENAME_NOREPLACE`).
const HOISTED: &str = ".banger-deep-";

/// Who must be listening on a socket root connects to: the VMM process
/// (its pid, as `SO_PEERCRED` reports the listener) running as `uid`, which
/// also owns the socket file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: u32,
}

/// A directory another uid can write, as root holds it: a descriptor,
/// never its path re-resolved.
#[derive(Debug)]
pub struct OwnerDir {
    fd: OwnedFd,
    /// For messages and VMM arguments only; never opened by root.
    path: PathBuf,
}

impl OwnerDir {
    /// Open `path` with `openat2(RESOLVE_NO_SYMLINKS)`: no component may be
    /// a symlink. `what` names the directory in the error. For callers that
    /// did not make the directory themselves (the executor hands over the
    /// descriptor of the one it made: [`OwnerDir::from_fd`]).
    pub fn open(path: &Path, what: &str) -> Result<OwnerDir, VmmError> {
        let fd = rustix::fs::openat2(
            rustix::fs::CWD,
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS,
        )
        .map_err(|e| VmmError::Io {
            what: format!(
                "opening the {what} {} (no symlink is followed on the way)",
                path.display()
            ),
            source: e.into(),
        })?;
        Ok(OwnerDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The caller's descriptor of the directory at `path`.
    pub fn from_fd(fd: OwnedFd, path: PathBuf) -> OwnerDir {
        OwnerDir { fd, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path/name`, for messages and VMM arguments.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A second descriptor of the same directory (`dup`): the same
    /// directory whatever happens to its name meanwhile.
    pub fn try_clone(&self) -> Result<OwnerDir, VmmError> {
        let fd = self.fd.try_clone().map_err(|source| VmmError::Io {
            what: format!("duplicating the descriptor of {}", self.path.display()),
            source,
        })?;
        Ok(OwnerDir {
            fd,
            path: self.path.clone(),
        })
    }

    /// `name` in this directory, looked up with [`RESOLVE`]; `O_CLOEXEC`
    /// is added. `mode` only with `O_CREAT` (openat2 refuses it otherwise).
    fn at(&self, name: &str, flags: OFlags, mode: Mode) -> rustix::io::Result<OwnedFd> {
        rustix::fs::openat2(&self.fd, name, flags | OFlags::CLOEXEC, mode, RESOLVE)
    }

    /// What `name` is, without following a symlink and without crossing
    /// into a mount the owner put there (a `statat` would ask the mounted
    /// filesystem — a FUSE daemon of the owner's that never answers): an
    /// `O_PATH` descriptor under [`RESOLVE`], then `fstat`.
    pub fn lstat(&self, name: &str) -> rustix::io::Result<rustix::fs::Stat> {
        let node = self.at(name, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())?;
        rustix::fs::fstat(&node)
    }

    fn io(&self, what: &str, name: &str, e: impl Into<std::io::Error>) -> VmmError {
        VmmError::Io {
            what: format!("{what} {}", self.join(name).display()),
            source: e.into(),
        }
    }

    fn refused(&self, name: &str, reason: String) -> VmmError {
        VmmError::Refused {
            path: self.join(name).display().to_string(),
            reason,
        }
    }

    /// Create `name` as a new file, read-write, with exactly `mode`, and
    /// hand it to `owner` (`None`: it stays this process's). It is a new
    /// inode (`O_TMPFILE`, or `O_EXCL` where the file system has no
    /// unnamed files), so the `fchown` on its descriptor can only give
    /// away the file this call made; an existing name, even a dangling
    /// symlink, fails ("appeared while it was being created"). The
    /// descriptor returned is one of the name (a tool jail can bind it),
    /// opened only while the name holds the inode made.
    pub fn create(
        &self,
        name: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<File, VmmError> {
        // Made unnamed (`O_TMPFILE`) with no permission bits, handed to
        // `owner`, given `mode`, and only then linked in under `name`:
        // nobody sees it by name before it is whole. Made by name it was
        // root's with a permission bit before its `fchown` (final review
        // of issue #13, M1: the owner renamed such a file into another
        // VM's `root.cow`, which the dm backend took for root's own), and
        // even made with none a `stat` racing the `fchown` and `fchmod`
        // could read the old uid with the new mode (the kernel reads the
        // two unlocked; the cold CI of 1e601c8 saw it once).
        check_component(name).map_err(|reason| self.refused(name, reason))?;
        let fd = match self.at(".", OFlags::TMPFILE | OFlags::RDWR, Mode::empty()) {
            Ok(fd) => fd,
            // A file system without unnamed files: made by name, with no
            // permission bits until it is handed over.
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR) => {
                return self.create_named(name, mode, owner);
            }
            Err(e) => return Err(self.io("creating an unnamed file for", name, e)),
        };
        self.finish(&fd, name, mode, owner)?;
        let held = proc_fd_path(fd.as_fd());
        rustix::fs::linkat(
            rustix::fs::CWD,
            held.as_str(),
            &self.fd,
            name,
            AtFlags::SYMLINK_FOLLOW,
        )
        .map_err(|e| match e {
            rustix::io::Errno::EXIST => {
                self.refused(name, "appeared while it was being created".into())
            }
            e => self.io("linking in", name, e),
        })?;
        // The descriptor returned is one of the name, not of the unnamed
        // file: a bind mount (a jailed tool's `/disk`) cannot be made from
        // a file opened unnamed (`ENOENT`). It is that name's only while
        // the name still holds this very inode.
        let named = self
            .at(name, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())
            .map_err(|e| self.io("opening what was linked in as", name, e))?;
        let (made, found) = (
            rustix::fs::fstat(&fd).map_err(|e| self.io("inspecting", name, e))?,
            rustix::fs::fstat(&named).map_err(|e| self.io("inspecting", name, e))?,
        );
        if (made.st_dev, made.st_ino) != (found.st_dev, found.st_ino) {
            return Err(self.refused(name, "replaced while it was being created".into()));
        }
        let file = reopen(named.as_fd(), OFlags::RDWR)
            .map(File::from)
            .map_err(|e| self.io("reopening", name, e));
        // Only now: while `fd` is open the inode it made cannot be freed,
        // so its number cannot be reused by another file the owner plants
        // (the check above would then pass for that file).
        drop(fd);
        file
    }

    /// [`OwnerDir::create`] by name: `O_EXCL`, no permission bits until
    /// [`OwnerDir::finish`].
    fn create_named(
        &self,
        name: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<File, VmmError> {
        let fd = self
            .at(
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::RDWR,
                Mode::empty(),
            )
            .map_err(|e| match e {
                rustix::io::Errno::EXIST => {
                    self.refused(name, "appeared while it was being created".into())
                }
                e => self.io("creating", name, e),
            })?;
        self.finish(&fd, name, mode, owner)?;
        Ok(File::from(fd))
    }

    /// Hand the new file `fd` to `owner` (if any), then give it exactly
    /// `mode`, whatever the umask.
    fn finish(
        &self,
        fd: &OwnedFd,
        name: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), VmmError> {
        if let Some((uid, gid)) = owner {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .map_err(|e| self.io(&format!("handing to uid {uid}"), name, e))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
            .map_err(|e| self.io("setting the mode of", name, e))
    }

    /// [`OwnerDir::create`], after removing what an earlier run left at
    /// `name`: only a regular file of `owner`'s (this process's if `None`)
    /// with one link — what `create` made then. Anything else there is
    /// refused, untouched.
    pub fn recreate(
        &self,
        name: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<File, VmmError> {
        match self.lstat(name) {
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(self.io("inspecting", name, e)),
            Ok(st) => {
                sole_file_of(&st, expected_uid(owner)).map_err(|r| self.refused(name, r))?;
                match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(self.io("removing the stale", name, e)),
                }
            }
        }
        self.create(name, mode, owner)
    }

    /// Open `name` for appending (and reading, for error tails), creating
    /// it as [`OwnerDir::create`] does when it is missing. An existing file
    /// must be a regular file of `owner`'s (this process's if `None`) with
    /// one link; it is looked at through an `O_PATH` descriptor and only
    /// that inode is then opened for writing (so a FIFO or device planted
    /// there is never opened, and a swap after the check changes nothing).
    pub fn open_append(
        &self,
        name: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<File, VmmError> {
        let node = match self.at(name, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) => {
                let f = self.create(name, mode, owner)?;
                rustix::fs::fcntl_setfl(&f, OFlags::APPEND)
                    .map_err(|e| self.io("appending to", name, e))?;
                return Ok(f);
            }
            Err(e) => return Err(self.io("opening", name, e)),
            Ok(node) => node,
        };
        let st = rustix::fs::fstat(&node).map_err(|e| self.io("inspecting", name, e))?;
        sole_file_of(&st, expected_uid(owner)).map_err(|r| self.refused(name, r))?;
        // The inode just checked, reopened through its descriptor.
        let fd = reopen(node.as_fd(), OFlags::RDWR | OFlags::APPEND)
            .map_err(|e| self.io("opening", name, e))?;
        Ok(File::from(fd))
    }

    /// Open the existing file `name` for reading only: it must be a
    /// regular file of `owner`'s (this process's if `None`) with one link,
    /// checked through an `O_PATH` descriptor whose inode alone is then
    /// opened (never a FIFO or device planted there, never a name looked
    /// up again). Nothing is created.
    pub fn open_read(&self, name: &str, owner: Option<(u32, u32)>) -> Result<File, VmmError> {
        let node = self
            .at(name, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())
            .map_err(|e| self.io("opening", name, e))?;
        let st = rustix::fs::fstat(&node).map_err(|e| self.io("inspecting", name, e))?;
        sole_file_of(&st, expected_uid(owner)).map_err(|r| self.refused(name, r))?;
        let fd = reopen(node.as_fd(), OFlags::RDONLY).map_err(|e| self.io("opening", name, e))?;
        Ok(File::from(fd))
    }

    /// Remove a leftover socket `name` (a VMM refuses to start when its
    /// socket exists). Missing is fine; anything but a socket is refused.
    pub fn remove_stale_socket(&self, name: &str) -> Result<(), VmmError> {
        match self.lstat(name) {
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(self.io("inspecting", name, e)),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Socket => {
                match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                    Err(e) => Err(self.io("removing the stale socket", name, e)),
                }
            }
            Ok(_) => Err(self.refused(name, "exists and is not a socket".into())),
        }
    }

    /// Connect to the socket `name`, listened on by `peer`. The socket file
    /// is opened `O_PATH|O_NOFOLLOW` (a symlink there is refused, never
    /// followed) and must belong to `peer.uid`; the connection goes to that
    /// very inode through its descriptor's /proc link, and the listener
    /// must be `peer.pid` (`SO_PEERCRED`), or the connection is dropped
    /// before a byte is sent. The stream is non-blocking.
    pub fn connect(&self, name: &str, peer: Peer) -> std::io::Result<UnixStream> {
        let refused = |what: String| {
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{}: {what}; refusing to connect", self.join(name).display()),
            )
        };
        let node = self.at(name, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())?;
        let st = rustix::fs::fstat(&node)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
            return Err(refused(format!(
                "a {:?}, not a socket",
                FileType::from_raw_mode(st.st_mode)
            )));
        }
        if st.st_uid != peer.uid {
            return Err(refused(format!(
                "owned by uid {}, not the VMM's uid {}",
                st.st_uid, peer.uid
            )));
        }
        let stream = connect_inode(node.as_fd())?;
        let cred = banger_host::peer::peer_cred(&stream)?;
        if (cred.pid, cred.uid) != (peer.pid, peer.uid) {
            return Err(refused(format!(
                "served by pid {} (uid {}), not the VMM's pid {} (uid {})",
                cred.pid, cred.uid, peer.pid, peer.uid
            )));
        }
        Ok(stream)
    }

    /// Remove the directory `name` and everything in it (anything else at
    /// `name`: that entry), with the file-system ids `ids` (the owner's;
    /// `None`: this process's) on a thread of its own, so root removes
    /// only what the owner could. Every step is relative to a descriptor
    /// reached with [`RESOLVE`]: a symlink is removed, never followed; a
    /// mount point is never entered (it stays, and the removal fails with
    /// `EXDEV`). Names are the raw bytes the directory holds (UTF-8 or
    /// not). A directory more than [`MAX_TREE_DEPTH`] levels down is
    /// moved up into the tree's top directory under a fresh name and
    /// removed from there. Entries are tried until a round of them
    /// removes (or moves up) none; the first error is returned. At most
    /// [`REMOVE_MAX`] entries (each removal, each move up, each try of a
    /// fresh name) go in one call: past that the tree is too big or the
    /// owner is refilling it as fast as it empties, and the call fails
    /// rather than spin, naming the directory and what is left in it.
    /// Missing is fine.
    pub fn remove_tree(&self, name: &str, ids: Option<(u32, u32)>) -> std::io::Result<()> {
        self.remove_tree_upto(name, ids, REMOVE_MAX)
    }

    /// Remove everything in this directory (which stays) as
    /// [`OwnerDir::remove_tree`] removes a tree, with the file-system ids
    /// `ids`: a directory too deep is moved up into this one.
    pub fn empty(&self, ids: Option<(u32, u32)>) -> std::io::Result<()> {
        self.empty_upto(ids, REMOVE_MAX)
    }

    /// [`OwnerDir::empty`], removing at most `max` entries.
    fn empty_upto(&self, ids: Option<(u32, u32)>, max: usize) -> std::io::Result<()> {
        let dir = self.fd.as_fd();
        with_fs_ids(ids, "empty-dir", || {
            self.within_budget(None, max, |w| empty_at(dir, 0, dir, w))
        })
    }

    /// [`OwnerDir::remove_tree`], removing at most `max` entries.
    fn remove_tree_upto(
        &self,
        name: &str,
        ids: Option<(u32, u32)>,
        max: usize,
    ) -> std::io::Result<()> {
        let dir = self.fd.as_fd();
        with_fs_ids(ids, "remove-tree", || {
            self.within_budget(Some(name), max, |w| remove_tree_at(dir, name, 0, None, w))
        })
    }

    /// Run a removal of `name` (`None`: of what is in this directory)
    /// allowed `max` entries; when they run out, fail naming the
    /// directory and what is left in it.
    fn within_budget(
        &self,
        name: Option<&str>,
        max: usize,
        remove: impl FnOnce(&mut Walk) -> rustix::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut walk = Walk {
            left: max,
            hoisted: 0,
            tried: 0,
        };
        match remove(&mut walk) {
            Err(rustix::io::Errno::AGAIN) if walk.left == 0 => {
                let (path, left) = match name {
                    Some(n) => (self.join(n), left_in(self.fd.as_fd(), n)),
                    None => (self.path.clone(), left_in(self.fd.as_fd(), c".")),
                };
                Err(std::io::Error::other(format!(
                    "{} is too big or keeps filling up: gave up after {max} entries \
                     (removals and moves), {left}",
                    path.display()
                )))
            }
            r => r.map_err(Into::into),
        }
    }
}

/// Run `f` on a thread of its own whose file-system ids are `ids` (`None`:
/// this process's) and which has no supplementary groups, so `f` can do to
/// files exactly what that uid:gid could (a non-zero fsuid also drops
/// root's file capabilities for the thread). Only that thread changes;
/// `name` names it.
pub fn with_fs_ids<T: Send>(
    ids: Option<(u32, u32)>,
    name: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    std::thread::scope(|s| {
        let run = || {
            if let Some((uid, gid)) = ids {
                // SAFETY: the raw setgroups syscall (not glibc's wrapper,
                // which would apply it to every thread) reads no memory
                // with a count of 0 and changes only this thread's
                // credentials; setfsgid/setfsuid take plain integers and
                // change only this thread's file-system ids. The thread
                // ends after `f`. setfs*id return the previous id, so a
                // second call with the same value reports whether the
                // first took.
                let ok = unsafe {
                    libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) == 0 && {
                        libc::setfsgid(gid);
                        libc::setfsuid(uid);
                        libc::setfsgid(gid) as u32 == gid && libc::setfsuid(uid) as u32 == uid
                    }
                };
                if !ok {
                    return Err(std::io::Error::other(format!(
                        "could not take file-system ids {uid}:{gid}"
                    )));
                }
            }
            f()
        };
        std::thread::Builder::new()
            .name(name.into())
            .spawn_scoped(s, run)?
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other(format!("the {name} thread panicked"))))
    })
}

/// Open the inode behind `fd` again with `flags` (and `O_CLOEXEC`,
/// `O_NOCTTY`) through its `/proc/thread-self/fd` link: no name is
/// resolved, so it is the very inode `fd` holds (checked by the caller
/// through `fd`). The open itself is non-blocking — a lease the file's
/// owner holds on it fails the open at once (`EAGAIN`) instead of making
/// root wait out the kernel's lease-break time — and the descriptor is
/// then made blocking again unless `flags` asked otherwise.
pub fn reopen(fd: BorrowedFd<'_>, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let new = rustix::fs::open(
        proc_fd_path(fd),
        flags | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if !flags.contains(OFlags::NONBLOCK) {
        let status = rustix::fs::fcntl_getfl(&new)?;
        rustix::fs::fcntl_setfl(&new, status - OFlags::NONBLOCK)?;
    }
    Ok(new)
}

impl AsFd for OwnerDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The uid files root hands to `owner` (or keeps) end up with.
fn expected_uid(owner: Option<(u32, u32)>) -> u32 {
    owner.map_or_else(|| rustix::process::geteuid().as_raw(), |(uid, _)| uid)
}

/// A non-blocking connection to the socket inode behind the `O_PATH`
/// descriptor `node` (through its `/proc` link: never a name looked up
/// again).
pub(crate) fn connect_inode(node: BorrowedFd<'_>) -> std::io::Result<UnixStream> {
    let sock = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
        None,
    )?;
    let addr = rustix::net::SocketAddrUnix::new(proc_fd_path(node))?;
    rustix::net::connect(&sock, &addr)?;
    Ok(UnixStream::from(sock))
}

/// `/proc/thread-self/fd/<fd>`: the inode behind `fd`, whatever its name
/// is now (the calling thread's descriptor table, even if it ever stops
/// sharing the process's).
fn proc_fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/thread-self/fd/{}", fd.as_raw_fd())
}

/// What a file root reuses in a directory another uid can write must be:
/// a regular file of `uid` with one link (not a hard link to somebody
/// else's file, nor something swapped in). `Err` says what it is instead.
pub fn sole_file_of(st: &rustix::fs::Stat, uid: u32) -> Result<(), String> {
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(format!("a {kind:?}, not a regular file"));
    }
    if st.st_uid != uid {
        return Err(format!("owned by uid {}, not uid {uid}", st.st_uid));
    }
    if st.st_nlink != 1 {
        return Err(format!("{} hard links, not 1", st.st_nlink));
    }
    Ok(())
}

/// The last `n` non-empty lines of the file behind `f` (read with `pread`
/// from its last 64 KiB, whatever the file's name is now), each cut as a
/// tool's stderr line is ([`banger_host::runner::cut_line`]: the VMM, or
/// the guest, chose them), joined with " | " for a one-line error;
/// `(no output)` if there are none.
pub fn tail_lines(f: &File, n: usize) -> String {
    const WINDOW: u64 = 64 * 1024;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(WINDOW);
    let mut buf = vec![0u8; (len - start) as usize];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], start + got as u64) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    buf.truncate(got);
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<String> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .rev()
        .take(n)
        .map(banger_host::runner::cut_line)
        .collect();
    if lines.is_empty() {
        return "(no output)".into();
    }
    lines.reverse();
    lines.join(" | ")
}

/// `name` is one directory entry's name: not empty, `.` or `..`, no `/`
/// or NUL, at most 255 bytes (a name `linkat` resolves with no
/// `RESOLVE_*` flags cannot then leave the directory).
fn check_component(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 255
        || name.bytes().any(|b| b == b'/' || b == 0)
    {
        return Err(format!("{name:?} is not one directory entry's name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
