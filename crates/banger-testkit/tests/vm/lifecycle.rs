//! The lifecycle commands the long test does not reach, end to end on one
//! real guest (issue #14, "Done when"): `vm create` without `--wait`
//! followed through `op ls`, `op show` and `op wait`; `vm logs -f`
//! streaming the console while the guest boots; `vm kill`; `vm set --disk`
//! growing a stopped VM's work disk, seen from inside the guest; and
//! `vm restart`, which gives the VM a new VMM.

use std::io::Read as _;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use banger_testkit::*;
use serde_json::Value;

use super::support::*;

fn show(ns: &NetNs, d: &Daemon, name: &str) -> Value {
    ok_json(ns, d, &["vm", "show", name])
}

/// Bytes of the guest's work filesystem (`/home/banger`, the work disk).
fn work_fs_bytes(ns: &NetNs, d: &Daemon, name: &str) -> u64 {
    let out = ok(
        ns,
        d,
        &[
            "vm",
            "ssh",
            name,
            "--",
            "df -B1 --output=size /home/banger | tail -1",
        ],
    );
    out.trim().parse().expect("a size from df")
}

#[test]
fn ops_logs_follow_kill_set_disk_and_restart() {
    require_root();
    let _slot = guest_slot();
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let _reaper = VmReaper(tmp.path().to_path_buf());
    let d = start_daemon(&ns, tmp.path());
    register_default_image(&ns, &d);

    // Without --wait the answer comes at once, naming its operation.
    let created = ok_json(
        &ns,
        &d,
        &[
            "vm", "create", "gamma", "--vcpus", "1", "--memory", "512", "--disk", "256M",
        ],
    );
    let op = created["operation"]
        .as_str()
        .expect("an operation id")
        .to_string();

    // `vm logs -f` follows the console as the guest boots: read it on a
    // thread until the guest's ready line shows (or the test gives up).
    let mut follow = ns
        .exec(bin("banger"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["vm", "logs", "gamma", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("running banger vm logs -f");
    let mut stdout = follow.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains(banger_proto::guest::READY_MARKER) {
                let _ = tx.send(seen.len());
                break;
            }
        }
    });

    let ops = ok_json(&ns, &d, &["op", "ls"]);
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|o| o["id"] == op.as_str() && o["kind"] == "vm.create" && o["vm"] == "gamma"),
        "{ops}"
    );
    let shown = ok_json(&ns, &d, &["op", "show", &op]);
    assert_eq!(shown["kind"], "vm.create", "{shown}");
    let waited = ok_json(&ns, &d, &["op", "wait", &op]);
    assert_eq!(waited["state"], "succeeded", "{waited}");
    assert_eq!(show(&ns, &d, "gamma")["state"], "running");
    let followed = rx.recv_timeout(Duration::from_secs(60));
    // Stopped by its PID, ours.
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        followed.is_ok(),
        "vm logs -f never showed the guest's ready line"
    );

    // `vm kill`: the VMM goes at once, and the reason says so.
    let killed = ok_json(&ns, &d, &["vm", "kill", "gamma"]);
    assert_eq!(killed["state"], "stopped", "{killed}");
    assert_eq!(killed["state_reason"], "killed", "{killed}");

    // `vm set --disk` grows the stopped VM's work disk (file and ext4);
    // the guest sees the bigger filesystem once started again.
    let set = ok_json(&ns, &d, &["vm", "set", "gamma", "--disk", "512M"]);
    assert_eq!(set["disk_bytes"], 512u64 << 20, "{set}");
    let started = ok_json(&ns, &d, &["vm", "start", "gamma"]);
    assert_eq!(started["state"], "running", "{started}");
    let size = work_fs_bytes(&ns, &d, "gamma");
    assert!(
        size > 400 << 20 && size <= 512 << 20,
        "the work filesystem is {size} bytes after growing to 512 MiB"
    );

    // `vm restart`: stopped and started again, on a new VMM process.
    let before = show(&ns, &d, "gamma")["pid"].clone();
    let restarted = ok_json(&ns, &d, &["vm", "restart", "gamma"]);
    assert_eq!(restarted["state"], "running", "{restarted}");
    let after = show(&ns, &d, "gamma")["pid"].clone();
    assert!(after.is_u64(), "{after}");
    assert_ne!(before, after, "restart kept the same VMM");
    ok(&ns, &d, &["vm", "ssh", "gamma", "--", "true"]);

    ok(&ns, &d, &["vm", "rm", "gamma"]);
}
