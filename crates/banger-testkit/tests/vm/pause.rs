//! `vm pause` / `vm resume` on a real guest (issue #15 item 3): a paused
//! guest answers nothing and banger refuses what needs it running; the
//! pause survives a SIGKILL of the daemon; a resumed guest answers SSH
//! again; a stop of a paused VM still powers the guest off gracefully.

use std::time::{Duration, Instant};

use banger_testkit::*;

use super::support::*;

/// Whether a TCP connection to the guest's sshd opens within `secs` (from
/// the test namespace, where the bridge is).
fn sshd_answers(ns: &NetNs, ip: &str, secs: u32) -> bool {
    let script = format!("exec 3<>/dev/tcp/{ip}/22");
    let status = ns
        .exec("timeout")
        .args([&secs.to_string(), "bash", "-c", &script])
        .status()
        .expect("running bash");
    status.success()
}

#[test]
fn pause_resume_survive_a_daemon_restart_and_stop_gracefully() {
    require_root();
    let _slot = guest_slot();
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let _reaper = VmReaper(tmp.path().to_path_buf());
    let mut d = start_daemon(&ns, tmp.path());
    register_default_image(&ns, &d);

    let created = ok_json(
        &ns,
        &d,
        &[
            "vm", "create", "pz", "--wait", "--vcpus", "1", "--memory", "512", "--disk", "256M",
        ],
    );
    let vm = &created["vm"];
    let ip = vm["ip"].as_str().unwrap().to_string();
    let id = vm["id"].as_str().unwrap().to_string();
    assert!(sshd_answers(&ns, &ip, 10), "sshd does not answer at all");

    let paused = ok_json(&ns, &d, &["vm", "pause", "pz"]);
    assert_eq!(paused["state"], "paused", "{paused}");
    // Frozen: the guest's sshd does not accept, and banger refuses what
    // needs the guest, saying how to go on.
    assert!(!sshd_answers(&ns, &ip, 3), "a paused guest accepted");
    let (_, code, msg) = fails(&ns, &d, &["vm", "ssh", "pz", "--", "true"]);
    assert_eq!(code, "invalid_state", "{msg}");
    assert!(msg.contains("banger vm resume pz"), "{msg}");
    // Again is no error, and the VMM is the same process.
    assert_eq!(ok_json(&ns, &d, &["vm", "pause", "pz"])["state"], "paused");
    let pids = vmm_pids(&id);
    assert_eq!(pids.len(), 1, "{pids:?}");

    // SIGKILL of the daemon: the restarted one finds the VM paused still.
    d.proc.kill();
    d = start_daemon(&ns, tmp.path());
    let after = ok_json(&ns, &d, &["vm", "show", "pz"]);
    assert_eq!(after["state"], "paused", "{after}");
    assert!(!sshd_answers(&ns, &ip, 2), "the restart resumed the guest");
    assert_eq!(vmm_pids(&id), pids);

    let t = Instant::now();
    let resumed = ok_json(&ns, &d, &["vm", "resume", "pz"]);
    assert_eq!(resumed["state"], "running", "{resumed}");
    let host = ok(&ns, &d, &["vm", "ssh", "pz", "--", "hostname"]);
    eprintln!("vm resume → SSH ok: {:?}", t.elapsed());
    assert_eq!(host.trim(), "pz");
    // `vm ssh` opened the VM's SSH master (the CLI and the daemon are one
    // user here); a pause keeps it, and the next session rides it.
    let control = ok_json(&ns, &d, &["vm", "ssh", "pz"])["control_path"]
        .as_str()
        .expect("a control path")
        .to_string();
    let masters = pids_matching(&["ssh", &control]);
    assert_eq!(masters.len(), 1, "{masters:?}");
    ok(&ns, &d, &["vm", "pause", "pz"]);
    ok(&ns, &d, &["vm", "resume", "pz"]);
    let t = Instant::now();
    ok(&ns, &d, &["vm", "ssh", "pz", "--", "true"]);
    eprintln!(
        "vm ssh over the kept master after a pause: {:?}",
        t.elapsed()
    );
    assert_eq!(pids_matching(&["ssh", &control]), masters, "a new master");
    assert_eq!(
        ok_json(&ns, &d, &["vm", "resume", "pz"])["state"],
        "running"
    );

    // A paused VM's stop resumes it first: the guest powers off by itself
    // (no "killed" reason) well before the stop's timeout.
    ok(&ns, &d, &["vm", "pause", "pz"]);
    let t = Instant::now();
    let stopped = ok_json(&ns, &d, &["vm", "stop", "pz", "--timeout", "60"]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(stopped["state_reason"].is_null(), "{stopped}");
    assert!(t.elapsed() < Duration::from_secs(55), "{:?}", t.elapsed());
    assert!(vmm_pids(&id).is_empty());
    // The stop ended the VM's master.
    assert_eq!(pids_matching(&["ssh", &control]), Vec::<u32>::new());
    assert!(!std::path::Path::new(&control).exists());
    let (_, code, msg) = fails(&ns, &d, &["vm", "pause", "pz"]);
    assert_eq!(code, "invalid_state", "{msg}");
    assert!(msg.contains("stopped"), "{msg}");

    ok(&ns, &d, &["vm", "rm", "pz"]);
    assert_eq!(ok_json(&ns, &d, &["vm", "ls"]), serde_json::json!([]));
    d.proc.terminate();
}
