//! `vm snapshot` / `vm create --from` on real guests under QEMU (issue #15
//! item 1): a clone is restored from the snapshot's memory (a file only
//! in the source guest's tmpfs is there), gets its own identity before
//! anyone reaches it (a new address answers, the old one does not once
//! the source is stopped, a new host key that banger's known_hosts
//! pins, `NAME.vm` resolving to the new address, its own hostname), and
//! snapshots are listed, shown, refused where they cannot apply and
//! removed. `vm stop --save` suspends a VM to disk and `vm start` resumes
//! it without a boot.

use std::time::Instant;

use banger_testkit::*;

use super::support::*;

/// Whether a TCP connection to `ip`:22 opens within `secs` (from the test
/// namespace, where the bridge is).
fn sshd_answers(ns: &NetNs, ip: &str, secs: u32) -> bool {
    let script = format!("exec 3<>/dev/tcp/{ip}/22");
    ns.exec("timeout")
        .args([&secs.to_string(), "bash", "-c", &script])
        .status()
        .expect("running bash")
        .success()
}

#[test]
fn a_clone_restores_the_snapshot_with_its_own_identity() {
    let lab = guest_lab();
    let (ns, d, tmp) = (&lab.ns, &lab.d, &lab.tmp);
    let src = lab.small_vm("src");
    let src_ip = src["vm"]["ip"].as_str().unwrap().to_string();
    // Memory only: tmpfs is never on a disk, so the clone can only have
    // it from the saved memory.
    ok(
        ns,
        d,
        &["vm", "ssh", "src", "--", "echo from-memory > /dev/shm/mark"],
    );

    let (_, code, msg) = fails(ns, d, &["vm", "create", "x", "--from", "nope"]);
    assert_eq!(code, "not_found", "{msg}");
    let t = Instant::now();
    let snap = ok_json(ns, d, &["vm", "snapshot", "src", "s1"]);
    eprintln!("vm snapshot: {:?}", t.elapsed());
    assert_eq!(snap["name"], "s1", "{snap}");
    assert_eq!(snap["source_vm"], "src", "{snap}");
    assert_eq!(snap["vmm"], "qemu", "{snap}");
    assert_eq!(snap["memory_mib"], 512, "{snap}");
    assert!(snap["memory_bytes"].as_u64().unwrap() > 1 << 20, "{snap}");
    assert!(snap["size_bytes"].as_u64().unwrap() > 1 << 20, "{snap}");
    // The source runs on.
    assert_eq!(ok_json(ns, d, &["vm", "show", "src"])["state"], "running");
    assert_eq!(
        ok(ns, d, &["vm", "ssh", "src", "--", "hostname"]).trim(),
        "src"
    );
    let (_, code, msg) = fails(ns, d, &["vm", "snapshot", "src", "s1"]);
    assert_eq!(code, "already_exists", "{msg}");
    let listed = ok_json(ns, d, &["snapshot", "ls"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        ok_json(ns, d, &["snapshot", "show", "s1"])["id"],
        snap["id"]
    );
    let (_, code, msg) = fails(
        ns,
        d,
        &["vm", "create", "x", "--from", "s1", "--memory", "1024"],
    );
    assert_eq!(code, "bad_request", "{msg}");
    assert!(msg.contains("512 MiB"), "{msg}");

    let t = Instant::now();
    let clone = ok_json(ns, d, &["vm", "create", "clone", "--from", "s1", "--wait"]);
    let restored = t.elapsed();
    let clone_ip = clone["vm"]["ip"].as_str().unwrap().to_string();
    assert_eq!(clone["vm"]["state"], "running", "{clone}");
    assert_ne!(clone_ip, src_ip);
    let t = Instant::now();
    // Strict host key checking against banger's known_hosts: the clone
    // answers with the new key banger made for it, not the source's.
    let host = ok(ns, d, &["vm", "ssh", "clone", "--", "hostname"]);
    eprintln!(
        "vm create --from: {restored:?}; then vm ssh -- hostname: {:?}",
        t.elapsed()
    );
    assert_eq!(host.trim(), "clone");
    assert_eq!(
        ok(ns, d, &["vm", "ssh", "clone", "--", "cat /dev/shm/mark"]).trim(),
        "from-memory"
    );
    let addrs = ok(ns, d, &["vm", "ssh", "clone", "--", "ip -4 -o addr show"]);
    assert!(addrs.contains(&format!("inet {clone_ip}/")), "{addrs}");
    assert!(!addrs.contains(&format!("inet {src_ip}/")), "{addrs}");
    let key = |vm: &str| {
        ok(
            ns,
            d,
            &[
                "vm",
                "ssh",
                vm,
                "--",
                "cat /etc/ssh/ssh_host_ed25519_key.pub",
            ],
        )
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
    };
    assert_ne!(key("clone"), key("src"));
    let bridge: Vec<&str> = clone_ip.split('.').collect();
    let dns = format!("@{}.{}.{}.1", bridge[0], bridge[1], bridge[2]);
    assert_eq!(
        in_ns(ns, "dig", &["+short", &dns, "clone.vm"]).trim(),
        clone_ip
    );

    // The old address is the source's alone: once the source stops,
    // nothing answers there, while the clone still does.
    ok(ns, d, &["vm", "stop", "src"]);
    assert!(!sshd_answers(ns, &src_ip, 3), "the old address answers");
    assert!(
        sshd_answers(ns, &clone_ip, 10),
        "the clone stopped answering"
    );

    // A paused VM's snapshot leaves it paused; a stopped one has none.
    ok(ns, d, &["vm", "pause", "clone"]);
    let s2 = ok_json(ns, d, &["vm", "snapshot", "clone"]);
    assert_eq!(s2["name"], "clone-1", "{s2}");
    assert_eq!(ok_json(ns, d, &["vm", "show", "clone"])["state"], "paused");
    // Again while it stays paused (QEMU refuses to save twice in a row
    // unless the VM is resumed and paused in between).
    let s3 = ok_json(ns, d, &["vm", "snapshot", "clone"]);
    assert_eq!(s3["name"], "clone-2", "{s3}");
    assert_eq!(ok_json(ns, d, &["vm", "show", "clone"])["state"], "paused");
    ok(ns, d, &["vm", "resume", "clone"]);
    let (_, code, msg) = fails(ns, d, &["vm", "snapshot", "src"]);
    assert_eq!(code, "invalid_state", "{msg}");

    // Removed: the row and its files; the clone keeps its own disks.
    let dir = tmp
        .path()
        .join("state/snapshots")
        .join(snap["id"].as_str().unwrap());
    assert!(dir.join("memory").exists(), "{}", dir.display());
    ok(ns, d, &["snapshot", "rm", "s1"]);
    assert!(!dir.exists(), "{} is still there", dir.display());
    let (_, code, _) = fails(ns, d, &["snapshot", "show", "s1"]);
    assert_eq!(code, "not_found");
    assert_eq!(
        ok(ns, d, &["vm", "ssh", "clone", "--", "hostname"]).trim(),
        "clone"
    );
    ok(ns, d, &["snapshot", "rm", "clone-1"]);
    ok(ns, d, &["snapshot", "rm", "clone-2"]);

    for vm in ["clone", "src"] {
        ok(ns, d, &["vm", "rm", vm]);
    }
    assert_eq!(ok_json(ns, d, &["snapshot", "ls"]), serde_json::json!([]));
}

#[test]
fn stop_save_suspends_to_disk_and_start_resumes_without_a_boot() {
    let lab = guest_lab();
    let (ns, d, tmp) = (&lab.ns, &lab.d, &lab.tmp);
    let vm = lab.small_vm("sv");
    let id = vm["vm"]["id"].as_str().unwrap().to_string();
    let ip = vm["vm"]["ip"].as_str().unwrap().to_string();
    let boot_id = |d: &Daemon| {
        ok(
            ns,
            d,
            &[
                "vm",
                "ssh",
                "sv",
                "--",
                "cat /proc/sys/kernel/random/boot_id",
            ],
        )
        .trim()
        .to_string()
    };
    let before = boot_id(d);
    ok(
        ns,
        d,
        &["vm", "ssh", "sv", "--", "echo kept > /dev/shm/mark"],
    );

    let t = Instant::now();
    let saved = ok_json(ns, d, &["vm", "stop", "sv", "--save"]);
    eprintln!("vm stop --save: {:?}", t.elapsed());
    assert_eq!(saved["state"], "stopped", "{saved}");
    assert_eq!(saved["saved"], true, "{saved}");
    assert!(vmm_pids(&id).is_empty(), "its VMM runs on");
    assert!(!sshd_answers(ns, &ip, 2), "a saved VM answers");
    // Its memory is of this machine and these disks.
    let (_, code, msg) = fails(ns, d, &["vm", "set", "sv", "--memory", "1024"]);
    assert_eq!(code, "invalid_state", "{msg}");
    assert!(msg.contains("vm start sv"), "{msg}");

    let t = Instant::now();
    let started = ok_json(ns, d, &["vm", "start", "sv"]);
    eprintln!("vm start of a saved VM: {:?}", t.elapsed());
    assert_eq!(started["state"], "running", "{started}");
    assert_eq!(started["saved"], false, "{started}");
    // The same boot: no reboot, memory as it was, same address and key.
    assert_eq!(boot_id(d), before);
    assert_eq!(
        ok(ns, d, &["vm", "ssh", "sv", "--", "cat /dev/shm/mark"]).trim(),
        "kept"
    );
    assert_eq!(started["ip"], ip.as_str());
    // The saved state is used once: a stop and start after it boots anew.
    ok(ns, d, &["vm", "stop", "sv"]);
    ok(ns, d, &["vm", "start", "sv"]);
    assert_ne!(boot_id(d), before);
    let snapshots = tmp.path().join("state/snapshots");
    let left = std::fs::read_dir(&snapshots).map_or(0, |d| d.count());
    assert_eq!(
        left,
        0,
        "a saved state's directory is left in {}",
        snapshots.display()
    );

    // Saved, then removed: its directory goes with it.
    ok(ns, d, &["vm", "stop", "sv", "--save"]);
    assert_eq!(std::fs::read_dir(&snapshots).unwrap().count(), 1);
    ok(ns, d, &["vm", "rm", "sv"]);
    assert_eq!(std::fs::read_dir(&snapshots).unwrap().count(), 0);
}
