//! The jail against real namespaces, mounts, ids and processes (needs root).

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::time::Duration;

use std::os::fd::AsFd as _;

use super::*;
use crate::runner::{Cmd, Runner};

/// A uid no account has, distinct per test process.
fn jail_uid() -> u32 {
    3_100_000 + std::process::id() % 100_000
}

pub(super) fn processes_of(uid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
        if real == Some(uid) {
            found.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

pub(super) fn require_root() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "the jail tests need root (they clone namespaces and mount)"
    );
}

#[test]
fn a_jailed_tool_sees_only_usr_dev_and_its_binds_as_a_uid_without_groups() {
    require_root();
    let uid = jail_uid();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::write(&disk, b"before").unwrap();
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let f = File::open(&disk).unwrap();
    let granted = grant(f.as_fd(), uid, true, uid..uid + 1).unwrap();
    let jail = Jail::new(uid, uid).bind(f.as_fd(), "disk", true).unwrap();
    let script = "id -u; id -G; ls -A /; ls /dev; cat /disk; echo after > /disk; \
                  cat /etc/passwd 2>&1; ls /proc 2>&1; ls /tmp 2>&1; \
                  touch /new 2>&1; echo $$";
    let out = Runner
        .run(&Cmd::new("sh").args(["-c", script]).jail(jail))
        .unwrap();
    revoke(f.as_fd(), granted).unwrap();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], uid.to_string(), "{}", out.stdout);
    assert_eq!(lines[1], uid.to_string(), "{}", out.stdout);
    let root: Vec<&str> = out
        .stdout
        .split("\n")
        .skip(2)
        .take_while(|l| *l != "full")
        .collect();
    assert!(
        !root.contains(&"etc") && !root.contains(&"home") && !root.contains(&"proc"),
        "{root:?}"
    );
    assert!(
        root.contains(&"usr") && root.contains(&"disk") && root.contains(&"exe"),
        "{root:?}"
    );
    assert!(out.stdout.contains("before"), "{}", out.stdout);
    assert!(
        out.stdout.contains("/etc/passwd: No such file"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Read-only file system"),
        "{}",
        out.stdout
    );
    // Pid 1 of its own namespace.
    assert_eq!(lines.last().unwrap().trim(), "1", "{}", out.stdout);
    assert_eq!(std::fs::read(&disk).unwrap(), b"after\n");
    // The grant is gone, the mode is back.
    let m = std::fs::metadata(&disk).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert!(
        rustix::fs::getxattr(&disk, ACL_XATTR, &mut [0u8; 64]).is_err(),
        "an ACL is left"
    );
}

#[test]
fn a_jailed_tool_cannot_open_the_file_up_and_leaves_no_process_behind() {
    require_root();
    let uid = jail_uid() + 1;
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::write(&disk, b"x").unwrap();
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let f = File::open(&disk).unwrap();
    let granted = grant(f.as_fd(), uid, true, uid..uid + 1).unwrap();
    let jail = Jail::new(uid, uid).bind(f.as_fd(), "disk", true).unwrap();
    // Opens the disk up, then leaves a child holding it read-write.
    let hostile = "chmod 0666 /disk 2>&1; (exec 4<>/disk; exec sleep 300) & echo started";
    let out = Runner
        .run(
            &Cmd::new("sh")
                .args(["-c", hostile])
                .jail(jail)
                .timeout(Duration::from_secs(30)),
        )
        .unwrap();
    revoke(f.as_fd(), granted).unwrap();
    assert!(
        out.stdout.contains("Operation not permitted"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("started"), "{}", out.stdout);
    assert_eq!(processes_of(uid), Vec::<String>::new());
    assert_eq!(std::fs::metadata(&disk).unwrap().mode() & 0o7777, 0o600);
}

#[test]
fn a_range_in_use_is_refused_and_an_unused_one_accepted() {
    // root (0) is an account; this process runs with it.
    assert!(matches!(
        check_unused(0, 1, false),
        Err(RangeInUse::Account { id: 0, .. })
    ));
    // A process of the range (the test's own child, by its pid).
    let uid = jail_uid() + 3;
    let mut child = Runner
        .spawn(
            &Cmd::new("sleep").arg("30"),
            crate::runner::SpawnOptions {
                output: None,
                run_as: Some((uid, uid)),
            },
        )
        .unwrap();
    assert!(matches!(
        check_unused(uid, 1, true),
        Err(RangeInUse::Process { id, .. }) if id == uid
    ));
    check_unused(uid, 1, false).unwrap();
    let _ = child.kill();
    // banger's default range is nobody's account on the test hosts.
    check_unused(
        banger_proto::install::DEFAULT_JAIL_UID_BASE,
        banger_proto::install::DEFAULT_JAIL_UID_COUNT,
        false,
    )
    .unwrap();
}

#[test]
fn a_failing_step_is_named_and_root_is_refused() {
    require_root();
    let err = Runner
        .run(&Cmd::new("true").jail(Jail::new(0, 0)))
        .unwrap_err();
    assert!(err.to_string().contains("starting"), "{err}");
    assert!(
        Jail::new(5, 5)
            .bind(File::open("/").unwrap().as_fd(), "a/b", false)
            .is_err()
    );
}

#[test]
fn stdin_output_caps_and_timeouts_hold_in_the_jail() {
    require_root();
    let uid = jail_uid() + 2;
    let out = Runner
        .run(&Cmd::new("cat").stdin("hello").jail(Jail::new(uid, uid)))
        .unwrap();
    assert_eq!(out.stdout, "hello");
    let err = Runner
        .output(
            &Cmd::new("yes")
                .max_output(1 << 16)
                .jail(Jail::new(uid, uid)),
        )
        .unwrap_err();
    assert!(
        matches!(err, crate::runner::RunError::TooMuchOutput { .. }),
        "{err}"
    );
    let err = Runner
        .run(
            &Cmd::new("sleep")
                .arg("30")
                .timeout(Duration::from_millis(300))
                .jail(Jail::new(uid, uid)),
        )
        .unwrap_err();
    assert!(
        matches!(err, crate::runner::RunError::Timeout { .. }),
        "{err}"
    );
    assert_eq!(processes_of(uid), Vec::<String>::new());
    let _ = std::io::stdout().flush();
}

/// `Jail::bind_kvm` takes the KVM character device (10:232) only, at
/// once; and should a bind at `dev/` be anything but a device node all
/// the same, it is refused when the jail is prepared.
#[test]
fn only_a_device_node_is_bound_under_dev() {
    require_root();
    let uid = jail_uid();
    let file = tempfile::tempfile().unwrap();
    let null = File::open("/dev/null").unwrap();
    for fd in [file.as_fd(), null.as_fd()] {
        let e = Jail::new(uid, uid).bind_kvm(fd).unwrap_err();
        assert!(
            e.to_string().contains("not the character device 10:232"),
            "{e}"
        );
    }
    let mut jail = Jail::new(uid, uid);
    jail.binds.push(Bind {
        fd: Arc::new(file.as_fd().try_clone_to_owned().unwrap()),
        at: KVM_AT.to_string(),
        writable: true,
    });
    let e = Runner.run(&Cmd::new("true").jail(jail)).unwrap_err();
    let e = format!("{e:?}");
    assert!(e.contains("not a device node"), "{e}");
}

/// A character device node made in `dir` for a test: `name`, 0666,
/// `major:minor`, its times set to `STALE_TIME`; its `O_PATH|O_NOFOLLOW`
/// descriptor (what `bind_kvm` and `bind_tun` take).
fn test_node(dir: &std::path::Path, name: &str, major: u32, minor: u32) -> OwnedFd {
    let path = dir.join(name);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let stale = std::time::UNIX_EPOCH + Duration::from_secs(STALE_TIME as u64);
    let times = std::fs::FileTimes::new()
        .set_accessed(stale)
        .set_modified(stale);
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_times(times)
        .unwrap();
    rustix::fs::open(
        &path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

/// The times [`test_node`] gives its node.
const STALE_TIME: i64 = 1_000_000_000;

/// Hostile read of the jailed driver, F4: `/dev/kvm` and `/dev/net/tun`
/// were bound as writable mounts, so the jail's uid could set the host
/// node's timestamps through them (`touch`: `utimensat`). They are bound
/// read-only now; opening them read-write still works (a mount's
/// read-only flag does not apply to opening a device node), which is all
/// a VMM does with them. World-writable 0666 nodes made for the test
/// stand for the host's.
#[test]
fn device_binds_are_read_only_and_still_open_read_write() {
    require_root();
    let uid = jail_uid() + 3;
    let dir = tempfile::tempdir().unwrap();
    let kvm = test_node(dir.path(), "kvm", 10, 232);
    let tun = test_node(dir.path(), "tun", 10, 200);
    let jail = Jail::new(uid, uid)
        .bind_kvm(kvm.as_fd())
        .and_then(|j| j.bind_tun(tun.as_fd()))
        .unwrap();
    let script = "touch -c /dev/kvm 2>&1; touch -c /dev/net/tun 2>&1; \
                  exec 3<>/dev/kvm && echo kvm opened; exec 4<>/dev/net/tun && echo tun opened";
    let out = Runner
        .run(&Cmd::new("sh").args(["-c", script]).jail(jail))
        .unwrap();
    for node in [&kvm, &tun] {
        let st = rustix::fs::fstat(node).unwrap();
        assert_eq!(
            (st.st_mtime, st.st_atime),
            (STALE_TIME, STALE_TIME),
            "the jail changed a host node's times:\n{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("kvm opened"), "{}", out.stdout);
    assert!(out.stdout.contains("tun opened"), "{}", out.stdout);
    assert_eq!(processes_of(uid), Vec::<String>::new());
}
