//! The file systems the spawner binds from: the mounts of the state and
//! temporary directories, named at start, held open for the spawner's
//! life (docs/jail.md, "Third read of the F1 fixes").

use std::os::fd::{AsFd as _, OwnedFd};

use crate::mounts::MountKey;

/// What [`wire::check_bind_fd`] compares a bind's file or directory
/// with: the [`MountKey`] of each of the directories given that exists,
/// from an `O_PATH` descriptor (asking no file system). Mounts, not
/// `st_dev`: a btrfs subvolume or an overlay's file reports another device
/// than the mount it is on (third read of F1, finding d). The unique mount
/// id where the kernel has one (6.8+); and on every kernel the
/// descriptors are held (the helper keeps them in its [`Spawner`]), so
/// each recorded mount stays alive, unmounted or not, and no later mount
/// takes its id (hostile read of the merged spawner, L1).
#[derive(Debug)]
pub(crate) struct BindRoots {
    keys: Vec<MountKey>,
    pub(super) held: Vec<OwnedFd>,
}

impl std::ops::Deref for BindRoots {
    type Target = [MountKey];
    fn deref(&self) -> &[MountKey] {
        &self.keys
    }
}

/// The [`BindRoots`] of `dirs` (one that does not exist is left out).
pub(crate) fn bind_roots(dirs: &[&std::path::Path]) -> std::io::Result<BindRoots> {
    let mut roots = BindRoots {
        keys: Vec::new(),
        held: Vec::new(),
    };
    for dir in dirs {
        let fd = match rustix::fs::open(
            *dir,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(root_error(dir, e)),
        };
        roots
            .keys
            .push(crate::mounts::mount_key_of(fd.as_fd()).map_err(|e| root_error(dir, e))?);
        roots.held.push(fd);
    }
    Ok(roots)
}

fn root_error(dir: &std::path::Path, e: rustix::io::Errno) -> std::io::Error {
    std::io::Error::new(
        std::io::Error::from(e).kind(),
        format!("jail spawner: {}: {e}", dir.display()),
    )
}
