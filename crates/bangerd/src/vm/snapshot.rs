//! VM snapshots (issue #15 item 1): `vm snapshot NAME [SNAP]` saves a
//! running or paused QEMU VM through the executor (`SnapshotVm`: its
//! memory and device state and a copy of its disks, into the owner's
//! `snapshots/<id>/`); `snapshot ls | show | rm`. Restoring one is
//! `vm create NEW --from SNAP` (`create.rs`).

use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};

use banger_proto::rpc::Response;
use banger_proto::snapshot::{SnapshotInfo, SnapshotRequest, SnapshotResponse};
use banger_proto::vm::VmInfo;
use banger_proto::vmops::{GuestIdentity, RestoreSpec, VmmKind};
use banger_proto::vmops::{SnapshotSaved, SnapshotVmSpec};
use banger_proto::{ErrorCode, RpcError};

use super::lifecycle::invalid_state;
use super::{VmService, internal, store_err};
use crate::store::{SnapshotRow, VmRow, VmState};

impl VmService {
    pub async fn handle_snapshot(&self, req: SnapshotRequest) -> Result<Response, RpcError> {
        let r = match req {
            SnapshotRequest::List => {
                let bases = self.store.pool_base_ids().map_err(store_err)?;
                SnapshotResponse::List(
                    self.store
                        .list_snapshots()
                        .map_err(store_err)?
                        .iter()
                        .filter(|s| !bases.contains(&s.id))
                        .map(|s| self.snapshot_info(s))
                        .collect(),
                )
            }
            SnapshotRequest::Show { name } => {
                SnapshotResponse::Snapshot(self.snapshot_info(&self.snapshot_by_name(&name)?))
            }
            SnapshotRequest::Remove { name } => {
                self.remove_snapshot(&name)?;
                SnapshotResponse::Removed { name }
            }
        };
        Ok(Response::Snapshot(r))
    }

    /// The snapshot `name`, or `not_found` naming it (a pool snapshot is
    /// the pool's: not found).
    pub(super) fn snapshot_by_name(&self, name: &str) -> Result<SnapshotRow, RpcError> {
        let bases = self.store.pool_base_ids().map_err(store_err)?;
        self.store
            .get_snapshot_by_name(name)
            .map_err(store_err)?
            .filter(|s| !bases.contains(&s.id))
            .ok_or_else(|| {
                RpcError::new(
                    ErrorCode::NotFound,
                    format!("snapshot {name:?} not found (see `banger snapshot ls`)"),
                )
            })
    }

    fn snapshot_info(&self, s: &SnapshotRow) -> SnapshotInfo {
        let image = self.store.get_image(&s.image_id).ok().flatten();
        let kernel = self.store.get_kernel(&s.kernel_id).ok().flatten();
        // What its files hold on the host (sparse disks count what they
        // use).
        let size_bytes = std::fs::read_dir(self.layout.snapshot_dir(&s.id))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.blocks() * 512)
                    .sum()
            })
            .unwrap_or(0);
        SnapshotInfo {
            id: s.id.clone(),
            name: s.name.clone(),
            source_vm: s.source_vm.clone(),
            image: image.map_or_else(|| s.image_id.clone(), |i| i.name),
            kernel: kernel.map_or_else(|| s.kernel_id.clone(), |k| k.name),
            vmm: s.vmm,
            vcpus: s.vcpus,
            memory_mib: s.memory_mib,
            disk_bytes: s.disk_bytes,
            memory_bytes: s.memory_bytes,
            size_bytes,
            created_at: s.created_at,
        }
    }

    /// Save VM `name` as snapshot `snapshot` (`NAME-1`, `NAME-2`, ... when
    /// absent), under the VM's lock. The VM must be running or paused and
    /// run under QEMU; it runs on (or stays paused). Nothing stays behind
    /// on failure.
    pub(super) async fn snapshot_named(
        &self,
        name: &str,
        snapshot: Option<String>,
    ) -> Result<SnapshotInfo, RpcError> {
        let vm = self.vm_by_name(name)?;
        let lock = self.lock_for(&vm.id);
        let _g = lock.lock().await;
        let vm = self.row(&vm.id)?;
        if !matches!(vm.state, VmState::Running | VmState::Paused) {
            return Err(invalid_state(&vm, "snapshot"));
        }
        if vm.vmm != VmmKind::Qemu {
            return Err(RpcError::new(
                ErrorCode::Unavailable,
                format!(
                    "cannot snapshot VM {name}: it runs under {}, whose restored guests need the \
                     guest agent over vsock, which banger's images do not serve yet \
                     (docs/guest.md); QEMU VMs snapshot",
                    vm.vmm
                ),
            ));
        }
        let snap_name = match snapshot {
            Some(s) => {
                check_snapshot_name(&s)?;
                if self
                    .store
                    .get_snapshot_by_name(&s)
                    .map_err(store_err)?
                    .is_some()
                {
                    return Err(RpcError::new(
                        ErrorCode::AlreadyExists,
                        format!("a snapshot named {s:?} already exists"),
                    ));
                }
                s
            }
            None => self.next_snapshot_name(name)?,
        };
        let image = self
            .store
            .get_image(&vm.image_id)
            .map_err(store_err)?
            .ok_or_else(|| internal(format!("image {} of VM {name} is gone", vm.image_id)))?;
        let (id, saved) = self
            .save_into_new_dir(&vm.id, vm.state == VmState::Running, false)
            .await
            .map_err(|e| e.context(format!("saving VM {name} as snapshot {snap_name}")))?;
        let dir_id = id.clone();
        let removed = |e: RpcError| {
            self.remove_snapshot_dir(&dir_id);
            e
        };
        tracing::info!(vm = %name, snapshot = %snap_name, memory_bytes = saved.memory_bytes, paused_ms = saved.paused_ms, backend = saved.backend.map_or("none", |b| b.as_str()), "snapshot saved");
        let row = self
            .store
            .insert_snapshot(&snapshot_row(id, snap_name, &vm, &image, &saved))
            .map_err(|e| removed(store_err(e)))?;
        Ok(self.snapshot_info(&row))
    }

    /// `vm stop NAME --save`: suspend a running or paused QEMU VM to disk.
    /// Its memory and device state are saved (memory only: its own disks,
    /// untouched from then on, are the state's), its VMM is killed
    /// without running the guest again, and the VM is `stopped` with a
    /// saved state that its next `vm start` resumes. A failed save leaves
    /// the VM as it was (resumed if it ran).
    pub(super) async fn stop_saved(&self, name: &str) -> Result<VmInfo, RpcError> {
        let vm = self.vm_by_name(name)?;
        let lock = self.lock_for(&vm.id);
        let _g = lock.lock().await;
        let vm = self.row(&vm.id)?;
        if !matches!(vm.state, VmState::Running | VmState::Paused) {
            return Err(invalid_state(&vm, "stop --save"));
        }
        if vm.vmm != VmmKind::Qemu {
            return Err(RpcError::new(
                ErrorCode::Unavailable,
                format!(
                    "cannot save VM {name}: it runs under {}, whose restored guests need the \
                     guest agent over vsock, which banger's images do not serve yet \
                     (docs/guest.md); `banger vm stop {name}` powers it off",
                    vm.vmm
                ),
            ));
        }
        let (id, saved) = match self.save_into_new_dir(&vm.id, false, true).await {
            Ok(s) => s,
            Err(e) => {
                // Left paused by the save: running again, as it was.
                if vm.state == VmState::Running
                    && let Err(r) = self
                        .privileged(banger_proto::privops::ResumeVm {
                            vm_id: vm.id.clone(),
                        })
                        .await
                {
                    tracing::warn!(vm = %name, error = %r.render(), "resuming after a failed save");
                }
                return Err(e.context(format!("saving VM {name}")));
            }
        };
        tracing::info!(vm = %name, memory_bytes = saved.memory_bytes, "VM saved");
        // Killed before the state is recorded: a recorded state always
        // belongs to a VM whose guest never ran after the save (a state
        // recorded first could outlive a failed kill, and a later resume
        // of that guest would leave it stale; review of stop --save, M1).
        if let Err(e) = self
            .halt_with(
                &vm,
                0,
                true,
                Some("saved to disk (`vm stop --save`); `vm start` resumes it"),
            )
            .await
        {
            self.remove_snapshot_dir(&id);
            return Err(e.context(format!("ending VM {name}'s VMM after its save")));
        }
        crate::crashpoint::hit("stop_save.killed");
        match self.store.set_saved_state(&vm.id, &id) {
            Ok(Some(old)) => self.remove_snapshot_dir(&old),
            Ok(None) => {}
            Err(e) => {
                self.remove_snapshot_dir(&id);
                let _ = self.store.set_vm_state(
                    &vm.id,
                    VmState::Stopped,
                    VmState::Stopped,
                    Some("killed: its saved state could not be recorded"),
                );
                return Err(store_err(e).context(format!(
                    "recording VM {name}'s saved state (the VM is stopped; its next start boots)"
                )));
            }
        }
        Ok(self.info(&self.row(&vm.id)?))
    }

    /// The saved state of VM `vm` (`vm stop --save`), if any: the
    /// directory's id and what the launch restores — the VM's own
    /// address, MAC and name (the agent re-applies them and sets the
    /// clock; no file, so sshd keeps its host key). The boot takes it out
    /// of the store only right before the restoring launch
    /// (`Self::consume_saved`): a start that fails before that keeps it.
    pub(super) fn saved_restore(
        &self,
        vm: &VmRow,
    ) -> Result<Option<(String, RestoreSpec)>, RpcError> {
        let lease = self
            .store
            .get_lease(&vm.id)
            .map_err(store_err)?
            .ok_or_else(|| internal(format!("VM {} has no lease", vm.name)))?;
        let Some(id) = self.store.saved_state(&vm.id).map_err(store_err)? else {
            return Ok(None);
        };
        let restore = RestoreSpec {
            snapshot_id: id.clone(),
            identity: GuestIdentity {
                files: Vec::new(),
                ip: lease.ip,
                prefix: self.network.subnet().prefix(),
                gateway: self.network.bridge_ip(),
                hostname: vm.name.clone(),
            },
        };
        Ok(Some((id, restore)))
    }

    /// Take VM `vm_id`'s saved state out of the store right before the
    /// launch that restores it: once the restored guest runs, its disks
    /// move on from what the saved memory knows, so it is never restored
    /// twice (a restore that fails leaves a VM that boots from its disks).
    pub(super) fn consume_saved(&self, vm_id: &str) -> Result<(), RpcError> {
        self.store
            .take_saved_state(vm_id)
            .map(drop)
            .map_err(store_err)
    }

    /// Save VM `vm_id` into a new snapshot directory (`SnapshotVm`; the
    /// caller holds the VM's lock): the directory's id and the executor's
    /// answer. On failure the directory is removed again.
    pub(super) async fn save_into_new_dir(
        &self,
        vm_id: &str,
        resume: bool,
        memory_only: bool,
    ) -> Result<(String, SnapshotSaved), RpcError> {
        let id = crate::store::new_id().map_err(store_err)?;
        self.make_snapshot_dir(&id)?;
        crate::crashpoint::hit("snapshot.dir_made");
        match self
            .privileged(SnapshotVmSpec {
                vm_id: vm_id.to_string(),
                snapshot_id: id.clone(),
                resume,
                memory_only,
            })
            .await
        {
            Ok(saved) => {
                crate::crashpoint::hit("snapshot.saved");
                Ok((id, saved))
            }
            Err(e) => {
                self.remove_snapshot_dir(&id);
                Err(e)
            }
        }
    }

    /// `snapshots/<id>/`, made the owner's (mode 0700).
    pub(super) fn make_snapshot_dir(&self, id: &str) -> Result<(), RpcError> {
        let dir = self.layout.snapshot_dir(id);
        let parent = dir.parent().expect("a snapshot directory has a parent");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .and_then(|()| std::fs::DirBuilder::new().mode(0o700).create(&dir))
            .map_err(|e| internal(format!("creating {}: {e}", dir.display())))
    }

    /// Remove `snapshots/<id>/` and what it holds; a failure is logged
    /// (the startup sweep removes what no row names).
    pub(super) fn remove_snapshot_dir(&self, id: &str) {
        if let Err(e) = self.remove_dir_of(id) {
            let dir = self.layout.snapshot_dir(id);
            tracing::warn!(path = %dir.display(), error = %e, "removing a snapshot directory");
        }
    }

    /// Remove `snapshots/<id>/` and what it holds; missing is fine.
    fn remove_dir_of(&self, id: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.layout.snapshot_dir(id)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            done => done,
        }
    }

    /// `NAME-k` for the smallest k ≥ 1 no snapshot has (cut so it stays a
    /// 63-character label).
    fn next_snapshot_name(&self, vm: &str) -> Result<String, RpcError> {
        let taken: std::collections::HashSet<String> = self
            .store
            .list_snapshots()
            .map_err(store_err)?
            .into_iter()
            .map(|s| s.name)
            .collect();
        (1..)
            .map(|k| {
                let suffix = format!("-{k}");
                let keep = 63usize.saturating_sub(suffix.len()).min(vm.len());
                format!("{}{suffix}", vm[..keep].trim_end_matches('-'))
            })
            .find(|n| !taken.contains(n))
            .ok_or_else(|| internal("no free snapshot name"))
    }

    /// Remove snapshot `name`: its row, then its directory. VMs made from
    /// it are not touched (their disks are their own copies).
    fn remove_snapshot(&self, name: &str) -> Result<(), RpcError> {
        let row = self.snapshot_by_name(name)?;
        self.store.delete_snapshot(&row.id).map_err(store_err)?;
        self.remove_dir_of(&row.id).map_err(|e| {
            internal(format!(
                "snapshot {name} is forgotten, but removing {} failed: {e}",
                self.layout.snapshot_dir(&row.id).display()
            ))
        })
    }

    /// Remove snapshot directories no row names: a snapshot interrupted
    /// before its row was written (the daemon died during the save).
    pub(super) fn sweep_snapshot_dirs(&self) {
        let root = self
            .layout
            .state_dir
            .join(banger_proto::layout::SNAPSHOTS_DIR);
        let Ok(entries) = std::fs::read_dir(&root) else {
            return;
        };
        let known = self.store.list_snapshots().and_then(|rows| {
            let saved = self.store.saved_state_ids()?;
            Ok(rows
                .into_iter()
                .map(|s| s.id)
                .chain(saved)
                .collect::<std::collections::HashSet<String>>())
        });
        let known = match known {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "listing snapshots for the sweep");
                return;
            }
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if banger_proto::ids::is_id(&name) && !known.contains(&name) {
                tracing::info!(path = %e.path().display(), "removing an unfinished snapshot");
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    tracing::warn!(path = %e.path().display(), error = %err, "removing an unfinished snapshot");
                }
            }
        }
    }
}

/// The row of snapshot `id` named `name`: VM `vm` of image `image` as the
/// executor saved it (`saved`).
pub(super) fn snapshot_row(
    id: String,
    name: String,
    vm: &VmRow,
    image: &crate::store::ImageRow,
    saved: &SnapshotSaved,
) -> SnapshotRow {
    SnapshotRow {
        id,
        name,
        source_vm: vm.name.clone(),
        image_id: image.id.clone(),
        kernel_id: image.kernel_id.clone(),
        vmm: vm.vmm,
        vcpus: vm.vcpus,
        memory_mib: vm.memory_mib,
        disk_bytes: vm.disk_bytes,
        memory_bytes: saved.memory_bytes,
        created_at: 0,
    }
}

/// A snapshot name is a VM name's kind of word: one lowercase DNS label.
fn check_snapshot_name(name: &str) -> Result<(), RpcError> {
    banger_proto::guest::check_hostname(name).map_err(|r| {
        RpcError::new(
            ErrorCode::BadRequest,
            format!("invalid snapshot name {name:?}: it {r}"),
        )
    })
}
