//! The warm pool on real guests under QEMU (issue #15 item 2): with
//! `[pool.images] debian = 1`, the daemon makes the image's pool snapshot
//! (a boot, a save), restores a clone from it and pauses it, all hidden
//! from `vm ls` and `snapshot ls`; `vm create` takes that clone (its new
//! name in the guest, `NAME.vm` and banger's known_hosts, the clock set),
//! the pool refills with a clone of its own address, and `image rm`
//! removes the pool with the image, leaving nothing behind.

use std::time::Instant;

use super::support::*;

const CONFIG: &str = "[vm]\ndefault_vmm = \"qemu\"\ndefault_vcpus = 1\n\
default_memory_mib = 512\ndefault_disk = \"256M\"\n\
[pool]\nmax_memory = \"1G\"\nmax_load_percent = 10000\n\
[pool.images]\ndebian = 1\n";

/// The SSH master sockets of VM `id` (`RUNTIME_DIR/ssh/<id16>.<pid>`).
fn masters(lab: &GuestLab, id: &str) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(lab.tmp.path().join("run/ssh")) {
        Ok(d) => d
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&id[..16]))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Whether an SSH master answers on `socket`.
fn master_answers(lab: &GuestLab, socket: &std::path::Path) -> bool {
    lab.ns
        .exec("ssh")
        .args(["-F", "/dev/null", "-o"])
        .arg(format!("ControlPath={}", socket.display()))
        .args(["-O", "check", "banger-master"])
        .output()
        .is_ok_and(|o| o.status.success())
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

    // A create that does not start is built as usual: the clone stays.
    let cold = ok_json(ns, d, &["vm", "create", "cold", "--no-start", "--wait"]);
    assert!(cold.get("from_pool").is_none(), "{cold}");
    assert_eq!(cold["vm"]["state"], "created", "{cold}");
    ok(ns, d, &["vm", "rm", "cold"]);
    assert_eq!(ready_pool(&lab, 5)["ready"], 1);
    // The clone's SSH master, opened by the fill, answers while it sleeps.
    let master = masters(&lab, &pooled[0]);
    assert_eq!(master.len(), 1, "{master:?}");
    assert!(master_answers(&lab, &master[0]), "the clone's master");
    // Its known_hosts line, under its pool name.
    let known = std::fs::read_to_string(tmp.path().join("state/ssh/known_hosts")).unwrap();
    let aliases: Vec<&str> = known
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|a| a.starts_with("pool-"))
        .collect();
    assert_eq!(aliases.len(), 1, "{known}");
    let old_alias = aliases[0].to_string();
    // Its guest clock stops while it is paused: the take must set it.
    std::thread::sleep(std::time::Duration::from_secs(20));

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
    assert!(
        !known
            .lines()
            .any(|l| l.starts_with(&format!("{old_alias} "))),
        "the clone's old line is still there:\n{known}"
    );
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
        (guest_now - host_now).abs() < 10,
        "guest {guest_now} host {host_now}: the clock was not set"
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
    let master = masters(&lab, &clone);
    assert_eq!(master.len(), 1, "{master:?}");
    lab.d.proc.kill();
    lab.d = start_daemon(&lab.ns, lab.tmp.path());
    let (ns, d, tmp) = (&lab.ns, &lab.d, &lab.tmp);
    ready_pool(&lab, 60);
    assert_eq!(vm_dirs(&lab).len(), 2);
    assert!(
        master_answers(&lab, &master[0]),
        "the master outlives the daemon"
    );
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
    let known = std::fs::read_to_string(tmp.path().join("state/ssh/known_hosts")).unwrap();
    assert!(!known.contains("pool-"), "{known}");
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("run/ssh"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "SSH masters left: {left:?}");
    let snaps: Vec<_> = std::fs::read_dir(tmp.path().join("state/snapshots"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(snaps.is_empty(), "{snaps:?}");
}
