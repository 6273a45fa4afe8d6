//! The VM service over the network fake, with a VMM table in front of it:
//! its startup reconcile and watchdog when the executor cannot say whether
//! a VMM runs (the VM is left as it is — never marked stopped, never
//! stripped of its tap on a guess — and settled once the executor
//! answers), and its in-memory VMM handles (`vm::handles_cache`): filled
//! by the executor's answers, cleared on stop, what `vm show` reads.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use banger_proto::privops::{PrivOp, PrivOutcome, VmOp, VmmStatus, WaitVmReady};
use banger_proto::rpc::Response;
use banger_proto::vm::{VmInfo, VmRequest, VmResponse};
use banger_proto::vmops::{VmStopped, VmmKind, VmmState};
use banger_proto::{ErrorCode, RpcError};

use super::{Fixture, HostNetwork, net_cfg};
use crate::config::Config;
use crate::daemon::Daemon;
use crate::privileged::{Channel, PrivilegedOps};
use crate::server::ProgressSink;
use crate::store::VmState;

/// The network fake plus VMMs: `vmms[id]` is whether that VM's VMM runs,
/// `pids[id]` its pid (4242 unless launched or set); with `reachable` off
/// every VM operation fails as an unreachable helper does. `asked` names
/// every VM operation asked for.
#[derive(Debug)]
struct WithVmms {
    net: Arc<super::FakeOps>,
    vmms: Mutex<BTreeMap<String, bool>>,
    pids: Mutex<BTreeMap<String, u32>>,
    reachable: Mutex<bool>,
    asked: Mutex<Vec<&'static str>>,
    /// When set, a `KillVm` waits for a message on it before it answers.
    kill_gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// When set, `PauseVm`/`ResumeVm` are refused as the executor refuses
    /// them when no VMM runs (`invalid_state`, before touching anything).
    refuse_vcpus: Mutex<bool>,
}

/// The pid a launch gets from the fake.
const LAUNCHED_PID: u32 = 5151;

impl WithVmms {
    fn new(f: &Fixture, vmms: BTreeMap<String, bool>, reachable: bool) -> Arc<WithVmms> {
        Arc::new(WithVmms {
            net: f.ops.clone(),
            vmms: Mutex::new(vmms),
            pids: Mutex::default(),
            reachable: Mutex::new(reachable),
            asked: Mutex::default(),
            kill_gate: Mutex::default(),
            refuse_vcpus: Mutex::default(),
        })
    }

    fn state(&self, vm_id: String, running: bool) -> VmmState {
        VmmState {
            running,
            pid: Some(*self.pids.lock().unwrap().get(&vm_id).unwrap_or(&4242)),
            vm_id,
            vmm: Some(VmmKind::Firecracker),
            adopted: true,
            // Firecracker's vsock readiness: a boot is ready at once.
            ready: Some(running),
            start_time: None,
            sockets: Vec::new(),
            root_devices: Vec::new(),
        }
    }
}

impl PrivilegedOps for WithVmms {
    fn call_with_fds(&self, op: PrivOp) -> Result<(PrivOutcome, Vec<OwnedFd>), RpcError> {
        let PrivOp::Vm(op) = op else {
            return self.net.call_with_fds(op);
        };
        self.asked.lock().unwrap().push(op.name());
        if !*self.reachable.lock().unwrap() {
            return Err(RpcError::new(
                ErrorCode::Unavailable,
                "cannot reach the root helper",
            ));
        }
        let outcome = match op {
            VmOp::VmmStatus(VmmStatus { vm_id }) | VmOp::WaitVmReady(WaitVmReady { vm_id, .. }) => {
                let running = self.vmms.lock().unwrap().get(&vm_id).copied();
                PrivOutcome::Vmm(self.state(vm_id, running.unwrap_or(false)))
            }
            VmOp::LaunchVm(s) => {
                self.vmms.lock().unwrap().insert(s.vm_id.clone(), true);
                self.pids
                    .lock()
                    .unwrap()
                    .insert(s.vm_id.clone(), LAUNCHED_PID);
                PrivOutcome::Vmm(VmmState {
                    adopted: false,
                    ..self.state(s.vm_id, true)
                })
            }
            VmOp::KillVm(r) => {
                if let Some(gate) = self.kill_gate.lock().unwrap().take() {
                    let _ = gate.recv();
                }
                PrivOutcome::VmStopped(VmStopped {
                    graceful: false,
                    was_running: self
                        .vmms
                        .lock()
                        .unwrap()
                        .insert(r.vm_id, false)
                        .unwrap_or(false),
                })
            }
            VmOp::PauseVm(_) | VmOp::ResumeVm(_) => {
                if *self.refuse_vcpus.lock().unwrap() {
                    return Err(RpcError::new(
                        ErrorCode::InvalidState,
                        "VM has no running VMM",
                    ));
                }
                PrivOutcome::Done
            }
            other => panic!("not expected here: {}", other.name()),
        };
        Ok((outcome, Vec::new()))
    }

    fn channel(&self) -> Channel {
        Channel::InProcess
    }
}

/// A reconciled network with a one-tap pool and a daemon over `ops`.
fn daemon(f: &Fixture, ops: &Arc<WithVmms>) -> (Arc<HostNetwork>, Daemon) {
    let net = Arc::new(HostNetwork::new(
        net_cfg(1),
        super::TAP_OWNER,
        ops.clone(),
        f.store.clone(),
        f.layout.clone(),
    ));
    net.reconcile().unwrap();
    let daemon = Daemon::new(
        banger_proto::rpc::DaemonMode::Dev,
        f.layout.clone(),
        Config::default(),
        f.store.clone(),
        ops.clone(),
        Arc::clone(&net),
    );
    (net, daemon)
}

async fn vm_request(daemon: &Daemon, req: VmRequest) -> VmResponse {
    match daemon.vms().handle_vm(req, ProgressSink::discard()).await {
        Ok(Response::Vm(r)) => r,
        other => panic!("not a VM answer: {other:?}"),
    }
}

async fn show(daemon: &Daemon, name: &str) -> VmInfo {
    match vm_request(daemon, VmRequest::Show { name: name.into() }).await {
        VmResponse::Vm(info) => info,
        other => panic!("not a VM: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_whose_vmm_cannot_be_asked_about_keeps_its_state_and_tap() {
    let f = Fixture::new();
    let running = f.vm("run", 2, true, VmState::Running);
    let stopping = f.vm("stop", 3, true, VmState::Stopping);
    let ops = WithVmms::new(
        &f,
        BTreeMap::from([(running.id.clone(), true), (stopping.id.clone(), true)]),
        false,
    );
    let (net, daemon) = daemon(&f, &ops);
    let tap = f.recorded_tap(&running).expect("the running VM got a tap");

    // Before the fix a failed VmmStatus read as "not running": the VM was
    // marked stopped and its tap returned while its VMM ran on.
    daemon.vms().reconcile().await;
    let state = |id: &str| f.store.get_vm(id).unwrap().unwrap().state;
    assert_eq!(state(&running.id), VmState::Running);
    assert_eq!(state(&stopping.id), VmState::Stopping);
    assert_eq!(f.recorded_tap(&running).as_deref(), Some(tap.as_str()));
    assert_eq!(super::assigned(&net).get(&running.id), Some(&tap));
    daemon.vms().reap_dead_vmms().await;
    assert_eq!(
        state(&running.id),
        VmState::Running,
        "the watchdog guesses neither"
    );
    assert_eq!(state(&stopping.id), VmState::Stopping);

    // Once the executor answers, the watchdog settles both: the running
    // VMM is kept, the one whose stop died with the old daemon is killed.
    *ops.reachable.lock().unwrap() = true;
    daemon.vms().reap_dead_vmms().await;
    assert_eq!(state(&running.id), VmState::Running);
    assert_eq!(f.recorded_tap(&running).as_deref(), Some(tap.as_str()));
    assert_eq!(state(&stopping.id), VmState::Stopped);
    assert_eq!(ops.vmms.lock().unwrap().get(&stopping.id), Some(&false));

    // A VM starting with nobody holding its lock after startup is some
    // request's (a client that went away leaves its launch running): the
    // watchdog never settles it on a guess that the launch died.
    let starting = f.vm("late", 4, true, VmState::Starting);
    daemon.vms().reap_dead_vmms().await;
    assert_eq!(state(&starting.id), VmState::Starting);
    assert!(ops.vmms.lock().unwrap().get(&starting.id).is_none());

    // And a VMM that is gone is seen as gone.
    ops.vmms.lock().unwrap().insert(running.id.clone(), false);
    daemon.vms().reap_dead_vmms().await;
    assert_eq!(state(&running.id), VmState::Stopped);
    assert_eq!(f.recorded_tap(&running), None);
}

/// What an older daemon wrote: the tap, and a copy of the VMM the executor
/// reported at launch.
fn old_handles(tap: &str, pid: u32) -> String {
    format!(
        r#"{{ "tap": "{tap}",
  "vmm": {{ "kind": "firecracker", "pid": {pid}, "start_time": 1, "sockets": [] }},
  "snapshot_devices": [] }}"#
    )
}

fn handles_json(f: &Fixture, vm_id: &str) -> serde_json::Value {
    let path = f.layout.vm_dir(vm_id).join(banger_proto::layout::HANDLES);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_show_reads_the_vmm_the_startup_reconcile_asked_the_executor_about() {
    let f = Fixture::new();
    let vm = f.vm("run", 2, true, VmState::Running);
    let dir = f.layout.vm_dir(&vm.id);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(banger_proto::layout::HANDLES);
    std::fs::write(&file, old_handles("bangertap9", 1111)).unwrap();
    let ops = WithVmms::new(&f, BTreeMap::from([(vm.id.clone(), true)]), true);

    // The host lost the recorded tap: the network reconcile gives the VM
    // another and rewrites the old file without its VMM copy.
    let (_net, daemon) = daemon(&f, &ops);
    let tap = f.recorded_tap(&vm).expect("a tap");
    assert_ne!(tap, "bangertap9");
    assert_eq!(handles_json(&f, &vm.id), serde_json::json!({ "tap": tap }));

    daemon.vms().reconcile().await;
    assert_eq!(*ops.asked.lock().unwrap(), ["vmm_status"]);

    // From here on `vm show` and `vm ls` neither read the file nor ask the
    // executor: the pid is the executor's at reconcile, not the file's.
    // (A file that cannot be read back: any read of it would lose both.)
    std::fs::write(&file, "{nope").unwrap();
    ops.asked.lock().unwrap().clear();
    f.ops.take_ops();
    let info = show(&daemon, "run").await;
    assert_eq!(info.pid, Some(4242));
    assert_eq!(info.tap.as_deref(), Some(tap.as_str()));
    let VmResponse::List(all) = vm_request(&daemon, VmRequest::List).await else {
        panic!("not a list");
    };
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].pid, Some(4242));
    assert!(ops.asked.lock().unwrap().is_empty());
    assert!(f.ops.take_ops().is_empty());

    // `vm stats` asks, and its answer (the lock was free) is kept.
    ops.pids.lock().unwrap().insert(vm.id.clone(), 4343);
    vm_request(&daemon, VmRequest::Stats { name: "run".into() }).await;
    assert_eq!(*ops.asked.lock().unwrap(), ["vmm_status"]);
    assert_eq!(show(&daemon, "run").await.pid, Some(4343));

    // The watchdog sees the VMM gone: the VM stops, its entry goes (a row
    // put back to running shows no pid).
    ops.vmms.lock().unwrap().insert(vm.id.clone(), false);
    daemon.vms().reap_dead_vmms().await;
    let stopped = f.store.get_vm(&vm.id).unwrap().unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    f.store
        .set_vm_state(&vm.id, VmState::Stopped, VmState::Running, None)
        .unwrap();
    assert_eq!(show(&daemon, "run").await.pid, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_fills_the_vmm_handles_and_a_kill_clears_them() {
    let f = Fixture::new();
    let vm = f.vm("new", 2, true, VmState::Created);
    let ops = WithVmms::new(&f, BTreeMap::new(), true);
    let (_net, daemon) = daemon(&f, &ops);

    let VmResponse::Vm(started) =
        vm_request(&daemon, VmRequest::Start { name: "new".into() }).await
    else {
        panic!("not a VM");
    };
    assert_eq!(started.state, VmState::Running);
    assert_eq!(started.pid, Some(LAUNCHED_PID));
    let tap = started.tap.clone().expect("a tap");
    assert_eq!(handles_json(&f, &vm.id), serde_json::json!({ "tap": tap }));
    ops.asked.lock().unwrap().clear();
    assert_eq!(show(&daemon, "new").await.pid, Some(LAUNCHED_PID));
    assert!(ops.asked.lock().unwrap().is_empty());

    let VmResponse::Vm(killed) = vm_request(&daemon, VmRequest::Kill { name: "new".into() }).await
    else {
        panic!("not a VM");
    };
    assert_eq!(killed.state, VmState::Stopped);
    assert_eq!((killed.pid, killed.tap), (None, None));
    assert_eq!(handles_json(&f, &vm.id), serde_json::json!({ "tap": null }));
    // Not only hidden by the state: the entry is gone.
    f.store
        .set_vm_state(&vm.id, VmState::Stopped, VmState::Running, None)
        .unwrap();
    assert_eq!(show(&daemon, "new").await.pid, None);
}

async fn stats(daemon: &Daemon, name: &str) -> banger_proto::vm::VmStats {
    match vm_request(daemon, VmRequest::Stats { name: name.into() }).await {
        VmResponse::Stats(s) => s,
        other => panic!("not stats: {other:?}"),
    }
}

/// Issue #14 item 9: the sampler keeps each running VM's recent counters,
/// `vm stats` gives them with rates over this run of its VMM, and a VM
/// that stops loses its history at the next tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_vms_are_sampled_into_the_history_vm_stats_reports() {
    let f = Fixture::new();
    let vm = f.vm("run", 2, true, VmState::Running);
    let ops = WithVmms::new(&f, BTreeMap::from([(vm.id.clone(), true)]), true);
    // The "VMM" is this test process: its CPU time is real and moves.
    let me = std::process::id();
    ops.pids.lock().unwrap().insert(vm.id.clone(), me);
    let (_net, daemon) = daemon(&f, &ops);
    daemon.vms().reconcile().await;
    for _ in 0..3 {
        daemon.vms().sample_running().await;
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(spin.elapsed());
        }
    }
    let s = stats(&daemon, "run").await;
    assert!(s.running);
    assert_eq!(s.history.len(), 3, "{:?}", s.history);
    assert!(s.history.iter().all(|h| h.pid == Some(me)));
    assert!(s.history.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    let r = s.rates.expect("rates over the samples and now");
    assert!(r.window_ms >= 60, "{r:?}");
    assert!(r.cpu_ms_per_s.is_some(), "{r:?}");

    // The VMM goes: the watchdog stops the VM, the next tick drops its
    // history, and stats give no rates.
    ops.vmms.lock().unwrap().insert(vm.id.clone(), false);
    daemon.vms().reap_dead_vmms().await;
    daemon.vms().sample_running().await;
    let s = stats(&daemon, "run").await;
    assert!(!s.running);
    assert!(s.history.is_empty(), "{:?}", s.history);
    assert_eq!(s.rates, None);
}

/// A client that goes away mid-change drops its request, never the VM's
/// lock while the executor still works on the VM: the change runs to its
/// end in a task of its own (hostile read of beec8fb, finding 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_keeps_the_vm_lock_until_its_change_is_done() {
    let f = Fixture::new();
    let vm = f.vm("run", 2, true, VmState::Running);
    let ops = WithVmms::new(&f, BTreeMap::from([(vm.id.clone(), true)]), true);
    let (_net, daemon) = daemon(&f, &ops);
    daemon.vms().reconcile().await;
    let (release, gate) = std::sync::mpsc::channel();
    *ops.kill_gate.lock().unwrap() = Some(gate);

    // The client asks for a kill and goes away while the executor works.
    let kill = vm_request(&daemon, VmRequest::Kill { name: "run".into() });
    let gone = tokio::time::timeout(std::time::Duration::from_millis(300), kill).await;
    assert!(
        gone.is_err(),
        "the kill answered while the executor was held"
    );
    let lock = daemon.vms().lock_for(&vm.id);
    assert!(
        lock.try_lock().is_err(),
        "the VM's lock went with the request"
    );
    assert_eq!(
        f.store.get_vm(&vm.id).unwrap().unwrap().state,
        VmState::Stopping
    );

    // The executor answers: the change finishes, and only then the lock
    // is free.
    release.send(()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while f.store.get_vm(&vm.id).unwrap().unwrap().state != VmState::Stopped {
        assert!(
            std::time::Instant::now() < deadline,
            "the kill never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _held = tokio::time::timeout(std::time::Duration::from_secs(5), lock.lock())
        .await
        .expect("the lock is free once the change is done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_ask_the_executor_and_a_paused_vm_stays_paused_across_a_restart() {
    let f = Fixture::new();
    let vm = f.vm("pz", 2, true, VmState::Running);
    let ops = WithVmms::new(&f, BTreeMap::from([(vm.id.clone(), true)]), true);
    let (_net, first) = daemon(&f, &ops);
    first.vms().reconcile().await;
    ops.asked.lock().unwrap().clear();

    let pause = || VmRequest::Pause { name: "pz".into() };
    let resume = || VmRequest::Resume { name: "pz".into() };
    let VmResponse::Vm(p) = vm_request(&first, pause()).await else {
        panic!("not a VM");
    };
    assert_eq!(p.state, VmState::Paused);
    assert_eq!(*ops.asked.lock().unwrap(), ["pause_vm"]);
    // Pausing a paused VM asks again (idempotent there): a pause or resume
    // is always the way out of a row that disagrees with its VMM.
    vm_request(&first, pause()).await;
    assert_eq!(*ops.asked.lock().unwrap(), ["pause_vm", "pause_vm"]);

    // A restarted daemon's reconcile finds the VMM running and leaves the
    // VM paused (its VMM still is).
    let (_net2, again) = daemon(&f, &ops);
    again.vms().reconcile().await;
    assert_eq!(show(&again, "pz").await.state, VmState::Paused);

    ops.asked.lock().unwrap().clear();
    let VmResponse::Vm(r) = vm_request(&again, resume()).await else {
        panic!("not a VM");
    };
    assert_eq!(r.state, VmState::Running);
    assert_eq!(*ops.asked.lock().unwrap(), ["resume_vm"]);
    vm_request(&again, resume()).await;
    assert_eq!(*ops.asked.lock().unwrap(), ["resume_vm", "resume_vm"]);

    // A pause whose outcome is unknown (here the helper cannot be reached;
    // likewise a deadline) leaves the row paused, which a resume repairs
    // whatever the VMM did; a refusal made before the VMM was touched
    // (no VMM runs) leaves it as it was.
    *ops.reachable.lock().unwrap() = false;
    let err = again
        .vms()
        .handle_vm(pause(), ProgressSink::discard())
        .await
        .unwrap_err();
    assert!(
        err.render().contains("banger vm resume pz"),
        "{}",
        err.render()
    );
    assert_eq!(show(&again, "pz").await.state, VmState::Paused);
    *ops.reachable.lock().unwrap() = true;
    vm_request(&again, resume()).await;
    assert_eq!(show(&again, "pz").await.state, VmState::Running);
    *ops.refuse_vcpus.lock().unwrap() = true;
    let err = again
        .vms()
        .handle_vm(pause(), ProgressSink::discard())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidState, "{err:?}");
    assert_eq!(show(&again, "pz").await.state, VmState::Running);
    *ops.refuse_vcpus.lock().unwrap() = false;

    // The watchdog stops a paused VM whose VMM died, like a running one.
    vm_request(&again, pause()).await;
    ops.vmms.lock().unwrap().insert(vm.id.clone(), false);
    again.vms().reap_dead_vmms().await;
    let row = f.store.get_vm(&vm.id).unwrap().unwrap();
    assert_eq!(row.state, VmState::Stopped);
    assert!(row.state_reason.unwrap().contains("exited"));

    // Neither applies to a stopped VM: refused, nothing asked.
    ops.asked.lock().unwrap().clear();
    for req in [pause(), resume()] {
        let err = again
            .vms()
            .handle_vm(req, ProgressSink::discard())
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidState, "{err:?}");
        assert!(err.render().contains("it is stopped"), "{}", err.render());
    }
    assert!(ops.asked.lock().unwrap().is_empty());
}

/// Snapshots at the daemon's start and a saved VM's rules (issue #15): the
/// startup reconcile removes a snapshot directory no row names (a save the
/// daemon died during), keeps a snapshot's and a saved VM's; a saved VM
/// shows `saved` and refuses `vm set` until it is started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_startup_sweep_keeps_recorded_snapshots_and_a_saved_vm_refuses_a_change() {
    let f = Fixture::new();
    let vm = f.vm("sv", 2, false, VmState::Stopped);
    let ops = WithVmms::new(&f, BTreeMap::new(), true);
    let (_net, daemon) = daemon(&f, &ops);
    let image = f.store.get_image(&f.image_id).unwrap().unwrap();
    let dirs = f.layout.state_dir.join(banger_proto::layout::SNAPSHOTS_DIR);
    let (orphan, kept, saved) = ("1".repeat(32), "2".repeat(32), "3".repeat(32));
    for d in [&orphan, &kept, &saved, &"notes".to_string()] {
        std::fs::create_dir_all(dirs.join(d)).unwrap();
        std::fs::write(dirs.join(d).join("memory"), "state").unwrap();
    }
    f.store
        .insert_snapshot(&crate::store::SnapshotRow {
            id: kept.clone(),
            name: "sv-1".into(),
            source_vm: "sv".into(),
            image_id: image.id.clone(),
            kernel_id: image.kernel_id.clone(),
            vmm: VmmKind::Qemu,
            vcpus: 1,
            memory_mib: 512,
            disk_bytes: 1 << 30,
            memory_bytes: 5,
            created_at: 0,
        })
        .unwrap();
    assert_eq!(f.store.set_saved_state(&vm.id, &saved).unwrap(), None);

    daemon.vms().reconcile().await;
    assert!(
        !dirs.join(&orphan).exists(),
        "an unrecorded snapshot stayed"
    );
    for d in [&kept, &saved, &"notes".to_string()] {
        assert!(dirs.join(d).exists(), "{d} was removed");
    }

    assert!(show(&daemon, "sv").await.saved);
    let err = daemon
        .vms()
        .handle_vm(
            VmRequest::Set(banger_proto::vm::SetVm {
                name: "sv".into(),
                vcpus: Some(2),
                memory_mib: None,
                disk_bytes: None,
                nat: None,
            }),
            ProgressSink::discard(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidState, "{err:?}");
    assert!(
        err.render().contains("banger vm start sv"),
        "{}",
        err.render()
    );
    // Its saved state goes with the VM's row; a snapshot keeps its image.
    f.store.delete_vm(&vm.id).unwrap();
    assert_eq!(f.store.saved_state(&vm.id).unwrap(), None);
    let e = f.store.delete_image(&image.id).unwrap_err();
    assert!(e.to_string().contains("snapshot sv-1"), "{e}");
}
