//! start / stop / kill / rm / set, and boot readiness.

use banger_proto::privops::{DeleteVmDisks, KillVm, PauseVm, ResumeVm, StopVm, WaitVmReady};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_proto::vm::{SetVm, VmInfo};
use banger_proto::vmops::{LaunchVmSpec, RestoreSpec};
use banger_proto::{ErrorCode, RpcError};

use super::ops::OpHandle;
use super::{READY_MARKER, VmService, internal, progress, store_err};

/// The longest one readiness question waits in the executor: between two,
/// the client waiting on the stream gets a heartbeat.
const READY_SLICE: Duration = Duration::from_secs(2);
use crate::server::ProgressSink;
use crate::store::{VmConfigUpdate, VmRow, VmState};

/// Default graceful-stop timeout.
pub const STOP_TIMEOUT_SECS: u32 = 30;

pub(super) fn invalid_state(vm: &VmRow, action: &str) -> RpcError {
    RpcError::new(
        ErrorCode::InvalidState,
        format!("cannot {action} VM {}: it is {}", vm.name, vm.state),
    )
}

impl VmService {
    pub(super) fn set_state(
        &self,
        vm: &VmRow,
        to: VmState,
        reason: Option<&str>,
    ) -> Result<VmRow, RpcError> {
        self.store
            .set_vm_state(&vm.id, vm.state, to, reason)
            .map_err(store_err)
    }

    pub(super) async fn start_named(
        self: &Arc<Self>,
        name: &str,
        sink: ProgressSink,
    ) -> Result<VmInfo, RpcError> {
        let vm = self.vm_by_name(name)?;
        let lock = self.lock_for(&vm.id);
        let _g = lock.lock().await;
        let vm = self.row(&vm.id)?;
        let op = self
            .ops
            .begin(banger_proto::vm::OpKind::VmStart, Some(&vm.id))?;
        let rx = self.ops.subscribe(&op.id);
        let forward = async {
            if let Some(rx) = rx {
                let _ = super::ops::OpRegistry::follow(rx, &sink).await;
            }
        };
        let (result, ()) = tokio::join!(
            async {
                let r = self.boot(&vm, Some(&op)).await;
                op.finish(r.clone());
                r
            },
            forward
        );
        result?;
        Ok(self.info(&self.row(&vm.id)?))
    }

    /// Boot a VM whose lock the caller holds.
    /// A VM suspended to disk (`vm stop --save`) is resumed from its
    /// saved state instead ([`Self::take_saved`]).
    pub(super) async fn boot(
        self: &Arc<Self>,
        vm: &VmRow,
        op: Option<&OpHandle>,
    ) -> Result<(), RpcError> {
        if !matches!(
            vm.state,
            VmState::Created | VmState::Stopped | VmState::Failed
        ) {
            return Err(invalid_state(vm, "start"));
        }
        let saved = self.saved_restore(vm)?;
        let restore = saved.as_ref().map(|(_, r)| r.clone());
        let result = self.boot_with(vm, op, restore).await;
        // Its directory goes once the launch took it (the row is gone);
        // a start that failed before the launch keeps both.
        if let Some((id, _)) = saved
            && self.store.saved_state(&vm.id).map_err(store_err)?.is_none()
        {
            self.remove_snapshot_dir(&id);
        }
        result
    }

    /// [`Self::boot`], restoring a snapshot instead of booting when
    /// `restore` says so (`vm create --from`).
    pub(super) async fn boot_with(
        self: &Arc<Self>,
        vm: &VmRow,
        op: Option<&OpHandle>,
        restore: Option<RestoreSpec>,
    ) -> Result<(), RpcError> {
        let step = |stage: &str, msg: &str, done: u64| {
            if let Some(op) = op {
                op.progress(progress(stage, msg, done, Some(4)));
            }
        };
        if !matches!(
            vm.state,
            VmState::Created | VmState::Stopped | VmState::Failed
        ) {
            return Err(invalid_state(vm, "start"));
        }
        let vm = self.set_state(vm, VmState::Starting, None)?;
        step("network", "attaching the network", 3);
        let result = self.boot_inner(&vm, &step, restore).await;
        match result {
            Ok(()) => {
                self.set_state(&self.row(&vm.id)?, VmState::Running, None)?;
                step("ready", "guest is up", 4);
                Ok(())
            }
            Err(e) => {
                // Nothing keeps running: no VMM, no tap.
                if let Err(k) = self
                    .privileged(KillVm {
                        vm_id: vm.id.clone(),
                    })
                    .await
                {
                    tracing::warn!(vm = %vm.name, error = %k.render(), "killing the VMM after a failed boot");
                }
                self.vmms.forget(&vm.id);
                let _ = self.caps_stopped(&vm).await;
                let e = e.context(format!("starting VM {}", vm.name));
                let reason = e.messages.join(": ");
                if let Ok(cur) = self.row(&vm.id) {
                    let _ =
                        self.store
                            .set_vm_state(&vm.id, cur.state, VmState::Failed, Some(&reason));
                }
                Err(e)
            }
        }
    }

    async fn boot_inner(
        &self,
        vm: &VmRow,
        step: &(dyn Fn(&str, &str, u64) + Sync),
        restore: Option<RestoreSpec>,
    ) -> Result<(), RpcError> {
        // A row made before the per-VMM limits were checked at create and
        // set is refused here, before a tap: never truncated (`as u8`).
        let vcpus = banger_proto::limits::check_vcpus(vm.vmm, vm.vcpus)
            .map_err(|e| RpcError::new(ErrorCode::BadRequest, e))?;
        let lease = self
            .store
            .get_lease(&vm.id)
            .map_err(store_err)?
            .ok_or_else(|| internal(format!("VM {} has no lease", vm.name)))?;
        let image = self
            .store
            .get_image(&vm.image_id)
            .map_err(store_err)?
            .ok_or_else(|| internal(format!("image {} of VM {} is gone", vm.image_id, vm.name)))?;
        let (caps, row) = (Arc::clone(&self.caps), vm.clone());
        let launch = tokio::task::spawn_blocking(move || caps.starting(&row))
            .await
            .map_err(|e| internal(format!("capability task: {e}")))??;
        let tap = launch
            .tap
            .ok_or_else(|| internal(format!("no capability gave VM {} a tap", vm.name)))?;
        crate::crashpoint::hit("boot.tap");
        let serial = self.vm_dir(&vm.id).join(banger_proto::layout::SERIAL_LOG);
        let offset = std::fs::metadata(&serial).map(|m| m.len()).unwrap_or(0);
        let doing = match &restore {
            Some(_) => "restoring the snapshot under",
            None => "starting",
        };
        step("boot", &format!("{doing} {} on {tap}", vm.vmm), 3);
        let launched = Instant::now();
        // A saved state (`vm stop --save`) is used once: taken from the
        // store now, before the guest can run again. A snapshot's clone
        // has no row here.
        if restore.is_some() {
            self.consume_saved(&vm.id)?;
        }
        let launched_vmm = self
            .privileged(LaunchVmSpec {
                vm_id: vm.id.clone(),
                image_id: image.id.clone(),
                kernel_id: image.kernel_id.clone(),
                vmm: vm.vmm,
                vcpus,
                memory_mib: vm.memory_mib,
                tap,
                mac: lease.mac.clone(),
                force_kvm: self.config.diagnostics.assume_kvm_usable,
                restore: restore.map(Box::new),
            })
            .await?;
        self.vmms.record(&launched_vmm);
        crate::crashpoint::hit("boot.launched");
        tracing::info!(vm = %vm.name, spawn_ms = launched.elapsed().as_millis() as u64, "VMM spawned");
        self.wait_ready(vm, &serial, offset, step).await?;
        crate::crashpoint::hit("boot.ready");
        tracing::info!(vm = %vm.name, boot_ms = launched.elapsed().as_millis() as u64, "guest ready");
        Ok(())
    }

    /// Wait for the guest to be ready, as the executor's VMM driver
    /// reports it (QEMU: the ready line on the console; Firecracker: over
    /// vsock) — an event the executor wakes on, asked for in slices of at
    /// most [`READY_SLICE`] so the client gets a heartbeat in between.
    async fn wait_ready(
        &self,
        vm: &VmRow,
        serial: &std::path::Path,
        offset: u64,
        step: &(dyn Fn(&str, &str, u64) + Sync),
    ) -> Result<(), RpcError> {
        // `vm.boot_timeout_secs` (default 240 s: TCG boots of the Debian
        // image take ~20 s on an idle CI host; room for load).
        let timeout = Duration::from_secs(self.config.vm.boot_timeout_secs.into());
        let started = Instant::now();
        let deadline = started + timeout;
        // The console's last lines, for an error only.
        let console_tail = || {
            let mut console = super::console::ConsoleWatch::new(serial, offset, READY_MARKER);
            console.poll();
            console.tail(8)
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = left.min(READY_SLICE);
            let status = self
                .privileged(WaitVmReady {
                    vm_id: vm.id.clone(),
                    timeout_ms: u32::try_from(slice.as_millis()).unwrap_or(u32::MAX),
                })
                .await
                .map_err(|e| e.context(format!("asking whether VM {} is up", vm.name)))?;
            self.vmms.record(&status);
            match (status.running, status.ready) {
                (true, Some(true)) => return Ok(()),
                (false, _) => {
                    return Err(RpcError::new(
                        ErrorCode::Internal,
                        format!(
                            "the VMM of VM {} exited during boot; last console lines: {}",
                            vm.name,
                            console_tail()
                        ),
                    ));
                }
                (true, None) => {
                    return Err(RpcError::new(
                        ErrorCode::Internal,
                        format!(
                            "the executor does not watch VM {}'s readiness (its VMM was re-adopted without a console offset); stop and start it",
                            vm.name
                        ),
                    ));
                }
                (true, Some(false)) => {}
            }
            if Instant::now() >= deadline {
                return Err(RpcError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "VM {} did not become ready within {}s; last console lines: {}",
                        vm.name,
                        timeout.as_secs(),
                        console_tail()
                    ),
                ));
            }
            // A heartbeat for clients waiting on the stream.
            step(
                "boot",
                &format!("waiting for the guest ({}s)", started.elapsed().as_secs()),
                3,
            );
        }
    }

    pub(super) async fn stop_named(
        self: &Arc<Self>,
        name: &str,
        timeout: Option<u32>,
        kill: bool,
    ) -> Result<VmInfo, RpcError> {
        let vm = self.vm_by_name(name)?;
        let lock = self.lock_for(&vm.id);
        let _g = lock.lock().await;
        let vm = self.row(&vm.id)?;
        if !matches!(vm.state, VmState::Running | VmState::Paused) {
            return Err(invalid_state(&vm, if kill { "kill" } else { "stop" }));
        }
        self.halt(&vm, timeout.unwrap_or(STOP_TIMEOUT_SECS), kill)
            .await?;
        Ok(self.info(&self.row(&vm.id)?))
    }

    /// running → paused: the VMM stops running the guest's vCPUs; its
    /// memory, address, tap and DNS name stay. Asked of the executor even
    /// when the row says paused already (both ops are idempotent), so a
    /// pause or resume is always the way out of a disagreement between
    /// the row and the VMM.
    pub(super) async fn pause_named(&self, name: &str) -> Result<VmInfo, RpcError> {
        let vm = self.vm_by_name(name)?;
        let lock = self.lock_for(&vm.id);
        let _g = lock.lock().await;
        let vm = self.row(&vm.id)?;
        if !matches!(vm.state, VmState::Running | VmState::Paused) {
            return Err(invalid_state(&vm, "pause"));
        }
        // Recorded before it is asked: whatever happens to the call (or to
        // this daemon), the row errs towards `paused`, which a resume
        // repairs whatever the VMM's state — never towards a frozen VM
        // marked running, which nothing would (review s11 F1).
        let paused = self.set_state(&vm, VmState::Paused, None)?;
        if let Err(e) = self
            .privileged(PauseVm {
                vm_id: vm.id.clone(),
            })
            .await
        {
            // `invalid_state` and `bad_request` are refusals made before the
            // VMM was touched (no VMM runs, or a stop of it is in flight):
            // the VM is as it was. Anything else (a deadline, a lost
            // helper, a VMM in another run state) may have paused it.
            if matches!(e.code, ErrorCode::InvalidState | ErrorCode::BadRequest) {
                self.set_state(&paused, vm.state, None)?;
            }
            return Err(e.context(format!(
                "pausing VM {name} (if it does not answer, `banger vm resume {name}`)"
            )));
        }
        Ok(self.info(&paused))
    }

    /// paused → running; asked of the executor whatever the row says (see
    /// [`Self::pause_named`]).
    pub(super) async fn resume_named(&self, name: &str) -> Result<VmInfo, RpcError> {
        let vm = self.vm_by_name(name)?;
        let lock = self.lock_for(&vm.id);
        let _g = lock.lock().await;
        let vm = self.row(&vm.id)?;
        if !matches!(vm.state, VmState::Running | VmState::Paused) {
            return Err(invalid_state(&vm, "resume"));
        }
        let vm = self.resume_vmm(&vm).await?;
        Ok(self.info(&vm))
    }

    /// Resume a VM's VMM and record it running once that is done (until
    /// then the row errs towards `paused`, as in [`Self::pause_named`]);
    /// the caller holds the VM lock.
    pub(super) async fn resume_vmm(&self, vm: &VmRow) -> Result<VmRow, RpcError> {
        self.privileged(ResumeVm {
            vm_id: vm.id.clone(),
        })
        .await
        .map_err(|e| e.context(format!("resuming VM {}", vm.name)))?;
        if vm.state == VmState::Running {
            return Ok(vm.clone());
        }
        self.set_state(vm, VmState::Running, None)
    }

    /// running → stopping → stopped; the caller holds the VM lock.
    ///
    /// A graceful stop asks the guest to power off over SSH first (works on
    /// every image that honours the guest contract, whatever ACPI support
    /// its kernel has), then has the executor send the VMM's own power-off
    /// request and wait; the VMM is killed when the timeout runs out.
    async fn halt(&self, vm: &VmRow, timeout_secs: u32, kill: bool) -> Result<(), RpcError> {
        self.halt_with(vm, timeout_secs, kill, None).await
    }

    /// [`Self::halt`], the stopped VM's reason `reason` when given.
    pub(super) async fn halt_with(
        &self,
        vm: &VmRow,
        timeout_secs: u32,
        kill: bool,
        reason: Option<&str>,
    ) -> Result<(), RpcError> {
        // A paused guest can neither answer SSH nor see a power button: it
        // runs again first (a kill needs no guest). A resume that fails
        // does not stop the stop: the executor's StopVm resumes the VMM
        // itself before its power-off, and kills it after the timeout; only
        // the SSH power-off, which a frozen guest cannot answer, is skipped
        // (review s11 F6).
        let mut frozen = false;
        let resumed;
        let vm = if vm.state == VmState::Paused && !kill {
            match self.resume_vmm(vm).await {
                Ok(row) => {
                    resumed = row;
                    &resumed
                }
                Err(e) => {
                    tracing::warn!(vm = %vm.name, error = %e.render(), "resume before the stop failed; stopping it as it is");
                    frozen = true;
                    vm
                }
            }
        } else {
            vm
        };
        if !kill
            && !frozen
            && let Err(e) = self
                .guest_exec(&vm.name, "sudo -n systemctl poweroff --no-block")
                .await
        {
            tracing::info!(vm = %vm.name, error = %e.render(), "guest power-off over SSH failed; relying on the VMM");
        }
        let vm = self.set_state(vm, VmState::Stopping, None)?;
        crate::crashpoint::hit("stop.stopping");
        let stopped = if kill {
            self.privileged(KillVm {
                vm_id: vm.id.clone(),
            })
            .await?
        } else {
            self.privileged(StopVm {
                vm_id: vm.id.clone(),
                timeout_secs,
            })
            .await?
        };
        crate::crashpoint::hit("stop.stopped");
        let reason = if let Some(r) = reason {
            Some(r.to_string())
        } else if kill && stopped.was_running {
            Some("killed".to_string())
        } else if stopped.was_running && !stopped.graceful {
            Some(format!(
                "did not power off within {timeout_secs}s and was killed"
            ))
        } else {
            None
        };
        self.vmms.forget(&vm.id);
        self.caps_stopped(&vm).await?;
        self.set_state(&vm, VmState::Stopped, reason.as_deref())?;
        Ok(())
    }

    pub(super) async fn remove_named(self: &Arc<Self>, name: &str) -> Result<(), RpcError> {
        let vm = self.vm_by_name(name)?;
        let lock = self.lock_for(&vm.id);
        let _g = lock.lock().await;
        let vm = self.row(&vm.id)?;
        match vm.state {
            VmState::Running | VmState::Paused => self.halt(&vm, 10, false).await?,
            VmState::Starting | VmState::Stopping => return Err(invalid_state(&vm, "remove")),
            _ => {}
        }
        // Its saved state's row goes with the VM's; its directory here.
        let saved = self.store.saved_state(&vm.id).map_err(store_err)?;
        self.destroy(&vm.id).await;
        if let Some(id) = saved
            && self.store.get_vm(&vm.id).map_err(store_err)?.is_none()
        {
            self.remove_snapshot_dir(&id);
        }
        if self.store.get_vm(&vm.id).map_err(store_err)?.is_some() {
            return Err(internal(format!(
                "VM {name} could not be removed completely; see the daemon log"
            )));
        }
        Ok(())
    }

    /// Release everything a VM holds and forget it. Best effort: each step
    /// runs even if an earlier one failed (create rollback, `rm`).
    pub(super) async fn destroy(&self, vm_id: &str) {
        let Ok(vm) = self.row(vm_id) else { return };
        let warn = |what: &str, e: &RpcError| {
            tracing::warn!(vm = %vm.name, error = %e.render(), "{what}");
        };
        if let Err(e) = self
            .privileged(KillVm {
                vm_id: vm_id.into(),
            })
            .await
        {
            warn("killing the VMM", &e);
        } else {
            self.vmms.forget(vm_id);
        }
        if let Err(e) = self.caps_stopped(&vm).await {
            warn("stopping the VM's capabilities", &e);
        }
        if let Err(e) = self
            .privileged(DeleteVmDisks {
                vm_id: vm_id.into(),
            })
            .await
        {
            warn("deleting the disks", &e);
            return;
        }
        crate::crashpoint::hit("rm.disks");
        let (caps, row) = (Arc::clone(&self.caps), vm.clone());
        if let Ok(failed) = tokio::task::spawn_blocking(move || caps.removed(&row)).await {
            for (capability, e) in failed {
                warn(&format!("removing the VM's {capability}"), &e);
            }
        }
        crate::crashpoint::hit("rm.removed");
        let dir = self.vm_dir(vm_id);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(vm = %vm.name, error = %e, "removing {}", dir.display());
        }
        match self.store.delete_vm(vm_id) {
            Ok(_) => self.vmms.forget(vm_id),
            Err(e) => warn("deleting the VM row", &store_err(e)),
        }
    }

    pub(super) async fn set(self: &Arc<Self>, s: SetVm) -> Result<VmInfo, RpcError> {
        let vm = self.vm_by_name(&s.name)?;
        let lock = self.lock_for(&vm.id);
        let _g = lock.lock().await;
        let vm = self.row(&vm.id)?;
        if !matches!(
            vm.state,
            VmState::Created | VmState::Stopped | VmState::Failed
        ) {
            return Err(invalid_state(&vm, "change"));
        }
        // Its saved memory is of this machine and these disks.
        if self.store.saved_state(&vm.id).map_err(store_err)?.is_some() {
            return Err(RpcError::new(
                ErrorCode::InvalidState,
                format!(
                    "cannot change VM {}: it holds a saved state (`vm stop --save`) of its \
                     current resources and disks; `banger vm start {}` resumes it first",
                    vm.name, vm.name
                ),
            ));
        }
        let cfg = VmConfigUpdate {
            vcpus: s.vcpus.unwrap_or(vm.vcpus),
            memory_mib: s.memory_mib.unwrap_or(vm.memory_mib),
            disk_bytes: s.disk_bytes.unwrap_or(vm.disk_bytes),
            nat: s.nat.unwrap_or(vm.nat),
        };
        super::create::check_resources(
            super::create::HostLimits::here(),
            vm.vmm,
            cfg.vcpus,
            cfg.memory_mib,
            cfg.disk_bytes,
        )?;
        // The work disk grows here (capabilities' `reconfigured`), before
        // the row says so.
        let (caps, row, to) = (Arc::clone(&self.caps), vm.clone(), cfg.clone());
        tokio::task::spawn_blocking(move || caps.reconfigured(&row, &to))
            .await
            .map_err(|e| internal(format!("capability task: {e}")))??;
        // NAT takes effect with the firewall rule written at the next start.
        let vm = self
            .store
            .update_vm_config(&vm.id, vm.state, &cfg)
            .map_err(store_err)?;
        Ok(self.info(&vm))
    }

    /// Every capability's `stopped` hook, on a blocking thread.
    pub(super) async fn caps_stopped(&self, vm: &VmRow) -> Result<(), RpcError> {
        let (caps, row) = (Arc::clone(&self.caps), vm.clone());
        tokio::task::spawn_blocking(move || caps.stopped(&row))
            .await
            .map_err(|e| internal(format!("capability task: {e}")))?
    }
}
