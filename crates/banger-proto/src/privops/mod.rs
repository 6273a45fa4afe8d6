//! The privileged-operations seam: the closed set of things `bangerd` may ask
//! of root.
//!
//! There is deliberately no "run this command" operation and no variant takes a
//! host path, an argv or a firewall rule: every argument is a typed value the
//! executor validates, and every path the executor touches is one it derives
//! itself. New capabilities add a request type and a variant in `ops`, each
//! documenting its preconditions, and bump [`PRIV_PROTOCOL_VERSION`].
//!
//! Every operation has its own request type and answer type ([`PrivCall`]):
//! the executor answers through the request's type and the daemon reads the
//! answer back typed ([`answer_of`]), so neither side matches
//! [`PrivOutcome`] by hand.
//!
//! Conversation on the helper socket (`root.sock`): the helper checks the
//! peer's uid against the installed owner before reading anything; the client
//! sends [`PrivRequest::Hello`], then any number of [`PrivRequest::Op`]s, each
//! answered by exactly one [`PrivReply`].

mod call;
mod ops;
mod probe;
mod wire;

use serde::{Deserialize, Serialize};

use crate::RpcError;
pub use crate::net::{
    BridgeOutcome, BridgeSpec, DnsSockets, FirewallSpec, NetStatus, ResolverSpec, TapOutcome,
    TapSpec, TeardownReport,
};
pub use crate::vmops::{
    GuestFile, GuestFilesSpec, LaunchVmSpec, SnapshotBackend, VmDisksOutcome, VmDisksSpec,
    VmStopped, VmmKind, VmmState,
};
pub use call::{Answer, PrivCall, WrongOutcome, answer_of};
pub use ops::{
    BuildDebianImage, DeleteTap, DeleteVmDisks, GrowWorkDisk, ImageOp, KillVm, NetOp,
    OpenDnsSockets, PauseVm, ProbeDevice, ProbeJailScope, ProbeKvm, ProbeNftables, ProbeOp,
    ProbeVmms, QueryNetStatus, RESTORE_LAUNCH_MAX_SECS, ResumeVm, SNAPSHOT_VM_MAX_SECS,
    STOP_OVERHEAD_MAX_SECS, StopVm, Teardown, VmOp, VmmStatus, WAIT_READY_MAX_MS, WaitVmReady,
};
pub use probe::{
    DeviceProbe, DeviceState, GuestTest, HostDevice, JailScopeProbe, KvmProbe, KvmVerdict, MsrTest,
    ToolProbe, VmmAvailability, VmmSupport,
};

/// Version of the privileged-ops protocol.
pub const PRIV_PROTOCOL_VERSION: u32 = 8;

/// Messages from `bangerd` to the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    content = "body",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum PrivRequest {
    Hello { protocol: u32 },
    Op(PrivOp),
}

/// Messages from the helper to `bangerd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    content = "body",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum PrivReply {
    Hello {
        protocol: u32,
        helper_version: String,
    },
    Ok(PrivOutcome),
    Error(RpcError),
}

/// A privileged operation, by domain; each variant of a domain enum wraps
/// the operation's request type, which names its answer ([`PrivCall`]).
/// On the wire it is the flat form of [`wire`], unchanged by the grouping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "wire::PrivOp", into = "wire::PrivOp")]
pub enum PrivOp {
    Probe(ProbeOp),
    Net(NetOp),
    Vm(VmOp),
    Image(ImageOp),
}

/// [`VmOp::LaunchVm`]'s name: the executor's per-VM operation lock is
/// keyed by op names, and a launch in flight is recognised by this one.
pub const LAUNCH_VM: &str = <LaunchVmSpec as PrivCall>::NAME;

impl PrivOp {
    /// Stable name for logs and the helper's audit trail: the wire name.
    pub fn name(&self) -> &'static str {
        match self {
            PrivOp::Probe(op) => op.name(),
            PrivOp::Net(op) => op.name(),
            PrivOp::Vm(op) => op.name(),
            PrivOp::Image(op) => op.name(),
        }
    }
}

/// Result of a [`PrivOp`], as it crosses the wire; which variant answers
/// which op is [`PrivCall::Response`]'s (see [`Answer`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "result",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum PrivOutcome {
    Kvm(KvmProbe),
    Device(DeviceProbe),
    Nftables(ToolProbe),
    JailScope(JailScopeProbe),
    VmmSupport(VmmSupport),
    Bridge(BridgeOutcome),
    Tap(TapOutcome),
    /// The op succeeded and has nothing to report.
    Done,
    DnsSockets(DnsSockets),
    NetStatus(NetStatus),
    Teardown(TeardownReport),
    VmDisks(VmDisksOutcome),
    Vmm(VmmState),
    VmStopped(VmStopped),
    BuiltImage(BuiltImageFiles),
    SnapshotSaved(crate::vmops::SnapshotSaved),
}

/// A built Debian image in root's cache; the three descriptors (read-only,
/// regular files owned by root) travel beside the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltImageFiles {
    /// sha256 over the build's inputs: the cache entry's name.
    pub cache_key: String,
    /// The Debian kernel's version (`uname -r` in the guest).
    pub kernel_version: String,
    /// The cache entry, for messages only (the daemon reads the descriptors).
    pub entry: String,
    /// True when the entry already existed and nothing was built.
    pub cached: bool,
    pub rootfs: BuiltImageFile,
    pub kernel: BuiltImageFile,
    pub initrd: BuiltImageFile,
}

/// One file of a [`BuiltImageFiles`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltImageFile {
    pub fd: crate::net::FdIndex,
    /// Where it is in root's cache, for messages only.
    pub path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_wire_shape_carries_no_paths() {
        let op = PrivOp::from(ProbeDevice {
            device: HostDevice::MapperControl,
        });
        assert_eq!(
            serde_json::to_string(&op).unwrap(),
            r#"{"op":"probe_device","args":{"device":"mapper_control"}}"#
        );
        // A path smuggled in place of the enum is refused.
        assert!(
            serde_json::from_str::<PrivOp>(
                r#"{"op":"probe_device","args":{"device":"/etc/shadow"}}"#
            )
            .is_err()
        );
        let err =
            serde_json::from_str::<PrivOp>(r#"{"op":"exec","args":{"argv":["sh"]}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `exec`"), "{err}");
    }

    /// Every outcome's `kind()` is its serde tag, so a wrong answer is
    /// named as it was sent.
    #[test]
    fn outcome_kinds_are_the_wire_tags() {
        let outcomes = [
            PrivOutcome::Done,
            PrivOutcome::JailScope(JailScopeProbe::Scoped),
            PrivOutcome::Teardown(TeardownReport {
                removed: vec![],
                errors: vec![],
            }),
            PrivOutcome::VmStopped(VmStopped {
                was_running: false,
                graceful: false,
            }),
            PrivOutcome::Nftables(ToolProbe {
                tool: "nft".into(),
                path: None,
                version: None,
                works: false,
                error: None,
            }),
        ];
        for outcome in outcomes {
            let json = serde_json::to_value(&outcome).unwrap();
            assert_eq!(json["kind"], outcome.kind());
        }
    }

    #[test]
    fn a_wrong_answer_names_the_op_and_both_kinds() {
        let err = answer_of::<StopVm>(PrivOutcome::Done).unwrap_err();
        assert_eq!(
            err.to_string(),
            "privileged operation stop_vm was answered with `done`, where `vm_stopped` was expected"
        );
        assert_eq!(
            answer_of::<Teardown>(PrivOutcome::Done).unwrap_err().got,
            "done"
        );
        answer_of::<DeleteTap>(PrivOutcome::Done).unwrap();
        assert_eq!(LAUNCH_VM, "launch_vm");
    }
}
