//! The privileged-ops contract, run against both adapters: the in-process
//! executor (dev mode) and the helper client talking to a real `bangerd-root`
//! (system mode). Both must give the same answers about the same host.

use std::sync::Arc;

use banger_executor::Executor;
use banger_host::net::RealNet;
use banger_host::probe::RealHost;
use banger_proto::privops::{DeviceState, HostDevice, PrivOp, PrivOutcome};
use banger_testkit::*;
use bangerd::privileged::{Channel, HelperClient, InProcess, PrivilegedOps};

fn contract(ops: &dyn PrivilegedOps) {
    for device in HostDevice::ALL {
        let out = ops.call(PrivOp::ProbeDevice { device }).unwrap();
        let PrivOutcome::Device(d) = out else {
            panic!("wrong outcome {out:?}")
        };
        assert_eq!(d.device, device);
        let exists = std::path::Path::new(device.path()).exists();
        assert_eq!(
            matches!(d.state, DeviceState::Absent),
            !exists,
            "{device:?}: {:?} but exists={exists}",
            d.state
        );
    }
    let PrivOutcome::Kvm(k) = ops.call(PrivOp::ProbeKvm).unwrap() else {
        panic!()
    };
    assert_eq!(
        matches!(k.device, DeviceState::Absent),
        !std::path::Path::new("/dev/kvm").exists()
    );
    let PrivOutcome::Nftables(n) = ops.call(PrivOp::ProbeNftables).unwrap() else {
        panic!()
    };
    assert_eq!(n.tool, "nft");
}

#[test]
fn in_process_adapter_meets_the_contract() {
    require_root();
    let dir = shared_tempdir();
    let ops = InProcess::new(Executor::new(
        Arc::new(RealHost::new()),
        Arc::new(RealNet::new()),
        dir.path().join("journal.json"),
    ));
    assert_eq!(ops.channel(), Channel::InProcess);
    contract(&ops);
}

#[test]
fn helper_client_meets_the_contract() {
    require_root();
    let dir = shared_tempdir();
    // The test process (root) plays the owner daemon here, so the helper is
    // installed with root as its owner; uid separation is covered in helper.rs.
    let me = TestUser {
        name: "root".into(),
        uid: 0,
        gid: 0,
    };
    let h = RootHelper::start(dir.path(), &me);
    std::mem::forget(me); // not a created user: nothing to delete
    let ops = HelperClient::new(&h.socket);
    assert!(
        matches!(ops.channel(), Channel::Helper { .. }),
        "{:?}",
        ops.channel()
    );
    contract(&ops);
}

#[test]
fn helper_client_reports_an_absent_helper() {
    let dir = shared_tempdir();
    let ops = HelperClient::new(dir.path().join("root.sock"));
    let Channel::HelperUnreachable { error, .. } = ops.channel() else {
        panic!()
    };
    assert!(error.contains("root.sock"), "{error}");
    let err = ops.call(PrivOp::ProbeKvm).unwrap_err();
    assert_eq!(err.code, banger_proto::ErrorCode::Unavailable);
}
