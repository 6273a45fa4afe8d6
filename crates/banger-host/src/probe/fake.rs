//! A recording fake of [`HostProbes`] for unit tests of code that is
//! injected with one (the executor, the doctor).

use std::collections::HashMap;
use std::sync::Mutex;

use banger_proto::privops::{
    DeviceProbe, DeviceState, GuestTest, HostDevice, JailScopeProbe, KvmProbe, MsrTest, ToolProbe,
};

use super::HostProbes;

/// Canned answers, and the probes that were asked for, in order
/// (`"probe_kvm"`, `"probe_device(tun)"`, `"probe_nft"`,
/// `"probe_jail_scope"`).
#[derive(Debug)]
pub struct FakeHost {
    pub kvm: KvmProbe,
    /// A device not in the map probes as [`DeviceState::Absent`].
    pub devices: HashMap<HostDevice, DeviceState>,
    pub nft: ToolProbe,
    pub jail_scope: JailScopeProbe,
    pub calls: Mutex<Vec<String>>,
}

impl FakeHost {
    /// Hardware KVM, every device present, nft working.
    pub fn healthy() -> FakeHost {
        FakeHost {
            kvm: kvm_usable(),
            devices: HostDevice::ALL
                .iter()
                .map(|d| (*d, DeviceState::Present))
                .collect(),
            nft: tool_found("nft", "/usr/sbin/nft", "nftables v1.0.6 (Lester Gooch #5)"),
            jail_scope: JailScopeProbe::Scoped,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The CI/development host of docs/lab.md: PVM KVM, no device-mapper, no
    /// vhost-vsock, tun and loop present, nft working.
    pub fn lab_host() -> FakeHost {
        FakeHost {
            kvm: kvm_pvm(),
            ..FakeHost::healthy()
        }
        .with_device(HostDevice::MapperControl, DeviceState::Absent)
        .with_device(HostDevice::VhostVsock, DeviceState::Absent)
    }

    pub fn with_kvm(mut self, kvm: KvmProbe) -> FakeHost {
        self.kvm = kvm;
        self
    }

    pub fn with_device(mut self, device: HostDevice, state: DeviceState) -> FakeHost {
        self.devices.insert(device, state);
        self
    }

    pub fn with_nft(mut self, nft: ToolProbe) -> FakeHost {
        self.nft = nft;
        self
    }

    pub fn with_jail_scope(mut self, scope: JailScopeProbe) -> FakeHost {
        self.jail_scope = scope;
        self
    }

    /// The recorded calls so far.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, call: String) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }
}

impl HostProbes for FakeHost {
    fn probe_kvm(&self) -> KvmProbe {
        self.record("probe_kvm".into());
        self.kvm.clone()
    }

    fn probe_device(&self, device: HostDevice) -> DeviceProbe {
        self.record(format!("probe_device({})", device_name(device)));
        DeviceProbe {
            device,
            state: self
                .devices
                .get(&device)
                .cloned()
                .unwrap_or(DeviceState::Absent),
        }
    }

    fn probe_nft(&self) -> ToolProbe {
        self.record("probe_nft".into());
        self.nft.clone()
    }

    fn probe_jail_scope(&self) -> JailScopeProbe {
        self.record("probe_jail_scope".into());
        self.jail_scope.clone()
    }
}

fn device_name(device: HostDevice) -> &'static str {
    match device {
        HostDevice::Tun => "tun",
        HostDevice::VhostVsock => "vhost_vsock",
        HostDevice::LoopControl => "loop_control",
        HostDevice::MapperControl => "mapper_control",
    }
}

/// Hardware KVM that ran the tiny guest and took its own
/// `IA32_ARCH_CAPABILITIES`.
pub fn kvm_usable() -> KvmProbe {
    KvmProbe {
        device: DeviceState::Present,
        api_version: Some(12),
        guest_test: GuestTest::Passed,
        arch_capabilities_msr: MsrTest::Accepted { value: 0x0c00_0069 },
        pvm_host: false,
        hw_virt: true,
    }
}

/// A PVM host as measured on the lab hosts: the tiny guest runs, but the
/// vCPU refuses the `IA32_ARCH_CAPABILITIES` KVM advertises.
pub fn kvm_pvm() -> KvmProbe {
    KvmProbe {
        device: DeviceState::Present,
        api_version: Some(12),
        guest_test: GuestTest::Passed,
        arch_capabilities_msr: MsrTest::Refused {
            value: 0x4000_0000_0c00_0069,
            error: "KVM_SET_MSRS wrote 0 of 1 MSRs".into(),
        },
        pvm_host: true,
        hw_virt: false,
    }
}

/// No `/dev/kvm`.
pub fn kvm_absent() -> KvmProbe {
    KvmProbe {
        device: DeviceState::Absent,
        api_version: None,
        guest_test: GuestTest::NotRun,
        arch_capabilities_msr: MsrTest::NotRun,
        pvm_host: false,
        hw_virt: false,
    }
}

/// A tool that was found and ran.
pub fn tool_found(tool: &str, path: &str, version: &str) -> ToolProbe {
    ToolProbe {
        tool: tool.into(),
        path: Some(path.into()),
        version: Some(version.into()),
        works: true,
        error: None,
    }
}

/// A tool that is not installed.
pub fn tool_missing(tool: &str, program: &str) -> ToolProbe {
    ToolProbe {
        tool: tool.into(),
        path: None,
        version: None,
        works: false,
        error: Some(format!("{program} not found on PATH")),
    }
}

/// A tool that is installed but failed.
pub fn tool_broken(tool: &str, path: &str, error: &str) -> ToolProbe {
    ToolProbe {
        tool: tool.into(),
        path: Some(path.into()),
        version: None,
        works: false,
        error: Some(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_proto::privops::KvmVerdict;

    #[test]
    fn records_calls_and_answers_from_the_canned_facts() {
        let host = FakeHost::lab_host();
        assert_eq!(host.probe_kvm().verdict(), KvmVerdict::PresentUnusable);
        assert_eq!(
            host.probe_device(HostDevice::Tun).state,
            DeviceState::Present
        );
        assert_eq!(
            host.probe_device(HostDevice::MapperControl).state,
            DeviceState::Absent
        );
        assert!(host.probe_nft().works);
        assert_eq!(
            host.calls(),
            [
                "probe_kvm",
                "probe_device(tun)",
                "probe_device(mapper_control)",
                "probe_nft"
            ]
        );
    }

    #[test]
    fn usable_as_a_trait_object() {
        let host: Box<dyn HostProbes> = Box::new(FakeHost::healthy().with_kvm(kvm_absent()));
        assert_eq!(host.probe_kvm().verdict(), KvmVerdict::Absent);
    }
}
