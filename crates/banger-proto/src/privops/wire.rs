//! The wire form of [`PrivOp`]: one flat, adjacently tagged enum, exactly
//! as protocol 4 has always sent it (`{"op": NAME}` for an op that carries
//! nothing, `{"op": NAME, "args": {..}}` otherwise; unknown ops and fields
//! refused). [`PrivOp`] groups the same operations by domain in Rust and
//! (de)serializes through this type, so the grouping moves no byte.
//! `tests/privop_wire.rs` pins every op's JSON.

use serde::{Deserialize, Serialize};

use super::PrivOp;
use super::ops::{
    BuildDebianImage, DeleteTap, DeleteVmDisks, GrowWorkDisk, ImageOp, KillVm, NetOp,
    OpenDnsSockets, ProbeDevice, ProbeJailScope, ProbeKvm, ProbeNftables, ProbeOp, QueryNetStatus,
    StopVm, Teardown, VmOp, VmmStatus,
};
use crate::net::{BridgeSpec, FirewallSpec, ResolverSpec, TapSpec};
use crate::vmops::{GuestFilesSpec, LaunchVmSpec, VmDisksSpec};

#[derive(Clone, Serialize, Deserialize)]
#[serde(
    tag = "op",
    content = "args",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub(crate) enum WireOp {
    ProbeKvm,
    ProbeDevice(ProbeDevice),
    ProbeNftables,
    ProbeJailScope,
    EnsureBridge(BridgeSpec),
    EnsureTap(TapSpec),
    DeleteTap(DeleteTap),
    SyncFirewall(FirewallSpec),
    OpenDnsSockets(OpenDnsSockets),
    ApplyResolver(ResolverSpec),
    NetStatus,
    Teardown,
    CreateVmDisks(VmDisksSpec),
    WriteGuestFiles(GuestFilesSpec),
    GrowWorkDisk(GrowWorkDisk),
    DeleteVmDisks(DeleteVmDisks),
    LaunchVm(LaunchVmSpec),
    StopVm(StopVm),
    KillVm(KillVm),
    VmmStatus(VmmStatus),
    BuildDebianImage(BuildDebianImage),
}

impl From<WireOp> for PrivOp {
    fn from(op: WireOp) -> PrivOp {
        match op {
            WireOp::ProbeKvm => ProbeKvm.into(),
            WireOp::ProbeDevice(r) => r.into(),
            WireOp::ProbeNftables => ProbeNftables.into(),
            WireOp::ProbeJailScope => ProbeJailScope.into(),
            WireOp::EnsureBridge(r) => r.into(),
            WireOp::EnsureTap(r) => r.into(),
            WireOp::DeleteTap(r) => r.into(),
            WireOp::SyncFirewall(r) => r.into(),
            WireOp::OpenDnsSockets(r) => r.into(),
            WireOp::ApplyResolver(r) => r.into(),
            WireOp::NetStatus => QueryNetStatus.into(),
            WireOp::Teardown => Teardown.into(),
            WireOp::CreateVmDisks(r) => r.into(),
            WireOp::WriteGuestFiles(r) => r.into(),
            WireOp::GrowWorkDisk(r) => r.into(),
            WireOp::DeleteVmDisks(r) => r.into(),
            WireOp::LaunchVm(r) => r.into(),
            WireOp::StopVm(r) => r.into(),
            WireOp::KillVm(r) => r.into(),
            WireOp::VmmStatus(r) => r.into(),
            WireOp::BuildDebianImage(r) => r.into(),
        }
    }
}

impl From<PrivOp> for WireOp {
    fn from(op: PrivOp) -> WireOp {
        match op {
            PrivOp::Probe(op) => match op {
                ProbeOp::ProbeKvm(ProbeKvm) => WireOp::ProbeKvm,
                ProbeOp::ProbeDevice(r) => WireOp::ProbeDevice(r),
                ProbeOp::ProbeNftables(ProbeNftables) => WireOp::ProbeNftables,
                ProbeOp::ProbeJailScope(ProbeJailScope) => WireOp::ProbeJailScope,
            },
            PrivOp::Net(op) => match op {
                NetOp::EnsureBridge(r) => WireOp::EnsureBridge(r),
                NetOp::EnsureTap(r) => WireOp::EnsureTap(r),
                NetOp::DeleteTap(r) => WireOp::DeleteTap(r),
                NetOp::SyncFirewall(r) => WireOp::SyncFirewall(r),
                NetOp::OpenDnsSockets(r) => WireOp::OpenDnsSockets(r),
                NetOp::ApplyResolver(r) => WireOp::ApplyResolver(r),
                NetOp::NetStatus(QueryNetStatus) => WireOp::NetStatus,
                NetOp::Teardown(Teardown) => WireOp::Teardown,
            },
            PrivOp::Vm(op) => match op {
                VmOp::CreateVmDisks(r) => WireOp::CreateVmDisks(r),
                VmOp::WriteGuestFiles(r) => WireOp::WriteGuestFiles(r),
                VmOp::GrowWorkDisk(r) => WireOp::GrowWorkDisk(r),
                VmOp::DeleteVmDisks(r) => WireOp::DeleteVmDisks(r),
                VmOp::LaunchVm(r) => WireOp::LaunchVm(r),
                VmOp::StopVm(r) => WireOp::StopVm(r),
                VmOp::KillVm(r) => WireOp::KillVm(r),
                VmOp::VmmStatus(r) => WireOp::VmmStatus(r),
            },
            PrivOp::Image(ImageOp::BuildDebianImage(r)) => WireOp::BuildDebianImage(r),
        }
    }
}
