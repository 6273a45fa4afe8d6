//! Firecracker snapshots through the real `bangerd-root` and the real
//! Firecracker binary (v1.16.1, `real_firecracker`), jailed as the
//! executor runs it, for a throwaway owner (issue #15 item 1).
//!
//! A VM booting the cached Debian `vmlinux` is saved with `SnapshotVm`:
//! Firecracker writes its state and memory into its own `run/`, and root
//! copies both into the owner's snapshot directory, leaving nothing in
//! `run/`. A second VM then restores that snapshot with `LaunchVm`: the
//! files are bound read-only into its jail for a grant that lasts the
//! launch, Firecracker loads them on the VM's own tap (down meanwhile),
//! and the guest is resumed. No guest runs on the CI hosts (docs/lab.md),
//! and banger's images serve no agent over vsock yet: the launch must fail
//! at the agent's handshake, naming it, and leave nothing behind — no
//! Firecracker, no grant on the snapshot's files, the tap up again, the
//! VM not running.

use std::os::unix::fs::MetadataExt as _;

use banger_proto::privops::{KillVm, PrivOp, VmOp, VmmStatus};
use banger_proto::vmops::{GuestIdentity, LaunchVmSpec, RestoreSpec, SnapshotVmSpec};

use crate::lab::*;
use crate::real_firecracker;

const KERNEL_FC: &str = "4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f";

fn launch(
    lab: &Lab,
    id: &str,
    restore: Option<Box<RestoreSpec>>,
) -> Result<serde_json::Value, String> {
    lab.launch_spec(LaunchVmSpec {
        kernel_id: KERNEL_FC.into(),
        mac: "02:ba:0a:d5:07:09".into(),
        restore,
        ..lab.fc_spec(id)
    })
}

fn running(lab: &Lab, id: &str) -> bool {
    let st = lab
        .call(PrivOp::Vm(VmOp::VmmStatus(VmmStatus { vm_id: id.into() })))
        .unwrap();
    st["result"]["running"] == true
}

/// The access ACL (`system.posix_acl_access`) of `p`, if any.
fn acl(p: &std::path::Path) -> Option<Vec<u8>> {
    let f = std::fs::File::open(p).unwrap();
    banger_host::jail::read_acl(std::os::fd::AsFd::as_fd(&f)).unwrap()
}

#[test]
fn a_firecracker_vm_is_saved_and_its_restore_stops_only_at_the_missing_agent() {
    let lab = Lab::new();
    let kdir = lab.state().join("kernels").join(KERNEL_FC);
    lab.owner_dir(&kdir);
    let vmlinux = real_firecracker::debian_vmlinux(&lab.root.join("vmlinux"));
    lab.owner_file(&kdir.join("kernel"), &std::fs::read(&vmlinux).unwrap());
    lab.stand_in_link("firecracker", &real_firecracker::binary());
    let snapshots = lab.state().join("snapshots");
    lab.owner_dir(&snapshots);
    let sid = "8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a";
    lab.owner_dir(&snapshots.join(sid));
    let (a, b) = (
        "8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b",
        "8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c",
    );
    let adir = lab.vm(a);
    lab.vm(b);
    let lab = lab.start();

    launch(&lab, a, None).expect("LaunchVm a (Firecracker, booting)");
    let saved = lab.call(PrivOp::Vm(VmOp::SnapshotVm(SnapshotVmSpec {
        vm_id: a.into(),
        snapshot_id: sid.into(),
        resume: true,
        memory_only: false,
    })));
    let _ = lab.call(PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: a.into() })));
    let saved = saved.expect("SnapshotVm of a Firecracker VM");
    eprintln!("saved: {saved}");
    let dir = snapshots.join(sid);
    for (name, min) in [
        ("memory", 128u64 << 20),
        ("vmstate", 1),
        ("root.ext4", 1),
        ("work.ext4", 1),
    ] {
        let m = std::fs::symlink_metadata(dir.join(name)).unwrap();
        assert!(m.is_file() && m.len() >= min, "{name}: {m:?}");
        assert_eq!(
            (m.uid(), m.mode() & 0o7777, m.nlink()),
            (lab.owner.uid, 0o600, 1),
            "{name}"
        );
    }
    assert_eq!(
        saved["result"]["memory_bytes"],
        (128u64 << 20) + std::fs::metadata(dir.join("vmstate")).unwrap().len()
    );
    let run: Vec<_> = std::fs::read_dir(adir.join("run"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        !run.iter()
            .any(|n| n.to_string_lossy().starts_with("saved.")),
        "left in run/: {run:?}"
    );

    let began = std::time::Instant::now();
    // The tap, sampled in the helper's namespace while the restore runs:
    // once down it must stay down (or away in the jail) until the launch
    // has answered — the clone still holds its source's identity.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (err, samples, answered) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            lab.ns.run(|| {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    seen.push((std::time::Instant::now(), tap_up()));
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                seen
            })
        });
        let err = launch(
            &lab,
            b,
            Some(Box::new(RestoreSpec {
                snapshot_id: sid.into(),
                identity: GuestIdentity {
                    files: Vec::new(),
                    ip: [10, 213, 7, 9].into(),
                    prefix: 24,
                    gateway: [10, 213, 7, 1].into(),
                    hostname: "clone".into(),
                },
            })),
        );
        let answered = std::time::Instant::now();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (err, sampler.join().unwrap(), answered)
    });
    // Up again only with the failed launch's clean-up, just before its
    // answer (not for the 5 s the agent was waited for).
    let down_at = samples.iter().position(|(_, up)| *up != Some(true));
    let up_again = down_at.and_then(|i| samples[i..].iter().find(|(_, up)| *up == Some(true)));
    let timeline: Vec<String> = samples
        .iter()
        .map(|(t, up)| format!("{:?}:{up:?}", t.saturating_duration_since(began)))
        .collect();
    assert!(down_at.is_some(), "the tap was never down: {timeline:?}");
    if let Some((t, _)) = up_again {
        let early = answered.saturating_duration_since(*t);
        assert!(
            early < std::time::Duration::from_secs(1),
            "the tap was up {early:?} before the restore answered: {timeline:?}"
        );
    }
    let err = match err {
        Ok(v) => {
            let _ = lab.call(PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: b.into() })));
            panic!("a restore with no agent to answer launched: {v}");
        }
        Err(e) => e,
    };
    eprintln!("restore, after {:?}: {err}", began.elapsed());
    assert!(err.contains("guest agent: vsock port 53"), "{err}");
    assert!(!running(&lab, b), "b's Firecracker was left running");
    // The grant went with the launch; the tap is up again for its next user.
    for name in ["memory", "vmstate"] {
        assert_eq!(acl(&dir.join(name)), None, "{name} kept an ACL");
        let m = std::fs::metadata(dir.join(name)).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600, "{name}");
    }
    assert_eq!(lab.ns.run(tap_up), Some(true), "{TAP} is left down");
}

/// Whether [`TAP`] is up in this thread's network namespace (`None`: not
/// there, e.g. in a jail's for the moment).
fn tap_up() -> Option<bool> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", TAP])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let link = String::from_utf8_lossy(&out.stdout).into_owned();
    let flags = link.split(['<', '>']).nth(1).unwrap_or_default();
    Some(flags.split(',').any(|f| f == "UP"))
}
