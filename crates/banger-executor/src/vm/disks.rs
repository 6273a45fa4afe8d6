//! VM disks: the copy-on-write root disk and the work disk.
//!
//! Files under the owner-owned state directory are opened relative to a
//! descriptor of that directory with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`,
//! so a symlink planted anywhere in the state tree cannot redirect a
//! privileged write. Tools (e2fsprogs) run with the owner's uid, so they can
//! do no more than the owner could.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::runner::{Cmd, Runner};
use banger_proto::vmops::{SnapshotBackend, VmDisksOutcome, VmDisksSpec};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::VmHost;
use super::error::{VmOpError, io};
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

    pub(super) fn vm_rel(&self, vm_id: &str, name: &str) -> PathBuf {
        Path::new("vms").join(vm_id).join(name)
    }

    pub fn vm_dir(&self, vm_id: &str) -> PathBuf {
        self.state_dir.join("vms").join(vm_id)
    }

    fn create_file(&self, rel: &Path) -> Result<File, VmOpError> {
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
        let src = self.open_beneath(&image_rel.join("rootfs.ext4"), OFlags::RDONLY)?;
        let root_rel = self.vm_rel(&spec.vm_id, ROOT_DISK);
        let work_rel = self.vm_rel(&spec.vm_id, WORK_DISK);
        let result = (|| {
            let dst = self.create_file(&root_rel)?;
            let backend = clone_file(&src, &dst).map_err(io(
                "cloning the image into",
                &self.state_dir.join(&root_rel),
            ))?;
            let root_bytes = dst.metadata().map(|m| m.len()).unwrap_or(0);
            let work = self.create_work_disk(&image_rel, &work_rel, spec.work_disk_bytes)?;
            Ok(VmDisksOutcome {
                backend,
                root_bytes,
                work_bytes: work,
            })
        })();
        if result.is_err() {
            // Nothing half-made stays behind.
            let _ = std::fs::remove_file(self.state_dir.join(&root_rel));
            let _ = std::fs::remove_file(self.state_dir.join(&work_rel));
        }
        result
    }

    fn create_work_disk(
        &self,
        image_rel: &Path,
        work_rel: &Path,
        bytes: u64,
    ) -> Result<u64, VmOpError> {
        let path = self.state_dir.join(work_rel);
        let dst = self.create_file(work_rel)?;
        match self.open_beneath(&image_rel.join("work-seed.ext4"), OFlags::RDONLY) {
            Ok(seed) => {
                clone_file(&seed, &dst).map_err(io("copying the work seed into", &path))?;
                let seed_len = seed.metadata().map(|m| m.len()).unwrap_or(0);
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
        let len = f.metadata().map_err(io("inspecting", &path))?.len();
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
        let dir = self.vm_dir(vm_id);
        for name in [ROOT_DISK, WORK_DISK, "serial.log", "vmm.log"] {
            let p = dir.join(name);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("removing", &p)(e)),
            }
        }
        match std::fs::remove_dir_all(dir.join("run")) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("removing", &dir.join("run"))(e)),
        }
    }
}

/// Clone `src` into the empty `dst`: FICLONE when the filesystem shares
/// extents, else a sparse copy (data ranges only, holes stay holes).
pub fn clone_file(src: &File, dst: &File) -> std::io::Result<SnapshotBackend> {
    match rustix::fs::ioctl_ficlone(dst, src) {
        Ok(()) => return Ok(SnapshotBackend::Reflink),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::XDEV | rustix::io::Errno::INVAL) => {}
        Err(rustix::io::Errno::NOTTY) => {}
        Err(e) => return Err(e.into()),
    }
    sparse_copy(src, dst)?;
    Ok(SnapshotBackend::SparseCopy)
}

fn sparse_copy(src: &File, dst: &File) -> std::io::Result<()> {
    use rustix::fs::SeekFrom;
    let len = src.metadata()?.len();
    let mut pos = 0u64;
    while pos < len {
        let data = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = rustix::fs::seek(src, SeekFrom::Hole(data)).map_err(std::io::Error::from)?;
        let mut off_in = data;
        let mut off_out = data;
        while off_in < hole {
            let want = (hole - off_in).min(1 << 30) as usize;
            let n =
                rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want)
                    .map_err(std::io::Error::from)?;
            if n == 0 {
                return Err(std::io::Error::other("source shrank during the copy"));
            }
        }
        pos = hole;
    }
    dst.set_len(len)
}

#[cfg(test)]
mod tests {
    use std::io::{Seek as _, SeekFrom, Write as _};
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn sparse_copy_keeps_content_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = File::create_new(dir.path().join("src")).unwrap();
        src.write_all(b"head").unwrap();
        src.seek(SeekFrom::Start(64 << 20)).unwrap();
        src.write_all(b"tail").unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let dst = File::create_new(dir.path().join("dst")).unwrap();
        // Exercise the sparse path directly (tmpfs/ext4 have no reflink).
        sparse_copy(&src, &dst).unwrap();
        let a = std::fs::read(dir.path().join("src")).unwrap();
        let b = std::fs::read(dir.path().join("dst")).unwrap();
        assert_eq!(a, b);
        // 64 MiB apparent, only a few blocks allocated.
        assert!(dst.metadata().unwrap().blocks() * 512 < 1 << 20);
    }
}
