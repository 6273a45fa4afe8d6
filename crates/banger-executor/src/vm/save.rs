//! VM snapshots (issue #15 item 1): `SnapshotVm` saves a VM's memory and
//! device state and copies its disks into the owner's
//! `snapshots/<snapshot_id>/`; `CreateVmDisks` with `from_snapshot` copies
//! a snapshot's disks into a new VM, and `LaunchVm` with `restore` loads
//! its state ([`VmHost::restore_files`]).
//!
//! The snapshot directory is the owner's, like a VM directory: root works
//! in it only through a descriptor of it opened beneath the state
//! directory without symlinks, makes its files as the owner's
//! (`OwnerDir::create`: unnamed until their owner and mode are set; their
//! content is written after they are named), and reads them back only
//! when each is the owner's regular file with one link. A snapshot is
//! complete only once the daemon's store records it, which it does only
//! after `SnapshotVm` answered: files that exist are no such promise. QEMU (jailed, as its slot's
//! uid) reads and writes the state through root's descriptor, passed over
//! QMP; it parses what the owner could have written, never root.
//! Firecracker (jailed) writes its device state ([`SNAPSHOT_VMSTATE`])
//! and memory into its own `run/`, from where root copies them into its
//! descriptors of the snapshot's files (`banger_vmm::firecracker::snapshot`);
//! a restore binds both read-only into its jail, the slot granted read
//! access for the launch. Neither format is ever parsed by root.

use std::fs::File;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_proto::layout::{SNAPSHOT_MEMORY, SNAPSHOT_VMSTATE, SNAPSHOTS_DIR};
use banger_proto::vmops::{SnapshotBackend, SnapshotSaved, SnapshotVmSpec, VmmKind};
use banger_vmm::VmmError;
use banger_vmm::dir::OwnerDir;
use banger_vmm::driver::SaveTo;
use rustix::fs::OFlags;

use super::VmHost;
use super::disks::{ROOT_DISK, WORK_DISK};
use super::error::{VmOpError, io};
use super::validate;

/// How long saving a guest's state may take (about 60 ms for a 512 MiB
/// TCG guest here; the state goes to the page cache first).
const SAVE_TIMEOUT: Duration = Duration::from_secs(120);

impl VmHost {
    fn snapshot_rel(&self, snapshot_id: &str, name: &str) -> PathBuf {
        Path::new(SNAPSHOTS_DIR).join(snapshot_id).join(name)
    }

    fn snapshot_dir(&self, snapshot_id: &str) -> PathBuf {
        self.state_dir.join(SNAPSHOTS_DIR).join(snapshot_id)
    }

    /// The snapshot's directory (the owner's), opened beneath the state
    /// directory without following a symlink or crossing a mount.
    fn owner_snapshot_dir(&self, snapshot_id: &str) -> Result<OwnerDir, VmOpError> {
        validate::id("snapshot id", snapshot_id)?;
        let path = self.snapshot_dir(snapshot_id);
        // As a VM directory is opened (beneath the FUSE-checked state
        // directory: a file system the owner mounted there must not answer
        // root's lookups).
        match self.dir_beneath(&Path::new(SNAPSHOTS_DIR).join(snapshot_id))? {
            Some(fd) => Ok(OwnerDir::from_fd(fd, path)),
            None => Err(VmOpError::Missing {
                what: "snapshot directory",
                path: path.display().to_string(),
            }),
        }
    }

    /// A new file `name` of the owner's in the snapshot directory `dir`.
    fn create_in(&self, dir: &OwnerDir, name: &str) -> Result<File, VmOpError> {
        dir.create(name, 0o600, Some(self.owner)).map_err(|e| {
            let path = dir.join(name);
            if dir.lstat(name).is_ok() {
                return VmOpError::Exists {
                    what: "snapshot file",
                    path: path.display().to_string(),
                };
            }
            io("creating", &path)(std::io::Error::other(
                banger_proto::error::chain(&e).join(": "),
            ))
        })
    }

    /// The path of the snapshot's file `name` (grants and messages).
    pub(super) fn snapshot_path(&self, snapshot_id: &str, name: &str) -> PathBuf {
        self.state_dir.join(self.snapshot_rel(snapshot_id, name))
    }

    /// The snapshot's file `name`, read-only, when it is the owner's
    /// regular file with one link: its descriptor and length.
    pub(super) fn snapshot_file(
        &self,
        snapshot_id: &str,
        name: &str,
    ) -> Result<(File, u64), VmOpError> {
        validate::id("snapshot id", snapshot_id)?;
        let rel = self.snapshot_rel(snapshot_id, name);
        let f = self.open_beneath(&rel, OFlags::RDONLY)?;
        let len = super::snapshot::dm::checked_owners(
            self,
            &f,
            &self.state_dir.join(&rel),
            "snapshot file",
        )?;
        Ok((f, len))
    }

    /// Save the VM's state and disks into the snapshot directory (see
    /// `SnapshotVmSpec`). The VMM is taken out of the table for the call,
    /// as a pause takes it: a stop, pause or second snapshot waits or is
    /// refused meanwhile. The guest is paused for the state and the disk
    /// copies, and resumed after them when `spec.resume`. On failure the
    /// files made are removed and the guest is resumed when asked.
    pub(crate) fn snapshot_vm(&self, spec: &SnapshotVmSpec) -> Result<SnapshotSaved, VmOpError> {
        validate::id("VM id", &spec.vm_id)?;
        if spec.memory_only && spec.resume {
            // A memory-only save is sound only if the guest never runs
            // again on the disks it describes: it stays paused for its kill.
            return Err(VmOpError::Invalid {
                what: "snapshot",
                value: spec.snapshot_id.clone(),
                reason: "a memory-only save leaves the guest paused for its stop; it cannot \
                         resume it"
                    .into(),
            });
        }
        let dir = self.owner_snapshot_dir(&spec.snapshot_id)?;
        let vm_id = spec.vm_id.as_str();
        let mut taken = self.take_vmm(vm_id)?;
        let Some((vmm, _)) = taken.held.as_mut() else {
            return Err(VmOpError::NotRunning {
                vm_id: vm_id.to_string(),
            });
        };
        // Firecracker writes its device state apart from the memory.
        let apart = vmm.kind() == VmmKind::Firecracker;
        // The disks first checked: a root disk on a dm device is not
        // copied (yet), and nothing is paused for a refusal. Only the
        // backend is asked (no attach: that may rebuild dm devices, and
        // this op holds no VM operation lock). A memory-only save copies
        // no disk.
        if !spec.memory_only && self.backend_of(vm_id)?.kind() == SnapshotBackend::DmSnapshot {
            return Err(VmOpError::SnapshotUnsupported {
                backend: SnapshotBackend::DmSnapshot.as_str(),
                reason: "snapshots of VMs whose root disk is a dm-snapshot device are not \
                         supported yet"
                    .into(),
            });
        }
        let disks = if spec.memory_only {
            None
        } else {
            let root = self.open_disk(&self.vm_dir(vm_id).join(ROOT_DISK), "VM disk")?;
            let work = self.open_disk(&self.vm_dir(vm_id).join(WORK_DISK), "VM disk")?;
            Some((root, work))
        };

        let mut made = Made {
            dir: &dir,
            names: Vec::new(),
        };
        let paused = Instant::now();
        let saved = (|| {
            let memory = self.create_in(&dir, SNAPSHOT_MEMORY)?;
            made.names.push(SNAPSHOT_MEMORY);
            let state = if apart {
                let f = self.create_in(&dir, SNAPSHOT_VMSTATE)?;
                made.names.push(SNAPSHOT_VMSTATE);
                Some(f)
            } else {
                None
            };
            vmm.pause().map_err(|e| failed(vm_id, e))?;
            let to = SaveTo {
                memory: memory.as_fd(),
                state: state.as_ref().map(|f| f.as_fd()),
            };
            vmm.save_state(to, SAVE_TIMEOUT)
                .map_err(|e| failed(vm_id, e))?;
            // What the files hold, once on disk.
            let flushed = |f: &File, name: &str| {
                f.sync_all()
                    .and_then(|()| f.metadata())
                    .map(|m| m.len())
                    .map_err(io("flushing", &dir.join(name)))
            };
            let mut memory_bytes = flushed(&memory, SNAPSHOT_MEMORY)?;
            if let Some(f) = &state {
                memory_bytes += flushed(f, SNAPSHOT_VMSTATE)?;
            }
            let Some((root_src, work_src)) = &disks else {
                return Ok(SnapshotSaved {
                    memory_bytes,
                    root_bytes: 0,
                    work_bytes: 0,
                    backend: None,
                    paused_ms: 0,
                });
            };
            let mut backend = SnapshotBackend::Reflink;
            let mut copy = |src: &File, name: &'static str| -> Result<u64, VmOpError> {
                let dst = self.create_in(&dir, name)?;
                made.names.push(name);
                let how = super::snapshot::clone_file(src, &dst)
                    .map_err(io("copying a disk into", &dir.join(name)))?;
                if how == SnapshotBackend::SparseCopy {
                    backend = how;
                }
                dst.metadata()
                    .map(|m| m.len())
                    .map_err(io("inspecting", &dir.join(name)))
            };
            let root_bytes = copy(root_src, ROOT_DISK)?;
            let work_bytes = copy(work_src, WORK_DISK)?;
            Ok(SnapshotSaved {
                memory_bytes,
                root_bytes,
                work_bytes,
                backend: Some(backend),
                paused_ms: 0,
            })
        })();
        let resumed = if spec.resume {
            vmm.resume().map_err(|e| failed(vm_id, e))
        } else {
            Ok(())
        };
        let paused_ms = if spec.resume {
            u64::try_from(paused.elapsed().as_millis()).unwrap_or(u64::MAX)
        } else {
            0
        };
        drop(taken);
        match (saved, resumed) {
            (Ok(saved), Ok(())) => {
                made.names.clear();
                tracing::info!(vm_id, snapshot_id = %spec.snapshot_id, memory_bytes = saved.memory_bytes, paused_ms, "VM snapshot saved");
                Ok(SnapshotSaved { paused_ms, ..saved })
            }
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        }
    }

    /// The snapshot's saved state for a restore: read-only, the owner's
    /// regular file with one link.
    pub(super) fn snapshot_state(&self, snapshot_id: &str) -> Result<OwnedFd, VmOpError> {
        self.snapshot_file(snapshot_id, SNAPSHOT_MEMORY)
            .map(|(f, _)| OwnedFd::from(f))
    }
}

/// A failure of the VMM during a snapshot.
fn failed(vm_id: &str, source: VmmError) -> VmOpError {
    VmOpError::Vcpus {
        vm_id: vm_id.to_string(),
        what: "snapshotting",
        source,
    }
}

/// The files a snapshot made so far, removed when it fails.
struct Made<'a> {
    dir: &'a OwnerDir,
    names: Vec<&'static str>,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        for name in self.names.drain(..) {
            match rustix::fs::unlinkat(self.dir, name, rustix::fs::AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => {
                    tracing::warn!(path = %self.dir.join(name).display(), error = %e, "removing a half-made snapshot file");
                }
            }
        }
    }
}
