//! The unit texts, and the holder's shell run as systemd would.

use banger_proto::install::{InstallPaths, Owner};

use super::*;

fn meta() -> InstallMeta {
    InstallMeta {
        owner: Owner {
            name: "dev".into(),
            uid: 1000,
            gid: 1000,
        },
        version: "0.1.0".into(),
        installed_at: "2026-01-01T00:00:00Z".into(),
        paths: InstallPaths {
            bin_dir: "/usr/local/bin".into(),
            state_dir: "/var/lib/banger".into(),
            runtime_dir: "/run/banger".into(),
            root_socket: "/run/banger-root/root.sock".into(),
            root_state_dir: "/var/lib/banger-root".into(),
            state_dev: None,
        },
        vmm: Default::default(),
        network: Default::default(),
        jail: Default::default(),
    }
}

const INSTALL: &str = "/etc/banger/install.toml";

/// Every `Key=value` line of a unit, comments and sections left out.
fn settings(unit: &str) -> Vec<(&str, &str)> {
    unit.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('[') && !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .unwrap_or_else(|| panic!("bad line {l:?}"))
        })
        .collect()
}

fn get<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    settings(unit)
        .into_iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect()
}

fn check(unit: &str, key: &str, want: &[&str]) {
    assert_eq!(get(unit, key), want, "{key} in\n{unit}");
}

fn owner() -> String {
    owner_unit(&meta(), Path::new(INSTALL), Path::new("/home/dev")).unwrap()
}

fn helper() -> String {
    helper_unit(
        &meta(),
        Path::new(INSTALL),
        Some(Path::new("/sys/fs/cgroup")),
    )
    .unwrap()
}

#[test]
fn owner_unit_runs_as_the_owner_without_privilege() {
    let u = owner();
    check(&u, "User", &["dev"]);
    check(&u, "Type", &["notify"]);
    check(
        &u,
        "ExecStart",
        &["/usr/local/bin/bangerd --install-file /etc/banger/install.toml"],
    );
    check(&u, "CapabilityBoundingSet", &[""]);
    check(&u, "AmbientCapabilities", &[""]);
    check(&u, "NoNewPrivileges", &["yes"]);
    check(&u, "UMask", &["0077"]);
    check(&u, "Requires", &[HELPER_UNIT]);
    assert!(get(&u, "After")[0].starts_with(HELPER_UNIT));
}

#[test]
fn owner_unit_directories_match_the_metadata() {
    let u = owner();
    check(&u, "MemoryDenyWriteExecute", &["yes"]);
    check(&u, "StateDirectory", &["banger"]);
    check(&u, "StateDirectoryMode", &["0700"]);
    check(&u, "RuntimeDirectory", &["banger"]);
    check(&u, "RuntimeDirectoryMode", &["0755"]);
    check(&u, "ProtectHome", &["tmpfs"]);
    // The owner's home only: workspaces, keys, config.
    check(&u, "BindPaths", &["-/home/dev"]);
}

#[test]
fn helper_unit_has_only_the_capabilities_in_use() {
    let u = helper();
    assert!(get(&u, "User").is_empty(), "the helper runs as root");
    check(
        &u,
        "CapabilityBoundingSet",
        &[
            "CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER \
           CAP_SETUID CAP_SETGID CAP_KILL CAP_SYS_ADMIN CAP_SETPCAP",
        ],
    );
    // The helper's lock-down keeps exactly these outside systemd too.
    let names: Vec<&str> = banger_host::jail::HELPER_CAPS
        .iter()
        .map(|&(_, name)| name)
        .collect();
    check(&u, "CapabilityBoundingSet", &[names.join(" ").as_str()]);
    // Tools and VMMs are started as the owner: set*id must be allowed.
    assert!(!get(&u, "SystemCallFilter")[1].contains("@setuid"));
    check(&u, "AmbientCapabilities", &[""]);
    check(
        &u,
        "ExecStart",
        &["/usr/local/bin/bangerd-root --install-file /etc/banger/install.toml"],
    );
    check(&u, "StateDirectory", &["banger-root"]);
    check(&u, "RuntimeDirectory", &["banger-root"]);
    check(
        &u,
        "ReadWritePaths",
        &[
            "/proc/sys/net/ipv4/ip_forward -/proc/sys/net/ipv6/conf /var/lib/banger \
           -/sys/fs/cgroup/system.slice/banger-vms.service",
        ],
    );
    // Loop and dm nodes appear on demand: the device policy, not a
    // private /dev, limits what it opens.
    assert!(get(&u, "PrivateDevices").is_empty());
    check(&u, "DevicePolicy", &["closed"]);
    // QEMU TCG, started by it, needs writable-executable memory.
    check(&u, "MemoryDenyWriteExecute", &["no"]);
    // VMM children survive a helper restart.
    check(&u, "KillMode", &["process"]);
    assert!(get(&owner(), "KillMode").is_empty());
    let allowed = get(&u, "DeviceAllow");
    assert_eq!(
        allowed.len(),
        HELPER_DEVICES.len() + HELPER_DEVICE_CLASSES.len()
    );
    for d in HELPER_DEVICES.iter().chain(&HELPER_DEVICE_CLASSES) {
        assert!(allowed.contains(&format!("{d} rw").as_str()), "{d}");
    }
}

/// Design part 3, hostile read of the cgroup branch finding 1: the
/// helper's unit delegates nothing (a restarted helper's new main
/// process must be allowed into its unit's cgroup, which cgroup2
/// refuses once controllers are enabled there for children); it wants
/// the holder and makes only the holder's cgroup writable, beneath the
/// cgroup2 mount the host has (hybrid: `unified/`); the rest of the
/// cgroup file system stays read-only. Without cgroup2 nothing of it is
/// writable.
#[test]
fn the_helper_unit_delegates_nothing_and_writes_only_the_holders_cgroup() {
    let u = helper();
    assert!(get(&u, "Delegate").is_empty(), "{u}");
    check(&u, "ProtectControlGroups", &["yes"]);
    check(&u, "Wants", &["banger-vms.service"]);
    assert!(get(&u, "Requires").is_empty(), "{u}");
    assert!(
        get(&u, "After")
            .iter()
            .any(|a| a.split(' ').any(|w| w == "banger-vms.service")),
        "{u}"
    );
    let paths = get(&u, "ReadWritePaths")[0];
    assert!(
        paths.ends_with(" -/sys/fs/cgroup/system.slice/banger-vms.service"),
        "{paths}"
    );
    assert!(!paths.contains("bangerd-root.service"), "{paths}");
    assert!(get(&owner(), "Delegate").is_empty());
    let hybrid = helper_unit(
        &meta(),
        Path::new(INSTALL),
        Some(Path::new("/sys/fs/cgroup/unified")),
    )
    .unwrap();
    let paths = get(&hybrid, "ReadWritePaths")[0];
    assert!(
        paths.ends_with(" -/sys/fs/cgroup/unified/system.slice/banger-vms.service"),
        "{paths}"
    );
    let none = helper_unit(&meta(), Path::new(INSTALL), None).unwrap();
    let paths = get(&none, "ReadWritePaths")[0];
    assert!(!paths.contains("cgroup"), "{paths}");
    assert!(get(&none, "Delegate").is_empty());
}

/// The holder holds the delegation and keeps its cgroup with one
/// `sleep` moved into its `keep` child before it counts as started;
/// it starts at boot, and nothing ties it to the daemons. Without
/// cgroup2 it runs nothing.
#[test]
fn the_holder_unit_keeps_its_cgroup_and_holds_the_delegation() {
    let u = vms_unit(Some(Path::new("/sys/fs/cgroup"))).unwrap();
    check(&u, "Type", &["forking"]);
    check(
        &u,
        "ExecStart",
        &[
            "/bin/sh -c 'c=; while read -r l; do case \"$$l\" in 0::*) c=\"$${l#0::}\";; \
           esac; done </proc/self/cgroup; [ \"$$c\" = \"$$1\" ] || { echo \"in the cgroup \
           $$c, not $$1\" >&2; exit 1; }; [ -d \"$$0/keep\" ] || mkdir \"$$0/keep\" || exit 1; \
           /bin/sleep infinity </dev/null >/dev/null 2>&1 & echo $$! > \"$$0/keep/cgroup.procs\"' \
           /sys/fs/cgroup/system.slice/banger-vms.service /system.slice/banger-vms.service",
        ],
    );
    check(&u, "Delegate", &["pids memory cpu"]);
    check(&u, "WantedBy", &["multi-user.target"]);
    // Stopping it kills the VMs: nothing here ties it to the daemons.
    for key in ["Requires", "BindsTo", "PartOf", "Restart", "KillMode"] {
        assert!(get(&u, key).is_empty(), "{key} in\n{u}");
    }
    let hybrid = vms_unit(Some(Path::new("/sys/fs/cgroup/unified"))).unwrap();
    assert!(
        get(&hybrid, "ExecStart")[0].ends_with(
            " /sys/fs/cgroup/unified/system.slice/banger-vms.service /system.slice/banger-vms.service"
        ),
        "{hybrid}"
    );
    let none = vms_unit(None).unwrap();
    check(&none, "Type", &["oneshot"]);
    check(&none, "RemainAfterExit", &["yes"]);
    check(&none, "ExecStart", &["/bin/true"]);
    check(&none, "Delegate", &["pids memory cpu"]);
    assert_eq!(vms_unit(None).unwrap(), vms_unit(None).unwrap());
}

/// The holder's shell (its `ExecStart=` script, systemd's `$$`
/// undone), run here: in a cgroup other than the one it is told is
/// its own it makes nothing and fails (hostile read of the holder, L1:
/// `mkdir -p` made the missing path and moved the `sleep` there, the
/// unit then inactive with `Result=success`); in its own it makes
/// `keep` (only that, no parents) and writes the `sleep`'s pid there.
#[test]
fn the_holders_shell_holds_only_its_own_cgroup() {
    let u = vms_unit(Some(Path::new("/sys/fs/cgroup"))).unwrap();
    let exec = get(&u, "ExecStart")[0];
    let script = &exec[exec.find('\'').unwrap() + 1..exec.rfind('\'').unwrap()];
    let script = script.replace("$$", "$");
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup2 line")
        .to_string();
    // The `sleep` a run started in `dir`, killed by its pid (also when
    // a run that should have refused did not).
    let stop_sleep = |dir: &Path| -> Vec<u8> {
        let Ok(text) = std::fs::read_to_string(dir.join("keep/cgroup.procs")) else {
            return Vec::new();
        };
        let Some(pid) = text
            .trim()
            .parse()
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return Vec::new();
        };
        let cmdline =
            std::fs::read(format!("/proc/{}/cmdline", pid.as_raw_nonzero())).unwrap_or_default();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        cmdline
    };
    let run = |dir: &Path, rel: &str| {
        #[allow(
            clippy::disallowed_methods,
            reason = "the unit's own shell, run as systemd would"
        )]
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .arg(dir)
            .arg(rel)
            .output()
            .unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    // Told another cgroup: refuses, makes nothing (not even parents).
    let moved = tmp.path().join("gone/banger-vms.service");
    let out = run(&moved, "/system.slice/banger-vms.service");
    stop_sleep(&moved);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not /system.slice/banger-vms.service"),
        "{out:?}"
    );
    assert!(!tmp.path().join("gone").exists());
    // Its own: `keep` made beneath the existing directory, the
    // `sleep`'s pid written to `keep/cgroup.procs` (a plain file here).
    let out = run(tmp.path(), &own);
    let cmdline = stop_sleep(tmp.path());
    assert!(out.status.success(), "{out:?}");
    assert!(cmdline.starts_with(b"/bin/sleep\0infinity"), "{cmdline:?}");
    // Its own, but no directory to make `keep` in: fails.
    assert!(!run(&tmp.path().join("missing"), &own).status.success());
}

#[test]
fn both_units_are_hardened_alike() {
    for u in [owner(), helper()] {
        for (key, value) in [
            ("ProtectSystem", "strict"),
            ("PrivateTmp", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("ProtectKernelModules", "yes"),
            ("ProtectControlGroups", "yes"),
            ("SystemCallArchitectures", "native"),
            ("NotifyAccess", "main"),
        ] {
            check(&u, key, &[value]);
        }
        // QEMU installs its own seccomp filter (and offers `-sandbox`
        // only where it could).
        assert!(get(&u, "SystemCallFilter")[0].starts_with("@system-service"));
        assert!(get(&u, "SystemCallFilter")[0].ends_with(" seccomp"));
        // Its seccomp filter answers every openat2 with ENOSYS, and both
        // daemons open files beneath directories with openat2.
        assert!(get(&u, "RestrictSUIDSGID").is_empty());
    }
    check(&owner(), "RestrictNamespaces", &["yes"]);
    // The jail's namespaces, never a user namespace.
    check(&helper(), "RestrictNamespaces", &["mnt pid ipc uts net"]);
    assert_eq!(
        get(&owner(), "SystemCallFilter")[0],
        "@system-service seccomp"
    );
    // The jail's Landlock scope: the ruleset is made by the spawner
    // and entered by the child, both under the helper unit's filter.
    assert_eq!(
        get(&helper(), "SystemCallFilter")[0],
        "@system-service @mount landlock_create_ruleset landlock_restrict_self seccomp"
    );
}

#[test]
fn paths_outside_what_systemd_manages_are_refused() {
    let mut m = meta();
    m.paths.state_dir = "/srv/banger".into();
    let err = owner_unit(&m, Path::new(INSTALL), Path::new("/home/dev")).unwrap_err();
    assert!(err.to_string().contains("/srv/banger"), "{err}");
    assert!(err.to_string().contains("/var/lib"), "{err}");

    let mut m = meta();
    m.paths.root_socket = "/run/a/b/root.sock".into();
    assert!(matches!(
        helper_unit(&m, Path::new(INSTALL), None),
        Err(UnitError::NotUnder { .. })
    ));
}

#[test]
fn values_that_need_escaping_are_refused() {
    let err = owner_unit(&meta(), Path::new(INSTALL), Path::new("/home/a b")).unwrap_err();
    assert!(matches!(err, UnitError::Unsafe { .. }), "{err}");
    let mut m = meta();
    m.owner.name = "dev%n".into();
    assert!(owner_unit(&m, Path::new(INSTALL), Path::new("/home/dev")).is_err());
    assert!(owner_unit(&meta(), Path::new("relative"), Path::new("/home/dev")).is_err());
}

#[test]
fn generation_is_deterministic() {
    assert_eq!(owner(), owner());
    assert_eq!(helper(), helper());
}
