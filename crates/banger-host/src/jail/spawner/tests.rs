use std::os::unix::ffi::OsStringExt as _;

use super::*;

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

/// The file system of the temporary directory, where the tests' binds are.
fn temp_dev() -> u64 {
    rustix::fs::stat(std::env::temp_dir()).unwrap().st_dev
}

fn inode(fd: BorrowedFd<'_>) -> (u64, u64) {
    let st = rustix::fs::fstat(fd).unwrap();
    (st.st_dev, st.st_ino)
}

#[test]
fn every_jail_field_crosses_the_wire_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("disk")).unwrap();
    let jail = Jail::new(4100, 4101)
        .bind(file.as_fd(), "disk", true)
        .unwrap()
        .bind(
            std::fs::File::open(dir.path()).unwrap().as_fd(),
            "staging",
            false,
        )
        .unwrap();
    let sent = request(jail);
    let got = round_trip(&sent, 4096..4112).unwrap();
    assert_eq!((got.jail.uid, got.jail.gid), (4100, 4101));
    assert_eq!(got.jail.binds.len(), 2);
    for (a, b) in sent.jail.binds.iter().zip(&got.jail.binds) {
        assert_eq!((&a.at, a.writable), (&b.at, b.writable));
        assert_eq!(inode(a.fd.as_fd()), inode(b.fd.as_fd()));
    }
    assert_eq!(got.argv0, sent.argv0);
    assert_eq!(got.args, sent.args);
    assert_eq!(got.env, sent.env);
    assert_eq!(inode(got.program.as_fd()), inode(sent.program.as_fd()));
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
    use crate::runner::{Cmd, Runner, SpawnOptions};
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    // A stand-in for the spawner's process: what a dead-marking would
    // kill.
    let mut stand_in = Runner
        .spawn(
            &Cmd::new("sleep").arg("300"),
            SpawnOptions {
                output: None,
                run_as: None,
            },
        )
        .unwrap();
    let spawner = Spawner {
        sock: Mutex::new(ours),
        pid: stand_in.pid() as i32,
        pidfd: stand_in.pidfd().try_clone_to_owned().unwrap(),
        dead: AtomicBool::new(false),
    };
    let uid = 3_700_000 + std::process::id() % 100_000;
    let binds = (0..MAX_FDS)
        .map(|i| Bind {
            fd: Arc::new(devnull()),
            at: format!("b{i}"),
            writable: false,
        })
        .collect();
    let many = spawner.spawn(request(Jail {
        uid,
        gid: uid,
        binds,
    }));
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
