//! Pausing and resuming a VMM's vCPUs (`PauseVm`, `ResumeVm`).
//!
//! The VMM is taken out of the table for the driver's call, as a stop
//! takes it, so no table lock is held while root talks to the VMM (each
//! exchange is bounded by the driver: QMP 2 s, Firecracker's API 10 s, 2 s
//! for an adopted one). Meanwhile it is in `pausing`: status answers from
//! there (running, with its readiness), nothing re-adopts it from the
//! journal, a launch or disk operation is refused as for any running VMM,
//! a second pause or resume is refused, and a stop or kill waits for the
//! call to give the VMM back ([`VmHost::await_pause`]).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_proto::vmops::{VmStopped, VmmKind, VmmState};
use banger_vmm::VmmError;
use banger_vmm::driver::Vcpus;
use banger_vmm::ready::{Readiness, Seen};

use super::error::{VmOpError, io};
use super::validate;
use super::{Held, VmHost};

/// How long a stop waits for a pause or resume in flight: past the
/// drivers' own deadlines (QEMU: three QMP exchanges of 2 s; Firecracker:
/// two API requests of 10 s).
const PAUSE_WAIT: Duration = Duration::from_secs(30);

/// A VMM a pause or resume took out of the table.
#[derive(Debug)]
pub(super) struct Pausing {
    vmm: VmmKind,
    pid: u32,
    pidfd: Arc<OwnedFd>,
    adopted: bool,
    readiness: Option<Arc<Readiness>>,
}

impl VmHost {
    /// Pause or resume (`to`) the vCPUs of the VM's VMM, re-adopting a
    /// journaled one first as a status does. Refused when none runs
    /// ([`VmOpError::NotRunning`]) and while a stop, or another pause or
    /// resume, has it ([`VmOpError::Busy`]).
    pub(crate) fn set_vcpus(&self, vm_id: &str, to: Vcpus) -> Result<(), VmOpError> {
        validate::id("VM id", vm_id)?;
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
                return Err(busy(p.pid, "paused or resumed"));
            }
            let Some((p, _)) = procs.get(vm_id) else {
                return Err(not_running());
            };
            let pidfd = p.pidfd().try_clone_to_owned().map_err(io(
                "duplicating the pidfd of the VMM of VM",
                std::path::Path::new(vm_id),
            ))?;
            pausing.insert(
                vm_id.to_string(),
                Pausing {
                    vmm: p.kind(),
                    pid: p.pid(),
                    pidfd: Arc::new(pidfd),
                    adopted: p.adopted(),
                    readiness: p.readiness(),
                },
            );
            procs.remove(vm_id)
        };
        // Back in the table and out of `pausing` however the call ends.
        let mut back = GiveBack {
            host: self,
            vm_id,
            held,
        };
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

    /// The VM's VMM as `status` answers while a pause or resume has it:
    /// running (its exit is seen once it is back in the table), and ready
    /// as its readiness says.
    pub(super) fn pausing_state(&self, vm_id: &str) -> Option<VmmState> {
        let pausing = self.pausing.lock().unwrap_or_else(|e| e.into_inner());
        let p = pausing.get(vm_id)?;
        Some(VmmState {
            vm_id: vm_id.to_string(),
            running: true,
            pid: Some(p.pid),
            vmm: Some(p.vmm),
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

    /// A stop or kill that found the VMM taken by a pause or resume: a
    /// kill signals it at once (through the pause's pidfd: its QMP or API
    /// call then ends), then either waits for the call to give the VMM
    /// back and stops it from the table (a paused one is resumed by its
    /// driver's shutdown). `again` is false on that second try: a pause
    /// that took it once more is refused (after a kill's signal), not
    /// waited for in a loop.
    pub(super) fn stop_during_pause(
        &self,
        vm_id: &str,
        timeout: Duration,
        kill: bool,
        again: bool,
    ) -> Result<VmStopped, VmOpError> {
        if kill {
            self.signal_pausing(vm_id);
        }
        if !again {
            let pid = self
                .pausing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(vm_id)
                .map_or(0, |p| p.pid);
            return Err(VmOpError::Busy {
                vm_id: vm_id.to_string(),
                pid,
                doing: "paused or resumed",
            });
        }
        self.await_pause(vm_id)?;
        let stopped = self.stop_once(vm_id, timeout, kill, false)?;
        // Killed here already, it may be seen gone by then: it ran when
        // the kill came.
        Ok(VmStopped {
            was_running: stopped.was_running || kill,
            ..stopped
        })
    }

    /// SIGKILL the VMM a pause or resume has, through its pidfd.
    fn signal_pausing(&self, vm_id: &str) {
        if let Some(p) = self
            .pausing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(vm_id)
        {
            let _ = rustix::process::pidfd_send_signal(&*p.pidfd, rustix::process::Signal::KILL);
        }
    }

    /// Wait until no pause or resume has the VM's VMM, at most
    /// [`PAUSE_WAIT`] (far past the drivers' deadlines); after that it is
    /// [`VmOpError::Busy`].
    fn await_pause(&self, vm_id: &str) -> Result<(), VmOpError> {
        let deadline = Instant::now() + PAUSE_WAIT;
        let mut pausing = self.pausing.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(p) = pausing.get(vm_id) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(VmOpError::Busy {
                    vm_id: vm_id.to_string(),
                    pid: p.pid,
                    doing: "paused or resumed",
                });
            }
            pausing = self
                .paused
                .wait_timeout(pausing, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }
}

/// Puts a VMM a pause or resume took back into the table, then takes the
/// VM out of `pausing` and wakes a stop waiting for it.
struct GiveBack<'a> {
    host: &'a VmHost,
    vm_id: &'a str,
    held: Option<Held>,
}

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        let mut procs = self.host.procs.lock().unwrap_or_else(|e| e.into_inner());
        // Nothing takes the VM's place meanwhile (status, a launch and a
        // re-adoption all see it in `pausing`); were there something, it
        // would be newer, and this one is dropped after the locks.
        let mut left = None;
        if let Some(held) = self.held.take() {
            match procs.entry(self.vm_id.to_string()) {
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
            .remove(self.vm_id);
        drop(procs);
        self.host.paused.notify_all();
        drop(left);
    }
}
