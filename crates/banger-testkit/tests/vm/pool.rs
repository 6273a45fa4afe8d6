//! The warm pool on real guests under QEMU (issue #15 item 2): with
//! `[pool.images] debian = 1`, the daemon makes the image's pool snapshot
//! (a boot, a save), restores a clone from it and pauses it, all hidden
//! from `vm ls` and `snapshot ls`; `vm create` takes that clone (its new
//! name in the guest, `NAME.vm` and banger's known_hosts, the clock set),
//! the pool refills with a clone of its own address, and `image rm`
//! removes the pool with the image, leaving nothing behind.

use std::time::Instant;

use serde_json::Value;

use super::support::*;

const CONFIG: &str = "[vm]\ndefault_vmm = \"qemu\"\ndefault_vcpus = 1\n\
default_memory_mib = 512\ndefault_disk = \"256M\"\n\
[pool]\nmax_memory = \"1G\"\nmax_load_percent = 10000\n\
[pool.images]\ndebian = 1\n";

/// The pool's entry for `debian` once it has a ready clone.
fn ready_pool(lab: &GuestLab, secs: u64) -> Value {
    wait_until(secs, "a ready clone in the pool", || {
        let p = ok_json(&lab.ns, &lab.d, &["vm", "pool"]);
        let e = p
            .as_array()?
            .iter()
            .find(|e| e["image"] == "debian")?
            .clone();
        (e["ready"] == 1 && e["filling"] == 0).then_some(e)
    })
}

/// The ids of the VMs under the state directory (pooled ones too).
fn vm_dirs(lab: &GuestLab) -> Vec<String> {
    match std::fs::read_dir(lab.tmp.path().join("state/vms")) {
        Ok(d) => d
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn vm_create_takes_a_warm_clone_and_the_pool_refills() {
    let mut lab = guest_lab_with(CONFIG);
    let (ns, d, tmp) = (&lab.ns, &lab.d, &lab.tmp);
    let t = Instant::now();
    let entry = ready_pool(&lab, 600);
    eprintln!("pool filled (pool snapshot + one clone): {:?}", t.elapsed());
    assert_eq!(entry["size"], 1, "{entry}");
    assert!(entry["snapshot"].is_string(), "{entry}");
    // Hidden: no VM and no snapshot of the owner's, but a clone runs
    // (paused) and has its directory.
    assert_eq!(ok_json(ns, d, &["vm", "ls"]), serde_json::json!([]));
    assert_eq!(ok_json(ns, d, &["snapshot", "ls"]), serde_json::json!([]));
    let pooled = vm_dirs(&lab);
    assert_eq!(pooled.len(), 1, "{pooled:?}");
    assert_eq!(vmm_pids(&pooled[0]).len(), 1, "the clone's VMM");
    let (_, code, msg) = fails(
        ns,
        d,
        &["snapshot", "show", entry["snapshot"].as_str().unwrap()],
    );
    assert_eq!(code, "not_found", "{msg}");

    // Other sizes than the pool's: not from the pool (refused here before
    // any boot, so the test does not pay one).
    let (_, code, _) = fails(ns, d, &["vm", "create", "big", "--memory", "64", "--wait"]);
    assert_eq!(code, "bad_request");

    let t = Instant::now();
    let created = ok_json(ns, d, &["vm", "create", "dev", "--wait"]);
    let took = t.elapsed();
    let host = ok(ns, d, &["vm", "ssh", "dev", "--", "hostname"]);
    eprintln!(
        "warm-pool vm create --wait: {took:?}; create → `vm ssh -- hostname` answered: {:?}",
        t.elapsed()
    );
    assert_eq!(created["from_pool"], true, "{created}");
    assert_eq!(created["vm"]["state"], "running", "{created}");
    assert_eq!(created["vm"]["id"], pooled[0].as_str(), "{created}");
    assert_eq!(host.trim(), "dev");
    let ip = created["vm"]["ip"].as_str().unwrap().to_string();
    let listed = ok_json(ns, d, &["vm", "ls"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], "dev", "{listed}");
    // Its name everywhere: the guest's files, DNS, banger's known_hosts
    // (the clone's own host key under `dev.vm`, no line for the clone's
    // old name).
    let hosts = ok(
        ns,
        d,
        &["vm", "ssh", "dev", "--", "cat /etc/hostname /etc/hosts"],
    );
    assert!(hosts.starts_with("dev\n"), "{hosts}");
    assert!(hosts.contains("127.0.1.1 dev.vm dev"), "{hosts}");
    let bridge: Vec<&str> = ip.split('.').collect();
    let dns = format!("@{}.{}.{}.1", bridge[0], bridge[1], bridge[2]);
    assert_eq!(in_ns(ns, "dig", &["+short", &dns, "dev.vm"]).trim(), ip);
    let key = ok(
        ns,
        d,
        &[
            "vm",
            "ssh",
            "dev",
            "--",
            "cat /etc/ssh/ssh_host_ed25519_key.pub",
        ],
    );
    let key = key.split_whitespace().nth(1).unwrap().to_string();
    let known = std::fs::read_to_string(tmp.path().join("state/ssh/known_hosts")).unwrap();
    let line = known
        .lines()
        .find(|l| l.starts_with("dev.vm "))
        .unwrap_or_else(|| panic!("no dev.vm line in known_hosts:\n{known}"));
    assert!(line.ends_with(&key), "{line} vs {key}");
    assert!(!known.contains("pool-"), "{known}");
    // The clock: within a minute of the host's (the clone slept paused).
    let guest_now: i64 = ok(ns, d, &["vm", "ssh", "dev", "--", "date +%s"])
        .trim()
        .parse()
        .unwrap();
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest_now - host_now).abs() < 60,
        "guest {guest_now} host {host_now}"
    );

    // The pool refills with a clone of its own address.
    let t = Instant::now();
    ready_pool(&lab, 300);
    eprintln!("pool refilled: {:?}", t.elapsed());
    let now = vm_dirs(&lab);
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(ok_json(ns, d, &["vm", "show", "dev"])["state"], "running");

    // A daemon SIGKILL: the restarted one keeps the paused clone (and its
    // SSH master, which outlives the daemon), and a create takes it.
    let clone = now.iter().find(|id| **id != pooled[0]).unwrap().clone();
    lab.d.proc.kill();
    lab.d = start_daemon(&lab.ns, lab.tmp.path());
    let (ns, d, tmp) = (&lab.ns, &lab.d, &lab.tmp);
    ready_pool(&lab, 60);
    assert_eq!(vm_dirs(&lab).len(), 2);
    let t = Instant::now();
    let second = ok_json(ns, d, &["vm", "create", "dev2", "--wait"]);
    let host = ok(ns, d, &["vm", "ssh", "dev2", "--", "hostname"]);
    eprintln!(
        "after a daemon restart, warm create → `vm ssh -- hostname`: {:?}",
        t.elapsed()
    );
    assert_eq!(second["from_pool"], true, "{second}");
    assert_eq!(second["vm"]["id"], clone.as_str(), "{second}");
    assert_eq!(host.trim(), "dev2");
    ok(ns, d, &["vm", "rm", "dev2"]);

    // The image goes with its pool, once the owner's VM is gone.
    let (_, code, msg) = fails(ns, d, &["image", "rm", "debian"]);
    assert_eq!(code, "invalid_state", "{msg}");
    assert!(msg.contains("dev"), "{msg}");
    ok(ns, d, &["vm", "rm", "dev"]);
    ok(ns, d, &["image", "rm", "debian"]);
    assert_eq!(ok_json(ns, d, &["vm", "pool"]), serde_json::json!([]));
    assert!(vm_dirs(&lab).is_empty(), "{:?}", vm_dirs(&lab));
    for id in &now {
        assert!(vmm_pids(id).is_empty(), "VM {id}'s VMM still runs");
    }
    let snaps: Vec<_> = std::fs::read_dir(tmp.path().join("state/snapshots"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(snaps.is_empty(), "{snaps:?}");
}
