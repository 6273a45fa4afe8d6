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

/// The cgroup a daemon started by a test makes for its VMs' cgroups
/// (`banger_executor::VmCgroups::dev`: `banger-<hash of its journal's
/// path>` beneath its own cgroup, which is this test process's), removed
/// when dropped — after the daemon it belongs to, which must be declared
/// before it — with the emptied VM cgroups in it. Left in place while a
/// VM cgroup still has a process (a VMM that outlived its daemon). A test
/// that restarts a daemon starts the new one before the old one's guard
/// drops: guards of one path are counted, and only the last one removes it
/// (the old guard removed the new daemon's cgroup, and its next launch
/// failed with ENOENT).
#[derive(Debug)]
pub struct JailCgroup {
    path: Option<std::path::PathBuf>,
}

/// The live guards of each path.
static GUARDS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

impl JailCgroup {
    /// For the daemon whose executor journal is `journal`.
    pub fn of(journal: &std::path::Path) -> JailCgroup {
        let path = banger_host::probe::own_cgroup2_dir()
            .ok()
            .map(|own| own.join(banger_executor::vm_cgroup_dev_name(journal)));
        if let Some(p) = &path {
            GUARDS.lock().unwrap().push(p.clone());
        }
        JailCgroup { path }
    }

    /// For `bangerd --dev --state-dir STATE` (its journal is
    /// `STATE/root-journal.json`).
    pub fn of_dev(state: &std::path::Path) -> JailCgroup {
        // As the daemon's layout makes it absolute.
        let state = std::path::absolute(state).unwrap();
        JailCgroup::of(&state.join("root-journal.json"))
    }

    /// For `bangerd-root` of the install metadata at `install_file`.
    pub fn of_helper(install_file: &std::path::Path) -> JailCgroup {
        let meta = banger_proto::install::InstallMeta::load(install_file).unwrap();
        JailCgroup::of(&meta.paths.root_state_dir.join("journal.json"))
    }
}

impl Drop for JailCgroup {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let mut guards = GUARDS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(i) = guards.iter().position(|g| g == path) {
                guards.swap_remove(i);
            }
            if guards.contains(path) {
                // Another daemon of the same state directory uses it.
                return;
            }
            // The VM cgroups its daemon did not see end (a VMM still
            // running when the daemon was stopped), once empty.
            if let Ok(entries) = std::fs::read_dir(path) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            match std::fs::remove_dir(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("removing the daemon's VM cgroup {}: {e}", path.display()),
            }
        }
    }
}

/// Make `path` a KVM device node (character device 10:232) of mode 0666:
/// what a jailed VMM's uid (no groups) needs `/dev/kvm` to be, for a test
/// to bind over a host's 0660 node in a mount namespace of its daemon's.
pub fn kvm_node(path: &std::path::Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(10, 232),
    )
    .unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
}
