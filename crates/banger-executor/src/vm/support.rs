//! What this executor can run (`ProbeVmms`, issue #14 item 4): its own
//! KVM verdict and each VMM's binary, resolved the way a launch resolves
//! it. The daemon chooses a VM's VMM from this answer, and a launch uses
//! KVM by this verdict (unless the owner forces it), so neither fact makes
//! a round trip through the daemon.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use banger_proto::privops::{KvmVerdict, VmmAvailability};
use banger_proto::vmops::VmmKind;

use super::VmHost;

impl VmHost {
    /// Whether a stock guest runs under this host's KVM. A passing probe
    /// is kept (a host does not lose KVM while the executor runs); any
    /// other verdict is probed again next time (a node made usable later,
    /// a module loaded).
    pub(crate) fn kvm_verdict(&self) -> KvmVerdict {
        if self.kvm_usable.load(Ordering::Relaxed) {
            return KvmVerdict::Usable;
        }
        let verdict = self.probes.probe_kvm().verdict();
        if verdict == KvmVerdict::Usable {
            self.kvm_usable.store(true, Ordering::Relaxed);
        }
        verdict
    }

    /// The binary this executor launches `vmm` with, resolved, or why it
    /// has none.
    pub(crate) fn vmm_binary(&self, vmm: VmmKind) -> Result<PathBuf, String> {
        let (configured, name, flag) = match vmm {
            VmmKind::Qemu => (&self.qemu_binary, "QEMU", "--qemu-bin"),
            VmmKind::Firecracker => (&self.firecracker_binary, "Firecracker", "--firecracker-bin"),
        };
        let configured = configured.as_deref().ok_or_else(|| {
            format!(
                "no {name} binary is configured (system mode: none is recorded in the install \
                 metadata; run `sudo banger system install {flag} PATH`)"
            )
        })?;
        banger_host::runner::resolve(configured.as_os_str())
            .ok_or_else(|| format!("the {name} binary {} was not found", configured.display()))
    }

    /// Every VMM kind with its binary or the reason it has none.
    pub(crate) fn vmm_availability(&self) -> Vec<VmmAvailability> {
        VmmKind::ALL
            .iter()
            .copied()
            .map(|vmm| match self.vmm_binary(vmm) {
                Ok(binary) => VmmAvailability {
                    vmm,
                    binary: Some(binary.display().to_string()),
                    problem: None,
                },
                Err(problem) => VmmAvailability {
                    vmm,
                    binary: None,
                    problem: Some(problem),
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use banger_host::net::fake::FakeNet;
    use banger_host::probe::fake::FakeHost;
    use banger_proto::privops::KvmVerdict;
    use banger_proto::vmops::VmmKind;

    use super::super::{VmHost, VmHostConfig};

    #[test]
    fn each_vmm_is_reported_with_its_binary_or_why_it_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = VmHostConfig::for_tests(dir.path());
        cfg.qemu_binary = Some("/bin/true".into());
        cfg.firecracker_binary = Some(dir.path().join("no-firecracker"));
        let host = |cfg, probes: FakeHost| {
            let journal = Arc::new(crate::journal::JournalFile::new(dir.path().join("j")));
            VmHost::new(cfg, journal, Arc::new(probes), Arc::new(FakeNet::new()))
        };
        let pvm = host(cfg.clone(), FakeHost::lab_host());
        // A PVM host runs the tiny guest yet refuses a stock one: not
        // usable, and asked again each time.
        assert_eq!(pvm.kvm_verdict(), KvmVerdict::PresentUnusable);
        assert_eq!(pvm.kvm_verdict(), KvmVerdict::PresentUnusable);
        let host = host(cfg, FakeHost::healthy());
        let all = host.vmm_availability();
        assert_eq!(all.len(), 2);
        let qemu = all.iter().find(|v| v.vmm == VmmKind::Qemu).unwrap();
        assert_eq!(qemu.binary.as_deref(), Some("/bin/true"));
        assert_eq!(qemu.problem, None);
        let fc = all.iter().find(|v| v.vmm == VmmKind::Firecracker).unwrap();
        assert_eq!(fc.binary, None);
        assert!(
            fc.problem
                .as_deref()
                .unwrap()
                .contains("no-firecracker was not found"),
            "{fc:?}"
        );
        // A healthy KVM: usable, and kept.
        assert_eq!(host.kvm_verdict(), KvmVerdict::Usable);
        assert_eq!(host.kvm_verdict(), KvmVerdict::Usable);
    }
}
