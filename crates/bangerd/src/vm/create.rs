//! `vm create`: preflight (before anything is allocated), the narrow
//! reservation under `create_mu`, then the slow part as an operation.

use std::sync::Arc;

use banger_proto::privops::ProbeVmms;
use banger_proto::vm::{CreateVm, VmCreated, VmmKind};
use banger_proto::vmops::{GuestFilesSpec, GuestIdentity, RestoreSpec, VmDisksSpec};
use banger_proto::{ErrorCode, RpcError, limits};

use super::guest::{self, GuestNet};
use super::ops::{OpHandle, OpRegistry};
use super::{VmService, internal, progress, store_err};
use crate::network::leases;
use crate::server::ProgressSink;
use crate::store::{ImageRow, NewLease, NewVm, VmRow};

/// Image used when `vm create` names none.
pub const DEFAULT_IMAGE: &str = "debian";

fn bad(msg: impl Into<String>) -> RpcError {
    RpcError::new(ErrorCode::BadRequest, msg)
}

/// What this host can give a VM, for preflight.
#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    /// CPUs this process may run on.
    pub cpus: u32,
    /// Total memory (MiB), when known.
    pub memory_mib: Option<u64>,
}

impl HostLimits {
    /// This host's: `sched_getaffinity` CPUs, and `sysinfo(2)`'s total
    /// memory (in system mode the unit's `ProcSubset=pid` hides
    /// `/proc/meminfo`; `sysinfo` is in its `@system-service` filter).
    pub fn here() -> HostLimits {
        let info = rustix::system::sysinfo();
        let bytes = info
            .totalram
            .saturating_mul(u64::from(info.mem_unit.max(1)));
        HostLimits {
            cpus: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            memory_mib: (bytes > 0).then_some(bytes >> 20),
        }
    }
}

/// vCPUs, memory and disk within what `vmm`, banger
/// (`banger_proto::limits`) and this host can give: refused here, before
/// anything is allocated, never by the VMM at launch.
pub fn check_resources(
    host: HostLimits,
    vmm: VmmKind,
    vcpus: u32,
    memory_mib: u32,
    disk_bytes: u64,
) -> Result<(), RpcError> {
    limits::check_vcpus(vmm, vcpus).map_err(|e| match vmm {
        VmmKind::Firecracker if vcpus > u32::from(vmm.max_vcpus()) => bad(format!(
            "{e} (QEMU takes up to {}: --vmm qemu)",
            VmmKind::Qemu.max_vcpus()
        )),
        _ => bad(e),
    })?;
    if vcpus > host.cpus {
        return Err(bad(format!(
            "invalid vCPU count {vcpus}: this host has {} CPUs",
            host.cpus
        )));
    }
    limits::check_memory_mib(memory_mib).map_err(bad)?;
    if let Some(total) = host.memory_mib
        && u64::from(memory_mib) > total
    {
        return Err(bad(format!(
            "invalid memory {memory_mib} MiB: this host has {total} MiB"
        )));
    }
    limits::check_disk_bytes(disk_bytes).map_err(bad)
}

/// What a create operation does before its follow-up step.
pub(super) enum CreateStep {
    /// Disks, guest files, then a boot (`start`) or a restore (`from`).
    Build { start: bool, from: Option<String> },
    /// Resume and personalise a clone taken from the warm pool (renamed
    /// from `old`).
    TakeFromPool { old: String },
}

pub struct Resolved {
    pub image: ImageRow,
    pub vmm: VmmKind,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub nat: bool,
    /// `--from`: the snapshot restored instead of a boot.
    pub from: Option<crate::store::SnapshotRow>,
}

impl VmService {
    /// Check everything that can be checked before allocating anything.
    /// The checks of a create that need neither the image nor the host:
    /// the name is a valid, free DNS label, and `--workspace` comes with a
    /// start. The create flow runs them before it pulls anything.
    pub fn check_new_vm(&self, req: &CreateVm) -> Result<(), RpcError> {
        if req.from.is_some() {
            if !req.start {
                return Err(bad("--from restores a running VM; drop --no-start"));
            }
            if req.image.is_some() {
                return Err(bad("--from restores the snapshot's image; drop --image"));
            }
        }
        if req.workspace.is_some() && !req.start {
            return Err(bad(
                "--workspace needs the VM to run; drop --no-start, or prepare later with `banger workspace prepare`",
            ));
        }
        crate::dns::validate_label(&req.name).map_err(|e| {
            RpcError::from_error(ErrorCode::BadRequest, &e).context("invalid VM name")
        })?;
        if req.name != req.name.to_ascii_lowercase() {
            return Err(bad(format!(
                "invalid VM name {:?}: use lowercase (it is a DNS label under .vm)",
                req.name
            )));
        }
        if self
            .store
            .get_vm_by_name(&req.name)
            .map_err(store_err)?
            .is_some()
        {
            return Err(RpcError::new(
                ErrorCode::AlreadyExists,
                format!("a VM named {:?} already exists", req.name),
            ));
        }
        Ok(())
    }

    async fn preflight(
        &self,
        req: &CreateVm,
        progress: &ProgressSink,
    ) -> Result<Resolved, RpcError> {
        self.check_new_vm(req)?;
        if let Some(from) = &req.from {
            return self.preflight_from(req, from, progress).await;
        }
        let image_name = req.image.as_deref().unwrap_or(DEFAULT_IMAGE);
        let image = self
            .store
            .get_image_by_name(image_name)
            .map_err(store_err)?
            .ok_or_else(|| {
                RpcError::new(
                    ErrorCode::NotFound,
                    format!(
                        "image {image_name:?} not found (see `banger image ls`; `banger image build debian` makes the default image)"
                    ),
                )
            })?;
        self.store
            .get_kernel(&image.kernel_id)
            .map_err(store_err)?
            .ok_or_else(|| {
                RpcError::new(
                    ErrorCode::NotFound,
                    format!(
                        "kernel {} of image {image_name:?} is missing",
                        image.kernel_id
                    ),
                )
            })?;
        let vcpus = req.vcpus.unwrap_or(self.config.vm.default_vcpus);
        let memory_mib = req.memory_mib.unwrap_or(self.config.vm.default_memory_mib);
        let disk_bytes = req.disk_bytes.unwrap_or(self.config.vm.default_disk_bytes);
        // Sizes outside banger's own limits are refused as such before the
        // executor is asked what it can run (QEMU's are the widest); then
        // the chosen VMM's and this host's.
        limits::check_vcpus(VmmKind::Qemu, vcpus)
            .and_then(|_| limits::check_memory_mib(memory_mib))
            .and_then(|()| limits::check_disk_bytes(disk_bytes))
            .map_err(bad)?;
        let vmm = self.choose_vmm(req.vmm, progress).await?;
        check_resources(HostLimits::here(), vmm, vcpus, memory_mib, disk_bytes)?;
        Ok(Resolved {
            image,
            vmm,
            vcpus,
            memory_mib,
            disk_bytes,
            nat: req.nat.unwrap_or(self.config.network.nat_default),
            from: None,
        })
    }

    /// [`Self::preflight`] of `vm create --from SNAP`: the snapshot's
    /// image, VMM and sizes (an explicit other one is refused: a restore
    /// needs the saved machine), checked against this host as a create's.
    async fn preflight_from(
        &self,
        req: &CreateVm,
        from: &str,
        progress: &ProgressSink,
    ) -> Result<Resolved, RpcError> {
        let snap = self.snapshot_by_name(from)?;
        let differs = |what: &str, asked: String, saved: String| {
            bad(format!(
                "--{what} {asked}: snapshot {from} was saved with {saved}, and a restore keeps it; drop --{what}"
            ))
        };
        if let Some(v) = req.vcpus.filter(|v| *v != snap.vcpus) {
            return Err(differs("vcpus", v.to_string(), snap.vcpus.to_string()));
        }
        if let Some(m) = req.memory_mib.filter(|m| *m != snap.memory_mib) {
            return Err(differs(
                "memory",
                format!("{m} MiB"),
                format!("{} MiB", snap.memory_mib),
            ));
        }
        if let Some(d) = req.disk_bytes.filter(|d| *d != snap.disk_bytes) {
            return Err(differs(
                "disk",
                format!("{d} bytes"),
                format!("{} bytes", snap.disk_bytes),
            ));
        }
        if let Some(v) = req.vmm.filter(|v| *v != snap.vmm) {
            return Err(differs("vmm", v.to_string(), snap.vmm.to_string()));
        }
        let image = self
            .store
            .get_image(&snap.image_id)
            .map_err(store_err)?
            .ok_or_else(|| {
                internal(format!(
                    "image {} of snapshot {from} is gone",
                    snap.image_id
                ))
            })?;
        let vmm = self.choose_vmm(Some(snap.vmm), progress).await?;
        check_resources(
            HostLimits::here(),
            vmm,
            snap.vcpus,
            snap.memory_mib,
            snap.disk_bytes,
        )?;
        Ok(Resolved {
            image,
            vmm,
            vcpus: snap.vcpus,
            memory_mib: snap.memory_mib,
            disk_bytes: snap.disk_bytes,
            nat: req.nat.unwrap_or(self.config.network.nat_default),
            from: Some(snap),
        })
    }

    /// The VMM for a new VM, from what the executor says it can run
    /// (`ProbeVmms`: its binaries and its own KVM verdict): `--vmm` if
    /// given (refused when it cannot run here), else the configured
    /// default, falling back to QEMU when the default is Firecracker and
    /// Firecracker cannot run (the progress stream says so).
    pub(super) async fn choose_vmm(
        &self,
        asked: Option<VmmKind>,
        progress: &ProgressSink,
    ) -> Result<VmmKind, RpcError> {
        let support = self.privileged(ProbeVmms).await?;
        let forced = self.config.diagnostics.assume_kvm_usable;
        if forced {
            progress
                .emit(progress_msg(
                    "diagnostics.assume_kvm_usable is set: the executor's KVM verdict is ignored"
                        .to_string(),
                ))
                .await;
        }
        let problem = |vmm: VmmKind| support.problem(vmm, forced);
        match asked {
            Some(vmm) => match problem(vmm) {
                Some(p) => Err(RpcError::new(
                    ErrorCode::Unavailable,
                    match vmm {
                        VmmKind::Firecracker => format!("--vmm firecracker: {p}; use --vmm qemu"),
                        VmmKind::Qemu => format!("--vmm qemu: {p}"),
                    },
                )),
                None => Ok(vmm),
            },
            None => {
                let default = self.config.vm.default_vmm;
                let Some(p) = problem(default) else {
                    return Ok(default);
                };
                match (default, problem(VmmKind::Qemu)) {
                    (VmmKind::Firecracker, None) => {
                        progress
                            .emit(progress_msg(format!("using QEMU: {p}")))
                            .await;
                        Ok(VmmKind::Qemu)
                    }
                    (VmmKind::Firecracker, Some(q)) => Err(RpcError::new(
                        ErrorCode::Unavailable,
                        format!("no VMM can run here: Firecracker: {p}; QEMU: {q}"),
                    )),
                    (VmmKind::Qemu, _) => Err(RpcError::new(
                        ErrorCode::Unavailable,
                        format!("QEMU (the configured default) cannot run here: {p}"),
                    )),
                }
            }
        }
    }

    /// Create a VM from `req` (its image already resolved to a name by
    /// the create flow), then run `after` once it is built and booted, as
    /// a step of the create operation: a failure there removes the VM.
    pub async fn create(
        self: &Arc<Self>,
        req: CreateVm,
        sink: ProgressSink,
        after: Option<crate::flows::AfterBuild>,
    ) -> Result<VmCreated, RpcError> {
        let r = self.preflight(&req, &sink).await?;
        let mut after = after;
        if req.start
            && let Some(created) = self
                .take_from_pool(&req.name, &r, req.wait, &sink, &mut after)
                .await?
        {
            return Ok(created);
        }
        let vm = self
            .reserve(
                &NewVm {
                    name: req.name.clone(),
                    image_id: r.image.id.clone(),
                    vmm: r.vmm,
                    vcpus: r.vcpus,
                    memory_mib: r.memory_mib,
                    disk_bytes: r.disk_bytes,
                    nat: r.nat,
                },
                false,
            )
            .await?;
        crate::crashpoint::hit("create.reserved");
        let op = self
            .ops
            .begin(banger_proto::vm::OpKind::VmCreate, Some(&vm.id))?;
        let op_id = op.id.clone();
        let rx = self.ops.subscribe(&op_id);
        self.spawn_create(
            vm.id.clone(),
            op,
            CreateStep::Build {
                start: req.start,
                from: r.from.map(|s| s.id),
            },
            after,
        );
        if req.wait
            && let Some(rx) = rx
        {
            OpRegistry::follow(rx, &sink).await?;
        }
        let info = match self.store.get_vm(&vm.id).map_err(store_err)? {
            Some(row) => self.info(&row),
            None => self.info(&vm),
        };
        Ok(VmCreated {
            vm: info,
            operation: op_id,
            from_pool: false,
        })
    }

    /// The reservation of a new VM (a pooled clone of the warm pool when
    /// `pooled`): under `create_mu`, an address, the row and its lease in
    /// one transaction (the name re-checked by the store's uniqueness),
    /// then the capabilities' `reserved` hooks — nothing slow.
    pub(super) async fn reserve(&self, vm: &NewVm, pooled: bool) -> Result<VmRow, RpcError> {
        let _g = self.create_mu.lock().await;
        let leased = self.store.leased_ips().map_err(store_err)?;
        let ip = leases::next_free(self.network.subnet(), &leased).ok_or_else(|| {
            RpcError::new(
                ErrorCode::Unavailable,
                format!("no free address left in {}", self.network.subnet()),
            )
        })?;
        let lease = NewLease {
            ip,
            mac: leases::mac_for(ip),
        };
        let row = if pooled {
            self.store.create_pool_vm(vm, &lease)
        } else {
            self.store
                .create_vm_with_lease(vm, &lease)
                .map(|(row, _)| row)
        }
        .map_err(store_err)?;
        self.caps.reserved(&row, ip);
        Ok(row)
    }

    /// Run create operation `op` of VM `vm_id` to its end in a task of its
    /// own: `step`, then `after` (once `step` released the VM's lock, as a
    /// request would); a failure of either removes the VM.
    pub(super) fn spawn_create(
        self: &Arc<Self>,
        vm_id: String,
        op: OpHandle,
        step: CreateStep,
        after: Option<crate::flows::AfterBuild>,
    ) {
        let svc = Arc::clone(self);
        tokio::spawn(async move {
            let op = Arc::new(op);
            let mut result = match step {
                CreateStep::Build { start, from } => {
                    svc.build(&vm_id, start, from.as_deref(), &op).await
                }
                CreateStep::TakeFromPool { old } => svc.adopt_pooled(&vm_id, &old, &op).await,
            };
            if result.is_ok()
                && let Some(after) = after
            {
                let emit_op = Arc::clone(&op);
                let emit: crate::progress::Emit = Arc::new(move |p| emit_op.progress(p));
                result = after(vm_id.clone(), emit).await;
            }
            if let Err(e) = &result {
                tracing::warn!(vm = %vm_id, error = %e.render(), "vm create failed; rolling back");
                svc.destroy(&vm_id).await;
            }
            op.finish(result);
        });
    }

    /// The slow part of create: disks, guest files, then (optionally) boot.
    /// From a snapshot (`from`, its id): the disks are the snapshot's
    /// copies, and the guest files go to the restored guest's agent, not
    /// into its disk (its file system is mounted in the saved memory).
    pub(super) async fn build(
        self: &Arc<Self>,
        vm_id: &str,
        start: bool,
        from: Option<&str>,
        op: &OpHandle,
    ) -> Result<(), RpcError> {
        let lock = self.lock_for(vm_id);
        let _g = lock.lock().await;
        let vm = self.row(vm_id)?;
        let lease = self
            .store
            .get_lease(vm_id)
            .map_err(store_err)?
            .ok_or_else(|| internal(format!("VM {} lost its lease", vm.name)))?;
        op.progress(progress(
            "disks",
            "creating the root and work disks",
            1,
            Some(4),
        ));
        let dir = self.vm_dir(vm_id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| internal(format!("creating {}: {e}", dir.display())))?;
        let plan = self.caps.disks(&vm);
        let work_disk_bytes = plan
            .work_disk_bytes
            .ok_or_else(|| internal(format!("no capability sized VM {}'s work disk", vm.name)))?;
        let disks = self
            .privileged(VmDisksSpec {
                vm_id: vm_id.to_string(),
                image_id: vm.image_id.clone(),
                work_disk_bytes,
                from_snapshot: from.map(str::to_string),
            })
            .await?;
        tracing::info!(vm = %vm.name, backend = disks.backend.as_str(), "disks ready");
        crate::crashpoint::hit("create.disks");
        op.progress(progress(
            "guest",
            "writing the guest configuration",
            2,
            Some(4),
        ));
        let layout = self.layout.clone();
        let owner_keys =
            tokio::task::spawn_blocking(move || crate::identity::ensure_identity(&layout))
                .await
                .map_err(|e| internal(format!("key task: {e}")))??;
        let name = vm.name.clone();
        let host_key = tokio::task::spawn_blocking(move || guest::host_key(&name))
            .await
            .map_err(|e| internal(format!("key task: {e}")))??;
        let net = GuestNet {
            name: vm.name.clone(),
            ip: lease.ip,
            prefix: self.network.subnet().prefix(),
            mac: lease.mac.clone(),
            gateway: self.network.bridge_ip(),
        };
        let files = guest::files(&net, &owner_keys, &host_key);
        let restore = match from {
            Some(snapshot_id) => Some(RestoreSpec {
                snapshot_id: snapshot_id.to_string(),
                identity: GuestIdentity {
                    files,
                    ip: net.ip,
                    prefix: net.prefix,
                    gateway: net.gateway,
                    hostname: vm.name.clone(),
                },
            }),
            None => {
                self.privileged(GuestFilesSpec {
                    vm_id: vm_id.to_string(),
                    files,
                })
                .await?;
                crate::crashpoint::hit("create.guest_files");
                None
            }
        };
        guest::set_known_host(
            &self.layout.known_hosts,
            &format!("{}.vm", vm.name),
            Some(&host_key.1),
        )?;
        if start {
            self.boot_with(&vm, Some(op), restore).await?;
        }
        Ok(())
    }

    pub(super) fn row(&self, vm_id: &str) -> Result<VmRow, RpcError> {
        self.store
            .get_vm(vm_id)
            .map_err(store_err)?
            .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("VM {vm_id} is gone")))
    }
}

fn progress_msg(message: String) -> banger_proto::rpc::Progress {
    progress("vmm", message, 0, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: HostLimits = HostLimits {
        cpus: 64,
        memory_mib: Some(4096),
    };

    fn refused(r: Result<(), RpcError>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
        e.messages.join(": ")
    }

    /// Issue #14: preflight knew banger's 64 and the host's CPUs but not
    /// Firecracker's 32, so a 48-vCPU Firecracker VM got an address, DNS,
    /// disks, keys, guest files and a tap before its launch failed.
    #[test]
    fn preflight_holds_each_vmm_to_its_own_vcpu_limit() {
        let e = refused(check_resources(
            HOST,
            VmmKind::Firecracker,
            48,
            1024,
            1 << 30,
        ));
        assert!(e.contains("a firecracker VM has 1..=32"), "{e}");
        assert!(e.contains("--vmm qemu"), "{e}");
        assert!(check_resources(HOST, VmmKind::Qemu, 48, 1024, 1 << 30).is_ok());
        assert!(check_resources(HOST, VmmKind::Firecracker, 32, 1024, 1 << 30).is_ok());
        let e = refused(check_resources(HOST, VmmKind::Qemu, 65, 1024, 1 << 30));
        assert!(e.contains("a qemu VM has 1..=64"), "{e}");
        let e = refused(check_resources(HOST, VmmKind::Qemu, 0, 1024, 1 << 30));
        assert!(e.contains("invalid vCPU count 0"), "{e}");
        // u32 beyond u8: refused, never truncated (256 as u8 was 0).
        let e = refused(check_resources(HOST, VmmKind::Qemu, 256, 1024, 1 << 30));
        assert!(e.contains("256"), "{e}");
    }

    #[test]
    fn preflight_holds_a_vm_to_the_hosts_cpus_and_memory() {
        let small = HostLimits {
            cpus: 2,
            memory_mib: Some(2048),
        };
        let e = refused(check_resources(small, VmmKind::Qemu, 4, 1024, 1 << 30));
        assert!(e.contains("this host has 2 CPUs"), "{e}");
        let e = refused(check_resources(small, VmmKind::Qemu, 2, 4096, 1 << 30));
        assert!(e.contains("this host has 2048 MiB"), "{e}");
        let e = refused(check_resources(small, VmmKind::Qemu, 2, 64, 1 << 30));
        assert!(e.contains("invalid memory 64 MiB"), "{e}");
        let e = refused(check_resources(small, VmmKind::Qemu, 2, 1024, 1 << 20));
        assert!(e.contains("invalid disk size"), "{e}");
        // Memory unknown: banger's own bound still holds.
        let unknown = HostLimits {
            cpus: 2,
            memory_mib: None,
        };
        assert!(check_resources(unknown, VmmKind::Qemu, 2, 1 << 20, 1 << 30).is_ok());
        assert!(check_resources(unknown, VmmKind::Qemu, 2, (1 << 20) + 1, 1 << 30).is_err());
    }

    /// `sysinfo(2)` answers where `/proc/meminfo` may be hidden (the
    /// system unit's `ProcSubset=pid`): this host's total is known.
    #[test]
    fn this_hosts_limits_are_known() {
        let here = HostLimits::here();
        assert!(here.cpus >= 1);
        let mib = here.memory_mib.expect("sysinfo gives the host's memory");
        assert!(mib >= 128, "{mib} MiB");
    }

    use banger_proto::privops::{KvmVerdict, VmmSupport};

    fn support(kvm: KvmVerdict, qemu: Option<&str>, fc: Option<&str>) -> VmmSupport {
        let entry = |vmm, problem: Option<&str>| banger_proto::privops::VmmAvailability {
            vmm,
            binary: problem.is_none().then(|| format!("/usr/bin/{vmm}")),
            problem: problem.map(str::to_string),
        };
        VmmSupport {
            kvm,
            kvm_problem: (kvm != KvmVerdict::Usable)
                .then(|| "/dev/kvm must be a world read-write device node".to_string()),
            vmms: vec![entry(VmmKind::Qemu, qemu), entry(VmmKind::Firecracker, fc)],
        }
    }

    /// Issue #14 item 4: the VMM is chosen from what the executor says it
    /// can run, with its words.
    #[test]
    fn a_vmm_is_refused_for_the_executors_reasons() {
        let all = support(KvmVerdict::Usable, None, None);
        assert_eq!(all.problem(VmmKind::Firecracker, false), None);
        assert_eq!(all.problem(VmmKind::Qemu, false), None);
        // Without usable KVM: QEMU runs (TCG), Firecracker is refused in
        // the executor's words, unless the owner forces KVM.
        let no_kvm = support(KvmVerdict::NoAccess, None, None);
        assert_eq!(no_kvm.problem(VmmKind::Qemu, false), None);
        let p = no_kvm.problem(VmmKind::Firecracker, false).unwrap();
        assert!(p.contains("world read-write"), "{p}");
        assert_eq!(no_kvm.problem(VmmKind::Firecracker, true), None);
        // A missing binary is refused whatever the KVM.
        let no_bins = support(
            KvmVerdict::Usable,
            Some("no QEMU binary"),
            Some("no FC binary"),
        );
        assert_eq!(
            no_bins.problem(VmmKind::Qemu, true).as_deref(),
            Some("no QEMU binary")
        );
        assert_eq!(
            no_bins.problem(VmmKind::Firecracker, true).as_deref(),
            Some("no FC binary")
        );
    }
}
