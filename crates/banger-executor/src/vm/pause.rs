//! Pausing and resuming a VMM's vCPUs (`PauseVm`, `ResumeVm`).
//!
//! The VMM is taken out of the table for the driver's call, as a stop
//! takes it, so no table lock is held while root talks to the VMM (each
//! exchange is bounded by the driver: QMP 2 s, Firecracker's API 10 s, 2 s
//! for an adopted one). Meanwhile it is in `pausing`: status answers from
//! there (running, with its readiness), nothing re-adopts it from the
//! journal, a launch or disk operation is refused as for any running VMM,
//! a second pause or resume is refused, and a stop or kill waits for the
//! call to give the VMM back ([`VmHost::stop_during_pause`]).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_proto::privops::STOP_OVERHEAD_MAX_SECS;
use banger_proto::vmops::{VmStopped, VmmKind, VmmState};
use banger_vmm::VmmError;
use banger_vmm::driver::{KILL_WAIT, Vcpus};
use banger_vmm::firecracker::DEFAULT_REQUEST_TIMEOUT;
use banger_vmm::ready::{Readiness, Seen};

use super::error::{VmOpError, io};
use super::validate;
use super::vmm_table::ForStop;
use super::{Held, VmHost};

/// The most a stop waits for a pause or resume in flight: past the
/// drivers' own deadlines (QEMU: four QMP exchanges of 2 s, the greeting,
/// `qmp_capabilities`, `stop` or `cont` and `query-status`; Firecracker:
/// two API requests of 10 s, 2 s for an adopted one; each then 200 ms
/// for an exited VMM to be seen gone). A snapshot (`SnapshotVm`) holds
/// the VMM as long as its save and disk copies take, which may be longer:
/// a stop then kills the VMM after this wait (the snapshot fails and is
/// removed), and its own bound still holds, since it stops the VMM
/// through its pidfd without waiting for the snapshot to end.
const PAUSE_WAIT: Duration = Duration::from_secs(30);

// A stop's longest paths beyond its timeout: the pause waited for past it
// (then the kill and forgetting the VMM), or asking the guest to power
// off (a Firecracker API deadline; QEMU's four QMP exchanges are 8 s)
// with the same two after it. Both within what the protocol promises.
const _: () = {
    let after = KILL_WAIT.as_secs() + super::cgroup::EMPTY_WAIT.as_secs();
    assert!(PAUSE_WAIT.as_secs() + after < STOP_OVERHEAD_MAX_SECS);
    assert!(DEFAULT_REQUEST_TIMEOUT.as_secs() + after < STOP_OVERHEAD_MAX_SECS);
};

/// A VMM a pause or resume took out of the table.
#[derive(Debug)]
pub(super) struct Pausing {
    found: InPause,
    adopted: bool,
    readiness: Option<Arc<Readiness>>,
}

impl Pausing {
    pub(super) fn pid(&self) -> u32 {
        self.found.pid
    }
    pub(super) fn start_time(&self) -> u64 {
        self.found.start_time
    }
    /// What a stop that finds it here keeps of it.
    pub(super) fn found(&self) -> InPause {
        self.found.clone()
    }
}

/// The VMM a pause or resume has, as a stop that found it there keeps it:
/// its kind, pid, start time as journaled, and a pidfd of it.
#[derive(Debug, Clone)]
pub(super) struct InPause {
    vmm: VmmKind,
    pid: u32,
    start_time: u64,
    pidfd: Arc<OwnedFd>,
}

impl VmHost {
    /// Pause or resume (`to`) the vCPUs of the VM's VMM, re-adopting a
    /// journaled one first as a status does. Refused when none runs
    /// ([`VmOpError::NotRunning`]) and while a stop, or another pause,
    /// resume or snapshot, has it ([`VmOpError::Busy`]).
    pub(crate) fn set_vcpus(&self, vm_id: &str, to: Vcpus) -> Result<(), VmOpError> {
        validate::id("VM id", vm_id)?;
        let not_running = || VmOpError::NotRunning {
            vm_id: vm_id.to_string(),
        };
        let mut back = self.take_vmm(vm_id)?;
        let done = match back.held.as_mut() {
            Some((p, _)) if to == Vcpus::Paused => p.pause(),
            Some((p, _)) => p.resume(),
            None => return Err(not_running()),
        };
        drop(back);
        match done {
            Ok(()) => {
                tracing::info!(vm_id, request = to.verb(), "VMM vCPUs set");
                Ok(())
            }
            Err(VmmError::NotRunning { .. }) => Err(not_running()),
            Err(source) => Err(VmOpError::Vcpus {
                vm_id: vm_id.to_string(),
                what: match to {
                    Vcpus::Paused => "pausing",
                    Vcpus::Running => "resuming",
                },
                source,
            }),
        }
    }

    /// Take the VM's VMM out of the table for a call to it (a pause,
    /// resume or snapshot), re-adopting a journaled one first as a status
    /// does: it is in `pausing` until the returned guard puts it back.
    /// Refused when none runs ([`VmOpError::NotRunning`]) and while a
    /// stop, or another such call, has it ([`VmOpError::Busy`]).
    pub(super) fn take_vmm(&self, vm_id: &str) -> Result<GiveBack<'_>, VmOpError> {
        let not_running = || VmOpError::NotRunning {
            vm_id: vm_id.to_string(),
        };
        // Re-adopts a journaled VMM the table does not hold yet; forgets
        // one seen gone.
        if !self.status_inner(vm_id)?.is_some_and(|s| s.running) {
            return Err(not_running());
        }
        let held = {
            let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
            let busy = |pid, doing| VmOpError::Busy {
                vm_id: vm_id.to_string(),
                pid,
                doing,
            };
            if let Some((_, pid, _)) = self
                .stopping
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(vm_id)
            {
                return Err(busy(*pid, "stopped"));
            }
            let mut pausing = self.pausing.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = pausing.get(vm_id) {
                return Err(busy(p.pid(), "paused, resumed or snapshotted"));
            }
            let Some((p, start_time)) = procs.get(vm_id) else {
                return Err(not_running());
            };
            let pidfd = p.pidfd().try_clone_to_owned().map_err(io(
                "duplicating the pidfd of the VMM of VM",
                std::path::Path::new(vm_id),
            ))?;
            pausing.insert(
                vm_id.to_string(),
                Pausing {
                    found: InPause {
                        vmm: p.kind(),
                        pid: p.pid(),
                        start_time: *start_time,
                        pidfd: Arc::new(pidfd),
                    },
                    adopted: p.adopted(),
                    readiness: p.readiness(),
                },
            );
            procs.remove(vm_id)
        };
        // Back in the table and out of `pausing` however the call ends.
        Ok(GiveBack {
            host: self,
            vm_id: vm_id.to_string(),
            held,
        })
    }

    /// The VM's VMM as `status` answers while a pause or resume has it:
    /// running (its exit is seen once it is back in the table), and ready
    /// as its readiness says.
    pub(super) fn pausing_state(&self, vm_id: &str) -> Option<VmmState> {
        let pausing = self.pausing.lock().unwrap_or_else(|e| e.into_inner());
        let p = pausing.get(vm_id)?;
        // Running while a pause, resume or snapshot holds it, even when a
        // stop has killed it meanwhile: a snapshot may still be copying
        // its disks, and no launch or disk operation may start until that
        // call gives it back (second review of s12, N4).
        Some(VmmState {
            vm_id: vm_id.to_string(),
            running: true,
            pid: Some(p.found.pid),
            vmm: Some(p.found.vmm),
            adopted: p.adopted,
            ready: p.readiness.as_ref().map(|r| r.seen() == Seen::Ready),
            start_time: None,
            sockets: Vec::new(),
            root_devices: Vec::new(),
        })
    }

    /// The readiness of the VM's VMM, in the table or being paused.
    pub(super) fn readiness_of(&self, vm_id: &str) -> Option<Arc<Readiness>> {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        match procs.get(vm_id) {
            Some((p, _)) => p.readiness(),
            None => self
                .pausing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(vm_id)
                .and_then(|p| p.readiness.clone()),
        }
    }

    /// A stop or kill that found the VMM `found` taken by a pause or
    /// resume. A stop waits for the call to give it back, within its own
    /// timeout; a kill does not wait, and a stop whose timeout ran out
    /// first kills too: SIGKILL through the pidfd kept (the call then ends
    /// on its closed connection, or by its own deadlines), then the call
    /// is waited for at most [`PAUSE_WAIT`] more. Only that very VMM (pid
    /// and start time) is then stopped, with what is left of the timeout:
    /// from the table when the table holds it again; refused
    /// ([`VmOpError::Busy`]) when another pause or resume took it
    /// meanwhile and this stop has not killed it; otherwise through its
    /// pidfd, so a VMM of the VM launched meanwhile is never touched
    /// (review s11, F8). It was running when its pidfd said so as the stop
    /// came, whatever the stop did.
    pub(super) fn stop_during_pause(
        &self,
        vm_id: &str,
        found: InPause,
        timeout: Duration,
        kill: bool,
    ) -> Result<VmStopped, VmOpError> {
        let asked = Instant::now();
        let ran = !banger_vmm::driver::pidfd_exited(&*found.pidfd, Duration::ZERO);
        let killed = kill || !self.await_pause(vm_id, timeout.min(PAUSE_WAIT));
        if killed {
            let _ =
                rustix::process::pidfd_send_signal(&*found.pidfd, rustix::process::Signal::KILL);
            self.await_pause(vm_id, PAUSE_WAIT);
        }
        let left = timeout.saturating_sub(asked.elapsed());
        let stopped = match self.take_for_stop(vm_id, Some((found.pid, found.start_time)))? {
            ForStop::Taken(held) => self.stop_taken(vm_id, held, left, killed)?,
            ForStop::Pausing(_) if !killed => {
                return Err(VmOpError::Busy {
                    vm_id: vm_id.to_string(),
                    pid: found.pid,
                    doing: "paused, resumed or snapshotted",
                });
            }
            ForStop::Pausing(_) | ForStop::Elsewhere => {
                let stopped =
                    self.stop_by_pidfd(vm_id, (found.vmm, found.pid, &found.pidfd), left, killed)?;
                // Gone now: its journal entry, if still there, goes too.
                self.forget_vmm(vm_id, found.pid, found.start_time)?;
                stopped
            }
        };
        Ok(VmStopped {
            graceful: ran && stopped.graceful,
            was_running: ran,
        })
    }

    /// Wait up to `wait` until no pause or resume has the VM's VMM:
    /// whether none has then.
    fn await_pause(&self, vm_id: &str, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut pausing = self.pausing.lock().unwrap_or_else(|e| e.into_inner());
        while pausing.contains_key(vm_id) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            pausing = self
                .paused
                .wait_timeout(pausing, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// Puts a VMM a pause, resume or snapshot took back into the table, then
/// takes the VM out of `pausing` and wakes a stop waiting for it.
pub(super) struct GiveBack<'a> {
    host: &'a VmHost,
    vm_id: String,
    pub(super) held: Option<Held>,
}

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        let mut procs = self.host.procs.lock().unwrap_or_else(|e| e.into_inner());
        // Nothing takes the VM's place meanwhile (status, a launch and a
        // re-adoption all see it in `pausing`); were there something, it
        // would be newer, and this one is dropped after the locks.
        let mut left = None;
        if let Some(held) = self.held.take() {
            match procs.entry(self.vm_id.clone()) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(held);
                }
                std::collections::hash_map::Entry::Occupied(_) => left = Some(held),
            }
        }
        self.host
            .pausing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.vm_id);
        drop(procs);
        self.host.paused.notify_all();
        drop(left);
    }
}
