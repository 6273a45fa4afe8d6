//! The Firecracker driver against a real `firecracker` binary.
//!
//! Not part of `cargo test --workspace` (`test = false` in Cargo.toml): it
//! runs only as `cargo test -p banger-vmm --test firecracker_real`, which
//! `make test` does when `BANGER_FIRECRACKER` is set and otherwise reports
//! as "NOT RUN". Run here, it fails — never passes — when its inputs are
//! missing:
//!
//! * `BANGER_FIRECRACKER` — the firecracker binary (v1.16.x);
//! * `BANGER_FC_KERNEL` — an uncompressed x86_64 `vmlinux`;
//! * `BANGER_FC_ROOTFS` — an ext4 root filesystem image (used read-only);
//! * `BANGER_FC_EXPECT_READY=1` (optional) — the rootfs sends `banger-guest-ready`
//!   to vsock port 52 once booted; then readiness is checked too. Hosts
//!   whose KVM cannot run stock guests (LAB.md's PVM hosts) still check the
//!   whole API configuration and `InstanceStart`.
//!
//! The test needs root: it moves its own thread into a new network
//! namespace and creates the VM's tap there, so nothing touches the host's
//! network.

mod firecracker_support;

use std::path::PathBuf;
use std::time::Duration;

use banger_host::runner::{Cmd, Runner};
use banger_vmm::firecracker::{
    FirecrackerDriver, InstanceState, READY_PORT, RECOMMENDED_BOOT_ARGS, ReadyListener, Shutdown,
    VmStatus,
};
use banger_vmm::{Drive, LaunchSpec};
use firecracker_support::alive;

fn required(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => {
            let p = PathBuf::from(v);
            assert!(p.is_file(), "{var}={} is not a file", p.display());
            p
        }
        _ => panic!(
            "{var} is not set: this test needs BANGER_FIRECRACKER, BANGER_FC_KERNEL and \
             BANGER_FC_ROOTFS (run it through `make test`, which reports it NOT RUN without them)"
        ),
    }
}

/// Move this thread (and the children it spawns) into a fresh network
/// namespace and create `tap` there.
fn private_netns_with_tap(tap: &str) {
    // SAFETY: unshare(CLONE_NEWNET) takes no pointers; it changes only the
    // calling thread's network namespace, which is what this test wants
    // (children spawned from this thread inherit it).
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) (needs root): {}",
        std::io::Error::last_os_error()
    );
    Runner
        .run(&Cmd::new("ip").args(["tuntap", "add", "dev", tap, "mode", "tap"]))
        .unwrap();
    Runner
        .run(&Cmd::new("ip").args(["link", "set", tap, "up"]))
        .unwrap();
}

#[test]
fn a_real_firecracker_accepts_the_configuration_and_stops() {
    let binary = required("BANGER_FIRECRACKER");
    let kernel = required("BANGER_FC_KERNEL");
    let rootfs = required("BANGER_FC_ROOTFS");
    let expect_ready = std::env::var_os("BANGER_FC_EXPECT_READY").is_some_and(|v| v == "1");

    let tap = "bangerfct0";
    private_netns_with_tap(tap);
    let dir = tempfile::tempdir().unwrap();
    let spec = LaunchSpec {
        vm_id: "bangerfirecrackerrealtest".into(),
        vcpus: 1,
        memory_mib: 256,
        kernel,
        initrd: None,
        cmdline: format!("{RECOMMENDED_BOOT_ARGS} root=/dev/vda ro"),
        drives: vec![Drive {
            id: "root".into(),
            path: rootfs,
            read_only: true,
        }],
        tap: tap.into(),
        mac: "02:ba:0a:00:00:02".into(),
        run_dir: dir.path().to_path_buf(),
        serial_log: dir.path().join("serial.log"),
        vsock_cid: 3,
        run_as: None,
        kvm: true,
    };
    let listener = ReadyListener::bind(&spec, READY_PORT).unwrap();
    let mut vm = FirecrackerDriver::new(binary)
        .launch(&spec)
        .unwrap_or_else(|e| {
            panic!(
                "launch: {e}\nserial log:\n{}",
                std::fs::read_to_string(&spec.serial_log).unwrap_or_default()
            )
        });
    let pid = vm.pid() as i32;
    match vm.status().unwrap() {
        VmStatus::Live(info) => {
            assert_eq!(info.id, spec.vm_id);
            assert_eq!(info.state, InstanceState::Running);
            assert!(info.vmm_version.starts_with("1.16"), "{}", info.vmm_version);
        }
        // A host whose KVM cannot run the guest (PVM) ends the VMM at the
        // first vCPU exit; the configuration was still accepted.
        VmStatus::Exited(status) => eprintln!("firecracker exited after InstanceStart: {status}"),
    }
    if expect_ready {
        vm.wait_ready(&listener, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("readiness: {e}"));
    }
    let outcome = vm.shutdown(Duration::from_secs(15)).unwrap();
    eprintln!("shutdown: {outcome:?}");
    if expect_ready {
        assert!(matches!(outcome, Shutdown::Graceful(_)), "{outcome:?}");
    }
    assert!(!alive(pid));
    assert!(!spec.api_socket().exists());
}
