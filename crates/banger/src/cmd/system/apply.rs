//! Checking and writing the plan, with a record of every change so a failed
//! install can be undone.
//!
//! [`preflight`] looks at every path before anything is written and refuses
//! — never repairs — what is unsafe: symlinks, non-directories, layout
//! directories owned by someone else or writable by group/others, and
//! parent directories a non-root user could redirect. [`Txn`] then writes:
//! new directories and files are recorded, a replaced file keeps a hard-link
//! backup until [`Txn::commit`], and [`Txn::rollback`] undoes everything this
//! run did, newest first.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};

use super::plan::{Content, DirSpec, FileSpec, Plan};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{what} {} is a symlink; banger needs a real {kind} there (remove the link)", path.display())]
    Symlink {
        what: &'static str,
        kind: &'static str,
        path: PathBuf,
    },
    #[error("{what} {} exists but is not a {kind}", path.display())]
    WrongType {
        what: &'static str,
        kind: &'static str,
        path: PathBuf,
    },
    #[error(
        "{what} {} is owned by uid {found}, expected uid {expected}; fix its ownership or move it away",
        path.display()
    )]
    WrongOwner {
        what: &'static str,
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "{what} {} has mode {mode:04o}, writable by group or others; run `chmod go-w {}`",
        path.display(), path.display()
    )]
    TooOpen {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error(
        "{} (a parent of {}) must be a root-owned directory not writable by group or others: {reason}",
        path.display(), child.display()
    )]
    UnsafeParent {
        path: PathBuf,
        child: PathBuf,
        reason: String,
    },
    #[error("inspecting {}", path.display())]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "directory {} is not the one just made (owner uid {uid}, {entries} entries); something replaced it, refusing to change it",
        path.display()
    )]
    Replaced {
        path: PathBuf,
        uid: u32,
        entries: usize,
    },
    #[error("writing {}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading {}", path.display())]
    ReadSource {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `target` (a system path) under `root`.
pub fn on_disk(root: &Path, target: &Path) -> PathBuf {
    let rel: PathBuf = target
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    root.join(rel)
}

fn inspect(path: &Path) -> Result<Option<fs::Metadata>, ApplyError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ApplyError::Inspect {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Every existing directory between `root` (exclusive) and `path`
/// (exclusive) must belong to the installer (root) and not be writable by
/// group or others, so that nobody else can swap what the install writes
/// into. Symlinks among them are followed (a root-owned `/var/lib` link to a
/// data disk is fine).
fn check_parents(root: &Path, path: &Path, installer: u32) -> Result<(), ApplyError> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        cur.push(c);
        let meta = match fs::metadata(&cur) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(ApplyError::Inspect { path: cur, source }),
        };
        let unsafe_parent = |reason: String| ApplyError::UnsafeParent {
            path: cur.clone(),
            child: path.to_path_buf(),
            reason,
        };
        if !meta.is_dir() {
            return Err(unsafe_parent("it is not a directory".into()));
        }
        if meta.uid() != installer {
            return Err(unsafe_parent(format!("it is owned by uid {}", meta.uid())));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(unsafe_parent(format!(
                "it has mode {:04o}",
                meta.mode() & 0o7777
            )));
        }
    }
    Ok(())
}

/// A directory the install reached once through a descriptor it checked
/// (the state directory, which its owner may mount over) and looks at only
/// through that descriptor afterwards, never by its path.
#[derive(Debug, Clone, Copy)]
pub struct Pinned<'a> {
    pub path: &'a Path,
    pub fd: BorrowedFd<'a>,
}

/// `pinned`'s descriptor when it is the directory at `path`.
fn pinned_at<'a>(pinned: Option<Pinned<'a>>, path: &Path) -> Option<BorrowedFd<'a>> {
    pinned.filter(|p| p.path == path).map(|p| p.fd)
}

/// Type, owner and permission bits, from `fstat`.
fn fstat_of(fd: BorrowedFd<'_>, path: &Path) -> Result<(FileType, u32, u32), ApplyError> {
    let st = rustix::fs::fstat(fd).map_err(|e| ApplyError::Inspect {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    Ok((
        FileType::from_raw_mode(st.st_mode),
        st.st_uid,
        st.st_mode & 0o7777,
    ))
}

fn check_dir(
    root: &Path,
    spec: &DirSpec,
    installer: u32,
    pinned: Option<Pinned<'_>>,
) -> Result<(), ApplyError> {
    let path = on_disk(root, &spec.target);
    check_parents(root, &path, installer)?;
    let (kind, uid, mode) = match pinned_at(pinned, &path) {
        Some(fd) => fstat_of(fd, &path)?,
        None => match inspect(&path)? {
            Some(m) => (
                FileType::from_raw_mode(m.mode()),
                m.uid(),
                m.mode() & 0o7777,
            ),
            None => return Ok(()),
        },
    };
    let what = spec.what;
    if kind == FileType::Symlink {
        return Err(ApplyError::Symlink {
            what,
            kind: "directory",
            path,
        });
    }
    if kind != FileType::Directory {
        return Err(ApplyError::WrongType {
            what,
            kind: "directory",
            path,
        });
    }
    if uid != spec.uid {
        return Err(ApplyError::WrongOwner {
            what,
            path,
            found: uid,
            expected: spec.uid,
        });
    }
    if mode & 0o022 != 0 {
        return Err(ApplyError::TooOpen { what, path, mode });
    }
    Ok(())
}

fn check_file(root: &Path, spec: &FileSpec, installer: u32) -> Result<(), ApplyError> {
    let path = on_disk(root, &spec.target);
    check_parents(root, &path, installer)?;
    let Some(meta) = inspect(&path)? else {
        return Ok(());
    };
    if meta.file_type().is_symlink() {
        return Err(ApplyError::Symlink {
            what: spec.what,
            kind: "file",
            path,
        });
    }
    if !meta.is_file() {
        return Err(ApplyError::WrongType {
            what: spec.what,
            kind: "file",
            path,
        });
    }
    Ok(())
}

/// Check every path of `plan` under `root` without changing anything,
/// `pinned`'s directory through its descriptor. `installer` is the uid
/// running the install (root outside unit tests).
pub fn preflight(
    root: &Path,
    plan: &Plan,
    installer: u32,
    pinned: Option<Pinned<'_>>,
) -> Result<(), ApplyError> {
    for d in &plan.dirs {
        check_dir(root, d, installer, pinned)?;
    }
    for f in &plan.files {
        check_file(root, f, installer)?;
    }
    Ok(())
}

/// What happened to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Unchanged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
        }
    }
}

/// One path the install made sure of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Where it is on disk (under `--root`).
    pub path: PathBuf,
    /// The system path it stands for.
    pub target: PathBuf,
    pub kind: &'static str,
    pub what: &'static str,
    pub action: Action,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug)]
enum Undo {
    RemoveDir(PathBuf),
    RemoveFile(PathBuf),
    /// `backup` is a hard link to the file `path` held before.
    Restore {
        path: PathBuf,
        backup: PathBuf,
    },
}

/// The changes of one install run, undoable until committed.
#[derive(Debug)]
pub struct Txn {
    undo: Vec<Undo>,
    /// Owner of missing parent directories it creates: root, except in
    /// tests that run unprivileged.
    parent_owner: (u32, u32),
}

/// `dir/.name.suffix`, beside `path`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.{suffix}"))
}

/// Remove a leftover of an interrupted run (never a directory).
fn remove_leftover(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is in the way (a directory)", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether the file at `path` holds exactly `content`.
fn same_content(path: &Path, content: &Content) -> Result<bool, ApplyError> {
    let read_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ApplyError::ReadSource { path: p, source }
    };
    let mut current = File::open(path).map_err(read_err(path))?;
    match content {
        Content::Bytes(bytes) => {
            let mut have = Vec::with_capacity(bytes.len());
            current.read_to_end(&mut have).map_err(read_err(path))?;
            Ok(have == *bytes)
        }
        Content::CopyOf(src) => {
            let mut source = File::open(src).map_err(read_err(src))?;
            let (a, b) = (
                current.metadata().map_err(read_err(path))?,
                source.metadata().map_err(read_err(src))?,
            );
            if a.len() != b.len() {
                return Ok(false);
            }
            let mut x = vec![0u8; 1 << 16];
            let mut y = vec![0u8; 1 << 16];
            loop {
                let n = current.read(&mut x).map_err(read_err(path))?;
                if n == 0 {
                    return Ok(true);
                }
                source.read_exact(&mut y[..n]).map_err(read_err(src))?;
                if x[..n] != y[..n] {
                    return Ok(false);
                }
            }
        }
    }
}

impl Default for Txn {
    fn default() -> Txn {
        Txn::new()
    }
}

impl Txn {
    pub fn new() -> Txn {
        Txn::with_parent_owner(0, 0)
    }

    pub fn with_parent_owner(uid: u32, gid: u32) -> Txn {
        Txn {
            undo: Vec::new(),
            parent_owner: (uid, gid),
        }
    }

    /// Make sure directory `path` exists; create it (and missing parents,
    /// root 0755) if not. An existing one is left as is (preflight checked it).
    pub fn ensure_dir(&mut self, path: &Path, spec: &DirSpec) -> Result<Action, ApplyError> {
        self.ensure_dir_at(path, spec, None)
            .map(|(action, _)| action)
    }

    /// [`Txn::ensure_dir`], returning a descriptor of the directory: the
    /// one in `pinned` when it is `path` (existing, and never looked up by
    /// its path again), or the one [`make_dir`] made and changed.
    pub fn ensure_dir_at(
        &mut self,
        path: &Path,
        spec: &DirSpec,
        pinned: Option<Pinned<'_>>,
    ) -> Result<(Action, OwnedFd), ApplyError> {
        let inspect_err = |source: rustix::io::Errno| ApplyError::Inspect {
            path: path.to_path_buf(),
            source: source.into(),
        };
        if let Some(fd) = pinned_at(pinned, path) {
            let fd = rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(inspect_err)?;
            return Ok((Action::Unchanged, fd));
        }
        if inspect(path)?.is_some() {
            let fd = rustix::fs::open(
                path,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(inspect_err)?;
            return Ok((Action::Unchanged, fd));
        }
        if let Some(parent) = path.parent()
            && inspect(parent)?.is_none()
        {
            let parent_spec = DirSpec {
                what: "directory",
                target: parent.to_path_buf(),
                mode: 0o755,
                uid: self.parent_owner.0,
                gid: self.parent_owner.1,
            };
            self.ensure_dir(parent, &parent_spec)?;
        }
        let fd = self.make_dir(path, spec)?;
        Ok((Action::Created, fd))
    }

    /// Make directory `path` with `mkdirat` beneath a descriptor of its
    /// parent, open what is then at its name without following a link,
    /// check it is the directory just made (this process's, no entry in
    /// it; not by link count, which is 1 on btrfs), and
    /// only then give it its mode and owner, through that descriptor: a
    /// directory renamed into its place in between is refused, never
    /// changed.
    fn make_dir(&mut self, path: &Path, spec: &DirSpec) -> Result<OwnedFd, ApplyError> {
        let err = |source: rustix::io::Errno| ApplyError::CreateDir {
            path: path.to_path_buf(),
            source: source.into(),
        };
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(err(rustix::io::Errno::INVAL));
        };
        let parent = rustix::fs::open(
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(spec.mode)).map_err(err)?;
        self.undo.push(Undo::RemoveDir(path.to_path_buf()));
        let fd = rustix::fs::openat(
            &parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        let st = rustix::fs::fstat(&fd).map_err(err)?;
        let entries = dir_entries(&fd).map_err(err)?;
        check_fresh(path, &st, rustix::process::geteuid().as_raw(), entries)?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(spec.mode)).map_err(err)?;
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(spec.uid)),
            Some(rustix::fs::Gid::from_raw(spec.gid)),
        )
        .map_err(err)?;
        Ok(fd)
    }

    /// Make sure `path` is a file with `content`, `mode` and `owner`. The
    /// new content goes to a temporary file beside it and is renamed into
    /// place, so a reader (or a running binary) never sees half a file.
    pub fn put_file(
        &mut self,
        path: &Path,
        content: &Content,
        mode: u32,
        owner: (u32, u32),
    ) -> Result<Action, ApplyError> {
        let existing = inspect(path)?;
        if let Some(m) = &existing
            && m.is_file()
            && m.mode() & 0o7777 == mode
            && (m.uid(), m.gid()) == owner
            && same_content(path, content)?
        {
            return Ok(Action::Unchanged);
        }
        let err = |source| ApplyError::WriteFile {
            path: path.to_path_buf(),
            source,
        };
        let tmp = sibling(path, "banger-new");
        remove_leftover(&tmp).map_err(err)?;
        let written = write_new(&tmp, content, mode, owner);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // Written before in this run: the first undo entry already restores
        // the original, so no second backup.
        let covered = self.undo.iter().any(|u| match u {
            Undo::RemoveFile(p) | Undo::Restore { path: p, .. } => p == path,
            Undo::RemoveDir(_) => false,
        });
        let backup = if existing.is_some() && !covered {
            let backup = sibling(path, "banger-old");
            let linked = remove_leftover(&backup).and_then(|()| fs::hard_link(path, &backup));
            if let Err(e) = linked {
                let _ = fs::remove_file(&tmp);
                return Err(err(e));
            }
            Some(backup)
        } else {
            None
        };
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            if let Some(b) = &backup {
                let _ = fs::remove_file(b);
            }
            return Err(err(e));
        }
        Ok(match backup {
            _ if covered => Action::Updated,
            Some(backup) => {
                self.undo.push(Undo::Restore {
                    path: path.to_path_buf(),
                    backup,
                });
                Action::Updated
            }
            None => {
                self.undo.push(Undo::RemoveFile(path.to_path_buf()));
                Action::Created
            }
        })
    }

    /// Whether this run changed anything.
    pub fn changed(&self) -> bool {
        !self.undo.is_empty()
    }

    /// Undo every change, newest first. Every step is attempted; the
    /// failures are returned (empty: fully rolled back).
    pub fn rollback(self) -> Vec<String> {
        let mut errors = Vec::new();
        for u in self.undo.into_iter().rev() {
            let (what, result) = match &u {
                Undo::RemoveFile(p) => (p, fs::remove_file(p)),
                Undo::RemoveDir(p) => (p, fs::remove_dir(p)),
                Undo::Restore { path, backup } => (path, fs::rename(backup, path)),
            };
            match result {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("undoing {}: {e}", what.display())),
            }
        }
        errors
    }

    /// Keep the changes: drop the backups. Failures to remove a backup are
    /// returned as warnings; the install itself stands.
    pub fn commit(self) -> Vec<String> {
        self.undo
            .into_iter()
            .filter_map(|u| match u {
                Undo::Restore { backup, .. } => fs::remove_file(&backup)
                    .err()
                    .map(|e| format!("removing backup {}: {e}", backup.display())),
                _ => None,
            })
            .collect()
    }
}

/// Write `content` to a new file `tmp` with `mode` and `owner`, synced.
fn write_new(
    tmp: &Path,
    content: &Content,
    mode: u32,
    owner: (u32, u32),
) -> Result<(), ApplyError> {
    let err = |source| ApplyError::WriteFile {
        path: tmp.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(err)?;
    match content {
        Content::Bytes(b) => f.write_all(b).map_err(err)?,
        Content::CopyOf(src) => {
            let mut s = File::open(src).map_err(|source| ApplyError::ReadSource {
                path: src.clone(),
                source,
            })?;
            io::copy(&mut s, &mut f).map_err(err)?;
        }
    }
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(err)?;
    std::os::unix::fs::fchown(&f, Some(owner.0), Some(owner.1)).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Whether the directory `make_dir` opened at `path` is still the one it
/// made: `me`'s, holding no entry. The link count says nothing here: btrfs
/// gives every directory one link, other filesystems two.
fn check_fresh(
    path: &Path,
    st: &rustix::fs::Stat,
    me: u32,
    entries: usize,
) -> Result<(), ApplyError> {
    if st.st_uid != me || entries != 0 {
        return Err(ApplyError::Replaced {
            path: path.to_path_buf(),
            uid: st.st_uid,
            entries,
        });
    }
    Ok(())
}

/// How many entries directory `fd` holds besides `.` and `..`.
fn dir_entries(fd: &OwnedFd) -> Result<usize, rustix::io::Errno> {
    let mut dir = rustix::fs::Dir::read_from(fd)?;
    let mut n = 0;
    while let Some(entry) = dir.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
