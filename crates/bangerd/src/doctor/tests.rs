use banger_host::devguard::GuardState;
use std::path::PathBuf;

use banger_host::probe::fake::{
    kvm_absent, kvm_pvm, kvm_usable, tool_broken, tool_found, tool_missing,
};
use banger_host::probe::{
    CgroupMode, CgroupProbe, ReflinkProbe, ReflinkSupport, ResolvedProbe, ResolvedSocket,
};
use banger_proto::doctor::{Accel, BackendSupport, CheckStatus, DoctorReport, VmmKind};
use banger_proto::privops::{
    DeviceProbe, DeviceState, GuestTest, HostDevice, JailScopeProbe, KvmProbe, MsrTest,
};

use super::*;

fn devices(absent: &[HostDevice]) -> Vec<DeviceProbe> {
    HostDevice::ALL
        .iter()
        .map(|&device| DeviceProbe {
            device,
            state: if absent.contains(&device) {
                DeviceState::Absent
            } else {
                DeviceState::Present
            },
        })
        .collect()
}

fn mkfs(version: &str) -> ToolProbe {
    tool_found("mkfs.ext4", "/usr/sbin/mkfs.ext4", version)
}

fn resolved(socket: ResolvedSocket, stub: bool) -> ResolvedProbe {
    let ns = if stub { "127.0.0.53" } else { "10.255.255.53" };
    ResolvedProbe {
        socket_path: "/run/systemd/resolve/io.systemd.Resolve".into(),
        socket,
        stub_in_resolv_conf: stub,
        nameservers: vec![ns.into()],
        resolv_conf_error: None,
    }
}

fn cgroup(mode: CgroupMode) -> CgroupProbe {
    let (mount, controllers) = match mode {
        CgroupMode::Unified => (Some("/sys/fs/cgroup"), vec!["cpu", "memory", "pids"]),
        CgroupMode::Hybrid => (Some("/sys/fs/cgroup/unified"), vec!["hugetlb"]),
        _ => (None, vec![]),
    };
    CgroupProbe {
        mode,
        cgroup2_mount: mount.map(PathBuf::from),
        controllers: controllers.into_iter().map(String::from).collect(),
        error: (mode == CgroupMode::Missing)
            .then(|| "statfs /sys/fs/cgroup: No such file or directory".into()),
    }
}

fn reflink(support: ReflinkSupport, fs: &str) -> ReflinkProbe {
    ReflinkProbe {
        dir: "/var/lib/banger".into(),
        fs_type: Some(fs.into()),
        support,
    }
}

fn helper() -> Channel {
    Channel::Helper {
        socket: "/run/banger/root.sock".into(),
        version: banger_proto::BANGER_VERSION.into(),
    }
}

/// Hardware KVM, every device, every tool, cgroup v2, resolved, reflink.
fn healthy() -> HostFacts {
    HostFacts {
        kvm: kvm_usable(),
        devices: devices(&[]),
        nft: tool_found("nft", "/usr/sbin/nft", "nftables v1.0.6 (Lester Gooch #5)"),
        mkfs_ext4: mkfs("mke2fs 1.47.0 (5-Feb-2023)"),
        e2fsck: tool_found("e2fsck", "/usr/sbin/e2fsck", "e2fsck 1.47.0 (5-Feb-2023)"),
        firecracker: tool_found(
            "firecracker",
            "/usr/local/bin/firecracker",
            "Firecracker v1.16.1",
        ),
        qemu: tool_found(
            "qemu",
            "/usr/bin/qemu-system-x86_64",
            "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)",
        ),
        cgroup_v2: cgroup(CgroupMode::Unified),
        resolved: resolved(ResolvedSocket::Accepting, true),
        reflink: reflink(ReflinkSupport::Supported, "xfs"),
        dmsetup: tool_found(
            "dmsetup",
            "/usr/sbin/dmsetup",
            "Library version:   1.02.185",
        ),
        privileged_channel: helper(),
        ip_forward: Some(true),
        jail_scope: Some(JailScopeProbe::Scoped),
        host_guard: HostGuard::System {
            udev_rule: GuardState::Current,
            lvm_filter: Some(GuardState::Current),
        },
        vmm_support: None,
    }
}

/// The CI/development host of docs/lab.md (as `banger doctor` saw it there).
fn lab() -> HostFacts {
    HostFacts {
        kvm: kvm_pvm(),
        devices: devices(&[HostDevice::MapperControl, HostDevice::VhostVsock]),
        firecracker: tool_missing("firecracker", "firecracker"),
        cgroup_v2: cgroup(CgroupMode::Hybrid),
        resolved: resolved(ResolvedSocket::Absent, false),
        reflink: reflink(
            ReflinkSupport::Unsupported {
                error: "FICLONE: Operation not supported (os error 95)".into(),
            },
            "ext4",
        ),
        privileged_channel: Channel::InProcess,
        ip_forward: Some(true),
        host_guard: HostGuard::DevMode,
        ..healthy()
    }
}

/// Assert one check's status and state; return it for further looks.
#[track_caller]
fn check(report: &DoctorReport, id: &str, status: CheckStatus, state: &str) -> Check {
    let c = report
        .check(id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#?}"));
    assert_eq!(
        (c.status, c.state.as_str()),
        (status, state),
        "{id}: {c:#?}"
    );
    c.clone()
}

#[track_caller]
fn backend(report: &DoctorReport, vmm: VmmKind) -> &BackendSupport {
    report
        .backends
        .iter()
        .find(|b| b.vmm == vmm)
        .expect("backend listed")
}

/// Shape every report must have, whatever the facts.
#[track_caller]
fn well_formed(report: &DoctorReport) {
    let listed: Vec<&str> = report.checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(listed, ids::ALL);
    for c in &report.checks {
        assert!(!c.summary.is_empty() && !c.summary.contains('\n'), "{c:?}");
        assert!(
            !c.state.is_empty()
                && c.state
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '_'),
            "{c:?}"
        );
        match (&c.status, &c.hint) {
            (CheckStatus::Pass, None) => {}
            (CheckStatus::Pass, Some(_)) => panic!("a pass carries no hint: {c:?}"),
            (_, Some(h)) => assert!(!h.is_empty() && !h.contains('\n'), "{c:?}"),
            (_, None) => panic!("a warn or fail needs a hint: {c:?}"),
        }
    }
    let vmms: Vec<VmmKind> = report.backends.iter().map(|b| b.vmm).collect();
    assert_eq!(vmms, [VmmKind::Firecracker, VmmKind::Qemu]);
    for b in &report.backends {
        assert_eq!(b.usable, b.accel.is_some(), "{b:?}");
        assert!(!b.reason.is_empty());
    }
    let any = report.backends.iter().any(|b| b.usable);
    assert_eq!(
        report.check(ids::VMM_BACKEND).unwrap().status == CheckStatus::Pass,
        any
    );
}

fn report(f: &HostFacts) -> DoctorReport {
    let r = assemble(f);
    well_formed(&r);
    r
}

#[test]
fn healthy_host_passes_everything() {
    let r = report(&healthy());
    assert_eq!(r.overall(), CheckStatus::Pass, "{r:#?}");
    check(&r, "kvm", CheckStatus::Pass, "usable");
    check(&r, "nft", CheckStatus::Pass, "found");
    let e2fs = check(&r, "e2fsprogs", CheckStatus::Pass, "found");
    assert!(e2fs.summary.contains("1.47"), "{}", e2fs.summary);
    let fc = backend(&r, VmmKind::Firecracker);
    assert!(fc.usable && fc.accel == Some(Accel::Kvm), "{fc:?}");
    assert!(fc.reason.contains("Firecracker v1.16.1"), "{}", fc.reason);
    let q = backend(&r, VmmKind::Qemu);
    assert!(q.usable && q.accel == Some(Accel::Kvm), "{q:?}");
    check(&r, "vmm_backend", CheckStatus::Pass, "available");
}

#[test]
fn lab_host_is_pvm_with_qemu_tcg() {
    let r = report(&lab());
    let kvm = check(&r, "kvm", CheckStatus::Warn, "present_unusable");
    assert_eq!(
        kvm.summary,
        "/dev/kvm works but the host KVM is PVM: only PVM-enabled guest kernels run, and KVM \
         refuses IA32_ARCH_CAPABILITIES (MSR 0x10a) at the value it advertises \
         (0x400000000c000069: KVM_SET_MSRS wrote 0 of 1 MSRs), so QEMU -enable-kvm aborts; \
         stock guests need QEMU TCG"
    );
    check(&r, "privileged_helper", CheckStatus::Pass, "in_process");
    check(&r, "tun", CheckStatus::Pass, "present");
    check(&r, "loop_control", CheckStatus::Pass, "present");
    let dm = check(&r, "device_mapper", CheckStatus::Warn, "absent");
    assert!(dm.summary.contains("sparse copies"), "{}", dm.summary);
    let vsock = check(&r, "vhost_vsock", CheckStatus::Warn, "absent");
    assert!(
        vsock.summary.contains("Firecracker's vsock is AF_UNIX"),
        "{}",
        vsock.summary
    );
    check(&r, "firecracker", CheckStatus::Warn, "missing");
    let qemu = check(&r, "qemu", CheckStatus::Pass, "found");
    assert!(
        qemu.summary.contains("7.2.19") && qemu.summary.contains("TCG"),
        "{}",
        qemu.summary
    );
    check(&r, "cgroup_v2", CheckStatus::Warn, "hybrid");
    check(&r, "systemd_resolved", CheckStatus::Warn, "absent");
    check(&r, "reflink", CheckStatus::Warn, "unsupported");
    check(&r, "vmm_backend", CheckStatus::Pass, "available");

    let fc = backend(&r, VmmKind::Firecracker);
    assert!(!fc.usable && fc.accel.is_none(), "{fc:?}");
    assert!(
        fc.reason.contains("PVM") && fc.reason.contains("not found"),
        "{}",
        fc.reason
    );
    let q = backend(&r, VmmKind::Qemu);
    assert!(q.usable && q.accel == Some(Accel::Tcg), "{q:?}");
    assert!(q.reason.contains("TCG"), "{}", q.reason);
    assert_eq!(r.overall(), CheckStatus::Warn);
}

#[test]
fn missing_tun_or_loop_fails() {
    let r = report(&HostFacts {
        devices: devices(&[HostDevice::Tun]),
        ..healthy()
    });
    let tun = check(&r, "tun", CheckStatus::Fail, "absent");
    assert!(tun.hint.as_deref().unwrap().contains("modprobe tun"));
    assert_eq!(r.overall(), CheckStatus::Fail);

    let r = report(&HostFacts {
        devices: devices(&[HostDevice::LoopControl]),
        ..healthy()
    });
    check(&r, "loop_control", CheckStatus::Fail, "absent");
    check(&r, "tun", CheckStatus::Pass, "present");
}

#[test]
fn unusable_device_carries_the_os_error() {
    let mut f = healthy();
    f.devices[0] = DeviceProbe {
        device: HostDevice::Tun,
        state: DeviceState::Unusable {
            error: "opening /dev/net/tun: Permission denied (os error 13)".into(),
        },
    };
    let r = report(&f);
    let tun = check(&r, "tun", CheckStatus::Fail, "unusable");
    assert!(tun.summary.contains("Permission denied"), "{}", tun.summary);
}

#[test]
fn unprobed_device_is_unknown() {
    let mut f = healthy();
    f.devices.retain(|d| d.device != HostDevice::VhostVsock);
    check(&report(&f), "vhost_vsock", CheckStatus::Warn, "unknown");
}

#[test]
fn device_mapper_absent_mentions_reflink_when_it_works() {
    let r = report(&HostFacts {
        devices: devices(&[HostDevice::MapperControl]),
        ..healthy()
    });
    let dm = check(&r, "device_mapper", CheckStatus::Warn, "absent");
    assert!(dm.summary.contains("reflink copies"), "{}", dm.summary);
}

#[test]
fn nft_missing_or_broken_fails() {
    let r = report(&HostFacts {
        nft: tool_missing("nft", "nft"),
        ..healthy()
    });
    let nft = check(&r, "nft", CheckStatus::Fail, "missing");
    assert!(
        nft.summary.starts_with("nft not found on PATH"),
        "{}",
        nft.summary
    );
    assert_eq!(
        nft.hint.as_deref(),
        Some("install nftables: `apt-get install nftables`")
    );

    let broken = tool_broken(
        "nft",
        "/usr/sbin/nft",
        "`/usr/sbin/nft list tables` failed with exit status: 1: Operation not supported",
    );
    let r = report(&HostFacts {
        nft: broken,
        ..healthy()
    });
    let nft = check(&r, "nft", CheckStatus::Fail, "broken");
    assert!(
        nft.summary.contains("Operation not supported"),
        "{}",
        nft.summary
    );
}

#[test]
fn e2fsprogs_versions() {
    let with = |line: &str| {
        report(&HostFacts {
            mkfs_ext4: mkfs(line),
            ..healthy()
        })
    };
    check(
        &with("mke2fs 1.43 (17-May-2016)"),
        "e2fsprogs",
        CheckStatus::Pass,
        "found",
    );
    check(
        &with("mke2fs 1.43-WIP (18-May-2015)"),
        "e2fsprogs",
        CheckStatus::Pass,
        "found",
    );
    let old = with("mke2fs 1.42.9 (28-Dec-2013)");
    let c = check(&old, "e2fsprogs", CheckStatus::Fail, "too_old");
    assert!(
        c.summary.contains("1.42") && c.summary.contains("mkfs.ext4 -d"),
        "{}",
        c.summary
    );
    check(
        &with("mke2fs (garbled)"),
        "e2fsprogs",
        CheckStatus::Warn,
        "unknown_version",
    );

    let r = report(&HostFacts {
        e2fsck: tool_missing("e2fsck", "e2fsck"),
        ..healthy()
    });
    let c = check(&r, "e2fsprogs", CheckStatus::Fail, "missing");
    assert_eq!(c.summary, "e2fsck not found on PATH");
    let r = report(&HostFacts {
        mkfs_ext4: tool_missing("mkfs.ext4", "mkfs.ext4"),
        e2fsck: tool_missing("e2fsck", "e2fsck"),
        ..healthy()
    });
    assert_eq!(
        check(&r, "e2fsprogs", CheckStatus::Fail, "missing").summary,
        "mkfs.ext4 and e2fsck not found on PATH"
    );
    let r = report(&HostFacts {
        e2fsck: tool_broken("e2fsck", "/usr/sbin/e2fsck", "killed"),
        ..healthy()
    });
    check(&r, "e2fsprogs", CheckStatus::Fail, "broken");
}

#[test]
fn version_parsing() {
    let cases = [
        ("mke2fs 1.47.0 (5-Feb-2023)", Some((1, 47))),
        ("mke2fs 1.43-WIP (18-May-2015)", Some((1, 43))),
        ("nftables v1.0.6 (Lester Gooch #5)", Some((1, 0))),
        ("Firecracker v1.16.1", Some((1, 16))),
        (
            "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)",
            Some((7, 2)),
        ),
        ("no numbers here", None),
        ("", None),
    ];
    for (line, want) in cases {
        assert_eq!(parse_version(line), want, "{line}");
    }
}

#[test]
fn pvm_without_qemu_has_no_backend() {
    let r = report(&HostFacts {
        qemu: tool_missing("qemu", "qemu-system-x86_64"),
        ..lab()
    });
    let kvm = check(&r, "kvm", CheckStatus::Fail, "present_unusable");
    assert!(
        kvm.summary
            .ends_with("stock guests need QEMU TCG, which is not available"),
        "{}",
        kvm.summary
    );
    assert!(kvm.hint.unwrap().starts_with("install QEMU for TCG"));
    check(&r, "qemu", CheckStatus::Warn, "missing");
    let none = check(&r, "vmm_backend", CheckStatus::Fail, "none");
    assert!(
        none.hint
            .as_deref()
            .unwrap()
            .contains("apt-get install qemu-system-x86")
    );
    assert!(r.backends.iter().all(|b| !b.usable));
    assert_eq!(r.overall(), CheckStatus::Fail);
}

#[test]
fn broken_qemu_alone_is_no_backend() {
    let r = report(&HostFacts {
        qemu: tool_broken("qemu", "/usr/bin/qemu-system-x86_64", "exit status: 1"),
        ..lab()
    });
    check(&r, "qemu", CheckStatus::Warn, "broken");
    let none = check(&r, "vmm_backend", CheckStatus::Fail, "none");
    assert!(none.hint.as_deref().unwrap().contains("`qemu` check"));
}

#[test]
fn firecracker_alone_with_kvm_is_enough() {
    let r = report(&HostFacts {
        qemu: tool_missing("qemu", "qemu-system-x86_64"),
        ..healthy()
    });
    check(&r, "qemu", CheckStatus::Warn, "missing");
    check(&r, "kvm", CheckStatus::Pass, "usable");
    let ok = check(&r, "vmm_backend", CheckStatus::Pass, "available");
    assert_eq!(ok.summary, "usable VMM backends: firecracker (kvm)");
}

#[test]
fn firecracker_without_usable_kvm_warns() {
    let r = report(&HostFacts {
        kvm: kvm_pvm(),
        ..healthy()
    });
    let fc = check(&r, "firecracker", CheckStatus::Warn, "found");
    assert!(
        fc.summary.contains("cannot run guests here"),
        "{}",
        fc.summary
    );
    assert!(!backend(&r, VmmKind::Firecracker).usable);
    check(&r, "vmm_backend", CheckStatus::Pass, "available");
}

#[test]
fn kvm_states() {
    let with = |kvm: KvmProbe| report(&HostFacts { kvm, ..healthy() });

    let absent = with(KvmProbe {
        hw_virt: true,
        ..kvm_absent()
    });
    let c = check(&absent, "kvm", CheckStatus::Warn, "absent");
    assert!(c.hint.as_deref().unwrap().contains("modprobe kvm_intel"));
    let c = check(&with(kvm_absent()), "kvm", CheckStatus::Warn, "absent");
    assert!(c.hint.as_deref().unwrap().contains("VT-x/AMD-V"));

    let no_access = KvmProbe {
        device: DeviceState::Unusable {
            error: "opening /dev/kvm: Permission denied (os error 13)".into(),
        },
        ..kvm_absent()
    };
    let c = check(&with(no_access), "kvm", CheckStatus::Warn, "no_access");
    assert!(
        c.summary
            .starts_with("/dev/kvm cannot be opened (opening /dev/kvm: Permission denied"),
        "{}",
        c.summary
    );

    let failed = KvmProbe {
        guest_test: GuestTest::Failed {
            stage: "run".into(),
            error: "KVM_EXIT_INTERNAL_ERROR suberror 1".into(),
        },
        ..kvm_usable()
    };
    let r = with(failed);
    let c = check(&r, "kvm", CheckStatus::Warn, "present_unusable");
    assert!(
        c.summary
            .contains("a test guest failed at run (KVM_EXIT_INTERNAL_ERROR suberror 1)"),
        "{}",
        c.summary
    );
    assert_eq!(backend(&r, VmmKind::Qemu).accel, Some(Accel::Tcg));

    // Not PVM, the tiny guest ran, yet the vCPU refuses the advertised
    // IA32_ARCH_CAPABILITIES: QEMU -enable-kvm would abort.
    let refused = KvmProbe {
        arch_capabilities_msr: MsrTest::Refused {
            value: 0x69,
            error: "KVM_SET_MSRS wrote 0 of 1 MSRs".into(),
        },
        ..kvm_usable()
    };
    let r = with(refused);
    let c = check(&r, "kvm", CheckStatus::Warn, "present_unusable");
    assert_eq!(
        c.summary,
        "/dev/kvm works and ran a test guest, but KVM refuses IA32_ARCH_CAPABILITIES \
         (MSR 0x10a) at the value it advertises (0x69: KVM_SET_MSRS wrote 0 of 1 MSRs), \
         so QEMU -enable-kvm aborts; stock guests need QEMU TCG"
    );
    assert!(c.hint.as_deref().unwrap().contains("lsmod"), "{c:?}");
    assert_eq!(backend(&r, VmmKind::Qemu).accel, Some(Accel::Tcg));
    let fc = backend(&r, VmmKind::Firecracker);
    assert!(!fc.usable && fc.reason.contains("MSR 0x10a"), "{fc:?}");

    // Not advertising 0x10a leaves QEMU nothing to write: still usable.
    let not_advertised = KvmProbe {
        arch_capabilities_msr: MsrTest::NotAdvertised,
        ..kvm_usable()
    };
    check(&with(not_advertised), "kvm", CheckStatus::Pass, "usable");
}

#[test]
fn unreachable_helper_leaves_privileged_checks_unknown() {
    let f = HostFacts {
        privileged_channel: Channel::HelperUnreachable {
            socket: "/run/banger/root.sock".into(),
            error: "connecting: No such file or directory (os error 2)".into(),
        },
        // Placeholders: must be ignored.
        kvm: kvm_absent(),
        devices: Vec::new(),
        nft: tool_missing("nft", "nft"),
        ..healthy()
    };
    let r = report(&f);
    let h = check(&r, "privileged_helper", CheckStatus::Fail, "unreachable");
    assert!(
        h.summary.contains("/run/banger/root.sock") && h.summary.contains("os error 2"),
        "{}",
        h.summary
    );
    for id in [
        "kvm",
        "tun",
        "vhost_vsock",
        "loop_control",
        "device_mapper",
        "nft",
    ] {
        check(&r, id, CheckStatus::Warn, "unknown");
    }
    assert!(
        r.backends
            .iter()
            .all(|b| !b.usable && b.reason.contains("unreachable"))
    );
    let none = check(&r, "vmm_backend", CheckStatus::Fail, "none");
    assert!(none.hint.as_deref().unwrap().contains("privileged_helper"));
    check(&r, "qemu", CheckStatus::Pass, "found");
}

#[test]
fn helper_version_mismatch_warns() {
    let f = HostFacts {
        privileged_channel: Channel::Helper {
            socket: "/run/banger/root.sock".into(),
            version: "0.0.1".into(),
        },
        ..healthy()
    };
    check(
        &report(&f),
        "privileged_helper",
        CheckStatus::Warn,
        "version_mismatch",
    );
    check(
        &report(&healthy()),
        "privileged_helper",
        CheckStatus::Pass,
        "connected",
    );
}

#[test]
fn cgroup_states() {
    for (mode, status, state) in [
        (CgroupMode::Unified, CheckStatus::Pass, "unified"),
        (CgroupMode::Hybrid, CheckStatus::Warn, "hybrid"),
        (CgroupMode::Legacy, CheckStatus::Warn, "legacy"),
        (CgroupMode::Missing, CheckStatus::Warn, "missing"),
    ] {
        let r = report(&HostFacts {
            cgroup_v2: cgroup(mode),
            ..healthy()
        });
        check(&r, "cgroup_v2", status, state);
        let row = r.checks.iter().find(|c| c.id == "cgroup_v2").unwrap();
        let limits = row.summary.contains("per-VM limits are unavailable");
        assert_eq!(limits, mode != CgroupMode::Unified, "{}", row.summary);
    }
    // cgroup v2 without the controllers per-VM limits need.
    let mut c = cgroup(CgroupMode::Unified);
    c.controllers = vec!["cpu".into(), "io".into()];
    let r = report(&HostFacts {
        cgroup_v2: c,
        ..healthy()
    });
    check(&r, "cgroup_v2", CheckStatus::Warn, "unified_no_limits");
    let row = r.checks.iter().find(|c| c.id == "cgroup_v2").unwrap();
    assert!(
        row.summary
            .contains("per-VM limits are unavailable (no memory/pids controller)"),
        "{}",
        row.summary
    );
}

#[test]
fn resolved_states() {
    for (socket, stub, status, state) in [
        (
            ResolvedSocket::Accepting,
            true,
            CheckStatus::Pass,
            "running",
        ),
        (
            ResolvedSocket::Accepting,
            false,
            CheckStatus::Warn,
            "running_bypassed",
        ),
        (
            ResolvedSocket::Unreachable {
                error: "Connection refused".into(),
            },
            true,
            CheckStatus::Warn,
            "unreachable",
        ),
        (ResolvedSocket::Absent, false, CheckStatus::Warn, "absent"),
    ] {
        let r = report(&HostFacts {
            resolved: resolved(socket, stub),
            ..healthy()
        });
        check(&r, "systemd_resolved", status, state);
    }
    let r = report(&lab());
    let c = check(&r, "systemd_resolved", CheckStatus::Warn, "absent");
    assert!(c.hint.as_deref().unwrap().contains("banger's DNS"), "{c:?}");
    assert!(c.summary.contains("10.255.255.53"), "{}", c.summary);
}

#[test]
fn reflink_states() {
    let failed = ReflinkSupport::Failed {
        stage: "create".into(),
        error: "Permission denied (os error 13)".into(),
    };
    let r = report(&HostFacts {
        reflink: reflink(failed, "ext4"),
        ..healthy()
    });
    let c = check(&r, "reflink", CheckStatus::Warn, "error");
    assert!(
        c.summary.contains("failed at create: Permission denied"),
        "{}",
        c.summary
    );
    let c = check(&report(&lab()), "reflink", CheckStatus::Warn, "unsupported");
    assert!(
        c.summary.contains("ext4") && c.summary.contains("sparse"),
        "{}",
        c.summary
    );
    let c = check(
        &report(&healthy()),
        "reflink",
        CheckStatus::Pass,
        "supported",
    );
    assert_eq!(
        c.summary,
        "reflink (FICLONE) works in /var/lib/banger (xfs)"
    );
}

#[test]
fn combine_takes_every_unprivileged_fact() {
    let h = healthy();
    let unpriv = UnprivilegedFacts {
        mkfs_ext4: h.mkfs_ext4.clone(),
        e2fsck: h.e2fsck.clone(),
        firecracker: h.firecracker.clone(),
        qemu: h.qemu.clone(),
        cgroup_v2: h.cgroup_v2.clone(),
        resolved: h.resolved.clone(),
        reflink: h.reflink.clone(),
        dmsetup: h.dmsetup.clone(),
        host_guard: h.host_guard.clone(),
    };
    let f = HostFacts::combine(
        helper(),
        super::PrivilegedFacts {
            kvm: h.kvm.clone(),
            devices: h.devices.clone(),
            nft: h.nft.clone(),
            ip_forward: h.ip_forward,
            jail_scope: h.jail_scope.clone(),
            vmm_support: h.vmm_support.clone(),
        },
        unpriv,
    );
    assert_eq!(assemble(&f), assemble(&h));
}

#[test]
fn ip_forward_states() {
    let check = |v: Option<bool>| {
        let r = report(&HostFacts {
            ip_forward: v,
            ..healthy()
        });
        let c = r.check(ids::IP_FORWARD).unwrap().clone();
        (c.status, c.state)
    };
    assert_eq!(
        check(Some(true)),
        (CheckStatus::Pass, "enabled".to_string())
    );
    assert_eq!(
        check(Some(false)),
        (CheckStatus::Warn, "disabled".to_string())
    );
    assert_eq!(check(None), (CheckStatus::Warn, "unknown".to_string()));
}

/// The `jail_scope` check.
#[path = "tests_jail_scope.rs"]
mod jail_scope;

/// The `snapshot_backend` check.
#[path = "tests_snapshot.rs"]
mod snapshot;

#[path = "tests_vmm_support.rs"]
mod vmm_support;
