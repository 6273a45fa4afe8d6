//! The privileged-operations seam: the closed set of things `bangerd` may ask
//! of root.
//!
//! There is deliberately no "run this command" operation and no variant takes a
//! host path, an argv or a firewall rule: every argument is a typed value the
//! executor validates, and every path the executor touches is one it derives
//! itself. New capabilities add variants here, each documenting its
//! preconditions, and bump [`PRIV_PROTOCOL_VERSION`].
//!
//! Conversation on the helper socket (`root.sock`): the helper checks the
//! peer's uid against the installed owner before reading anything; the client
//! sends [`PrivRequest::Hello`], then any number of [`PrivRequest::Op`]s, each
//! answered by exactly one [`PrivReply`].

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

/// Version of the privileged-ops protocol.
pub const PRIV_PROTOCOL_VERSION: u32 = 4;

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

/// A privileged operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "op",
    content = "args",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum PrivOp {
    /// Open `/dev/kvm`, write the advertised `IA32_ARCH_CAPABILITIES` to a
    /// vCPU and run a tiny real-mode guest to learn whether a stock (non-PVM)
    /// guest can run.
    /// Preconditions: none. Side effects: none that outlive the call.
    ProbeKvm,
    /// Report whether a host device node exists and can be opened read-write.
    /// Preconditions: none. The device path is derived from the enum, never
    /// supplied. Side effects: none (the fd is closed immediately).
    ProbeDevice { device: HostDevice },
    /// Report whether `nft` is installed and can list tables in the helper's
    /// network namespace. Preconditions: none. Side effects: none.
    ProbeNftables,
    /// Report whether the jails the executor makes (disk tools, VMMs) enter
    /// the Landlock scope on abstract UNIX sockets and signals, and if not,
    /// why: tried in the executor's own process, under whatever seccomp
    /// filter surrounds it. Preconditions: none. Side effects: none (the
    /// ruleset made is closed at once).
    ProbeJailScope,
    /// Create banger's bridge if missing (netlink), set its address, bring it
    /// up, enable IPv4 forwarding, and journal it. Idempotent.
    /// Preconditions: `name` starts with `banger` and is a valid interface
    /// name; the address is in a private range, the prefix is /16../29, and
    /// the subnet overlaps no route of another interface. A same-named
    /// interface that the journal does not list is refused, never adopted.
    EnsureBridge(BridgeSpec),
    /// Create a persistent tap (tun ioctls) owned by `owner_uid`, attached to
    /// the bridge, up; journal it. Idempotent.
    /// Preconditions: `name` is `bangertap<N>`; the bridge is journaled.
    EnsureTap(TapSpec),
    /// Delete a tap. Preconditions: the journal lists it. Absent is success.
    DeleteTap { name: String },
    /// Replace banger's nftables tables with exactly `spec`, in one batch.
    /// Preconditions: the bridge and every tap are journaled; every guest
    /// address lies inside the bridge subnet and is neither the network,
    /// broadcast nor bridge address; addresses and taps are unique.
    SyncFirewall(FirewallSpec),
    /// Bind UDP and TCP sockets on `address`:53 and pass them back
    /// (SCM_RIGHTS). Preconditions: `address` is a journaled bridge's address.
    OpenDnsSockets { address: std::net::Ipv4Addr },
    /// Route `~vm` to `dns` on the bridge link through systemd-resolved.
    /// Preconditions: the bridge is journaled; `dns` is its address.
    ApplyResolver(ResolverSpec),
    /// Report the journaled objects as the kernel sees them. Read-only.
    NetStatus,
    /// Remove every host object in the journal: taps, bridges, banger's nft
    /// tables, resolver link settings. Best-effort and idempotent.
    Teardown,
    /// Create the VM's root and work disks (see [`VmDisksSpec`]).
    CreateVmDisks(VmDisksSpec),
    /// Write files into the VM's root disk (ext4 mutation, VM stopped).
    /// Preconditions: every path is absolute and normal, every mode ≤ 0o7777,
    /// no VMM of this VM runs.
    WriteGuestFiles(GuestFilesSpec),
    /// Grow the VM's work disk (file and ext4) to `bytes`. Refused while its
    /// VMM runs, and when `bytes` is smaller than the disk.
    GrowWorkDisk { vm_id: String, bytes: u64 },
    /// Delete the VM's disks and runtime files. Refused while its VMM runs.
    /// Absent is success.
    DeleteVmDisks { vm_id: String },
    /// Spawn the VMM and keep its process (pidfd) and journal entry.
    LaunchVm(LaunchVmSpec),
    /// Graceful stop (guest power-off), killed after `timeout_secs`.
    StopVm { vm_id: String, timeout_secs: u32 },
    /// Kill the VMM now. Not running is success.
    KillVm { vm_id: String },
    /// Whether the VM's VMM runs; re-adopts a journaled process that is still
    /// the same process (pid and start time) after an executor restart.
    VmmStatus { vm_id: String },
    /// Build the default Debian image of `suite` (`banger-imagebuild
    /// debian`: mmdebstrap, the distribution's kernel, the guest contract)
    /// into root's image cache, or find it there, and pass back read-only
    /// descriptors of its root filesystem, kernel and initrd (SCM_RIGHTS).
    /// The build runs as root outside the helper's own sandbox (a transient
    /// systemd unit when systemd manages the host), from the mirror and
    /// package list root's `banger-imagebuild` defaults to; the request
    /// chooses nothing but the suite.
    /// Preconditions: `suite` is a Debian suite name (letters, digits, `-`,
    /// at most 32 bytes). Side effects: a cache entry under root's cache
    /// directory, shared with `sudo banger-imagebuild debian`.
    BuildDebianImage { suite: String },
}

/// [`PrivOp::LaunchVm`]'s name: the executor's per-VM operation lock is
/// keyed by op names, and a launch in flight is recognised by this one.
pub const LAUNCH_VM: &str = "launch_vm";

impl PrivOp {
    /// Stable name for logs and the helper's audit trail.
    pub fn name(&self) -> &'static str {
        match self {
            PrivOp::ProbeKvm => "probe_kvm",
            PrivOp::ProbeDevice { .. } => "probe_device",
            PrivOp::ProbeNftables => "probe_nftables",
            PrivOp::ProbeJailScope => "probe_jail_scope",
            PrivOp::EnsureBridge(_) => "ensure_bridge",
            PrivOp::EnsureTap(_) => "ensure_tap",
            PrivOp::DeleteTap { .. } => "delete_tap",
            PrivOp::SyncFirewall(_) => "sync_firewall",
            PrivOp::OpenDnsSockets { .. } => "open_dns_sockets",
            PrivOp::ApplyResolver(_) => "apply_resolver",
            PrivOp::NetStatus => "net_status",
            PrivOp::Teardown => "teardown",
            PrivOp::CreateVmDisks(_) => "create_vm_disks",
            PrivOp::WriteGuestFiles(_) => "write_guest_files",
            PrivOp::DeleteVmDisks { .. } => "delete_vm_disks",
            PrivOp::GrowWorkDisk { .. } => "grow_work_disk",
            PrivOp::LaunchVm(_) => LAUNCH_VM,
            PrivOp::StopVm { .. } => "stop_vm",
            PrivOp::KillVm { .. } => "kill_vm",
            PrivOp::VmmStatus { .. } => "vmm_status",
            PrivOp::BuildDebianImage { .. } => "build_debian_image",
        }
    }
}

/// Result of a [`PrivOp`]; the variant always matches the op.
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

/// Host device nodes the executor may probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostDevice {
    Tun,
    VhostVsock,
    LoopControl,
    MapperControl,
}

impl HostDevice {
    pub const ALL: [HostDevice; 4] = [
        HostDevice::Tun,
        HostDevice::VhostVsock,
        HostDevice::LoopControl,
        HostDevice::MapperControl,
    ];

    /// The device node; fixed per variant.
    pub fn path(self) -> &'static str {
        match self {
            HostDevice::Tun => "/dev/net/tun",
            HostDevice::VhostVsock => "/dev/vhost-vsock",
            HostDevice::LoopControl => "/dev/loop-control",
            HostDevice::MapperControl => "/dev/mapper/control",
        }
    }
}

/// Whether a device node is there and usable by the prober.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeviceState {
    /// Opened read-write successfully.
    Present,
    /// The node does not exist.
    Absent,
    /// The node exists but opening it failed.
    Unusable { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProbe {
    pub device: HostDevice,
    pub state: DeviceState,
}

/// Outcome of running a tiny guest under KVM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum GuestTest {
    /// Not attempted (no device, or it could not be opened).
    NotRun,
    /// The guest ran to its `hlt` and produced the expected port write.
    Passed,
    /// Something between VM creation and the expected exits failed.
    Failed { stage: String, error: String },
}

/// Outcome of writing `IA32_ARCH_CAPABILITIES` (MSR 0x10a) on a fresh vCPU
/// with the value KVM itself advertises for it as a feature MSR.
///
/// A stock VMM does exactly this before booting a guest: QEMU reads the
/// feature MSRs from `/dev/kvm` and, when 0x10a is among them, writes the
/// advertised value to every vCPU, aborting with `failed to set MSR 0x10a`
/// when KVM refuses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum MsrTest {
    /// Not attempted (no device, or it could not be opened).
    NotRun,
    /// KVM does not report 0x10a as a feature MSR, so a VMM does not write
    /// it: nothing to test, and nothing in the way of a stock guest.
    NotAdvertised,
    /// `KVM_SET_MSRS` wrote the advertised value.
    Accepted { value: u64 },
    /// The advertised value could not be set: `KVM_SET_MSRS` wrote 0 of 1
    /// MSRs or failed, or the vCPU it needs could not be set up. `error`
    /// says which.
    Refused { value: u64, error: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvmProbe {
    pub device: DeviceState,
    /// `KVM_GET_API_VERSION`, when the device opened.
    pub api_version: Option<i32>,
    pub guest_test: GuestTest,
    /// Whether a vCPU accepts `IA32_ARCH_CAPABILITIES` (MSR 0x10a) at the
    /// value KVM advertises: what QEMU needs before it boots anything. A PVM
    /// host runs the tiny guest yet refuses this write.
    pub arch_capabilities_msr: MsrTest,
    /// The host KVM is PVM (`kvm_pvm` loaded): only PVM-enabled guest kernels run.
    pub pvm_host: bool,
    /// The CPU advertises hardware virtualization (vmx or svm).
    pub hw_virt: bool,
}

/// What the KVM findings mean for booting a stock guest kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvmVerdict {
    /// Stock guests run under KVM.
    Usable,
    /// `/dev/kvm` works, but a stock guest cannot run (e.g. PVM host).
    PresentUnusable,
    /// `/dev/kvm` exists but cannot be opened.
    NoAccess,
    /// No `/dev/kvm`.
    Absent,
}

impl KvmProbe {
    /// Usable only when the tiny guest ran, the vCPU took the advertised
    /// `IA32_ARCH_CAPABILITIES`, and the host KVM is not PVM.
    pub fn verdict(&self) -> KvmVerdict {
        match (&self.device, &self.guest_test) {
            (DeviceState::Absent, _) => KvmVerdict::Absent,
            (DeviceState::Unusable { .. }, _) => KvmVerdict::NoAccess,
            (DeviceState::Present, GuestTest::Passed)
                if !self.pvm_host
                    && !matches!(self.arch_capabilities_msr, MsrTest::Refused { .. }) =>
            {
                KvmVerdict::Usable
            }
            (DeviceState::Present, _) => KvmVerdict::PresentUnusable,
        }
    }
}

/// Whether jails enter the Landlock scope on abstract UNIX sockets and
/// signals (`LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL`,
/// Linux 6.12) where the executor makes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum JailScopeProbe {
    /// Every jail enters the scope.
    Scoped,
    /// Jails run without it; `reason` says why (the kernel, Landlock off,
    /// or a seccomp filter refusing the call).
    Unscoped { reason: String },
}

/// Presence and version of a host tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolProbe {
    pub tool: String,
    /// Resolved path of the binary, when found.
    pub path: Option<String>,
    /// First line of its version output.
    pub version: Option<String>,
    /// The tool ran and did what the check needs.
    pub works: bool,
    /// Why it does not work, when it does not.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(device: DeviceState, guest_test: GuestTest, pvm_host: bool) -> KvmProbe {
        let arch_capabilities_msr = match device {
            DeviceState::Present => MsrTest::Accepted { value: 0x69 },
            _ => MsrTest::NotRun,
        };
        KvmProbe {
            device,
            api_version: Some(12),
            guest_test,
            arch_capabilities_msr,
            pvm_host,
            hw_virt: !pvm_host,
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            probe(DeviceState::Absent, GuestTest::NotRun, false).verdict(),
            KvmVerdict::Absent
        );
        assert_eq!(
            probe(
                DeviceState::Unusable {
                    error: "EACCES".into()
                },
                GuestTest::NotRun,
                false
            )
            .verdict(),
            KvmVerdict::NoAccess
        );
        assert_eq!(
            probe(DeviceState::Present, GuestTest::Passed, false).verdict(),
            KvmVerdict::Usable
        );
        // A PVM host may run our tiny guest and still refuse a stock kernel.
        assert_eq!(
            probe(DeviceState::Present, GuestTest::Passed, true).verdict(),
            KvmVerdict::PresentUnusable
        );
        let failed = GuestTest::Failed {
            stage: "run".into(),
            error: "KVM_EXIT_INTERNAL_ERROR".into(),
        };
        assert_eq!(
            probe(DeviceState::Present, failed, false).verdict(),
            KvmVerdict::PresentUnusable
        );
        // Not advertising 0x10a leaves nothing for a VMM to write.
        let not_advertised = KvmProbe {
            arch_capabilities_msr: MsrTest::NotAdvertised,
            ..probe(DeviceState::Present, GuestTest::Passed, false)
        };
        assert_eq!(not_advertised.verdict(), KvmVerdict::Usable);
        // Refusing the advertised IA32_ARCH_CAPABILITIES is QEMU's abort,
        // whatever the tiny guest did and even without the PVM flag.
        let refused = KvmProbe {
            arch_capabilities_msr: MsrTest::Refused {
                value: 0x4000_0000_0c00_0069,
                error: "KVM_SET_MSRS wrote 0 of 1 MSRs".into(),
            },
            ..probe(DeviceState::Present, GuestTest::Passed, false)
        };
        assert_eq!(refused.verdict(), KvmVerdict::PresentUnusable);
    }

    #[test]
    fn msr_test_wire_shape() {
        let refused = MsrTest::Refused {
            value: 0x10,
            error: "KVM_SET_MSRS wrote 0 of 1 MSRs".into(),
        };
        let json = serde_json::to_string(&refused).unwrap();
        assert_eq!(
            json,
            r#"{"result":"refused","value":16,"error":"KVM_SET_MSRS wrote 0 of 1 MSRs"}"#
        );
        assert_eq!(serde_json::from_str::<MsrTest>(&json).unwrap(), refused);
        assert_eq!(
            serde_json::to_string(&MsrTest::NotAdvertised).unwrap(),
            r#"{"result":"not_advertised"}"#
        );
        assert!(
            serde_json::from_str::<MsrTest>(r#"{"result":"accepted","value":1,"extra":0}"#)
                .is_err()
        );
    }

    #[test]
    fn op_wire_shape_carries_no_paths() {
        let op = PrivOp::ProbeDevice {
            device: HostDevice::MapperControl,
        };
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
        assert!(serde_json::from_str::<PrivOp>(r#"{"op":"exec","args":{"argv":["sh"]}}"#).is_err());
    }
}
