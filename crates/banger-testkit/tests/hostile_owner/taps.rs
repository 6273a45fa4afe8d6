//! Firecracker jail design, part 2 step 2: idle taps are root's, and a
//! Firecracker (which opens its tap by name, as the uid it runs as: its
//! VM slot's, jailed) gets its tap only for its launch.

use banger_proto::privops::{PrivOp, StopVm, VmOp};
use banger_proto::vmops::VmmKind;
use banger_testkit::*;

use crate::lab::*;

/// The tap's tun owner as `ip -d` names it (`root` for uid 0).
fn tap_user(lab: &Lab) -> serde_json::Value {
    tap_info(lab)["user"].clone()
}

/// The tap's tun details as `ip -d` gives them (`user`, `group`).
fn tap_info(lab: &Lab) -> serde_json::Value {
    let mut ip = lab.ns.exec("ip");
    ip.args(["-j", "-d", "link", "show", TAP]);
    let v: serde_json::Value = serde_json::from_str(&run_ok(ip)).unwrap();
    v[0]["linkinfo"]["info_data"].clone()
}

/// Whether the stand-in Firecracker's `serial` log says it attached its
/// tap as a uid of its own: neither root's nor the `owner`'s (its slot's).
fn attached_as_a_slot(serial: &str, owner: u32) -> bool {
    serial
        .lines()
        .filter_map(|l| l.strip_prefix("tap attached as "))
        .any(|uid| uid.parse::<u32>().is_ok_and(|u| u != 0 && u != owner))
}

/// The stand-in Firecracker ([`crate::fc_jail::attaching_firecracker`]) runs jailed as
/// its VM slot's uid: the tap, root's while idle, must be that uid's
/// during the launch, and root's again once the launch has failed and the
/// stand-in is gone.
#[test]
fn a_firecracker_attaches_its_tap_as_its_slot_only_during_its_launch() {
    let lab = Lab::new();
    let vm = "1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c";
    let dir = lab.vm(vm);
    lab.stand_in("firecracker", &crate::fc_jail::attaching_firecracker());
    let lab = lab.start();
    assert_eq!(tap_user(&lab), "root", "an idle tap is not root's");
    let err = lab
        .launch(vm, VmmKind::Firecracker)
        .expect_err("the stand-in exits");
    let serial = std::fs::read_to_string(dir.join("serial.log")).unwrap_or_default();
    assert!(
        attached_as_a_slot(&serial, lab.owner.uid),
        "the jailed Firecracker could not attach its tap during its launch: {serial:?} ({err})"
    );
    assert_eq!(
        tap_user(&lab),
        "root",
        "the tap stayed the owner's after the launch failed"
    );
}

/// Hostile read of the tap hand-over, findings 1 and 2: a QEMU's tap
/// (root's, attached by root and passed to the jailed QEMU) was never
/// given back, and a give-back reset only the tun owner. An escaped QEMU
/// holding its tap's descriptor sets the tap's group (`TUNSETGROUP`: a
/// group can never be cleared) and its owner to the owner's uid
/// (`TUNSETOWNER`), then lets go of it. Once that VMM is stopped the tap
/// must be root's, owner and group, and the next Firecracker (its slot's),
/// handed the tap for its launch, must attach to it.
#[test]
fn a_qemus_tap_goes_back_to_root_owner_and_group_when_it_stops() {
    let lab = Lab::new();
    let (qemu_vm, fc_vm) = (
        "1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e",
        "1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f",
    );
    let qemu_dir = lab.vm(qemu_vm);
    let fc_dir = lab.vm(fc_vm);
    let owner = lab.owner.uid;
    let prelude = format!(
        "my $tfd;\n\
         for my $i (0 .. $#ARGV - 1) {{\n\
             $tfd = $1 if $ARGV[$i] eq \"-netdev\" && $ARGV[$i + 1] =~ m{{^tap,id=net0,fd=(\\d+)}};\n\
         }}\n\
         die \"no -netdev tap,id=net0,fd= argument\" unless defined $tfd;\n\
         open(my $tap, \"+<&=\", $tfd) or die \"tap: $!\";\n\
         print ioctl($tap, 0x400454ce, 0 + {GROUP}) ? \"group set\\n\" : \"TUNSETGROUP: $!\\n\";\n\
         print ioctl($tap, 0x400454cc, 0 + {owner}) ? \"owner set\\n\" : \"TUNSETOWNER: $!\\n\";\n\
         close($tap);\n"
    );
    lab.stand_in("qemu", &crate::vmm_jail::probe_after(&prelude, &[]));
    lab.stand_in("firecracker", &crate::fc_jail::attaching_firecracker());
    let lab = lab.start();
    lab.launch(qemu_vm, VmmKind::Qemu).expect("the QEMU launch");
    let log = std::fs::read_to_string(qemu_dir.join("vmm.log")).unwrap_or_default();
    assert!(
        log.contains("group set\nowner set\n"),
        "the stand-in QEMU could not change its tap: {log:?}"
    );
    lab.call(PrivOp::Vm(VmOp::StopVm(StopVm {
        vm_id: qemu_vm.into(),
        timeout_secs: 5,
    })))
    .expect("StopVm");
    let info = tap_info(&lab);
    assert_eq!(
        (&info["user"], &info["group"]),
        (&serde_json::json!("root"), &serde_json::json!("root")),
        "the stopped QEMU's tap is not root's: {info}"
    );
    let err = lab
        .launch(fc_vm, VmmKind::Firecracker)
        .expect_err("the stand-in exits");
    let serial = std::fs::read_to_string(fc_dir.join("serial.log")).unwrap_or_default();
    assert!(
        attached_as_a_slot(&serial, owner),
        "the next launch's Firecracker could not attach its tap: {serial:?} ({err})"
    );
}

/// A group no process of the test has.
const GROUP: u32 = 4242;
