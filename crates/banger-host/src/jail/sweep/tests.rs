use std::time::Duration;

use super::*;
use crate::jail::Jail;
use crate::runner::{Cmd, Runner, SpawnOptions, resolve};

/// Hostile review F-e: every error holding a process or reading its
/// status was skipped, so a sweep that could not see a process (out of
/// descriptors, access refused) passed it over and the daemon started
/// with it alive. Only "it has exited" is skipped now.
#[test]
fn only_an_exited_process_is_skipped() {
    let errno = std::io::Error::from_raw_os_error;
    assert!(exited(&errno(libc::ESRCH)));
    assert!(exited(&errno(libc::ENOENT)));
    for e in [
        libc::EMFILE,
        libc::ENFILE,
        libc::EACCES,
        libc::EPERM,
        libc::ENOMEM,
    ] {
        assert!(!exited(&errno(e)), "errno {e}");
    }
    let garbled = std::io::Error::new(std::io::ErrorKind::InvalidData, "no Uid: line");
    assert!(!exited(&garbled));
    // A pid reused by another process's thread between the listing and
    // the open: gone, not a failure.
    assert!(gone_before_open(&errno(libc::EINVAL)));
    assert!(!gone_before_open(&errno(libc::EMFILE)));
    assert!(!exited(&errno(libc::EINVAL)));
    // The real thing: this process's status is read, a pid that has
    // exited is ENOENT.
    let me = uids_of(std::process::id() as i32).unwrap();
    assert_eq!(me[0], rustix::process::getuid().as_raw());
    let out = Runner.run(&Cmd::new("sh").args(["-c", "echo $$"])).unwrap();
    let gone: i32 = out.stdout.trim().parse().unwrap();
    assert!(exited(&uids_of(gone).unwrap_err()));
}

/// Third review: one pass over `/proc` missed a child forked at a pid
/// the pass had read past. Passes repeat until one finds nothing,
/// and give up, naming what is left, after `MAX_PASSES`. (The pass is
/// a stand-in here; the real one is below.)
#[test]
fn passes_repeat_until_one_finds_nothing_and_give_up_after_the_cap() {
    // The first pass kills 40; its child at 12, below where that pass
    // had read, is found by the second; the third finds nothing.
    let mut rounds = vec![vec![40], vec![12], vec![]].into_iter();
    let mut passes = 0;
    let killed = repeat_passes(|killed| {
        passes += 1;
        let found = rounds.next().unwrap();
        killed.extend(&found);
        Ok(found)
    })
    .unwrap();
    assert_eq!((killed, passes), (vec![40, 12], 3));
    // A range that never empties fails the sweep.
    let mut passes = 0;
    let e = repeat_passes(|_| {
        passes += 1;
        Ok(vec![77])
    })
    .unwrap_err();
    assert_eq!(passes, MAX_PASSES);
    assert!(e.to_string().contains("[77]"), "{e}");
    // An error in a pass is the sweep's.
    let e = repeat_passes(|_| Err(std::io::Error::from_raw_os_error(libc::EIO)));
    assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::EIO));
}

/// A `sleep 300` child of this process.
fn spawn_sleep() -> crate::runner::Spawned {
    Runner
        .spawn(
            &Cmd::new("sleep").arg("300"),
            SpawnOptions {
                output: None,
                run_as: None,
            },
        )
        .unwrap()
}

/// The wait after a pass's kills: processes killed are all seen gone
/// well before the deadline; processes that do not exit hold the call
/// about one deadline in all, not one per process.
#[test]
fn a_pass_waits_for_what_it_killed_with_one_deadline() {
    let spawn = spawn_sleep;
    let pidfd = |c: &crate::runner::Spawned| c.pidfd().try_clone_to_owned().unwrap();
    let deadline = Duration::from_millis(EXIT_WAIT_MS as u64);
    let mut killed: Vec<_> = (0..4).map(|_| spawn()).collect();
    let fds: Vec<_> = killed.iter().map(pidfd).collect();
    for fd in &fds {
        rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL).unwrap();
    }
    let start = std::time::Instant::now();
    assert_eq!(wait_exits(&fds, EXIT_WAIT_MS), 0);
    assert!(start.elapsed() < deadline, "{:?}", start.elapsed());
    assert!(fds.iter().all(|fd| !alive(fd, 0)));
    for c in &mut killed {
        let _ = c.kill();
    }

    let mut running: Vec<_> = (0..4).map(|_| spawn()).collect();
    let fds: Vec<_> = running.iter().map(pidfd).collect();
    let start = std::time::Instant::now();
    let left = wait_exits(&fds, 400);
    let took = start.elapsed();
    for c in &mut running {
        let _ = c.kill();
    }
    assert_eq!(left, 4);
    // One deadline (400 ms) with slack, under four waits in turn.
    assert!(took < Duration::from_millis(1200), "{took:?}");
}

/// Since Linux 6.9 the pidfd of a process already reaped polls as
/// `POLLIN|POLLHUP` (a zombie's as `POLLIN`): the wait took any flag
/// but `POLLIN` for an error and stopped at the first reaped process,
/// counting the rest alive without waiting for them. One reaped before
/// the call and three killed and reaped by a thread during it are all
/// waited for in one call.
#[test]
fn a_reaped_process_ends_only_its_own_wait() {
    let mut children: Vec<_> = (0..4).map(|_| spawn_sleep()).collect();
    let fds: Vec<_> = children
        .iter()
        .map(|c| c.pidfd().try_clone_to_owned().unwrap())
        .collect();
    children[0].kill().unwrap();
    let rest = children.split_off(1);
    let reaper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        for mut c in rest {
            c.kill().unwrap();
        }
    });
    let start = std::time::Instant::now();
    let left = wait_exits(&fds, 5000);
    let took = start.elapsed();
    reaper.join().unwrap();
    assert_eq!(left, 0, "returned after {took:?}");
    assert!(took >= Duration::from_millis(250), "{took:?}");
}

/// Hostile read of the merged spawner, I2: `kill_and_reap`, which a
/// clone whose report could not be read now gets (it was left running,
/// its pidfd dropped), leaves this process's child dead and reaped, and
/// says when one is not its child to reap (here: already reaped).
#[test]
fn kill_and_reap_leaves_a_child_dead_and_reaped() {
    let child = spawn_sleep();
    let fd = child.pidfd().try_clone_to_owned().unwrap();
    kill_and_reap(&fd, Duration::from_secs(5), "sleep").unwrap();
    let again = rustix::process::waitid(
        rustix::process::WaitId::PidFd(fd.as_fd()),
        rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
    );
    assert_eq!(
        again.map(|_| ()),
        Err(rustix::io::Errno::CHILD),
        "not reaped"
    );
    // Gone and reaped: nothing to do, no error.
    kill_and_reap(&fd, Duration::from_secs(5), "sleep").unwrap();
}

/// A process of the range that keeps forking (not jailed: a jailed
/// one is pid 1 of its namespace, whose death takes the rest) is gone,
/// with every child it made, after one sweep.
#[test]
fn a_process_of_the_range_forking_in_a_loop_is_gone_with_its_children() {
    crate::jail::tests::require_root();
    let base = 3_600_000 + (std::process::id() % 100_000) * 8;
    let uid = base + 2;
    let mut forker = Runner
        .spawn(
            &Cmd::new("sh").args(["-c", "while :; do sleep 300 & sleep 0.01; done"]),
            SpawnOptions {
                output: None,
                run_as: Some((uid, uid)),
            },
        )
        .unwrap();
    // Let it make some children.
    std::thread::sleep(Duration::from_millis(300));
    let before = crate::jail::tests::processes_of(uid).len();
    let swept = kill_range(base, 4, &[]);
    let _ = forker.kill();
    let killed = swept.unwrap();
    assert!(before > 5, "only {before} processes to sweep");
    assert!(killed.contains(&forker.pid()), "{killed:?}");
    // What was killed is reaped (by init, or here for the shell).
    let mut left = crate::jail::tests::processes_of(uid);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        left = crate::jail::tests::processes_of(uid);
    }
    assert_eq!(left, Vec::<String>::new(), "killed {killed:?}");
}

/// Finding 11: the start-up sweep killed every process of the range,
/// so a jailed VMM never survived a helper restart to be re-adopted.
/// A journaled VMM (pid, start time, uid) is spared; a stray process
/// of its uid (here its own child) and a VMM whose journaled start
/// time is not its own are killed.
#[test]
fn a_journaled_vmm_is_spared_and_a_stray_process_of_its_uid_is_killed() {
    crate::jail::tests::require_root();
    let base = 3_900_000 + (std::process::id() % 100_000) * 8;
    let limits = crate::jail::Limits {
        memory: 1 << 30,
        processes: 16,
        open_files: 64,
        file_size: 0,
    };
    let start = |slot: u32| {
        let jail = Jail::new(base + slot, base + slot).long_lived(limits);
        Runner
            .spawn(
                &Cmd::new("sh")
                    .args(["-c", "sleep 300 & exec sleep 300"])
                    .jail(jail),
                SpawnOptions::default(),
            )
            .unwrap()
    };
    let (mut vmm, mut stale) = (start(1), start(2));
    let child_of = |pid: u32| loop {
        // The jailed shell's background sleep: another process of the
        // slot's uid.
        let kids = crate::jail::tests::processes_of(base + 1);
        if let Some(k) = kids.iter().find(|k| **k != pid.to_string()) {
            break k.parse::<u32>().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stray = child_of(vmm.pid());
    let spare = [
        Spare {
            pid: vmm.pid(),
            start_time: start_time(vmm.pid()).unwrap(),
            uid: base + 1,
        },
        Spare {
            pid: stale.pid(),
            start_time: start_time(stale.pid()).unwrap() + 1,
            uid: base + 2,
        },
    ];
    let swept = kill_range(base, 4, &spare);
    let vmm_alive = vmm.try_wait().unwrap().is_none();
    let _ = vmm.kill();
    let _ = stale.kill();
    let killed = swept.unwrap();
    assert!(vmm_alive, "the journaled VMM was killed: {killed:?}");
    assert!(!killed.contains(&vmm.pid()), "{killed:?}");
    assert!(killed.contains(&stray), "its stray {stray}: {killed:?}");
    assert!(killed.contains(&stale.pid()), "{killed:?}");
}

/// Last read before landing: a process holding 65536 supplementary
/// groups (any user with subordinate gids can, in a user namespace)
/// has a `status` of about 460 KiB with `NSpid:` after `Groups:`; a
/// 64 KiB cap cut it off and the sweep failed. Its uids are read and
/// the sweep goes past it.
#[test]
fn a_process_with_every_supplementary_group_neither_stops_the_sweep_nor_hides() {
    crate::jail::tests::require_root();
    let base = 3_800_000 + (std::process::id() % 100_000) * 8;
    let groups = r#"$) = "100000 " . join(" ", 100000 .. 165535); die "setgroups: $!" if scalar(split(" ", $))) < 60000; $| = 1; print "set\n"; sleep 300"#;
    let mut many = Runner
        .spawn(
            &Cmd::new("perl").arg("-e").arg(groups),
            SpawnOptions::default(),
        )
        .unwrap();
    let big = (0..100).any(|_| {
        let len = std::fs::read(format!("/proc/{}/status", many.pid())).map_or(0, |s| s.len());
        if len <= 64 << 10 {
            std::thread::sleep(Duration::from_millis(50));
        }
        len > 64 << 10
    });
    let uids = uids_of(many.pid() as i32);
    let swept = kill_range(base, 4, &[]);
    let _ = many.kill();
    assert!(big, "the process never held its groups");
    assert!(uids.as_ref().is_ok_and(|u| *u == [0; 4]), "{uids:?}");
    assert!(swept.is_ok(), "{swept:?}");
}

/// Hostile read of the last root-side changes, F1: a process of any
/// uid named with a byte that is not UTF-8 (`/proc/self/comm`, or
/// `PR_SET_NAME`) made every `/proc/<pid>/stat` and `status` read of
/// it fail (`read_to_string`: `InvalidData`), so the sweep failed and
/// `bangerd-root` would not start while it lived; a VMM escape renaming
/// its own thread made its VM unmanageable. The sweep goes past such a
/// process, kills one of the range so named, and reads its start time
/// and uids.
#[test]
fn a_process_named_with_a_byte_that_is_not_utf8_neither_stops_the_sweep_nor_hides() {
    crate::jail::tests::require_root();
    let base = 3_700_000 + (std::process::id() % 100_000) * 8;
    let rename = r#"open(my $f, ">", "/proc/self/comm") or die; print $f "\xff\xfex"; close $f; print "named\n"; $| = 1; sleep 300"#;
    let spawn = |uid: u32| {
        Runner
            .spawn(
                &Cmd::new("perl").arg("-e").arg(rename),
                SpawnOptions {
                    output: None,
                    run_as: Some((uid, uid)),
                },
            )
            .unwrap()
    };
    // One outside the range (any local user), one inside it.
    let mut outside = spawn(base + 100);
    let mut inside = spawn(base + 1);
    let named = |pid: u32| {
        (0..100).any(|_| {
            let done = std::fs::read(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with(b"\xff\xfex"));
            if !done {
                std::thread::sleep(Duration::from_millis(50));
            }
            done
        })
    };
    assert!(
        named(outside.pid()) && named(inside.pid()),
        "the processes never renamed themselves"
    );
    let times = (start_time(outside.pid()), uids_of(outside.pid() as i32));
    let swept = kill_range(base, 4, &[]);
    let inside_gone = (0..100).any(|_| {
        let alive = inside.pidfd_alive();
        if alive {
            std::thread::sleep(Duration::from_millis(50));
        }
        !alive
    });
    let _ = outside.kill();
    let _ = inside.kill();
    assert!(
        times.0.is_ok() && times.1.as_ref().is_ok_and(|u| u[0] == base + 100),
        "{times:?}"
    );
    let swept = swept.unwrap();
    assert!(swept.contains(&inside.pid()), "{swept:?}");
    assert!(
        inside_gone,
        "the range's renamed process outlived the sweep"
    );
}

#[test]
fn a_process_left_in_the_jail_range_is_killed_and_nothing_else() {
    crate::jail::tests::require_root();
    // A range of this test's own, with neighbours on both sides.
    let base = 3_500_000 + (std::process::id() % 100_000) * 8;
    let count = 4;
    // What a tool that cleared its parent-death signal leaves when its
    // helper crashes: a jailed process nobody waits for any more.
    let path = resolve("sh".as_ref()).unwrap();
    let args: Vec<std::ffi::OsString> = ["-c", "sleep 300 & exec sleep 300"]
        .iter()
        .map(Into::into)
        .collect();
    let env = [("PATH".into(), crate::runner::CHILD_PATH.into())];
    let mut left = crate::jail::spawn(
        &Jail::new(base + 1, base + 1),
        &path,
        "sh".as_ref(),
        &args,
        &env,
        false,
        crate::jail::Output::Piped,
    )
    .unwrap();
    let neighbours: Vec<_> = [base - 1, base + count]
        .into_iter()
        .map(|uid| {
            Runner
                .spawn(
                    &Cmd::new("sleep").arg("300"),
                    SpawnOptions {
                        output: None,
                        run_as: Some((uid, uid)),
                    },
                )
                .unwrap()
        })
        .collect();
    // Let the jailed shell start its background sleep.
    std::thread::sleep(Duration::from_millis(300));
    let killed = kill_range(base, count, &[]).unwrap();
    let mut status = None;
    for _ in 0..100 {
        status = left.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = left.kill();
    let mut neighbours = neighbours;
    let alive: Vec<bool> = neighbours.iter().map(|n| n.pidfd_alive()).collect();
    for n in &mut neighbours {
        let _ = n.kill();
    }
    use std::os::unix::process::ExitStatusExt as _;
    let status = status.expect("the jailed process is still running");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{killed:?}");
    assert!(killed.contains(&left.pid()), "{killed:?}");
    // The shell's background sleep went too (killed here, or by the
    // kernel with its namespace's pid 1).
    for _ in 0..100 {
        if crate::jail::tests::processes_of(base + 1).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        crate::jail::tests::processes_of(base + 1),
        Vec::<String>::new()
    );
    assert_eq!(alive, [true, true], "a neighbour was killed");
}
