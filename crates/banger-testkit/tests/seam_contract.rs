//! The privileged-ops contract, run against both adapters: the in-process
//! executor (dev mode) and the helper client talking to a real `bangerd-root`
//! (system mode). Both must give the same answers about the same host.
//!
//! Each adapter works in a network namespace of its own (testkit [`NetNs`]):
//! the in-process calls run on a thread that has joined it, the helper is
//! started inside it. Nothing here touches the host's network. Refusals of
//! bad input are covered, against both adapters, in `bad_input.rs`.

use std::mem::ManuallyDrop;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use banger_executor::Executor;
use banger_host::net::RealNet;
use banger_host::probe::RealHost;
use banger_proto::RpcError;
use banger_proto::install::InstallNetwork;
use banger_proto::net::{BridgeSpec, FirewallSpec, GuestRule, TapSpec};
use banger_proto::privops::{
    BuildDebianImage, DeleteTap, DeviceState, HostDevice, ImageOp, NetOp, OpenDnsSockets, PrivOp,
    PrivOutcome, ProbeDevice, ProbeKvm, ProbeNftables, ProbeOp, QueryNetStatus, Teardown,
};
use banger_testkit::*;
use bangerd::privileged::{Channel, HelperClient, InProcess, PrivilegedOps};

/// An adapter whose calls all happen inside `ns`.
trait InNs {
    fn call_with_fds(&self, op: PrivOp) -> Result<(PrivOutcome, Vec<OwnedFd>), RpcError>;
    fn call(&self, op: PrivOp) -> Result<PrivOutcome, RpcError>;
}

struct InProcessIn<'a> {
    ns: &'a NetNs,
    ops: InProcess,
}

impl InNs for InProcessIn<'_> {
    fn call_with_fds(&self, op: PrivOp) -> Result<(PrivOutcome, Vec<OwnedFd>), RpcError> {
        self.ns.run(|| self.ops.call_with_fds(op))
    }
    fn call(&self, op: PrivOp) -> Result<PrivOutcome, RpcError> {
        self.ns.run(|| self.ops.call(op))
    }
}

/// The helper already runs inside its namespace.
impl InNs for HelperClient {
    fn call_with_fds(&self, op: PrivOp) -> Result<(PrivOutcome, Vec<OwnedFd>), RpcError> {
        PrivilegedOps::call_with_fds(self, op)
    }
    fn call(&self, op: PrivOp) -> Result<PrivOutcome, RpcError> {
        PrivilegedOps::call(self, op)
    }
}

fn in_process<'a>(ns: &'a NetNs, dir: &Path) -> InProcessIn<'a> {
    InProcessIn {
        ns,
        ops: InProcess::new(
            Executor::new(
                Arc::new(RealHost::new()),
                Arc::new(RealNet::new()),
                dir.join("journal.json"),
            )
            .with_bridge(installed().bridge_spec())
            .unwrap(),
        ),
    }
}

/// The bridge both adapters are given, as an install records it.
fn installed() -> InstallNetwork {
    InstallNetwork {
        bridge: "banger0".into(),
        subnet: "10.88.0.0/24".parse().unwrap(),
    }
}

/// A helper inside `ns`. The test process (root) plays the owner daemon
/// here, so the helper is installed with root as its owner; uid separation
/// is covered in helper.rs. Root is not a created user: `ManuallyDrop`
/// keeps `TestUser`'s drop (userdel) from ever running, even on a panic.
fn helper_in(ns: &NetNs, dir: &Path) -> RootHelper {
    let me = ManuallyDrop::new(TestUser {
        name: "root".into(),
        uid: 0,
        gid: 0,
    });
    RootHelper::start_in_with(ns, dir, &me, installed())
}

fn probe_contract(ops: &dyn InNs) {
    for device in HostDevice::ALL {
        let out = ops
            .call(PrivOp::Probe(ProbeOp::ProbeDevice(ProbeDevice { device })))
            .unwrap();
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
    let PrivOutcome::Kvm(k) = ops
        .call(PrivOp::Probe(ProbeOp::ProbeKvm(ProbeKvm)))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        matches!(k.device, DeviceState::Absent),
        !std::path::Path::new("/dev/kvm").exists()
    );
    let PrivOutcome::Nftables(n) = ops
        .call(PrivOp::Probe(ProbeOp::ProbeNftables(ProbeNftables)))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(n.tool, "nft");
    assert!(n.works, "nft must work in a test namespace: {n:?}");
}

/// A full host-network life cycle; returns every outcome so the two
/// adapters' answers can be compared.
fn network_contract(ops: &dyn InNs) -> Vec<PrivOutcome> {
    let bridge = PrivOp::Net(NetOp::EnsureBridge(BridgeSpec {
        name: "banger0".into(),
        address: Ipv4Addr::new(10, 88, 0, 1),
        prefix_len: 24,
    }));
    let tap = |name: &str| {
        PrivOp::Net(NetOp::EnsureTap(TapSpec {
            name: name.into(),
            bridge: "banger0".into(),
            owner_uid: 0,
        }))
    };
    let firewall = PrivOp::Net(NetOp::SyncFirewall(FirewallSpec {
        bridge: "banger0".into(),
        guests: vec![GuestRule {
            tap: "bangertap0".into(),
            ip: Ipv4Addr::new(10, 88, 0, 2),
            nat: true,
        }],
        allow_inter_vm: false,
    }));
    let mut outcomes = Vec::new();
    let call = |op: PrivOp, outcomes: &mut Vec<PrivOutcome>| {
        let name = op.name();
        let out = ops
            .call(op)
            .unwrap_or_else(|e| panic!("{name}: {}", e.render()));
        outcomes.push(out.clone());
        out
    };
    call(bridge.clone(), &mut outcomes);
    call(bridge, &mut outcomes); // idempotent: created = false
    call(tap("bangertap0"), &mut outcomes);
    call(tap("bangertap1"), &mut outcomes);
    call(tap("bangertap0"), &mut outcomes);
    call(firewall.clone(), &mut outcomes);
    call(firewall, &mut outcomes);
    call(
        PrivOp::Net(NetOp::DeleteTap(DeleteTap {
            name: "bangertap1".into(),
        })),
        &mut outcomes,
    );
    let PrivOutcome::NetStatus(status) =
        call(PrivOp::Net(NetOp::NetStatus(QueryNetStatus)), &mut outcomes)
    else {
        panic!("net_status outcome")
    };
    assert!(status.firewall && status.ip_forward, "{status:?}");
    assert_eq!(status.nat_guests, [Ipv4Addr::new(10, 88, 0, 2)]);
    assert_eq!(status.taps.len(), 1, "{status:?}");

    // DNS sockets come back as two descriptors beside the outcome.
    let (out, fds) = ops
        .call_with_fds(PrivOp::Net(NetOp::OpenDnsSockets(OpenDnsSockets {
            address: Ipv4Addr::new(10, 88, 0, 1),
        })))
        .unwrap_or_else(|e| panic!("open_dns_sockets: {}", e.render()));
    assert_eq!(fds.len(), 2, "{out:?}");
    drop(fds);
    outcomes.push(out);

    let PrivOutcome::Teardown(report) = call(PrivOp::Net(NetOp::Teardown(Teardown)), &mut outcomes)
    else {
        panic!("teardown outcome")
    };
    assert!(report.errors.is_empty(), "{report:?}");
    let PrivOutcome::NetStatus(after) =
        call(PrivOp::Net(NetOp::NetStatus(QueryNetStatus)), &mut outcomes)
    else {
        panic!("net_status outcome")
    };
    assert!(
        after.bridges.is_empty() && after.taps.is_empty() && !after.firewall,
        "{after:?}"
    );
    outcomes
}

#[test]
fn in_process_adapter_meets_the_contract() {
    require_root();
    let ns = NetNs::new();
    let dir = shared_tempdir();
    let ops = in_process(&ns, dir.path());
    assert_eq!(ops.ops.channel(), Channel::InProcess);
    probe_contract(&ops);
}

#[test]
fn helper_client_meets_the_contract() {
    require_root();
    let ns = NetNs::new();
    let dir = shared_tempdir();
    let h = helper_in(&ns, dir.path());
    let ops = HelperClient::new(&h.socket);
    assert!(
        matches!(ops.channel(), Channel::Helper { .. }),
        "{:?}",
        ops.channel()
    );
    probe_contract(&ops);
}

#[test]
fn both_adapters_give_the_same_network_answers() {
    require_root();
    let ns_a = NetNs::new();
    let dir_a = shared_tempdir();
    let in_process = network_contract(&in_process(&ns_a, dir_a.path()));

    let ns_b = NetNs::new();
    let dir_b = shared_tempdir();
    let h = helper_in(&ns_b, dir_b.path());
    let helper = network_contract(&HelperClient::new(&h.socket));

    assert_eq!(in_process, helper);
    // Spot checks of what the shared sequence answered.
    let created: Vec<bool> = in_process
        .iter()
        .filter_map(|o| match o {
            PrivOutcome::Bridge(b) => Some(b.created),
            PrivOutcome::Tap(t) => Some(t.created),
            _ => None,
        })
        .collect();
    assert_eq!(created, [true, false, true, true, false]);
}

#[test]
fn helper_client_reports_an_absent_helper() {
    let dir = shared_tempdir();
    let ops = HelperClient::new(dir.path().join("root.sock"));
    let Channel::HelperUnreachable { error, .. } = ops.channel() else {
        panic!()
    };
    assert!(error.contains("root.sock"), "{error}");
    let err = PrivilegedOps::call(&ops, PrivOp::Probe(ProbeOp::ProbeKvm(ProbeKvm))).unwrap_err();
    assert_eq!(err.code, banger_proto::ErrorCode::Unavailable);
}

/// `BuildDebianImage` through a real helper, started by hand (no systemd,
/// so the builder runs as the helper's child, `--cached-only`): the
/// installed builder (a copy in the install's bin dir) finds the default
/// image in root's cache and the caller gets three read-only descriptors of
/// exactly those files (a suite not in the cache would be refused, not
/// built: `debian::tests::a_cached_only_lookup_never_builds`). A suite
/// that is not a plain word is refused before anything runs, and so is a
/// builder that someone other than root could have replaced. The system
/// scenario (`system_guest_nspawn`) runs the same operation under systemd,
/// through a transient unit, for an owner's `image build`.
#[test]
fn helper_hands_out_the_default_image_from_roots_cache() {
    use std::os::unix::fs::MetadataExt as _;

    require_root();
    // Root's cache holds the default image (built here, in the host's
    // namespace where the mirror is reachable, when it does not yet).
    let cache = banger_imagebuild::default_cache_dir();
    let img = banger_imagebuild::build_debian(
        &banger_imagebuild::DebianOptions::new(&cache),
        &mut |_| {},
    )
    .unwrap_or_else(|e| panic!("building the default image: {e:?}"));

    let ns = NetNs::new();
    let dir = shared_tempdir();
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let builder = bin_dir.join("banger-imagebuild");
    std::fs::copy(bin("banger-imagebuild"), &builder).unwrap();
    let h = helper_in(&ns, dir.path());
    let ops = HelperClient::new(&h.socket);

    let (out, fds) = PrivilegedOps::call_with_fds(
        &ops,
        PrivOp::Image(ImageOp::BuildDebianImage(BuildDebianImage {
            suite: "bookworm".into(),
        })),
    )
    .unwrap_or_else(|e| panic!("build_debian_image: {}", e.render()));
    let PrivOutcome::BuiltImage(files) = out else {
        panic!("wrong outcome {out:?}")
    };
    assert_eq!(files.cache_key, img.cache_key);
    assert_eq!(files.kernel_version, img.kernel_version);
    assert!(files.cached, "{files:?}");
    assert_eq!(fds.len(), 3);
    for (file, path) in [
        (&files.rootfs, &img.rootfs_ext4),
        (&files.kernel, &img.kernel),
        (&files.initrd, &img.initrd),
    ] {
        assert_eq!(Path::new(&file.path), path.as_path());
        let fd = std::fs::File::from(fds[file.fd.0 as usize].try_clone().unwrap());
        let (got, want) = (fd.metadata().unwrap(), std::fs::metadata(path).unwrap());
        assert_eq!((got.dev(), got.ino()), (want.dev(), want.ino()), "{file:?}");
        let mode = rustix::fs::fcntl_getfl(&fd).unwrap() & rustix::fs::OFlags::RWMODE;
        assert_eq!(mode, rustix::fs::OFlags::RDONLY, "{file:?}");
    }
    drop(fds);

    let bad = PrivilegedOps::call(
        &ops,
        PrivOp::Image(ImageOp::BuildDebianImage(BuildDebianImage {
            suite: "bookworm --mirror=http://127.0.0.1/".into(),
        })),
    )
    .unwrap_err();
    assert_eq!(
        bad.code,
        banger_proto::ErrorCode::BadRequest,
        "{}",
        bad.render()
    );
    assert!(bad.render().contains("invalid suite"), "{}", bad.render());

    // A builder someone else owns is never run as root.
    std::os::unix::fs::chown(&builder, Some(65534), None).unwrap();
    let e = PrivilegedOps::call(
        &ops,
        PrivOp::Image(ImageOp::BuildDebianImage(BuildDebianImage {
            suite: "bookworm".into(),
        })),
    )
    .unwrap_err();
    assert!(
        e.render().contains("must be owned by root"),
        "{}",
        e.render()
    );
}
