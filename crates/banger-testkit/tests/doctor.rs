//! `banger doctor` end to end: CLI → bangerd --dev → executor → real host.
//! Its findings are compared with what independent probes of this host say
//! (`banger_testkit::hostcheck`: plain opens, `/proc` and `/sys`, raw KVM
//! ioctls, the tools themselves), never with facts remembered about one host:
//! the CI and development hosts differ in KVM, device-mapper and vhost-vsock.
#![allow(clippy::disallowed_methods)] // these tests spawn the binaries under test directly

use std::path::Path;
use std::process::Command;

use banger_proto::doctor::{Accel, CheckStatus, DoctorReport, VmmKind};
use banger_testkit::hostcheck;
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

/// Whether `cp --reflink=always` clones a small file in `dir`.
fn cp_reflinks_in(dir: &Path) -> bool {
    let scratch = tempfile::tempdir_in(dir).unwrap();
    let src = scratch.path().join("a");
    std::fs::write(&src, vec![7u8; 64 << 10]).unwrap();
    Command::new("cp")
        .arg("--reflink=always")
        .arg(&src)
        .arg(scratch.path().join("b"))
        .output()
        .expect("running cp")
        .status
        .success()
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

    assert_eq!(state(&r, "privileged_helper"), "in_process");
    for (id, node) in [
        ("tun", "/dev/net/tun"),
        ("vhost_vsock", "/dev/vhost-vsock"),
        ("loop_control", "/dev/loop-control"),
    ] {
        assert_eq!(state(&r, id), hostcheck::device_state(node), "{id}");
    }
    // Asked after the doctor: its open of the node may have loaded dm_mod.
    let dm = hostcheck::device_mapper_state();
    assert_eq!(state(&r, "device_mapper"), dm, "{r:#?}");

    let kvm = hostcheck::kvm_state().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state(&r, "kvm"), kvm, "{:#?}", r.check("kvm"));
    let kvm_usable = kvm == "usable";
    let qemu_runs = hostcheck::runs("qemu-system-x86_64", &["--version"]);
    let kvm_status = r.check("kvm").unwrap().status;
    match (kvm_usable, qemu_runs) {
        (true, _) => assert_eq!(kvm_status, CheckStatus::Pass),
        (false, true) => assert_eq!(kvm_status, CheckStatus::Warn),
        (false, false) => assert_eq!(kvm_status, CheckStatus::Fail),
    }

    let backend = |vmm| r.backends.iter().find(|b| b.vmm == vmm).unwrap();
    let qemu = backend(VmmKind::Qemu);
    assert_eq!(qemu.usable, qemu_runs, "{qemu:?}");
    if qemu_runs {
        let accel = if kvm_usable { Accel::Kvm } else { Accel::Tcg };
        assert_eq!(qemu.accel, Some(accel), "{qemu:?}");
    }
    let fc = backend(VmmKind::Firecracker);
    let fc_runs = hostcheck::runs("firecracker", &["--version"]);
    assert_eq!(fc.usable, fc_runs && kvm_usable, "{fc:?}");
    assert_eq!(
        state(&r, "vmm_backend"),
        if qemu.usable || fc.usable {
            "available"
        } else {
            "none"
        }
    );

    // The daemon enables forwarding in its own namespace when it sets up
    // its bridge; whatever it did, the report must say what is there now.
    let fwd = d
        .in_netns("cat")
        .arg("/proc/sys/net/ipv4/ip_forward")
        .output()
        .unwrap();
    let fwd = match String::from_utf8_lossy(&fwd.stdout).trim() {
        "1" => "enabled",
        "0" => "disabled",
        other => panic!("ip_forward in the daemon's namespace reads {other:?}"),
    };
    assert_eq!(state(&r, "ip_forward"), fwd);

    // The daemon's in-process executor makes the jails: scoped where this
    // kernel has Landlock ABI 6 or later (`landlock_create_ruleset(NULL, 0,
    // LANDLOCK_CREATE_RULESET_VERSION)`, x86_64 system call 444; -1 without
    // Landlock).
    let abi = Command::new("perl")
        .args(["-e", "print syscall(444, 0, 0, 1)"])
        .output()
        .unwrap();
    let abi: i64 = String::from_utf8_lossy(&abi.stdout).trim().parse().unwrap();
    assert_eq!(
        state(&r, "jail_scope"),
        if abi >= 6 { "scoped" } else { "unscoped" },
        "Landlock ABI {abi}"
    );

    let state_dir = d.dir.path().join("state");
    let reflink = cp_reflinks_in(&state_dir);
    assert_eq!(
        state(&r, "reflink"),
        if reflink { "supported" } else { "unsupported" }
    );
    let dmsetup = hostcheck::on_path("dmsetup").is_some();
    let snapshot = if dm == "present" && dmsetup {
        "dm_snapshot"
    } else if reflink {
        "reflink"
    } else {
        "sparse_copy"
    };
    assert_eq!(state(&r, "snapshot_backend"), snapshot);
    // Dev mode has no install, so no udev rule or LVM filter for its state
    // directory (issue #13 finding 8).
    assert_eq!(state(&r, "host_guard"), "dev_mode");
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
