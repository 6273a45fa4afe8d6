//! Workspace benchmark of `banger-bench` (`make bench`): `banger workspace
//! prepare` of a repository of more than 100 MB into a QEMU/TCG guest,
//! against `tar -cf - . | banger vm ssh VM -- tar -xf -` (the same SSH
//! channel, the naive full copy) in the same run; then an incremental
//! prepare after a one-file change, against the same full tar copy (what
//! re-copying costs without banger's incremental sync).
//!
//! The guest runs in a network namespace created here; the daemon and QEMU
//! are stopped by the handles this process holds.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::{NetNs, shared_tempdir};
use serde_json::Value;

use super::bench_vm::{Daemon, Reaper, register_default_image};

/// Files of incompressible data in the working tree (committed, so `.git`
/// holds as much again).
const FILES: usize = 96;
const FILE_BYTES: usize = 640 << 10;
const RUNS: usize = 2;

fn sh(script: &str) {
    let st = Command::new("sh").args(["-c", script]).status().unwrap();
    assert!(st.success(), "{script}");
}

fn du(dir: &Path) -> u64 {
    let out = Command::new("du").args(["-sb"]).arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn make_repo(dir: &Path) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for i in 0..FILES {
        sh(&format!(
            "head -c {FILE_BYTES} /dev/urandom > '{}/data/f{i:03}.bin'",
            dir.display()
        ));
    }
    std::fs::write(dir.join("README.md"), "bench\n").unwrap();
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=b", "-c", "user.email=b@b"])
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "bench data"]);
}

/// `tar -cf - -C DIR . | banger vm ssh VM -- 'rm -rf ~/base && mkdir ~/base && tar -xf - -C ~/base'`.
fn tar_copy(ns: &NetNs, d: &Daemon, vm: &str, dir: &Path) -> Duration {
    let t0 = Instant::now();
    let mut tar = Command::new("tar")
        .args(["-cf", "-", "-C"])
        .arg(dir)
        .arg(".")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let st = ns
        .exec(banger_testkit::bin("banger"))
        .arg("--socket")
        .arg(d.socket())
        .args([
            "vm",
            "ssh",
            vm,
            "--",
            "rm -rf ~/base && mkdir ~/base && tar -xf - -C ~/base",
        ])
        .stdin(tar.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(
        st.success() && tar.wait().unwrap().success(),
        "tar | ssh tar"
    );
    t0.elapsed()
}

struct Prepared {
    time: Duration,
    sent: u64,
}

fn prepare(ns: &NetNs, d: &Daemon, vm: &str, dir: &Path) -> Prepared {
    let t0 = Instant::now();
    let r: Value = d.json(ns, &["workspace", "prepare", vm, dir.to_str().unwrap()]);
    Prepared {
        time: t0.elapsed(),
        sent: r["sent_bytes"].as_u64().unwrap_or(0),
    }
}

pub fn section() -> String {
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let d = Daemon::start(&ns, tmp.path());
    let _reaper = Reaper(tmp.path().join("state"));
    register_default_image(&ns, &d);
    let repo = tmp.path().join("repo");
    make_repo(&repo);
    let size = du(&repo);
    eprintln!(
        "banger-bench: workspace: repository of {} MB",
        size / 1_000_000
    );
    d.json(
        &ns,
        &[
            "vm", "create", "wsb", "--wait", "--vcpus", "1", "--memory", "1024", "--disk", "2G",
        ],
    );
    let mut rows = Vec::new();
    for i in 0..RUNS {
        eprintln!("banger-bench: workspace: run {i}");
        let base_full = tar_copy(&ns, &d, "wsb", &repo);
        d.ok(&ns, &["vm", "ssh", "wsb", "--", "rm -rf ~/base ~/repo"]);
        let full = prepare(&ns, &d, "wsb", &repo);
        sh(&format!(
            "echo 'one more line {i}' >> '{}/README.md'",
            repo.display()
        ));
        let incr = prepare(&ns, &d, "wsb", &repo);
        let base_again = tar_copy(&ns, &d, "wsb", &repo);
        d.ok(&ns, &["vm", "ssh", "wsb", "--", "rm -rf ~/base"]);
        rows.push((base_full, full, incr, base_again));
    }
    d.ok(&ns, &["vm", "rm", "wsb"]);

    let ms = |t: Duration| t.as_millis();
    let mut md = String::from("\n## Workspace prepare (`bench_workspace.rs`)\n\n");
    md.push_str(&format!(
        "A repository of {:.0} MB on disk ({FILES} files of {} KiB of random data, \
         committed, so `.git` holds as much again) copied into a QEMU/TCG guest (1 vCPU, \
         1 GiB) in a throwaway network namespace. banger: `banger workspace prepare` \
         (git inspection, `rsync` over SSH, key/identity sync), first into an empty \
         directory, then after appending one line to one file. Baseline: `tar -cf - . | \
         banger vm ssh VM -- tar -xf -` of the same directory over the same SSH channel \
         (a full copy each time: the naive way to refresh a guest). Milliseconds; bytes \
         are rsync's `Total bytes sent`.\n\n",
        size as f64 / 1e6,
        FILE_BYTES >> 10
    ));
    md.push_str("| run | baseline tar \\| ssh tar (full) | banger prepare (full) | bytes sent | banger prepare after a one-file change | bytes sent | baseline tar again | incremental / baseline |\n");
    md.push_str("|---|---|---|---|---|---|---|---|\n");
    for (i, (bf, f, inc, ba)) in rows.iter().enumerate() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.3}x |\n",
            i + 1,
            ms(*bf),
            ms(f.time),
            f.sent,
            ms(inc.time),
            inc.sent,
            ms(*ba),
            inc.time.as_secs_f64() / ba.as_secs_f64()
        ));
    }
    md
}
