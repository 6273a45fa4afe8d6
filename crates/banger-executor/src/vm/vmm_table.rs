//! The executor's table of VMMs: status (re-adopting a journaled VMM
//! after a restart, with its readiness watch), the readiness wait, stops
//! and kills, and forgetting a VMM seen gone. Launches are `vmm.rs`'s,
//! pauses and resumes `pause.rs`'s.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_proto::layout::SERIAL_LOG;
use banger_proto::vmops::{VmStopped, VmmKind, VmmState};
use banger_vmm::VmmError;
use banger_vmm::driver::{Found, KILL_WAIT, VmmDriver};
use banger_vmm::firecracker::FirecrackerDriver;
use banger_vmm::qemu::QemuDriver;

use super::error::{VmOpError, io, journal_err};
use super::validate;
use super::vmm::sockets;
use super::{Held, VmHost};
use crate::journal::VmmEntry;

use banger_host::jail::start_time;

impl VmHost {
    /// Root's readable descriptor of the VM's serial log, for a re-adopted
    /// VMM's readiness watch: opened beneath the VM directory, read-only,
    /// only when it is the owner's single-link regular file
    /// (`OwnerDir::open_read`: never a link or a node planted there, never
    /// created). `None` (logged) when that fails: the VMM is then adopted
    /// without a watch.
    fn console_of(&self, vm_id: &str) -> Option<std::fs::File> {
        let opened = self
            .owner_vm_dir(vm_id)
            .map_err(|e| banger_proto::error::chain(&e).join(": "))
            .and_then(|dir| {
                dir.open_read(SERIAL_LOG, self.tool_ids())
                    .map_err(|e| banger_proto::error::chain(&e).join(": "))
            });
        opened
            .map_err(|e| tracing::warn!(vm_id, error = %e, "no console to watch for readiness"))
            .ok()
    }

    /// Forget the VMM seen as `pid` started at `start_time`: it is gone.
    /// Only that entry goes — a newer launch's, journaled meanwhile, stays
    /// (status and stop run without the VM's operation lock) — and the
    /// QMP socket goes only when no entry of the VM is left and no launch
    /// of it (which makes a new socket) is in flight,
    /// decided and done under the journal's and the operation table's
    /// locks (hostile read of the VMM table, finding 2).
    /// The tap of that VMM goes back to root (`taps`), under the journal's
    /// lock (unless a launch in flight has handed it), before the entry's
    /// removal is saved.
    pub(super) fn forget_vmm(
        &self,
        vm_id: &str,
        pid: u32,
        start_time: u64,
    ) -> Result<(), VmOpError> {
        let mut txn = self.journal.open().map_err(journal_err)?;
        let gone = |e: &VmmEntry| e.vm_id == vm_id && e.pid == pid && e.start_time == start_time;
        let taps: Vec<String> = txn
            .state
            .vmms
            .iter()
            .filter(|e| gone(e))
            .filter_map(|e| e.tap.clone())
            .collect();
        txn.state.vmms.retain(|e| !gone(e));
        // The taps go back before the entry's removal is saved: a crash
        // between leaves the entry, whose VMM is found gone again, never
        // a held tap that no entry names (third hostile read of the tap
        // hand-over, F3). A deletion saves the removal with it.
        for tap in taps {
            self.give_back_journaled(&mut txn, &tap);
        }
        txn.save().map_err(journal_err)?;
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        // `VmOp::LaunchVm`'s name, as `Executor::vm_op` takes the lock.
        let launching = busy
            .get(vm_id)
            .is_some_and(|op| *op == banger_proto::privops::LAUNCH_VM);
        if !launching && txn.state.vmms.iter().all(|e| e.vm_id != vm_id) {
            self.remove_qmp_socket(vm_id);
            // Its VMM is gone (its pidfd said so, or the pid names another
            // process): whatever is left in its cgroup is killed, and the
            // cgroup removed, with the journal and the operation table
            // locked (no launch of the VM makes it anew meanwhile). This
            // holds both through `cgroup.kill` and its wait (at most 2 s,
            // `EMPTY_WAIT`), and so stalls every VM's `begin_op` that long.
            // Kept (hostile read, finding 4): dropping `busy` here would
            // unblock little, as every operation that follows needs the
            // journal this transaction holds, and would make "no launch
            // in flight" rest on that ordering instead of on the table.
            let name = super::cgroup::name_of(vm_id);
            if txn.state.vm_cgroups.contains(&name) {
                self.remove_vm_cgroup_in(&mut txn, &name);
            }
        }
        Ok(())
    }

    /// The VM's process, re-adopting a journaled one if the table has none.
    pub(super) fn status_inner(&self, vm_id: &str) -> Result<Option<VmmState>, VmOpError> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, started)) = procs.get_mut(vm_id) {
            let started = *started;
            let running = p.running();
            let ready = p
                .readiness()
                .map(|r| r.seen() == banger_vmm::ready::Seen::Ready);
            let (vmm, pid, adopted) = (p.kind(), p.pid(), p.adopted());
            if !running {
                // Dropped after the table's lock: ending the readiness
                // thread may wait (bounded), and no other VM should.
                let gone = procs.remove(vm_id);
                drop(procs);
                drop(gone);
                self.forget_vmm(vm_id, pid, started)?;
            }
            return Ok(Some(VmmState {
                vm_id: vm_id.to_string(),
                running,
                pid: Some(pid),
                vmm: Some(vmm),
                adopted,
                ready,
                start_time: None,
                sockets: Vec::new(),
                root_devices: Vec::new(),
            }));
        }
        // Being stopped: its entry is still journaled, but it is not
        // adopted again behind the stop's back.
        if let Some((vmm, pid)) = self
            .stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(vm_id)
            .map(|(vmm, pid, _)| (*vmm, *pid))
        {
            return Ok(Some(VmmState {
                vm_id: vm_id.to_string(),
                running: true,
                pid: Some(pid),
                vmm: Some(vmm),
                adopted: false,
                ready: None,
                start_time: None,
                sockets: Vec::new(),
                root_devices: Vec::new(),
            }));
        }
        // Being paused or resumed: likewise not adopted again.
        if let Some(state) = self.pausing_state(vm_id) {
            return Ok(Some(state));
        }
        let entry = {
            let txn = self.journal.open().map_err(journal_err)?;
            txn.state.vmms.iter().find(|e| e.vm_id == vm_id).cloned()
        };
        let Some(entry) = entry else {
            return Ok(None);
        };
        // Same pid *and* same start time (and, for a jailed VMM, its jail
        // uid), or it is somebody else's process. An error reading it (no
        // descriptor left) says nothing: the entry stays and the error is
        // returned (hostile read of the VMM table, finding 1).
        let proc_dir = format!("/proc/{}", entry.pid);
        let same = || {
            banger_host::jail::is_journaled(entry.pid, entry.start_time, entry.uid)
                .map_err(io("reading", Path::new(&proc_dir)))
        };
        let pidfd = match rustix::process::Pid::from_raw(entry.pid as i32) {
            Some(pid) if same()? => {
                match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
                    // Re-check after opening: the pidfd now pins the process.
                    Ok(fd) => same()?.then_some(fd),
                    Err(e) if banger_host::jail::gone_before_open(&e.into()) => None,
                    Err(e) => return Err(io("holding", Path::new(&proc_dir))(e.into())),
                }
            }
            _ => None,
        };
        match pidfd {
            Some(pidfd) => {
                let found = Found::new(
                    entry.pid,
                    pidfd,
                    entry
                        .console_offset
                        .and_then(|from| self.console_of(vm_id).map(|f| (f, from))),
                    vm_id,
                );
                // Each kind powers off its own way; a control that cannot
                // be reached leaves the stop to its timeout and a kill.
                let adopted = match (entry.vmm, entry.uid) {
                    // Only a jailed QEMU's QMP is root's socket.
                    (VmmKind::Qemu, Some(_)) => {
                        QemuDriver::adopt(found, self.qmp_socket(vm_id, false).ok())
                    }
                    (VmmKind::Qemu, None) => QemuDriver::adopt(found, None),
                    (VmmKind::Firecracker, uid) => FirecrackerDriver::adopt(
                        found,
                        uid.and_then(|uid| self.adopted_api(vm_id, uid, entry.pid)),
                    ),
                };
                let ready = adopted
                    .readiness()
                    .map(|r| r.seen() == banger_vmm::ready::Seen::Ready);
                procs.insert(vm_id.to_string(), (adopted, entry.start_time));
                tracing::info!(vm_id, pid = entry.pid, "re-adopted a running VMM");
                Ok(Some(VmmState {
                    vm_id: vm_id.to_string(),
                    running: true,
                    pid: Some(entry.pid),
                    vmm: Some(entry.vmm),
                    adopted: true,
                    ready,
                    start_time: None,
                    sockets: Vec::new(),
                    root_devices: Vec::new(),
                }))
            }
            None => {
                drop(procs);
                self.forget_vmm(vm_id, entry.pid, entry.start_time)?;
                Ok(Some(VmmState {
                    vm_id: vm_id.to_string(),
                    running: false,
                    pid: Some(entry.pid),
                    vmm: Some(entry.vmm),
                    adopted: false,
                    ready: None,
                    start_time: None,
                    sockets: Vec::new(),
                    root_devices: Vec::new(),
                }))
            }
        }
    }

    pub(crate) fn status(&self, vm_id: &str) -> Result<VmmState, VmOpError> {
        validate::id("VM id", vm_id)?;
        Ok(self.describe(self.status_inner(vm_id)?.unwrap_or(VmmState {
            vm_id: vm_id.to_string(),
            running: false,
            pid: None,
            vmm: None,
            adopted: false,
            ready: None,
            start_time: None,
            sockets: Vec::new(),
            root_devices: Vec::new(),
        })))
    }

    /// Wait up to `timeout_ms` for the VM's guest to be reported ready (or
    /// its VMM to exit, or nothing to watch it), then answer as
    /// [`VmHost::status`]. No lock is held while waiting: the table's is
    /// taken only to find the VMM's readiness.
    pub(crate) fn wait_ready(&self, vm_id: &str, timeout_ms: u32) -> Result<VmmState, VmOpError> {
        validate::id("VM id", vm_id)?;
        if timeout_ms > banger_proto::privops::WAIT_READY_MAX_MS {
            return Err(VmOpError::Invalid {
                what: "readiness wait",
                value: format!("{timeout_ms} ms"),
                reason: format!(
                    "longer than {} ms; ask again instead",
                    banger_proto::privops::WAIT_READY_MAX_MS
                ),
            });
        }
        // Re-adopts a journaled VMM the table does not hold yet.
        let state = self.status_inner(vm_id)?;
        if state.is_some_and(|s| s.running)
            && let Some(r) = self.readiness_of(vm_id)
            && let banger_vmm::ready::Seen::Ended(reason) =
                r.wait(Duration::from_millis(timeout_ms.into()))
        {
            // Ended while the VMM runs on: nothing will ever say it is
            // ready, and asking again would answer at once.
            let state = self.status(vm_id)?;
            if state.running {
                return Err(VmOpError::Unwatched {
                    vm_id: vm_id.to_string(),
                    reason,
                });
            }
            return Ok(state);
        }
        self.status(vm_id)
    }

    /// What else the answer tells about a VMM (the daemon keeps the last
    /// one in memory, never on disk): the start time of a running one, its
    /// sockets, and the devices behind the root disk.
    pub(super) fn describe(&self, mut state: VmmState) -> VmmState {
        if state.running {
            state.start_time = state.pid.and_then(|pid| start_time(pid).ok());
            state.sockets = match state.vmm {
                Some(kind) => sockets(kind),
                None => Vec::new(),
            };
        }
        state.root_devices = match self.journal.open() {
            Ok(txn) => txn
                .state
                .snapshot(&state.vm_id)
                .map(|e| {
                    let loop_name = |l: &Option<crate::journal::LoopEntry>| {
                        l.as_ref()
                            .map(|l| l.device.trim_start_matches("/dev/").to_string())
                    };
                    e.dm.clone()
                        .into_iter()
                        .chain(loop_name(&e.origin))
                        .chain(loop_name(&e.cow))
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        state
    }

    /// Is a VMM of this VM running (for ops that need it stopped)?
    pub(crate) fn ensure_stopped(&self, vm_id: &str) -> Result<(), VmOpError> {
        match self.status_inner(vm_id)? {
            Some(s) if s.running => Err(VmOpError::Running {
                vm_id: vm_id.to_string(),
                pid: s.pid.unwrap_or(0),
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn stop(
        &self,
        vm_id: &str,
        timeout: Duration,
        kill: bool,
    ) -> Result<VmStopped, VmOpError> {
        validate::id("VM id", vm_id)?;
        let running = self.status_inner(vm_id)?.is_some_and(|s| s.running);
        if !running {
            return Ok(VmStopped {
                graceful: false,
                was_running: false,
            });
        }
        match self.take_for_stop(vm_id, None)? {
            ForStop::Taken(held) => self.stop_taken(vm_id, held, timeout, kill),
            ForStop::Pausing(found) => self.stop_during_pause(vm_id, found, timeout, kill),
            ForStop::Elsewhere => self.stop_during_stop(vm_id, timeout, kill),
        }
    }

    /// Take the VM's VMM out of the table for a stop, into `stopping`
    /// with a pidfd of its own (taken while it is still in the table: a
    /// kill during the stop acts on it); with `only` (pid, start time),
    /// only that very VMM. Else where it is: a pause's or resume's (that
    /// VMM), or elsewhere (another stop's, or gone). Decided under the
    /// table's lock, which a pause holds to take the VMM and to give it
    /// back.
    pub(super) fn take_for_stop(
        &self,
        vm_id: &str,
        only: Option<(u32, u64)>,
    ) -> Result<ForStop, VmOpError> {
        let is = |pid: u32, started: u64| only.is_none_or(|o| o == (pid, started));
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, started)) = procs.get(vm_id)
            && is(p.pid(), *started)
        {
            let pidfd = p.pidfd().try_clone_to_owned().map_err(io(
                "duplicating the pidfd of the VMM of VM",
                Path::new(vm_id),
            ))?;
            if let Some((p, started)) = procs.remove(vm_id) {
                self.stopping
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(vm_id.to_string(), (p.kind(), p.pid(), Arc::new(pidfd)));
                return Ok(ForStop::Taken((p, started)));
            }
        }
        let pausing = self.pausing.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match pausing.get(vm_id) {
            Some(p) if is(p.pid(), p.start_time()) => ForStop::Pausing(p.found()),
            _ => ForStop::Elsewhere,
        })
    }

    /// Stop (`kill`: kill) the VMM [`VmHost::take_for_stop`] took; out of
    /// `stopping` however that ends (after its journal entry went, when
    /// it did).
    pub(super) fn stop_taken(
        &self,
        vm_id: &str,
        (mut p, start_time): Held,
        timeout: Duration,
        kill: bool,
    ) -> Result<VmStopped, VmOpError> {
        let _stopping = Stopping(self, vm_id);
        let started = Instant::now();
        let graceful = if kill {
            p.kill().map(|()| false)
        } else {
            p.shutdown(timeout)
        }
        .map_err(|source| VmOpError::Stop {
            vm_id: vm_id.to_string(),
            source,
        })?;
        tracing::info!(
            vm_id,
            graceful,
            secs = started.elapsed().as_secs_f32(),
            "VMM stopped"
        );
        self.forget_vmm(vm_id, p.pid(), start_time)?;
        Ok(VmStopped {
            graceful,
            was_running: true,
        })
    }

    /// A stop or kill of a VM another stop is stopping: wait for that
    /// (up to `timeout`, not at all for a kill), then SIGKILL it through
    /// the pidfd kept for it and wait until it exited (its journal entry
    /// is the first stop's to drop). Nothing being stopped: it was not
    /// running.
    fn stop_during_stop(
        &self,
        vm_id: &str,
        timeout: Duration,
        kill: bool,
    ) -> Result<VmStopped, VmOpError> {
        let held = self
            .stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(vm_id)
            .map(|(vmm, pid, fd)| (*vmm, *pid, Arc::clone(fd)));
        let Some((vmm, pid, pidfd)) = held else {
            return Ok(VmStopped {
                graceful: false,
                was_running: false,
            });
        };
        self.stop_by_pidfd(vm_id, (vmm, pid, &pidfd), timeout, kill)
    }

    /// Stop a VMM (kind, pid, pidfd) that is not this stop's to take:
    /// wait up to `timeout` (not at all for a kill) for it to exit, then
    /// SIGKILL it through `pidfd` and wait until it exited.
    pub(super) fn stop_by_pidfd(
        &self,
        vm_id: &str,
        (vmm, pid, pidfd): (VmmKind, u32, &OwnedFd),
        timeout: Duration,
        kill: bool,
    ) -> Result<VmStopped, VmOpError> {
        if !kill && banger_vmm::driver::pidfd_exited(pidfd, timeout) {
            return Ok(VmStopped {
                graceful: true,
                was_running: true,
            });
        }
        let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
        if banger_vmm::driver::pidfd_exited(pidfd, KILL_WAIT) {
            return Ok(VmStopped {
                graceful: false,
                was_running: true,
            });
        }
        Err(VmOpError::Stop {
            vm_id: vm_id.to_string(),
            source: VmmError::StillRunning {
                vmm: vmm.as_str(),
                pid,
                started: None,
                what: format!(
                    "being stopped, still running {} s after SIGKILL",
                    KILL_WAIT.as_secs()
                ),
            },
        })
    }
}

/// Where a stop found the VM's VMM ([`VmHost::take_for_stop`]).
pub(super) enum ForStop {
    /// Taken out of the table for this stop.
    Taken(Held),
    /// A pause or resume has it.
    Pausing(super::pause::InPause),
    /// Neither: another stop has it, or it is gone.
    Elsewhere,
}

/// Takes a VM out of [`VmHost`]'s `stopping` when its stop ends.
struct Stopping<'a>(&'a VmHost, &'a str);

impl Drop for Stopping<'_> {
    fn drop(&mut self) {
        self.0
            .stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.1);
    }
}
