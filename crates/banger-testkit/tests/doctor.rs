//! `banger doctor` end to end: CLI → bangerd --dev → executor → real host.
//! Its findings are compared with ground truth read independently here.
//!
//! With `BANGER_EXPECT_LAB=1` (set by `.ci/run`) the test also asserts the
//! facts LAB.md records for the CI hosts: KVM present but unusable for stock
//! guests (PVM), no device-mapper, no vhost-vsock.
#![allow(clippy::disallowed_methods)] // these tests spawn the binaries under test directly

use std::path::Path;
use std::process::Command;

use banger_proto::doctor::{CheckStatus, DoctorReport, VmmKind};
use banger_testkit::*;

fn doctor_json(d: &DevDaemon) -> (DoctorReport, i32) {
    let out = Command::new(bin("banger"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let report: DoctorReport = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json did not print a report ({e}); stdout: {} stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, out.status.code().unwrap())
}

fn state<'a>(r: &'a DoctorReport, id: &str) -> &'a str {
    &r.check(id)
        .unwrap_or_else(|| panic!("no `{id}` check in {r:?}"))
        .state
}

#[test]
fn doctor_tells_the_truth_about_this_host() {
    let mapper_before = Path::new("/dev/mapper/control").exists();
    let d = DevDaemon::start();
    let (r, code) = doctor_json(&d);
    // Looking must not create: `dmsetup` run as root would make the node.
    assert_eq!(
        Path::new("/dev/mapper/control").exists(),
        mapper_before,
        "doctor created or removed /dev/mapper/control"
    );

    let any_fail = r.checks.iter().any(|c| c.status == CheckStatus::Fail);
    assert_eq!(
        code,
        if any_fail { 10 } else { 0 },
        "exit status vs report: {r:#?}"
    );
    for c in &r.checks {
        assert!(!c.summary.is_empty(), "{c:?}");
        assert_eq!(
            c.hint.is_some(),
            c.status != CheckStatus::Pass,
            "hint iff not passing: {c:?}"
        );
    }

    let device = |p: &str| {
        if Path::new(p).exists() {
            "present"
        } else {
            "absent"
        }
    };
    assert_eq!(state(&r, "tun"), device("/dev/net/tun"));
    assert_eq!(state(&r, "vhost_vsock"), device("/dev/vhost-vsock"));
    assert_eq!(state(&r, "loop_control"), device("/dev/loop-control"));
    // A control node can exist without a working device-mapper (no dm
    // module: DM_VERSION fails): then it is `unusable`.
    let dm = state(&r, "device_mapper");
    match device("/dev/mapper/control") {
        "present" => assert!(matches!(dm, "present" | "unusable"), "{dm}"),
        absent => assert_eq!(dm, absent),
    }
    assert_eq!(state(&r, "privileged_helper"), "in_process");

    let kvm = state(&r, "kvm");
    if !Path::new("/dev/kvm").exists() {
        assert_eq!(kvm, "absent");
    } else if Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(kvm, "present_unusable");
    }
    let fc = r
        .backends
        .iter()
        .find(|b| b.vmm == VmmKind::Firecracker)
        .unwrap();
    if kvm != "usable" {
        assert!(
            !fc.usable,
            "firecracker cannot be usable without usable KVM: {fc:?}"
        );
    }

    if std::env::var_os("BANGER_EXPECT_LAB").is_some() {
        assert_eq!(kvm, "present_unusable", "LAB.md: PVM host KVM");
        assert_eq!(r.check("kvm").unwrap().status, CheckStatus::Warn);
        assert_eq!(
            state(&r, "device_mapper"),
            "absent",
            "LAB.md: no device-mapper"
        );
        assert_eq!(state(&r, "vhost_vsock"), "absent", "LAB.md: no vhost-vsock");
        let qemu = r.backends.iter().find(|b| b.vmm == VmmKind::Qemu).unwrap();
        assert!(
            qemu.usable,
            "qemu-system-x86 is installed by .ci/run: {qemu:?}"
        );
        assert_eq!(qemu.accel, Some(banger_proto::doctor::Accel::Tcg));
        assert!(!fc.usable);
    }
}

#[test]
fn doctor_human_output_is_a_table_with_hints() {
    let d = DevDaemon::start();
    let out = Command::new(bin("banger"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("kvm") && text.contains("device_mapper"),
        "{text}"
    );
    // stderr is a pipe here: no progress lines.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_reports_client_and_daemon() {
    let d = DevDaemon::start();
    let out = Command::new(bin("banger"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["version", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    assert!(text.contains(&d.proc.pid().to_string()), "{text}");
    assert!(text.contains("\"dev\""), "{text}");
}
