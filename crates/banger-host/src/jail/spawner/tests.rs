use std::os::unix::ffi::OsStringExt as _;
use std::sync::Arc;

use super::super::{Bind, Limits};
use super::wire::{check_bind_fd, dm_major, dm_major_in};
use super::*;

mod cgroup;
mod devices;
use devices::char_node;
mod mounts;

fn devnull() -> OwnedFd {
    rustix::fs::open(
        c"/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap()
}

fn request(jail: Jail) -> Request {
    Request {
        jail,
        program: devnull(),
        argv0: "e2fsck".into(),
        args: vec!["-n".into(), OsString::from_vec(b"\xff/disk".to_vec())],
        env: vec![("PATH".into(), "/usr/bin".into())],
        stdio: [devnull(), devnull(), devnull()],
    }
}

/// Encode, then decode with the descriptors duplicated as `SCM_RIGHTS`
/// would (new numbers, same files).
fn round_trip(r: &Request, range: std::ops::Range<u32>) -> std::io::Result<Request> {
    let w = r.encode();
    let fds: Vec<OwnedFd> = w
        .fds
        .iter()
        .map(|f| f.try_clone_to_owned().unwrap())
        .collect();
    Request::decode(
        Reader {
            bytes: &w.bytes,
            fds: fds.into_iter(),
        },
        &range,
        &[temp_dev()],
    )
}

/// The mount of the temporary directory, where the tests' binds are.
fn temp_dev() -> MountKey {
    bind_roots(&[std::env::temp_dir().as_path()]).unwrap()[0]
}

fn inode(fd: BorrowedFd<'_>) -> (u64, u64) {
    let st = rustix::fs::fstat(fd).unwrap();
    (st.st_dev, st.st_ino)
}

#[test]
fn every_jail_field_crosses_the_wire_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
    let (disk, tap, serial, kernel, initrd) = (
        file("disk"),
        file("tap"),
        file("serial"),
        file("kernel"),
        file("initrd"),
    );
    let limits = Limits {
        memory: (5 << 30) + 7,
        processes: 258,
        open_files: 1024,
        file_size: (3 << 40) + 1,
    };
    let tun = char_node(dir.path(), "tun", 10, 200);
    let jail = Jail::new(4100, 4101)
        .long_lived(limits)
        .net_handles()
        .bind_tun(tun.as_fd())
        .unwrap()
        .bind(disk.as_fd(), "disk", true)
        .unwrap()
        .bind(
            std::fs::File::open(dir.path()).unwrap().as_fd(),
            "staging",
            false,
        )
        .unwrap()
        .pass(tap.as_fd(), 3)
        .unwrap()
        .pass(serial.as_fd(), super::super::MAX_PASSED_FD)
        .unwrap()
        .copy_in(kernel.as_fd(), "kernel")
        .unwrap()
        .copy_in(initrd.as_fd(), "initrd")
        .unwrap()
        .cgroup(own_dir().as_fd(), own_procs().as_fd())
        .unwrap();
    let sent = request(jail);
    let got = round_trip(&sent, 4096..4112).unwrap();
    // Every field named: one added to `Jail` does not compile here until
    // this test (and so `Jail::encode`/`decode`) knows it.
    let Jail {
        uid,
        gid,
        binds,
        passes,
        copies,
        long_lived,
        cgroup,
        net_handles,
    } = &got.jail;
    assert_eq!((*uid, *gid), (4100, 4101));
    assert!(*net_handles);
    assert_eq!(binds.len(), 3);
    assert_eq!(binds[0].at, "dev/net/tun");
    for (a, b) in sent.jail.binds.iter().zip(binds) {
        assert_eq!((&a.at, a.writable), (&b.at, b.writable));
        assert_eq!(inode(a.fd.as_fd()), inode(b.fd.as_fd()));
    }
    assert_eq!(passes.len(), 2);
    for (a, b) in sent.jail.passes.iter().zip(passes) {
        assert_eq!(a.at, b.at);
        assert_eq!(inode(a.fd.as_fd()), inode(b.fd.as_fd()));
    }
    assert_eq!(copies.len(), 2);
    for (a, b) in sent.jail.copies.iter().zip(copies) {
        assert_eq!(a.at, b.at);
        assert_eq!(inode(a.fd.as_fd()), inode(b.fd.as_fd()));
    }
    assert_eq!(*long_lived, Some(limits));
    let (a, b) = (sent.jail.cgroup.as_ref().unwrap(), cgroup.as_ref().unwrap());
    assert_eq!(inode(a.procs.as_fd()), inode(b.procs.as_fd()));
    assert_eq!(inode(a.dir.as_fd()), inode(b.dir.as_fd()));
    assert_eq!(got.argv0, sent.argv0);
    assert_eq!(got.args, sent.args);
    assert_eq!(got.env, sent.env);
    assert_eq!(inode(got.program.as_fd()), inode(sent.program.as_fd()));
    // A disk tool's jail: not long-lived, and in a network namespace of
    // its own, on the other side either.
    let got = round_trip(&request(Jail::new(4100, 4100)), 4096..4112).unwrap();
    assert_eq!(got.jail.long_lived, None);
    assert!(!got.jail.net_handles);
    assert!(got.jail.cgroup.is_none());
}

/// This test process's own cgroup directory.
fn own_dir() -> std::fs::File {
    std::fs::File::open(crate::probe::own_cgroup2_dir().unwrap()).unwrap()
}

/// This test process's own cgroup's `cgroup.procs`, opened for writing
/// (nothing is written: a descriptor a jail can carry).
fn own_procs() -> std::fs::File {
    let dir = crate::probe::own_cgroup2_dir().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .unwrap()
}

/// The largest jail a QEMU asks for (`banger_vmm::qemu`: 8 drives, two
/// descriptors each, the tap, the serial log, `run/`, `/dev/kvm`, kernel
/// and initrd) fits a request; one descriptor more does not.
#[test]
fn a_jail_with_a_vmms_descriptors_fits_a_request_and_one_more_is_refused() {
    let null = devnull();
    let dir = tempfile::tempdir().unwrap();
    let run = std::fs::File::open(dir.path()).unwrap();
    let kvm = char_node(dir.path(), "kvm", 10, 232);
    let qemu = |passes: i32| {
        let mut jail = Jail::new(4100, 4100)
            .long_lived(Limits {
                memory: 1 << 30,
                processes: 260,
                open_files: 1024,
                file_size: 1 << 30,
            })
            .bind(run.as_fd(), "run", true)
            .and_then(|j| j.bind_kvm(kvm.as_fd()))
            .and_then(|j| j.copy_in(null.as_fd(), "kernel"))
            .and_then(|j| j.copy_in(null.as_fd(), "initrd"))
            .unwrap();
        for at in 3..3 + passes {
            jail = jail.pass(null.as_fd(), at).unwrap();
        }
        jail
    };
    // Tap, serial, 8 drives × 2.
    let r = request(qemu(18));
    assert_eq!(r.encode().fds.len(), 26);
    round_trip(&r, 4096..4112).unwrap();
    let r = request(qemu(MAX_FDS as i32 - FIXED_FDS as i32 - 4 + 1));
    assert_eq!(r.encode().fds.len(), MAX_FDS + 1);
    let e = round_trip(&r, 4096..4112).unwrap_err();
    assert!(e.to_string().contains("copies, more than"), "{e}");
}

#[test]
fn root_ids_outside_the_range_bad_names_and_wrong_descriptor_counts_are_refused() {
    let range = 4096..4112;
    for (uid, gid) in [
        (0, 4100),
        (4100, 0),
        (4095, 4100),
        (4100, 4112),
        (70000, 70000),
    ] {
        let e = round_trip(&request(Jail::new(uid, gid)), range.clone()).unwrap_err();
        assert!(e.to_string().contains("outside the jail range"), "{e}");
    }
    let file = devnull();
    let mut jail = Jail::new(4100, 4100)
        .bind(file.as_fd(), "disk", true)
        .unwrap();
    for bad in ["../etc", "a b", "exe", "..", "", "x\ny"] {
        jail.binds[0].at = bad.to_string();
        let e = round_trip(&request(jail.clone()), range.clone()).unwrap_err();
        assert!(e.to_string().contains("bind name"), "{bad:?}: {e}");
    }
    // A copy's name, a pass-through number, the long-lived flag.
    let mut jail = Jail::new(4100, 4100)
        .copy_in(file.as_fd(), "kernel")
        .unwrap()
        .pass(file.as_fd(), 3)
        .unwrap()
        .pass(file.as_fd(), 4)
        .unwrap();
    for bad in ["usr", "dev", "lib64", "../kernel", "a b"] {
        jail.copies[0].at = bad.to_string();
        let e = round_trip(&request(jail.clone()), range.clone()).unwrap_err();
        assert!(e.to_string().contains("copy name"), "{bad:?}: {e}");
    }
    jail.copies[0].at = "kernel".into();
    for (first, second) in [(0, 4), (2, 4), (64, 4), (-1, 4), (4, 4)] {
        jail.passes[0].at = first;
        jail.passes[1].at = second;
        let e = round_trip(&request(jail.clone()), range.clone()).unwrap_err();
        assert!(e.to_string().contains("descriptor number"), "{first}: {e}");
    }
    // The long-lived flag is the jail's last word but the cgroup flag,
    // and the jail follows the version.
    let plain = Jail::new(4100, 4100);
    let mut alone = Writer::default();
    plain.encode(&mut alone);
    let flag = 4 + alone.bytes.len() - 8;
    let r = request(plain.clone());
    let w = r.encode();
    assert_eq!(w.bytes[flag..flag + 4], 0u32.to_le_bytes());
    // A flag word of 2: the long-lived flag, and the network-handles flag,
    // the word before it (0 for this jail too), each 0 or 1 only.
    assert_eq!(w.bytes[flag - 4..flag], 0u32.to_le_bytes());
    for (at, name) in [(flag, "long-lived"), (flag - 4, "network-handles")] {
        let mut bytes = w.bytes.clone();
        bytes[at..at + 4].copy_from_slice(&2u32.to_le_bytes());
        let fds: Vec<OwnedFd> = w.fds.iter().map(|_| devnull()).collect();
        let e = Request::decode(
            Reader {
                bytes: &bytes,
                fds: fds.into_iter(),
            },
            &range,
            &[temp_dev()],
        )
        .unwrap_err();
        assert!(e.to_string().contains(&format!("{name} flag 2")), "{e}");
    }
    // One descriptor too few, one too many.
    let r = request(Jail::new(4100, 4100));
    let w = r.encode();
    for n in [w.fds.len() - 1, w.fds.len() + 1] {
        let fds: Vec<OwnedFd> = (0..n).map(|_| devnull()).collect();
        let e = Request::decode(
            Reader {
                bytes: &w.bytes,
                fds: fds.into_iter(),
            },
            &range,
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("descriptors"), "{n}: {e}");
    }
    // Every cut of the message is refused.
    for cut in 0..w.bytes.len() {
        let fds: Vec<OwnedFd> = w.fds.iter().map(|_| devnull()).collect();
        let got = Request::decode(
            Reader {
                bytes: &w.bytes[..cut],
                fds: fds.into_iter(),
            },
            &range,
            &[],
        );
        assert!(got.is_err(), "cut at {cut}");
    }
}

/// Second read of F1, finding 4: a request that could not be sent (more
/// descriptors than a message carries, more bytes than the spawner
/// reads) is the request's error, not the spawner's: it is refused
/// before anything is sent and the spawner stays usable. It was marked
/// dead, and every later jailed call failed until a restart.
#[test]
fn a_request_too_big_to_send_is_refused_and_leaves_the_spawner_alive() {
    let (ours, theirs) = seqpacket_pair();
    // A stand-in for the spawner's process: what a dead-marking would
    // kill.
    let (mut stand_in, spawner) = stand_in_spawner(ours);
    let uid = 3_700_000 + std::process::id() % 100_000;
    let binds = (0..MAX_FDS)
        .map(|i| Bind {
            fd: Arc::new(devnull()),
            at: format!("b{i}"),
            writable: false,
        })
        .collect();
    let mut jail = Jail::new(uid, uid);
    jail.binds = binds;
    let many = spawner.spawn(request(jail));
    let mut big = request(Jail::new(uid, uid));
    big.args = vec![OsString::from("x".repeat(MAX_REQUEST))];
    let dead_after_many = spawner.dead.load(Ordering::Relaxed);
    let large = spawner.spawn(big);
    let dead_after_large = spawner.dead.load(Ordering::Relaxed);
    let alive = stand_in.pidfd_alive();
    let mut buf = [0u8; 16];
    let nothing_sent = rustix::net::recv(&theirs, &mut buf, rustix::net::RecvFlags::DONTWAIT)
        .map(|(n, _)| n)
        .map_err(std::io::Error::from);
    let _ = stand_in.kill();
    let many = many.unwrap_err().to_string();
    assert!(many.contains("descriptors"), "{many}");
    let large = large.unwrap_err().to_string();
    assert!(large.contains("bytes"), "{large}");
    assert_eq!(
        (dead_after_many, dead_after_large, alive),
        (false, false, true),
        "marked dead after too many descriptors, after too many bytes; the spawner alive"
    );
    assert_eq!(
        nothing_sent.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock)
    );
}

/// Second read of F1, finding 5: binds are an allow-list. A file or
/// directory only on a file system named at start, a block device only
/// of the loop or device-mapper major; a file on another file system, a
/// directory of `/proc` or `/dev` (devtmpfs, which the old deny-list took
/// for tmpfs), a character device are refused.
#[test]
fn binds_only_from_the_named_file_systems_and_loop_or_dm_devices() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("disk")).unwrap();
    let shm = tempfile::NamedTempFile::new_in("/dev/shm").unwrap();
    let open = |p: &str| std::fs::File::open(p).unwrap();
    let from = [temp_dev()];
    assert!(check_bind_fd(file.as_fd(), &from).is_ok());
    assert!(check_bind_fd(open(dir.path().to_str().unwrap()).as_fd(), &from).is_ok());
    for (what, fd) in [
        ("/dev/shm", shm.as_file().as_fd()),
        ("/proc", open("/proc").as_fd()),
        ("/dev", open("/dev").as_fd()),
    ] {
        let e = check_bind_fd(fd, &from).unwrap_err().to_string();
        assert!(e.contains("not on a file system"), "{what}: {e}");
    }
    // Nothing named: no file or directory at all.
    assert!(check_bind_fd(file.as_fd(), &[]).is_err());
    let e = check_bind_fd(devnull().as_fd(), &from).unwrap_err();
    assert!(e.to_string().contains("CharacterDevice"), "{e}");
    // device-mapper's major from /proc/devices' block section only.
    let devices = "Character devices:\n  1 mem\n 10 misc\n253 device-mapper\n\n\
                   Block devices:\n  7 loop\n  8 sd\n252 device-mapper\n254 mdp\n";
    assert_eq!(dm_major_in(devices), Some(252));
    assert_eq!(dm_major_in("Block devices:\n  7 loop\n"), None);
    dm_major().unwrap();
}

/// The two ends of a `SOCK_SEQPACKET` pair, as the helper and the spawner
/// hold them.
fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap()
}

/// A stand-in for the spawner's process (what a failed exchange kills and
/// reaps) and the [`Spawner`] that talks to it over `sock`.
fn stand_in_spawner(sock: OwnedFd) -> (crate::runner::Spawned, Spawner) {
    use crate::runner::{Cmd, Runner, SpawnOptions};
    let stand_in = Runner
        .spawn(
            &Cmd::new("sleep").arg("300"),
            SpawnOptions {
                output: None,
                run_as: None,
            },
        )
        .unwrap();
    let spawner = Spawner {
        sock: Mutex::new(sock),
        pid: stand_in.pid() as i32,
        pidfd: stand_in.pidfd().try_clone_to_owned().unwrap(),
        dead: AtomicBool::new(false),
        _held_roots: Vec::new(),
    };
    (stand_in, spawner)
}

/// Set in a test process that [`alone`] started.
const ALONE: &str = "BANGER_SPAWNER_TEST_ALONE";

/// Run `body` in a test process of its own (this test binary again, run
/// for test `name` of this module only, one thread): the stand-in
/// spawner's failed exchange runs `kill_jailed`, whose clause for this
/// process's children in a pid namespace of their own still with root's
/// uids would also match another test's jailed clone not yet past its
/// `setresuid`, killing it and reaping it from under that test (seen as
/// a rare `ECHILD`); alone, the process has no such child but its own. A
/// setting `body` changes (`END_WAIT_MS`) stays in it too.
fn alone(name: &str, body: impl FnOnce()) {
    use crate::runner::{Cmd, Runner};
    if std::env::var_os(ALONE).is_some() {
        return body();
    }
    let test = format!(
        "{}::{name}",
        module_path!().trim_start_matches("banger_host::")
    );
    let out = Runner
        .output(
            &Cmd::new(std::env::current_exe().unwrap())
                .args([test.as_str(), "--exact", "--test-threads=1"])
                .env(ALONE, "1")
                .timeout(std::time::Duration::from_secs(120)),
        )
        .unwrap();
    assert!(
        out.status.success() && out.stdout.contains("test result: ok. 1 passed"),
        "{test} alone: {}\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

/// Third read of F1, finding a: the helper's exit for a dead spawner was
/// checked after every reply on every connection, so another connection's
/// reply could end the helper while the failing thread was still in
/// `Spawner::end`, and a late clone not yet of the jail uid survived. Only
/// the thread whose exchange failed is told to end the helper, and only
/// once `end` has killed and reaped the spawner.
#[test]
fn only_the_failing_thread_ends_the_helper_and_only_after_the_spawner_is_reaped() {
    alone(
        "only_the_failing_thread_ends_the_helper_and_only_after_the_spawner_is_reaped",
        || {
            let (ours, theirs) = seqpacket_pair();
            // The spawner's end gone: the exchange fails at once.
            drop(theirs);
            let (mut stand_in, spawner) = stand_in_spawner(ours);
            let uid = 3_710_000 + std::process::id() % 100_000;
            let done = AtomicBool::new(false);
            let started = std::sync::Barrier::new(2);
            let (elsewhere, failed, here, reaped) = std::thread::scope(|s| {
                let watcher = s.spawn(|| {
                    started.wait();
                    let mut seen = false;
                    while !done.load(Ordering::SeqCst) {
                        seen |= spawner.ended_here();
                    }
                    seen || spawner.ended_here()
                });
                started.wait();
                let failed = spawner.spawn(request(Jail::new(uid, uid)));
                let here = spawner.ended_here();
                // ECHILD: `end` has reaped it.
                let reaped = rustix::process::waitid(
                    rustix::process::WaitId::PidFd(stand_in.pidfd()),
                    rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
                )
                .map(|_| ());
                done.store(true, Ordering::SeqCst);
                (watcher.join().unwrap(), failed, here, reaped)
            });
            let _ = stand_in.kill();
            let failed = failed.unwrap_err().to_string();
            assert!(failed.contains("now dead"), "{failed}");
            assert_eq!(
                (elsewhere, here, reaped),
                (false, true, Err(rustix::io::Errno::CHILD)),
                "another thread told to end the helper; the failing thread told; the spawner reaped"
            );
        },
    );
}

/// Third read of F1, finding b: `Spawner::end` waited for the killed
/// spawner with a blocking `waitid`, holding the lock every jailed call
/// takes: a spawner that did not become reapable (here: traced by another
/// process, which never waits for it, so its exit reaches its parent only
/// once that tracer goes) hung every later jail request. The wait is
/// bounded now.
#[test]
fn ending_a_spawner_that_never_becomes_reapable_returns_in_time() {
    alone(
        "ending_a_spawner_that_never_becomes_reapable_returns_in_time",
        || {
            use crate::runner::{Cmd, Runner, SpawnOptions};
            let (ours, theirs) = seqpacket_pair();
            drop(theirs);
            let (mut stand_in, spawner) = stand_in_spawner(ours);
            let pid = stand_in.pid();
            // PTRACE_SEIZE (0x4206) through ptrace(2) (101 on x86_64), then sleep
            // without ever waiting for the tracee.
            let mut tracer = Runner
                .spawn(
                    &Cmd::new("perl").arg("-e").arg(format!(
                        "syscall(101, 0x4206, {pid}, 0, 0) == 0 or die \"seize: $!\"; sleep 300"
                    )),
                    SpawnOptions {
                        output: None,
                        run_as: None,
                    },
                )
                .unwrap();
            let traced = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap()
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["TracerPid:", "0"])
            {
                assert!(std::time::Instant::now() < traced, "never traced");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let uid = 3_720_000 + std::process::id() % 100_000;
            let (tx, rx) = std::sync::mpsc::channel();
            let took = std::time::Instant::now();
            let got = std::thread::scope(|s| {
                s.spawn(|| {
                    let _ = tx.send(spawner.spawn(request(Jail::new(uid, uid))).map(drop));
                });
                let got = rx.recv_timeout(std::time::Duration::from_secs(15));
                // The tracer's exit lets a blocked wait return, so the thread ends.
                let _ = tracer.kill();
                got
            });
            let took = took.elapsed();
            let _ = stand_in.kill();
            let e = got
                .unwrap_or_else(|_| panic!("no answer within 15 s"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("now dead"), "{e}");
            assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
        },
    );
}

/// Third read of F1, finding e: every failed send marked the spawner dead,
/// though a send that fails with anything but "the peer is gone" sent
/// nothing (a `SOCK_SEQPACKET` message goes whole or not at all) and the
/// spawner is still in step. Here the message is bigger than the socket's
/// send buffer (`EMSGSIZE`): the call fails, the spawner stays usable.
#[test]
fn a_send_that_sent_nothing_leaves_the_spawner_alive() {
    let (ours, theirs) = seqpacket_pair();
    rustix::net::sockopt::set_socket_send_buffer_size(&ours, 4096).unwrap();
    let (mut stand_in, spawner) = stand_in_spawner(ours);
    let uid = 3_730_000 + std::process::id() % 100_000;
    let mut big = request(Jail::new(uid, uid));
    big.args = vec![OsString::from("x".repeat(32 << 10))];
    let got = spawner.spawn(big);
    let dead = spawner.dead.load(Ordering::Relaxed);
    let alive = stand_in.pidfd_alive();
    let _ = stand_in.kill();
    drop(theirs);
    let e = got.unwrap_err();
    assert_eq!(
        (dead, alive),
        (false, true),
        "marked dead, the spawner killed after a send that sent nothing: {e}"
    );
    assert!(e.to_string().contains("not sent"), "{e}");
}

/// Hostile read of the merged spawner, L2: when the killed spawner did
/// not exit within `END_WAIT_MS`, `Spawner::end` returned the timeout
/// before `kill_jailed`, so a process of the request's jail uid (a clone
/// the spawner made just before its `SIGKILL`) survived. Here the wait is
/// 0 ms (the stand-in is then still exiting: retried should it have been
/// quicker) and a `sleep` of the jail uid is the late clone: dead when
/// the call returns.
#[test]
fn a_spawner_that_does_not_exit_in_time_still_has_its_jail_uid_killed() {
    use crate::runner::{Cmd, Runner, SpawnOptions};
    alone(
        "a_spawner_that_does_not_exit_in_time_still_has_its_jail_uid_killed",
        || {
            END_WAIT_MS.store(0, Ordering::Relaxed);
            let uid = 3_740_000 + std::process::id() % 100_000;
            for _ in 0..20 {
                let (ours, theirs) = seqpacket_pair();
                drop(theirs);
                let (mut stand_in, spawner) = stand_in_spawner(ours);
                let mut late = Runner
                    .spawn(
                        &Cmd::new("sleep").arg("300"),
                        SpawnOptions {
                            output: None,
                            run_as: Some((uid, uid)),
                        },
                    )
                    .unwrap();
                let e = spawner
                    .spawn(request(Jail::new(uid, uid)))
                    .unwrap_err()
                    .to_string();
                let alive = late.pidfd_alive();
                let _ = late.kill();
                let _ = stand_in.kill();
                if e.contains("did not exit within") {
                    assert!(!alive, "the jail uid's process outlived the call: {e}");
                    return;
                }
            }
            panic!("the stand-in exited within 0 ms twenty times");
        },
    );
}

/// An answer carrying a jail's network handles: taken when they are a
/// network namespace other than the caller's and a route netlink socket,
/// for a request that asked for them; refused otherwise (with a flag that
/// is neither 0 nor 1, handles the request did not ask for, or none when
/// it did: hostile read of the own-netns jail, informational items).
#[test]
fn an_answers_network_handles_are_a_network_namespace_and_a_route_socket() {
    let own_ns = || {
        rustix::fs::open(
            c"/proc/thread-self/ns/net",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap()
    };
    let ns = || crate::net::netns::jail_namespace().0;
    let rtnl = |protocol| {
        rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            protocol,
        )
        .unwrap()
    };
    let answered = |flag: u32, fds: Vec<OwnedFd>, asked: bool| {
        let mut w = Writer::default();
        w.u32(77);
        w.u32(0);
        w.u32(0);
        w.bytes(b"");
        w.u32(flag);
        answer(&w.bytes, fds, asked)
            .and_then(|a| a)
            .map(|c| c.net.is_some())
    };
    assert!(!answered(0, vec![devnull()], false).unwrap());
    assert!(answered(1, vec![devnull(), ns(), rtnl(None)], true).unwrap());
    let uevent = rustix::net::Protocol::from_raw(rustix::net::RawProtocol::new(15).unwrap());
    for (case, (flag, fds, asked)) in [
        (1, vec![devnull(), rtnl(None), ns()], true),
        (1, vec![devnull(), devnull(), rtnl(None)], true),
        (1, vec![devnull(), ns(), rtnl(Some(uevent))], true),
        (1, vec![devnull(), ns()], true),
        (2, vec![devnull(), ns(), rtnl(None)], true),
        (0, vec![devnull(), ns(), rtnl(None)], true),
        // Handles the request did not ask for, none when it did.
        (1, vec![devnull(), ns(), rtnl(None)], false),
        (0, vec![devnull()], true),
        // The caller's own namespace: a move "into" it would do nothing.
        (1, vec![devnull(), own_ns(), rtnl(None)], true),
    ]
    .into_iter()
    .enumerate()
    {
        let got = answered(flag, fds, asked);
        assert!(
            got.is_err(),
            "case {case}: flag {flag}, asked {asked}: {got:?}"
        );
    }
}
