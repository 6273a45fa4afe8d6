//! Firecracker jail design, part 2 step 2: idle taps are root's, and a
//! Firecracker (which opens its tap by name, as the uid it runs as: the
//! owner's until it is jailed) gets its tap only for its launch.

use banger_proto::vmops::VmmKind;
use banger_testkit::*;

use crate::lab::*;

/// The tap's tun owner as `ip -d` names it (`root` for uid 0).
fn tap_user(lab: &Lab) -> serde_json::Value {
    let mut ip = lab.ns.exec("ip");
    ip.args(["-j", "-d", "link", "show", TAP]);
    let v: serde_json::Value = serde_json::from_str(&run_ok(ip)).unwrap();
    v[0]["linkinfo"]["info_data"]["user"].clone()
}

/// A stand-in Firecracker that attaches to the tap by name, as
/// Firecracker's `PUT /network-interfaces` does, and says how it went on
/// its stdout (the VM's serial log) before it exits. It runs as the owner
/// (the uid a Firecracker of the system install runs as today): the tap,
/// root's while idle, must be that uid's during the launch, and root's
/// again once the launch has failed and the stand-in is gone.
#[test]
fn a_firecracker_of_the_owners_attaches_its_tap_only_during_its_launch() {
    let lab = Lab::new();
    let vm = "1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c";
    let dir = lab.vm(vm);
    lab.stand_in(
        "firecracker",
        &format!(
            "exec perl -e 'open(my $t, \"+<\", \"/dev/net/tun\") or die \"tun: $!\";\n\
             my $req = pack(\"Z16 s x22\", \"{TAP}\", 0x5002);\n\
             print ioctl($t, 0x400454ca, $req) ? \"tap attached as $<\\n\" : \"TUNSETIFF: \" . ($!+0) . \"\\n\";\n\
             exit 1'\n"
        ),
    );
    let lab = lab.start();
    assert_eq!(tap_user(&lab), "root", "an idle tap is not root's");
    let err = lab
        .launch(vm, VmmKind::Firecracker)
        .expect_err("the stand-in exits");
    let serial = std::fs::read_to_string(dir.join("serial.log")).unwrap_or_default();
    assert!(
        serial.contains(&format!("tap attached as {}", lab.owner.uid)),
        "the owner's Firecracker could not attach its tap during its launch: {serial:?} ({err})"
    );
    assert_eq!(
        tap_user(&lab),
        "root",
        "the tap stayed the owner's after the launch failed"
    );
}
