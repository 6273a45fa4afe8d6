//! Test support: a process that outlives `SIGKILL` while the test wants.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A process frozen in a cgroup-v1 freezer group of its own: it takes no
/// signal, `SIGKILL` included, until thawed (the kernel holds it in the
/// refrigerator, state `D`), as a VMM stuck in the kernel would. Thawed,
/// and the group removed, when dropped.
#[derive(Debug)]
pub struct Frozen {
    group: PathBuf,
}

impl Frozen {
    /// Freeze `pid`. Needs root and the v1 freezer at
    /// `/sys/fs/cgroup/freezer` (this lab's hosts have it).
    pub fn new(pid: u32) -> Frozen {
        let group = PathBuf::from(format!(
            "/sys/fs/cgroup/freezer/banger-frozen-{}-{pid}",
            std::process::id()
        ));
        std::fs::create_dir(&group)
            .unwrap_or_else(|e| panic!("the v1 freezer group {}: {e}", group.display()));
        let frozen = Frozen { group };
        std::fs::write(frozen.group.join("cgroup.procs"), pid.to_string()).unwrap();
        std::fs::write(frozen.group.join("freezer.state"), "FROZEN").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(frozen.group.join("freezer.state")).unwrap() != "FROZEN\n" {
            assert!(Instant::now() < deadline, "pid {pid} did not freeze");
            std::thread::sleep(Duration::from_millis(10));
        }
        frozen
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::fs::write(self.group.join("freezer.state"), "THAWED");
        // The thawed process dies of the pending SIGKILL; the group can go
        // once it holds no task.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.group).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
