//! Firecracker as a [`VmmDriver`]: a jailed launch whose guest reports
//! ready over vsock, watched by a thread owned with the running VMM.

use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use banger_proto::vmops::VmmKind;

use super::{
    ApiClient, FirecrackerDriver, FirecrackerFiles, FirecrackerVm, JailTap, ReadyListener,
    Shutdown, VMM,
};
use crate::driver::{RunningVmm, SaveTo, Vcpus, VmmControl, VmmDriver};
use crate::ready::{ConsoleWatch, Readiness, Seen, end_thread, exited};
use crate::{LaunchSpec, VmmError};

/// How long the vsock readiness listener of a Firecracker VM waits.
const READY_WAIT: Duration = Duration::from_secs(600);

/// What a Firecracker start takes beside the spec.
pub struct Start<'a> {
    pub files: FirecrackerFiles,
    /// Moves the VM's tap into the jail's network namespace and back.
    pub tap: &'a mut dyn JailTap,
    /// Bound before the launch (Firecracker forwards the guest's
    /// connection only to a socket that already listens).
    pub listener: ReadyListener,
    /// A restore (with `files.restore`): the identity the guest agent
    /// applies once the snapshot is loaded. `None`: a boot.
    pub incoming: Option<super::snapshot::Incoming>,
}

impl std::fmt::Debug for Start<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Start")
            .field("files", &self.files)
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl VmmDriver for FirecrackerDriver {
    const KIND: VmmKind = VmmKind::Firecracker;
    type Start<'a> = Start<'a>;
    type Control = ApiClient;

    fn start(&self, spec: &LaunchSpec, with: Start<'_>) -> Result<Box<dyn RunningVmm>, VmmError> {
        let Start {
            files,
            tap,
            listener,
            incoming,
        } = with;
        if files.restore.is_some() != incoming.is_some() {
            return Err(VmmError::InvalidSpec {
                vmm: VMM,
                what: "restore: the snapshot's files and the identity go together".into(),
            });
        }
        // Its console past this length is this boot's (a re-adoption
        // watches it from there), read through a readable reopening of
        // root's descriptor.
        let offset = crate::bound_serial_log(VMM, &files.serial)?;
        let console = crate::dir::reopen(files.serial.as_fd(), rustix::fs::OFlags::RDONLY)
            .map(std::fs::File::from)
            .map_err(|e| VmmError::Io {
                what: "firecracker: reopening the serial log for reading".into(),
                source: e.into(),
            })?;
        let mut vm = self.launch_jailed(spec, files, tap)?;
        // The guest's ready line counts on either channel: vsock (the
        // contract's, best effort) or the console, as for QEMU.
        let readiness = Readiness::new();
        if let Some(incoming) = incoming {
            // Loaded, paused: resumed and given its identity, or killed.
            if let Err(e) = vm.finish_restore(incoming) {
                return Err(match vm.kill() {
                    Ok(_) => e,
                    Err(still) => still,
                });
            }
            // It booted long ago: no ready line comes again.
            readiness.settle(Seen::Ready);
        }
        let watches = vm
            .process()
            .pidfd()
            .try_clone_to_owned()
            .map_err(|source| VmmError::Io {
                what: "firecracker: duplicating its pidfd".into(),
                source,
            })
            .and_then(|pidfd| {
                let vsock = pidfd.try_clone().map_err(|source| VmmError::Io {
                    what: "firecracker: duplicating its pidfd".into(),
                    source,
                })?;
                let console = ConsoleWatch::spawn(
                    console,
                    offset,
                    pidfd,
                    &spec.vm_id,
                    Arc::clone(&readiness),
                )?;
                let vsock =
                    VsockWatch::spawn(listener, vsock, spec.vm_id.clone(), Arc::clone(&readiness))?;
                Ok((console, vsock))
            });
        match watches {
            Ok((console, vsock)) => Ok(Box::new(Running {
                vm,
                readiness,
                _console: console,
                _vsock: vsock,
                offset,
            })),
            // Nothing would ever see it ready: not left running.
            Err(e) => Err(match vm.kill() {
                Ok(_) => e,
                Err(still) => still,
            }),
        }
    }
}

/// An adopted Firecracker is controlled through its API: Ctrl-Alt-Del
/// (the guest reboots, which ends Firecracker given `reboot=k`), after a
/// resume ([`ApiClient::request_power_off`]); `PATCH /vm`.
impl VmmControl for ApiClient {
    fn power_off(&self) {
        let _ = self.request_power_off();
    }
    fn set_vcpus(&self, to: Vcpus) -> Result<(), VmmError> {
        ApiClient::set_vcpus(self, to)
    }
    /// An adopted Firecracker is always a jailed one: its `run/` is at
    /// `/run`.
    fn save_state(&self, to: SaveTo<'_>, timeout: Duration) -> Result<u64, VmmError> {
        let run = |name: &str| format!("/{}/{name}", super::paths::RUN);
        let saved = (
            run(super::paths::SAVED_STATE),
            run(super::paths::SAVED_MEMORY),
        );
        self.save_snapshot((&saved.0, &saved.1), to, timeout)
    }
}

/// A Firecracker this executor started.
#[derive(Debug)]
struct Running {
    vm: FirecrackerVm,
    readiness: Arc<Readiness>,
    /// Both settle `readiness`; dropped with the VMM, they end.
    _console: ConsoleWatch,
    _vsock: VsockWatch,
    offset: u64,
}

impl RunningVmm for Running {
    fn kind(&self) -> VmmKind {
        VmmKind::Firecracker
    }
    fn pid(&self) -> u32 {
        self.vm.pid()
    }
    fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.vm.process().pidfd()
    }
    fn adopted(&self) -> bool {
        false
    }
    fn running(&mut self) -> bool {
        self.vm.process().pidfd_alive()
    }
    fn readiness(&self) -> Option<Arc<Readiness>> {
        Some(Arc::clone(&self.readiness))
    }
    fn console_offset(&self) -> Option<u64> {
        Some(self.offset)
    }
    fn shutdown(&mut self, timeout: Duration) -> Result<bool, VmmError> {
        Ok(!matches!(self.vm.shutdown(timeout)?, Shutdown::Killed))
    }
    fn kill(&mut self) -> Result<(), VmmError> {
        self.vm.kill().map(drop)
    }
    fn pause(&mut self) -> Result<(), VmmError> {
        self.vm.set_vcpus(Vcpus::Paused)
    }
    fn resume(&mut self) -> Result<(), VmmError> {
        self.vm.set_vcpus(Vcpus::Running)
    }
    fn save_state(&mut self, to: SaveTo<'_>, timeout: Duration) -> Result<u64, VmmError> {
        self.vm.save_state(to, timeout)
    }
}

/// The vsock readiness listener's thread: it settles the readiness as
/// ready when the guest reports; it ends without settling it when
/// [`READY_WAIT`] runs out, the guest sent something else, the VMM exits
/// (the console watch says so), the console settled it first, or this is
/// dropped (the VMM was stopped,
/// killed or seen dead) — then the listener and its socket in the VM's
/// `run/` go with it, never outliving the VMM.
#[derive(Debug)]
pub(crate) struct VsockWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl VsockWatch {
    pub(crate) fn spawn(
        listener: ReadyListener,
        pidfd: OwnedFd,
        vm_id: String,
        readiness: Arc<Readiness>,
    ) -> Result<VsockWatch, VmmError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("vsock-ready".into())
            .spawn(move || {
                let ended = |what: &str| VmmError::Readiness {
                    vmm: VMM,
                    what: what.into(),
                };
                let check = || {
                    if flag.load(Ordering::SeqCst) {
                        Err(ended("the watch was stopped"))
                    } else if readiness.seen() != Seen::Waiting {
                        // The console said it first (or ended the wait).
                        Err(ended("settled on the console"))
                    } else if exited(&pidfd) {
                        Err(ended("the VMM exited"))
                    } else {
                        Ok(())
                    }
                };
                match listener.wait_while(READY_WAIT, check) {
                    Ok(()) => readiness.settle(Seen::Ready),
                    Err(_) if flag.load(Ordering::SeqCst) || readiness.seen() != Seen::Waiting => {}
                    Err(e) => {
                        tracing::warn!(vm_id, error = %e, "no vsock readiness from the guest; its console may still say");
                    }
                }
                // `listener` drops here: its socket file is removed.
            })
            .map_err(|source| VmmError::Io {
                what: "firecracker: spawning the vsock readiness thread".into(),
                source,
            })?;
        Ok(VsockWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for VsockWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // It polls every 10 ms; a read from a guest connection ends when
        // the VMM (dead by now) closed it. Waited for, so the socket is
        // gone before a later launch binds it again.
        end_thread(self.thread.take(), "vsock readiness");
    }
}

#[cfg(test)]
mod tests;
