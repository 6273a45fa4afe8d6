//! Startup reconcile of VMs: after a daemon restart, every VM the store
//! believes is live is checked against the executor. A VMM that still runs
//! is re-adopted (its tap re-attached, state `running`); a dead one is marked
//! `stopped` with a reason and its tap returned. `starting`/`stopping` VMs
//! whose operation died with the old daemon are settled the same way.
//!
//! The executor's `VmmStatus` answers are the only VMM facts the daemon
//! has: this is where its in-memory view of them (`handles_cache`) is
//! rebuilt after a restart, from the executor's journal, not from files.

use std::sync::Arc;

use banger_proto::RpcError;
use banger_proto::privops::{KillVm, VmmStatus};

use super::VmService;
use crate::store::{VmRow, VmState};

impl VmService {
    pub async fn reconcile(self: &Arc<Self>) {
        // A snapshot whose row was never written (the daemon died during
        // its save) leaves a directory no row names.
        let svc = Arc::clone(self);
        if let Err(e) = tokio::task::spawn_blocking(move || svc.sweep_snapshot_dirs()).await {
            tracing::warn!(error = %e, "reconcile: snapshot sweep failed");
        }
        let vms = match self.store.list_vms() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "reconcile: listing VMs");
                return;
            }
        };
        // known_hosts lines of VMs that are gone (a crash between a take's
        // rename and the move of its line, say).
        let keep = vms.iter().map(|v| format!("{}.vm", v.name)).collect();
        match super::guest::retain_known_hosts(&self.layout.known_hosts, &keep) {
            Ok(stale) if !stale.is_empty() => {
                tracing::info!(
                    ?stale,
                    "reconcile: known_hosts lines of VMs that are gone removed"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e.render(), "reconcile: known_hosts"),
        }
        for vm in vms.into_iter().filter(|v| v.state.vmm_may_run()) {
            if let Err(e) = self.settle(&vm, STARTUP_REASON).await {
                self.unsettled_set().insert(vm.id.clone());
                tracing::warn!(
                    vm = %vm.name,
                    state = %vm.state,
                    error = %e.render(),
                    "reconcile: could not learn whether its VMM runs; the VM is left as it is, and the watchdog asks again"
                );
            }
        }
        if let Err(e) = self.store.fail_interrupted_operations(
            "interrupted",
            &["bangerd stopped while the operation ran".to_string()],
        ) {
            tracing::warn!(error = %e, "reconcile: settling interrupted operations");
        }
    }

    /// Bring a VM no lifecycle operation owns in line with its VMM: one
    /// that runs is re-adopted (tap re-attached, state `running`, unless it
    /// was being stopped: then it is killed), one that does not is marked
    /// `stopped` and its tap returned. When the executor cannot be asked,
    /// nothing changes: a VM whose VMM may well run is never marked stopped
    /// or left without its tap on a guess.
    async fn settle(self: &Arc<Self>, vm: &VmRow, reason: &str) -> Result<(), RpcError> {
        let status = self
            .privileged(VmmStatus {
                vm_id: vm.id.clone(),
            })
            .await?;
        self.vmms.record(&status);
        if status.running && vm.state != VmState::Stopping {
            // Its capabilities are the running VM's again (the network
            // hands back the tap its reconcile kept for it).
            let (caps, row) = (Arc::clone(&self.caps), vm.clone());
            let started = tokio::task::spawn_blocking(move || caps.starting(&row)).await;
            if !matches!(started, Ok(Ok(_))) {
                tracing::warn!(vm = %vm.name, "reconcile: re-attaching the VM's capabilities failed");
            }
            // A paused VM's VMM stays paused across restarts of either
            // process.
            let to = if vm.state == VmState::Paused {
                VmState::Paused
            } else {
                VmState::Running
            };
            let _ = self.store.set_vm_state(&vm.id, vm.state, to, None);
            tracing::info!(vm = %vm.name, state = %to, "reconcile: VMM still running, re-adopted");
            return Ok(());
        }
        if status.running {
            // Its stop died with the old daemon: finish it.
            self.privileged(KillVm {
                vm_id: vm.id.clone(),
            })
            .await?;
        }
        let _ = self.caps_stopped(vm).await;
        self.vmms.forget(&vm.id);
        let _ = self
            .store
            .set_vm_state(&vm.id, vm.state, VmState::Stopped, Some(reason));
        tracing::info!(vm = %vm.name, "reconcile: VMM gone, marked stopped");
        Ok(())
    }
}

const STARTUP_REASON: &str = "its VMM was not running when bangerd started";
const LATE_REASON: &str =
    "its VMM was not running when bangerd could first ask the executor (after it started)";

impl VmService {
    fn unsettled_set(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        // A set of ids: a panic while it was held leaves nothing half-done.
        self.unsettled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How often running VMs are checked for a dead VMM.
pub const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3);
/// Finished operations are kept this long.
pub const OP_RETENTION_SECS: i64 = 7 * 24 * 3600;

impl VmService {
    /// Background tickers: stale-VM detection (a VMM that died on its own:
    /// the VM becomes `stopped` and its tap returns to the pool), the stats
    /// sampler (`stats`) and pruning of finished operations. They stop when the returned handle is
    /// aborted or the runtime shuts down.
    pub fn spawn_tickers(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let svc = Arc::clone(self);
        tokio::spawn(async move {
            let mut watch = tokio::time::interval(WATCH_INTERVAL);
            let mut prune = tokio::time::interval(std::time::Duration::from_secs(3600));
            let mut sample = tokio::time::interval(super::stats::STATS_INTERVAL);
            loop {
                tokio::select! {
                    _ = watch.tick() => svc.reap_dead_vmms().await,
                    _ = sample.tick() => svc.sample_running().await,
                    _ = prune.tick() => {
                        let cutoff = crate::store::unix_now() - OP_RETENTION_SECS;
                        match svc.store.prune_finished_operations(cutoff) {
                            Ok(n) if n > 0 => tracing::info!(pruned = n, "finished operations pruned"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "pruning operations"),
                        }
                    }
                }
            }
        })
    }

    pub(crate) async fn reap_dead_vmms(self: &Arc<Self>) {
        let Ok(vms) = self.store.list_vms() else {
            return;
        };
        let mut stopped_any = false;
        for vm in vms.into_iter().filter(|v| v.state.vmm_may_run()) {
            let lock = self.lock_for(&vm.id);
            // A VM in a lifecycle operation is that operation's business.
            let Ok(_g) = lock.try_lock() else { continue };
            // The row as it is now that its lock is held.
            let vm = match self.row(&vm.id) {
                Ok(vm) => vm,
                Err(e) => {
                    if e.code == banger_proto::ErrorCode::NotFound {
                        self.unsettled_set().remove(&vm.id);
                    }
                    continue;
                }
            };
            if self.unsettled_set().contains(&vm.id) {
                // Left by the startup reconcile, the executor silent then;
                // nothing has touched it since (every lifecycle change
                // settles the state it finds, under this lock).
                if !vm.state.vmm_may_run() {
                    self.unsettled_set().remove(&vm.id);
                } else if let Err(e) = self.settle(&vm, LATE_REASON).await {
                    tracing::debug!(vm = %vm.name, error = %e.render(), "watchdog: still cannot settle");
                } else {
                    self.unsettled_set().remove(&vm.id);
                }
                continue;
            }
            if !matches!(vm.state, VmState::Running | VmState::Paused) {
                continue;
            }
            let s = match self
                .privileged(VmmStatus {
                    vm_id: vm.id.clone(),
                })
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(vm = %vm.name, error = %e.render(), "watchdog: VMM status");
                    continue;
                }
            };
            // A running VMM's entry is refreshed, a dead one's dropped.
            self.vmms.record(&s);
            if s.running {
                continue;
            }
            let _ = self.caps_stopped(&vm).await;
            let reason = match s.pid {
                Some(pid) => format!("its VMM (pid {pid}) exited"),
                None => "its VMM exited".to_string(),
            };
            let _ = self
                .store
                .set_vm_state(&vm.id, vm.state, VmState::Stopped, Some(&reason));
            tracing::warn!(vm = %vm.name, %reason, "VM stopped on its own");
            stopped_any = true;
        }
        if stopped_any {
            // Its SSH master talks to a guest that is gone.
            let svc = Arc::clone(self);
            let _ = tokio::task::spawn_blocking(move || svc.sweep_ssh_masters()).await;
        }
    }
}
