//! The one shape every VMM has (issue #14 item 3): a [`VmmDriver`] starts
//! a VMM from a [`LaunchSpec`] and the descriptors root opened for it, or
//! adopts one an earlier executor started; either way the caller holds a
//! [`RunningVmm`] — its process, how it is asked to power off, how it is
//! killed, how its vCPUs are paused and resumed, and its guest's
//! [`Readiness`], reported by the driver as an event.
//!
//! Adding a hypervisor is a driver module implementing these two traits,
//! a [`VmmKind`], and the executor's files for it (what it opens and checks
//! before a launch).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use banger_proto::vmops::VmmKind;

use crate::ready::{ConsoleWatch, Readiness};
use crate::{LaunchSpec, VmmError};

/// A VMM the executor holds: spawned by it, or re-adopted by pidfd.
pub trait RunningVmm: Send + std::fmt::Debug {
    fn kind(&self) -> VmmKind;
    fn pid(&self) -> u32;
    /// The pidfd that pins its process: the only handle it is signalled
    /// through.
    fn pidfd(&self) -> BorrowedFd<'_>;
    /// Found through the journal after a restart, not spawned here.
    fn adopted(&self) -> bool;
    /// Whether the process still runs (a spawned one is reaped if not).
    fn running(&mut self) -> bool;
    /// The guest's readiness, as this driver observes it; `None` when
    /// nothing watches it (adopted without a console offset).
    fn readiness(&self) -> Option<Arc<Readiness>>;
    /// The console length its readiness is watched from (journaled, so a
    /// re-adoption watches from the same place).
    fn console_offset(&self) -> Option<u64>;
    /// Ask the guest to power off, wait up to `timeout`, then kill; true
    /// when it stopped by itself (or had already exited). Paused vCPUs are
    /// resumed first: a paused guest would never see the request.
    fn shutdown(&mut self, timeout: Duration) -> Result<bool, VmmError>;
    /// SIGKILL; done once it has exited, else
    /// [`VmmError::StillRunning`].
    fn kill(&mut self) -> Result<(), VmmError>;
    /// Pause the guest's vCPUs (the process runs on) and confirm the state
    /// the VMM then reports. Paused already is success. Every exchange
    /// with the VMM is bounded; an exited VMM is
    /// [`VmmError::NotRunning`], an adopted one without a control
    /// connection [`VmmError::NoControl`].
    fn pause(&mut self) -> Result<(), VmmError>;
    /// Resume them, as [`RunningVmm::pause`]; running already is success.
    fn resume(&mut self) -> Result<(), VmmError>;
    /// Write the paused guest's memory and device state to `to` (a
    /// snapshot's files, root's descriptors), within `timeout`: how many
    /// bytes were written. The guest must be paused
    /// ([`RunningVmm::pause`]) and stays so; a VMM that cannot save is
    /// [`VmmError::Snapshot`].
    fn save_state(&mut self, to: SaveTo<'_>, timeout: Duration) -> Result<u64, VmmError>;
}

/// Where a snapshot is saved: root's descriptors of the snapshot's new,
/// empty files.
#[derive(Debug, Clone, Copy)]
pub struct SaveTo<'a> {
    /// The memory. QEMU writes its whole migration stream here, the
    /// device state included.
    pub memory: BorrowedFd<'a>,
    /// The device state, apart (Firecracker's `snapshot_path`); QEMU
    /// needs none and refuses one.
    pub state: Option<BorrowedFd<'a>>,
}

/// The state a pause or resume asks of a VMM's vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vcpus {
    Paused,
    Running,
}

impl Vcpus {
    /// The request, as errors name it.
    pub fn verb(self) -> &'static str {
        match self {
            Vcpus::Paused => "pause",
            Vcpus::Running => "resume",
        }
    }
}

/// A hypervisor: how a VMM of its kind is started and adopted.
pub trait VmmDriver {
    const KIND: VmmKind;
    /// What a start takes beside the spec: the descriptors root opened and
    /// checked for it (and whatever the driver needs around the spawn).
    type Start<'a>;
    /// How an adopted VMM of this kind is asked to power off, pause and
    /// resume.
    type Control: VmmControl + 'static;

    /// Start a VMM for `spec`. On error nothing is left running, unless
    /// the error is [`VmmError::StillRunning`].
    fn start(
        &self,
        spec: &LaunchSpec,
        with: Self::Start<'_>,
    ) -> Result<Box<dyn RunningVmm>, VmmError>;

    /// A VMM of this kind found running after a restart (`found`),
    /// controlled through `control` when there is one.
    fn adopt(found: Found, control: Option<Self::Control>) -> Box<dyn RunningVmm> {
        Box::new(Adopted {
            kind: Self::KIND,
            found,
            control,
        })
    }
}

/// How an adopted VMM is controlled: its guest asked to power off (QEMU:
/// ACPI power button over QMP; Firecracker: Ctrl-Alt-Del over its API),
/// its vCPUs paused and resumed (QEMU: `stop`/`cont`; Firecracker:
/// `PATCH /vm`).
pub trait VmmControl: Send + std::fmt::Debug {
    /// Ask the guest to power off, resuming paused vCPUs first. Best
    /// effort: a VMM that does not answer is killed when its stop times
    /// out.
    fn power_off(&self);
    /// Pause or resume the vCPUs (`to`) and confirm the state the VMM
    /// reports then; every exchange within the control's deadline.
    fn set_vcpus(&self, to: Vcpus) -> Result<(), VmmError>;
    /// [`RunningVmm::save_state`] through the control connection.
    fn save_state(&self, to: SaveTo<'_>, timeout: Duration) -> Result<u64, VmmError>;
}

/// A running VMM found through the journal: its pid, a pidfd that pins it
/// (the caller checked pid, start time and jail uid before opening it),
/// and its console watch when the journal has the console's offset.
#[derive(Debug)]
pub struct Found {
    pub pid: u32,
    pub pidfd: OwnedFd,
    watch: Option<ConsoleWatch>,
    offset: Option<u64>,
}

impl Found {
    /// `console`: root's readable descriptor of the VM's serial log and
    /// the offset journaled at the launch; the guest's readiness is then
    /// watched from there, else not at all. A watch that cannot be set up
    /// is logged and left out.
    pub fn new(pid: u32, pidfd: OwnedFd, console: Option<(File, u64)>, vm_id: &str) -> Found {
        let mut offset = None;
        let watch = console.and_then(|(file, from)| {
            offset = Some(from);
            let fd = pidfd
                .try_clone()
                .map_err(|e| VmmError::Io {
                    what: format!("duplicating the pidfd of VM {vm_id}'s VMM"),
                    source: e,
                })
                .and_then(|pidfd| ConsoleWatch::spawn(file, from, pidfd, vm_id, Readiness::new()));
            fd.map_err(|e| tracing::warn!(vm_id, error = %e, "no readiness watch"))
                .ok()
        });
        Found {
            pid,
            pidfd,
            watch,
            offset,
        }
    }
}

/// An adopted VMM of any kind: signalled through its pidfd only (it is not
/// this process's child), powered off, paused and resumed through its
/// driver's [`VmmControl`].
#[derive(Debug)]
struct Adopted<C> {
    kind: VmmKind,
    found: Found,
    control: Option<C>,
}

impl<C: VmmControl> Adopted<C> {
    /// Through the control connection; an exited VMM is
    /// [`VmmError::NotRunning`], whatever the control said.
    fn set_vcpus(&mut self, to: Vcpus) -> Result<(), VmmError> {
        let not_running = VmmError::NotRunning {
            vmm: self.kind.as_str(),
            pid: self.found.pid,
            what: to.verb(),
        };
        if !self.running() {
            return Err(not_running);
        }
        let Some(c) = &self.control else {
            return Err(VmmError::NoControl {
                vmm: self.kind.as_str(),
                pid: self.found.pid,
                what: to.verb(),
            });
        };
        match c.set_vcpus(to) {
            Err(_) if pidfd_exited(&self.found.pidfd, GONE_GRACE) => Err(not_running),
            done => done,
        }
    }
}

impl<C: VmmControl> RunningVmm for Adopted<C> {
    fn kind(&self) -> VmmKind {
        self.kind
    }
    fn pid(&self) -> u32 {
        self.found.pid
    }
    fn pidfd(&self) -> BorrowedFd<'_> {
        self.found.pidfd.as_fd()
    }
    fn adopted(&self) -> bool {
        true
    }
    fn running(&mut self) -> bool {
        !crate::ready::exited(&self.found.pidfd)
    }
    fn readiness(&self) -> Option<Arc<Readiness>> {
        self.found.watch.as_ref().map(ConsoleWatch::readiness)
    }
    fn console_offset(&self) -> Option<u64> {
        self.found.offset
    }
    fn shutdown(&mut self, timeout: Duration) -> Result<bool, VmmError> {
        if let Some(c) = &self.control {
            c.power_off();
        }
        if pidfd_exited(&self.found.pidfd, timeout) {
            return Ok(true);
        }
        self.kill().map(|()| false)
    }
    fn kill(&mut self) -> Result<(), VmmError> {
        let (pid, pidfd) = (self.found.pid, &self.found.pidfd);
        let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
        if pidfd_exited(pidfd, KILL_WAIT) {
            return Ok(());
        }
        Err(VmmError::StillRunning {
            vmm: self.kind.as_str(),
            pid,
            started: None,
            what: "an adopted VMM, still running 5 s after SIGKILL".into(),
        })
    }
    fn pause(&mut self) -> Result<(), VmmError> {
        self.set_vcpus(Vcpus::Paused)
    }
    fn resume(&mut self) -> Result<(), VmmError> {
        self.set_vcpus(Vcpus::Running)
    }
    fn save_state(&mut self, to: SaveTo<'_>, timeout: Duration) -> Result<u64, VmmError> {
        let (vmm, pid) = (self.kind.as_str(), self.found.pid);
        if !self.running() {
            return Err(VmmError::NotRunning {
                vmm,
                pid,
                what: "snapshot",
            });
        }
        let Some(c) = &self.control else {
            return Err(VmmError::NoControl {
                vmm,
                pid,
                what: "snapshot",
            });
        };
        c.save_state(to, timeout)
    }
}

/// How long a VMM signalled through its pidfd gets to be seen exited
/// before it is [`VmmError::StillRunning`] (a spawned one is waited for
/// less: its reaper says sooner).
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long a VMM whose control call failed gets to be seen exited (its
/// sockets close before its pidfd says so): the call's error is then
/// [`VmmError::NotRunning`].
pub(crate) const GONE_GRACE: Duration = Duration::from_millis(200);

/// `d` as a poll timeout.
pub(crate) fn timespec(d: Duration) -> rustix::time::Timespec {
    rustix::time::Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// Wait up to `timeout` for the process behind `pidfd` to exit.
pub fn pidfd_exited(pidfd: impl AsFd, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut fds = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rustix::event::poll(&mut fds, Some(&timespec(left))) {
            Ok(n) => return n > 0,
            // A signal is not an answer: wait out the rest.
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}
