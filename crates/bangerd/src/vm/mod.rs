//! VmService: the VM lifecycle state machine (ARCHITECTURE.md, "VM lifecycle"
//! and "Locks"; docs/vm.md).
//!
//! States: `created → starting → running → stopping → stopped`, plus `failed`
//! with a reason. Every transition is a compare-and-set in the store, so an
//! illegal one is refused with the current state in the error.
//!
//! Locks (ARCHITECTURE.md, "Locks"): `vm_locks[id]` is held for a whole
//! lifecycle op on one VM — `vm stop`, `vm rm` and `vm restart` hold it
//! across the guest's SSH poweroff (at most the stop timeout), which blocks
//! only that VM's operations; `create_mu` only for name re-check + IP
//! allocation + the initial row. No other lock of this service's is held
//! across guest SSH (WorkspaceService's per-VM `workspace_locks[id]` is,
//! across a prepare's or export's transfer).
//!
//! Per-VM host objects: disks and the VMM process through the privileged
//! seam; the tap, firewall rule and DNS record through HostNetwork and the
//! [`VmDns`] hook. What the VMM is (pid, kind, start time) is the executor's
//! to say: the service keeps only its last answer, in memory
//! (`handles_cache`).

mod capability;
mod console;
mod create;
mod guest;
mod handles_cache;
pub use handles_cache::VmmCache;
mod info;
/// The guest `ss` output parser, for the fuzz targets only (`fuzz/`, built
/// with `--cfg fuzzing`).
#[cfg(fuzzing)]
pub use info::parse_ss;
mod lifecycle;
mod ops;
mod pool;
mod reconcile;
mod snapshot;
mod stats;

use banger_proto::privops::PrivCall;
use std::net::Ipv4Addr;
use std::sync::Arc;

use banger_proto::rpc::{Progress, Response};
use banger_proto::vm::{OpRequest, VmRequest, VmResponse};
use banger_proto::{ErrorCode, RpcError};

use crate::config::Config;
use crate::layout::Layout;
use crate::network::HostNetwork;
use crate::privileged::{PrivilegedOps, PrivilegedOpsExt};
use crate::server::ProgressSink;
use crate::store::{Store, VmRow};

pub(crate) use info::not_running;
pub use ops::OpRegistry;

pub use crate::locks::VmLocks;
use crate::ssh_masters::SshMasters;

/// How VmService publishes and withdraws `NAME.vm` records; implemented by
/// the daemon over its DNS server (which may not be running).
pub trait VmDns: Send + Sync + std::fmt::Debug {
    fn publish(&self, name: &str, ip: Ipv4Addr);
    fn withdraw(&self, name: &str);
}

/// The guest user banger logs in as, and the line the guest writes to its
/// serial console once sshd is up (the guest contract, docs/guest.md).
pub use banger_proto::guest::{GUEST_USER, READY_MARKER};

#[derive(Debug)]
pub struct VmService {
    store: Arc<Store>,
    layout: Layout,
    config: Config,
    privileged: Arc<dyn PrivilegedOps>,
    network: Arc<HostNetwork>,
    /// Per-VM features with lifecycle hooks (`capability`): the network,
    /// `.vm` DNS, the `known_hosts` line.
    caps: Arc<capability::Capabilities>,
    vm_locks: Arc<VmLocks>,
    create_mu: tokio::sync::Mutex<()>,
    /// VMs the startup reconcile could not settle (the executor did not
    /// answer): the watchdog settles these, and only these, once it can.
    unsettled: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Each VM's VMM as the executor last reported it running
    /// (`handles_cache`): what `vm ls` and `vm show` read.
    vmms: Arc<VmmCache>,
    /// Each running VM's SSH master (`crate::ssh_masters`).
    ssh: Arc<SshMasters>,
    /// Each running VM's recent samples (`stats`).
    stats: stats::StatsHistory,
    ops: OpRegistry,
    /// The warm pool's refill task state (`pool`).
    pool: pool::PoolState,
}

/// What VmService is built from (the daemon wires it once at startup).
#[derive(Debug)]
pub struct VmServiceParts {
    pub store: Arc<Store>,
    pub layout: Layout,
    pub config: Config,
    pub privileged: Arc<dyn PrivilegedOps>,
    pub network: Arc<HostNetwork>,
    pub dns: Arc<dyn VmDns>,
    pub vm_locks: Arc<VmLocks>,
    /// Shared with the workspace service, which keys SSH masters by VMM.
    pub vmms: Arc<VmmCache>,
    pub ssh: Arc<SshMasters>,
}

impl VmService {
    pub fn new(parts: VmServiceParts) -> Arc<VmService> {
        let VmServiceParts {
            store,
            layout,
            config,
            privileged,
            network,
            dns,
            vm_locks,
            vmms,
            ssh,
        } = parts;
        let caps = Arc::new(capability::Capabilities::new(vec![
            Box::new(capability::WorkDisk(Arc::clone(&privileged))),
            Box::new(capability::Network(Arc::clone(&network))),
            Box::new(capability::Dns(dns)),
            Box::new(capability::KnownHost(layout.known_hosts.clone())),
        ]));
        Arc::new(VmService {
            ops: OpRegistry::new(Arc::clone(&store)),
            store,
            layout,
            config,
            privileged,
            network,
            caps,
            vm_locks,
            create_mu: tokio::sync::Mutex::new(()),
            unsettled: std::sync::Mutex::default(),
            vmms,
            ssh,
            stats: stats::StatsHistory::default(),
            pool: pool::PoolState::default(),
        })
    }

    pub async fn handle_vm(
        self: &Arc<Self>,
        req: VmRequest,
        progress: ProgressSink,
    ) -> Result<Response, RpcError> {
        let r = match req {
            // Served by the create flow (`crate::flows`): the image pull
            // and the workspace are other services' work.
            VmRequest::Create(_) => {
                return Err(internal(
                    "vm create reached the VM service without its flow",
                ));
            }
            VmRequest::List => VmResponse::List(self.list()?),
            VmRequest::Show { name } => VmResponse::Vm(self.show(&name)?),
            req @ (VmRequest::Start { .. }
            | VmRequest::Stop { .. }
            | VmRequest::Kill { .. }
            | VmRequest::Restart { .. }
            | VmRequest::Remove { .. }
            | VmRequest::Pause { .. }
            | VmRequest::Resume { .. }
            | VmRequest::Snapshot { .. }
            | VmRequest::Set(_)) => {
                // A lifecycle change runs to its end in a task of its own:
                // a client that goes away drops this future, which must
                // not drop the VM's lock while the executor still works
                // on the VM (the watchdog would take it for abandoned).
                let svc = Arc::clone(self);
                tokio::spawn(async move { svc.change(req, progress).await })
                    .await
                    .map_err(|e| internal(format!("vm task failed: {e}")))??
            }
            VmRequest::Ssh { name } => VmResponse::Ssh(self.ssh_target(&name)?),
            VmRequest::Logs { name, lines } => VmResponse::Logs(self.logs(&name, lines)?),
            VmRequest::Ports { name } => VmResponse::Ports(self.ports(&name).await?),
            VmRequest::Stats { name } => VmResponse::Stats(self.stats(&name).await?),
            VmRequest::Pool => VmResponse::Pool(self.pool_entries()?),
        };
        Ok(Response::Vm(r))
    }

    async fn change(
        self: &Arc<Self>,
        req: VmRequest,
        progress: ProgressSink,
    ) -> Result<VmResponse, RpcError> {
        let r = self.change_inner(req, progress).await;
        // Whatever it did (or failed half-way through), the SSH masters of
        // VMs it stopped, restarted or removed end here (`ssh_masters`):
        // lifecycle changes are the requests that can make a master stale,
        // so reads (`vm ls`, `vm show`, `op …`) never pay for a sweep.
        let svc = Arc::clone(self);
        if let Err(e) = tokio::task::spawn_blocking(move || svc.sweep_ssh_masters()).await {
            tracing::warn!(error = %e, "SSH master sweep failed");
        }
        r
    }

    async fn change_inner(
        self: &Arc<Self>,
        req: VmRequest,
        progress: ProgressSink,
    ) -> Result<VmResponse, RpcError> {
        Ok(match req {
            VmRequest::Start { name } => VmResponse::Vm(self.start_named(&name, progress).await?),
            VmRequest::Stop {
                name, save: true, ..
            } => VmResponse::Vm(self.stop_saved(&name).await?),
            VmRequest::Stop {
                name, timeout_secs, ..
            } => VmResponse::Vm(self.stop_named(&name, timeout_secs, false).await?),
            VmRequest::Kill { name } => VmResponse::Vm(self.stop_named(&name, None, true).await?),
            VmRequest::Restart { name } => {
                self.stop_named(&name, None, false).await?;
                VmResponse::Vm(self.start_named(&name, progress).await?)
            }
            VmRequest::Remove { name } => {
                self.remove_named(&name).await?;
                VmResponse::Removed { name }
            }
            VmRequest::Set(s) => VmResponse::Vm(self.set(s).await?),
            VmRequest::Pause { name } => VmResponse::Vm(self.pause_named(&name).await?),
            VmRequest::Resume { name } => VmResponse::Vm(self.resume_named(&name).await?),
            VmRequest::Snapshot { name, snapshot } => {
                VmResponse::Snapshot(self.snapshot_named(&name, snapshot).await?)
            }
            other => return Err(internal(format!("not a lifecycle change: {other:?}"))),
        })
    }

    /// Run `f` on a blocking thread with a stopped VM's root disk, under
    /// the VM's lock (`image promote`: the image service publishes it). `f`
    /// gets the VM's name, its root disk and its image.
    pub async fn with_stopped_root_disk<T: Send + 'static>(
        self: &Arc<Self>,
        vm_name: &str,
        f: impl FnOnce(String, std::path::PathBuf, crate::store::ImageRow) -> Result<T, RpcError>
        + Send
        + 'static,
    ) -> Result<T, RpcError> {
        let vm = self.vm_by_name(vm_name)?;
        let lock = self.lock_for(&vm.id);
        let _g = lock.lock().await;
        let vm = self.row(&vm.id)?;
        if !matches!(
            vm.state,
            crate::store::VmState::Stopped | crate::store::VmState::Created
        ) {
            return Err(RpcError::new(
                ErrorCode::InvalidState,
                format!(
                    "cannot promote VM {}: it is {}; stop it first",
                    vm.name, vm.state
                ),
            ));
        }
        let image = self
            .store
            .get_image(&vm.image_id)
            .map_err(store_err)?
            .ok_or_else(|| internal(format!("image of VM {} is gone", vm.name)))?;
        use banger_proto::layout::{COW_FILE, ROOT_DISK};
        let disk = self.vm_dir(&vm.id).join(ROOT_DISK);
        if !disk.exists() && self.vm_dir(&vm.id).join(COW_FILE).exists() {
            // A dm-snapshot root disk is an origin + COW pair only the
            // helper can assemble; exporting it is not built yet.
            return Err(RpcError::new(
                ErrorCode::InvalidState,
                format!(
                    "cannot promote VM {}: its root disk is a dm-snapshot (origin + COW), \
                     which promote cannot read yet; only reflink and sparse-copy disks \
                     can be promoted",
                    vm.name
                ),
            ));
        }
        let name = vm.name.clone();
        tokio::task::spawn_blocking(move || f(name, disk, image))
            .await
            .map_err(|e| internal(format!("promote task: {e}")))?
    }

    pub async fn handle_op(
        self: &Arc<Self>,
        req: OpRequest,
        progress: ProgressSink,
    ) -> Result<Response, RpcError> {
        self.ops.handle(req, progress).await.map(Response::Op)
    }

    pub(crate) fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.vm_locks.get(id)
    }

    /// The owner's VM `name` (a pooled clone is nobody's yet: not found).
    fn vm_by_name(&self, name: &str) -> Result<VmRow, RpcError> {
        let vm = self.store.get_vm_by_name(name).map_err(store_err)?;
        let vm = match vm {
            Some(vm) if self.is_pooled(&vm.id)? => None,
            vm => vm,
        };
        vm.ok_or_else(|| {
            RpcError::new(
                ErrorCode::NotFound,
                format!("no VM named {name:?} (see `banger vm ls`)"),
            )
        })
    }

    fn vm_dir(&self, id: &str) -> std::path::PathBuf {
        self.layout.vms_dir.join(id)
    }

    /// A privileged request on a blocking thread, answered typed.
    async fn privileged<R: PrivCall + Send + 'static>(
        &self,
        request: R,
    ) -> Result<R::Response, RpcError>
    where
        R::Response: Send,
    {
        let p = Arc::clone(&self.privileged);
        tokio::task::spawn_blocking(move || p.request(request))
            .await
            .map_err(|e| internal(format!("privileged call task failed: {e}")))?
    }
}

pub(crate) fn internal(msg: impl Into<String>) -> RpcError {
    RpcError::new(ErrorCode::Internal, msg)
}

pub(crate) use crate::store::rpc_err as store_err;

fn progress(stage: &str, message: impl Into<String>, done: u64, total: Option<u64>) -> Progress {
    Progress {
        stage: stage.to_string(),
        message: message.into(),
        done,
        total,
    }
}
