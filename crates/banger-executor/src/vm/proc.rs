//! A VMM process the executor holds: one it spawned (QEMU, Firecracker
//! with its readiness watch) or one it re-adopted by pidfd after a
//! restart, and how each is signalled.

use std::os::fd::OwnedFd;
use std::time::Duration;

use banger_vmm::VmmError;
use banger_vmm::firecracker::{ActionType, ApiClient, ApiRequest, FirecrackerVm, Shutdown};
use banger_vmm::qemu::{QemuVm, Qmp, QmpSocket};

use super::ready::ReadyWatch;

/// A VMM the executor can signal.
#[derive(Debug)]
pub(super) enum Proc {
    /// Spawned by this executor.
    Qemu(QemuVm),
    /// Spawned by this executor; `ready` flips when the guest reports over
    /// vsock.
    Firecracker {
        vm: FirecrackerVm,
        /// The thread waiting for the guest's readiness; ends (and removes
        /// its socket) when this is dropped.
        watch: Box<ReadyWatch>,
    },
    /// Found through the journal after a restart: not our child, so it is
    /// watched and signalled through a pidfd only.
    Adopted {
        pid: u32,
        pidfd: OwnedFd,
        /// A jailed QEMU's QMP socket (root's: `VmHost::qmp_socket`).
        qmp: Option<QmpSocket>,
        /// A jailed Firecracker's API, served by `pid` as its slot uid
        /// (`VmHost::adopted_api`).
        api: Option<Box<ApiClient>>,
    },
}

impl Proc {
    pub(super) fn pid(&self) -> u32 {
        match self {
            Proc::Qemu(q) => q.pid(),
            Proc::Firecracker { vm, .. } => vm.pid(),
            Proc::Adopted { pid, .. } => *pid,
        }
    }

    pub(super) fn ready(&self) -> Option<bool> {
        match self {
            Proc::Firecracker { watch, .. } => Some(watch.is_ready()),
            _ => None,
        }
    }

    pub(super) fn running(&mut self) -> bool {
        match self {
            Proc::Qemu(q) => q.running(),
            Proc::Firecracker { vm, .. } => vm.process().pidfd_alive(),
            Proc::Adopted { pidfd, .. } => !pidfd_exited(pidfd, Duration::ZERO),
        }
    }

    pub(super) fn shutdown(&mut self, timeout: Duration) -> Result<bool, banger_vmm::VmmError> {
        match self {
            Proc::Qemu(q) => q.shutdown(timeout),
            Proc::Firecracker { vm, .. } => Ok(!matches!(vm.shutdown(timeout)?, Shutdown::Killed)),
            Proc::Adopted {
                pid,
                pidfd,
                qmp,
                api,
            } => {
                if let Some(Ok(mut q)) = qmp
                    .as_ref()
                    .map(|qmp| Qmp::connect_socket(qmp, Duration::from_secs(2)))
                {
                    let _ = q.execute("system_powerdown");
                }
                if let Some(api) = api {
                    let _ = api.send(&ApiRequest::action(ActionType::SendCtrlAltDel));
                }
                if pidfd_exited(pidfd, timeout) {
                    return Ok(true);
                }
                kill_adopted(*pid, pidfd).map(|()| false)
            }
        }
    }

    pub(super) fn kill(&mut self) -> Result<(), banger_vmm::VmmError> {
        match self {
            Proc::Qemu(q) => q.kill(),
            Proc::Firecracker { vm, .. } => vm.kill().map(drop),
            Proc::Adopted { pid, pidfd, .. } => kill_adopted(*pid, pidfd),
        }
    }
}

/// SIGKILL an adopted VMM through its pidfd: done only once the pidfd says
/// it exited (within 5 s), else [`VmmError::StillRunning`].
fn kill_adopted(pid: u32, pidfd: &OwnedFd) -> Result<(), VmmError> {
    let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
    if pidfd_exited(pidfd, Duration::from_secs(5)) {
        return Ok(());
    }
    Err(VmmError::StillRunning {
        vmm: "VMM",
        pid,
        started: None,
        what: "an adopted VMM, still running 5 s after SIGKILL".into(),
    })
}

/// Wait up to `timeout` for the process behind `pidfd` to exit.
fn pidfd_exited(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as i64,
    };
    matches!(rustix::event::poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
}
