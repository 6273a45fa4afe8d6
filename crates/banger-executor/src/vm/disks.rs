//! VM disks: the copy-on-write root disk (made and removed by a
//! `snapshot` backend) and the work disk.
//!
//! Files under the owner-owned state directory are opened relative to a
//! descriptor of that directory with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
//! | RESOLVE_NO_XDEV` (`banger_vmm::dir::RESOLVE`), so a symlink planted
//! anywhere in the state tree cannot redirect a privileged write and a
//! mount planted there is never crossed. An existing file is reached
//! with `O_PATH` and opened (through that descriptor) only when it is a
//! regular file, so a FIFO planted at its name cannot hold the thread;
//! one root writes is opened read-only first, checked, and only then
//! reopened for writing through its descriptor.
//! Tools (e2fsprogs) run jailed on root's descriptor (`jailed`).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use banger_host::mounts::check_state_dir;
use banger_host::runner::Cmd;
// The label the guest's fstab mounts the work disk by; the owner of the
// work disk's root directory (the guest user `banger`).
use banger_proto::guest::{GUEST_GID, GUEST_UID, WORK_LABEL};
use banger_proto::layout::{
    COW_FILE, IMAGES_DIR, ORIGIN_FILE, RUN_DIR, SERIAL_LOG, VMM_LOG, VMS_DIR, WORK_SEED,
};
use banger_proto::vmops::{VmDisksOutcome, VmDisksSpec};
use banger_vmm::dir::{OwnerDir, RESOLVE};
use rustix::fs::{FileType, Mode, OFlags};

use super::VmHost;
use super::error::{VmOpError, io};
use super::jailed;
use super::snapshot::dm::checked_owners;
use super::validate;

pub use banger_proto::layout::{ROOT_DISK, WORK_DISK};

impl VmHost {
    /// The state directory, opened with `O_PATH` (which asks its file
    /// system nothing) and refused on FUSE (its mount's type, found without
    /// asking the file system): a file system the owner mounted over it
    /// must not answer root's lookups beneath it.
    pub(super) fn state_fd(&self) -> Result<OwnedFd, VmOpError> {
        let fd = rustix::fs::open(
            &self.state_dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("opening state directory", &self.state_dir)(e.into()))?;
        check_state_dir(&fd).map_err(|r| VmOpError::StateDirRefused {
            path: self.state_dir.display().to_string(),
            reason: r.to_string(),
        })?;
        Ok(fd)
    }

    /// Open the regular file `rel` (relative to the state dir) without
    /// following any symlink or crossing any mount. An existing file is
    /// first reached with `O_PATH`, which opens nothing: only when `fstat`
    /// says it is a regular file is that inode opened with `flags`,
    /// through the descriptor. So a FIFO planted there is refused instead
    /// of waited on, and no device's open is ever called. A new file
    /// (`O_CREAT|O_EXCL`) is opened directly, `O_NONBLOCK` until checked.
    pub(super) fn open_beneath(&self, rel: &Path, flags: OFlags) -> Result<File, VmOpError> {
        self.open_beneath_as(rel, flags, Mode::from_raw_mode(0o600))
    }

    /// [`VmHost::open_beneath`], a new file made with `new_mode`.
    fn open_beneath_as(
        &self,
        rel: &Path,
        flags: OFlags,
        new_mode: Mode,
    ) -> Result<File, VmOpError> {
        let creating = flags.contains(OFlags::CREATE);
        // A new file goes only into a directory of the owner's
        // (`dir_beneath`): the owner can rename a directory of another
        // uid's (a slot's `run/`) to the name root creates in.
        let (dir, name) = match (creating, rel.parent(), rel.file_name()) {
            (true, Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
                let dir = self
                    .dir_beneath(parent)?
                    .ok_or_else(|| VmOpError::Missing {
                        what: "directory",
                        path: self.state_dir.join(parent).display().to_string(),
                    })?;
                (dir, Path::new(name))
            }
            _ => (self.state_fd()?, rel),
        };
        // openat2 refuses a mode without O_CREAT.
        let (first, mode) = if creating {
            (flags | OFlags::NONBLOCK | OFlags::NOCTTY, new_mode)
        } else {
            (OFlags::PATH, Mode::empty())
        };
        let fd = rustix::fs::openat2(
            dir.as_fd(),
            name,
            first | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            mode,
            RESOLVE,
        )
        .map_err(|e| {
            let path = self.state_dir.join(rel).display().to_string();
            match e {
                rustix::io::Errno::NOENT => VmOpError::Missing { what: "file", path },
                rustix::io::Errno::EXIST => VmOpError::Exists { what: "file", path },
                e => VmOpError::Io {
                    what: "opening",
                    path,
                    source: e.into(),
                },
            }
        })?;
        let path = || self.state_dir.join(rel);
        let st = rustix::fs::fstat(&fd).map_err(|e| io("inspecting", &path())(e.into()))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            return Err(VmOpError::Invalid {
                what: "file",
                value: path().display().to_string(),
                reason: format!("a {kind:?}, not a regular file; refusing it"),
            });
        }
        let fd = if creating {
            rustix::fs::fcntl_setfl(&fd, flags & OFlags::APPEND).map(|()| fd)
        } else {
            banger_vmm::dir::reopen(fd.as_fd(), flags)
        }
        .map_err(|e| io("opening", &path())(e.into()))?;
        Ok(File::from(fd))
    }

    /// The file behind `f` (opened by [`VmHost::open_beneath`] read-only
    /// and checked by the caller) opened again read-write through its
    /// descriptor: the very inode checked, whatever its name holds now.
    pub(super) fn reopen_rw(&self, f: &File, rel: &Path) -> Result<File, VmOpError> {
        banger_vmm::dir::reopen(f.as_fd(), OFlags::RDWR)
            .map(File::from)
            .map_err(|e| io("opening for writing", &self.state_dir.join(rel))(e.into()))
    }

    /// The VM directory, opened beneath the state dir without following
    /// symlinks; `None` when it does not exist.
    pub(super) fn vm_dir_fd(&self, vm_id: &str) -> Result<Option<OwnedFd>, VmOpError> {
        validate::id("VM id", vm_id)?;
        self.dir_beneath(&Path::new(VMS_DIR).join(vm_id))
    }

    /// The directory `rel` (relative to the checked state directory),
    /// opened without following a symlink or crossing a mount, and only
    /// when it is the owner's; `None` when it does not exist. The owner
    /// can rename a directory of another uid's that sits in its tree (a
    /// jailed Firecracker's `run/`, its slot's) to any name root works
    /// in, and Linux asks no permission on the moved directory itself:
    /// root must never create or unlink in another uid's directory (the
    /// s13 review of the root-side diff, F1). `rel`'s components are the
    /// callers' validated ids (`validate::id`): no `..`.
    pub(super) fn dir_beneath(&self, rel: &Path) -> Result<Option<OwnedFd>, VmOpError> {
        let dir = self.state_fd()?;
        let path = || self.state_dir.join(rel);
        let fd = match rustix::fs::openat2(
            dir.as_fd(),
            rel,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            RESOLVE,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(io("opening", &path())(e.into())),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| io("inspecting", &path())(e.into()))?;
        if st.st_uid != self.owner.0 {
            return Err(VmOpError::Invalid {
                what: "directory",
                value: path().display().to_string(),
                reason: format!(
                    "owned by uid {}, not the owner's ({}); refusing to work in it",
                    st.st_uid, self.owner.0
                ),
            });
        }
        Ok(Some(fd))
    }

    /// Remove the files `names` from the VM directory with `unlinkat`
    /// relative to a descriptor of it (reached without symlinks), so a
    /// symlinked `vms/<id>` cannot point root's deletions elsewhere.
    /// Missing files (or directory) are fine.
    pub(crate) fn remove_beneath(&self, vm_id: &str, names: &[&str]) -> Result<(), VmOpError> {
        let Some(dir) = self.vm_dir_fd(vm_id)? else {
            return Ok(());
        };
        for name in names {
            match rustix::fs::unlinkat(&dir, *name, rustix::fs::AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(io("removing", &self.vm_dir(vm_id).join(name))(e.into())),
            }
        }
        Ok(())
    }

    /// Remove the directory `name` of the VM directory and everything in
    /// it, as [`VmHost::remove_vm_tree`] does. Missing is fine.
    pub(crate) fn remove_tree_beneath(&self, vm_id: &str, name: &str) -> Result<(), VmOpError> {
        let Some(dir) = self.vm_dir_fd(vm_id)? else {
            return Ok(());
        };
        let path = self.vm_dir(vm_id).join(name);
        let dir = OwnerDir::from_fd(dir, self.vm_dir(vm_id));
        self.remove_vm_tree(&dir, name)
            .map_err(io("removing", &path))
    }

    /// Remove the tree `name` of the VM directory `dir` with the owner's
    /// file-system ids, every step relative to a descriptor (no path
    /// re-resolved, no symlink followed, no mount crossed). A jailed QEMU
    /// gets no directory at all; a jailed Firecracker's `run/` is its
    /// slot's (0700), which the owner's ids cannot enter: emptied first
    /// with that slot's ids ([`VmHost::empty_slot_dir`]).
    pub(super) fn remove_vm_tree(&self, dir: &OwnerDir, name: &str) -> std::io::Result<()> {
        self.empty_slot_dir(dir, name)?;
        dir.remove_tree(name, self.tool_ids())
    }

    /// When `name` in `dir` is a directory of a VM slot's uid (a jailed
    /// Firecracker's `run/`: its sockets and log), remove what is in it
    /// with that uid's file-system ids: only what that uid could remove
    /// goes, each entry relative to the descriptor of the directory
    /// checked (`OwnerDir::empty`), then the directory itself with the
    /// owner's ids. Anything else (missing, not a directory, another
    /// uid's) is left to the owner's removal.
    fn empty_slot_dir(&self, dir: &OwnerDir, name: &str) -> std::io::Result<()> {
        use rustix::io::Errno;
        let fd = match rustix::fs::openat2(
            dir,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            banger_vmm::dir::RESOLVE,
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let uid = rustix::fs::fstat(&fd)?.st_uid;
        if !self.is_vm_slot(uid) {
            return Ok(());
        }
        // Its owner, the slot, may have taken its own bits off (an escaped
        // VMM): given back by root, on this very inode, before the slot's
        // ids work in it.
        rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o700))?;
        // Every name, as raw bytes (hostile read of fcexec, F2: names that
        // were not UTF-8 were skipped), a too-deep directory moved up
        // here rather than refused, within `OwnerDir::remove_tree`'s
        // budget (past it: an error naming this directory and what is
        // left in it).
        OwnerDir::from_fd(fd, dir.join(name)).empty(Some((uid, uid)))?;
        // Now empty: removed with the owner's ids, which can remove an
        // empty directory of the owner's directory but not list it.
        banger_vmm::dir::with_fs_ids(
            self.tool_ids(),
            "remove-run",
            || match rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(e.into()),
            },
        )
    }

    pub(super) fn vm_rel(&self, vm_id: &str, name: &str) -> PathBuf {
        Path::new(VMS_DIR).join(vm_id).join(name)
    }

    pub fn vm_dir(&self, vm_id: &str) -> PathBuf {
        self.state_dir.join(VMS_DIR).join(vm_id)
    }

    /// Make `name` in VM `vm_id`'s directory the owner's
    /// new file of mode 0600, through the VM directory's descriptor:
    /// `OwnerDir::create` makes it unnamed, hands it over, sets its mode
    /// and only then links it in, so it is never seen by name as root's
    /// with a permission bit — what the dm backend takes for root's own COW
    /// file (final review of issue #13, M1: the owner renamed such a file
    /// into another VM's `root.cow`; made with no bits, a `stat` racing the
    /// `fchown` and `fchmod` could still read the old uid with the new mode).
    pub(super) fn create_file(&self, vm_id: &str, name: &str) -> Result<File, VmOpError> {
        let path = self.state_dir.join(self.vm_rel(vm_id, name));
        let dir = self.owner_vm_dir(vm_id)?;
        dir.create(name, 0o600, Some(self.owner)).map_err(|e| {
            if matches!(e, banger_vmm::VmmError::Refused { .. }) && dir.lstat(name).is_ok() {
                return VmOpError::Exists {
                    what: "file",
                    path: path.display().to_string(),
                };
            }
            io("creating", &path)(std::io::Error::other(
                banger_proto::error::chain(&e).join(": "),
            ))
        })
    }

    pub(crate) fn create_disks(&self, spec: &VmDisksSpec) -> Result<VmDisksOutcome, VmOpError> {
        validate::id("VM id", &spec.vm_id)?;
        validate::id("image id", &spec.image_id)?;
        validate::work_disk_bytes(spec.work_disk_bytes)?;
        if let Some(snapshot_id) = &spec.from_snapshot {
            return self.create_disks_from_snapshot(&spec.vm_id, snapshot_id);
        }
        let image_rel = Path::new(IMAGES_DIR).join(&spec.image_id);
        let root = self.create_root_disk(&spec.vm_id, &spec.image_id)?;
        match self.create_work_disk(&image_rel, &spec.vm_id, spec.work_disk_bytes) {
            Ok(work) => Ok(VmDisksOutcome {
                backend: root.backend,
                root_bytes: root.bytes,
                work_bytes: work,
            }),
            Err(e) => {
                // Nothing half-made stays behind.
                if let Err(undo) = self
                    .backend_of(&spec.vm_id)
                    .and_then(|b| b.remove(self, &spec.vm_id))
                {
                    tracing::warn!(vm_id = %spec.vm_id, error = %undo, "removing the root disk after a failed create");
                }
                if let Err(undo) = self.remove_beneath(&spec.vm_id, &[WORK_DISK]) {
                    tracing::warn!(vm_id = %spec.vm_id, error = %undo, "removing the work disk after a failed create");
                }
                Err(e)
            }
        }
    }

    /// Both disks copied from the snapshot's (reflink or sparse copy), the
    /// root disk a file whatever the backend of new disks; nothing
    /// half-made stays behind.
    fn create_disks_from_snapshot(
        &self,
        vm_id: &str,
        snapshot_id: &str,
    ) -> Result<VmDisksOutcome, VmOpError> {
        validate::id("snapshot id", snapshot_id)?;
        // Both of the snapshot's disks checked before anything is made.
        let root = self.snapshot_file(snapshot_id, ROOT_DISK)?;
        let work = self.snapshot_file(snapshot_id, WORK_DISK)?;
        let dir = self.owner_vm_dir(vm_id)?;
        // Only the files this call made are removed on failure, through
        // the descriptor they were made in (`create_file` refuses to
        // replace an existing one).
        let mut made: Vec<&'static str> = Vec::new();
        let copied = (|| {
            let mut copy = |(src, len): (File, u64), name: &'static str| {
                let dst = self.create_file(vm_id, name)?;
                made.push(name);
                super::snapshot::clone_file(&src, &dst)
                    .map(|how| (len, how))
                    .map_err(io("copying a snapshot disk into", &dir.join(name)))
            };
            let (root_bytes, backend) = copy(root, ROOT_DISK)?;
            let (work_bytes, _) = copy(work, WORK_DISK)?;
            Ok(VmDisksOutcome {
                backend,
                root_bytes,
                work_bytes,
            })
        })();
        if copied.is_err() {
            for name in made {
                match rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => {
                        tracing::warn!(vm_id, file = name, error = %e, "removing a disk after a failed copy from a snapshot");
                    }
                }
            }
        }
        copied
    }

    fn create_work_disk(
        &self,
        image_rel: &Path,
        vm_id: &str,
        bytes: u64,
    ) -> Result<u64, VmOpError> {
        let path = self.state_dir.join(self.vm_rel(vm_id, WORK_DISK));
        let dst = self.create_file(vm_id, WORK_DISK)?;
        let seed_rel = image_rel.join(WORK_SEED);
        match self.open_beneath(&seed_rel, OFlags::RDONLY) {
            Ok(seed) => {
                // Copied into a disk the owner reads: it must be the
                // owner's own file, not a hard link to one of root's.
                let seed_len =
                    checked_owners(self, &seed, &self.state_dir.join(&seed_rel), "work seed")?;
                super::snapshot::clone_file(&seed, &dst)
                    .map_err(io("copying the work seed into", &path))?;
                dst.set_len(bytes.max(seed_len))
                    .map_err(io("sizing", &path))?;
                self.tool(
                    "checking the work disk",
                    Cmd::new("e2fsck").args(["-fp", jailed::DISK]),
                    &dst,
                    &path,
                )?;
                self.tool(
                    "growing the work disk",
                    Cmd::new("resize2fs").arg(jailed::DISK),
                    &dst,
                    &path,
                )?;
            }
            Err(VmOpError::Missing { .. }) => {
                dst.set_len(bytes).map_err(io("sizing", &path))?;
                self.tool(
                    "making the work disk",
                    Cmd::new("mkfs.ext4")
                        .args(["-q", "-F", "-L", WORK_LABEL, "-E"])
                        .arg(format!("root_owner={GUEST_UID}:{GUEST_GID}"))
                        .arg(jailed::DISK),
                    &dst,
                    &path,
                )?;
            }
            Err(e) => return Err(e),
        }
        Ok(bytes)
    }

    pub(crate) fn grow_work_disk(&self, vm_id: &str, bytes: u64) -> Result<(), VmOpError> {
        validate::id("VM id", vm_id)?;
        validate::work_disk_bytes(bytes)?;
        let rel = self.vm_rel(vm_id, WORK_DISK);
        let path = self.state_dir.join(&rel);
        let f = self.open_beneath(&rel, OFlags::RDONLY)?;
        // Grown by root: it must be the disk made for the owner, not a
        // hard link to another file — checked before any write-open.
        let len = checked_owners(self, &f, &path, "work disk")?;
        if bytes < len {
            return Err(VmOpError::Invalid {
                what: "work disk size",
                value: bytes.to_string(),
                reason: format!("smaller than the current {len} bytes; disks only grow"),
            });
        }
        if bytes == len {
            return Ok(());
        }
        let f = self.reopen_rw(&f, &rel)?;
        // Locked before the first write (held through both tools, on this
        // descriptor): not a disk a VMM holds.
        super::vmm_files::lock_disk(&f, &path, false)?;
        f.set_len(bytes).map_err(io("growing", &path))?;
        self.tool(
            "checking the work disk",
            Cmd::new("e2fsck").args(["-fp", jailed::DISK]),
            &f,
            &path,
        )?;
        self.tool(
            "growing the work filesystem",
            Cmd::new("resize2fs").arg(jailed::DISK),
            &f,
            &path,
        )
    }

    pub(crate) fn delete_disks(&self, vm_id: &str) -> Result<(), VmOpError> {
        validate::id("VM id", vm_id)?;
        self.backend_of(vm_id)?.remove(self, vm_id)?;
        // Every root-disk file whatever the backend (leftovers of a crash
        // included), then the rest; all by unlinkat beneath the state dir.
        self.remove_beneath(
            vm_id,
            &[
                ROOT_DISK,
                COW_FILE,
                ORIGIN_FILE,
                WORK_DISK,
                SERIAL_LOG,
                VMM_LOG,
            ],
        )?;
        self.remove_qmp_socket(vm_id);
        self.remove_tree_beneath(vm_id, RUN_DIR)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;
    use std::path::Path;

    /// Final review of issue #13, M1, for the disks root makes for the
    /// owner (work disk, root disk copies): never seen root's with a
    /// permission bit — what the dm backend takes for root's own COW file
    /// — while made, so the owner cannot rename one into another VM's
    /// `root.cow` and have it become theirs. A thread watches the name
    /// while it is made and removed again and again.
    const VM: &str = "0123456789abcdef0123456789abcdef";

    /// The cold demo of 58347f1: a disk made unnamed (`O_TMPFILE`) and
    /// linked in could not be bound into a tool's jail (`move_mount` of
    /// a tree cloned from a descriptor of an unnamed file: `ENOENT`), so
    /// `vm create` failed at its first `e2fsck`. What `create_file`
    /// returns is a descriptor of the name: a jailed tool runs on it.
    #[test]
    fn a_disk_made_for_the_owner_can_be_bound_into_a_tool_jail() {
        assert!(rustix::process::geteuid().is_root(), "needs root");
        let dir = tempfile::tempdir().unwrap();
        let host =
            super::super::slots::tests::host(dir.path(), super::super::slots::tests::jail(4));
        std::fs::create_dir_all(dir.path().join("state/vms").join(VM)).unwrap();
        let rel = Path::new("vms").join(VM).join("work.ext4");
        let disk = host.create_file(VM, "work.ext4").unwrap();
        disk.set_len(1 << 20).unwrap();
        host.tool(
            "running a tool on the new disk",
            banger_host::runner::Cmd::new("head").args(["-c", "1", super::super::jailed::DISK]),
            &disk,
            &dir.path().join("state").join(&rel),
        )
        .expect("a jailed tool reaches the disk");
    }

    #[test]
    fn a_disk_made_for_the_owner_is_never_seen_roots_with_permissions() {
        assert!(rustix::process::geteuid().is_root(), "needs root");
        let dir = tempfile::tempdir().unwrap();
        let mut host =
            super::super::slots::tests::host(dir.path(), super::super::slots::tests::jail(4));
        host.owner = (4242, 4242);
        let vm_dir = dir.path().join("state/vms").join(VM);
        std::fs::create_dir_all(&vm_dir).unwrap();
        // The owner's, as `bangerd` makes it (root works in no other uid's).
        std::os::unix::fs::chown(&vm_dir, Some(4242), Some(4242)).unwrap();
        let rel = &Path::new("vms").join(VM).join("work.ext4");
        let path = dir.path().join("state").join(rel);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let seen = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let mut seen = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(m) = std::fs::symlink_metadata(&path)
                        && m.uid() == 0
                        && m.mode() & 0o7777 != 0
                    {
                        seen += 1;
                    }
                }
                seen
            });
            let made = (0..3000).try_for_each(|_| {
                drop(host.create_file(VM, "work.ext4")?);
                std::fs::remove_file(&path).map_err(super::io("removing", &path))
            });
            // Before anything can panic: the watcher must stop.
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            made.unwrap();
            watcher.join().unwrap()
        });
        assert_eq!(
            seen, 0,
            "times the disk was seen root's with permission bits"
        );
        drop(host.create_file(VM, "work.ext4").unwrap());
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (4242, 4242, 0o600));
    }
}
