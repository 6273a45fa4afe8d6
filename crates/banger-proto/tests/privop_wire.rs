//! The privileged seam's wire, pinned: the JSON value of every `PrivOp`
//! (issue #14 item 1 retypes the seam in Rust; the wire must not move).
//! Unit ops carry no `args` at all; every other op's `args` is an object
//! whose keys are listed here; the op names are the executor's lock keys.

use banger_proto::net::{BridgeSpec, FirewallSpec, GuestRule, ResolverSpec, TapSpec};
use banger_proto::privops::{
    BuildDebianImage, DeleteTap, DeleteVmDisks, GrowWorkDisk, HostDevice, ImageOp, KillVm, NetOp,
    OpenDnsSockets, PauseVm, PrivOp, ProbeDevice, ProbeJailScope, ProbeKvm, ProbeNftables, ProbeOp,
    ProbeVmms, QueryNetStatus, ResumeVm, StopVm, Teardown, VmOp, VmmStatus, WaitVmReady,
};
use banger_proto::vmops::{
    GuestFile, GuestFilesSpec, GuestIdentity, LaunchVmSpec, RestoreSpec, SnapshotVmSpec,
    VmDisksSpec, VmmKind,
};
use serde_json::{Value, json};

const VM: &str = "0123456789abcdef0123456789abcdef";
const SNAP: &str = "fedcba9876543210fedcba9876543210";

fn every_op() -> Vec<(PrivOp, Value)> {
    vec![
        (
            PrivOp::Probe(ProbeOp::ProbeKvm(ProbeKvm)),
            json!({"op": "probe_kvm"}),
        ),
        (
            PrivOp::Probe(ProbeOp::ProbeDevice(ProbeDevice {
                device: HostDevice::Tun,
            })),
            json!({"op": "probe_device", "args": {"device": "tun"}}),
        ),
        (
            PrivOp::Probe(ProbeOp::ProbeNftables(ProbeNftables)),
            json!({"op": "probe_nftables"}),
        ),
        (
            PrivOp::Probe(ProbeOp::ProbeJailScope(ProbeJailScope)),
            json!({"op": "probe_jail_scope"}),
        ),
        (
            PrivOp::Probe(ProbeOp::ProbeVmms(ProbeVmms)),
            json!({"op": "probe_vmms"}),
        ),
        (
            PrivOp::Net(NetOp::EnsureBridge(BridgeSpec {
                name: "banger0".into(),
                address: "10.0.0.1".parse().unwrap(),
                prefix_len: 24,
            })),
            json!({"op": "ensure_bridge", "args": {"name": "banger0", "address": "10.0.0.1", "prefix_len": 24}}),
        ),
        (
            PrivOp::Net(NetOp::EnsureTap(TapSpec {
                name: "bangertap0".into(),
                bridge: "banger0".into(),
                owner_uid: 1000,
            })),
            json!({"op": "ensure_tap", "args": {"name": "bangertap0", "bridge": "banger0", "owner_uid": 1000}}),
        ),
        (
            PrivOp::Net(NetOp::DeleteTap(DeleteTap {
                name: "bangertap0".into(),
            })),
            json!({"op": "delete_tap", "args": {"name": "bangertap0"}}),
        ),
        (
            PrivOp::Net(NetOp::SyncFirewall(FirewallSpec {
                bridge: "banger0".into(),
                guests: Vec::<GuestRule>::new(),
                allow_inter_vm: false,
            })),
            json!({"op": "sync_firewall", "args": {"bridge": "banger0", "guests": [], "allow_inter_vm": false}}),
        ),
        (
            PrivOp::Net(NetOp::OpenDnsSockets(OpenDnsSockets {
                address: "10.0.0.1".parse().unwrap(),
            })),
            json!({"op": "open_dns_sockets", "args": {"address": "10.0.0.1"}}),
        ),
        (
            PrivOp::Net(NetOp::ApplyResolver(ResolverSpec {
                bridge: "banger0".into(),
                dns: "10.0.0.1".parse().unwrap(),
            })),
            json!({"op": "apply_resolver", "args": {"bridge": "banger0", "dns": "10.0.0.1"}}),
        ),
        (
            PrivOp::Net(NetOp::NetStatus(QueryNetStatus)),
            json!({"op": "net_status"}),
        ),
        (
            PrivOp::Net(NetOp::Teardown(Teardown)),
            json!({"op": "teardown"}),
        ),
        (
            PrivOp::Vm(VmOp::CreateVmDisks(VmDisksSpec {
                vm_id: VM.into(),
                image_id: VM.into(),
                work_disk_bytes: 1 << 30,
                from_snapshot: None,
            })),
            json!({"op": "create_vm_disks", "args": {"vm_id": VM, "image_id": VM, "work_disk_bytes": 1u64 << 30}}),
        ),
        (
            PrivOp::Vm(VmOp::CreateVmDisks(VmDisksSpec {
                vm_id: VM.into(),
                image_id: VM.into(),
                work_disk_bytes: 1 << 30,
                from_snapshot: Some(SNAP.into()),
            })),
            json!({"op": "create_vm_disks", "args": {"vm_id": VM, "image_id": VM,
                "work_disk_bytes": 1u64 << 30, "from_snapshot": SNAP}}),
        ),
        (
            PrivOp::Vm(VmOp::WriteGuestFiles(GuestFilesSpec {
                vm_id: VM.into(),
                files: vec![GuestFile {
                    path: "/etc/hostname".into(),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    content: "dev\n".into(),
                }],
            })),
            json!({"op": "write_guest_files", "args": {"vm_id": VM, "files": [
                {"path": "/etc/hostname", "mode": 0o644, "uid": 0, "gid": 0, "content": "dev\n"}
            ]}}),
        ),
        (
            PrivOp::Vm(VmOp::GrowWorkDisk(GrowWorkDisk {
                vm_id: VM.into(),
                bytes: 2 << 30,
            })),
            json!({"op": "grow_work_disk", "args": {"vm_id": VM, "bytes": 2u64 << 30}}),
        ),
        (
            PrivOp::Vm(VmOp::DeleteVmDisks(DeleteVmDisks { vm_id: VM.into() })),
            json!({"op": "delete_vm_disks", "args": {"vm_id": VM}}),
        ),
        (
            PrivOp::Vm(VmOp::LaunchVm(LaunchVmSpec {
                vm_id: VM.into(),
                image_id: VM.into(),
                kernel_id: VM.into(),
                vmm: VmmKind::Firecracker,
                vcpus: 2,
                memory_mib: 1024,
                tap: "bangertap0".into(),
                mac: "02:ba:0a:00:00:02".into(),
                force_kvm: true,
                restore: None,
            })),
            json!({"op": "launch_vm", "args": {"vm_id": VM, "image_id": VM, "kernel_id": VM,
                "vmm": "firecracker", "vcpus": 2, "memory_mib": 1024, "tap": "bangertap0",
                "mac": "02:ba:0a:00:00:02", "force_kvm": true}}),
        ),
        (
            PrivOp::Vm(VmOp::LaunchVm(LaunchVmSpec {
                vm_id: VM.into(),
                image_id: VM.into(),
                kernel_id: VM.into(),
                vmm: VmmKind::Qemu,
                vcpus: 1,
                memory_mib: 512,
                tap: "bangertap1".into(),
                mac: "02:ba:0a:00:00:03".into(),
                force_kvm: false,
                restore: Some(Box::new(RestoreSpec {
                    snapshot_id: SNAP.into(),
                    identity: GuestIdentity {
                        files: vec![GuestFile {
                            path: "/etc/hostname".into(),
                            mode: 0o644,
                            uid: 0,
                            gid: 0,
                            content: "clone\n".into(),
                        }],
                        ip: "10.0.0.3".parse().unwrap(),
                        prefix: 24,
                        gateway: "10.0.0.1".parse().unwrap(),
                        hostname: "clone".into(),
                    },
                })),
            })),
            json!({"op": "launch_vm", "args": {"vm_id": VM, "image_id": VM, "kernel_id": VM,
                "vmm": "qemu", "vcpus": 1, "memory_mib": 512, "tap": "bangertap1",
                "mac": "02:ba:0a:00:00:03", "force_kvm": false,
                "restore": {"snapshot_id": SNAP, "identity": {
                    "files": [{"path": "/etc/hostname", "mode": 0o644, "uid": 0, "gid": 0,
                        "content": "clone\n"}],
                    "ip": "10.0.0.3", "prefix": 24, "gateway": "10.0.0.1", "hostname": "clone"}}}}),
        ),
        (
            PrivOp::Vm(VmOp::StopVm(StopVm {
                vm_id: VM.into(),
                timeout_secs: 30,
            })),
            json!({"op": "stop_vm", "args": {"vm_id": VM, "timeout_secs": 30}}),
        ),
        (
            PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: VM.into() })),
            json!({"op": "kill_vm", "args": {"vm_id": VM}}),
        ),
        (
            PrivOp::Vm(VmOp::VmmStatus(VmmStatus { vm_id: VM.into() })),
            json!({"op": "vmm_status", "args": {"vm_id": VM}}),
        ),
        (
            PrivOp::Vm(VmOp::WaitVmReady(WaitVmReady {
                vm_id: VM.into(),
                timeout_ms: 5000,
            })),
            json!({"op": "wait_vm_ready", "args": {"vm_id": VM, "timeout_ms": 5000}}),
        ),
        (
            PrivOp::Vm(VmOp::PauseVm(PauseVm { vm_id: VM.into() })),
            json!({"op": "pause_vm", "args": {"vm_id": VM}}),
        ),
        (
            PrivOp::Vm(VmOp::ResumeVm(ResumeVm { vm_id: VM.into() })),
            json!({"op": "resume_vm", "args": {"vm_id": VM}}),
        ),
        (
            PrivOp::Vm(VmOp::SnapshotVm(SnapshotVmSpec {
                vm_id: VM.into(),
                snapshot_id: SNAP.into(),
                resume: true,
                memory_only: false,
            })),
            json!({"op": "snapshot_vm", "args": {"vm_id": VM, "snapshot_id": SNAP, "resume": true}}),
        ),
        (
            PrivOp::Image(ImageOp::BuildDebianImage(BuildDebianImage {
                suite: "bookworm".into(),
            })),
            json!({"op": "build_debian_image", "args": {"suite": "bookworm"}}),
        ),
    ]
}

#[test]
fn every_privileged_op_has_a_pinned_wire_form() {
    let ops = every_op();
    assert_eq!(ops.len(), 28, "a new op gets its pinned form here");
    for (op, want) in ops {
        let got = serde_json::to_value(&op).unwrap();
        assert_eq!(got, want, "{}", op.name());
        assert_eq!(got["op"], op.name(), "the wire name is the op's name()");
        let back: PrivOp = serde_json::from_value(want).unwrap();
        assert_eq!(back, op);
    }
}

#[test]
fn an_unknown_op_or_argument_or_a_positional_args_is_refused() {
    // Struct-shaped args are taken as an object only, as protocol 4 always
    // took them (a sequence is what serde would otherwise accept).
    let err = serde_json::from_value::<PrivOp>(json!({"op": "stop_vm", "args": [VM, 3]}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("struct variant PrivOp::StopVm"), "{err}");
    let err = serde_json::from_value::<PrivOp>(json!({"op": "exec"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `exec`"), "{err}");
    assert!(serde_json::from_value::<PrivOp>(json!({"op": "exec", "args": {}})).is_err());
    assert!(
        serde_json::from_value::<PrivOp>(
            json!({"op": "delete_tap", "args": {"name": "t", "x": 1}})
        )
        .is_err()
    );
}
