//! The doctor and what the executor says it can run (`ProbeVmms`): where
//! the executor's view of KVM or of a VMM's binary differs from the
//! doctor's own probes, the report says what `vm create` will do.

use banger_proto::privops::{VmmAvailability, VmmSupport};

use super::*;

fn support(kvm: KvmVerdict, kvm_problem: Option<&str>, qemu: Option<&str>) -> VmmSupport {
    let entry = |vmm, problem: Option<&str>| VmmAvailability {
        vmm,
        binary: problem.is_none().then(|| format!("/usr/bin/{vmm}")),
        problem: problem.map(str::to_string),
    };
    VmmSupport {
        kvm,
        kvm_problem: kvm_problem.map(str::to_string),
        vmms: vec![
            entry(VmmKind::Firecracker, None),
            entry(VmmKind::Qemu, qemu),
        ],
    }
}

/// Root's probe passes on a `/dev/kvm` the jailed VMMs cannot open (a
/// 0660 node): the `kvm` row warns with the executor's reason and the fix,
/// Firecracker is reported unusable for it, QEMU as TCG.
#[test]
fn a_kvm_node_the_jails_cannot_open_is_reported_as_such() {
    let why = "a jailed VMM runs as a jail uid without groups, so /dev/kvm must be a world read-write device node (systemd's default 0666); it has mode 660";
    let r = report(&HostFacts {
        vmm_support: Some(support(KvmVerdict::NoAccess, Some(why), None)),
        ..healthy()
    });
    let kvm = check(&r, "kvm", CheckStatus::Warn, "no_access");
    assert!(kvm.summary.contains("works for root"), "{kvm:#?}");
    assert!(kvm.summary.contains("mode 660"), "{kvm:#?}");
    assert!(
        kvm.hint.as_deref().unwrap_or_default().contains("0666"),
        "{kvm:#?}"
    );
    let fc = backend(&r, VmmKind::Firecracker);
    assert!(!fc.usable, "{fc:#?}");
    assert!(fc.reason.contains("mode 660"), "{fc:#?}");
    let qemu = backend(&r, VmmKind::Qemu);
    assert!(qemu.usable, "{qemu:#?}");
    assert_eq!(qemu.accel, Some(Accel::Tcg), "{qemu:#?}");

    // The same host where the executor agrees: nothing changes.
    let r = report(&HostFacts {
        vmm_support: Some(support(KvmVerdict::Usable, None, None)),
        ..healthy()
    });
    check(&r, "kvm", CheckStatus::Pass, "usable");
    assert!(backend(&r, VmmKind::Firecracker).usable);
    assert_eq!(backend(&r, VmmKind::Qemu).accel, Some(Accel::Kvm));
}

/// A VMM the executor has no binary for is unusable in its words, even
/// where the doctor's own probe found one on the daemon's PATH.
#[test]
fn a_vmm_the_executor_cannot_launch_is_unusable() {
    let missing = "the QEMU binary /opt/qemu was not found";
    let r = report(&HostFacts {
        vmm_support: Some(support(KvmVerdict::Usable, None, Some(missing))),
        ..healthy()
    });
    let qemu = backend(&r, VmmKind::Qemu);
    assert!(!qemu.usable, "{qemu:#?}");
    assert_eq!(qemu.reason, missing);
    assert!(backend(&r, VmmKind::Firecracker).usable);
}
