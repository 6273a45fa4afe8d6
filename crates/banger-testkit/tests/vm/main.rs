//! VMs on a real hypervisor, end to end: the real `banger` CLI → a real
//! `bangerd --dev` in a test network namespace → QEMU (TCG on the CI hosts,
//! docs/lab.md) booting the default Debian image → SSH into the guest.
//!
//! One long test shares its boots (each is ~20-45 s under TCG): two VMs
//! created concurrently, SSH, guest and host DNS, ports, stop/start with the
//! work disk's content kept, a daemon SIGKILL + restart that re-adopts the
//! running VM, a VMM SIGKILL that the daemon notices, `rm`, and a check that
//! nothing is left behind. The cheap refusals live in `refusals`; the
//! operations, `logs -f`, `kill`, `set --disk` and `restart` in `lifecycle`;
//! `pause`/`resume` in `pause`.
//!
//! Needs root, qemu-system-x86, e2fsprogs, openssh-client, iproute2,
//! nftables, dig, and mmdebstrap for the first build of the image.
#![allow(clippy::disallowed_methods)] // tests spawn the binaries under test directly

mod crash;
mod lifecycle;
mod pause;
mod pool;
mod snapshot;
mod support;
mod workspace;

/// banger-imagebuild's test support: the cached Debian kernel package.
#[path = "../../../banger-imagebuild/tests/common/mod.rs"]
mod ib_common;

use std::net::Ipv4Addr;

use banger_testkit::*;
use serde_json::Value;
use support::*;

fn vm(ns: &NetNs, d: &Daemon, name: &str) -> Value {
    ok_json(ns, d, &["vm", "show", name])
}

fn ip_of(v: &Value) -> Ipv4Addr {
    v["ip"]
        .as_str()
        .expect("ip")
        .parse()
        .expect("an IPv4 address")
}

#[test]
fn vm_lifecycle_end_to_end() {
    require_root();
    let _slot = guest_slot();
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let _reaper = VmReaper(tmp.path().to_path_buf());
    let mut d = start_daemon(&ns, tmp.path());
    register_default_image(&ns, &d);

    // Two VMs created concurrently: distinct names, addresses and taps.
    let (a, b) = std::thread::scope(|s| {
        let create = |name: &'static str| {
            let (ns, d) = (&ns, &d);
            s.spawn(move || {
                ok_json(
                    ns,
                    d,
                    &[
                        "vm", "create", name, "--wait", "--vcpus", "1", "--memory", "512",
                        "--disk", "256M",
                    ],
                )
            })
        };
        let (a, b) = (create("alpha"), create("beta"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (a, b) = (&a["vm"], &b["vm"]);
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(b["state"], "running", "{b}");
    assert_ne!(a["ip"], b["ip"]);
    assert_ne!(a["tap"], b["tap"]);
    assert_eq!(a["vmm"], "qemu");
    let (a_ip, b_ip) = (ip_of(a), ip_of(b));

    // SSH with banger's key and exact host keys.
    let uname = ok(&ns, &d, &["vm", "ssh", "alpha", "--", "uname", "-a"]);
    assert!(uname.starts_with("Linux alpha "), "{uname}");

    // What the guest prints on its console reaches a terminal escaped: a
    // window-title sequence written to the serial port shows as text in
    // `vm logs`; `--json` keeps the bytes as written.
    ok(
        &ns,
        &d,
        &[
            "vm",
            "ssh",
            "alpha",
            "--",
            "sudo sh -c \"printf 'BANGERMARK\\033]0;pwned\\007\\n' > /dev/ttyS0\"",
        ],
    );
    let logs = wait_until(20, "the console marker in `vm logs`", || {
        let l = ok(&ns, &d, &["vm", "logs", "alpha"]);
        l.contains("BANGERMARK").then_some(l)
    });
    assert!(logs.contains("BANGERMARK\\x1b]0;pwned\\x07"), "{logs}");
    assert!(!logs.contains('\x1b') && !logs.contains('\x07'), "{logs:?}");
    let raw = ok_json(&ns, &d, &["vm", "logs", "alpha"]);
    assert!(
        raw["text"]
            .as_str()
            .unwrap()
            .contains("BANGERMARK\x1b]0;pwned\x07"),
        "{raw}"
    );

    // The guest resolves another VM through banger's DNS; the host (the
    // namespace) resolves the guest.
    let hosts = ok(
        &ns,
        &d,
        &["vm", "ssh", "alpha", "--", "getent", "hosts", "beta.vm"],
    );
    assert!(hosts.starts_with(&b_ip.to_string()), "{hosts}");
    let bridge = a_ip.octets();
    let dns = format!("@{}.{}.{}.1", bridge[0], bridge[1], bridge[2]);
    let dig = in_ns(&ns, "dig", &["+short", &dns, "alpha.vm"]);
    assert_eq!(dig.trim(), a_ip.to_string());

    // A port the test opens in the guest shows up with its process.
    ok(
        &ns,
        &d,
        &[
            "vm",
            "ssh",
            "alpha",
            "--",
            "setsid -f socat TCP-LISTEN:8123,fork,reuseaddr SYSTEM:true >/dev/null 2>&1",
        ],
    );
    let ports = wait_until(20, "port 8123 in `vm ports`", || {
        let p = ok_json(&ns, &d, &["vm", "ports", "alpha"]);
        p["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["port"] == 8123)
            .cloned()
    });
    assert_eq!(ports["endpoint"], "alpha.vm:8123");
    assert_eq!(ports["process"], "socat");

    // Work-disk content survives stop/start.
    let mnt = ok(
        &ns,
        &d,
        &[
            "vm",
            "ssh",
            "alpha",
            "--",
            "findmnt",
            "-n",
            "-o",
            "SOURCE",
            "/home/banger",
        ],
    );
    assert_eq!(
        mnt.trim(),
        "/dev/vdb",
        "the work disk is not mounted at /home/banger"
    );
    ok(
        &ns,
        &d,
        &[
            "vm",
            "ssh",
            "alpha",
            "--",
            "echo keep-me > ~/kept.txt && sync",
        ],
    );
    let stopped = ok_json(&ns, &d, &["vm", "stop", "alpha"]);
    assert_eq!(stopped["state"], "stopped");
    assert!(vmm_pids(a["id"].as_str().unwrap()).is_empty());
    ok(&ns, &d, &["vm", "start", "alpha"]);
    assert_eq!(
        ok(&ns, &d, &["vm", "ssh", "alpha", "--", "cat", "kept.txt"]).trim(),
        "keep-me"
    );
    let (_, code, msg) = fails(&ns, &d, &["image", "promote", "alpha", "nope"]);
    assert_eq!(code, "invalid_state", "{msg}");
    let stats = ok_json(&ns, &d, &["vm", "stats", "alpha"]);
    assert_eq!(stats["running"], true);
    assert!(stats["rss_bytes"].as_u64().unwrap() > 0, "{stats}");

    // SIGKILL of bangerd while VMs run; the restarted daemon re-adopts them.
    d.proc.kill();
    assert_eq!(
        vmm_pids(a["id"].as_str().unwrap()).len(),
        1,
        "the VM died with the daemon"
    );
    d = start_daemon(&ns, tmp.path());
    assert_eq!(vm(&ns, &d, "alpha")["state"], "running");
    let again = ok(&ns, &d, &["vm", "ssh", "alpha", "--", "hostname"]);
    assert_eq!(again.trim(), "alpha");

    // SIGKILL of a VMM: the VM becomes stopped and its tap is released.
    let b_id = b["id"].as_str().unwrap().to_string();
    let pids = vmm_pids(&b_id);
    assert_eq!(pids.len(), 1, "{pids:?}");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pids[0] as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let b_now = wait_until(30, "beta to be marked stopped", || {
        let v = vm(&ns, &d, "beta");
        (v["state"] == "stopped").then_some(v)
    });
    assert!(
        b_now["state_reason"].as_str().unwrap().contains("exited"),
        "{b_now}"
    );
    assert!(b_now["tap"].is_null(), "{b_now}");

    // Removal frees everything.
    ok(&ns, &d, &["vm", "rm", "alpha"]);
    ok(&ns, &d, &["vm", "rm", "beta"]);
    let vms = ok_json(&ns, &d, &["vm", "ls"]);
    assert_eq!(vms, serde_json::json!([]));
    let status = ok_json(&ns, &d, &["host", "status"]);
    assert_eq!(
        status["tap_pool"]["assigned"],
        serde_json::json!([]),
        "{status}"
    );
    assert_eq!(status["dns_records"], 0, "{status}");
    let ruleset = in_ns(&ns, "nft", &["list", "ruleset"]);
    for ip in [a_ip, b_ip] {
        assert!(
            !ruleset.contains(&ip.to_string()),
            "nft still mentions {ip}:\n{ruleset}"
        );
    }
    let dig = in_ns(&ns, "dig", &["+short", &dns, "alpha.vm"]);
    assert_eq!(dig.trim(), "", "alpha.vm still resolves");
    assert!(vmm_pids(a["id"].as_str().unwrap()).is_empty());
    assert!(vmm_pids(&b_id).is_empty());
    let vms_dir: Vec<_> = std::fs::read_dir(d.state().join("vms")).unwrap().collect();
    assert!(vms_dir.is_empty(), "VM directories left: {vms_dir:?}");
    let loops = std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&loops.stdout).contains(tmp.path().to_str().unwrap()),
        "loop devices left on the test's files"
    );
    d.proc.terminate();
}

/// Bad input: each refused with a clear error, nothing left behind.
#[test]
fn refusals() {
    require_root();
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let _reaper = VmReaper(tmp.path().to_path_buf());
    let d = start_daemon(&ns, tmp.path());
    register_default_image(&ns, &d);
    for (args, code, needle) in [
        (
            vec!["vm", "create", "Bad_Name"],
            "bad_request",
            "invalid VM name",
        ),
        (vec!["vm", "create", "-x"], "", ""),
        (
            vec!["vm", "create", "ok", "--image", "nope"],
            "not_found",
            "image \"nope\" not found",
        ),
        (
            vec!["vm", "create", "ok", "--vcpus", "0"],
            "bad_request",
            "invalid vCPU count 0",
        ),
        (
            vec!["vm", "create", "ok", "--vcpus", "999"],
            "bad_request",
            "invalid vCPU count 999",
        ),
        (
            vec!["vm", "create", "ok", "--memory", "99999999"],
            "bad_request",
            "invalid memory 99999999",
        ),
        (
            vec!["vm", "create", "ok", "--disk", "1M"],
            "bad_request",
            "invalid disk size",
        ),
        (
            vec!["vm", "start", "ghost"],
            "not_found",
            "no VM named \"ghost\"",
        ),
    ] {
        if code.is_empty() {
            // clap refuses before anything is sent.
            assert!(!banger(&ns, &d, &args).status.success());
            continue;
        }
        let (_, got, msg) = fails(&ns, &d, &args);
        assert_eq!(got, code, "{args:?}: {msg}");
        assert!(msg.contains(needle), "{args:?}: {msg}");
    }
    // A stopped (never started) VM: duplicate name, state errors.
    ok(
        &ns,
        &d,
        &[
            "vm",
            "create",
            "idle",
            "--no-start",
            "--wait",
            "--disk",
            "128M",
        ],
    );
    let (_, code, msg) = fails(&ns, &d, &["vm", "create", "idle"]);
    assert_eq!(code, "already_exists", "{msg}");
    let (_, code, msg) = fails(&ns, &d, &["vm", "stop", "idle"]);
    assert_eq!(code, "invalid_state", "{msg}");
    assert!(msg.contains("it is created"), "{msg}");
    let (_, code, _) = fails(&ns, &d, &["vm", "ssh", "idle", "--", "true"]);
    assert_eq!(code, "invalid_state");

    // image promote: a VM that is not running becomes an image.
    let promoted = ok_json(&ns, &d, &["image", "promote", "idle", "idle-copy"]);
    assert_eq!(promoted["name"], "idle-copy", "{promoted}");
    let (_, code, _) = fails(&ns, &d, &["image", "promote", "idle", "idle-copy"]);
    assert_eq!(code, "already_exists");
    ok(&ns, &d, &["image", "rm", "idle-copy"]);

    // kernel import of a Debian kernel package: the kernel plus an
    // initramfs built for its modular virtio drivers.
    let deb = ib_common::kernel_deb();
    let k = ok_json(&ns, &d, &["kernel", "import", deb.to_str().unwrap()]);
    assert!(k["initrd"].is_string(), "{k}");
    assert!(k["name"].as_str().unwrap().contains("cloud-amd64"), "{k}");

    // A VMM that cannot boot the kernel: the create fails, naming it, and
    // rolls back completely.
    let fake = tmp.path().join("fake-bzImage");
    // A bzImage header whose setup size runs past the end of the file:
    // QEMU refuses it at start-up ("invalid kernel header").
    let mut k = vec![0u8; 4096];
    k[0x1f1] = 0x7f;
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    std::fs::write(&fake, &k).unwrap();
    ok(
        &ns,
        &d,
        &[
            "kernel",
            "import",
            fake.to_str().unwrap(),
            "--name",
            "broken",
        ],
    );
    let img = default_image();
    ok(
        &ns,
        &d,
        &[
            "image",
            "register",
            "brokenimg",
            "--rootfs",
            img.rootfs_ext4.to_str().unwrap(),
            "--kernel",
            "broken",
        ],
    );
    let (_, code, msg) = fails(
        &ns,
        &d,
        &[
            "vm",
            "create",
            "doomed",
            "--image",
            "brokenimg",
            "--wait",
            "--disk",
            "128M",
        ],
    );
    assert!(!code.is_empty(), "{msg}");
    assert!(msg.contains("doomed"), "the error names the VM: {msg}");
    assert!(
        msg.contains("invalid kernel header"),
        "QEMU's own words are in the error: {msg}"
    );
    let vms = ok_json(&ns, &d, &["vm", "ls"]);
    let names: Vec<&str> = vms
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["idle"]);
    let status = ok_json(&ns, &d, &["host", "status"]);
    assert_eq!(
        status["tap_pool"]["assigned"],
        serde_json::json!([]),
        "{status}"
    );
    ok(&ns, &d, &["vm", "rm", "idle"]);
    let left: Vec<_> = std::fs::read_dir(d.state().join("vms")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
