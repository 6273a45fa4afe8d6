//! What this executor can run (`ProbeVmms`, issue #14 item 4): its own
//! KVM verdict and each VMM's binary, resolved the way a launch resolves
//! it. The daemon chooses a VM's VMM from this answer, and a launch uses
//! KVM by this verdict (unless the owner forces it), so neither fact makes
//! a round trip through the daemon.

use std::path::{Path, PathBuf};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use banger_proto::privops::{KvmVerdict, VmmAvailability};
use banger_proto::vmops::VmmKind;

use super::VmHost;

/// How long a verdict other than usable is kept before the next probe.
pub(crate) const KVM_RECHECK: Duration = Duration::from_secs(60);

impl VmHost {
    /// Whether a stock guest runs under this host's KVM for a jailed VMM,
    /// and why not when it does not: the KVM probe (a tiny guest, the
    /// MSR a stock VMM writes) must pass, and `/dev/kvm` must be a node a
    /// groupless jail uid can open (world read-write; root's probe alone
    /// would pass on a 0660 node every launch then refuses). A usable
    /// verdict is kept for the executor's life (a host does not lose KVM
    /// while it runs); any other for [`KVM_RECHECK`].
    pub(crate) fn kvm(&self) -> (KvmVerdict, Option<String>) {
        let mut cached = self.kvm.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((verdict, problem, at)) = &*cached
            && (*verdict == KvmVerdict::Usable || at.elapsed() < KVM_RECHECK)
        {
            return (*verdict, problem.clone());
        }
        let verdict = self.probes.probe_kvm().verdict();
        let (verdict, problem) = match verdict {
            KvmVerdict::Usable => {
                match super::vmm_files::open_device(Path::new("/dev/kvm"), "a jailed VMM") {
                    Ok(_) => (KvmVerdict::Usable, None),
                    Err(e) => (KvmVerdict::NoAccess, Some(e.to_string())),
                }
            }
            KvmVerdict::PresentUnusable => (
                verdict,
                Some("KVM cannot run stock guests on this host (see `banger doctor`)".into()),
            ),
            KvmVerdict::NoAccess => (verdict, Some("/dev/kvm cannot be opened".into())),
            KvmVerdict::Absent => (verdict, Some("this host has no /dev/kvm".into())),
        };
        *cached = Some((verdict, problem.clone(), Instant::now()));
        (verdict, problem)
    }

    /// [`Self::kvm`]'s verdict.
    pub(crate) fn kvm_verdict(&self) -> KvmVerdict {
        self.kvm().0
    }

    /// The binary this executor launches `vmm` with, resolved, or why it
    /// has none.
    pub(crate) fn vmm_binary(&self, vmm: VmmKind) -> Result<PathBuf, String> {
        let (configured, name, flag, key) = match vmm {
            VmmKind::Qemu => (&self.qemu_binary, "QEMU", "--qemu-bin", "vmm.qemu_bin"),
            VmmKind::Firecracker => (
                &self.firecracker_binary,
                "Firecracker",
                "--firecracker-bin",
                "vmm.firecracker_bin",
            ),
        };
        let configured = configured.as_deref().ok_or_else(|| {
            format!(
                "no {name} binary is configured (system mode: none is recorded in the install \
                 metadata; run `sudo banger system install {flag} PATH`)"
            )
        })?;
        banger_host::runner::resolve(configured.as_os_str()).ok_or_else(|| {
            format!(
                "the {name} binary {} was not found (install it, or name one that exists: \
                 `{key}` in the config in dev mode, `sudo banger system install {flag} PATH` \
                 on an installed host)",
                configured.display()
            )
        })
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
        // A PVM host runs the tiny guest yet refuses a stock one.
        let (verdict, problem) = pvm.kvm();
        assert_eq!(verdict, KvmVerdict::PresentUnusable);
        assert!(problem.unwrap().contains("cannot run stock guests"));
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
        // A healthy KVM: usable when the host's /dev/kvm lets a jail
        // uid in (0666), else refused as such, in words; either kept.
        let (verdict, problem) = host.kvm();
        let open = std::fs::metadata("/dev/kvm").is_ok_and(|m| {
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o006 == 0o006
        });
        if open {
            assert_eq!((verdict, problem), (KvmVerdict::Usable, None));
        } else {
            assert_eq!(verdict, KvmVerdict::NoAccess);
            assert!(problem.unwrap().contains("world read-write"));
        }
        assert_eq!(host.kvm_verdict(), verdict);
    }
}
