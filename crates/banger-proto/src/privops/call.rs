//! Typed answers: each privileged operation's request type names the one
//! type that answers it, so no caller matches [`PrivOutcome`] by hand.
//!
//! On the wire an answer is still a [`PrivOutcome`] (`{"kind": .., "result":
//! ..}`); [`Answer`] maps each answer type to its one variant, and
//! [`PrivCall::Response`] says which answer type an operation gets. The
//! executor builds its outcome through [`Answer::into_outcome`] from the
//! request's own response type, and the daemon reads it back through
//! [`answer_of`], so an answer of the wrong kind is one error in one place.

use super::probe::{DeviceProbe, JailScopeProbe, KvmProbe, ToolProbe, VmmSupport};
use super::{BuiltImageFiles, PrivOp, PrivOutcome};
use crate::net::{BridgeOutcome, DnsSockets, FdIndex, NetStatus, TapOutcome, TeardownReport};
use crate::vmops::{SnapshotSaved, VmDisksOutcome, VmStopped, VmmState};

/// One privileged operation's request: it becomes a [`PrivOp`] and is
/// answered by a [`Self::Response`].
pub trait PrivCall: Into<PrivOp> {
    /// What the operation answers.
    type Response: Answer;
    /// The operation's wire name (`PrivOp::name`).
    const NAME: &'static str;
}

/// A type that answers privileged operations: exactly one variant of
/// [`PrivOutcome`] carries it.
pub trait Answer: Sized {
    /// That variant's wire name (`PrivOutcome::kind`).
    const KIND: &'static str;
    fn into_outcome(self) -> PrivOutcome;
    /// The answer, when `outcome` is its variant.
    fn from_outcome(outcome: PrivOutcome) -> Option<Self>;
}

/// The helper answered an operation with an outcome of another kind: a bug
/// on one side of the seam, or two builds that disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("privileged operation {op} was answered with `{got}`, where `{expected}` was expected")]
pub struct WrongOutcome {
    pub op: &'static str,
    pub expected: &'static str,
    pub got: &'static str,
}

/// The typed answer to `R` in `outcome`.
pub fn answer_of<R: PrivCall>(outcome: PrivOutcome) -> Result<R::Response, WrongOutcome> {
    let got = outcome.kind();
    <R::Response as Answer>::from_outcome(outcome).ok_or(WrongOutcome {
        op: R::NAME,
        expected: <R::Response as Answer>::KIND,
        got,
    })
}

macro_rules! answers {
    ($( $variant:ident($answer:ty) = $kind:literal, )*) => {
        $(
            impl Answer for $answer {
                const KIND: &'static str = $kind;
                fn into_outcome(self) -> PrivOutcome {
                    PrivOutcome::$variant(self)
                }
                fn from_outcome(outcome: PrivOutcome) -> Option<Self> {
                    match outcome {
                        PrivOutcome::$variant(answer) => Some(answer),
                        _ => None,
                    }
                }
            }
        )*

        impl PrivOutcome {
            /// The variant's wire name (the serde tag).
            pub fn kind(&self) -> &'static str {
                match self {
                    PrivOutcome::Done => <() as Answer>::KIND,
                    $( PrivOutcome::$variant(_) => $kind, )*
                }
            }
        }
    };
}

answers! {
    Kvm(KvmProbe) = "kvm",
    Device(DeviceProbe) = "device",
    Nftables(ToolProbe) = "nftables",
    JailScope(JailScopeProbe) = "jail_scope",
    VmmSupport(VmmSupport) = "vmm_support",
    Bridge(BridgeOutcome) = "bridge",
    Tap(TapOutcome) = "tap",
    DnsSockets(DnsSockets) = "dns_sockets",
    NetStatus(NetStatus) = "net_status",
    Teardown(TeardownReport) = "teardown",
    VmDisks(VmDisksOutcome) = "vm_disks",
    Vmm(VmmState) = "vmm",
    VmStopped(VmStopped) = "vm_stopped",
    BuiltImage(BuiltImageFiles) = "built_image",
    SnapshotSaved(SnapshotSaved) = "snapshot_saved",
}

/// Operations that succeed with nothing to report answer `Done`.
impl Answer for () {
    const KIND: &'static str = "done";
    fn into_outcome(self) -> PrivOutcome {
        PrivOutcome::Done
    }
    fn from_outcome(outcome: PrivOutcome) -> Option<Self> {
        matches!(outcome, PrivOutcome::Done).then_some(())
    }
}

impl PrivOutcome {
    /// The indices of the descriptors that travel beside this outcome, in
    /// the order the outcome names them.
    pub fn fd_indices(&self) -> Vec<FdIndex> {
        match self {
            PrivOutcome::DnsSockets(s) => vec![s.udp, s.tcp],
            PrivOutcome::BuiltImage(b) => vec![b.rootfs.fd, b.kernel.fd, b.initrd.fd],
            _ => Vec::new(),
        }
    }
}
