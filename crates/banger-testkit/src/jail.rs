//! Jail uid ranges for the daemons tests start.

/// A jail uid range of this daemon's own (16 ids, distinct per test
/// process and per call): every daemon kills whatever runs with its range's
/// uids at start (docs/jail.md), so two daemons of concurrent tests must
/// not share one.
pub fn test_jail() -> banger_proto::install::InstallJail {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 256;
    banger_proto::install::InstallJail {
        uid_base: 1_900_000_000 + (std::process::id() % 10_000) * 4096 + n * 16,
        count: 16,
    }
}

/// [`test_jail`] as the `BANGER_DEV_JAIL_UIDS` variable `bangerd --dev`
/// reads.
pub fn dev_jail_env() -> (&'static str, String) {
    let j = test_jail();
    (
        "BANGER_DEV_JAIL_UIDS",
        format!("{}:{}", j.uid_base, j.count),
    )
}

/// The cgroup a daemon started by a test with jail range `uid_base` makes
/// for its VMs' cgroups (`banger_executor::VmCgroups::dev`:
/// `banger-jail-<uid_base>` beneath its own cgroup, which is this test
/// process's), removed when dropped — after the daemon it belongs to,
/// which must be declared before it. Left in place while a VM cgroup is
/// still in it (a VMM that outlived its daemon).
#[derive(Debug)]
pub struct JailCgroup {
    path: Option<std::path::PathBuf>,
}

impl JailCgroup {
    pub fn of(uid_base: u32) -> JailCgroup {
        JailCgroup {
            path: banger_host::probe::own_cgroup2_dir()
                .ok()
                .map(|own| own.join(format!("banger-jail-{uid_base}"))),
        }
    }

    /// For a `BANGER_DEV_JAIL_UIDS` value, `BASE:COUNT`.
    pub fn of_env(value: &str) -> JailCgroup {
        let base = value.split(':').next().and_then(|b| b.parse().ok());
        match base {
            Some(base) => JailCgroup::of(base),
            None => JailCgroup { path: None },
        }
    }
}

impl Drop for JailCgroup {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            match std::fs::remove_dir(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("removing the daemon's VM cgroup {}: {e}", path.display()),
            }
        }
    }
}
