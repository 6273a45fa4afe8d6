//! Firecracker snapshots (issue #15 item 1) with the real `firecracker`
//! binary (v1.16.1, see `real_firecracker`), jailed as the executor runs
//! it: a paused instance is saved through root's descriptors, and a new
//! Firecracker loads that snapshot on its own tap, paused, and resumes.
//!
//! What is asserted holds on every host: the real binary accepts the calls
//! (docs/lab.md: on the PVM CI hosts no guest makes progress, so there is
//! no guest agent to reach; the handshake over vsock must then fail,
//! naming the port, within its timeout).
//!
//! Needs root: it moves its own thread into a new network namespace and
//! creates the VMs' tap there, so nothing touches the host's network.

mod firecracker_support;
mod netns;
mod real_firecracker;

use std::os::fd::AsFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use banger_host::runner::{Cmd, Runner};
use banger_vmm::LaunchSpec;
use banger_vmm::driver::{SaveTo, Vcpus};
use banger_vmm::firecracker::snapshot::{AGENT_VSOCK_PORT, RestoreFiles};
use banger_vmm::firecracker::{
    FirecrackerDriver, FirecrackerVm, InstanceState, VmStatus, log_path, paths,
};
use firecracker_support::{jailed_files, jailed_real_spec, killed_if_failing, slot_uid};
use netns::{HostTap, private_netns_with_tap_of};

const BRIDGE: &str = "bangerfcsbr";
const TAP: &str = "bangerfcs0";
const MEMORY_MIB: u32 = 128;

fn state(vm: &mut FirecrackerVm) -> InstanceState {
    match vm.status().unwrap() {
        VmStatus::Live(info) => info.state,
        VmStatus::Exited(status) => panic!("it exited ({status})"),
    }
}

/// A jailed spec in `dir` for `uid` on [`TAP`]: the cached Debian
/// `vmlinux`, a small read-only ext4 root readable by all (the grant the
/// executor gives a read-only drive), a `run/` of the slot's.
fn spec(dir: &std::path::Path, uid: u32) -> LaunchSpec {
    let kernel = real_firecracker::debian_vmlinux(&dir.join("vmlinux"));
    let rootfs = dir.join("root.ext4");
    Runner
        .run(
            &Cmd::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(&rootfs)
                .arg("16M"),
        )
        .expect("mkfs.ext4 (e2fsprogs)");
    jailed_real_spec(dir, uid, TAP, (kernel, rootfs), MEMORY_MIB)
}

fn launch(
    spec: &LaunchSpec,
    files: banger_vmm::firecracker::FirecrackerFiles,
    tap: &mut HostTap,
    what: &str,
) -> FirecrackerVm {
    FirecrackerDriver::new(real_firecracker::binary())
        .launch_jailed(spec, files, tap)
        .unwrap_or_else(|e| {
            panic!(
                "the real Firecracker refused the {what}: {e}\nfirecracker log:\n{}",
                std::fs::read_to_string(log_path(spec)).unwrap_or_default()
            )
        })
}

#[test]
fn a_real_firecracker_saves_a_snapshot_that_another_loads_on_its_own_tap() {
    let uid = slot_uid(5_400_000);
    let dir = tempfile::tempdir().unwrap();
    private_netns_with_tap_of(TAP, Some(uid));
    let mut tap = HostTap::on_new_bridge(TAP, BRIDGE);
    let spec = spec(dir.path(), uid);
    let mut a = launch(&spec, jailed_files(dir.path(), &spec), &mut tap, "boot");

    // Root's own files of the snapshot, as the executor makes them.
    let snap = dir.path().join("snapshot");
    std::fs::create_dir(&snap).unwrap();
    let memory = std::fs::File::create_new(snap.join("memory")).unwrap();
    let vmstate = std::fs::File::create_new(snap.join("vmstate")).unwrap();
    killed_if_failing(&mut a, |a| {
        assert_eq!(state(a), InstanceState::Running);
        a.set_vcpus(Vcpus::Paused).unwrap();
        let began = Instant::now();
        let to = SaveTo {
            memory: memory.as_fd(),
            state: Some(vmstate.as_fd()),
        };
        let bytes = a.save_state(to, Duration::from_secs(60)).unwrap();
        eprintln!("saved {bytes} bytes in {:?}", began.elapsed());
        let m = memory.metadata().unwrap().len();
        let s = vmstate.metadata().unwrap().len();
        assert_eq!(m, u64::from(MEMORY_MIB) << 20, "the memory file");
        assert!(s > 0, "an empty device state");
        assert_eq!(bytes, m + s);
        // Nothing of the save is left in run/, and the guest stays paused.
        for name in [paths::SAVED_STATE, paths::SAVED_MEMORY] {
            assert!(!spec.run_dir.join(name).exists(), "{name} left in run/");
        }
        assert_eq!(state(a), InstanceState::Paused);
        // A save of a guest that is not paused: Firecracker's own refusal.
        a.set_vcpus(Vcpus::Running).unwrap();
        let scratch = tempfile::tempfile().unwrap();
        let err = a
            .save_state(
                SaveTo {
                    memory: scratch.as_fd(),
                    state: Some(scratch.as_fd()),
                },
                Duration::from_secs(60),
            )
            .unwrap_err();
        eprintln!("save of a running guest: {err}");
        assert!(err.to_string().contains("/snapshot/create"), "{err}");
    });
    a.kill().unwrap();

    // The executor grants the slot uid read access for the launch; here
    // the files are readable by all.
    for f in ["memory", "vmstate"] {
        std::fs::set_permissions(snap.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // (Its own KVM node: `jailed_files` makes one in the directory given.)
    let b_dir = tempfile::tempdir().unwrap();
    let mut files = jailed_files(b_dir.path(), &spec);
    files.restore = Some(RestoreFiles {
        state: std::fs::File::open(snap.join("vmstate")).unwrap(),
        memory: std::fs::File::open(snap.join("memory")).unwrap(),
    });
    let began = Instant::now();
    let mut b = launch(&spec, files, &mut tap, "restore");
    eprintln!("restored (paused) in {:?}", began.elapsed());
    killed_if_failing(&mut b, |b| {
        assert_eq!(state(b), InstanceState::Paused);
        let log = std::fs::read_to_string(log_path(&spec)).unwrap_or_default();
        assert!(log.contains("/snapshot/load"), "{log}");
        b.set_vcpus(Vcpus::Running).unwrap();
        assert_eq!(state(b), InstanceState::Running);
        // No guest runs here to answer on the agent's port: the handshake
        // fails, naming the port, within its timeout.
        let asked = Instant::now();
        let err = b.api().connect_guest(AGENT_VSOCK_PORT).unwrap_err();
        eprintln!("agent handshake: {err} (after {:?})", asked.elapsed());
        assert!(err.to_string().contains("vsock port 53"), "{err}");
        assert!(asked.elapsed() < Duration::from_secs(10));
    });
    b.kill().unwrap();
}
