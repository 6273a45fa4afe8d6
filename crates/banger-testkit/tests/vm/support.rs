//! Shared pieces of the VM end-to-end tests: a dev daemon in a persistent
//! test namespace (so it can be killed and restarted with its VMs alive),
//! the default Debian image, and the `banger` CLI run inside the namespace.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use banger_testkit::*;
use serde_json::Value;

/// The default image (built once, then taken from the content-keyed cache).
/// Serialized: tests of this binary run in parallel, and one build (two to
/// three minutes on a cold host) is enough for all of them.
pub fn default_image() -> banger_imagebuild::debian::BuiltImage {
    static ONE_BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = ONE_BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let cache = std::env::var_os("BANGER_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/banger"));
    let opts = banger_imagebuild::debian::DebianOptions::new(cache);
    banger_imagebuild::debian::build_debian(&opts, &mut |_| {})
        .unwrap_or_else(|e| panic!("building the default Debian image: {e:?}"))
}

/// One guest-booting test at a time in this binary: TCG guests on the
/// 2-core CI hosts are slow enough that three booting at once (plus the
/// rest of the suite) pushed a guest's work-disk mount past its timeout.
pub fn guest_slot() -> std::sync::MutexGuard<'static, ()> {
    static SLOT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SLOT.lock().unwrap_or_else(|e| e.into_inner())
}

/// PIDs of the processes whose command line contains every one of
/// `needles`.
pub fn pids_matching(needles: &[&str]) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if needles.iter().all(|n| cmdline.contains(n)) {
            pids.push(pid);
        }
    }
    pids
}

/// Kills, on drop, every VMM (QEMU or Firecracker) whose command line names
/// `dir` (the test's state directory): VMs outlive their daemon by design,
/// so a test that fails half-way must not leave its guests running. Only
/// processes this test started can name its private temp dir.
pub struct VmReaper(pub PathBuf);

/// The VMMs a dev daemon's journal (`root-journal.json`, anywhere under
/// `dir`) records, as (pid, start time): a jailed QEMU's argv names no
/// host path, so it is found through the journal.
fn journaled_vmms(dir: &Path) -> Vec<(u32, u64)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            } else if e.file_name() == "root-journal.json"
                && let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(journal) = serde_json::from_str::<Value>(&text)
            {
                for v in journal["vmms"].as_array().into_iter().flatten() {
                    if let (Some(pid), Some(start)) = (v["pid"].as_u64(), v["start_time"].as_u64())
                    {
                        found.push((pid as u32, start));
                    }
                }
            }
        }
    }
    found
}

impl Drop for VmReaper {
    fn drop(&mut self) {
        for (pid, start) in journaled_vmms(&self.0) {
            // Only while the pid still has the journaled start time.
            if banger_host::jail::start_time(pid).ok() == Some(start)
                && let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let dir = self.0.to_string_lossy().into_owned();
        for vmm in ["qemu-system", "firecracker"] {
            for pid in pids_matching(&[vmm, &dir]) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
    }
}

/// `bangerd --dev` inside the test namespace.
pub type Daemon = NsDaemon;

/// Start the daemon with `dir` as its home, its owner config pinning QEMU
/// as the default VMM: these tests boot under QEMU on every host, including
/// one whose KVM and `firecracker` on `PATH` would make Firecracker the
/// default. Keeps whatever else the config already says.
pub fn start_daemon(ns: &NetNs, dir: &Path) -> Daemon {
    let config = dir.join(".config/banger/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap_or_default();
    if !text.contains("default_vmm") {
        text.push_str("\n[vm]\ndefault_vmm = \"qemu\"\n");
        std::fs::write(&config, text).unwrap();
    }
    Daemon::start(ns, dir)
}

/// `banger ARGS` inside the namespace (so `vm ssh` reaches the guest).
pub fn banger(ns: &NetNs, d: &Daemon, args: &[&str]) -> Output {
    ns.exec(bin("banger"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .expect("running banger")
}

pub fn ok(ns: &NetNs, d: &Daemon, args: &[&str]) -> String {
    let out = banger(ns, d, args);
    assert!(
        out.status.success(),
        "banger {args:?} failed ({}):\n{}{}\n--- daemon log tail ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log_tail(d),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ok_json(ns: &NetNs, d: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(ns, d, &all)).expect("JSON on stdout")
}

/// (exit code, error code, messages) of a command that must fail.
pub fn fails(ns: &NetNs, d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = banger(ns, d, &all);
    assert!(!out.status.success(), "banger {args:?} should have failed");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON error from {args:?} ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let msgs = v["error"]["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(": ")
        })
        .unwrap_or_default();
    (
        out.status.code().unwrap_or(-1),
        v["error"]["code"].as_str().unwrap_or("").to_string(),
        msgs,
    )
}

pub fn log_tail(d: &Daemon) -> String {
    let text = d.proc.stderr_text();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The default image, through the real `banger image build debian` (a
/// cache hit after the first build on a host).
pub fn register_default_image(ns: &NetNs, d: &Daemon) {
    // Fill the cache first (once per test binary), so the daemon's build
    // below is a copy.
    default_image();
    let built = ok_json(ns, d, &["image", "build", "debian"]);
    assert_eq!(built["name"], "debian", "{built}");
}

/// Poll `f` until it returns `Some`, or panic after `secs`.
pub fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// PIDs of VMM processes of VM `id` (QEMU runs as `-name banger-<id8>`).
pub fn vmm_pids(id: &str) -> Vec<u32> {
    pids_matching(&["qemu-system", &format!("banger-{}", &id[..8])])
}

/// Run a command in the namespace; its stdout.
pub fn in_ns(ns: &NetNs, program: &str, args: &[&str]) -> String {
    let out: Output = ns
        .exec(program)
        .args(args)
        .output()
        .expect("running in netns");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a real-guest test starts from: root, the guest slot, a network
/// namespace, a state directory whose VMMs are reaped on drop, and a dev
/// daemon with the default image registered. Fields drop in order: the
/// daemon first, the slot last.
pub struct GuestLab {
    pub d: Daemon,
    _reaper: VmReaper,
    pub tmp: tempfile::TempDir,
    pub ns: NetNs,
    _slot: std::sync::MutexGuard<'static, ()>,
}

pub fn guest_lab() -> GuestLab {
    guest_lab_with("")
}

/// [`guest_lab`] with `config` as the owner's config file (before the
/// default VMM [`start_daemon`] adds when it names none).
pub fn guest_lab_with(config: &str) -> GuestLab {
    require_root();
    let slot = guest_slot();
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let reaper = VmReaper(tmp.path().to_path_buf());
    if !config.is_empty() {
        let path = tmp.path().join(".config/banger/config.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, config).unwrap();
    }
    let d = start_daemon(&ns, tmp.path());
    register_default_image(&ns, &d);
    GuestLab {
        d,
        _reaper: reaper,
        tmp,
        ns,
        _slot: slot,
    }
}

impl GuestLab {
    /// `vm create NAME --wait` of a small VM (1 vCPU, 512 MiB, 256 MiB
    /// work disk): its JSON.
    pub fn small_vm(&self, name: &str) -> Value {
        ok_json(
            &self.ns,
            &self.d,
            &[
                "vm", "create", name, "--wait", "--vcpus", "1", "--memory", "512", "--disk", "256M",
            ],
        )
    }
}

/// The pool's entry for `debian` once it has a ready clone.
pub fn ready_pool(lab: &GuestLab, secs: u64) -> Value {
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
