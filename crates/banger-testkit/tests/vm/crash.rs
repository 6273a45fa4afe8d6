//! The kill matrix over the VM lifecycle (issue #16 item 1, for `vm
//! create`, `start`, `stop` and `rm`), snapshots, restores, `vm stop
//! --save` and the warm pool (issue #15's "done when"), on real guests: bangerd is started with
//! `BANGER_CRASH_AT=POINT` (its crash points, `bangerd::crashpoint`, which
//! only test builds have), driven to that point, and dies there by SIGKILL;
//! the test checks from its stderr that the point was reached. A daemon
//! started after it must then be consistent — no VM left `starting` or
//! `stopping`, no operation left `running`, no snapshot directory without
//! its row — and the user's next command must work. Once everything is
//! removed, nothing is left: no VM or snapshot directory, no VMM, no SSH
//! master, no `pool-` line in known_hosts, the namespace's links (by name:
//! a tap given back gets banger's idle MAC) and nft ruleset as they were
//! before the first VM.

use std::time::Duration;

use banger_testkit::NsDaemon;
use serde_json::Value;

use super::support::*;

const POOL_CONFIG: &str = "[vm]\ndefault_vmm = \"qemu\"\ndefault_vcpus = 1\n\
default_memory_mib = 512\ndefault_disk = \"256M\"\n\
[pool]\nmax_memory = \"1G\"\nmax_load_percent = 10000\n\
[pool.images]\ndebian = 1\n";

/// What must be as it was once every VM is gone: the namespace's links and
/// its nft ruleset.
fn host_objects(lab: &GuestLab) -> (String, String) {
    (
        in_ns(&lab.ns, "ip", &["-br", "link"]),
        in_ns(&lab.ns, "nft", &["-s", "list", "ruleset"]),
    )
}

/// No VM listed, no VM directory.
fn no_vm_left(lab: &GuestLab) {
    assert_eq!(
        ok_json(&lab.ns, &lab.d, &["vm", "ls"]),
        serde_json::json!([])
    );
    assert!(
        entries(lab, "state/vms").is_empty(),
        "{:?}",
        entries(lab, "state/vms")
    );
}

/// No VMM of the state directory runs, and the namespace's links (by name)
/// and nft ruleset are `before`'s.
fn host_as_before(lab: &GuestLab, before: &(String, String)) {
    let qemus = pids_matching(&["qemu-system", &lab.tmp.path().display().to_string()]);
    assert!(qemus.is_empty(), "VMMs left: {qemus:?}");
    let (links, nft) = host_objects(lab);
    assert_eq!(
        link_names(&links),
        link_names(&before.0),
        "links differ:\n{links}\nbefore:\n{}",
        before.0
    );
    assert_eq!(nft, before.1, "the nft ruleset differs");
}

/// Entries of `state/<sub>` (VM or snapshot directories).
fn entries(lab: &GuestLab, sub: &str) -> Vec<String> {
    match std::fs::read_dir(lab.tmp.path().join(sub)) {
        Ok(d) => d
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Kill the daemon, start one that dies at `point`, run `args` (which must
/// fail: the daemon dies under it; none for a point the daemon reaches on
/// its own, as the pool's refill does), check the point was reached, and
/// start a daemon as usual again.
fn crash_at(lab: &mut GuestLab, point: &str, args: &[&str]) {
    lab.d.proc.kill();
    lab.d = NsDaemon::start_with_env(
        &lab.ns,
        lab.tmp.path(),
        &[(bangerd::crashpoint::ENV, point)],
    );
    if !args.is_empty() {
        let out = banger(&lab.ns, &lab.d, args);
        assert!(
            !out.status.success(),
            "banger {args:?} succeeded although the daemon was to die at {point}"
        );
    }
    let out = lab.d.proc.wait(Duration::from_secs(600));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("crash point {point} reached")),
        "the daemon did not die at {point} ({}):\n{}",
        out.status,
        &err[err.len().saturating_sub(3000)..]
    );
    lab.d = start_daemon(&lab.ns, lab.tmp.path());
    consistent(lab, point);
}

/// The restarted daemon's view is settled: no VM between states, no
/// operation running (but the pool's own fills), every snapshot
/// directory a row's.
fn consistent(lab: &GuestLab, point: &str) {
    let (ns, d) = (&lab.ns, &lab.d);
    let vms = ok_json(ns, d, &["vm", "ls"]);
    for vm in vms.as_array().unwrap() {
        let state = vm["state"].as_str().unwrap();
        assert!(
            !matches!(state, "starting" | "stopping"),
            "after {point}: {vm}"
        );
    }
    let ops = ok_json(ns, d, &["op", "ls"]);
    for op in ops.as_array().unwrap() {
        if op["state"] == "running" {
            let vm = op["vm"].as_str().unwrap_or_default();
            assert!(vm.starts_with("pool-"), "after {point}: {op}");
        }
    }
    let snaps = ok_json(ns, d, &["snapshot", "ls"]);
    let rows = snaps.as_array().unwrap().len();
    let pool_bases = ok_json(ns, d, &["vm", "pool"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["snapshot"].is_string())
        .count();
    let dirs = entries(lab, "state/snapshots");
    assert!(
        dirs.len() <= rows + pool_bases + saved(&vms),
        "after {point}: snapshot directories {dirs:?}, rows {snaps}"
    );
}

/// How many VMs have a saved state (each a snapshot directory).
fn saved(vms: &Value) -> usize {
    vms.as_array()
        .unwrap()
        .iter()
        .filter(|v| v["saved"] == true)
        .count()
}

#[test]
fn every_crash_point_of_snapshots_restores_and_the_pool_recovers() {
    let mut lab = guest_lab();
    let before = host_objects(&lab);
    lab.small_vm("src");

    // A snapshot interrupted before and after the executor's save: no
    // row, and the restarted daemon's sweep removes the directory; the VM
    // runs on.
    for point in ["snapshot.dir_made", "snapshot.saved"] {
        crash_at(&mut lab, point, &["vm", "snapshot", "src", "s1"]);
        let (ns, d) = (&lab.ns, &lab.d);
        assert_eq!(ok_json(ns, d, &["snapshot", "ls"]), serde_json::json!([]));
        assert!(entries(&lab, "state/snapshots").is_empty(), "{point}");
        assert_eq!(ok_json(ns, d, &["vm", "show", "src"])["state"], "running");
        ok(ns, d, &["vm", "ssh", "src", "--", "true"]);
    }

    // Restores interrupted after the disks and after the launch: the first
    // clone is left `created` (or failed) and removable; the second was
    // launched with its identity and is re-adopted running.
    ok(&lab.ns, &lab.d, &["vm", "snapshot", "src", "base"]);
    crash_at(
        &mut lab,
        "create.disks",
        &["vm", "create", "c1", "--from", "base", "--wait"],
    );
    let c1 = ok_json(&lab.ns, &lab.d, &["vm", "show", "c1"]);
    assert!(
        matches!(c1["state"].as_str(), Some("created" | "failed" | "stopped")),
        "{c1}"
    );
    ok(&lab.ns, &lab.d, &["vm", "rm", "c1"]);
    crash_at(
        &mut lab,
        "boot.launched",
        &["vm", "create", "c2", "--from", "base", "--wait"],
    );
    let (ns, d) = (&lab.ns, &lab.d);
    assert_eq!(ok_json(ns, d, &["vm", "show", "c2"])["state"], "running");
    assert_eq!(
        ok(ns, d, &["vm", "ssh", "c2", "--", "hostname"]).trim(),
        "c2"
    );
    ok(ns, d, &["vm", "rm", "c2"]);
    ok(ns, d, &["snapshot", "rm", "base"]);

    // `vm stop --save` interrupted after the kill, before the state is
    // recorded: the VM is stopped without a saved state (its directory
    // swept), and its next start boots.
    crash_at(
        &mut lab,
        "stop_save.killed",
        &["vm", "stop", "src", "--save"],
    );
    let (ns, d) = (&lab.ns, &lab.d);
    let src = ok_json(ns, d, &["vm", "show", "src"]);
    assert_eq!(src["state"], "stopped", "{src}");
    assert_eq!(src["saved"], false, "{src}");
    assert!(entries(&lab, "state/snapshots").is_empty());
    ok(ns, d, &["vm", "start", "src"]);
    ok(ns, d, &["vm", "ssh", "src", "--", "true"]);
    ok(ns, d, &["vm", "rm", "src"]);
    assert!(entries(&lab, "state/vms").is_empty());

    // The warm pool: its refill interrupted after a restore and after the
    // pause (the next daemon removes the clone that is not ready and
    // makes another), and takes interrupted after the rename and after the
    // resume (the VM is the owner's, and removable).
    std::fs::write(
        lab.tmp.path().join(".config/banger/config.toml"),
        POOL_CONFIG,
    )
    .unwrap();
    crash_at(&mut lab, "pool.restored", &[]);
    crash_at(&mut lab, "pool.paused", &[]);
    ready_pool(&lab, 300);
    crash_at(&mut lab, "pool.taken", &["vm", "create", "d1", "--wait"]);
    let d1 = ok_json(&lab.ns, &lab.d, &["vm", "show", "d1"]);
    assert!(
        matches!(d1["state"].as_str(), Some("paused" | "running")),
        "{d1}"
    );
    ok(&lab.ns, &lab.d, &["vm", "rm", "d1"]);
    ready_pool(&lab, 300);
    crash_at(&mut lab, "pool.resumed", &["vm", "create", "d2", "--wait"]);
    assert_eq!(
        ok_json(&lab.ns, &lab.d, &["vm", "show", "d2"])["state"],
        "running"
    );
    ok(&lab.ns, &lab.d, &["vm", "rm", "d2"]);
    ready_pool(&lab, 300);

    // Nothing left once the image (and with it the pool) is gone.
    let (ns, d, tmp) = (&lab.ns, &lab.d, &lab.tmp);
    ok(ns, d, &["image", "rm", "debian"]);
    no_vm_left(&lab);
    assert!(
        entries(&lab, "state/snapshots").is_empty(),
        "{:?}",
        entries(&lab, "state/snapshots")
    );
    assert!(
        entries(&lab, "run/ssh").is_empty(),
        "{:?}",
        entries(&lab, "run/ssh")
    );
    let known =
        std::fs::read_to_string(tmp.path().join("state/ssh/known_hosts")).unwrap_or_default();
    assert!(!known.contains("pool-"), "{known}");
    host_as_before(&lab, &before);
}

/// `vm create NAME --wait` of a small VM, as arguments.
fn small(name: &str) -> Vec<&str> {
    vec![
        "vm", "create", name, "--wait", "--vcpus", "1", "--memory", "512", "--disk", "256M",
    ]
}

/// The VM lifecycle's crash points (issue #16 item 1's matrix for `vm
/// create`, `start`, `stop` and `rm`): a create cut short before its VMM
/// leaves a VM that is `created`, `failed` or `stopped` and removable; one
/// cut short after the launch or after readiness is re-adopted `running`
/// and answers SSH; a stop cut short either side of the VMM's stop ends
/// `stopped`; a removal cut short after the disks or after the rest can be
/// run again and finishes. Then nothing is left.
#[test]
fn every_crash_point_of_the_vm_lifecycle_recovers() {
    let mut lab = guest_lab();
    let before = host_objects(&lab);
    for (point, name) in [
        ("create.reserved", "r1"),
        ("create.disks", "r2"),
        ("create.guest_files", "r3"),
        ("boot.tap", "r4"),
    ] {
        crash_at(&mut lab, point, &small(name));
        let vm = ok_json(&lab.ns, &lab.d, &["vm", "show", name]);
        assert!(
            matches!(vm["state"].as_str(), Some("created" | "failed" | "stopped")),
            "after {point}: {vm}"
        );
        ok(&lab.ns, &lab.d, &["vm", "rm", name]);
    }

    // One VM through a boot, a stop, a start and a stop, each cut short:
    // (point, command, the state after, whether it then answers SSH).
    let steps: [(&str, Vec<&str>, &str, bool); 4] = [
        ("boot.launched", small("a"), "running", true),
        ("stop.stopping", vec!["vm", "stop", "a"], "stopped", false),
        ("boot.ready", vec!["vm", "start", "a"], "running", true),
        ("stop.stopped", vec!["vm", "stop", "a"], "stopped", false),
    ];
    for (point, args, state, answers) in steps {
        crash_at(&mut lab, point, &args);
        let vm = ok_json(&lab.ns, &lab.d, &["vm", "show", "a"]);
        assert_eq!(vm["state"], state, "after {point}: {vm}");
        if answers {
            wait_until(300, "SSH into a", || {
                banger(&lab.ns, &lab.d, &["vm", "ssh", "a", "--", "true"])
                    .status
                    .success()
                    .then_some(())
            });
        }
    }

    ok(
        &lab.ns,
        &lab.d,
        &[
            "vm",
            "create",
            "b",
            "--no-start",
            "--wait",
            "--disk",
            "256M",
        ],
    );
    crash_at(&mut lab, "rm.disks", &["vm", "rm", "b"]);
    ok(&lab.ns, &lab.d, &["vm", "rm", "b"]);
    crash_at(&mut lab, "rm.removed", &["vm", "rm", "a"]);
    ok(&lab.ns, &lab.d, &["vm", "rm", "a"]);

    no_vm_left(&lab);
    let known =
        std::fs::read_to_string(lab.tmp.path().join("state/ssh/known_hosts")).unwrap_or_default();
    assert!(known.trim().is_empty(), "{known}");
    host_as_before(&lab, &before);
}

/// The link names of `ip -br link` (a tap given back gets banger's idle
/// MAC, so only names compare).
fn link_names(l: &str) -> Vec<String> {
    l.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `git -C DIR ARGS` with a test identity.
fn git(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Host Dev", "-c", "user.email=dev@host.test"])
        .args(args)
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `workspace prepare` cut short after its copy (issue #16 item 1): the
/// next prepare finishes into the same guest directory (not a second one
/// beside it), for a first prepare and for a re-prepare after the host's
/// HEAD moved (which must not be taken for unexported guest commits).
#[test]
fn a_workspace_prepare_cut_short_is_finished_by_the_next() {
    let mut lab = guest_lab();
    lab.small_vm("w");
    let repo = lab.tmp.path().join("proj");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("a.txt"), "one\n").unwrap();
    git(&repo, &["add", "a.txt"]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let path = repo.display().to_string();
    let prepare = ["workspace", "prepare", "w", path.as_str()];
    let guest =
        |lab: &GuestLab, script: &str| ok(&lab.ns, &lab.d, &["vm", "ssh", "w", "--", script]);

    crash_at(&mut lab, "workspace.copied", &prepare);
    ok(&lab.ns, &lab.d, &prepare);
    assert_eq!(guest(&lab, "cat ~/proj/a.txt"), "one\n");

    std::fs::write(repo.join("a.txt"), "two\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    crash_at(&mut lab, "workspace.copied", &prepare);
    ok(&lab.ns, &lab.d, &prepare);
    assert_eq!(guest(&lab, "cat ~/proj/a.txt"), "two\n");
    let dirs = guest(&lab, "ls -A ~");
    assert!(
        !dirs.lines().any(|l| l.starts_with("proj-")),
        "a second checkout beside ~/proj: {dirs}"
    );
    ok(&lab.ns, &lab.d, &["vm", "rm", "w"]);
}
