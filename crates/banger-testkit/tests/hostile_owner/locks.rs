//! One VMM or tool per disk (the s13 review of the root-side diff, F2):
//! QEMU held a `flock` on its drives, but a Firecracker launch and the
//! jailed disk tools took none, so a disk a running QEMU held could be
//! launched under Firecracker (or grown by e2fsprogs) after the owner
//! moved it into another VM's directory: two writers of one ext4.

use banger_proto::net::TapSpec;
use banger_proto::privops::{GrowWorkDisk, KillVm, NetOp, PrivOp, VmOp};
use banger_proto::vmops::VmmKind;

use crate::fc_jail::fc_probe;
use crate::jailed_vmm::{KilledOnDrop, pid_and_uid};
use crate::lab::*;
use crate::vmm_jail::probe;

/// The second VM's tap (QEMU holds the lab's first).
const TAP_B: &str = "bangertap1";

fn launch_b(lab: &Lab, id: &str) -> Result<serde_json::Value, String> {
    lab.launch_fc_on(id, TAP_B, "02:ba:0a:d5:07:03")
}

fn grow(lab: &Lab, id: &str) -> Result<serde_json::Value, String> {
    lab.call(PrivOp::Vm(VmOp::GrowWorkDisk(GrowWorkDisk {
        vm_id: id.into(),
        bytes: 64 << 20,
    })))
}

/// Whether another open file description holds a lock on `disk`.
fn locked(disk: &std::path::Path) -> bool {
    let f = std::fs::File::open(disk).unwrap();
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => false,
        Err(rustix::io::Errno::WOULDBLOCK) => true,
        Err(e) => panic!("flock {}: {e}", disk.display()),
    }
}

fn in_use(err: &str, disk: &std::path::Path) {
    assert!(
        err.starts_with("invalid_state")
            && err.contains(&format!("VM disk {} is in use", disk.display())),
        "{err}"
    );
}

/// QEMU runs on VM a; the owner moves a's work disk into VM b. A
/// Firecracker launch of b and a tool on b's work disk are refused for
/// the lock QEMU's descriptor holds. Once QEMU is gone, b's Firecracker
/// launches, and holds the lock itself (its passed descriptor) after the
/// launch has returned, until it is killed.
#[test]
fn a_disk_a_vmm_holds_is_refused_to_firecracker_and_to_the_tools() {
    let lab = Lab::new();
    let (a, b) = (
        "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a",
        "7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b",
    );
    let (adir, bdir) = (lab.vm(a), lab.vm(b));
    lab.stand_in("qemu", &probe(&[]));
    lab.stand_in("firecracker", &fc_probe(&[], &[]));
    let lab = lab.start();
    lab.call(PrivOp::Net(NetOp::EnsureTap(TapSpec {
        name: TAP_B.into(),
        bridge: BRIDGE.into(),
        owner_uid: lab.owner.uid,
    })))
    .expect("EnsureTap");
    let v = lab.launch(a, VmmKind::Qemu).expect("LaunchVm a (QEMU)");
    let qemu = KilledOnDrop::new(&[pid_and_uid(&v).0]);
    // The owner's move: a's disk, still under a's QEMU, becomes b's.
    let disk = bdir.join("work.ext4");
    std::fs::rename(adir.join("work.ext4"), &disk).unwrap();

    let err = match launch_b(&lab, b) {
        Ok(v) => {
            let _fc = KilledOnDrop::new(&[pid_and_uid(&v).0]);
            panic!("a disk QEMU holds is no Firecracker's, but it launched: {v}");
        }
        Err(e) => e,
    };
    in_use(&err, &disk);
    let err = grow(&lab, b).expect_err("a disk QEMU holds is no tool's");
    in_use(&err, &disk);
    let len = std::fs::metadata(&disk).unwrap().len();
    assert_eq!(len, 4096, "the tool ran on it");

    lab.call(PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: a.into() })))
        .unwrap();
    drop(qemu);
    let v = launch_b(&lab, b).expect("LaunchVm b (Firecracker) once QEMU let go");
    let fc_pid = pid_and_uid(&v).0;
    let fc = KilledOnDrop::new(&[fc_pid]);
    // (The helper refuses a tool on a VM with a running VMM before any
    // lock: the lock is probed directly, as another VMM's launch would.)
    assert!(locked(&disk), "Firecracker holds no lock once launched");
    // Firecracker killed behind the helper's back: the lock goes with it
    // (not with anything the helper still holds).
    drop(fc);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{fc_pid}/fd")).exists()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!locked(&disk), "the lock outlived Firecracker");
    lab.call(PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: b.into() })))
        .unwrap();
    // Let go with the VMM: the tool may run (and fails only for the
    // disk's content, 4 KiB of zeros, which is no ext4).
    if let Err(e) = grow(&lab, b) {
        assert!(!e.contains("is in use"), "{e}");
    }
}
