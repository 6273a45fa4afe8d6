//! A long-lived jailed process (a VMM): descriptors at fixed numbers,
//! output onto a file, a file copied into its root, its own limits, no
//! parent-death signal, left running when its handle goes (needs root).

use std::time::{Duration, Instant};

use super::tests::{processes_of, require_root};
use std::os::fd::AsFd as _;

use super::*;
use crate::runner::{Cmd, Runner, SpawnOptions};

/// A uid no account has, distinct per test process and from the other
/// jail tests.
fn jail_uid() -> u32 {
    3_800_000 + std::process::id() % 100_000
}

#[test]
fn a_long_lived_jail_gets_its_descriptors_output_copy_and_limits_and_outlives_its_handle() {
    require_root();
    let uid = jail_uid();
    let dir = tempfile::tempdir().unwrap();
    // The modes the jail's root gives whatever this process's umask (the
    // installed helper's unit has UMask=0077): /dev must be searchable
    // and the copy readable by the jail uid.
    let script = "cat /kernel; ls -l /kernel; stat -c 'mode %n %a' /dev /kernel; \
                  cat /dev/null && echo null opened";
    let spawned = testing::start_probe(uid, dir.path(), script);
    let pid = spawned.pid();
    let out = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(out.contains("kernel bytes"), "{out}");
    assert!(out.contains("-r--r--r-- 1 0 0 13 "), "{out}");
    assert!(out.contains("mode /dev 755\nmode /kernel 444\n"), "{out}");
    assert!(out.contains("null opened"), "{out}");
    testing::check_probe(pid, uid);
    testing::outlives_its_handle(spawned);
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_of(uid).contains(&pid.to_string()) {
        assert!(Instant::now() < deadline, "{pid} survived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pass_numbers_and_copy_names_are_checked() {
    let f = File::open("/dev/null").unwrap();
    for n in [0, 1, 2, ERR_FD, 100] {
        assert!(Jail::new(5, 5).pass(f.as_fd(), n).is_err(), "{n}");
    }
    let j = Jail::new(5, 5).pass(f.as_fd(), 3).unwrap();
    assert!(j.pass(f.as_fd(), 3).is_err(), "a number twice");
    for name in ["usr", "dev", "exe", "lib", "a/b", "..", ""] {
        assert!(Jail::new(5, 5).copy_in(f.as_fd(), name).is_err(), "{name}");
    }
}

/// Two QEMUs launched at once: one failed with `Device or resource busy`.
/// Making a jail's root read-only fails while a file on it is open for
/// writing, and a jail cloned meanwhile by another thread held a copy of
/// the descriptor this one was writing its kernel copy through. Jails
/// with large copies started from many threads at once all start.
#[test]
fn jails_with_copies_started_at_once_all_start() {
    require_root();
    let uid = jail_uid() + 200_000;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("kernel");
    std::fs::write(&big, vec![7u8; 16 << 20]).unwrap();
    let limits = Limits {
        memory: 1 << 30,
        processes: 64,
        open_files: 128,
        file_size: 0,
    };
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    let mut errors = Vec::new();
                    for _ in 0..4 {
                        let kernel = File::open(&big).unwrap();
                        let jail = Jail::new(uid, uid)
                            .long_lived(limits)
                            .copy_in(kernel.as_fd(), "kernel")
                            .unwrap();
                        let cmd = Cmd::new("true").jail(jail);
                        match Runner.spawn(&cmd, SpawnOptions::default()) {
                            Ok(mut s) => {
                                let _ = s.wait_timeout(Duration::from_secs(10));
                            }
                            Err(e) => errors.push(format!("{:?}", e)),
                        }
                    }
                    errors
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(errors, Vec::<String>::new());
}

/// Hostile review of the VMM-jail fixes, finding 4: a copy was read to
/// end of file, so a file grown after its length was taken (the jail's
/// tmpfs sized for it, the caller's cap checked) was copied past that
/// length. `/proc/self/status` stands for such a file: `fstat` gives it
/// length 0, yet it reads bytes. The jail is refused, or its copy holds
/// exactly the length taken.
#[test]
fn a_copy_of_a_file_grown_after_its_length_was_taken_is_refused() {
    require_root();
    let uid = jail_uid() + 300_000;
    let grown = File::open("/proc/self/status").unwrap();
    let jail = Jail::new(uid, uid)
        .copy_in(grown.as_fd(), "kernel")
        .unwrap();
    let out = Runner.output(&Cmd::new("cat").arg("/kernel").jail(jail));
    eprintln!("{out:?}");
    match out {
        Err(e) => assert!(format!("{e:?}").contains("grew"), "{e:?}"),
        Ok(o) => assert_eq!(o.stdout, "", "copied past its length: {o:?}"),
    }
}

/// Design part 3 (per-VM cgroups): a jailed process joins the cgroup
/// whose `cgroup.procs` root opened, before it drops to its jail uid (the
/// uid has no right on the cgroup at all). `/proc/<pid>/cgroup` names the
/// test's cgroup (a child of this test's own) and that cgroup lists it;
/// a short-lived tool in the same jail runs there too, and `cgroup.kill`
/// empties it.
#[test]
fn a_jailed_process_joins_the_cgroup_whose_procs_descriptor_it_was_given() {
    require_root();
    let uid = jail_uid() + 400_000;
    let cg = testing::TestCgroup::new("join");
    let dir = tempfile::tempdir().unwrap();
    let procs = cg.procs_for_writing();
    let jail = Jail::new(uid, uid)
        .long_lived(testing::PROBE_LIMITS)
        .cgroup(cg.dir().as_fd(), procs.as_fd())
        .unwrap();
    let log = File::create(dir.path().join("log")).unwrap();
    let spawned = Runner
        .spawn(
            &Cmd::new("sleep").arg("300").jail(jail.clone()),
            SpawnOptions {
                output: Some(log),
                run_as: None,
            },
        )
        .unwrap();
    let pid = spawned.pid();
    let own = crate::probe::own_cgroup2_dir().unwrap();
    let mount = crate::probe::probe_cgroup_v2().cgroup2_mount.unwrap();
    let expected = format!("/{}", cg.path.strip_prefix(&mount).unwrap().display());
    let seen = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(
        crate::probe::cgroup2_path_in(&seen),
        Some(expected.as_str()),
        "{seen}"
    );
    assert_eq!(cg.pids(), [pid]);
    assert_eq!(
        testing::status_field(pid, "Uid").split_whitespace().next(),
        Some(uid.to_string().as_str())
    );
    // A tool (not long-lived, killed with its handle) joins it too.
    let tool_jail = Jail::new(uid, uid)
        .cgroup(cg.dir().as_fd(), procs.as_fd())
        .unwrap();
    let tool = Runner
        .spawn(
            &Cmd::new("sleep").arg("300").jail(tool_jail),
            SpawnOptions::default(),
        )
        .unwrap();
    let mut both = cg.pids();
    both.sort();
    let mut expected_pids = vec![pid, tool.pid()];
    expected_pids.sort();
    assert_eq!(both, expected_pids);
    drop(tool);
    assert_eq!(cg.pids(), [pid]);
    // This test's own cgroup never held the jailed process.
    let own_procs = std::fs::read_to_string(own.join("cgroup.procs")).unwrap();
    assert!(
        !own_procs.lines().any(|l| l == pid.to_string()),
        "{own_procs}"
    );
    std::fs::write(cg.path.join("cgroup.kill"), "1").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(cg.path.join("cgroup.events"))
        .unwrap()
        .lines()
        .any(|l| l == "populated 0")
    {
        assert!(Instant::now() < deadline, "{pid} survived cgroup.kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(spawned);
    drop(cg);
}

/// What a jailed perl reports of `socket(AF_INET)`, `socket(AF_NETLINK)`,
/// `socket(AF_UNIX)` and, for each tap named, opening `/dev/net/tun` and
/// attaching that tap by name (`TUNSETIFF` with the flags banger's taps
/// have): "ok" or the errno, one line each.
const NET_PROBE: &str = r#"
sub try { my ($what, $ok) = @_; print "$what ", ($ok ? "ok" : 0 + $!), "\n" }
try("inet", socket(my $a, 2, 1, 0));
try("netlink", socket(my $b, 16, 3, 0));
try("unix", socket(my $c, 1, 1, 0));
for my $tap (@ARGV) {
    sysopen(my $t, "/dev/net/tun", 2) or do { print "$tap open ", 0 + $!, "\n"; next };
    try($tap, ioctl($t, 0x400454ca, pack("a16 s x22", $tap, 0x5002)));
}
"#;

/// A Firecracker jail without its network handles: a namespace of its
/// own made by the clone, where the name of the tap its uid owns in the
/// test namespace is no tap (creating one: `EPERM`), and without
/// `bind_tun` there is no `/dev/net/tun` (`ENOENT`); an IP or netlink
/// socket is `EPERM` (the filter).
#[test]
fn a_jail_reaches_no_tap_of_its_cloners_namespace() {
    use crate::net::HostNet as _;
    require_root();
    let uid = jail_uid() + 400_000;
    let out = crate::net::netns::in_fresh_netns(|| {
        let net = crate::net::RealNet::new();
        net.create_tap("fcj-mine", uid).unwrap();
        let tun = rustix::fs::open(
            crate::net::TUN_DEVICE,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let run = |jail: Jail| {
            let cmd = Cmd::new("perl")
                .args(["-e", NET_PROBE, "fcj-mine"])
                .jail(jail);
            let o = Runner.output(&cmd).unwrap();
            assert!(o.status.success(), "{o:?}");
            o.stdout
        };
        let jail = Jail::new(uid, uid);
        (run(jail.clone().bind_tun(tun.as_fd()).unwrap()), run(jail))
    });
    let (eperm, enoent) = (libc::EPERM, libc::ENOENT);
    assert_eq!(
        out.0,
        format!("inet {eperm}\nnetlink {eperm}\nunix ok\nfcj-mine {eperm}\n")
    );
    assert_eq!(
        out.1,
        format!("inet {eperm}\nnetlink {eperm}\nunix ok\nfcj-mine open {enoent}\n")
    );
}

/// A jail's network namespace holds nothing of the host's, but a
/// process that enters it (root, with the jail's [`JailNet`]) could bind
/// an abstract UNIX socket there: the jailed perl's connect to one is
/// `EPERM` where Landlock scopes abstract sockets, while a path socket
/// bound into the jail still answers. Where the kernel has no such scope
/// (before 6.12) the abstract half is not run, and says so.
#[test]
fn a_jail_cannot_reach_an_abstract_socket_of_its_namespace_where_landlock_scopes() {
    use std::os::linux::net::SocketAddrExt as _;
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::net::{SocketAddr, UnixListener};
    require_root();
    let uid = jail_uid() + 500_000;
    let scoped = scope_support();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let name = format!("banger-jail-scope-{}", std::process::id());
    let script = r#"
$| = 1;
open(my $go, "<&=3") or die "fd 3: $!"; my $line = <$go>;
sub try { my ($what, $addr) = @_;
    socket(my $s, 1, 1, 0) or die "socket: $!";
    print "$what ", (connect($s, $addr) ? "ok" : 0 + $!), "\n" }
try("abstract", pack("S a*", 1, "\0" . $ARGV[0]));
try("path", pack("S a*", 1, "/sock/s"));
print "done\n";
"#;
    let out = crate::net::netns::in_fresh_netns(|| {
        let _path = UnixListener::bind(dir.path().join("s")).unwrap();
        std::fs::set_permissions(dir.path().join("s"), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        let sock = File::open(dir.path()).unwrap();
        let jail = Jail::new(uid, uid)
            .bind(sock.as_fd(), "sock", false)
            .unwrap();
        let mut probe = testing::WaitingProbe::start(jail, script, &[name.as_str()], dir.path());
        // This thread enters the jail's namespace (it ends with the test
        // namespace's closure) and binds the abstract name there.
        let net = probe.net.take().unwrap();
        rustix::thread::move_into_link_name_space(
            net.ns(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let _abstract = UnixListener::bind_addr(&addr).unwrap();
        probe.go_and_wait()
    });
    match scoped {
        Ok(()) => assert_eq!(out, format!("abstract {}\npath ok\ndone\n", libc::EPERM)),
        Err(why) => {
            not_run("jail Landlock scope, abstract-socket half", &why);
            assert!(out.ends_with("path ok\ndone\n"), "{out}");
        }
    }
}

/// A jailed process may not signal a process outside its Landlock domain
/// where Landlock scopes signals. Its pid namespace already hides every
/// process of the host (its parent is pid 0 to it), so the process outside
/// the domain is put where it can be named: a `sleep` of the jail's own
/// uid that `nsenter` starts in the jail's pid namespace (pid 2 there),
/// outside the jail's mount namespace and Landlock domain. The jailed
/// perl's `kill(SIGTERM, 2)` is `EPERM`; without the scope it would
/// succeed (same uid). The jail's network namespace is made by its
/// cloner ([`Jail::net_handles`], as Firecracker's is), and an IP or
/// netlink socket is still `EPERM` there (the filter). Where the kernel
/// has no such scope the signal half is not run, and says so.
#[test]
fn a_jail_cannot_signal_a_process_outside_its_domain_where_landlock_scopes() {
    use std::os::unix::fs::PermissionsExt as _;
    require_root();
    let uid = jail_uid() + 600_000;
    let scoped = scope_support();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // ESRCH (3) until the sleeper is in the namespace; then one SIGTERM.
    let script = r#"
sub try { my ($what, $ok) = @_; print "$what ", ($ok ? "ok" : 0 + $!), "\n" }
try("inet", socket(my $a, 2, 1, 0));
try("netlink", socket(my $b, 16, 3, 0));
my $until = time + 20;
while (!kill(0, 2) && $! == 3 && time < $until) { select(undef, undef, undef, 0.02) }
try("kill", kill("TERM", 2));
"#;
    let out = crate::net::netns::in_fresh_netns(|| {
        let log = dir.path().join("log");
        // Long-lived: output onto a file (a tool's jail has no room to write one).
        let jail = Jail::new(uid, uid)
            .net_handles()
            .long_lived(testing::PROBE_LIMITS);
        let mut perl = Runner
            .spawn(
                &Cmd::new("perl").args(["-e", script]).jail(jail),
                SpawnOptions {
                    output: Some(File::create(&log).unwrap()),
                    run_as: None,
                },
            )
            .unwrap();
        let target = perl.pid().to_string();
        let ids = uid.to_string();
        let mut sleeper = Runner
            .spawn(
                &Cmd::new("nsenter").args([
                    "--target",
                    target.as_str(),
                    "--pid",
                    "--setuid",
                    ids.as_str(),
                    "--setgid",
                    ids.as_str(),
                    "--",
                    "sleep",
                    "30",
                ]),
                SpawnOptions::default(),
            )
            .unwrap();
        let exited = perl.wait_timeout(Duration::from_secs(25)).unwrap();
        // The jail's pid 1 gone, the kernel kills the sleeper too.
        let _ = sleeper.kill();
        let _ = perl.kill();
        let out = std::fs::read_to_string(&log).unwrap();
        assert!(exited.is_some_and(|s| s.success()), "{exited:?} {out}");
        out
    });
    let eperm = libc::EPERM;
    assert!(
        out.starts_with(&format!("inet {eperm}\nnetlink {eperm}\n")),
        "{out}"
    );
    match scoped {
        Ok(()) => assert!(out.ends_with(&format!("kill {eperm}\n")), "{out}"),
        Err(why) => {
            not_run("jail Landlock scope, signal half", &why);
            assert!(out.ends_with("kill ok\n"), "{out}");
        }
    }
}

/// Hostile read of the cgroup branch, finding 2: the check trusted the
/// name `/proc/self/fd` gives a descriptor, so a cgroup's `cgroup.freeze`
/// bound over its `cgroup.procs` (here in this test's own mount
/// namespace) passed as `cgroup.procs`, and a jail would have frozen the
/// cgroup instead of joining it. With the directory's descriptor, the
/// descriptor must be the directory's own `cgroup.procs`, reached beneath
/// it without crossing a mount: refused.
#[test]
fn a_cgroup_freeze_bound_over_cgroup_procs_is_refused() {
    require_root();
    let uid = jail_uid() + 700_000;
    let cg = testing::TestCgroup::new("bound");
    let refused = crate::net::netns::in_fresh_netns(|| {
        rustix::mount::mount_bind(cg.path.join("cgroup.freeze"), cg.path.join("cgroup.procs"))
            .unwrap();
        let procs = cg.procs_for_writing();
        let freeze = std::fs::metadata(cg.path.join("cgroup.freeze")).unwrap();
        let opened = rustix::fs::fstat(&procs).unwrap();
        // The descriptor opened at `cgroup.procs` is `cgroup.freeze`.
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(opened.st_ino, freeze.ino());
        Jail::new(uid, uid)
            .cgroup(cg.dir().as_fd(), procs.as_fd())
            .err()
    });
    let e = refused.expect("a cgroup.freeze bound over cgroup.procs was taken");
    assert!(e.to_string().contains("cgroup descriptor"), "{e}");
    // Without the bind, the same directory's cgroup.procs is taken.
    Jail::new(uid, uid)
        .cgroup(cg.dir().as_fd(), cg.procs_for_writing().as_fd())
        .unwrap();
}

/// Say that part of a test could not run on this kernel where `.ci/run`
/// counts it (`^NOT RUN:` in the test log): straight to the process's
/// stderr, on a line of its own, since libtest keeps a passing test's
/// `eprintln!` to itself.
fn not_run(what: &str, why: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(format!("\nNOT RUN: {what}: {why}\n").as_bytes());
}

/// Design step 5 (own network namespace; the hostile read of the
/// host-network jail): a jail with its network handles, cloned on this
/// thread (dev mode's shape), runs in the namespace J whose descriptor
/// came back, not this thread's, and this thread is back in its own
/// namespace; a tap moved into J is the only one it attaches; it sees no
/// link of the test namespace; an abstract name it binds is not reachable
/// from the test namespace (`ECONNREFUSED`); and the tap comes back by
/// the socket opened in J with its index.
#[test]
fn a_jail_with_network_handles_is_alone_in_its_namespace_with_the_tap_moved_in() {
    require_root();
    let uid = jail_uid() + 800_000;
    let dir = tempfile::tempdir().unwrap();
    let name = format!("banger-fcnet-{}", std::process::id());
    let (out, connect) = crate::net::netns::in_fresh_netns(|| {
        testing::netns_probe(uid, dir.path(), &name, testing::NetnsChecks::DIRECT)
    });
    assert_eq!(
        (out.as_str(), connect),
        (testing::NETNS_PROBE_SEES, Some(libc::ECONNREFUSED))
    );
}
