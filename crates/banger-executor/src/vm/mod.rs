//! VM operations of the executor: disks (the root disk through the
//! `snapshot` backends), guest files, VMM processes.
//!
//! Paths are derived from ids under the configured state directory (see
//! `banger_proto::vmops`); VMM binaries come from the executor's own
//! configuration, never from a request.

pub mod cgroup;
mod disks;
mod error;
mod fc_tap;
mod firecracker;
mod guestfs;
mod jailed;
mod pause;
mod qmp;
mod save;
mod slots;
pub(crate) mod snapshot;
mod support;
mod taps;
#[cfg(test)]
mod tests_fc_window;
#[cfg(test)]
mod tests_grants;
#[cfg(test)]
mod tests_pause;
#[cfg(test)]
mod tests_readiness;
#[cfg(test)]
mod tests_taps;
mod validate;
mod vmm;
mod vmm_files;
mod vmm_table;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use banger_host::net::HostNet;
use banger_host::probe::HostProbes;

pub use error::VmOpError;
pub use snapshot::clone_file;
pub use vmm::KERNEL_CMDLINE;

use crate::journal::JournalFile;

/// Where VMs live and who owns them; set once when the executor is built.
#[derive(Debug, Clone)]
pub struct VmHostConfig {
    /// The owner daemon's state directory (`vms/`, `images/`, `kernels/`).
    pub state_dir: PathBuf,
    /// (uid, gid) of the owner: files the executor creates are theirs, and
    /// tools and VMMs run with their ids (root in dev mode: `(0, 0)`).
    pub owner: (u32, u32),
    /// The VMM binaries this executor launches; `None`: that VMM is not
    /// available (a system install that recorded none).
    pub qemu_binary: Option<PathBuf>,
    pub firecracker_binary: Option<PathBuf>,
    /// The jail uids: disk tools run as `jail.tool_uid()` (docs/jail.md).
    pub jail: banger_proto::install::InstallJail,
}

#[cfg(test)]
impl VmHostConfig {
    /// VMs under `dir`/state (made, with its `vms/`), owned by 4242, with
    /// four slots from uid 2000000 and no VMM binaries: the executor
    /// tests' host.
    pub(crate) fn for_tests(dir: &std::path::Path) -> VmHostConfig {
        let state_dir = dir.join("state");
        std::fs::create_dir_all(state_dir.join("vms")).unwrap();
        VmHostConfig {
            state_dir,
            owner: (4242, 4242),
            qemu_binary: None,
            firecracker_binary: None,
            jail: banger_proto::install::InstallJail {
                uid_base: 2_000_000,
                count: 4,
            },
        }
    }
}

/// A VMM being stopped: its kind, pid and a pidfd of it.
type Stopped = (banger_proto::vmops::VmmKind, u32, Arc<std::os::fd::OwnedFd>);

/// A VMM in the executor's table, with its start time as journaled.
type Held = (Box<dyn banger_vmm::driver::RunningVmm>, u64);

pub(crate) struct VmHost {
    state_dir: PathBuf,
    /// Also the one uid `EnsureTap` accepts in a request (the taps it
    /// makes are root's, handed to a VMM's uid for its launch).
    pub(crate) owner: (u32, u32),
    qemu_binary: Option<PathBuf>,
    firecracker_binary: Option<PathBuf>,
    jail: banger_proto::install::InstallJail,
    journal: Arc<JournalFile>,
    /// Each VM's VMM, with its start time as journaled.
    procs: Mutex<HashMap<String, Held>>,
    /// VMMs a stop has taken out of `procs` and is stopping (kind, pid,
    /// a pidfd): still running, never re-adopted from the journal
    /// meanwhile, and killed through that pidfd by a kill (or a second
    /// stop) that comes during the stop.
    stopping: Mutex<HashMap<String, Stopped>>,
    /// VMMs a pause or resume has taken out of `procs` for its call to
    /// the VMM (`pause`): status answers from here, nothing re-adopts
    /// them, and a stop waits on `paused` until the call gave the VMM
    /// back. Taken with `procs` held, never the reverse.
    pausing: Mutex<HashMap<String, pause::Pausing>>,
    /// Signalled (with `pausing`) whenever a pause or resume ends.
    paused: Condvar,
    /// VM jail uids reserved by launches in flight (`slots`).
    slots: Mutex<std::collections::BTreeSet<u32>>,
    /// Taps handed to a VMM's ids by launches in flight, not yet named by
    /// a journaled VMM (`taps`), with how many launches hand each: never
    /// given back meanwhile.
    handing: Mutex<std::collections::BTreeMap<String, usize>>,
    /// VMs with an operation in flight, and which ([`VmHost::begin_op`]).
    busy: Mutex<std::collections::BTreeMap<String, &'static str>>,
    /// Device probes (is `/dev/mapper/control` there?) and KVM's.
    probes: Arc<dyn HostProbes>,
    /// The last KVM verdict, why not, and when (`support`).
    kvm: Mutex<
        Option<(
            banger_proto::privops::KvmVerdict,
            Option<String>,
            std::time::Instant,
        )>,
    >,
    /// The host network: a journaled tap is handed to a VMM's uid for its
    /// launch and given back to root (`taps`).
    net: Arc<dyn HostNet>,
    /// `dmsetup`, the loop-device and `DM_VERSION` ioctls, and device-node
    /// ownership (loop devices are attached by ioctl: no `losetup`).
    pub(crate) tools: Arc<dyn snapshot::DiskTools>,
    /// The cgroup VMs' cgroups are made in; `None`: none was delegated
    /// (VMMs are bounded by their rlimits only).
    cgroups: Option<cgroup::VmCgroups>,
}

impl std::fmt::Debug for VmHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmHost")
            .field("state_dir", &self.state_dir)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl VmHost {
    pub(crate) fn new(
        cfg: VmHostConfig,
        journal: Arc<JournalFile>,
        probes: Arc<dyn HostProbes>,
        net: Arc<dyn HostNet>,
    ) -> VmHost {
        VmHost {
            state_dir: cfg.state_dir,
            owner: cfg.owner,
            qemu_binary: cfg.qemu_binary,
            firecracker_binary: cfg.firecracker_binary,
            jail: cfg.jail,
            journal,
            procs: Mutex::new(HashMap::new()),
            stopping: Mutex::new(HashMap::new()),
            pausing: Mutex::new(HashMap::new()),
            paused: Condvar::new(),
            slots: Mutex::default(),
            handing: Mutex::default(),
            busy: Mutex::default(),
            probes,
            kvm: Mutex::default(),
            net,
            tools: Arc::new(snapshot::HostTools),
            cgroups: None,
        }
    }

    /// Make VMs' cgroups in `cgroups` from now on, after sweeping it of
    /// every VM cgroup no re-adoptable journaled VMM runs in.
    pub(crate) fn set_cgroups(&mut self, cgroups: cgroup::VmCgroups) {
        self.cgroups = Some(cgroups);
        match self.sweep_vm_cgroups() {
            Ok(removed) if !removed.is_empty() => {
                tracing::warn!(?removed, "removed VM cgroups no running VMM holds");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %banger_proto::error::chain(&e).join(": "), "sweeping VM cgroups")
            }
        }
    }

    /// Replace the tools the snapshot backends run (tests: a recording fake).
    #[cfg(test)]
    pub(crate) fn with_tools(mut self, tools: Arc<dyn snapshot::DiskTools>) -> VmHost {
        self.tools = tools;
        self
    }

    /// Take `vm_id`'s operation lock for `op`, or refuse: another
    /// operation of that VM (named in the error) is in flight. No two
    /// VM-scoped operations of one VM overlap (`Executor::vm_op` takes it
    /// for every one that touches its disks or starts its VMM); the
    /// second is refused rather than queued, so no request waits behind
    /// a launch or a disk tool. Released when the guard drops.
    pub(crate) fn begin_op(&self, vm_id: &str, op: &'static str) -> Result<VmBusy<'_>, VmOpError> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(other) = busy.get(vm_id) {
            return Err(VmOpError::Invalid {
                what: "VM",
                value: vm_id.to_string(),
                reason: format!("another operation on it ({other}) is in progress"),
            });
        }
        busy.insert(vm_id.to_string(), op);
        Ok(VmBusy {
            busy: &self.busy,
            vm_id: vm_id.to_string(),
        })
    }

    /// Root's directory of loop-backing links, in the state dir.
    pub(crate) fn links(&self) -> snapshot::links::LinkDir {
        snapshot::links::LinkDir::in_state(&self.state_dir)
    }

    /// Credentials for child tools: the owner's, unless that is root.
    fn tool_ids(&self) -> Option<(u32, u32)> {
        (self.owner != (0, 0)).then_some(self.owner)
    }
}

/// A VM's operation lock ([`VmHost::begin_op`]), held while the operation
/// runs.
pub(crate) struct VmBusy<'a> {
    busy: &'a Mutex<std::collections::BTreeMap<String, &'static str>>,
    vm_id: String,
}

impl Drop for VmBusy<'_> {
    fn drop(&mut self) {
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.vm_id);
    }
}
