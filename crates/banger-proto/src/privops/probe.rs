//! What the probe operations report: host devices, KVM, tools, jail scope.

use serde::{Deserialize, Serialize};

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

/// What an executor can run ([`super::ProbeVmms`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmSupport {
    /// Whether a stock guest runs under this host's KVM, for the VMMs this
    /// executor jails: its own probe passed and `/dev/kvm` is a node their
    /// groupless uids can open.
    pub kvm: KvmVerdict,
    /// Why KVM is not usable, in words, when it is not.
    #[serde(default)]
    pub kvm_problem: Option<String>,
    /// Every VMM kind, once.
    pub vmms: Vec<VmmAvailability>,
}

/// One VMM as an executor would launch it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmAvailability {
    pub vmm: crate::vmops::VmmKind,
    /// The binary it launches, resolved, when it has one.
    pub binary: Option<String>,
    /// Why it cannot launch this VMM at all (no binary configured, not
    /// found, no VM operations here); `None` when it can. KVM is not part
    /// of it: [`VmmSupport::kvm`] says that, for the VMMs that need it.
    pub problem: Option<String>,
}

impl VmmSupport {
    /// The entry of `vmm`.
    pub fn of(&self, vmm: crate::vmops::VmmKind) -> Option<&VmmAvailability> {
        self.vmms.iter().find(|v| v.vmm == vmm)
    }

    /// Why this executor cannot run `vmm`: no binary, or, for Firecracker,
    /// no KVM a jailed VMM can use (unless `forced`: the owner's
    /// `diagnostics.assume_kvm_usable`). `None`: it can.
    pub fn problem(&self, vmm: crate::vmops::VmmKind, forced: bool) -> Option<String> {
        let Some(entry) = self.of(vmm) else {
            return Some(format!("the executor does not report {vmm}"));
        };
        if let Some(p) = &entry.problem {
            return Some(p.clone());
        }
        let kvm = forced || self.kvm == KvmVerdict::Usable;
        (vmm == crate::vmops::VmmKind::Firecracker && !kvm).then(|| {
            self.kvm_problem.clone().unwrap_or_else(|| {
                "KVM cannot run stock guests on this host (see `banger doctor`)".to_string()
            })
        })
    }
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
}
