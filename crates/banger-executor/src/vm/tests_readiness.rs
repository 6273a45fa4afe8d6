//! Readiness as an event, through the executor (issue #14 item 3): a VMM
//! re-adopted after a restart is watched on its console from the offset
//! journaled at its launch, and `wait_ready` wakes on the guest's line.

use std::io::Write as _;
use std::time::{Duration, Instant};

use banger_proto::guest::READY_MARKER;
use banger_proto::layout::{SERIAL_LOG, VMS_DIR};

use super::slots::tests::{host, jail};

/// A process of this test's own uid stands for a VMM journaled before an
/// executor restart (the test's process itself: pid and start time match,
/// and it is never signalled). The ready line of an earlier boot, before
/// the journaled offset, does not count; the one written after does, and
/// wakes the waiter at once; an entry without an offset is adopted
/// unwatched (`ready` unknown), never guessed.
#[test]
fn a_re_adopted_vmm_is_watched_from_its_journaled_console_offset() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path(), jail(4));
    let me = std::process::id();
    let own = rustix::process::geteuid().as_raw();
    let (watched, unwatched) = ("a".repeat(32), "b".repeat(32));
    let vm_dir = dir.path().join("state").join(VMS_DIR).join(&watched);
    std::fs::create_dir_all(&vm_dir).unwrap();
    let mut console = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(vm_dir.join(SERIAL_LOG))
        .unwrap();
    console
        .write_all(format!("earlier boot\n{READY_MARKER}\n").as_bytes())
        .unwrap();
    let offset = console.metadata().unwrap().len();
    {
        let mut txn = h.journal.open().unwrap();
        for (id, offset) in [(&watched, Some(offset)), (&unwatched, None)] {
            txn.state.vmms.push(crate::journal::VmmEntry {
                vm_id: id.clone(),
                pid: me,
                start_time: banger_host::jail::start_time(me).unwrap(),
                vmm: banger_proto::vmops::VmmKind::Qemu,
                uid: Some(own),
                cgroup: None,
                tap: None,
                console_offset: offset,
            });
        }
        txn.save().unwrap();
    }
    // Adopted, watched, and not ready: the earlier boot's line is before
    // the offset.
    let st = h.wait_ready(&watched, 300).unwrap();
    assert!(st.running && st.adopted, "{st:?}");
    assert_eq!(st.ready, Some(false), "{st:?}");
    // A waiter wakes on this boot's line, long before its timeout.
    let waiter = std::thread::scope(|s| {
        let w = s.spawn(|| {
            let asked = Instant::now();
            (h.wait_ready(&watched, 20_000).unwrap(), asked.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        console
            .write_all(format!("booting\n{READY_MARKER}\n").as_bytes())
            .unwrap();
        w.join().unwrap()
    });
    let (st, took) = waiter;
    assert_eq!(st.ready, Some(true), "{st:?}");
    assert!(took < Duration::from_secs(5), "woke after {took:?}");
    // No offset journaled: adopted without a watch.
    let st = h.wait_ready(&unwatched, 100).unwrap();
    assert!(st.running && st.adopted, "{st:?}");
    assert_eq!(st.ready, None, "{st:?}");
    // Longer than a call may wait: refused, naming the bound.
    let e = h.wait_ready(&watched, 60_000).unwrap_err().to_string();
    assert!(e.contains("30000"), "{e}");
    // Not ours to signal: forget them without a stop.
    h.procs.lock().unwrap().clear();
}

/// Hostile read of the readiness watch, finding 3: a watch that ended
/// while its VMM runs on (here: a console its owner made a huge sparse
/// file, read `SCAN_MAX` bytes deep without a ready line) answered every
/// wait at once with "not ready", and the daemon asked again in a tight
/// loop. Now the wait is refused, saying why, so the boot fails with it.
#[test]
fn a_watch_that_ended_while_the_vmm_runs_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path(), jail(4));
    let me = std::process::id();
    let id = "c".repeat(32);
    let vm_dir = dir.path().join("state").join(VMS_DIR).join(&id);
    std::fs::create_dir_all(&vm_dir).unwrap();
    let console = std::fs::File::create(vm_dir.join(SERIAL_LOG)).unwrap();
    console.set_len(1 << 40).unwrap();
    {
        let mut txn = h.journal.open().unwrap();
        txn.state.vmms.push(crate::journal::VmmEntry {
            vm_id: id.clone(),
            pid: me,
            start_time: banger_host::jail::start_time(me).unwrap(),
            vmm: banger_proto::vmops::VmmKind::Qemu,
            uid: Some(rustix::process::geteuid().as_raw()),
            cgroup: None,
            tap: None,
            console_offset: Some(0),
        });
        txn.save().unwrap();
    }
    let started = Instant::now();
    let e = h.wait_ready(&id, 30_000).unwrap_err();
    assert!(
        matches!(e, super::error::VmOpError::Unwatched { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("no ready line"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    h.procs.lock().unwrap().clear();
}

/// Hostile read of the readiness watch, finding 5: a stop takes the VMM
/// out of the table before it waits for it, with its journal entry still
/// there, and a status meanwhile (the daemon's boot wait, the watchdog)
/// re-adopted it behind the stop's back. Now it reads as running and is
/// not adopted; once the stop is done it is gone from both.
#[test]
fn a_vmm_being_stopped_is_not_re_adopted_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path(), jail(4));
    let id = "d".repeat(32);
    // A stand-in ignoring the power-off request: the stop waits out its
    // timeout, then kills it.
    let mut vmm = super::slots::tests::journaled_stand_in(&h, 2_000_001, &id);
    let st = h.status(&id).unwrap();
    assert!(st.running && st.adopted, "{st:?}");
    std::thread::scope(|s| {
        let stop = s.spawn(|| h.stop(&id, Duration::from_millis(1500), false));
        std::thread::sleep(Duration::from_millis(300));
        let during = h.status(&id).unwrap();
        assert!(during.running && !during.adopted, "{during:?}");
        assert!(
            !h.procs.lock().unwrap().contains_key(&id),
            "re-adopted while being stopped"
        );
        let stopped = stop.join().unwrap().unwrap();
        assert!(stopped.was_running && !stopped.graceful, "{stopped:?}");
    });
    let _ = vmm.wait();
    let after = h.status(&id).unwrap();
    assert!(!after.running, "{after:?}");
    assert!(h.journal.open().unwrap().state.vmms.is_empty());
}

/// Second hostile read, finding 5: a kill that came while a stop was
/// waiting for the guest found nothing in the table and answered "was not
/// running" while the VMM ran on (the daemon then took its network away).
/// It now kills the VMM being stopped, through the pidfd kept for it.
#[test]
fn a_kill_during_a_stop_kills_the_vmm_being_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path(), jail(4));
    let id = "e".repeat(32);
    let mut vmm = super::slots::tests::journaled_stand_in(&h, 2_000_001, &id);
    assert!(h.status(&id).unwrap().running);
    std::thread::scope(|s| {
        let stop = s.spawn(|| h.stop(&id, Duration::from_secs(20), false));
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let killed = h.stop(&id, Duration::ZERO, true).unwrap();
        assert!(killed.was_running && !killed.graceful, "{killed:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // The stand-in is gone: its parent (this test) sees it exit.
        let status = vmm.wait().unwrap();
        assert!(!status.success());
        // The first stop ends as soon as it sees it gone, not at 20 s.
        let stopped = stop.join().unwrap().unwrap();
        assert!(stopped.was_running, "{stopped:?}");
    });
    assert!(!h.status(&id).unwrap().running);
    assert!(h.journal.open().unwrap().state.vmms.is_empty());
}
