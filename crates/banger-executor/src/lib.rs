//! The one executor of privileged operations.
//!
//! Both adapters end here: `bangerd --dev` calls [`Executor::execute`]
//! in-process, and `bangerd-root` calls it for each request read from its
//! socket. Validation and behaviour are therefore identical in both modes.
//!
//! Every operation is validated before anything is touched; every host path
//! the executor uses is derived here or in `banger-host`, never taken from the
//! request. Each call is logged at info level with the op name (the helper's
//! audit trail).
//!
//! Modules:
//! * `validate`: checks that need no host state (names, addresses, prefixes);
//! * `journal`: the record of every host object banger created, so it
//!   touches nothing else and can remove everything;
//! * `net`: bridge, taps, DNS sockets, resolver, status, teardown;
//! * `firewall`: the nftables rule set (documented there);
//! * `image`: the default image built as root for the owner (`BuildDebianImage`).
//!
//! The host is reached only through the injected [`HostProbes`] and
//! [`HostNet`], so all of this is unit-tested against recording fakes; the
//! real-kernel tests (`tests/netns.rs`) run it in throwaway network
//! namespaces.

mod error;
mod firewall;
pub mod image;
mod journal;

pub use journal::jailed_vmms;
mod net;
mod validate;
mod vm;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use banger_host::net::HostNet;
use banger_host::probe::HostProbes;
use banger_proto::net::BridgeSpec;
use banger_proto::privops::{
    Answer, DeleteTap, GrowWorkDisk, ImageOp, KillVm, NetOp, OpenDnsSockets, PauseVm, PrivCall,
    PrivOp, PrivOutcome, ProbeDevice, ProbeOp, ResumeVm, StopVm, VmOp,
};
use banger_vmm::driver::Vcpus;

/// Longest rendering of an operation's arguments the helper logs.
const LOGGED_ARGS_MAX: usize = 2048;

/// The `-sandbox` value the QEMU driver launches with (the doctor checks
/// the installed QEMU accepts it).
pub use banger_vmm::qemu::SANDBOX as QEMU_SANDBOX;
pub use error::ExecError;
pub use journal::{JOURNAL_VERSION, JournalError};
pub use net::VM_DOMAIN_ROUTE;
/// The helper's check of every `PrivOp`, for the fuzz targets only
/// (`fuzz/`, built with `--cfg fuzzing`).
#[cfg(fuzzing)]
pub use validate::op as validate_op;
pub use vm::cgroup::{
    CgroupError as VmCgroupError, Holder as VmCgroupHolder, VmCgroups,
    dev_name as vm_cgroup_dev_name,
};
pub use vm::{KERNEL_CMDLINE, VmHostConfig, VmOpError, clone_file};

/// What an operation produced: its outcome, plus the file descriptors that
/// travel beside it. `fds` is non-empty only for `OpenDnsSockets` (`[udp,
/// tcp]`) and `BuildDebianImage` (`[rootfs, kernel, initrd]`), which the
/// outcome's `FdIndex` values point into.
#[derive(Debug)]
pub struct Executed {
    pub outcome: PrivOutcome,
    pub fds: Vec<OwnedFd>,
}

/// An answer with the descriptors it names ([`Executed`] before it is put
/// on the wire).
#[derive(Debug)]
pub struct WithFds<T> {
    pub answer: T,
    pub fds: Vec<OwnedFd>,
}

/// Perform `request` with `f`: the outcome is built from the request's own
/// answer type ([`PrivCall::Response`]), so what the executor answers
/// always matches the operation asked.
fn run<R: PrivCall, E>(
    request: R,
    f: impl FnOnce(R) -> Result<R::Response, E>,
) -> Result<Executed, E> {
    Ok(Executed {
        outcome: f(request)?.into_outcome(),
        fds: Vec::new(),
    })
}

/// [`run`] for an operation whose answer names descriptors.
fn run_with_fds<R: PrivCall, E>(
    request: R,
    f: impl FnOnce(R) -> Result<WithFds<R::Response>, E>,
) -> Result<Executed, E> {
    let WithFds { answer, fds } = f(request)?;
    Ok(Executed {
        outcome: answer.into_outcome(),
        fds,
    })
}

/// Performs privileged operations against an injected host.
#[derive(Clone)]
pub struct Executor {
    host: Arc<dyn HostProbes>,
    net: Arc<dyn HostNet>,
    journal: Arc<journal::JournalFile>,
    vm: Option<Arc<vm::VmHost>>,
    images: Option<Arc<image::ImageBuilder>>,
    /// The one bridge this executor sets up and serves (root's choice: the
    /// install metadata's `[network]` in the helper, the daemon's config in
    /// dev mode); `None`: any bridge that passes validation (tests).
    bridge: Option<BridgeSpec>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("journal", &self.journal.path())
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// `journal_path` is where the executor records the host objects it
    /// creates (created 0600, its directory 0700, on first change). Clones
    /// share one journal lock; give different executors different paths.
    pub fn new(host: Arc<dyn HostProbes>, net: Arc<dyn HostNet>, journal_path: PathBuf) -> Self {
        Executor {
            host,
            net,
            journal: Arc::new(journal::JournalFile::new(journal_path)),
            vm: None,
            images: None,
            bridge: None,
        }
    }

    /// Set up and serve `bridge` only: `EnsureBridge` refuses any other
    /// name, address or prefix, and the tap, firewall, DNS-socket and
    /// resolver operations any other bridge (one journaled under an earlier
    /// choice included). Fails when `bridge` itself is not a valid bridge.
    pub fn with_bridge(mut self, bridge: BridgeSpec) -> Result<Self, ExecError> {
        validate::bridge_spec(&bridge)?;
        self.bridge = Some(bridge);
        Ok(self)
    }

    /// Enable the VM operations for VMs under `cfg.state_dir`. Without this
    /// they fail with `unavailable`. Disk grants a crash left in the
    /// journal are undone here, before any operation (`vm::jailed`), and
    /// every idle journaled tap goes back to root (`vm::taps`: a VMM gone
    /// while the executor was not running, an older helper's taps).
    pub fn with_vms(mut self, cfg: VmHostConfig) -> Self {
        let vm = vm::VmHost::new(
            cfg,
            Arc::clone(&self.journal),
            Arc::clone(&self.host),
            Arc::clone(&self.net),
        );
        vm.restore_crashed_grants();
        vm.give_back_idle_taps();
        self.vm = Some(Arc::new(vm));
        self
    }

    /// Make each jailed VMM's cgroup (`vm-<id>`) in `cgroups`, after a
    /// sweep of the ones no journaled VMM runs in (`vm::cgroup`). Called
    /// after [`Executor::with_vms`]; without it VMMs get no cgroup.
    pub fn with_vm_cgroups(mut self, cgroups: vm::cgroup::VmCgroups) -> Self {
        match self.vm.as_mut().and_then(Arc::get_mut) {
            Some(vm) => vm.set_cgroups(cgroups),
            None => tracing::warn!(
                "VM cgroups given before the VM host, or after it was shared: unused"
            ),
        }
        self
    }

    /// Enable `BuildDebianImage` (the helper does; the dev-mode daemon
    /// builds in its own process, with progress). Without this it fails with
    /// `unavailable`.
    pub fn with_image_builds(mut self, cfg: image::ImageBuildConfig) -> Self {
        self.images = Some(Arc::new(image::ImageBuilder::new(cfg)));
        self
    }

    fn build_image(
        &self,
        suite: &str,
    ) -> Result<WithFds<banger_proto::privops::BuiltImageFiles>, ExecError> {
        let builder = self
            .images
            .as_deref()
            .ok_or(image::ImageBuildError::NotConfigured)?;
        Ok(builder.build(suite)?)
    }

    fn vm_host(&self) -> Result<&vm::VmHost, ExecError> {
        self.vm
            .as_deref()
            .ok_or(ExecError::Vm(VmOpError::NotConfigured))
    }

    fn vm_op(&self, op: VmOp) -> Result<Executed, ExecError> {
        let vm = self.vm_host()?;
        // Every operation on a VM's disks or VMM start holds the VM's
        // operation lock: none overlaps another of the same VM. Stop,
        // kill, status, pause and resume go through the VMM table's own
        // lock.
        let _busy = match &op {
            VmOp::CreateVmDisks(_)
            | VmOp::WriteGuestFiles(_)
            | VmOp::DeleteVmDisks(_)
            | VmOp::GrowWorkDisk(_)
            | VmOp::LaunchVm(_) => Some(vm.begin_op(op.vm_id(), op.name())?),
            VmOp::StopVm(_)
            | VmOp::KillVm(_)
            | VmOp::VmmStatus(_)
            | VmOp::WaitVmReady(_)
            | VmOp::PauseVm(_)
            | VmOp::ResumeVm(_)
            | VmOp::SnapshotVm(_) => None,
        };
        match op {
            VmOp::CreateVmDisks(spec) => run(spec, |spec| Ok(vm.create_disks(&spec)?)),
            VmOp::WriteGuestFiles(spec) => run(spec, |spec| {
                vm.ensure_stopped(&spec.vm_id)?;
                Ok(vm.write_guest_files(&spec)?)
            }),
            VmOp::DeleteVmDisks(r) => run(r, |r| {
                vm.ensure_stopped(&r.vm_id)?;
                Ok(vm.delete_disks(&r.vm_id)?)
            }),
            VmOp::GrowWorkDisk(r) => run(r, |GrowWorkDisk { vm_id, bytes }| {
                vm.ensure_stopped(&vm_id)?;
                Ok(vm.grow_work_disk(&vm_id, bytes)?)
            }),
            VmOp::LaunchVm(spec) => run(spec, |spec| {
                let tap = self
                    .journal
                    .open()
                    .map_err(ExecError::Journal)?
                    .state
                    .tap(&spec.tap)
                    .cloned();
                // A guest goes on the installed bridge only, never on a tap
                // left on a bridge of an earlier choice.
                if let Some(tap) = &tap {
                    self.installed_bridge_named(&tap.bridge)?;
                    self.require_firewall(&tap.bridge)?;
                }
                Ok(vm.launch(&spec, tap.is_some())?)
            }),
            VmOp::StopVm(r) => run(
                r,
                |StopVm {
                     vm_id,
                     timeout_secs,
                 }| {
                    let timeout = std::time::Duration::from_secs(timeout_secs.into());
                    Ok(vm.stop(&vm_id, timeout, false)?)
                },
            ),
            VmOp::KillVm(r) => run(r, |KillVm { vm_id }| {
                Ok(vm.stop(&vm_id, std::time::Duration::ZERO, true)?)
            }),
            VmOp::VmmStatus(r) => run(r, |r| Ok(vm.status(&r.vm_id)?)),
            VmOp::WaitVmReady(r) => run(r, |r| Ok(vm.wait_ready(&r.vm_id, r.timeout_ms)?)),
            VmOp::PauseVm(r) => run(r, |PauseVm { vm_id }| {
                Ok(vm.set_vcpus(&vm_id, Vcpus::Paused)?)
            }),
            VmOp::ResumeVm(r) => run(r, |ResumeVm { vm_id }| {
                Ok(vm.set_vcpus(&vm_id, Vcpus::Running)?)
            }),
            VmOp::SnapshotVm(spec) => run(spec, |spec| Ok(vm.snapshot_vm(&spec)?)),
        }
    }

    fn probe(&self, op: ProbeOp) -> Result<Executed, ExecError> {
        match op {
            ProbeOp::ProbeKvm(r) => run(r, |_| Ok(self.host.probe_kvm())),
            ProbeOp::ProbeDevice(r) => {
                run(r, |ProbeDevice { device }| Ok(self.probe_device(device)))
            }
            ProbeOp::ProbeNftables(r) => run(r, |_| Ok(self.host.probe_nft())),
            ProbeOp::ProbeJailScope(r) => run(r, |_| Ok(self.host.probe_jail_scope())),
            ProbeOp::ProbeVmms(r) => run(r, |_| Ok(self.vmm_support())),
        }
    }

    fn net_op(&self, op: NetOp) -> Result<Executed, ExecError> {
        match op {
            NetOp::EnsureBridge(spec) => run(spec, |spec| self.ensure_bridge(spec)),
            NetOp::EnsureTap(spec) => run(spec, |spec| self.ensure_tap(spec)),
            NetOp::DeleteTap(r) => run(r, |DeleteTap { name }| self.delete_tap(name)),
            NetOp::SyncFirewall(spec) => run(spec, |spec| self.sync_firewall(spec)),
            NetOp::OpenDnsSockets(r) => run_with_fds(r, |OpenDnsSockets { address }| {
                self.open_dns_sockets(address)
            }),
            NetOp::ApplyResolver(spec) => run(spec, |spec| self.apply_resolver(spec)),
            NetOp::NetStatus(r) => run(r, |_| self.net_status()),
            NetOp::Teardown(r) => run(r, |_| self.teardown()),
        }
    }

    /// What this executor can run: without VM operations, nothing.
    fn vmm_support(&self) -> banger_proto::privops::VmmSupport {
        match self.vm.as_deref() {
            Some(vm) => {
                let (kvm, kvm_problem) = vm.kvm();
                banger_proto::privops::VmmSupport {
                    kvm,
                    kvm_problem,
                    vmms: vm.vmm_availability(),
                }
            }
            None => banger_proto::privops::VmmSupport {
                kvm: self.host.probe_kvm().verdict(),
                kvm_problem: None,
                vmms: banger_proto::vmops::VmmKind::ALL
                    .iter()
                    .copied()
                    .map(|vmm| banger_proto::privops::VmmAvailability {
                        vmm,
                        binary: None,
                        problem: Some(VmOpError::NotConfigured.to_string()),
                    })
                    .collect(),
            },
        }
    }

    /// A device probe as this executor can use the device: for
    /// `/dev/mapper/control` the node opening is not enough, `DM_VERSION`
    /// must succeed (it needs `CAP_SYS_ADMIN`), so the doctor and `host
    /// status` report the root-disk backend `CreateVmDisks` will use.
    fn probe_device(
        &self,
        device: banger_proto::privops::HostDevice,
    ) -> banger_proto::privops::DeviceProbe {
        let probe = self.host.probe_device(device);
        let tools: Arc<dyn vm::snapshot::DiskTools> = match &self.vm {
            Some(vm) => Arc::clone(&vm.tools),
            None => Arc::new(vm::snapshot::HostTools),
        };
        vm::snapshot::mapper_probe(probe, &*tools)
    }

    /// Validate and perform one operation. Blocking.
    pub fn execute(&self, op: PrivOp) -> Result<Executed, ExecError> {
        validate::op(&op)?;
        let name = op.name();
        // The arguments as a bounded line: the journal is shared with the
        // rest of the host, and the owner chooses how big an op is (file
        // contents are never shown; see `GuestFile`'s `Debug`).
        let mut args = format!("{op:?}");
        if let Some((cut, _)) = args.char_indices().nth(LOGGED_ARGS_MAX) {
            args.truncate(cut);
            args.push('…');
        }
        tracing::info!(op = name, %args, "privileged op");
        let result = match op {
            PrivOp::Probe(op) => self.probe(op),
            PrivOp::Net(op) => self.net_op(op),
            PrivOp::Vm(op) => self.vm_op(op),
            PrivOp::Image(ImageOp::BuildDebianImage(r)) => {
                run_with_fds(r, |r| self.build_image(&r.suite))
            }
        };
        if let Err(e) = &result {
            tracing::warn!(op = name, code = %e.code(), error = %e.render(), "privileged op failed");
        }
        result
    }
}

#[cfg(test)]
mod tests;
