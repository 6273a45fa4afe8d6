//! VM disks: the copy-on-write root disk (made and removed by a
//! `snapshot` backend) and the work disk.
//!
//! Files under the owner-owned state directory are opened relative to a
//! descriptor of that directory with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`,
//! so a symlink planted anywhere in the state tree cannot redirect a
//! privileged write. Tools (e2fsprogs) run with the owner's uid, so they can
//! do no more than the owner could.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::runner::{Cmd, Runner};
use banger_proto::vmops::{VmDisksOutcome, VmDisksSpec};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::VmHost;
use super::error::{VmOpError, io};
use super::snapshot::dm::checked_owners;
use super::validate;

pub const ROOT_DISK: &str = "root.ext4";
pub const WORK_DISK: &str = "work.ext4";
/// Label the guest's fstab mounts the work disk by.
pub const WORK_LABEL: &str = "banger-work";
/// Owner of the work disk's root directory (the guest user `banger`).
pub const GUEST_UID: u32 = 1000;

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS);

impl VmHost {
    fn state_fd(&self) -> Result<OwnedFd, VmOpError> {
        rustix::fs::open(
            &self.state_dir,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
            Mode::empty(),
        )
        .map_err(|e| io("opening state directory", &self.state_dir)(e.into()))
    }

    /// Open `rel` (relative to the state dir) without following any symlink.
    pub(super) fn open_beneath(&self, rel: &Path, flags: OFlags) -> Result<File, VmOpError> {
        let dir = self.state_fd()?;
        // openat2 refuses a mode without O_CREAT.
        let mode = if flags.contains(OFlags::CREATE) {
            Mode::from_raw_mode(0o600)
        } else {
            Mode::empty()
        };
        let fd = rustix::fs::openat2(
            dir.as_fd(),
            rel,
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
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
        Ok(File::from(fd))
    }

    /// The VM directory, opened beneath the state dir without following
    /// symlinks; `None` when it does not exist.
    pub(super) fn vm_dir_fd(&self, vm_id: &str) -> Result<Option<OwnedFd>, VmOpError> {
        validate::id("VM id", vm_id)?;
        let dir = self.state_fd()?;
        let rel = Path::new("vms").join(vm_id);
        match rustix::fs::openat2(
            dir.as_fd(),
            &rel,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            RESOLVE,
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(io("opening", &self.state_dir.join(rel))(e.into())),
        }
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
    /// it, every step relative to a descriptor (no path is re-resolved,
    /// no symlink followed). Missing is fine.
    pub(crate) fn remove_tree_beneath(&self, vm_id: &str, name: &str) -> Result<(), VmOpError> {
        let Some(dir) = self.vm_dir_fd(vm_id)? else {
            return Ok(());
        };
        let path = self.vm_dir(vm_id).join(name);
        remove_tree_at(dir.as_fd(), name, 0).map_err(|e| io("removing", &path)(e.into()))
    }

    pub(super) fn vm_rel(&self, vm_id: &str, name: &str) -> PathBuf {
        Path::new("vms").join(vm_id).join(name)
    }

    pub fn vm_dir(&self, vm_id: &str) -> PathBuf {
        self.state_dir.join("vms").join(vm_id)
    }

    pub(super) fn create_file(&self, rel: &Path) -> Result<File, VmOpError> {
        let f = self.open_beneath(rel, OFlags::CREATE | OFlags::EXCL | OFlags::RDWR)?;
        rustix::fs::fchown(
            &f,
            Some(rustix::process::Uid::from_raw(self.owner.0)),
            Some(rustix::process::Gid::from_raw(self.owner.1)),
        )
        .map_err(|e| io("chown", &self.state_dir.join(rel))(e.into()))?;
        Ok(f)
    }

    pub(crate) fn create_disks(&self, spec: &VmDisksSpec) -> Result<VmDisksOutcome, VmOpError> {
        validate::id("VM id", &spec.vm_id)?;
        validate::id("image id", &spec.image_id)?;
        validate::work_disk_bytes(spec.work_disk_bytes)?;
        let image_rel = Path::new("images").join(&spec.image_id);
        let work_rel = self.vm_rel(&spec.vm_id, WORK_DISK);
        let root = self.create_root_disk(&spec.vm_id, &spec.image_id)?;
        match self.create_work_disk(&image_rel, &work_rel, spec.work_disk_bytes) {
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

    fn create_work_disk(
        &self,
        image_rel: &Path,
        work_rel: &Path,
        bytes: u64,
    ) -> Result<u64, VmOpError> {
        let path = self.state_dir.join(work_rel);
        let dst = self.create_file(work_rel)?;
        let seed_rel = image_rel.join("work-seed.ext4");
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
                drop(dst);
                self.tool(
                    "checking the work disk",
                    Cmd::new("e2fsck").args(["-fp"]).arg(&path),
                )?;
                self.tool("growing the work disk", Cmd::new("resize2fs").arg(&path))?;
            }
            Err(VmOpError::Missing { .. }) => {
                dst.set_len(bytes).map_err(io("sizing", &path))?;
                drop(dst);
                self.tool(
                    "making the work disk",
                    Cmd::new("mkfs.ext4")
                        .args(["-q", "-F", "-L", WORK_LABEL, "-E"])
                        .arg(format!("root_owner={GUEST_UID}:{GUEST_UID}"))
                        .arg(&path),
                )?;
            }
            Err(e) => return Err(e),
        }
        Ok(bytes)
    }

    pub(super) fn tool(&self, what: &str, cmd: Cmd) -> Result<(), VmOpError> {
        Runner
            .run(
                &cmd.run_as(self.tool_ids())
                    .timeout(Duration::from_secs(300)),
            )
            .map(drop)
            .map_err(|source| VmOpError::Tool {
                what: what.to_string(),
                source,
            })
    }

    pub(crate) fn grow_work_disk(&self, vm_id: &str, bytes: u64) -> Result<(), VmOpError> {
        validate::id("VM id", vm_id)?;
        validate::work_disk_bytes(bytes)?;
        let rel = self.vm_rel(vm_id, WORK_DISK);
        let path = self.state_dir.join(&rel);
        let f = self.open_beneath(&rel, OFlags::RDWR)?;
        // Grown by root: it must be the disk made for the owner, not a
        // hard link to another file.
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
        f.set_len(bytes).map_err(io("growing", &path))?;
        drop(f);
        self.tool(
            "checking the work disk",
            Cmd::new("e2fsck").args(["-fp"]).arg(&path),
        )?;
        self.tool(
            "growing the work filesystem",
            Cmd::new("resize2fs").arg(&path),
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
                super::snapshot::dm::COW_FILE,
                super::snapshot::dm::ORIGIN_FILE,
                WORK_DISK,
                "serial.log",
                "vmm.log",
            ],
        )?;
        self.remove_tree_beneath(vm_id, "run")
    }
}

/// Remove `name` under `parent` (a directory: its contents first), without
/// following symlinks. Depth is bounded; ENOENT is success.
pub(super) fn remove_tree_at(
    parent: BorrowedFd<'_>,
    name: &str,
    depth: usize,
) -> rustix::io::Result<()> {
    use rustix::fs::AtFlags;
    if depth > 16 {
        return Err(rustix::io::Errno::LOOP);
    }
    let dir = match rustix::fs::openat(
        parent,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        // Not a directory (or a symlink): unlink the entry itself.
        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
            return match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(e) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&dir)? {
        let entry = entry?;
        let n = entry.file_name().to_string_lossy().into_owned();
        if n != "." && n != ".." {
            names.push((n, entry.file_type()));
        }
    }
    for (n, ty) in names {
        if ty == rustix::fs::FileType::Directory {
            remove_tree_at(dir.as_fd(), &n, depth + 1)?;
        } else {
            match rustix::fs::unlinkat(&dir, n.as_str(), AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                // Unknown d_type on some filesystems: try it as a directory.
                Err(rustix::io::Errno::ISDIR) => remove_tree_at(dir.as_fd(), &n, depth + 1)?,
                Err(e) => return Err(e),
            }
        }
    }
    drop(dir);
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}
