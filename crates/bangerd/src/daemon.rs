//! `Daemon`: the composition root. Shared infrastructure (store, runner,
//! layout, config, privileged-ops adapter) plus the services; RPC dispatch
//! only forwards into them.

use std::path::PathBuf;
use std::sync::Arc;

use banger_host::runner::Runner;
use banger_proto::doctor::DoctorReport;
use banger_proto::privops::{DeviceProbe, HostDevice, KvmProbe, PrivOp, PrivOutcome, ToolProbe};
use banger_proto::rpc::{DaemonInfo, DaemonMode, PROTOCOL_VERSION, Progress, Request, Response};
use banger_proto::{BANGER_VERSION, ErrorCode, RpcError};

use crate::config::Config;
use crate::doctor::{self, HostFacts};
use crate::layout::Layout;
use crate::privileged::{Channel, PrivilegedOps};
use crate::server::{Handler, ProgressSink};
use crate::store::Store;

#[derive(Debug)]
pub struct Daemon {
    mode: DaemonMode,
    layout: Layout,
    config: Config,
    store: Arc<Store>,
    privileged: Arc<dyn PrivilegedOps>,
    runner: Runner,
}

impl Daemon {
    pub fn new(
        mode: DaemonMode,
        layout: Layout,
        config: Config,
        store: Store,
        privileged: Arc<dyn PrivilegedOps>,
    ) -> Self {
        Daemon {
            mode,
            layout,
            config,
            store: Arc::new(store),
            privileged,
            runner: Runner,
        }
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
        let firecracker = PathBuf::from(&self.config.vmm.firecracker_bin);
        let qemu = PathBuf::from(&self.config.vmm.qemu_bin);
        let state_dir = self.layout.state_dir.clone();
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
                let unpriv = doctor::gather_unprivileged(&runner, &firecracker, &qemu, &state_dir);
                return Ok(HostFacts::without_privileged(channel, unpriv));
            }
            step("kvm", "running a test guest under KVM".into());
            let kvm = expect_kvm(privileged.call(PrivOp::ProbeKvm)?)?;
            let mut devices = Vec::new();
            for device in HostDevice::ALL {
                step(device_stage(device), format!("probing {}", device.path()));
                devices.push(expect_device(
                    privileged.call(PrivOp::ProbeDevice { device })?,
                )?);
            }
            step("nft", "checking nftables".into());
            let nft = expect_nft(privileged.call(PrivOp::ProbeNftables)?)?;
            step(
                "tools",
                "checking tools, cgroups, resolver and reflink".into(),
            );
            let unpriv = doctor::gather_unprivileged(&runner, &firecracker, &qemu, &state_dir);
            Ok(HostFacts::combine(channel, kvm, devices, nft, unpriv))
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

fn mismatch(expected: &str) -> RpcError {
    RpcError::new(
        ErrorCode::Internal,
        format!("privileged channel returned the wrong result kind; expected {expected}"),
    )
}

fn expect_kvm(o: PrivOutcome) -> Result<KvmProbe, RpcError> {
    match o {
        PrivOutcome::Kvm(k) => Ok(k),
        _ => Err(mismatch("kvm")),
    }
}

fn expect_device(o: PrivOutcome) -> Result<DeviceProbe, RpcError> {
    match o {
        PrivOutcome::Device(d) => Ok(d),
        _ => Err(mismatch("device")),
    }
}

fn expect_nft(o: PrivOutcome) -> Result<ToolProbe, RpcError> {
    match o {
        PrivOutcome::Nftables(t) => Ok(t),
        _ => Err(mismatch("nftables")),
    }
}

impl Handler for Daemon {
    async fn handle(&self, req: Request, progress: ProgressSink) -> Result<Response, RpcError> {
        match req {
            Request::Ping => Ok(Response::Pong(self.info())),
            Request::Doctor => self.doctor(progress).await.map(Response::Doctor),
        }
    }
}
