//! File root disks: `vms/<id>/root.ext4` made by `FICLONE` ([`Reflink`])
//! or by a sparse copy ([`SparseCopy`]). Both are served the same way once
//! made: the VMM opens the file.

use std::fs::File;
use std::path::Path;

use banger_proto::layout::{IMAGES_DIR, ROOTFS};
use banger_proto::vmops::SnapshotBackend as BackendKind;
use rustix::fs::OFlags;

use super::{RootDisk, SnapshotBackend};
use crate::vm::VmHost;
use crate::vm::disks::ROOT_DISK;
use crate::vm::error::{VmOpError, io};
use crate::vm::validate;

/// `FICLONE`: the root disk shares extents with the image until written.
#[derive(Debug)]
pub(crate) struct Reflink;

/// A sparse copy: data ranges copied, holes stay holes.
#[derive(Debug)]
pub(crate) struct SparseCopy;

impl SnapshotBackend for Reflink {
    fn kind(&self) -> BackendKind {
        BackendKind::Reflink
    }

    fn create(&self, host: &VmHost, vm_id: &str, image_id: &str) -> Result<RootDisk, VmOpError> {
        create_file_disk(host, vm_id, image_id, BackendKind::Reflink, |src, dst| {
            match rustix::fs::ioctl_ficlone(dst, src) {
                Ok(()) => Ok(()),
                Err(e) if ficlone_unsupported(e) => Err(VmOpError::SnapshotUnsupported {
                    backend: BackendKind::Reflink.as_str(),
                    reason: format!("the state filesystem has no FICLONE ({e})"),
                }),
                Err(e) => Err(io(
                    "cloning the image into",
                    &host.vm_dir(vm_id).join(ROOT_DISK),
                )(e.into())),
            }
        })
    }

    fn attach(&self, host: &VmHost, vm_id: &str) -> Result<RootDisk, VmOpError> {
        attach_file_disk(host, vm_id, self.kind())
    }

    fn remove(&self, host: &VmHost, vm_id: &str) -> Result<(), VmOpError> {
        remove_file_disk(host, vm_id)
    }
}

impl SnapshotBackend for SparseCopy {
    fn kind(&self) -> BackendKind {
        BackendKind::SparseCopy
    }

    fn create(&self, host: &VmHost, vm_id: &str, image_id: &str) -> Result<RootDisk, VmOpError> {
        create_file_disk(
            host,
            vm_id,
            image_id,
            BackendKind::SparseCopy,
            |src, dst| {
                sparse_copy(src, dst).map_err(io(
                    "copying the image into",
                    &host.vm_dir(vm_id).join(ROOT_DISK),
                ))
            },
        )
    }

    fn attach(&self, host: &VmHost, vm_id: &str) -> Result<RootDisk, VmOpError> {
        attach_file_disk(host, vm_id, self.kind())
    }

    fn remove(&self, host: &VmHost, vm_id: &str) -> Result<(), VmOpError> {
        remove_file_disk(host, vm_id)
    }
}

fn ficlone_unsupported(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    matches!(
        e,
        Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY
    )
}

fn create_file_disk(
    host: &VmHost,
    vm_id: &str,
    image_id: &str,
    kind: BackendKind,
    fill: impl FnOnce(&File, &File) -> Result<(), VmOpError>,
) -> Result<RootDisk, VmOpError> {
    validate::id("VM id", vm_id)?;
    validate::id("image id", image_id)?;
    let src_rel = Path::new(IMAGES_DIR).join(image_id).join(ROOTFS);
    let src = host.open_beneath(&src_rel, OFlags::RDONLY)?;
    // Root copies it into a file the owner reads: it must be the owner's.
    super::dm::checked_origin(host, &src, &host.state_dir.join(&src_rel))?;
    let dst = host.create_file(vm_id, ROOT_DISK)?;
    let made = fill(&src, &dst).and_then(|()| {
        dst.metadata()
            .map(|m| m.len())
            .map_err(io("inspecting", &host.vm_dir(vm_id).join(ROOT_DISK)))
    });
    match made {
        Ok(bytes) => Ok(RootDisk {
            backend: kind,
            path: host.vm_dir(vm_id).join(ROOT_DISK),
            devices: Vec::new(),
            bytes,
        }),
        Err(e) => {
            drop(dst);
            if let Err(undo) = host.remove_beneath(vm_id, &[ROOT_DISK]) {
                tracing::warn!(vm_id, error = %undo, "removing a half-made root disk");
            }
            Err(e)
        }
    }
}

fn attach_file_disk(host: &VmHost, vm_id: &str, kind: BackendKind) -> Result<RootDisk, VmOpError> {
    validate::id("VM id", vm_id)?;
    let rel = host.vm_rel(vm_id, ROOT_DISK);
    let f = host.open_beneath(&rel, OFlags::RDONLY)?;
    let meta = f
        .metadata()
        .map_err(io("inspecting", &host.vm_dir(vm_id).join(ROOT_DISK)))?;
    if !meta.is_file() {
        return Err(VmOpError::Invalid {
            what: "root disk",
            value: rel.display().to_string(),
            reason: "not a regular file".into(),
        });
    }
    Ok(RootDisk {
        backend: kind,
        path: host.vm_dir(vm_id).join(ROOT_DISK),
        devices: Vec::new(),
        bytes: meta.len(),
    })
}

fn remove_file_disk(host: &VmHost, vm_id: &str) -> Result<(), VmOpError> {
    validate::id("VM id", vm_id)?;
    host.remove_beneath(vm_id, &[ROOT_DISK])
}

/// Clone `src` into the empty `dst`: FICLONE when the filesystem shares
/// extents, else a sparse copy (data ranges only, holes stay holes).
pub fn clone_file(src: &File, dst: &File) -> std::io::Result<BackendKind> {
    match rustix::fs::ioctl_ficlone(dst, src) {
        Ok(()) => return Ok(BackendKind::Reflink),
        Err(e) if ficlone_unsupported(e) => {}
        Err(e) => return Err(e.into()),
    }
    sparse_copy(src, dst)?;
    Ok(BackendKind::SparseCopy)
}

pub(crate) fn sparse_copy(src: &File, dst: &File) -> std::io::Result<()> {
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
