//! The VM service's startup reconcile and watchdog when the executor cannot
//! say whether a VMM runs: the VM is left as it is (never marked stopped,
//! never stripped of its tap on a guess), and settled once the executor
//! answers. Over the network fake, with a VMM table in front of it.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use banger_proto::privops::{PrivOp, PrivOutcome, VmOp};
use banger_proto::vmops::{VmStopped, VmmState};
use banger_proto::{ErrorCode, RpcError};

use super::{Fixture, net_cfg};
use crate::config::Config;
use crate::daemon::Daemon;
use crate::privileged::{Channel, PrivilegedOps};
use crate::store::VmState;

/// The network fake plus VMMs: `vmms[id]` is whether that VM's VMM runs;
/// with `reachable` off every VM operation fails as an unreachable helper
/// does.
#[derive(Debug)]
struct WithVmms {
    net: Arc<super::FakeOps>,
    vmms: Mutex<BTreeMap<String, bool>>,
    reachable: Mutex<bool>,
}

impl PrivilegedOps for WithVmms {
    fn call_with_fds(&self, op: PrivOp) -> Result<(PrivOutcome, Vec<OwnedFd>), RpcError> {
        let PrivOp::Vm(op) = op else {
            return self.net.call_with_fds(op);
        };
        if !*self.reachable.lock().unwrap() {
            return Err(RpcError::new(
                ErrorCode::Unavailable,
                "cannot reach the root helper",
            ));
        }
        let mut vmms = self.vmms.lock().unwrap();
        let outcome = match op {
            VmOp::VmmStatus(r) => PrivOutcome::Vmm(VmmState {
                running: vmms.get(&r.vm_id).copied().unwrap_or(false),
                vm_id: r.vm_id,
                pid: Some(4242),
                vmm: None,
                adopted: true,
                ready: None,
                start_time: None,
                sockets: Vec::new(),
                root_devices: Vec::new(),
            }),
            VmOp::KillVm(r) => PrivOutcome::VmStopped(VmStopped {
                graceful: false,
                was_running: vmms.insert(r.vm_id, false).unwrap_or(false),
            }),
            other => panic!("not expected here: {}", other.name()),
        };
        Ok((outcome, Vec::new()))
    }

    fn channel(&self) -> Channel {
        Channel::InProcess
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_whose_vmm_cannot_be_asked_about_keeps_its_state_and_tap() {
    let f = Fixture::new();
    let running = f.vm("run", 2, true, VmState::Running);
    let stopping = f.vm("stop", 3, true, VmState::Stopping);
    let ops = Arc::new(WithVmms {
        net: f.ops.clone(),
        vmms: Mutex::new(BTreeMap::from([
            (running.id.clone(), true),
            (stopping.id.clone(), true),
        ])),
        reachable: Mutex::new(false),
    });
    let net = Arc::new(super::HostNetwork::new(
        net_cfg(1),
        super::TAP_OWNER,
        ops.clone(),
        f.store.clone(),
        f.layout.clone(),
    ));
    net.reconcile().unwrap();
    let tap = f.recorded_tap(&running).expect("the running VM got a tap");
    let daemon = Daemon::new(
        banger_proto::rpc::DaemonMode::Dev,
        f.layout.clone(),
        Config::default(),
        f.store.clone(),
        ops.clone(),
        Arc::clone(&net),
    );

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
