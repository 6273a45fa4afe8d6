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

/// Waits for a line on fd 3, binds an abstract name (`$ARGV[0]`), tries
/// `TUNSETIFF` on each tap named after `$ARGV[1]`, looks `$ARGV[1]` up
/// (`SIOCGIFINDEX`) and lists the links with addresses (`SIOCGIFCONF`),
/// both from an `AF_UNIX` socket; prints "done" and sleeps holding the
/// abstract name.
pub const NETNS_PROBE: &str = r#"
$| = 1;
sub try { my ($what, $ok) = @_; print "$what ", ($ok ? "ok" : 0 + $!), "\n" }
open(my $go, "<&=3") or die "fd 3: $!"; my $line = <$go>;
my ($name, $link, @taps) = @ARGV;
socket(my $a, 1, 1, 0) or die "socket: $!";
try("bind", bind($a, pack("S a*", 1, "\0" . $name)) && listen($a, 1));
for my $tap (@taps) {
    sysopen(my $t, "/dev/net/tun", 2) or do { print "$tap open ", 0 + $!, "\n"; next };
    try($tap, ioctl($t, 0x400454ca, pack("a16 s x22", $tap, 0x5002)));
}
socket(my $u, 1, 2, 0) or die "socket: $!";
try("ifindex", ioctl($u, 0x8933, my $r = pack("a16 x24", $link)));
my $buf = "\0" x 1600;
my $ifc = pack("i x4 Q", length $buf, unpack("Q", pack("p", $buf)));
ioctl($u, 0x8912, $ifc) or die "SIOCGIFCONF: $!";
my ($len) = unpack("i", $ifc);
my @names = map { unpack("Z16", substr($buf, $_ * 40, 16)) } 0 .. $len / 40 - 1;
print "ifconf ", join(",", @names), "\n";
print "done\n";
sleep 30;
"#;

/// What the own-namespace jail probe prints ([`NETNS_PROBE`] on
/// `fcj-br`, `fcj-mine`, `fcj-other`) when `fcj-mine` alone was moved
/// into the jail's namespace: it binds its abstract name, attaches
/// `fcj-mine`, and `fcj-other` (same tun owner, left in the test
/// namespace) is `EPERM` (the name is no tap in its namespace, and
/// creating one needs `CAP_NET_ADMIN`); the bridge's name is unknown
/// (`ENODEV`) and no link has an address (`lo` is down). Before (a jail
/// sharing the test namespace, 0fb8fcd): `fcj-other ok`, `ifindex ok`,
/// `ifconf lo,fcj-br`, and the test's connect to the abstract name `ok`.
pub const NETNS_PROBE_SEES: &str = "bind ok\nfcj-mine ok\nfcj-other 1\nifindex 19\nifconf \ndone\n";

/// What [`netns_probe`] checks through `/proc/<pid>/ns/net` of other
/// processes (needs `CAP_SYS_PTRACE`, which a locked-down helper lacks).
#[derive(Debug, Clone, Copy)]
pub struct NetnsChecks {
    /// That the jailed child is in the namespace handed back.
    pub child: bool,
    /// That this process (the spawner, by pid) is back in the calling
    /// thread's namespace.
    pub cloner: Option<u32>,
}

impl NetnsChecks {
    /// A jail cloned by the calling thread (dev mode's shape).
    pub const DIRECT: NetnsChecks = NetnsChecks {
        child: true,
        cloner: None,
    };
}

/// A long-lived jailed perl (`script`, `args`) in `jail` with its network
/// handles, that waits for a line on its fd 3 before it goes on; its
/// output onto `dir/probe.log`.
#[derive(Debug)]
pub struct WaitingProbe {
    pub spawned: Spawned,
    pub net: Option<super::JailNet>,
    go: std::os::fd::OwnedFd,
    log: std::path::PathBuf,
}

impl WaitingProbe {
    pub fn start(jail: Jail, script: &str, args: &[&str], dir: &Path) -> WaitingProbe {
        let (go_r, go) = super::pipe().unwrap();
        let log = dir.join("probe.log");
        let jail = jail
            .long_lived(PROBE_LIMITS)
            .net_handles()
            .pass(go_r.as_fd(), 3)
            .unwrap();
        let mut spawned = Runner
            .spawn(
                &Cmd::new("perl").arg("-e").arg(script).args(args).jail(jail),
                SpawnOptions {
                    output: Some(File::create(&log).unwrap()),
                    run_as: None,
                },
            )
            .unwrap();
        let net = spawned.take_jail_net();
        assert!(net.is_some(), "no network handles");
        WaitingProbe {
            spawned,
            net,
            go,
            log,
        }
    }

    /// Let it go on; its output once it printed "done".
    pub fn go_and_wait(&mut self) -> String {
        rustix::io::write(&self.go, b"go\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = std::fs::read_to_string(&self.log).unwrap();
            if out.contains("done\n") {
                return out;
            }
            assert!(Instant::now() < deadline, "{out}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WaitingProbe {
    fn drop(&mut self) {
        let _ = self.spawned.kill();
    }
}

/// [`NETNS_PROBE`] in a jail of `uid` with its network handles, run from
/// the calling thread's (test) namespace with a bridge and two taps of
/// `uid`, `fcj-mine` moved into the jail's namespace and back: its output
/// and this namespace's connect to its abstract name `name` (`None`: it
/// connected).
pub fn netns_probe(uid: u32, dir: &Path, name: &str, checks: NetnsChecks) -> (String, Option<i32>) {
    use crate::net::HostNet as _;
    use rustix::fs::{Mode, OFlags};
    use std::os::linux::net::SocketAddrExt as _;
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::net::{SocketAddr, UnixStream};
    let net = crate::net::RealNet::new();
    net.create_bridge("fcj-br").unwrap();
    net.add_address(
        "fcj-br",
        crate::net::Ipv4Cidr::new([10, 9, 0, 1].into(), 24),
    )
    .unwrap();
    net.create_tap("fcj-mine", uid).unwrap();
    net.create_tap("fcj-other", uid).unwrap();
    let mine = net.link("fcj-mine").unwrap().unwrap();
    let mac = net.link_mac("fcj-mine").unwrap();
    let tun = rustix::fs::open(
        crate::net::TUN_DEVICE,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    let here = || std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
    let home = here();
    let jail = Jail::new(uid, uid).bind_tun(tun.as_fd()).unwrap();
    let mut probe = WaitingProbe::start(
        jail,
        NETNS_PROBE,
        &[name, "fcj-br", "fcj-mine", "fcj-other"],
        dir,
    );
    assert_eq!(here(), home, "this thread stayed in the jail's namespace");
    let jnet = probe.net.take().unwrap();
    let j = rustix::fs::fstat(jnet.ns()).unwrap().st_ino;
    assert_ne!(j, home);
    let ns_of = |pid: u32| {
        std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .unwrap()
            .ino()
    };
    if checks.child {
        assert_eq!(
            ns_of(probe.spawned.pid()),
            j,
            "the child is not in the namespace handed back"
        );
    }
    if let Some(cloner) = checks.cloner {
        assert_eq!(
            ns_of(cloner),
            home,
            "the cloner stayed in the jail's namespace"
        );
    }
    net.move_link_to_netns("fcj-mine", mine.index, jnet.ns())
        .unwrap();
    let out = probe.go_and_wait();
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let connect = UnixStream::connect_addr(&addr)
        .err()
        .map(|e| e.raw_os_error().unwrap_or(0));
    let host = rustix::fs::open(
        "/proc/thread-self/ns/net",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    net.move_link_back(jnet.rtnl(), "fcj-mine", mine.index, host.as_fd())
        .unwrap();
    let back = net.link("fcj-mine").unwrap().unwrap();
    assert_eq!((back.index, back.tap_owner), (mine.index, Some(uid)));
    assert_eq!(net.link_mac("fcj-mine").unwrap(), mac);
    drop(probe);
    for link in ["fcj-br", "fcj-mine", "fcj-other"] {
        net.delete_link(link).unwrap();
    }
    (out, connect)
}
