//! Removing a tree in a directory another uid can write: a budgeted
//! walk that never follows a link or crosses a mount (`OwnerDir::empty`,
//! `OwnerDir::remove_tree`).

use super::*;

/// A removal's account: what it may still do ([`REMOVE_MAX`] at the
/// start; it only ever falls, to zero), how many directories it moved up
/// to the top, how many fresh names it tried.
pub(super) struct Walk {
    pub(super) left: usize,
    pub(super) hoisted: usize,
    pub(super) tried: usize,
}

impl Walk {
    /// Charge one unit of work; `EAGAIN` once there is none left.
    pub(super) fn charge(&mut self) -> rustix::io::Result<()> {
        if self.left == 0 {
            return Err(rustix::io::Errno::AGAIN);
        }
        self.left -= 1;
        Ok(())
    }
}

/// What is left in the directory `name` beneath `dir` (reached with
/// [`RESOLVE`]), for an error: how many entries (counted up to
/// [`REMOVE_BATCH`]) and the first few names, escaped and cut.
pub(super) fn left_in<P: rustix::path::Arg>(dir: BorrowedFd<'_>, name: P) -> String {
    let listed = rustix::fs::openat2(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )
    .and_then(|fd| {
        let mut count = 0usize;
        let mut some = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd)? {
            let n = entry?.file_name().to_bytes().to_vec();
            if n == b"." || n == b".." {
                continue;
            }
            if some.len() < 3 {
                some.push(n[..n.len().min(64)].escape_ascii().to_string());
            }
            count += 1;
            if count == REMOVE_BATCH {
                break;
            }
        }
        Ok((count, some))
    });
    match listed {
        Ok((n, some)) if n == REMOVE_BATCH => {
            format!("{n} or more entries left in it (e.g. {})", some.join(", "))
        }
        Ok((n, some)) => format!("{n} entries left in it (e.g. {})", some.join(", ")),
        Err(e) => format!("what is left in it cannot be listed ({e})"),
    }
}

/// Remove `name` beneath `parent` (see [`OwnerDir::remove_tree`]),
/// `depth` levels below `top`, the tree's top directory (`None`: this is
/// the top, `name` itself), where a directory too deep is moved up.
pub(super) fn remove_tree_at<P: rustix::path::Arg + Copy>(
    parent: BorrowedFd<'_>,
    name: P,
    depth: usize,
    top: Option<BorrowedFd<'_>>,
    walk: &mut Walk,
) -> rustix::io::Result<()> {
    let gone = |r: rustix::io::Result<()>| match r {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        r => r,
    };
    if depth > MAX_TREE_DEPTH {
        // Only below a top (depth 0 is the top itself).
        let top = top.ok_or(rustix::io::Errno::LOOP)?;
        return hoist(parent, name, top, walk);
    }
    let open = || {
        rustix::fs::openat2(
            parent,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
    };
    let opened = match open() {
        // A directory its owner cannot enter (mode 000: an escaped VMM's
        // in its slot's `run/`): its owner may give itself the access
        // back, so the removal, with those file-system ids, does — once.
        Err(rustix::io::Errno::ACCESS) => {
            enter_own(parent, name)?;
            open()
        }
        r => r,
    };
    let dir = match opened {
        Ok(d) => d,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        // Not a directory (or a symlink): the entry itself goes.
        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
            return gone(rustix::fs::unlinkat(parent, name, AtFlags::empty()));
        }
        Err(e) => return Err(e),
    };
    // Entries go only with write and search on the directory: added for
    // its owner where they are missing (refused, `EPERM`, for anyone
    // else's directory: its entries then fail as they would have).
    let mode = rustix::fs::fstat(&dir)?.st_mode & 0o7777;
    if mode & 0o300 != 0o300 {
        let _ = rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode | 0o700));
    }
    empty_at(dir.as_fd(), depth, top.unwrap_or(dir.as_fd()), walk)?;
    drop(dir);
    gone(rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR))
}

/// Move the directory `name` beneath `parent`, found more than
/// [`MAX_TREE_DEPTH`] levels down, up into `top` under a fresh name
/// ([`HOISTED`] and a count; `RENAME_NOREPLACE`, so nothing there is
/// replaced), where a later round of `top`'s removal takes it. Both
/// descriptors were reached with [`RESOLVE`], so the move stays on one
/// file system, and a mount point at `name` is not moved (`EBUSY`).
/// Moving a directory to another parent needs write access to it: a
/// directory its owner locked is given its owner's bits back once, as
/// entering it would. Every try is charged to `walk`.
pub(super) fn hoist<P: rustix::path::Arg + Copy>(
    parent: BorrowedFd<'_>,
    name: P,
    top: BorrowedFd<'_>,
    walk: &mut Walk,
) -> rustix::io::Result<()> {
    let mut entered = false;
    loop {
        walk.charge()?;
        walk.tried += 1;
        let fresh = format!("{HOISTED}{}", walk.tried);
        match rustix::fs::renameat_with(parent, name, top, fresh.as_str(), RenameFlags::NOREPLACE) {
            Ok(()) => {
                walk.hoisted += 1;
                return Ok(());
            }
            Err(rustix::io::Errno::EXIST) => {}
            Err(rustix::io::Errno::ACCESS) if !entered => {
                enter_own(parent, name)?;
                entered = true;
            }
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Give the directory `name` beneath `parent` its owner's read, write and
/// search bits, through an `O_PATH` descriptor of it (reached with
/// [`RESOLVE`], never following a link): only a directory, and only as
/// its owner (the kernel refuses anyone else with `EPERM`; a caller with
/// a non-zero fsuid has no `CAP_FOWNER`).
pub(super) fn enter_own<P: rustix::path::Arg>(
    parent: BorrowedFd<'_>,
    name: P,
) -> rustix::io::Result<()> {
    let node = rustix::fs::openat2(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )?;
    let st = rustix::fs::fstat(&node)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(rustix::io::Errno::ACCESS);
    }
    let mode = Mode::from_raw_mode((st.st_mode & 0o7777) | 0o700);
    rustix::fs::chmod(proc_fd_path(node.as_fd()), mode)
}

/// Remove everything in the directory `dir` (see
/// [`OwnerDir::remove_tree`]), `depth` levels below `top` (which is `dir`
/// at depth 0). At the top, rounds go on while one moved a directory up
/// (it is here now, to be removed).
pub(super) fn empty_at(
    dir: BorrowedFd<'_>,
    depth: usize,
    top: BorrowedFd<'_>,
    walk: &mut Walk,
) -> rustix::io::Result<()> {
    let gone = |r: rustix::io::Result<()>| match r {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        r => r,
    };
    // In rounds of at most REMOVE_BATCH names, read afresh each time: the
    // owner decides how many entries there are, so they are never all held
    // at once. Names stay the raw bytes the directory holds. A round that
    // removes nothing ends it (what is left could not be removed).
    let mut first = Ok(());
    loop {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(dir)? {
            let entry = entry?;
            let n = entry.file_name();
            if n != c"." && n != c".." {
                names.push((n.to_owned(), entry.file_type()));
                if names.len() == REMOVE_BATCH {
                    break;
                }
            }
        }
        let full = names.len() == REMOVE_BATCH;
        let hoisted = walk.hoisted;
        let mut removed = 0usize;
        for (n, ty) in &names {
            // Charged before the attempt (a subdirectory's own contents
            // charge as they go): the budget only ever falls, to zero.
            walk.charge()?;
            let n = n.as_c_str();
            let r = if *ty == FileType::Directory {
                remove_tree_at(dir.as_fd(), n, depth + 1, Some(top), walk)
            } else {
                match rustix::fs::unlinkat(dir, n, AtFlags::empty()) {
                    // Unknown d_type on some filesystems: try it as a directory.
                    Err(rustix::io::Errno::ISDIR) => {
                        remove_tree_at(dir.as_fd(), n, depth + 1, Some(top), walk)
                    }
                    r => gone(r),
                }
            };
            match r {
                Ok(()) => removed += 1,
                Err(e) if first.is_ok() => first = Err(e),
                Err(_) => {}
            }
        }
        let moved_up = depth == 0 && walk.hoisted > hoisted;
        if !(full || moved_up) || removed == 0 {
            break;
        }
    }
    first
}
