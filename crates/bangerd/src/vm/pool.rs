//! The warm pool (issue #15 item 2; docs/vm.md, "The warm pool").
//!
//! For every image the owner's `[pool]` config gives a size, the daemon
//! keeps that many clones restored from the image's pool snapshot and
//! paused. A clone is a VM like any other (row, lease, tap, disks, VMM,
//! `NAME.vm`), named `pool-<12 hex>` and marked pooled in the store
//! (`pool_vms`), which hides it from `vm ls`, `vm show` and every command
//! that names a VM. `vm create` of that image with the pool's sizes takes
//! the oldest ready clone instead of building a VM: the row is renamed in
//! the same transaction that takes it out of the pool, its `.vm` name and
//! `known_hosts` line follow (the `renamed` capability hook), the VMM
//! resumes, and the guest gets its new hostname and the clock over the
//! SSH master the fill opened — no handshake at take time.
//!
//! What a clone keeps from its fill: its address, MAC and SSH host key
//! were applied by the guest agent before its tap came up (as every
//! restore's are, `create.rs`), so they are its own; only the name and
//! the clock are the take's.
//!
//! The refill task ([`VmService::spawn_pool`]) runs one pass at start, after
//! every take, and every [`POOL_TICK`]. A pass removes what the pool must
//! not keep (clones that are not ready — a fill that died with a daemon —
//! or no longer paused, and clones beyond an image's size), then fills one
//! clone at a time while the owner's limits allow: the memory of all
//! pooled clones together (`pool.max_memory`), and the 1-minute load
//! average (`pool.max_load_percent` of the CPUs). An image without a pool
//! snapshot gets one first: a VM of it boots, is snapshotted paused
//! (memory, devices, disks) and removed. A failure is logged and that
//! image waits [`FAILURE_BACKOFF`]; a restore that fails drops the pool
//! snapshot, so the next pass makes a fresh one.
//!
//! QEMU only, as snapshots are (`snapshot.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_proto::vm::{PoolEntry, VmCreated, VmmKind};
use banger_proto::{ErrorCode, RpcError};

use super::create::{HostLimits, check_resources};
use super::ops::OpRegistry;
use super::{GUEST_USER, VmService, internal, progress, store_err};
use crate::server::ProgressSink;
use crate::store::{ImageRow, NewVm, PoolWant, SnapshotRow, VmRow, VmState};

/// How often the refill task looks at the pool without being woken.
pub const POOL_TICK: Duration = Duration::from_secs(15);
/// How long the refill waits after a take woke it.
pub const REFILL_DELAY: Duration = Duration::from_secs(2);
/// How long an image whose fill failed waits before the next try; each
/// failure in a row doubles it, up to [`MAX_BACKOFF`].
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(60);
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a take's commands in the guest may take.
const TAKE_SSH_TIMEOUT: Duration = Duration::from_secs(30);
/// The name prefix of pooled clones (and of the VMs that make pool
/// snapshots, and of the snapshots).
const PREFIX: &str = "pool-";

/// The refill task's wake-up, its memory of failures, and the images it
/// must leave alone.
#[derive(Debug, Default)]
pub struct PoolState {
    wake: tokio::sync::Notify,
    /// Per image, its last fill's failure (`vm pool` shows it).
    failed: std::sync::Mutex<HashMap<String, Failure>>,
    /// Why no image is pooled now (`vm create` would not use QEMU here).
    unusable: std::sync::Mutex<Option<String>>,
    /// Images being removed (`drain_pool`): no clone is made of them.
    held: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Held by the refill while it fills, and by a drain before it lists.
    filling: tokio::sync::Mutex<()>,
}

/// An image's failed fills in a row: the last one's time and message, and
/// how long the image waits.
#[derive(Debug, Clone)]
struct Failure {
    at: Instant,
    wait: Duration,
    message: String,
}

/// While this lives, the refill makes no clone of its image (returned by
/// [`VmService::drain_pool`]).
#[derive(Debug)]
pub struct PoolHold(Option<(Arc<VmService>, String)>);

impl Drop for PoolHold {
    fn drop(&mut self) {
        if let Some((svc, image_id)) = self.0.take() {
            svc.pool
                .held
                .lock()
                .expect("pool lock poisoned")
                .remove(&image_id);
        }
    }
}

impl VmService {
    /// The refill task: a pass now, then after every take and every
    /// [`POOL_TICK`]. It stops when the handle is aborted.
    pub fn spawn_pool(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let svc = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                svc.refill().await;
                tokio::select! {
                    // Woken by a take: the clone just taken has the CPU to
                    // itself for its first moments.
                    () = svc.pool.wake.notified() => tokio::time::sleep(REFILL_DELAY).await,
                    () = tokio::time::sleep(POOL_TICK) => {}
                }
            }
        })
    }

    /// The VM a clone of `image` is: QEMU (snapshots are QEMU's), the
    /// configured default sizes and NAT.
    fn pool_want<'a>(&self, image: &'a ImageRow) -> PoolWant<'a> {
        PoolWant {
            image_id: &image.id,
            vmm: VmmKind::Qemu,
            vcpus: self.config.vm.default_vcpus,
            memory_mib: self.config.vm.default_memory_mib,
            disk_bytes: self.config.vm.default_disk_bytes,
            nat: self.config.network.nat_default,
        }
    }

    /// `vm pool`: every image the pool keeps clones of, or has clones of.
    pub(super) fn pool_entries(&self) -> Result<Vec<PoolEntry>, RpcError> {
        let pooled = self.store.pool_vms().map_err(store_err)?;
        let mut out = Vec::new();
        for image in self.store.list_images().map_err(store_err)? {
            let target = self.config.pool.size_for(&image.name);
            let mine: Vec<_> = pooled.iter().filter(|p| p.image_id == image.id).collect();
            if target == 0 && mine.is_empty() {
                continue;
            }
            let base = self.store.pool_base(&image.id).map_err(store_err)?;
            let unusable = self
                .pool
                .unusable
                .lock()
                .expect("pool lock poisoned")
                .clone();
            let failed = self.failure(&image.id).map(|f| {
                format!(
                    "the last fill failed ({}); the next try in {}s",
                    f.message,
                    f.wait.saturating_sub(f.at.elapsed()).as_secs()
                )
            });
            out.push(PoolEntry {
                image: image.name.clone(),
                size: target,
                ready: mine.iter().filter(|p| p.ready).count() as u32,
                filling: mine.iter().filter(|p| !p.ready).count() as u32,
                snapshot: base.map(|b| b.name),
                problem: unusable.or(failed),
            });
        }
        Ok(out)
    }

    /// Whether VM `vm_id` is a pooled clone (hidden from the owner).
    pub(super) fn is_pooled(&self, vm_id: &str) -> Result<bool, RpcError> {
        self.store.is_pooled(vm_id).map_err(store_err)
    }

    /// One pass of the refill task (see the module's doc).
    async fn refill(self: &Arc<Self>) {
        // No pool configured and none left to remove: nothing to ask the
        // executor or sweep every tick.
        let configured =
            self.config.pool.size > 0 || self.config.pool.images.values().any(|n| *n > 0);
        let leftovers = !self.store.pool_vms().unwrap_or_default().is_empty()
            || !self.store.pool_base_ids().unwrap_or_default().is_empty();
        if !configured && !leftovers {
            return;
        }
        // Masters a killed daemon left (a clone's outlives its client).
        let svc = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || svc.sweep_ssh_masters()).await;
        // Clones are QEMU's: where `vm create` would choose another VMM,
        // none would be taken, so none is kept.
        let unusable = match self.choose_vmm(None, &ProgressSink::discard()).await {
            Ok(VmmKind::Qemu) => None,
            Ok(other) => Some(format!(
                "vm create uses {other} here (vm.default_vmm), and the pool keeps QEMU clones only"
            )),
            Err(e) => Some(e.render()),
        };
        let usable = unusable.is_none();
        *self.pool.unusable.lock().expect("pool lock poisoned") = unusable;
        if let Err(e) = self.prune_pool(usable).await {
            tracing::warn!(error = %e.render(), "pool: pruning");
        }
        if !usable {
            return;
        }
        let images = match self.store.list_images() {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "pool: listing images");
                return;
            }
        };
        for image in images {
            let target = self.config.pool.size_for(&image.name) as usize;
            loop {
                let kept = match self.store.pool_vms() {
                    Ok(p) => p.into_iter().filter(|p| p.image_id == image.id).count(),
                    Err(_) => break,
                };
                if kept >= target || self.backing_off(&image.id) || !self.room_for_a_clone() {
                    break;
                }
                let _filling = self.pool.filling.lock().await;
                if self
                    .pool
                    .held
                    .lock()
                    .expect("pool lock poisoned")
                    .contains(&image.id)
                {
                    break;
                }
                match self.fill_one(&image).await {
                    Ok(()) => self.pool_succeeded(&image.id),
                    Err(e) => {
                        let wait = self.pool_failed(&image.id, e.render());
                        tracing::warn!(image = %image.name, error = %e.render(), "pool: a fill failed; this image waits {}s", wait.as_secs());
                        break;
                    }
                }
            }
        }
    }

    /// Remove what the pool must not keep: clones not ready (their fill is
    /// not running: only this task fills, and it is here), no longer
    /// paused, not the VM a create would take now (the config's sizes
    /// changed), beyond their image's size (the newest go), or all of them
    /// when the pool is not `usable`; and pool snapshots of other sizes or
    /// of images that keep no clone.
    async fn prune_pool(self: &Arc<Self>, usable: bool) -> Result<(), RpcError> {
        let pooled = self.store.pool_vms().map_err(store_err)?;
        let mut kept: HashMap<String, usize> = HashMap::new();
        for p in pooled {
            let Some(vm) = self.store.get_vm(&p.vm_id).map_err(store_err)? else {
                continue;
            };
            let Some(image) = self.store.get_image(&p.image_id).map_err(store_err)? else {
                continue;
            };
            let target = if usable {
                self.config.pool.size_for(&image.name) as usize
            } else {
                0
            };
            let sized = self.pool_want(&image).is(&vm);
            let n = kept.entry(p.image_id.clone()).or_default();
            let keep = p.ready && vm.state == VmState::Paused && sized && *n < target;
            if keep {
                *n += 1;
                continue;
            }
            tracing::info!(vm = %vm.name, state = %vm.state, ready = p.ready, "pool: removing a clone the pool does not keep");
            self.remove_pooled(&vm.id).await;
        }
        for image in self.store.list_images().map_err(store_err)? {
            let Some(base) = self.store.pool_base(&image.id).map_err(store_err)? else {
                continue;
            };
            let want = self.pool_want(&image);
            let sized = base.vcpus == want.vcpus
                && base.memory_mib == want.memory_mib
                && base.disk_bytes == want.disk_bytes;
            if !sized || !usable || self.config.pool.size_for(&image.name) == 0 {
                tracing::info!(image = %image.name, snapshot = %base.name, "pool: dropping a pool snapshot the pool does not use");
                self.drop_pool_base(&base);
            }
        }
        Ok(())
    }

    /// Remove pooled VM `vm_id` under its lock, if it is still pooled (a
    /// create may have taken it meanwhile).
    async fn remove_pooled(self: &Arc<Self>, vm_id: &str) {
        let lock = self.lock_for(vm_id);
        let _g = lock.lock().await;
        if self.store.is_pooled(vm_id).unwrap_or(false) {
            self.destroy(vm_id).await;
            // Its SSH master (which has no idle end) goes with it.
            let svc = Arc::clone(self);
            let _ = tokio::task::spawn_blocking(move || svc.sweep_ssh_masters()).await;
        }
    }

    /// Remove image `image_name`'s pool: its clones and its pool snapshot
    /// (before `image rm`, which they would otherwise refuse). The refill
    /// leaves the image alone while the returned hold lives.
    pub async fn drain_pool(self: &Arc<Self>, image_name: &str) -> Result<PoolHold, RpcError> {
        let Some(image) = self
            .store
            .get_image_by_name(image_name)
            .map_err(store_err)?
        else {
            return Ok(PoolHold(None));
        };
        // An owner's VM keeps the image: the removal is refused, naming it,
        // and the pool stays as it is.
        let pooled = self.store.pool_vms().map_err(store_err)?;
        let bases = self.store.pool_base_ids().map_err(store_err)?;
        let owners_use_it = self
            .store
            .list_vms()
            .map_err(store_err)?
            .iter()
            .any(|v| v.image_id == image.id && !pooled.iter().any(|p| p.vm_id == v.id))
            || self
                .store
                .list_snapshots()
                .map_err(store_err)?
                .iter()
                .any(|s| s.image_id == image.id && !bases.contains(&s.id));
        if owners_use_it {
            return Ok(PoolHold(None));
        }
        let hold = PoolHold(Some((Arc::clone(self), image.id.clone())));
        self.pool
            .held
            .lock()
            .expect("pool lock poisoned")
            .insert(image.id.clone());
        // A fill in flight ends before the clones are listed: the refill
        // pass holds `filling` while it fills.
        let _filling = self.pool.filling.lock().await;
        for p in self.store.pool_vms().map_err(store_err)? {
            if p.image_id == image.id {
                self.remove_pooled(&p.vm_id).await;
            }
        }
        if let Some(base) = self.store.pool_base(&image.id).map_err(store_err)? {
            self.drop_pool_base(&base);
        }
        Ok(hold)
    }

    fn drop_pool_base(&self, base: &SnapshotRow) {
        match self.store.delete_snapshot(&base.id) {
            Ok(_) => self.remove_snapshot_dir(&base.id),
            Err(e) => {
                tracing::warn!(snapshot = %base.name, error = %e, "pool: dropping a pool snapshot")
            }
        }
    }

    /// Every image's pool removed (before `host teardown`): the holds keep
    /// the refill off them until they are dropped.
    pub async fn drain_all_pools(self: &Arc<Self>) -> Result<Vec<PoolHold>, RpcError> {
        let mut holds = Vec::new();
        for image in self.store.list_images().map_err(store_err)? {
            holds.push(self.drain_pool(&image.name).await?);
        }
        Ok(holds)
    }

    fn failure(&self, image_id: &str) -> Option<Failure> {
        let failed = self.pool.failed.lock().expect("pool lock poisoned");
        failed.get(image_id).cloned()
    }

    fn backing_off(&self, image_id: &str) -> bool {
        self.failure(image_id)
            .is_some_and(|f| f.at.elapsed() < f.wait)
    }

    /// Record a failed fill of `image_id`: how long it now waits.
    fn pool_failed(&self, image_id: &str, message: String) -> Duration {
        let mut failed = self.pool.failed.lock().expect("pool lock poisoned");
        let wait = failed
            .get(image_id)
            .map_or(FAILURE_BACKOFF, |f| (f.wait * 2).min(MAX_BACKOFF));
        failed.insert(
            image_id.to_string(),
            Failure {
                at: Instant::now(),
                wait,
                message,
            },
        );
        wait
    }

    fn pool_succeeded(&self, image_id: &str) {
        let mut failed = self.pool.failed.lock().expect("pool lock poisoned");
        failed.remove(image_id);
    }

    /// The owner's limits: one more clone's memory within
    /// `pool.max_memory`, and the load average below
    /// `pool.max_load_percent` of the CPUs.
    fn room_for_a_clone(&self) -> bool {
        let pooled_mib: u64 = self
            .store
            .pool_vms()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| self.store.get_vm(&p.vm_id).ok().flatten())
            .map(|v| u64::from(v.memory_mib))
            .sum();
        let want = u64::from(self.config.vm.default_memory_mib);
        if pooled_mib + want > self.config.pool.max_memory_mib {
            tracing::debug!(
                pooled_mib,
                limit = self.config.pool.max_memory_mib,
                "pool: at its memory limit"
            );
            return false;
        }
        // `sysinfo(2)`: the system unit's `ProcSubset=pid` hides
        // /proc/loadavg. Loads are fixed point, 16 bits of fraction.
        let load = rustix::system::sysinfo().loads[0] as f64 / 65536.0;
        let cpus = HostLimits::here().cpus as f64;
        let limit = f64::from(self.config.pool.max_load_percent) / 100.0 * cpus;
        if load >= limit {
            tracing::debug!(load, limit, "pool: the host is busy; the refill waits");
            return false;
        }
        true
    }

    /// Reserve a pooled VM of `image` (the create's reservation, pooled).
    async fn reserve_pooled(&self, image: &ImageRow) -> Result<VmRow, RpcError> {
        let want = self.pool_want(image);
        check_resources(
            HostLimits::here(),
            want.vmm,
            want.vcpus,
            want.memory_mib,
            want.disk_bytes,
        )?;
        let id = crate::store::new_id().map_err(store_err)?;
        self.reserve(
            &NewVm {
                name: format!("{PREFIX}{}", &id[..12]),
                image_id: image.id.clone(),
                vmm: want.vmm,
                vcpus: want.vcpus,
                memory_mib: want.memory_mib,
                disk_bytes: want.disk_bytes,
                nat: want.nat,
            },
            true,
        )
        .await
    }

    /// Build pooled VM `vm` (restoring `from`, or booting), as a create
    /// operation of its own; removed again on failure.
    async fn build_pooled(
        self: &Arc<Self>,
        vm: &VmRow,
        from: Option<&str>,
    ) -> Result<(), RpcError> {
        let op = self
            .ops
            .begin(banger_proto::vm::OpKind::VmCreate, Some(&vm.id))?;
        let r = self.build(&vm.id, true, from, &op).await;
        op.finish(r.clone());
        if r.is_err() {
            self.destroy(&vm.id).await;
        }
        r
    }

    /// Image `image`'s pool snapshot: the one recorded, or a new one (a VM
    /// of the image boots, is saved paused, and is removed).
    async fn pool_base(self: &Arc<Self>, image: &ImageRow) -> Result<SnapshotRow, RpcError> {
        if let Some(base) = self.store.pool_base(&image.id).map_err(store_err)? {
            if self.layout.snapshot_dir(&base.id).is_dir() {
                return Ok(base);
            }
            self.drop_pool_base(&base);
        }
        tracing::info!(image = %image.name, "pool: making the image's pool snapshot");
        let started = Instant::now();
        let vm = self.reserve_pooled(image).await?;
        let made = async {
            self.build_pooled(&vm, None).await?;
            let lock = self.lock_for(&vm.id);
            let _g = lock.lock().await;
            let (id, saved) = self
                .save_into_new_dir(&vm.id, false, false)
                .await
                .map_err(|e| e.context(format!("saving image {}'s pool snapshot", image.name)))?;
            let name = format!("{PREFIX}{}", &id[..12]);
            self.store
                .insert_pool_base(&super::snapshot::snapshot_row(
                    id.clone(),
                    name,
                    &vm,
                    image,
                    &saved,
                ))
                .map_err(|e| {
                    self.remove_snapshot_dir(&id);
                    store_err(e)
                })
        }
        .await;
        // The VM that booted for it goes either way.
        self.remove_pooled(&vm.id).await;
        let base = made?;
        tracing::info!(image = %image.name, snapshot = %base.name, ms = started.elapsed().as_millis() as u64, "pool: pool snapshot made");
        Ok(base)
    }

    /// Fill one clone of `image`: restore the pool snapshot (the agent gives
    /// it its own address, MAC and host key before its tap comes up), open
    /// its SSH master, pause it, mark it ready.
    async fn fill_one(self: &Arc<Self>, image: &ImageRow) -> Result<(), RpcError> {
        let base = self.pool_base(image).await?;
        let started = Instant::now();
        let vm = self.reserve_pooled(image).await?;
        if let Err(e) = self.build_pooled(&vm, Some(&base.id)).await {
            // A snapshot that no longer restores (a QEMU upgrade, a lost
            // file) is made again by the next pass.
            self.drop_pool_base(&base);
            return Err(e.context(format!("restoring image {}'s pool snapshot", image.name)));
        }
        crate::crashpoint::hit("pool.restored");
        let lock = self.lock_for(&vm.id);
        let guard = lock.lock().await;
        let row = self.row(&vm.id)?;
        let guest = self.pooled_guest(&row)?;
        let opened = tokio::task::spawn_blocking(move || {
            guest.exec("true", None, Duration::from_secs(60)).map(drop)
        })
        .await
        .map_err(|e| internal(format!("ssh task: {e}")))?;
        if let Err(e) = opened {
            // Still a clone: its take pays the handshake.
            tracing::warn!(vm = %row.name, error = %e.render(), "pool: no SSH master for a clone");
        }
        let paused = self.set_state(&row, VmState::Paused, None)?;
        if let Err(e) = self
            .privileged(banger_proto::privops::PauseVm {
                vm_id: vm.id.clone(),
            })
            .await
        {
            drop(guard);
            self.remove_pooled(&vm.id).await;
            return Err(e.context("pausing a pooled clone"));
        }
        crate::crashpoint::hit("pool.paused");
        self.store
            .set_pool_vm_ready(&paused.id)
            .map_err(store_err)?;
        drop(guard);
        tracing::info!(image = %image.name, vm = %paused.name, ms = started.elapsed().as_millis() as u64, "pool: clone ready");
        Ok(())
    }

    /// `vm`'s guest over its VM's SSH master, opened (when it is not yet)
    /// to outlive any pause (`Control::until_ended`).
    fn pooled_guest(&self, vm: &VmRow) -> Result<crate::workspace::Guest, RpcError> {
        let lease = self
            .store
            .get_lease(&vm.id)
            .map_err(store_err)?
            .ok_or_else(|| internal(format!("VM {} has no lease", vm.name)))?;
        let control = self
            .vmms
            .pid(&vm.id)
            .and_then(|pid| self.ssh.path(&vm.id, pid))
            .map(|path| crate::workspace::Control {
                path,
                persist_secs: 0,
                until_ended: true,
            });
        Ok(crate::workspace::Guest {
            name: vm.name.clone(),
            ip: lease.ip,
            user: GUEST_USER.to_string(),
            identity: crate::identity::identity(&self.layout),
            known_hosts: self.layout.known_hosts.clone(),
            control,
        })
    }

    /// `vm create` from the pool: take a ready clone that is the VM the
    /// create would build, if there is one. `None`: build as usual.
    pub(super) async fn take_from_pool(
        self: &Arc<Self>,
        name: &str,
        r: &super::create::Resolved,
        wait: bool,
        sink: &ProgressSink,
        after: &mut Option<crate::flows::AfterBuild>,
    ) -> Result<Option<VmCreated>, RpcError> {
        if r.from.is_some() || r.vmm != VmmKind::Qemu {
            return Ok(None);
        }
        let want = PoolWant {
            image_id: &r.image.id,
            vmm: r.vmm,
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
            disk_bytes: r.disk_bytes,
            nat: r.nat,
        };
        // A clone is taken under its VM's lock (then `create_mu`, the lock
        // order): a prune or a drain removing it holds that lock and checks
        // it is still pooled, so it is either removed or taken, never both.
        let mut taken = None;
        for id in self.store.pool_candidates(&want).map_err(store_err)? {
            let Ok(guard) = self.lock_for(&id).try_lock_owned() else {
                continue;
            };
            let _g = self.create_mu.lock().await;
            if let Some(t) = self.store.take_pooled(&id, name).map_err(store_err)? {
                taken = Some((t, guard));
                break;
            }
        }
        let Some(((old, vm), guard)) = taken else {
            return Ok(None);
        };
        drop(guard);
        self.pool.wake.notify_one();
        tracing::info!(vm = %name, clone = %old, "pool: a create took a warm clone");
        crate::crashpoint::hit("pool.taken");
        // From here on the VM is the owner's: whatever fails removes it
        // (the create operation's rollback).
        let op = match self
            .ops
            .begin(banger_proto::vm::OpKind::VmCreate, Some(&vm.id))
        {
            Ok(op) => op,
            Err(e) => {
                self.destroy(&vm.id).await;
                return Err(e);
            }
        };
        let op_id = op.id.clone();
        let rx = self.ops.subscribe(&op_id);
        self.spawn_create(
            vm.id.clone(),
            op,
            super::create::CreateStep::TakeFromPool { old },
            after.take(),
        );
        if wait && let Some(rx) = rx {
            OpRegistry::follow(rx, sink).await?;
        }
        let row = self.store.get_vm(&vm.id).map_err(store_err)?;
        Ok(Some(VmCreated {
            vm: self.info(row.as_ref().unwrap_or(&vm)),
            operation: op_id,
            from_pool: true,
        }))
    }

    /// The taken clone's own part: its `.vm` name and `known_hosts` line
    /// moved from `old`, resumed, then the guest's new name (hostname,
    /// `/etc/hosts`) and the clock set over its SSH master.
    pub(super) async fn adopt_pooled(
        &self,
        vm_id: &str,
        old: &str,
        op: &super::ops::OpHandle,
    ) -> Result<(), RpcError> {
        let lock = self.lock_for(vm_id);
        let _g = lock.lock().await;
        let vm = self.row(vm_id)?;
        let lease = self
            .store
            .get_lease(&vm.id)
            .map_err(store_err)?
            .ok_or_else(|| internal(format!("VM {} has no lease", vm.name)))?;
        let (caps, row, old_name) = (Arc::clone(&self.caps), vm.clone(), old.to_string());
        let failed = tokio::task::spawn_blocking(move || caps.renamed(&old_name, &row, lease.ip))
            .await
            .map_err(|e| internal(format!("rename task: {e}")))?;
        if let Some((capability, e)) = failed.into_iter().next() {
            return Err(e.context(format!("moving the clone's {capability} to {}", vm.name)));
        }
        op.progress(progress("pool", "resuming a warm clone", 1, Some(2)));
        let vm = self.resume_vmm(&vm).await?;
        crate::crashpoint::hit("pool.resumed");
        let guest = self.pooled_guest(&vm)?;
        let script = personalise_script(&vm.name, crate::store::unix_now());
        let name = vm.name.clone();
        let out = tokio::task::spawn_blocking(move || guest.exec(&script, None, TAKE_SSH_TIMEOUT))
            .await
            .map_err(|e| internal(format!("ssh task: {e}")))?
            .map_err(|e| e.context(format!("personalising VM {name}")))?;
        if !out.status.success() {
            return Err(RpcError::new(
                ErrorCode::Unavailable,
                format!(
                    "setting VM {name}'s hostname and clock failed: {}",
                    out.stderr.trim()
                ),
            ));
        }
        op.progress(progress("ready", "guest is up", 2, Some(2)));
        Ok(())
    }
}

/// The guest-side commands of a take: hostname, `/etc/hostname`,
/// `/etc/hosts` (as the create's guest files write them) and the clock.
/// `name` is a checked VM name (a lowercase DNS label), `now` unix seconds.
fn personalise_script(name: &str, now: i64) -> String {
    let hosts = format!(
        "127.0.0.1 localhost\\n127.0.1.1 {name}.vm {name}\\n::1 localhost ip6-localhost\\n"
    );
    format!(
        "sudo -n sh -c 'printf \"%s\\n\" {name} > /etc/hostname && hostname {name} && \
         printf \"{hosts}\" > /etc/hosts && date -s @{now} > /dev/null'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script a take runs: what it writes, for a checked name, and
    /// that a POSIX shell parses it (run with `sh -n`).
    #[test]
    fn the_take_script_names_the_vm_and_sets_the_clock() {
        let s = personalise_script("dev-1", 1_800_000_000);
        assert!(s.contains("hostname dev-1"), "{s}");
        assert!(s.contains("127.0.1.1 dev-1.vm dev-1"), "{s}");
        assert!(s.contains("date -s @1800000000"), "{s}");
        let checked = banger_host::runner::Runner.run(
            &banger_host::runner::Cmd::new("sh")
                .args(["-n", "-c"])
                .arg(&s)
                .timeout(Duration::from_secs(10)),
        );
        assert!(checked.is_ok(), "{checked:?}");
    }
}
