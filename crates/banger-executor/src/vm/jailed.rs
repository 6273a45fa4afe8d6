//! Disk tools (e2fsck, resize2fs, mkfs.ext4, debugfs) run jailed
//! (`banger_host::jail`) in both modes: as the install's tool uid, which
//! owns nothing, in their own namespaces, seeing `/usr`, a minimal `/dev`
//! and the one disk at [`DISK`] — the inode behind root's checked
//! descriptor, never a path. The tool uid reaches that inode through an
//! access ACL set on the descriptor for the grant's lifetime ([`DiskGrant`])
//! and removed afterwards, with the original permission bits put back.
//! The same grant, read-only or read-write, is what a VM slot's uid gets
//! for a jailed Firecracker's drive, for the launch only (Firecracker jail
//! design, part 2 step 3; its caller comes with step 5).
//!
//! Each grant is journaled (VM id, disk, device and inode, the mode and
//! exact ACL bytes before it, owner and group) before the ACL changes, and the entry cleared
//! once revoked; an executor starting on a journal that still holds one (a
//! helper killed in between) puts the recorded ACL and mode back on that
//! inode ([`VmHost::restore_crashed_grants`]).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::jail::Jail;
use banger_host::runner::{Cmd, Output, Runner};
use banger_proto::layout::{SNAPSHOT_MEMORY, SNAPSHOT_VMSTATE, SNAPSHOTS_DIR, VMS_DIR};

use super::VmHost;
use super::error::{VmOpError, io};
use super::slots::Slot;
use crate::journal::GrantEntry;

/// Where the disk appears inside the jail.
pub(super) const DISK: &str = "/disk";
/// Where a read-only staging directory appears inside the jail.
pub(super) const STAGING: &str = "/staging";
/// The journaled "disk" of a grant of a snapshot's file: this and the
/// file's name (`snapshot/memory`), under the snapshot's id.
const SNAPSHOT_GRANT: &str = "snapshot/";

/// A jail uid's access to one disk, revoked on drop.
pub(super) struct DiskGrant<'a> {
    host: &'a VmHost,
    disk: &'a File,
    path: PathBuf,
    /// Who was granted it (the tool uid, or a VM slot's for a launch),
    /// and whether to write.
    uid: u32,
    writable: bool,
    /// Taken by the drop that revokes it.
    grant: Option<banger_host::jail::Grant>,
    /// Its journal entry, cleared once revoked.
    entry: GrantEntry,
}

impl VmHost {
    /// Grant the tool uid (`slot` `None`), or the uid of `slot` — a VM
    /// slot reserved by the launch in flight, whose grant for a
    /// Firecracker drive lives only during that launch: Firecracker opens
    /// its drives once, at `PUT /drives` — access to the disk behind
    /// `disk` (a descriptor the caller opened beneath the state dir and
    /// checked): read-write when `writable`, else read-only. No other uid
    /// is ever granted anything: a slot's grant needs the launch's
    /// reservation ([`Slot`], made only by `reserve_slot`), not a bare uid.
    pub(super) fn grant_disk<'a>(
        &'a self,
        disk: &'a File,
        path: &Path,
        slot: Option<&Slot<'_>>,
        writable: bool,
    ) -> Result<DiskGrant<'a>, VmOpError> {
        let uid = slot.map_or_else(|| self.jail.tool_uid(), |s| s.uid());
        let (vm_id, disk_name) = self.granted_disk(path)?;
        if slot.is_none() {
            // A tool's lock, on root's descriptor, lasts until the caller
            // drops `disk` (after the tool ended): no VMM launches on the
            // disk meanwhile, and no tool writes a disk a VMM holds. A
            // launch's lock is the VMM's own (`fc_files`).
            super::vmm_files::lock_disk(disk, path, !writable)?;
        }
        let range = self.jail.uid_base..self.jail.uid_base + self.jail.count;
        let mut journaled = None;
        let granted =
            banger_host::jail::grant_recorded(disk.as_fd(), uid, writable, range, |prior| {
                let entry = GrantEntry {
                    vm_id,
                    disk: disk_name,
                    dev: prior.dev,
                    ino: prior.ino,
                    mode: prior.mode,
                    acl: prior.acl.clone(),
                    uid: Some(prior.uid),
                    gid: Some(prior.gid),
                    failed_starts: 0,
                };
                let mut txn = self.journal.open().map_err(std::io::Error::other)?;
                txn.state.grants.push(entry.clone());
                txn.save().map_err(std::io::Error::other)?;
                journaled = Some(entry);
                Ok(())
            });
        match (granted, journaled) {
            (Ok(grant), Some(entry)) => Ok(DiskGrant {
                host: self,
                disk,
                path: path.to_path_buf(),
                uid,
                writable,
                grant: Some(grant),
                entry,
            }),
            (Ok(_), None) => unreachable!("a grant is journaled before it is made"),
            (Err(e), journaled) => {
                if let Some(entry) = journaled {
                    self.forget_grant(&entry);
                }
                Err(io("granting the disk tools access to", path)(e))
            }
        }
    }

    /// The (VM id, disk) a grant of `path` is journaled under: a file of a
    /// VM directory beneath the state dir, a VM's dm-snapshot device, or
    /// a snapshot's state or memory (a Firecracker restore's: the
    /// snapshot's id, and `snapshot/<file>` as the disk).
    fn granted_disk(&self, path: &Path) -> Result<(String, String), VmOpError> {
        let invalid = || VmOpError::Invalid {
            what: "disk",
            value: path.display().to_string(),
            reason: "neither a VM's disk file nor a banger dm device".into(),
        };
        if let Ok(rel) = path.strip_prefix(&self.state_dir) {
            let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
            return match parts[..] {
                [VMS_DIR, vm_id, name] if self.disk_path(vm_id, name).is_ok_and(|p| p == path) => {
                    Ok((vm_id.to_string(), name.to_string()))
                }
                [SNAPSHOTS_DIR, sid, name] => {
                    let disk = format!("{SNAPSHOT_GRANT}{name}");
                    match self.disk_path(sid, &disk) {
                        Ok(p) if p == path => Ok((sid.to_string(), disk)),
                        _ => Err(invalid()),
                    }
                }
                _ => Err(invalid()),
            };
        }
        let name = path
            .strip_prefix("/dev/mapper")
            .ok()
            .and_then(|n| n.to_str())
            .ok_or_else(invalid)?;
        let vm_id = name
            .strip_prefix(super::snapshot::dm::DM_PREFIX)
            .ok_or_else(invalid)?;
        if !self.disk_path(vm_id, name).is_ok_and(|p| p == path) {
            return Err(invalid());
        }
        Ok((vm_id.to_string(), name.to_string()))
    }

    /// The path of a journaled grant's disk: `vms/<vm_id>/<disk>` beneath
    /// the state dir for the root and work disk files, the dm device
    /// `/dev/mapper/banger-<vm_id>`; anything else is refused.
    fn disk_path(&self, vm_id: &str, disk: &str) -> Result<PathBuf, VmOpError> {
        super::validate::id("VM id", vm_id)?;
        if disk == super::disks::ROOT_DISK || disk == super::disks::WORK_DISK {
            return Ok(self.vm_dir(vm_id).join(disk));
        }
        if let Some(name) = disk.strip_prefix(SNAPSHOT_GRANT) {
            // `vm_id` is then the snapshot's id.
            if name == SNAPSHOT_MEMORY || name == SNAPSHOT_VMSTATE {
                return Ok(self.snapshot_path(vm_id, name));
            }
            return Err(VmOpError::Invalid {
                what: "snapshot file",
                value: name.to_string(),
                reason: "not a snapshot's memory or vmstate".into(),
            });
        }
        super::snapshot::dm::check_dm_name(disk)?;
        if disk.strip_prefix(super::snapshot::dm::DM_PREFIX) != Some(vm_id) {
            return Err(VmOpError::Invalid {
                what: "dm device",
                value: disk.to_string(),
                reason: format!("not the device of VM {vm_id}"),
            });
        }
        Ok(Path::new("/dev/mapper").join(disk))
    }

    /// Drop one journal entry equal to `entry` (a grant revoked, or never
    /// made).
    fn forget_grant(&self, entry: &GrantEntry) {
        let cleared = self.journal.open().and_then(|mut txn| {
            if let Some(i) = txn.state.grants.iter().position(|g| g == entry) {
                txn.state.grants.remove(i);
            }
            txn.save()
        });
        if let Err(e) = cleared {
            tracing::error!(vm_id = %entry.vm_id, disk = %entry.disk, error = %e, "clearing a revoked grant from the journal");
        }
    }

    /// At start: put back the ACL and mode each journaled grant recorded
    /// (a helper killed between a grant and its revoke). The disk is opened
    /// as for a tool (beneath the state dir without symlinks or mounts, the
    /// owner's single-link regular file; a dm device by its number) and
    /// changed only when it is still the inode granted (device and inode)
    /// with the owner and group it had ([`restored_mode`]). An entry whose
    /// disk is gone or another inode is logged and dropped; one that fails
    /// otherwise (opening refused, the restore itself) is kept for the next
    /// start, at most [`MAX_RESTORE_STARTS`] starts in all.
    pub(crate) fn restore_crashed_grants(&self) {
        let mut txn = match self.journal.open() {
            Ok(txn) => txn,
            Err(e) => {
                tracing::error!(error = %e, "reading the journal for crashed disk grants");
                return;
            }
        };
        if txn.state.grants.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut txn.state.grants);
        for entry in entries {
            let Err(e) = self.restore_grant(&entry) else {
                continue;
            };
            let (vm_id, disk) = (entry.vm_id.clone(), entry.disk.clone());
            if gone(&e) {
                tracing::warn!(%vm_id, %disk, reason = %e, "a journaled disk grant is not restored: its disk is gone or another; dropping it");
            } else if let Some(kept) = kept_after_failure(entry) {
                tracing::error!(%vm_id, %disk, error = %e, "putting back a disk's ACL after a crash; kept for the next start");
                txn.state.grants.push(kept);
            } else {
                tracing::error!(%vm_id, %disk, error = %e, starts = MAX_RESTORE_STARTS, "putting back a disk's ACL after a crash failed at every start; dropping it");
            }
        }
        if let Err(e) = txn.save() {
            tracing::error!(error = %e, "saving the journal after restoring crashed disk grants");
        }
    }

    /// One entry of [`VmHost::restore_crashed_grants`].
    fn restore_grant(&self, entry: &GrantEntry) -> Result<(), Unrestored> {
        let file = self
            .disk_path(&entry.vm_id, &entry.disk)
            .and_then(|path| self.open_disk(&path, "granted disk"))
            .map_err(Unrestored::Open)?;
        let st = rustix::fs::fstat(&file).map_err(|e| Unrestored::Restore(e.into()))?;
        let mode = restored_mode(entry, &st).map_err(Unrestored::Other)?;
        banger_host::jail::restore(file.as_fd(), mode, entry.acl.as_deref())
            .map_err(Unrestored::Restore)?;
        tracing::info!(vm_id = %entry.vm_id, disk = %entry.disk, "put back a disk's ACL and mode a crashed grant left");
        Ok(())
    }

    /// Run one tool jailed on `disk` (its argument naming the disk is
    /// [`DISK`]), for up to five minutes.
    pub(super) fn tool(
        &self,
        what: &str,
        cmd: Cmd,
        disk: &File,
        path: &Path,
    ) -> Result<(), VmOpError> {
        self.grant_disk(disk, path, None, true)?
            .run(what, cmd.timeout(Duration::from_secs(300)), None)
            .map(drop)
    }
}

/// How many starts try to put back a crashed grant before its entry is
/// dropped (a restore that keeps failing is not retried forever).
pub(super) const MAX_RESTORE_STARTS: u32 = 3;

/// Why a journaled grant was not put back.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unrestored {
    #[error("opening the disk")]
    Open(#[source] VmOpError),
    /// The disk is another inode, or has another owner or group.
    #[error("{0}")]
    Other(String),
    #[error("putting back its ACL and mode")]
    Restore(#[source] std::io::Error),
}

/// Whether a grant not put back for `e` is dropped at once: its disk is
/// gone (no file, no dm device, `EINVAL` from the kernel) or is another
/// inode or owner's. Anything else (access refused, out of descriptors, a
/// restore that failed) may pass: the entry is kept.
pub(super) fn gone(e: &Unrestored) -> bool {
    use rustix::io::Errno;
    let gone_errno = |e: &std::io::Error| {
        matches!(
            Errno::from_io_error(e),
            Some(Errno::NOENT | Errno::NODEV | Errno::NXIO | Errno::INVAL)
        )
    };
    match e {
        Unrestored::Open(VmOpError::Missing { .. }) | Unrestored::Other(_) => true,
        Unrestored::Open(VmOpError::Io { source, .. }) | Unrestored::Restore(source) => {
            gone_errno(source)
        }
        Unrestored::Open(_) => false,
    }
}

/// `entry` after a start failed to put it back: kept with the failure
/// counted, or `None` after [`MAX_RESTORE_STARTS`] failed starts.
pub(super) fn kept_after_failure(mut entry: GrantEntry) -> Option<GrantEntry> {
    entry.failed_starts = entry.failed_starts.saturating_add(1);
    (entry.failed_starts < MAX_RESTORE_STARTS).then_some(entry)
}

/// The mode a crashed grant's restore puts on the inode `st` describes,
/// or why it leaves it alone: another inode, or another owner or group
/// than at the grant (the mode, set-gid bit included, is put back as
/// root). An entry that recorded no owner and group gets its mode back
/// without the set-id bits.
pub(super) fn restored_mode(entry: &GrantEntry, st: &rustix::fs::Stat) -> Result<u32, String> {
    if (st.st_dev, st.st_ino) != (entry.dev, entry.ino) {
        return Err(format!(
            "it is another inode now ({}:{}, granted {}:{})",
            st.st_dev, st.st_ino, entry.dev, entry.ino
        ));
    }
    match (entry.uid, entry.gid) {
        (Some(uid), Some(gid)) if (uid, gid) == (st.st_uid, st.st_gid) => Ok(entry.mode),
        (Some(uid), Some(gid)) => Err(format!(
            "its owner is {}:{} now, granted {uid}:{gid}",
            st.st_uid, st.st_gid
        )),
        _ => Ok(entry.mode & !0o6000),
    }
}

impl DiskGrant<'_> {
    /// Run `cmd` as the granted uid in a jail holding the disk at [`DISK`]
    /// (writable as granted) and, when given, the directory `staging` at
    /// [`STAGING`] (read-only); success required.
    pub(super) fn run(
        &self,
        what: &str,
        cmd: Cmd,
        staging: Option<&File>,
    ) -> Result<Output, VmOpError> {
        let uid = self.uid;
        let bound = |e| io("binding into the tool jail", &self.path)(e);
        let mut jail = Jail::new(uid, uid)
            .bind(self.disk.as_fd(), &DISK[1..], self.writable)
            .map_err(bound)?;
        if let Some(dir) = staging {
            jail = jail
                .bind(dir.as_fd(), &STAGING[1..], false)
                .map_err(bound)?;
        }
        // No /proc in the jail: e2fsprogs' "is it mounted?" check reads
        // /proc/mounts and would refuse without this.
        Runner
            .run(&cmd.env("EXT2FS_NO_MTAB_OK", "1").jail(jail))
            .map_err(|source| VmOpError::Tool {
                what: what.to_string(),
                source,
            })
    }
}

impl Drop for DiskGrant<'_> {
    fn drop(&mut self) {
        let Some(grant) = self.grant.take() else {
            return;
        };
        match banger_host::jail::revoke(self.disk.as_fd(), grant) {
            Ok(()) => self.host.forget_grant(&self.entry),
            // The entry stays: the next start puts the disk back.
            Err(e) => {
                tracing::error!(path = %self.path.display(), uid = self.uid, error = %e, "revoking a jail uid's access to a disk")
            }
        }
    }
}
