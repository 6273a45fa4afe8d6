//! `Daemon`: the composition root. Shared infrastructure (store, runner,
//! layout, config, privileged-ops adapter) plus the services; RPC dispatch
//! only forwards into them.

use std::path::PathBuf;
use std::sync::Arc;

use banger_host::runner::Runner;
use banger_proto::doctor::DoctorReport;
use banger_proto::net::TeardownReport;
use banger_proto::privops::{
    HostDevice, OpenDnsSockets, ProbeDevice, ProbeJailScope, ProbeKvm, ProbeNftables, ProbeVmms,
    QueryNetStatus,
};
use banger_proto::rpc::{
    DaemonInfo, DaemonMode, HostStatus, PROTOCOL_VERSION, Progress, Request, Response,
};
use banger_proto::{BANGER_VERSION, ErrorCode, RpcError};

use crate::config::Config;
use crate::dns::{DnsConfig, DnsHandle, DnsServer};
use crate::doctor::{self, HostFacts};
use crate::flows::Flows;
use crate::image::ImageService;
use crate::layout::Layout;
use crate::network::HostNetwork;
use crate::privileged::{Channel, PrivilegedOps, PrivilegedOpsExt};
use crate::server::{Handler, ProgressSink};
use crate::store::Store;
use crate::vm::{VmDns, VmLocks, VmService, VmServiceParts};
use crate::workspace::WorkspaceService;
use banger_proto::image::{ImageRequest, ImageResponse};
use banger_proto::vm::{VmRequest, VmResponse};

#[derive(Debug)]
pub struct Daemon {
    mode: DaemonMode,
    layout: Layout,
    config: Config,
    store: Arc<Store>,
    privileged: Arc<dyn PrivilegedOps>,
    runner: Runner,
    network: Arc<HostNetwork>,
    images: Arc<ImageService>,
    vms: Arc<VmService>,
    /// Requests that span services (`vm create`, `image promote`).
    flows: Flows,
    workspaces: Arc<WorkspaceService>,
    /// The `.vm` DNS server, once started.
    dns: Arc<DnsSlot>,
}

/// The DNS server, once started; VmService publishes through it.
#[derive(Debug, Default)]
pub struct DnsSlot(std::sync::Mutex<Option<DnsHandle>>);

impl DnsSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<DnsHandle>> {
        self.0.lock().expect("dns lock poisoned")
    }
}

impl VmDns for DnsSlot {
    fn publish(&self, name: &str, ip: std::net::Ipv4Addr) {
        if let Some(h) = self.lock().as_ref()
            && let Err(e) = h.publish(name, ip)
        {
            tracing::warn!(name, error = %e, "publishing a .vm record");
        }
    }

    fn withdraw(&self, name: &str) {
        if let Some(h) = self.lock().as_ref() {
            h.withdraw(name);
        }
    }
}

impl Daemon {
    pub fn new(
        mode: DaemonMode,
        layout: Layout,
        config: Config,
        store: Arc<Store>,
        privileged: Arc<dyn PrivilegedOps>,
        network: Arc<HostNetwork>,
    ) -> Self {
        let images = Arc::new(
            ImageService::new(Arc::clone(&store), layout.clone(), Runner)
                .with_privileged(Arc::clone(&privileged)),
        );
        let dns = Arc::new(DnsSlot::default());
        let vm_locks = Arc::new(VmLocks::default());
        let vmms = Arc::new(crate::vm::VmmCache::default());
        let ssh = Arc::new(crate::ssh_masters::SshMasters::new(&layout.runtime_dir));
        let workspaces = WorkspaceService::new(
            Arc::clone(&store),
            layout.clone(),
            config.clone(),
            Arc::clone(&vm_locks),
            std::env::var_os("HOME").map(PathBuf::from),
            (Arc::clone(&ssh), Arc::clone(&vmms)),
        );
        let vms = VmService::new(VmServiceParts {
            store: Arc::clone(&store),
            layout: layout.clone(),
            config: config.clone(),
            privileged: Arc::clone(&privileged),
            network: Arc::clone(&network),
            dns: Arc::clone(&dns) as Arc<dyn VmDns>,
            vm_locks,
            vmms,
            ssh,
        });
        let flows = Flows::new(
            Arc::clone(&vms),
            Arc::clone(&images),
            Arc::clone(&workspaces),
        );
        Daemon {
            mode,
            layout,
            config,
            store,
            privileged,
            runner: Runner,
            network,
            images,
            vms,
            flows,
            workspaces,
            dns,
        }
    }

    /// Start the `.vm` DNS server on sockets the executor binds on the
    /// bridge address, port 53 (privileged, so the helper opens them and
    /// passes the descriptors), and publish every leased VM. A failure is
    /// logged and shown by `banger host status`; the daemon keeps serving.
    pub async fn start_dns(&self) {
        match self.try_start_dns().await {
            Ok(addr) => tracing::info!(%addr, "`.vm` DNS serving"),
            Err(e) => tracing::error!(error = %e.render(), "`.vm` DNS not started"),
        }
    }

    async fn try_start_dns(&self) -> Result<std::net::SocketAddr, RpcError> {
        let privileged = Arc::clone(&self.privileged);
        let address = self.network.bridge_ip();
        let (socks, mut fds) = tokio::task::spawn_blocking(move || {
            privileged.request_with_fds(OpenDnsSockets { address })
        })
        .await
        .map_err(|e| {
            RpcError::new(ErrorCode::Internal, format!("dns socket task failed: {e}"))
        })??;
        let udp = std::net::UdpSocket::from(fds.take(socks.udp)?);
        let tcp = std::net::TcpListener::from(fds.take(socks.tcp)?);
        let upstreams = self
            .config
            .network
            .dns_upstreams
            .clone()
            .unwrap_or_else(|| {
                crate::dns::system_upstreams(std::path::Path::new(crate::dns::RESOLV_CONF))
            });
        let config = DnsConfig::new(self.network.subnet(), upstreams);
        let handle = DnsServer::start(udp, tcp, config)
            .map_err(|e| RpcError::from_error(ErrorCode::Internal, &e))?;
        let net = Arc::clone(&self.network);
        let records = tokio::task::spawn_blocking(move || net.dns_records())
            .await
            .map_err(|e| {
                RpcError::new(ErrorCode::Internal, format!("dns records task failed: {e}"))
            })?
            .map_err(|e| e.to_rpc())?;
        handle
            .replace_all(records)
            .map_err(|e| RpcError::from_error(ErrorCode::Internal, &e))?;
        let addr = handle.local_addr();
        *self.dns.lock() = Some(handle);
        self.route_vm_domain().await;
        Ok(addr)
    }

    /// Route `~vm` to our DNS through systemd-resolved, where it runs. Only
    /// from the host's own network namespace: resolved is a host-wide
    /// service addressed by interface index, and a daemon in another
    /// namespace (tests, `ip netns exec`) would configure the wrong link.
    async fn route_vm_domain(&self) {
        if banger_host::net::netns::in_init_netns() == Some(false) {
            tracing::info!("not in the host's network namespace; leaving resolver routing alone");
            return;
        }
        if !banger_host::probe::probe_resolved().running() {
            tracing::info!(
                dns = %self.network.bridge_ip(),
                "systemd-resolved is not running; point your resolver at banger's DNS for `vm` (see `banger doctor`)"
            );
            return;
        }
        let privileged = Arc::clone(&self.privileged);
        let spec = banger_proto::net::ResolverSpec {
            bridge: self.config.network.bridge.clone(),
            dns: self.network.bridge_ip(),
        };
        let applied = tokio::task::spawn_blocking(move || privileged.request(spec)).await;
        match applied {
            Ok(Ok(())) => {
                self.network.set_resolver_routing(true);
                tracing::info!("`~vm` routed to banger's DNS through systemd-resolved");
            }
            Ok(Err(e)) => tracing::warn!(error = %e.render(), "resolver routing not applied"),
            Err(e) => tracing::warn!(error = %e, "resolver routing task failed"),
        }
    }

    /// Stop the DNS server (shutdown and teardown).
    pub async fn stop_dns(&self) {
        let handle = self.dns.lock().take();
        if let Some(h) = handle
            && let Err(e) = h.shutdown().await
        {
            tracing::warn!(error = %e, "stopping DNS server");
        }
    }

    /// Close every kept SSH master (shutdown).
    pub async fn close_ssh_masters(&self) {
        let vms = Arc::clone(&self.vms);
        if let Err(e) = tokio::task::spawn_blocking(move || vms.close_ssh_masters()).await {
            tracing::warn!(error = %e, "closing SSH masters failed");
        }
    }

    pub fn vms(&self) -> &Arc<VmService> {
        &self.vms
    }

    pub fn network(&self) -> &Arc<HostNetwork> {
        &self.network
    }

    pub fn images(&self) -> &Arc<ImageService> {
        &self.images
    }

    /// Set up the host network (startup reconcile). A failure is logged and
    /// reported by `banger host status`; the daemon keeps serving.
    pub async fn reconcile_network(&self) {
        let net = Arc::clone(&self.network);
        match tokio::task::spawn_blocking(move || net.reconcile()).await {
            Ok(Ok(())) => tracing::info!("host network ready"),
            Ok(Err(e)) => {
                tracing::error!(error = %banger_proto::error::chain(&e).join(": "), "host network setup failed")
            }
            Err(e) => tracing::error!(error = %e, "host network setup panicked"),
        }
    }

    async fn host_status(&self) -> Result<HostStatus, RpcError> {
        let (dns_address, dns_records) = {
            let dns = self.dns.lock();
            match dns.as_ref() {
                Some(h) => (Some(h.local_addr().to_string()), h.records().len()),
                None => (None, 0),
            }
        };
        let net = Arc::clone(&self.network);
        // `HostNetwork::status` reports the snapshot backend by the
        // executor's own selection rule.
        tokio::task::spawn_blocking(move || net.status(dns_address, dns_records))
            .await
            .map_err(|e| {
                RpcError::new(ErrorCode::Internal, format!("host status task failed: {e}"))
            })
    }

    async fn host_teardown(&self) -> Result<TeardownReport, RpcError> {
        // The warm pool's clones are VMs on the bridge nobody sees (`vm
        // ls` does not show them, so `system uninstall` does not stop
        // them): they go first, and no clone is made until the end.
        let _holds = self.vms.drain_all_pools().await?;
        // The DNS sockets are bound to the bridge address: close them first.
        self.stop_dns().await;
        let net = Arc::clone(&self.network);
        tokio::task::spawn_blocking(move || net.teardown())
            .await
            .map_err(|e| RpcError::new(ErrorCode::Internal, format!("teardown task failed: {e}")))?
            .map_err(|e| e.to_rpc())
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn info(&self) -> DaemonInfo {
        DaemonInfo {
            daemon_version: BANGER_VERSION.to_string(),
            protocol: PROTOCOL_VERSION,
            mode: self.mode,
            pid: std::process::id(),
            uid: rustix::process::geteuid().as_raw(),
            state_dir: self.layout.state_dir.display().to_string(),
            socket: self.layout.socket.display().to_string(),
        }
    }

    /// Run every host check: privileged ones through the seam, the rest here.
    async fn doctor(&self, progress: ProgressSink) -> Result<DoctorReport, RpcError> {
        let privileged = Arc::clone(&self.privileged);
        let runner = self.runner;
        // The binaries in effect: the owner's `[vmm]` in dev mode, the
        // install's in system mode (what the helper launches).
        let firecracker = self.config.vmm.firecracker_bin.clone();
        let qemu = self.config.vmm.qemu_bin.clone();
        let state_dir = self.layout.state_dir.clone();
        let root_state_dir = self.layout.root_state_dir.clone();
        let facts = tokio::task::spawn_blocking(move || -> Result<HostFacts, RpcError> {
            let total = Some(4 + HostDevice::ALL.len() as u64);
            let mut done = 0;
            let mut step = |stage: &str, message: String| {
                progress.emit_blocking(Progress {
                    stage: stage.to_string(),
                    message,
                    done,
                    total,
                });
                done += 1;
            };
            step(
                "privileged_helper",
                "checking the privileged channel".into(),
            );
            let channel = privileged.channel();
            if matches!(channel, Channel::HelperUnreachable { .. }) {
                // The privileged probes cannot run; report everything else.
                step(
                    "tools",
                    "checking tools, cgroups, resolver and reflink".into(),
                );
                let unpriv = doctor::gather_unprivileged(
                    &runner,
                    firecracker.as_deref(),
                    qemu.as_deref(),
                    &state_dir,
                    root_state_dir.as_deref(),
                );
                return Ok(HostFacts::without_privileged(channel, unpriv));
            }
            step("kvm", "running a test guest under KVM".into());
            let kvm = privileged.request(ProbeKvm)?;
            let mut devices = Vec::new();
            for device in HostDevice::ALL {
                step(device_stage(device), format!("probing {}", device.path()));
                devices.push(privileged.request(ProbeDevice { device })?);
            }
            step("nft", "checking nftables".into());
            let nft = privileged.request(ProbeNftables)?;
            // Best-effort: the report says "unknown" for what these could
            // not learn, and why is in the log.
            let ip_forward = privileged
                .request(QueryNetStatus)
                .inspect_err(|e| tracing::warn!(error = %e.render(), "doctor: net status"))
                .ok()
                .map(|s| s.ip_forward);
            let jail_scope = privileged
                .request(ProbeJailScope)
                .inspect_err(|e| tracing::warn!(error = %e.render(), "doctor: jail scope"))
                .ok();
            let vmm_support = privileged
                .request(ProbeVmms)
                .inspect_err(
                    |e| tracing::warn!(error = %e.render(), "doctor: what the executor runs"),
                )
                .ok();
            step(
                "tools",
                "checking tools, cgroups, resolver and reflink".into(),
            );
            let unpriv = doctor::gather_unprivileged(
                &runner,
                firecracker.as_deref(),
                qemu.as_deref(),
                &state_dir,
                root_state_dir.as_deref(),
            );
            Ok(HostFacts::combine(
                channel,
                doctor::PrivilegedFacts {
                    kvm,
                    devices,
                    nft,
                    ip_forward,
                    jail_scope,
                    vmm_support,
                },
                unpriv,
            ))
        })
        .await
        .map_err(|e| RpcError::new(ErrorCode::Internal, format!("doctor task failed: {e}")))??;
        Ok(doctor::assemble(&facts))
    }
}

fn device_stage(d: HostDevice) -> &'static str {
    match d {
        HostDevice::Tun => "tun",
        HostDevice::VhostVsock => "vhost_vsock",
        HostDevice::LoopControl => "loop_control",
        HostDevice::MapperControl => "device_mapper",
    }
}

impl Handler for Daemon {
    async fn handle(&self, req: Request, progress: ProgressSink) -> Result<Response, RpcError> {
        match req {
            Request::Ping => Ok(Response::Pong(self.info())),
            Request::Doctor => self.doctor(progress).await.map(Response::Doctor),
            Request::HostStatus => self.host_status().await.map(Response::HostStatus),
            Request::HostTeardown => self.host_teardown().await.map(Response::HostTeardown),
            Request::Image(ImageRequest::Promote { vm, name }) => self
                .flows
                .promote(&vm, &name, progress)
                .await
                .map(|info| Response::Image(ImageResponse::Promoted(info))),
            Request::Vm(VmRequest::Create(c)) => self
                .flows
                .create_vm(c, progress)
                .await
                .map(|c| Response::Vm(VmResponse::Created(c))),
            Request::Image(ImageRequest::Remove { name }) => {
                // The image's warm pool goes first (its clones and pool
                // snapshot would refuse the removal), and stays empty
                // until the removal is over; to its end in a task of its
                // own (a client that goes away must not cut a drain short).
                let (vms, images) = (Arc::clone(&self.vms), Arc::clone(&self.images));
                tokio::spawn(async move {
                    let _hold = vms.drain_pool(&name).await?;
                    images
                        .handle_image(ImageRequest::Remove { name }, progress)
                        .await
                })
                .await
                .map_err(|e| RpcError::new(ErrorCode::Internal, format!("image rm task: {e}")))?
            }
            Request::Image(ImageRequest::Refresh { name }) => {
                // A refreshed work seed: the pool snapshot (and the clones
                // made from it) carry the old one, so they go; the refill
                // makes them anew.
                let r = self
                    .images
                    .handle_image(ImageRequest::Refresh { name: name.clone() }, progress)
                    .await?;
                if let Response::Image(ImageResponse::Refreshed(done)) = &r
                    && done.rebuilt
                {
                    let vms = Arc::clone(&self.vms);
                    tokio::spawn(async move { vms.drain_pool(&name).await.map(drop) })
                        .await
                        .map_err(|e| {
                            RpcError::new(ErrorCode::Internal, format!("image refresh task: {e}"))
                        })??;
                }
                Ok(r)
            }
            Request::Image(r) => self.images.handle_image(r, progress).await,
            Request::Kernel(r) => self.images.handle_kernel(r, progress).await,
            Request::Vm(r) => self.vms.handle_vm(r, progress).await,
            Request::Op(r) => self.vms.handle_op(r, progress).await,
            Request::Snapshot(r) => self.vms.handle_snapshot(r).await,
            Request::Workspace(r) => {
                // To its end in a task of its own: a client that goes away
                // drops this future, which must not drop the workspace's
                // and VM's locks while the copy goes on.
                let workspaces = Arc::clone(&self.workspaces);
                tokio::spawn(async move { workspaces.handle(r, progress).await })
                    .await
                    .map_err(|e| {
                        RpcError::new(ErrorCode::Internal, format!("workspace task failed: {e}"))
                    })?
            }
        }
    }
}
