//! The wire form of [`PrivOp`]: one flat, adjacently tagged enum, exactly
//! as protocol 4 sent it (protocol 5 added `probe_vmms` and renamed
//! `launch_vm`'s `kvm` to `force_kvm`, 6 `wait_vm_ready`, 7 `pause_vm` and
//! `resume_vm`, 8 `snapshot_vm`, `create_vm_disks`' `from_snapshot` and
//! `launch_vm`'s `restore`) (`{"op": NAME}` for an op that carries
//! nothing, `{"op": NAME, "args": {..}}` otherwise; unknown ops and fields
//! refused, an `args` array refused where it is a struct). [`PrivOp`]
//! groups the same operations by domain in Rust and (de)serializes through
//! this type, so the grouping moves no byte and no message.
//! `tests/privop_wire.rs` pins every op's JSON.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::PrivOp as Grouped;
use super::ops::{
    BuildDebianImage, DeleteTap, DeleteVmDisks, GrowWorkDisk, ImageOp, KillVm, NetOp,
    OpenDnsSockets, PauseVm, ProbeDevice, ProbeJailScope, ProbeKvm, ProbeNftables, ProbeOp,
    ProbeVmms, QueryNetStatus, ResumeVm, StopVm, Teardown, VmOp, VmmStatus, WaitVmReady,
};
use super::probe::HostDevice;
use crate::net::{BridgeSpec, FirewallSpec, ResolverSpec, TapSpec};
use crate::vmops::{GuestFilesSpec, LaunchVmSpec, SnapshotVmSpec, VmDisksSpec};

// Named `PrivOp` here (the grouped one is `Grouped` in this file), so its
// messages to a peer ("expected struct variant PrivOp::DeleteTap", "unknown
// variant `exec`") are the ones protocol 4 has always given. Struct
// variants stay struct variants (an `args` array is refused as it always
// was); the request types are Rust's.
#[derive(Clone, Serialize, Deserialize)]
#[serde(
    tag = "op",
    content = "args",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub(crate) enum PrivOp {
    ProbeKvm,
    ProbeDevice { device: HostDevice },
    ProbeNftables,
    ProbeJailScope,
    ProbeVmms,
    EnsureBridge(BridgeSpec),
    EnsureTap(TapSpec),
    DeleteTap { name: String },
    SyncFirewall(FirewallSpec),
    OpenDnsSockets { address: Ipv4Addr },
    ApplyResolver(ResolverSpec),
    NetStatus,
    Teardown,
    CreateVmDisks(VmDisksSpec),
    WriteGuestFiles(GuestFilesSpec),
    GrowWorkDisk { vm_id: String, bytes: u64 },
    DeleteVmDisks { vm_id: String },
    LaunchVm(LaunchVmSpec),
    StopVm { vm_id: String, timeout_secs: u32 },
    KillVm { vm_id: String },
    VmmStatus { vm_id: String },
    WaitVmReady { vm_id: String, timeout_ms: u32 },
    PauseVm { vm_id: String },
    ResumeVm { vm_id: String },
    SnapshotVm(SnapshotVmSpec),
    BuildDebianImage { suite: String },
}

impl From<PrivOp> for Grouped {
    fn from(op: PrivOp) -> Grouped {
        match op {
            PrivOp::ProbeKvm => ProbeKvm.into(),
            PrivOp::ProbeDevice { device } => ProbeDevice { device }.into(),
            PrivOp::ProbeNftables => ProbeNftables.into(),
            PrivOp::ProbeJailScope => ProbeJailScope.into(),
            PrivOp::ProbeVmms => ProbeVmms.into(),
            PrivOp::EnsureBridge(r) => r.into(),
            PrivOp::EnsureTap(r) => r.into(),
            PrivOp::DeleteTap { name } => DeleteTap { name }.into(),
            PrivOp::SyncFirewall(r) => r.into(),
            PrivOp::OpenDnsSockets { address } => OpenDnsSockets { address }.into(),
            PrivOp::ApplyResolver(r) => r.into(),
            PrivOp::NetStatus => QueryNetStatus.into(),
            PrivOp::Teardown => Teardown.into(),
            PrivOp::CreateVmDisks(r) => r.into(),
            PrivOp::WriteGuestFiles(r) => r.into(),
            PrivOp::GrowWorkDisk { vm_id, bytes } => GrowWorkDisk { vm_id, bytes }.into(),
            PrivOp::DeleteVmDisks { vm_id } => DeleteVmDisks { vm_id }.into(),
            PrivOp::LaunchVm(r) => r.into(),
            PrivOp::StopVm {
                vm_id,
                timeout_secs,
            } => StopVm {
                vm_id,
                timeout_secs,
            }
            .into(),
            PrivOp::KillVm { vm_id } => KillVm { vm_id }.into(),
            PrivOp::VmmStatus { vm_id } => VmmStatus { vm_id }.into(),
            PrivOp::WaitVmReady { vm_id, timeout_ms } => WaitVmReady { vm_id, timeout_ms }.into(),
            PrivOp::PauseVm { vm_id } => PauseVm { vm_id }.into(),
            PrivOp::ResumeVm { vm_id } => ResumeVm { vm_id }.into(),
            PrivOp::SnapshotVm(r) => r.into(),
            PrivOp::BuildDebianImage { suite } => BuildDebianImage { suite }.into(),
        }
    }
}

impl From<Grouped> for PrivOp {
    fn from(op: Grouped) -> PrivOp {
        match op {
            Grouped::Probe(op) => match op {
                ProbeOp::ProbeKvm(ProbeKvm) => PrivOp::ProbeKvm,
                ProbeOp::ProbeDevice(ProbeDevice { device }) => PrivOp::ProbeDevice { device },
                ProbeOp::ProbeNftables(ProbeNftables) => PrivOp::ProbeNftables,
                ProbeOp::ProbeJailScope(ProbeJailScope) => PrivOp::ProbeJailScope,
                ProbeOp::ProbeVmms(ProbeVmms) => PrivOp::ProbeVmms,
            },
            Grouped::Net(op) => match op {
                NetOp::EnsureBridge(r) => PrivOp::EnsureBridge(r),
                NetOp::EnsureTap(r) => PrivOp::EnsureTap(r),
                NetOp::DeleteTap(DeleteTap { name }) => PrivOp::DeleteTap { name },
                NetOp::SyncFirewall(r) => PrivOp::SyncFirewall(r),
                NetOp::OpenDnsSockets(OpenDnsSockets { address }) => {
                    PrivOp::OpenDnsSockets { address }
                }
                NetOp::ApplyResolver(r) => PrivOp::ApplyResolver(r),
                NetOp::NetStatus(QueryNetStatus) => PrivOp::NetStatus,
                NetOp::Teardown(Teardown) => PrivOp::Teardown,
            },
            Grouped::Vm(op) => match op {
                VmOp::CreateVmDisks(r) => PrivOp::CreateVmDisks(r),
                VmOp::WriteGuestFiles(r) => PrivOp::WriteGuestFiles(r),
                VmOp::GrowWorkDisk(GrowWorkDisk { vm_id, bytes }) => {
                    PrivOp::GrowWorkDisk { vm_id, bytes }
                }
                VmOp::DeleteVmDisks(DeleteVmDisks { vm_id }) => PrivOp::DeleteVmDisks { vm_id },
                VmOp::LaunchVm(r) => PrivOp::LaunchVm(r),
                VmOp::StopVm(StopVm {
                    vm_id,
                    timeout_secs,
                }) => PrivOp::StopVm {
                    vm_id,
                    timeout_secs,
                },
                VmOp::KillVm(KillVm { vm_id }) => PrivOp::KillVm { vm_id },
                VmOp::VmmStatus(VmmStatus { vm_id }) => PrivOp::VmmStatus { vm_id },
                VmOp::WaitVmReady(WaitVmReady { vm_id, timeout_ms }) => {
                    PrivOp::WaitVmReady { vm_id, timeout_ms }
                }
                VmOp::PauseVm(PauseVm { vm_id }) => PrivOp::PauseVm { vm_id },
                VmOp::ResumeVm(ResumeVm { vm_id }) => PrivOp::ResumeVm { vm_id },
                VmOp::SnapshotVm(r) => PrivOp::SnapshotVm(r),
            },
            Grouped::Image(ImageOp::BuildDebianImage(BuildDebianImage { suite })) => {
                PrivOp::BuildDebianImage { suite }
            }
        }
    }
}
