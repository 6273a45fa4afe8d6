//! The jail spawner and the helper's lock-down, as `bangerd-root` uses them
//! (hostile review F1), in a process of its own: this test's `main` forks
//! the spawner while it has one thread, locks itself down, and then may no
//! longer mount or make a namespace on any thread, yet still runs jailed
//! tools, through the spawner, as its own children. Needs root.
#![allow(clippy::disallowed_methods)] // re-runs this test binary as a child

use std::ffi::OsStr;
use std::io::BufRead as _;
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use banger_host::jail::spawner::testing::{RawBind, oversized, request};
use banger_host::jail::{self, Jail};
use banger_host::runner::{CHILD_PATH, Cmd, Runner, resolve};

/// The role of a re-run of this binary that starts a spawner, prints its
/// pid and waits to be killed.
const ROLE: &str = "BANGER_SPAWNER_TEST_ROLE";

fn main() {
    if std::env::var_os(ROLE).is_some_and(|r| r == "parent") {
        let pid = jail::spawner::start(range(), &[]).unwrap();
        // A second child holds a copy of the socket, so the spawner sees no
        // EOF when this process dies: only its parent-death signal ends it.
        // The test kills it by its pid, printed after the spawner's.
        // SAFETY: fork with one thread; the child sleeps in a raw call.
        let holder = unsafe { libc::fork() };
        if holder == 0 {
            // SAFETY: as above.
            unsafe { libc::sleep(60) };
            std::process::exit(0);
        }
        println!("{pid} {holder}");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "the spawner test needs root"
    );
    // The whole test in a network namespace of its own (the spawner forked
    // later is in it too): the jails with network handles below make a
    // bridge and taps here.
    // SAFETY: CLONE_NEWNET alone, while this process has one thread.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .expect("unshare(CLONE_NEWNET) needs root");
    // The re-run first: once this process is locked down it has no
    // CAP_SETPCAP left to hand a spawner of its child's.
    let tests: [(&str, fn()); 2] = [
        (
            "the_spawner_dies_with_its_parent",
            the_spawner_dies_with_its_parent,
        ),
        ("the_spawner_and_a_locked_down_helper", locked_down),
    ];
    for (name, test) in tests {
        eprintln!("test {name} ...");
        test();
        eprintln!("test {name} ... ok");
    }
}

/// A jail range no account has, distinct per test process.
fn range() -> std::ops::Range<u32> {
    let base = 3_600_000 + (std::process::id() % 50_000) * 16;
    base..base + 16
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
        .to_string()
}

fn status_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
}

/// The calls the lock-down refuses, each with arguments that fail some
/// other way (or harmlessly work) without it: (call, errno or 0).
fn forbidden_calls() -> Vec<(&'static str, i32)> {
    let errno = |r: libc::c_long| {
        if r < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        } else {
            0
        }
    };
    let missing = c"/nonexistent-banger-spawner-test";
    // SAFETY: each call takes valid NUL-terminated strings or none; a
    // clone that works is a fork whose child exits at once and is reaped.
    unsafe {
        let unshare = errno(libc::unshare(libc::CLONE_NEWNS).into());
        let mount = errno(
            libc::mount(
                std::ptr::null(),
                missing.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT,
                std::ptr::null(),
            )
            .into(),
        );
        let open_tree = errno(libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            missing.as_ptr(),
            libc::OPEN_TREE_CLONE,
        ));
        // open_tree_attr (Linux 6.15): clones a tree with no move_mount.
        let open_tree_attr = errno(libc::syscall(
            467,
            libc::AT_FDCWD,
            missing.as_ptr(),
            libc::OPEN_TREE_CLONE,
            std::ptr::null::<u8>(),
            0usize,
        ));
        // An unknown command (EINVAL without the filter: the helper holds
        // CAP_SYS_ADMIN, which bpf(2) takes for CAP_BPF).
        let bpf = errno(libc::syscall(
            libc::SYS_bpf,
            -1i32,
            std::ptr::null::<u8>(),
            0u32,
        ));
        // No attributes (EFAULT without the filter).
        let perf = errno(libc::syscall(
            libc::SYS_perf_event_open,
            std::ptr::null::<u8>(),
            0i32,
            -1i32,
            -1i32,
            0u64,
        ));
        let pid = libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWNS | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        );
        if pid == 0 {
            libc::_exit(0);
        }
        let clone = errno(pid);
        if pid > 0 {
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
        vec![
            ("unshare(CLONE_NEWNS)", unshare),
            ("mount", mount),
            ("open_tree", open_tree),
            ("open_tree_attr", open_tree_attr),
            ("clone(CLONE_NEWNS)", clone),
            ("bpf", bpf),
            ("perf_event_open", perf),
        ]
    }
}

/// A word the spawner, a fork of this process, has at the same address.
static SCRATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Each way the helper could take the spawner over, and how it ended: an
/// errno's name, "ok", or how the spawner refused a bind of `/proc`.
fn reach_into(spawner: u32, uid: u32) -> Vec<(&'static str, String)> {
    let name = |r: libc::c_long| {
        if r >= 0 {
            return "ok".to_string();
        }
        match std::io::Error::last_os_error().raw_os_error().unwrap() {
            libc::EPERM => "EPERM".into(),
            libc::EACCES => "EACCES".into(),
            e => format!("errno {e}"),
        }
    };
    let word = 0u64;
    let local = libc::iovec {
        iov_base: &word as *const u64 as *mut libc::c_void,
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: SCRATCH.as_ptr() as *mut libc::c_void,
        iov_len: 8,
    };
    // SAFETY: both iovecs name 8 valid bytes; the remote word is a static
    // of this binary that the spawner never reads.
    let vm = name(unsafe {
        libc::process_vm_writev(spawner as i32, &local, 1, &remote, 1, 0) as libc::c_long
    });
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(spawner as i32).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    // SAFETY: pidfd_getfd with integer arguments; a descriptor it returns
    // is closed at once.
    let getfd = unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), 3, 0);
        let n = name(fd);
        if fd >= 0 {
            libc::close(fd as i32);
        }
        n
    };
    let open = |path: String, flags| match rustix::fs::open(
        path.as_str(),
        flags | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(_) => "ok".to_string(),
        Err(rustix::io::Errno::PERM) => "EPERM".into(),
        Err(rustix::io::Errno::ACCESS) => "EACCES".into(),
        Err(e) => format!("{e}"),
    };
    let mem = open(format!("/proc/{spawner}/mem"), rustix::fs::OFlags::RDWR);
    let root = open(
        format!("/proc/{spawner}/root"),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
    );
    let proc = std::fs::File::open("/proc").unwrap();
    let bind = RawBind {
        fd: proc.as_fd(),
        name: "proc",
        writable: true,
    };
    let bound = match request(uid, uid, &[bind], &["true"], None, &[]) {
        Ok(()) => "ok".to_string(),
        Err(e) if e.to_string().contains("not on a file system") => "refused".into(),
        Err(e) => format!("refused: {e}"),
    };
    vec![
        ("process_vm_writev", vm),
        ("pidfd_getfd", getfd),
        ("open mem O_RDWR", mem),
        ("open root", root),
        ("bind /proc", bound),
    ]
}

fn locked_down() {
    let range = range();
    let uid = range.start + 1;
    // With a second thread, neither a fork nor the lock-down (review of
    // F1, finding 3).
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let second = std::thread::spawn(move || rx.recv());
    let early = (
        jail::spawner::start(range.clone(), &[&std::env::temp_dir()]).map_err(|e| e.to_string()),
        jail::lock_down().map_err(|e| e.to_string()),
    );
    drop(tx);
    second.join().unwrap().unwrap_err();
    let many = "jail spawner: 2 threads, not one".to_string();
    assert_eq!(early, (Err(many.clone()), Err(many)), "with two threads");
    // The joined thread leaves /proc/self/task a moment after.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read_dir("/proc/self/task").unwrap().count() > 1 {
        assert!(std::time::Instant::now() < deadline, "the thread lingers");
        std::thread::sleep(Duration::from_millis(10));
    }
    let spawner = jail::spawner::start(range.clone(), &[&std::env::temp_dir()]).unwrap();
    // Only CAP_SYS_ADMIN (21), CAP_NET_ADMIN (12), CAP_SETUID (7),
    // CAP_SETGID (6), in every set.
    let status = status_of(spawner);
    for set in ["CapBnd", "CapPrm", "CapEff"] {
        assert_eq!(status_field(&status, set), "00000000002010c0", "{status}");
    }
    // Design step 5: a jail with its network handles, cloned by the
    // spawner, is in the namespace the spawner handed back, and the
    // spawner is back in its own (checked here, while this process may
    // still read both through /proc).
    net_handles_through_the_spawner(
        range.start + 2,
        jail::testing::NetnsChecks {
            child: true,
            cloner: Some(spawner),
        },
    );
    for set in ["CapInh", "CapAmb"] {
        assert_eq!(status_field(&status, set), "0000000000000000", "{status}");
    }
    // Block device nodes for the bind checks below, made while this
    // process may (the lock-down drops CAP_MKNOD).
    let nodes = tempfile::tempdir().unwrap();
    let node = |name: &str, major: u32| {
        let path = nodes.path().join(name);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::BlockDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(major, 0),
        )
        .unwrap();
        // O_PATH: the device itself is never opened.
        rustix::fs::open(
            &path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap()
    };
    let (scsi, looped) = (node("scsi", 8), node("loop", 7));
    let me = std::process::id();
    let filters = |s: &str| status_field(s, "Seccomp_filters").parse::<u32>().unwrap();
    let before = filters(&status_of(me));
    jail::lock_down().unwrap();

    // Refused on this thread and on one started after the lock-down.
    let here = forbidden_calls();
    let there = std::thread::spawn(forbidden_calls).join().unwrap();
    let all_eperm: Vec<_> = here.iter().map(|(c, _)| (*c, libc::EPERM)).collect();
    assert_eq!(here, all_eperm, "on the main thread");
    assert_eq!(there, all_eperm, "on another thread");
    // open_tree that does not clone (systemd's sd-device opens mounts
    // so) still works (review of F1, finding 5).
    // SAFETY: open_tree with a NUL-terminated path; its descriptor is
    // closed at once.
    let opened = unsafe {
        let fd = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            libc::OPEN_TREE_CLOEXEC,
        );
        let e = std::io::Error::last_os_error();
        if fd >= 0 {
            libc::close(fd as i32);
        }
        (fd >= 0).then_some(()).ok_or(e.to_string())
    };
    assert_eq!(opened, Ok(()), "open_tree without OPEN_TREE_CLONE");
    assert_eq!(filters(&status_of(me)), before + 1);
    assert_eq!(status_field(&status_of(me), "NoNewPrivs"), "1");
    // CAP_SETPCAP (8), which the spawner needed for its bounding set, is
    // gone from every set of the locked-down process.
    for set in ["CapBnd", "CapPrm", "CapEff"] {
        let bits = u64::from_str_radix(&status_field(&status_of(me), set), 16).unwrap();
        assert_eq!(bits & 1 << 8, 0, "{set}");
    }

    // The helper cannot reach into the spawner (hostile review of F1,
    // finding 1): no CAP_SYS_PTRACE, the spawner not dumpable, the calls
    // refused, no bind of a pseudo file system.
    let bits = u64::from_str_radix(&status_field(&status_of(me), "CapEff"), 16).unwrap();
    let reach = reach_into(spawner, uid);
    assert_eq!(
        (bits & 1 << 19, &reach[..]),
        (
            0,
            &[
                ("process_vm_writev", "EPERM".to_string()),
                ("pidfd_getfd", "EPERM".to_string()),
                ("open mem O_RDWR", "EACCES".to_string()),
                ("open root", "EACCES".to_string()),
                ("bind /proc", "refused".to_string()),
            ][..]
        ),
        "CAP_SYS_PTRACE, then how each reach into the spawner ended"
    );

    // A jailed tool through the spawner: its uid, pid 1, its bind, its
    // limits, its filter (unshare of a user namespace refused).
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::write(&disk, b"the disk\n").unwrap();
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = std::fs::File::open(&disk).unwrap();
    let jailed = || {
        Jail::new(uid, uid)
            .bind(file.as_fd(), "disk", false)
            .unwrap()
    };
    let script = "id -u; echo $$; cat /disk; ulimit -n; ulimit -c; \
                  unshare -U true 2>/dev/null && echo userns || echo no-userns";
    let out = Runner
        .run(&Cmd::new("sh").args(["-c", script]).jail(jailed()))
        .unwrap();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            uid.to_string().as_str(),
            "1",
            "the disk",
            "256",
            "0",
            "no-userns"
        ],
        "{out:?}"
    );
    // The child is this process's, not the spawner's.
    let sleep = resolve(OsStr::new("sleep")).unwrap();
    let env = [("PATH".into(), CHILD_PATH.into())];
    let mut child = jail::spawn(
        &jailed(),
        &sleep,
        OsStr::new("sleep"),
        &["30".into()],
        &env,
        false,
        jail::Output::Piped,
    )
    .unwrap();
    let status = status_of(child.pid());
    assert_eq!(status_field(&status, "PPid"), me.to_string(), "{status}");
    child.kill().unwrap();
    assert!(child.wait().is_ok());

    long_lived_through_the_spawner(uid + 1, me);
    cgroup_through_the_spawner(uid + 1);
    // The locked-down process moves a tap into the jail's namespace and
    // back with the handles alone (it may neither setns nor read another
    // uid's /proc/<pid>/ns).
    net_handles_through_the_spawner(
        uid + 2,
        jail::testing::NetnsChecks {
            child: false,
            cloner: None,
        },
    );

    // Refusals: root, an id outside the range, a bad bind name, a cut
    // message, one descriptor too many, a message past the size limit.
    let argv = ["true"];
    let refused = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert!(e.to_string().contains("jail spawner"), "{what}: {e}");
        e.to_string()
    };
    let e = refused(request(0, uid, &[], &argv, None, &[]), "uid 0");
    assert!(e.contains("root or outside"), "{e}");
    refused(request(uid, 0, &[], &argv, None, &[]), "gid 0");
    for outside in [range.start - 1, range.end, 70_000] {
        let e = refused(request(outside, outside, &[], &argv, None, &[]), "outside");
        assert!(e.contains("outside the jail range"), "{e}");
    }
    for name in ["../etc", "exe", "a/b", ""] {
        let bind = RawBind {
            fd: file.as_fd(),
            name,
            writable: true,
        };
        let e = refused(request(uid, uid, &[bind], &argv, None, &[]), name);
        assert!(e.contains("bind name"), "{name:?}: {e}");
    }
    let e = refused(request(uid, uid, &[], &argv, Some(20), &[]), "cut");
    assert!(e.contains("short message"), "{e}");
    // Past what the spawner's control buffer holds: the kernel cuts the
    // descriptor list (MSG_CTRUNC).
    let extra: Vec<_> = (0..60).map(|_| file.as_fd()).collect();
    let e = refused(request(uid, uid, &[], &argv, None, &extra), "64 fds");
    assert!(e.contains("truncated"), "{e}");
    let e = refused(request(uid, uid, &[], &argv, None, &extra[..1]), "5 fds");
    assert!(e.contains("more descriptors"), "{e}");
    let e = refused(oversized(), "oversized");
    assert!(e.contains("truncated"), "{e}");
    // Binds only where the helper's callers put them (second read of F1,
    // finding 5): a file on another file system than the allowed one
    // (/dev/shm here, the test's temporary directory allowed), a block
    // device neither loop nor device-mapper, a character device.
    let shm = tempfile::NamedTempFile::new_in("/dev/shm").unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    // Read-only: a writable bind's size is asked of the device itself.
    let bind = |fd| {
        [RawBind {
            fd,
            name: "disk",
            writable: false,
        }]
    };
    let outside: Vec<String> = [shm.as_file().as_fd(), scsi.as_fd(), null.as_fd()]
        .into_iter()
        .map(|fd| match request(uid, uid, &bind(fd), &argv, None, &[]) {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        })
        .collect();
    assert!(
        outside[0].contains("not on a file system") && outside[1].contains("8:0"),
        "{outside:?}"
    );
    assert!(outside[2].contains("CharacterDevice"), "{outside:?}");
    // The tun clone device at its place only, itself only (opened
    // O_PATH|O_NOFOLLOW), as KVM's.
    let tun = rustix::fs::open(
        "/dev/net/tun",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let at_tun = |fd, writable| {
        [RawBind {
            fd,
            name: "dev/net/tun",
            writable,
        }]
    };
    request(uid, uid, &at_tun(tun.as_fd(), false), &argv, None, &[]).unwrap();
    // Device binds are read-only mounts (the node still opens for
    // writing): a writable one is refused.
    let e = refused(
        request(uid, uid, &at_tun(tun.as_fd(), true), &argv, None, &[]),
        "writable tun",
    );
    assert!(e.contains("a writable device bind"), "{e}");
    let e = refused(
        request(uid, uid, &at_tun(null.as_fd(), false), &argv, None, &[]),
        "null at tun",
    );
    assert!(e.contains("not the character device 10:200"), "{e}");
    request(uid, uid, &bind(looped.as_fd()), &argv, None, &[]).unwrap();
    request(uid, uid, &bind(file.as_fd()), &argv, None, &[]).unwrap();
    // And it still serves a good one.
    request(uid, uid, &[], &argv, None, &[]).unwrap();

    // A stalled spawner (stopped here): the call fails within its deadline
    // and every later one fails too, none reads the late answer (review
    // of F1, finding 4). Last: the spawner is of no use after. The
    // stalled request is a `sleep 30`: before the call returns, the
    // spawner is killed and whatever runs as the jail uid with it, so no
    // child starts late on a disk the caller has given up (second read
    // of F1, finding 3).
    let holder = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(spawner as i32).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    // A long-lived jailed process of another uid of the range, cloned by
    // the spawner as the helper's child (a QEMU): the failed exchange's
    // clean-up must leave it running (third read of F1, with the QEMU
    // jail: every jailed child of the helper in a pid namespace of its
    // own was killed, every VM of the helper with it).
    let neighbour = Runner
        .spawn(
            &Cmd::new("sleep")
                .arg("60")
                .jail(Jail::new(uid + 1, uid + 1).long_lived(jail::Limits {
                    memory: 256 << 20,
                    processes: 64,
                    open_files: 128,
                    file_size: 0,
                })),
            banger_host::runner::SpawnOptions {
                output: None,
                run_as: None,
            },
        )
        .unwrap();
    // Another caller's tool of the same jail uid, running when the
    // exchange fails: killed with the rest of the uid, but reaped by its
    // own caller, who learns how it ended (third read of F1, finding c:
    // the clean-up reaped it, and the caller's wait by pid failed with
    // `ECHILD` or could reap another child given the recycled pid).
    let other_tool = {
        let jail = jailed();
        std::thread::spawn(move || Runner.run(&Cmd::new("sleep").arg("30").jail(jail)))
    };
    let started = std::time::Instant::now() + Duration::from_secs(10);
    while processes_of(uid).is_empty() {
        assert!(
            std::time::Instant::now() < started,
            "the other tool never ran"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (stalled, spawner_gone, late) = stall(&holder, &jailed);
    let other_tool = other_tool.join().unwrap().map(|o| o.stdout);
    let left = processes_of(uid);
    let neighbour_alive = neighbour.pidfd_alive();
    let _ = rustix::process::pidfd_send_signal(neighbour.pidfd(), rustix::process::Signal::KILL);
    drop(neighbour);
    let stalled = stalled
        .expect("an answer within 10 s")
        .expect_err("stalled");
    let chain = |e: &dyn std::error::Error| {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    };
    let (stalled, late) = (chain(&stalled), chain(&late.expect_err("after a stall")));
    assert!(stalled.contains("did not answer within 1s"), "{stalled}");
    assert!(late.contains("spawner is dead"), "{late}");
    assert!(
        neighbour_alive,
        "another uid's long-lived jailed process was killed"
    );
    let other_tool = chain(&other_tool.expect_err("killed"));
    assert!(
        other_tool.contains("signal 9") || other_tool.contains("SIGKILL"),
        "the other tool's caller: {other_tool}"
    );
    assert_eq!(
        (spawner_gone, left),
        (true, Vec::<String>::new()),
        "the spawner gone and nothing of the jail uid left after a stall"
    );
}

/// Whether the process behind `pidfd` has exited (its pidfd readable).
fn exited(pidfd: &std::os::fd::OwnedFd) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    let now = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(n) if n > 0)
}

/// `pid (comm)` of every process with `uid` among its real, effective,
/// saved or file-system uids.
fn processes_of(uid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().filter(|n| n.parse::<u32>().is_ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let uids = status_field(&status, "Uid");
        if uids.split_whitespace().any(|u| u == uid.to_string()) {
            found.push(format!("{pid} ({})", status_field(&status, "Name")));
        }
    }
    found
}

/// Stop the spawner, run a jailed `sleep 30` with a 1 s deadline, then
/// let the spawner go on (if it still lives) and run a jailed `true`:
/// what the first call returned within 10 s (`None` if nothing), whether
/// the spawner had exited by then, and the second call's result.
fn stall(
    spawner: &std::os::fd::OwnedFd,
    jailed: &dyn Fn() -> Jail,
) -> (
    Option<Result<banger_host::runner::Output, banger_host::runner::RunError>>,
    bool,
    Result<banger_host::runner::Output, banger_host::runner::RunError>,
) {
    jail::spawner::testing::set_deadline(Duration::from_secs(1));
    let signal = rustix::process::pidfd_send_signal;
    signal(spawner, rustix::process::Signal::STOP).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let jail = jailed();
    let call = std::thread::spawn(move || {
        let _ = tx.send(Runner.run(&Cmd::new("sleep").arg("30").jail(jail)));
    });
    let first = rx.recv_timeout(Duration::from_secs(10)).ok();
    let gone = exited(spawner);
    // Gone by now once the failed call has killed it.
    let _ = signal(spawner, rustix::process::Signal::CONT);
    call.join().unwrap();
    // Time for a late answer, and a late child, to come.
    std::thread::sleep(Duration::from_millis(500));
    (first, gone, Runner.run(&Cmd::new("true").jail(jailed())))
}

/// A VMM's spawn in the locked-down process, which only the spawner can
/// make: a descriptor passed at a fixed number, a root-only file's copy in
/// the jail's root, output onto a file, its own limits and session, still
/// this process's child, left running when its handle drops.
fn long_lived_through_the_spawner(uid: u32, me: u32) {
    let dir = tempfile::tempdir().unwrap();
    let spawned = jail::testing::start_probe(uid, dir.path(), "cat /kernel");
    let out = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert_eq!(out, "kernel bytes\n");
    let pid = spawned.pid();
    let status = status_of(pid);
    assert_eq!(status_field(&status, "PPid"), me.to_string(), "{status}");
    jail::testing::check_probe(pid, uid);
    jail::testing::outlives_its_handle(spawned);
}

/// Design part 3: a jail's `cgroup.procs` descriptor crosses to the
/// spawner, whose clone (the locked-down process's child) joins that
/// cgroup (the decoder's refusals are `jail::spawner::tests`').
fn cgroup_through_the_spawner(uid: u32) {
    let cg = jail::testing::TestCgroup::new("spawner");
    let procs = cg.procs_for_writing();
    let jail = Jail::new(uid, uid)
        .long_lived(jail::testing::PROBE_LIMITS)
        .cgroup(cg.dir().as_fd(), procs.as_fd())
        .unwrap();
    let spawned = Runner
        .spawn(
            &Cmd::new("sleep").arg("300").jail(jail),
            banger_host::runner::SpawnOptions::default(),
        )
        .unwrap();
    assert_eq!(cg.pids(), [spawned.pid()]);
    jail::testing::outlives_its_handle(spawned);
    drop(cg);
}

/// [`jail::testing::netns_probe`] through the spawner, as `uid`.
fn net_handles_through_the_spawner(uid: u32, checks: jail::testing::NetnsChecks) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("banger-spawner-netns-{}-{uid}", std::process::id());
    let (out, connect) = jail::testing::netns_probe(uid, dir.path(), &name, checks);
    assert_eq!(
        (out.as_str(), connect),
        (jail::testing::NETNS_PROBE_SEES, Some(libc::ECONNREFUSED))
    );
}

/// A re-run of this binary starts a spawner; killing it kills the spawner.
fn the_spawner_dies_with_its_parent() {
    let mut parent = std::process::Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "parent")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pids: Vec<i32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (spawner, holder) = (pids[0], pids[1]);
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(spawner).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    assert_eq!(
        status_field(&status_of(spawner as u32), "PPid"),
        parent.id().to_string()
    );
    parent.kill().unwrap();
    parent.wait().unwrap();
    let mut fds = [rustix::event::PollFd::new(
        &pidfd,
        rustix::event::PollFlags::IN,
    )];
    let five = rustix::time::Timespec {
        tv_sec: 5,
        tv_nsec: 0,
    };
    let ready = rustix::event::poll(&mut fds, Some(&five)).unwrap();
    // SAFETY: kill of the holder this test's child forked (a pid not yet
    // reused: its exit is observed by nobody before this).
    unsafe { libc::kill(holder, libc::SIGKILL) };
    assert_eq!(ready, 1, "the spawner outlived its parent by 5 s");
}
