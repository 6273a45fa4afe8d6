//! Pausing and resuming a VMM through the executor (issue #15 item 3):
//! `PauseVm` and `ResumeVm` find the VM's VMM (re-adopting a journaled
//! one, as a status does), refuse when none runs or a stop has it, and a
//! stop of a paused VMM resumes it before it asks the guest to power off.
//!
//! The VMMs run jailed as a VM slot uid with root's listening QMP socket
//! passed at QEMU's number, journaled as a VM's QEMU, so the executor
//! adopts them as after a restart and controls them through that socket:
//! the real QEMU (`-M none`: QMP and run states, no guest), and a QMP
//! stand-in for a guest that powers off on the ACPI button only while its
//! vCPUs run (which a machine without a guest OS cannot show).

use std::fs::File;
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_host::jail::{Jail, Limits};
use banger_host::runner::{Cmd, Runner, SpawnOptions, Spawned};
use banger_proto::ErrorCode;
use banger_proto::privops::{PauseVm, PrivOp, ResumeVm, VmOp};
use banger_vmm::driver::Vcpus;
use banger_vmm::qemu::Qmp;

use super::VmHost;
use super::error::VmOpError;
use super::slots::tests::{host, jail, journaled_stand_in};

/// A jailed VMM of the test's: killed (and reaped) when the test ends.
struct Vmm(Spawned);

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

/// `program` with `args` jailed as VM slot `slot` (long-lived, as a VMM
/// is), root's listening QMP socket of VM `id` passed at
/// `banger_vmm::qemu::fds::QMP`, its output in `log`; journaled as VM
/// `id`'s QEMU of that slot.
fn journaled_qmp_vmm(h: &VmHost, slot: u32, id: &str, program: &str, args: &[&str]) -> Vmm {
    let program = banger_host::runner::resolve(program.as_ref()).expect(program);
    let listener = h.qmp_socket(id, true).unwrap().listen().unwrap();
    let limits = Limits {
        memory: 8 << 30,
        processes: 256,
        open_files: 1024,
        file_size: 1 << 20,
    };
    let jail = Jail::new(slot, slot)
        .long_lived(limits)
        .pass(listener.as_fd(), banger_vmm::qemu::fds::QMP)
        .unwrap();
    let log = h.state_dir.join(format!("{id}.log"));
    let vmm = Runner
        .spawn(
            &Cmd::new(&program).args(args).jail(jail),
            SpawnOptions {
                output: Some(File::create(&log).unwrap()),
                run_as: None,
            },
        )
        .unwrap();
    let pid = vmm.pid();
    let mut txn = h.journal.open().unwrap();
    txn.state.vmms.push(crate::journal::VmmEntry {
        vm_id: id.into(),
        pid,
        start_time: banger_host::jail::start_time(pid).unwrap(),
        vmm: banger_proto::vmops::VmmKind::Qemu,
        uid: Some(slot),
        cgroup: None,
        tap: None,
        console_offset: None,
    });
    txn.save().unwrap();
    Vmm(vmm)
}

/// The real QEMU with no machine (no vCPU, no guest), QMP on root's
/// socket, as VM `id`'s VMM.
fn real_qemu(h: &VmHost, slot: u32, id: &str) -> Vmm {
    let qmp = format!(
        "socket,id=qmp,fd={},server=on,wait=off",
        banger_vmm::qemu::fds::QMP
    );
    let args = [
        "-M",
        "none",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-chardev",
        &qmp,
        "-mon",
        "chardev=qmp,mode=control",
    ];
    journaled_qmp_vmm(h, slot, id, "qemu-system-x86_64", &args)
}

/// A QMP stand-in for a QEMU whose guest powers off on the ACPI button
/// while its vCPUs run and never while they are paused: `stop` (answered
/// after `delay` seconds), `cont`, `query-status` as QEMU's;
/// `system_powerdown` ends it only while running.
fn guest_stand_in(h: &VmHost, slot: u32, id: &str, delay: f64) -> Vmm {
    const SCRIPT: &str = r#"
use strict; use warnings; use Socket;
my $delay = shift @ARGV;
open(my $l, "<&=", 21) or die "qmp: $!";
my $state = "running";
while (1) {
    accept(my $c, $l) or next;
    select((select($c), $| = 1)[0]);
    print $c "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n";
    while (my $line = <$c>) {
        if ($line =~ /"stop"/) { select(undef, undef, undef, $delay); $state = "paused"; }
        elsif ($line =~ /"cont"/) { $state = "running"; }
        if ($line =~ /query-status/) {
            my $r = $state eq "running" ? "true" : "false";
            print $c "{\"return\": {\"status\": \"$state\", \"running\": $r}}\n";
        } else {
            print $c "{\"return\": {}}\n";
        }
        exit 0 if $line =~ /system_powerdown/ && $state eq "running";
    }
}
"#;
    let delay = delay.to_string();
    journaled_qmp_vmm(h, slot, id, "perl", &["-e", SCRIPT, "--", &delay])
}

/// The run state QEMU reports over root's QMP socket of VM `id`, waiting
/// up to 10 s for QMP to answer (a VMM just spawned).
fn run_state(h: &VmHost, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let asked = Qmp::connect_socket(&h.qmp_socket(id, false).unwrap(), Duration::from_secs(5))
            .and_then(|mut q| q.status());
        match asked {
            Ok(state) => return state,
            Err(e) => {
                assert!(Instant::now() < deadline, "QMP of VM {id}: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The real QEMU, found through the journal as after a restart: paused
/// (QMP `query-status` says `paused`) and resumed (`running`), each twice;
/// while paused it is still a running, adopted VMM. A stop of the paused
/// VMM resumes it before the power button: it is `running` while the
/// stop waits; a machine without a guest ignores the button, so it is
/// killed after the timeout. Then a pause is refused as not running.
#[test]
fn a_real_qemu_is_paused_resumed_and_resumed_by_its_stop() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path(), jail(4));
    let id = "f".repeat(32);
    let _vmm = real_qemu(&h, 2_000_001, &id);
    assert_eq!(run_state(&h, &id), "running");
    for _ in 0..2 {
        h.set_vcpus(&id, Vcpus::Paused).unwrap();
        assert_eq!(run_state(&h, &id), "paused");
        let st = h.status(&id).unwrap();
        assert!(st.running && st.adopted, "{st:?}");
    }
    for _ in 0..2 {
        h.set_vcpus(&id, Vcpus::Running).unwrap();
        assert_eq!(run_state(&h, &id), "running");
    }
    h.set_vcpus(&id, Vcpus::Paused).unwrap();
    let stopped = std::thread::scope(|s| {
        let stop = s.spawn(|| h.stop(&id, Duration::from_secs(4), false));
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            run_state(&h, &id),
            "running",
            "the stop did not resume the paused VMM"
        );
        stop.join().unwrap().unwrap()
    });
    assert!(stopped.was_running && !stopped.graceful, "{stopped:?}");
    let asked = Instant::now();
    let e = h.set_vcpus(&id, Vcpus::Running).unwrap_err();
    assert!(matches!(e, VmOpError::NotRunning { .. }), "{e}");
    assert!(asked.elapsed() < Duration::from_secs(1));
    assert!(h.journal.open().unwrap().state.vmms.is_empty());
}

/// Through the executor's dispatch, as the daemon sends them: a pause or
/// resume of a VM no VMM of which runs is refused `invalid_state`, saying
/// so; an id that is no VM id is refused before anything is looked up;
/// a journaled VMM that is gone is forgotten and refused the same way.
#[test]
fn a_pause_or_resume_without_a_running_vmm_is_refused_as_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let exec = crate::Executor::new(
        Arc::new(banger_host::probe::fake::FakeHost::lab_host()),
        Arc::new(banger_host::net::fake::FakeNet::new()),
        dir.path().join("journal.json"),
    )
    .with_vms(super::VmHostConfig::for_tests(dir.path()));
    let id = "a".repeat(32);
    for op in [
        PrivOp::from(PauseVm { vm_id: id.clone() }),
        PrivOp::from(ResumeVm { vm_id: id.clone() }),
    ] {
        let e = exec.execute(op).map(drop).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidState, "{}", e.render());
        assert_eq!(e.render(), format!("VM {id} has no running VMM"));
    }
    let e = exec
        .execute(PrivOp::Vm(VmOp::PauseVm(PauseVm {
            vm_id: "../../etc".into(),
        })))
        .map(drop)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest, "{}", e.render());

    let h = host(dir.path(), jail(4));
    let mut gone = journaled_stand_in(&h, 2_000_001, &id);
    gone.kill().unwrap();
    gone.wait().unwrap();
    let e = h.set_vcpus(&id, Vcpus::Paused).unwrap_err();
    assert!(matches!(e, VmOpError::NotRunning { .. }), "{e}");
    assert_eq!(e.code(), ErrorCode::InvalidState);
    assert!(h.journal.open().unwrap().state.vmms.is_empty());
}

/// A pause while a stop has the VMM is refused (`invalid_state`, naming
/// the stop), and the stop goes on.
#[test]
fn a_pause_during_a_stop_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path(), jail(4));
    let id = "b".repeat(32);
    // Ignores the power-off request: the stop waits out its timeout.
    let mut vmm = journaled_stand_in(&h, 2_000_001, &id);
    assert!(h.status(&id).unwrap().running);
    std::thread::scope(|s| {
        let stop = s.spawn(|| h.stop(&id, Duration::from_millis(1500), false));
        std::thread::sleep(Duration::from_millis(300));
        for to in [Vcpus::Paused, Vcpus::Running] {
            let e = h.set_vcpus(&id, to).unwrap_err();
            assert!(
                matches!(
                    e,
                    VmOpError::Busy {
                        doing: "stopped",
                        ..
                    }
                ),
                "{e}"
            );
            assert_eq!(e.code(), ErrorCode::InvalidState);
        }
        let stopped = stop.join().unwrap().unwrap();
        assert!(stopped.was_running && !stopped.graceful, "{stopped:?}");
    });
    let _ = vmm.wait();
    assert!(h.journal.open().unwrap().state.vmms.is_empty());
}

/// Without the resume, a guest paused by `PauseVm` never sees the power
/// button and its stop is a kill after the whole timeout. With it, the
/// stand-in guest (which powers off only while running) stops gracefully
/// at once.
#[test]
fn a_stop_of_a_paused_vmm_lets_its_guest_power_off() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path(), jail(4));
    let id = "c".repeat(32);
    let _vmm = guest_stand_in(&h, 2_000_001, &id, 0.0);
    assert_eq!(run_state(&h, &id), "running");
    h.set_vcpus(&id, Vcpus::Paused).unwrap();
    assert_eq!(run_state(&h, &id), "paused");
    let asked = Instant::now();
    let stopped = h.stop(&id, Duration::from_secs(20), false).unwrap();
    assert!(stopped.was_running && stopped.graceful, "{stopped:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert!(h.journal.open().unwrap().state.vmms.is_empty());
}

/// While a pause is in flight (the stand-in answers `stop` after 1 s,
/// well inside QMP's 2 s: review s11, F4) the VMM reads as running and
/// adopted and is not re-adopted behind the pause's back; a second pause
/// is refused; a stop waits for the pause, then resumes the guest and
/// stops it gracefully. A kill during a pause kills at once (through the
/// pause's pidfd), without waiting for it.
#[test]
fn a_stop_or_kill_during_a_pause_waits_for_it_or_kills_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path(), jail(4));
    let (stopped_id, killed_id) = ("d".repeat(32), "e".repeat(32));
    let _stopped = guest_stand_in(&h, 2_000_001, &stopped_id, 1.0);
    let _killed = guest_stand_in(&h, 2_000_002, &killed_id, 1.0);
    assert_eq!(run_state(&h, &stopped_id), "running");
    assert_eq!(run_state(&h, &killed_id), "running");
    std::thread::scope(|s| {
        let pause = s.spawn(|| h.set_vcpus(&stopped_id, Vcpus::Paused));
        std::thread::sleep(Duration::from_millis(300));
        let during = h.status(&stopped_id).unwrap();
        assert!(during.running && during.adopted, "{during:?}");
        assert!(!h.procs.lock().unwrap().contains_key(&stopped_id));
        let e = h.set_vcpus(&stopped_id, Vcpus::Running).unwrap_err();
        assert!(
            matches!(
                e,
                VmOpError::Busy {
                    doing: "paused, resumed or snapshotted",
                    ..
                }
            ),
            "{e}"
        );
        let stopped = h.stop(&stopped_id, Duration::from_secs(20), false).unwrap();
        assert!(stopped.was_running && stopped.graceful, "{stopped:?}");
        pause.join().unwrap().unwrap();
    });
    std::thread::scope(|s| {
        let pause = s.spawn(|| h.set_vcpus(&killed_id, Vcpus::Paused));
        std::thread::sleep(Duration::from_millis(300));
        let asked = Instant::now();
        let killed = h.stop(&killed_id, Duration::ZERO, true).unwrap();
        assert!(killed.was_running && !killed.graceful, "{killed:?}");
        assert!(
            asked.elapsed() < Duration::from_millis(600),
            "{:?}",
            asked.elapsed()
        );
        assert!(pause.join().unwrap().is_err());
    });
    assert!(!h.status(&killed_id).unwrap().running);
    assert!(h.journal.open().unwrap().state.vmms.is_empty());
}

/// Review s11, F3: a stop that found a pause in flight waited for it
/// outside its own timeout. Its timeout now runs from the start: when it
/// runs out before the pause is over (the stand-in answers `stop` after
/// 1.5 s), the VMM is killed then, and the stop answers within its
/// timeout and the executor's promised overhead, well before the pause
/// would have ended.
#[test]
fn a_stop_whose_timeout_runs_out_during_a_pause_kills_then() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path(), jail(4));
    let id = "b".repeat(32);
    let _vmm = guest_stand_in(&h, 2_000_001, &id, 1.5);
    assert_eq!(run_state(&h, &id), "running");
    let timeout = Duration::from_millis(400);
    std::thread::scope(|s| {
        let pause = s.spawn(|| h.set_vcpus(&id, Vcpus::Paused));
        std::thread::sleep(Duration::from_millis(300));
        let asked = Instant::now();
        let stopped = h.stop(&id, timeout, false).unwrap();
        let took = asked.elapsed();
        assert!(stopped.was_running && !stopped.graceful, "{stopped:?}");
        assert!(took < timeout + Duration::from_millis(500), "{took:?}");
        let overhead = banger_proto::privops::STOP_OVERHEAD_MAX_SECS;
        assert!(took < timeout + Duration::from_secs(overhead));
        let e = pause.join().unwrap().unwrap_err();
        assert!(matches!(e, VmOpError::NotRunning { .. }), "{e}");
    });
    assert!(!h.status(&id).unwrap().running);
    assert!(h.journal.open().unwrap().state.vmms.is_empty());
}

/// Review s11, F8: a stop that waited for a pause stopped whatever VMM the
/// table held by then. Here another VMM of the VM is in the table when
/// the pause gives its own back (as a launch of the VM done in that gap
/// would leave it; put there by hand, as no request can hit that gap at
/// will): the stop leaves it alone and stops the paused VMM through the
/// pidfd it kept, killing it once the timeout ran out.
#[test]
fn a_stop_after_a_pause_stops_only_the_vmm_that_pause_had() {
    use banger_vmm::driver::{Found, VmmDriver as _};
    use banger_vmm::qemu::QemuDriver;
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path(), jail(4));
    let id = "c".repeat(32);
    let paused = guest_stand_in(&h, 2_000_001, &id, 1.0);
    assert_eq!(run_state(&h, &id), "running");
    let newer = Vmm(banger_vmm::testing::sleeper());
    let newer_pid = newer.0.pid();
    let started = banger_host::jail::start_time(newer_pid).unwrap();
    let found = Found::new(
        newer_pid,
        banger_vmm::testing::pidfd_of(&newer.0),
        None,
        &id,
    );
    let mut newer_vmm = Some(QemuDriver::adopt(found, None));
    std::thread::scope(|s| {
        let pause = s.spawn(|| h.set_vcpus(&id, Vcpus::Paused));
        std::thread::sleep(Duration::from_millis(300));
        let stop = s.spawn(|| h.stop(&id, Duration::from_secs(2), false));
        std::thread::sleep(Duration::from_millis(300));
        let newer_vmm = newer_vmm.take().unwrap();
        h.procs
            .lock()
            .unwrap()
            .insert(id.clone(), (newer_vmm, started));
        pause.join().unwrap().unwrap();
        let stopped = stop.join().unwrap().unwrap();
        assert!(stopped.was_running && !stopped.graceful, "{stopped:?}");
    });
    assert!(newer.0.pidfd_alive(), "the newer VMM was stopped");
    assert_eq!(h.status(&id).unwrap().pid, Some(newer_pid));
    assert!(!paused.0.pidfd_alive(), "the paused VMM still runs");
    assert!(h.journal.open().unwrap().state.vmms.is_empty());
    drop(h.procs.lock().unwrap().remove(&id));
}
