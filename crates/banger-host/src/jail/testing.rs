//! The long-lived jail probe the jail's own tests and the spawner test
//! share (behind `test-support`, which only dev-dependencies enable): a
//! jailed `sh` spawned as a VMM is, checked for what that spawn gives it.

use std::fs::File;
use std::os::fd::AsFd as _;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Jail, Limits};
use crate::runner::{Cmd, Runner, SpawnOptions, Spawned};

/// The limits a probe runs with.
pub const PROBE_LIMITS: Limits = Limits {
    memory: 1 << 30,
    processes: 50,
    open_files: 200,
    file_size: 1 << 20,
};

/// Start `sh -c "<script>; echo through >&7; exec sleep 300"` long-lived
/// as `uid` with [`PROBE_LIMITS`]: `dir/kernel` ("kernel bytes\n")
/// copied to `/kernel`, `dir/passed` opened read-write at fd 7, output
/// onto `dir/log`. Returns once "through" reached `dir/passed`.
pub fn start_probe(uid: u32, dir: &Path, script: &str) -> Spawned {
    std::fs::write(dir.join("kernel"), b"kernel bytes\n").unwrap();
    let kernel = File::open(dir.join("kernel")).unwrap();
    let passed_path = dir.join("passed");
    std::fs::write(&passed_path, b"").unwrap();
    let passed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&passed_path)
        .unwrap();
    let log = File::create(dir.join("log")).unwrap();
    let jail = Jail::new(uid, uid)
        .long_lived(PROBE_LIMITS)
        .copy_in(kernel.as_fd(), "kernel")
        .unwrap()
        .pass(passed.as_fd(), 7)
        .unwrap();
    let script = format!("{script}; echo through >&7; exec sleep 300");
    let spawned = Runner
        .spawn(
            &Cmd::new("sh").args(["-c", script.as_str()]).jail(jail),
            SpawnOptions {
                output: Some(log),
                run_as: None,
            },
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&passed_path)
        .unwrap()
        .contains("through")
    {
        assert!(
            Instant::now() < deadline,
            "nothing came through fd 7; log: {:?}",
            std::fs::read_to_string(dir.join("log"))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    spawned
}

/// `key`'s value in `/proc/<pid>/status`.
pub fn status_field(pid: u32, key: &str) -> String {
    status_field_of(&pid.to_string(), key)
}

/// `key`'s value in `/proc/<process>/status`, `process` a pid or a task
/// (`<pid>/task/<tid>`).
pub fn status_field_of(process: &str, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
        .to_string()
}

/// What a long-lived spawn gives the probe `pid`: `uid`, pid 1 of its
/// namespace, [`PROBE_LIMITS`], a session of its own, descriptors 0-2 and
/// 7 only.
pub fn check_probe(pid: u32, uid: u32) {
    assert_eq!(
        status_field(pid, "Uid").split_whitespace().next(),
        Some(uid.to_string().as_str())
    );
    assert_eq!(
        status_field(pid, "NSpid").split_whitespace().last(),
        Some("1")
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    for (name, value) in [
        ("Max file size", "1048576"),
        ("Max processes", "50"),
        ("Max open files", "200"),
        ("Max address space", "1073741824"),
    ] {
        let line = limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name}: {limits}"));
        assert!(line.contains(value), "{line}");
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_eq!(fields[3], pid.to_string(), "session id: {stat}");
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    fds.sort();
    assert_eq!(fds, [0, 1, 2, 7]);
}

/// Dropping the probe's handle leaves it running; then it is killed and
/// reaped here, as the helper reaps a VMM it started (it is this
/// process's child).
pub fn outlives_its_handle(spawned: Spawned) {
    let pid = spawned.pid();
    let pidfd = spawned.pidfd().try_clone_to_owned().unwrap();
    drop(spawned);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")),
        "the long-lived process went with its handle"
    );
    rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL).unwrap();
    rustix::process::waitpid(
        rustix::process::Pid::from_raw(pid as i32),
        rustix::process::WaitOptions::empty(),
    )
    .unwrap();
}

/// A cgroup2 child of this test process's own cgroup
/// (`banger-test-<pid>-<tag>`), made for one test and removed when
/// dropped (whatever is in it killed first, through `cgroup.kill`).
#[derive(Debug)]
pub struct TestCgroup {
    pub path: std::path::PathBuf,
}

impl TestCgroup {
    pub fn new(tag: &str) -> TestCgroup {
        let own = crate::probe::own_cgroup2_dir().unwrap();
        let path = own.join(format!("banger-test-{}-{tag}", std::process::id()));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("making the test cgroup {}: {e}", path.display()));
        TestCgroup { path }
    }

    /// Its `cgroup.procs`, opened write-only by this (root) process.
    pub fn procs_for_writing(&self) -> File {
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))
            .unwrap()
    }

    /// Its directory, opened by this (root) process.
    pub fn dir(&self) -> File {
        File::open(&self.path).unwrap()
    }

    /// The pids its `cgroup.procs` lists.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(self.path.join("cgroup.events"))
            .is_ok_and(|e| e.lines().any(|l| l == "populated 1"))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Children first (a failed test may leave the cgroups it made).
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.path) {
            eprintln!("removing the test cgroup {}: {e}", self.path.display());
        }
    }
}
