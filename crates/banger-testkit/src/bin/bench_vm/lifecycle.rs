//! The lifecycle rows of issue #15's table that need no second boot, each
//! against a baseline measured in the same run:
//!
//! * `no_boot_create_rm`: `vm create NAME --no-start --wait` + `vm rm NAME`
//!   (reservation, both disks, guest files, row; then all of it freed),
//!   against two `banger --json vm ls` calls (what any two CLI commands cost:
//!   process start, connect, handshake, one store read).
//! * `resume_ssh`: `vm resume NAME` + the first successful `vm ssh NAME --
//!   true` of a VM paused for a second, against `vm ssh NAME -- true` on
//!   the same VM running (one SSH handshake with the guest).
//! * `from_snapshot`: `vm create NAME --from SNAP --wait` + the first
//!   successful `vm ssh NAME -- true`, against the cold `vm create --wait`
//!   → SSH of the same run (the caller fills the baseline).
//! * `warm_pool`: `vm create NAME --wait` taking a warm clone + the first
//!   successful `vm ssh NAME -- true`, on a daemon of its own whose config
//!   keeps one clone of the image, against `from_snapshot`'s restores of
//!   the same run (the caller fills the baseline).

use std::time::{Duration, Instant};

use banger_testkit::NetNs;
use serde_json::Value;

use super::{Daemon, ms};
use crate::percentile;

/// Iterations of each row.
pub(crate) const ITERS: usize = 10;

pub(crate) struct Samples {
    pub subject: Vec<Duration>,
    pub baseline: Vec<Duration>,
    /// What the subject ran on (e.g. the root disk's snapshot backend).
    pub note: String,
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// No-boot create + rm, against two `vm ls`.
pub(crate) fn no_boot(ns: &NetNs, d: &Daemon) -> Samples {
    let mut out = Samples {
        subject: Vec::new(),
        baseline: Vec::new(),
        note: String::new(),
    };
    for i in 0..ITERS {
        let name = format!("nb{i}");
        out.subject.push(timed(|| {
            let c = d.json(ns, &["vm", "create", &name, "--no-start", "--wait"]);
            if out.note.is_empty() {
                out.note = root_disk_kind(d, c["vm"]["id"].as_str().unwrap_or_default());
            }
            d.ok(ns, &["vm", "rm", &name]);
        }));
        out.baseline.push(timed(|| {
            d.json(ns, &["vm", "ls"]);
            d.json(ns, &["vm", "ls"]);
        }));
    }
    out
}

fn ssh_until_ok(ns: &NetNs, d: &Daemon, name: &str) {
    let t0 = Instant::now();
    while !d
        .banger(ns, &["vm", "ssh", name, "--", "true"])
        .status
        .success()
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "ssh into {name}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resume → SSH of the running VM `name`, against SSH alone.
pub(crate) fn resume(ns: &NetNs, d: &Daemon, name: &str) -> Samples {
    let mut out = Samples {
        subject: Vec::new(),
        baseline: Vec::new(),
        note: String::new(),
    };
    for _ in 0..ITERS {
        out.baseline.push(timed(|| ssh_until_ok(ns, d, name)));
        d.ok(ns, &["vm", "pause", name]);
        std::thread::sleep(Duration::from_secs(1));
        out.subject.push(timed(|| {
            d.ok(ns, &["vm", "resume", name]);
            ssh_until_ok(ns, d, name);
        }));
    }
    out
}

/// Iterations of the snapshot row: each restores a clone (one guest at a
/// time), then removes it.
pub(crate) const FROM_ITERS: usize = 5;

/// `vm create --from SNAP --wait` → SSH ok, `FROM_ITERS` times, each
/// clone removed before the next; the baseline is the caller's.
pub(crate) fn from_snapshot(ns: &NetNs, d: &Daemon, snapshot: &str) -> Samples {
    let mut out = Samples {
        subject: Vec::new(),
        baseline: Vec::new(),
        note: String::new(),
    };
    for i in 0..FROM_ITERS {
        let name = format!("clone{i}");
        out.subject.push(timed(|| {
            d.json(ns, &["vm", "create", &name, "--from", snapshot, "--wait"]);
            ssh_until_ok(ns, d, &name);
        }));
        if out.note.is_empty() {
            let s = d.json(ns, &["snapshot", "show", snapshot]);
            out.note = format!(
                "{} MiB of saved state, {} MiB of files",
                s["memory_bytes"].as_u64().unwrap_or(0) >> 20,
                s["size_bytes"].as_u64().unwrap_or(0) >> 20
            );
        }
        d.ok(ns, &["vm", "rm", &name]);
    }
    out
}

/// Iterations of the warm-pool row.
pub(crate) const POOL_ITERS: usize = 5;

/// The pool daemon's config: the bench's VM sizes as the defaults (a
/// clone is taken only by a create of its sizes), one clone of `debian`,
/// limits out of the way.
const POOL_CONFIG: &str = "[vm]\ndefault_vmm = \"qemu\"\ndefault_vcpus = 1\n\
default_memory_mib = 512\ndefault_disk = \"256M\"\n\
[pool]\nmax_memory = \"1G\"\nmax_load_percent = 10000\n[pool.images]\ndebian = 1\n";

/// Warm-pool `vm create --wait` → SSH ok, `POOL_ITERS` times, on a daemon
/// of its own (home `dir`) keeping one clone of `debian`: each time the
/// pool is refilled first (untimed), the clone taken, checked to be one,
/// and removed. The baseline is the caller's.
pub(crate) fn warm_pool(ns: &NetNs, dir: &std::path::Path) -> Samples {
    let config = dir.join(".config/banger/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, POOL_CONFIG).unwrap();
    let d = Daemon::start(ns, dir);
    super::register_default_image(ns, &d);
    let mut out = Samples {
        subject: Vec::new(),
        baseline: Vec::new(),
        note: String::new(),
    };
    let ready = || {
        let t0 = Instant::now();
        loop {
            let p = d.json(ns, &["vm", "pool"]);
            let e: Option<&Value> = p
                .as_array()
                .and_then(|a| a.iter().find(|e| e["image"] == "debian"));
            if e.is_some_and(|e| e["ready"] == 1 && e["filling"] == 0) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(900),
                "the pool never filled: {p}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let first = ready();
    for i in 0..POOL_ITERS {
        if i > 0 {
            ready();
        }
        let name = format!("warm{i}");
        let mut created = Value::Null;
        out.subject.push(timed(|| {
            created = d.json(ns, &["vm", "create", &name, "--wait"]);
            ssh_until_ok(ns, &d, &name);
        }));
        assert_eq!(created["from_pool"], true, "not from the pool: {created}");
        d.ok(ns, &["vm", "rm", &name]);
    }
    out.note = format!(
        "the first fill (a boot, the pool snapshot, one restore) took {} ms",
        first.as_millis()
    );
    // The pool goes with its image.
    d.ok(ns, &["image", "rm", "debian"]);
    out
}

/// How the VM's root disk was made, from its directory: a dm-snapshot
/// (`root.cow` over `root.origin`) or a file copy (`root.ext4`: a reflink
/// or a sparse copy, on the state directory's filesystem).
fn root_disk_kind(d: &Daemon, id: &str) -> String {
    let dir = d.state().join(banger_proto::layout::VMS_DIR).join(id);
    let fs = match rustix::fs::statfs(d.state()).map(|s| s.f_type as u64) {
        Ok(0xEF53) => "ext4".to_string(),
        Ok(0x5846_5342) => "xfs".to_string(),
        Ok(0x9123_683E) => "btrfs".to_string(),
        Ok(0x0102_1994) => "tmpfs".to_string(),
        Ok(other) => format!("a filesystem of type {other:#x}"),
        Err(e) => format!("an unknown filesystem ({e})"),
    };
    if dir.join("root.cow").exists() {
        format!("dm-snapshot, state directory on {fs}")
    } else {
        format!("file copy of the root disk (reflink or sparse), state directory on {fs}")
    }
}

/// This module's subsection of the report: how each row was measured,
/// then the table of medians and p99s against their baselines.
pub(crate) fn rows(no_boot: &Samples, resume: &Samples, from: &Samples, pool: &Samples) -> String {
    let row = |what: &str, s: &Samples| {
        let (p50, b50) = (percentile(&s.subject, 50), percentile(&s.baseline, 50));
        format!(
            "| {what} | {} | {} | {} | {} | {} | {:.2}x |\n",
            s.subject.len(),
            ms(p50),
            ms(percentile(&s.subject, 99)),
            ms(b50),
            ms(percentile(&s.baseline, 99)),
            p50.as_secs_f64() / b50.as_secs_f64().max(1e-9),
        )
    };
    let mut md =
        String::from("\n### Lifecycle without a boot, pause → resume, restore from a snapshot\n\n");
    md.push_str(&format!(
        "* **no-boot create + rm**: `banger --json vm create NAME --no-start --wait` then \
         `banger vm rm NAME` (reservation, root disk: {}, work disk, guest files, row; then \
         all of it freed). Baseline: two `banger --json vm ls` (two CLI processes, connect, \
         handshake, one store read each).\n",
        no_boot.note
    ));
    md.push_str(
        "* **resume → SSH**: `vm resume NAME` and the first successful `vm ssh NAME -- true` \
         (retried every 20 ms) of a VM paused for one second. Baseline: `vm ssh NAME -- true` \
         on the same VM running. Both ride the VM's SSH master connection (opened by the \
         first `vm ssh` of the boot; a pause keeps it), so neither pays a handshake with \
         the TCG guest (1.8-2.2 s, see the create → SSH rows).\n",
    );
    md.push_str(&format!(
        "* **create --from → SSH**: `vm snapshot` of the first run's VM (booted, SSH-ready), \
         then `banger --json vm create NAME --from SNAP --wait` and the first successful `vm \
         ssh NAME -- true` (a new SSH handshake with the clone: its host key is new), one \
         clone at a time, each removed before the next ({}). Baseline: the cold `vm create \
         --wait` → SSH of this run's boots.\n",
        from.note
    ));
    md.push_str(&format!(
        "* **warm-pool create → SSH**: a second daemon whose config keeps one clone of \
         `debian` (`[pool.images] debian = 1`, the bench's sizes as its defaults); once the \
         pool has its clone (untimed), `banger --json vm create NAME --wait` (which takes \
         the clone: `from_pool`, checked) and the first successful `vm ssh NAME -- true`, \
         then `vm rm`; the refill runs as the next clone is awaited ({}). Baseline: the \
         `vm create --from SNAP` → SSH restores of this run.\n\n",
        pool.note
    ));
    md.push_str("| benchmark | iterations | subject median | subject p99 | baseline median | baseline p99 | ratio (median) |\n");
    md.push_str("|---|---|---|---|---|---|---|\n");
    md.push_str(&row(
        "no-boot `vm create --no-start --wait` + `vm rm`",
        no_boot,
    ));
    md.push_str(&row("`vm resume` → SSH ok", resume));
    md.push_str(&row("`vm create --from SNAP --wait` → SSH ok", from));
    md.push_str(&row("warm-pool `vm create --wait` → SSH ok", pool));
    md
}
