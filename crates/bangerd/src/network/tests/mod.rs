//! HostNetwork's decisions, against a recording fake of the privileged seam
//! and a real SQLite store in a temp dir. The fake keeps an in-memory host
//! (bridges, taps with their bridge, the last firewall) so `NetStatus`
//! answers consistently with what was ensured and deleted, and it refuses
//! what the real executor refuses (a tap on a bridge that was not ensured,
//! deleting or firewalling a tap it does not have).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use banger_proto::net::{
    BridgeOutcome, BridgeStatus, FirewallSpec, NetStatus, TapOutcome, TapStatus, TeardownReport,
};
use banger_proto::privops::{DeleteTap, NetOp, PrivOp, PrivOutcome, QueryNetStatus, Teardown};
use banger_proto::{ErrorCode, RpcError};

use super::HostNetwork;
use crate::config::{Config, NetworkConfig};
use crate::handles;
use crate::layout::Layout;
use crate::privileged::{Channel, PrivilegedOps};
use crate::store::{
    ImageSource, KernelSource, NewImage, NewKernel, NewLease, NewVm, Store, VmRow, VmState, Vmm,
};

const TAP_OWNER: u32 = 4242;

// ------------------------------------------------------------------ fake

#[derive(Debug, Default)]
struct FakeHost {
    ops: Vec<PrivOp>,
    /// name → address/prefix
    bridges: BTreeMap<String, (Ipv4Addr, u8)>,
    /// name → bridge
    taps: BTreeMap<String, String>,
    /// Journaled taps the kernel no longer has (e.g. after a host reboot).
    lost: BTreeSet<String>,
    firewall: Option<FirewallSpec>,
}

/// A recording `PrivilegedOps` over an in-memory host.
#[derive(Debug, Default)]
struct FakeOps {
    host: Mutex<FakeHost>,
}

fn refuse(msg: String) -> RpcError {
    RpcError::new(ErrorCode::BadRequest, msg)
}

impl FakeOps {
    fn host(&self) -> std::sync::MutexGuard<'_, FakeHost> {
        self.host.lock().unwrap()
    }

    /// The ops recorded since the last call, and forget them.
    fn take_ops(&self) -> Vec<PrivOp> {
        std::mem::take(&mut self.host().ops)
    }

    fn taps(&self) -> BTreeSet<String> {
        self.host().taps.keys().cloned().collect()
    }

    fn firewall(&self) -> FirewallSpec {
        self.host().firewall.clone().expect("a firewall was synced")
    }

    /// Taps the kernel has now (journaled and not lost).
    fn present_taps(&self) -> BTreeSet<String> {
        let h = self.host();
        h.taps
            .keys()
            .filter(|t| !h.lost.contains(*t))
            .cloned()
            .collect()
    }

    /// The kernel loses a tap (the journal still lists it).
    fn lose_tap(&self, name: &str) {
        self.host().lost.insert(name.to_string());
    }
}

impl PrivilegedOps for FakeOps {
    fn call_with_fds(&self, op: PrivOp) -> Result<(PrivOutcome, Vec<OwnedFd>), RpcError> {
        let mut h = self.host();
        h.ops.push(op.clone());
        let outcome = match op {
            PrivOp::Net(NetOp::EnsureBridge(spec)) => {
                let created = h
                    .bridges
                    .insert(spec.name.clone(), (spec.address, spec.prefix_len))
                    .is_none();
                PrivOutcome::Bridge(BridgeOutcome {
                    name: spec.name,
                    created,
                })
            }
            PrivOp::Net(NetOp::EnsureTap(spec)) => {
                if !h.bridges.contains_key(&spec.bridge) {
                    return Err(refuse(format!("bridge {} not journaled", spec.bridge)));
                }
                let created = h.lost.remove(&spec.name)
                    || h.taps
                        .insert(spec.name.clone(), spec.bridge.clone())
                        .is_none();
                PrivOutcome::Tap(TapOutcome {
                    name: spec.name,
                    created,
                })
            }
            PrivOp::Net(NetOp::DeleteTap(DeleteTap { name })) => {
                if h.taps.remove(&name).is_none() {
                    return Err(refuse(format!("tap {name} not journaled")));
                }
                h.lost.remove(&name);
                PrivOutcome::Done
            }
            PrivOp::Net(NetOp::SyncFirewall(spec)) => {
                if !h.bridges.contains_key(&spec.bridge) {
                    return Err(refuse(format!("bridge {} not journaled", spec.bridge)));
                }
                for g in &spec.guests {
                    match h.taps.get(&g.tap) {
                        Some(b) if *b == spec.bridge => {}
                        Some(b) => {
                            return Err(refuse(format!(
                                "tap {} belongs to bridge {b}, not {}",
                                g.tap, spec.bridge
                            )));
                        }
                        None => return Err(refuse(format!("tap {} not journaled", g.tap))),
                    }
                }
                h.firewall = Some(spec);
                PrivOutcome::Done
            }
            PrivOp::Net(NetOp::NetStatus(QueryNetStatus)) => PrivOutcome::NetStatus(NetStatus {
                bridges: h
                    .bridges
                    .iter()
                    .map(|(name, (a, p))| BridgeStatus {
                        name: name.clone(),
                        present: true,
                        addresses: vec![format!("{a}/{p}")],
                        up: true,
                    })
                    .collect(),
                taps: h
                    .taps
                    .iter()
                    .map(|(name, bridge)| {
                        let present = !h.lost.contains(name);
                        TapStatus {
                            name: name.clone(),
                            present,
                            master: present.then(|| bridge.clone()),
                            up: present,
                        }
                    })
                    .collect(),
                firewall: h.firewall.is_some(),
                nat_guests: h
                    .firewall
                    .iter()
                    .flat_map(|f| f.guests.iter().filter(|g| g.nat).map(|g| g.ip))
                    .collect(),
                ip_forward: true,
                resolver_links: Vec::new(),
            }),
            PrivOp::Net(NetOp::Teardown(Teardown)) => {
                let mut removed: Vec<String> = h.taps.keys().map(|t| format!("tap {t}")).collect();
                removed.extend(h.bridges.keys().map(|b| format!("bridge {b}")));
                h.taps.clear();
                h.lost.clear();
                h.bridges.clear();
                h.firewall = None;
                PrivOutcome::Teardown(TeardownReport {
                    removed,
                    errors: Vec::new(),
                })
            }
            other => {
                return Err(RpcError::new(
                    ErrorCode::Internal,
                    format!("the fake does not do {}", other.name()),
                ));
            }
        };
        Ok((outcome, Vec::new()))
    }

    fn channel(&self) -> Channel {
        Channel::InProcess
    }
}

// ------------------------------------------------------------------ fixture

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    layout: Layout,
    ops: Arc<FakeOps>,
    image_id: String,
}

fn net_cfg(tap_pool: u32) -> NetworkConfig {
    NetworkConfig {
        tap_pool,
        ..Config::default().network
    }
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let layout =
            Layout::dev(Some(dir.path().join("state")), Some(dir.path().join("run"))).unwrap();
        let store = Arc::new(Store::open(&layout.store_path).unwrap());
        let k = store
            .insert_kernel(&NewKernel {
                name: "k".into(),
                arch: "x86_64".into(),
                kernel_path: "/var/lib/banger/kernels/k/vmlinux".into(),
                initrd_path: None,
                sha256: "ab".repeat(32),
                source: KernelSource::Import,
            })
            .unwrap();
        let img = store
            .insert_image(&NewImage {
                name: "img".into(),
                rootfs_path: "/var/lib/banger/images/img/rootfs.ext4".into(),
                kernel_id: k.id,
                size_bytes: 1 << 30,
                source: ImageSource::Register,
                source_ref: None,
                work_seed_path: None,
            })
            .unwrap();
        Fixture {
            _dir: dir,
            store,
            layout,
            ops: Arc::new(FakeOps::default()),
            image_id: img.id,
        }
    }

    fn network(&self, cfg: NetworkConfig) -> HostNetwork {
        HostNetwork::new(
            cfg,
            TAP_OWNER,
            self.ops.clone(),
            self.store.clone(),
            self.layout.clone(),
        )
    }

    /// A VM leased 172.30.0.`last`, in `state`.
    fn vm(&self, name: &str, last: u8, nat: bool, state: VmState) -> VmRow {
        let ip = Ipv4Addr::new(172, 30, 0, last);
        let (vm, _) = self
            .store
            .create_vm_with_lease(
                &NewVm {
                    name: name.into(),
                    image_id: self.image_id.clone(),
                    vmm: Vmm::Firecracker,
                    vcpus: 1,
                    memory_mib: 256,
                    disk_bytes: 1 << 30,
                    nat,
                },
                &NewLease {
                    ip,
                    mac: super::leases::mac_for(ip),
                },
            )
            .unwrap();
        self.set_state(&vm, state)
    }

    /// Walk a VM through the store's states to `to` (created → starting →
    /// running → stopping → stopped).
    fn set_state(&self, vm: &VmRow, to: VmState) -> VmRow {
        let path = [
            VmState::Created,
            VmState::Starting,
            VmState::Running,
            VmState::Stopping,
            VmState::Stopped,
        ];
        let mut cur = self.store.get_vm(&vm.id).unwrap().unwrap();
        if to == VmState::Failed {
            return self
                .store
                .set_vm_state(&vm.id, cur.state, to, Some("test"))
                .unwrap();
        }
        let from = path.iter().position(|s| *s == cur.state).unwrap();
        let target = path.iter().position(|s| *s == to).unwrap();
        assert!(from <= target, "cannot walk {:?} back to {to:?}", cur.state);
        for next in &path[from + 1..=target] {
            cur = self
                .store
                .set_vm_state(&vm.id, cur.state, *next, None)
                .unwrap();
        }
        cur
    }

    /// Drop a VM's lease behind the store's back (a VM without an address).
    fn drop_lease(&self, vm: &VmRow) {
        let conn = rusqlite::Connection::open(&self.layout.store_path).unwrap();
        let n = conn
            .execute("DELETE FROM ip_leases WHERE vm_id = ?1", [&vm.id])
            .unwrap();
        assert_eq!(n, 1);
    }

    fn recorded_tap(&self, vm: &VmRow) -> Option<String> {
        handles::load(&self.layout.vm_dir(&vm.id)).unwrap().tap
    }

    fn record_tap(&self, vm: &VmRow, tap: &str) {
        handles::store(
            &self.layout.vm_dir(&vm.id),
            &handles::VmHandles {
                tap: Some(tap.into()),
            },
        )
        .unwrap();
    }
}

fn free(net: &HostNetwork) -> BTreeSet<String> {
    net.state.lock().unwrap().free.clone()
}

fn assigned(net: &HostNetwork) -> BTreeMap<String, String> {
    net.state.lock().unwrap().assigned.clone()
}

/// Every tap the host has is either free or a running VM's, and nothing
/// else: the pool plus the VMs' taps, exactly.
fn assert_accounted(f: &Fixture, net: &HostNetwork) {
    let mut held = free(net);
    let assigned = assigned(net);
    held.extend(assigned.values().cloned());
    assert_eq!(
        held.len(),
        free(net).len() + assigned.len(),
        "a tap is both free and assigned"
    );
    assert_eq!(f.ops.present_taps(), held);
}

fn ensured_taps(ops: &[PrivOp]) -> Vec<String> {
    ops.iter()
        .filter_map(|op| match op {
            PrivOp::Net(NetOp::EnsureTap(t)) => Some(t.name.clone()),
            _ => None,
        })
        .collect()
}

fn deleted_taps(ops: &[PrivOp]) -> Vec<String> {
    ops.iter()
        .filter_map(|op| match op {
            PrivOp::Net(NetOp::DeleteTap(DeleteTap { name })) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn names(ops: &[PrivOp]) -> Vec<&'static str> {
    ops.iter().map(PrivOp::name).collect()
}

fn guests(spec: &FirewallSpec) -> BTreeMap<String, (Ipv4Addr, bool)> {
    spec.guests
        .iter()
        .map(|g| (g.tap.clone(), (g.ip, g.nat)))
        .collect()
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, 0, last)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ------------------------------------------------------------------ tests

#[test]
fn reconcile_creates_the_bridge_running_taps_and_exactly_the_pool() {
    let f = Fixture::new();
    let a = f.vm("a", 2, true, VmState::Running);
    let b = f.vm("b", 3, false, VmState::Starting);
    let c = f.vm("c", 4, true, VmState::Stopped);
    let net = f.network(net_cfg(3));
    net.reconcile().unwrap();

    let ops = f.ops.take_ops();
    let PrivOp::Net(NetOp::EnsureBridge(bridge)) = &ops[0] else {
        panic!("the bridge comes first: {:?}", names(&ops))
    };
    assert_eq!(bridge.name, "banger0");
    assert_eq!(bridge.address, ip(1));
    assert_eq!(bridge.prefix_len, 24);
    assert!(matches!(
        ops.last(),
        Some(PrivOp::Net(NetOp::SyncFirewall(_)))
    ));
    for op in &ops {
        if let PrivOp::Net(NetOp::EnsureTap(t)) = op {
            assert_eq!((t.bridge.as_str(), t.owner_uid), ("banger0", TAP_OWNER));
        }
    }
    // Two running VMs, three free: five distinct taps, none deleted.
    let created = ensured_taps(&ops);
    assert_eq!(created.len(), 5, "{created:?}");
    assert_eq!(created.iter().collect::<BTreeSet<_>>().len(), 5);
    assert!(deleted_taps(&ops).is_empty());
    assert_eq!(f.ops.taps().len(), 5);

    let free = free(&net);
    assert_eq!(free.len(), 3);
    let assigned = assigned(&net);
    assert_eq!(
        assigned.keys().cloned().collect::<BTreeSet<_>>(),
        set(&[&a.id, &b.id])
    );
    let ta = f.recorded_tap(&a).expect("a's tap recorded");
    let tb = f.recorded_tap(&b).expect("b's tap recorded");
    assert_eq!(assigned[&a.id], ta);
    assert_eq!(assigned[&b.id], tb);
    assert_ne!(ta, tb);
    assert!(!free.contains(&ta) && !free.contains(&tb));
    assert_eq!(f.recorded_tap(&c), None, "a stopped VM holds no tap");
    assert_accounted(&f, &net);

    let status = net.status(None, 0);
    assert!(status.ready && status.error.is_none(), "{status:?}");
    assert!(status.bridge_present);
    assert_eq!(status.tap_pool.target, 3);
    assert_eq!(status.tap_pool.free.len(), 3);
    assert_eq!(status.tap_pool.assigned.len(), 2);
}

#[test]
fn a_second_reconcile_creates_and_deletes_nothing() {
    let f = Fixture::new();
    f.vm("a", 2, true, VmState::Running);
    f.vm("b", 3, false, VmState::Stopped);
    let net = f.network(net_cfg(2));
    net.reconcile().unwrap();
    let (free1, assigned1, fw1) = (free(&net), assigned(&net), f.ops.firewall());
    f.ops.take_ops();

    net.reconcile().unwrap();
    let ops = f.ops.take_ops();
    assert_eq!(
        names(&ops),
        ["ensure_bridge", "net_status", "sync_firewall"],
        "{ops:?}"
    );
    assert_eq!(free(&net), free1);
    assert_eq!(assigned(&net), assigned1);
    assert_eq!(f.ops.firewall(), fw1);
}

#[test]
fn reconcile_shrinks_an_oversized_pool() {
    let f = Fixture::new();
    let big = f.network(net_cfg(4));
    big.reconcile().unwrap();
    assert_eq!(f.ops.taps().len(), 4);
    f.ops.take_ops();

    // Restart with a smaller pool: the extra taps go.
    let small = f.network(net_cfg(1));
    small.reconcile().unwrap();
    let ops = f.ops.take_ops();
    assert!(ensured_taps(&ops).is_empty(), "{ops:?}");
    assert_eq!(deleted_taps(&ops).len(), 3, "{ops:?}");
    assert_eq!(free(&small).len(), 1);
    assert_eq!(f.ops.taps(), free(&small));
}

#[test]
fn attach_takes_a_free_tap_then_refills_the_pool() {
    let f = Fixture::new();
    let net = f.network(net_cfg(2));
    net.reconcile().unwrap();
    let before = free(&net);
    assert_eq!(before.len(), 2);
    f.ops.take_ops();

    let vm = f.vm("a", 2, true, VmState::Starting);
    let tap = net.attach(&vm.id).unwrap();
    let ops = f.ops.take_ops();
    assert!(before.contains(&tap), "{tap} was not free: {before:?}");
    let created = ensured_taps(&ops);
    assert_eq!(created.len(), 1, "one refill: {ops:?}");
    assert!(
        !created.contains(&tap),
        "the pool had a tap; none was made for the VM"
    );
    assert!(deleted_taps(&ops).is_empty());
    // The firewall names the VM before the refill.
    assert_eq!(names(&ops), ["sync_firewall", "ensure_tap"]);
    assert_eq!(
        guests(&f.ops.firewall()),
        BTreeMap::from([(tap.clone(), (ip(2), true))])
    );

    assert_eq!(free(&net).len(), 2);
    assert!(!free(&net).contains(&tap));
    assert_eq!(assigned(&net).get(&vm.id), Some(&tap));
    assert_eq!(f.recorded_tap(&vm), Some(tap.clone()));
    assert_accounted(&f, &net);

    // Attaching again is a no-op.
    assert_eq!(net.attach(&vm.id).unwrap(), tap);
    assert!(f.ops.take_ops().is_empty());
}

#[test]
fn attach_with_an_empty_pool_creates_the_vms_tap() {
    let f = Fixture::new();
    let net = f.network(net_cfg(0));
    net.reconcile().unwrap();
    assert!(f.ops.taps().is_empty());
    f.ops.take_ops();

    let vm = f.vm("a", 2, false, VmState::Starting);
    let tap = net.attach(&vm.id).unwrap();
    let ops = f.ops.take_ops();
    assert_eq!(ensured_taps(&ops), std::slice::from_ref(&tap));
    assert!(free(&net).is_empty());
    assert_eq!(f.ops.taps(), set(&[&tap]));
}

#[test]
fn detach_returns_the_tap_and_shrinks_the_pool_back() {
    let f = Fixture::new();
    let net = f.network(net_cfg(2));
    net.reconcile().unwrap();
    let vm = f.vm("a", 2, true, VmState::Starting);
    let tap = net.attach(&vm.id).unwrap();
    assert_eq!(f.ops.taps().len(), 3);
    f.ops.take_ops();

    net.detach(&vm.id).unwrap();
    let ops = f.ops.take_ops();
    let deleted = deleted_taps(&ops);
    assert_eq!(deleted.len(), 1, "{ops:?}");
    assert!(ensured_taps(&ops).is_empty());
    let free_now = free(&net);
    assert_eq!(free_now.len(), 2);
    assert!(!free_now.contains(&deleted[0]));
    assert_eq!(f.ops.taps(), free_now, "the host holds exactly the pool");
    assert_accounted(&f, &net);
    assert!(assigned(&net).is_empty());
    assert_eq!(f.recorded_tap(&vm), None);
    // The VM left the firewall even though the store still says starting.
    assert!(f.ops.firewall().guests.is_empty());
    assert!(
        free_now.contains(&tap) || deleted[0] == tap,
        "{tap} is neither free nor deleted"
    );

    // Detaching again does nothing.
    net.detach(&vm.id).unwrap();
    assert!(f.ops.take_ops().is_empty());
}

#[test]
fn a_running_vms_tap_survives_a_restart() {
    let f = Fixture::new();
    let a = f.vm("a", 2, true, VmState::Running);
    let first = f.network(net_cfg(2));
    first.reconcile().unwrap();
    let tap = f.recorded_tap(&a).unwrap();
    let pool = free(&first);
    drop(first);
    f.ops.take_ops();

    // A fresh service (daemon restart) over the same host and state.
    let second = f.network(net_cfg(2));
    second.reconcile().unwrap();
    let ops = f.ops.take_ops();
    assert!(ensured_taps(&ops).is_empty(), "{ops:?}");
    assert!(deleted_taps(&ops).is_empty(), "{ops:?}");
    assert_eq!(assigned(&second).get(&a.id), Some(&tap));
    assert_eq!(free(&second), pool);
    assert_eq!(f.recorded_tap(&a), Some(tap.clone()));
    assert_eq!(guests(&f.ops.firewall())[&tap], (ip(2), true));
    assert_accounted(&f, &second);
}

#[test]
fn a_recorded_tap_the_host_lost_is_replaced() {
    let f = Fixture::new();
    let a = f.vm("a", 2, true, VmState::Running);
    f.network(net_cfg(1)).reconcile().unwrap();
    let old = f.recorded_tap(&a).unwrap();
    f.ops.lose_tap(&old);
    f.ops.take_ops();

    let net = f.network(net_cfg(1));
    net.reconcile().unwrap();
    let new = f.recorded_tap(&a).unwrap();
    assert_eq!(assigned(&net)[&a.id], new);
    assert_eq!(free(&net).len(), 1);
    assert_accounted(&f, &net);
    assert_eq!(guests(&f.ops.firewall())[&new], (ip(2), true));
}

#[test]
fn two_vms_recording_the_same_tap_get_different_ones() {
    let f = Fixture::new();
    let a = f.vm("a", 2, true, VmState::Running);
    let b = f.vm("b", 3, true, VmState::Running);
    f.network(net_cfg(1)).reconcile().unwrap();
    let ta = f.recorded_tap(&a).unwrap();
    f.record_tap(&b, &ta);

    let net = f.network(net_cfg(1));
    net.reconcile().unwrap();
    let assigned = assigned(&net);
    assert_ne!(assigned[&a.id], assigned[&b.id]);
    assert_eq!(f.recorded_tap(&b).as_ref(), Some(&assigned[&b.id]));
    assert_eq!(f.ops.firewall().guests.len(), 2);
    assert_accounted(&f, &net);
}

#[test]
fn the_firewall_holds_exactly_running_vms_with_leases_and_their_nat() {
    let f = Fixture::new();
    let nat = f.vm("nat", 2, true, VmState::Running);
    let offline = f.vm("offline", 3, false, VmState::Running);
    let starting = f.vm("starting", 4, true, VmState::Starting);
    let stopped = f.vm("stopped", 5, true, VmState::Stopped);
    let failed = f.vm("failed", 6, true, VmState::Failed);
    let created = f.vm("created", 7, true, VmState::Created);
    let leaseless = f.vm("leaseless", 8, true, VmState::Running);
    f.drop_lease(&leaseless);

    let mut cfg = net_cfg(1);
    cfg.allow_inter_vm = true;
    let net = f.network(cfg);
    net.reconcile().unwrap();
    let a = assigned(&net);
    let spec = f.ops.firewall();
    assert_eq!(spec.bridge, "banger0");
    assert!(spec.allow_inter_vm);
    assert_eq!(
        guests(&spec),
        BTreeMap::from([
            (a[&nat.id].clone(), (ip(2), true)),
            (a[&offline.id].clone(), (ip(3), false)),
            (a[&starting.id].clone(), (ip(4), true)),
        ])
    );
    for vm in [&stopped, &failed, &created] {
        assert!(!a.contains_key(&vm.id), "{} holds a tap", vm.name);
    }
    // The lease-less VM runs, so it holds a tap, but has no guest rule.
    assert!(a.contains_key(&leaseless.id));
    assert!(!spec.guests.iter().any(|g| g.tap == a[&leaseless.id]));

    // The default config keeps guests apart.
    let net = f.network(net_cfg(1));
    net.reconcile().unwrap();
    assert!(!f.ops.firewall().allow_inter_vm);
}

#[test]
fn dns_records_cover_every_vm_with_a_lease() {
    let f = Fixture::new();
    f.vm("run", 2, true, VmState::Running);
    f.vm("stop", 3, false, VmState::Stopped);
    f.vm("new", 9, true, VmState::Created);
    let gone = f.vm("gone", 4, true, VmState::Running);
    f.drop_lease(&gone);
    let net = f.network(net_cfg(1));
    let mut records = net.dns_records().unwrap();
    records.sort();
    assert_eq!(
        records,
        [
            ("new".to_string(), ip(9)),
            ("run".to_string(), ip(2)),
            ("stop".to_string(), ip(3)),
        ]
    );
    // Reading records asks nothing of the host.
    assert!(f.ops.take_ops().is_empty());
}

#[test]
fn teardown_clears_assignments_and_handles() {
    let f = Fixture::new();
    let a = f.vm("a", 2, true, VmState::Running);
    let b = f.vm("b", 3, false, VmState::Running);
    let net = f.network(net_cfg(2));
    net.reconcile().unwrap();
    assert!(f.recorded_tap(&a).is_some() && f.recorded_tap(&b).is_some());
    f.ops.take_ops();

    let report = net.teardown().unwrap();
    assert_eq!(names(&f.ops.take_ops()), ["teardown"]);
    assert_eq!(report.removed.len(), 5, "{report:?}");
    assert!(free(&net).is_empty());
    assert!(assigned(&net).is_empty());
    assert_eq!(f.recorded_tap(&a), None);
    assert_eq!(f.recorded_tap(&b), None);
    let status = net.status(None, 0);
    assert!(!status.ready);
    assert!(status.error.unwrap().contains("torn down"));
    assert!(status.tap_pool.free.is_empty() && status.tap_pool.assigned.is_empty());

    // A later reconcile sets everything up again.
    f.ops.take_ops();
    net.reconcile().unwrap();
    assert_eq!(ensured_taps(&f.ops.take_ops()).len(), 4);
    assert_eq!(assigned(&net).len(), 2);
    assert_accounted(&f, &net);
    assert!(net.status(None, 0).ready);
}

#[test]
fn a_failed_reconcile_is_reported_in_status() {
    #[derive(Debug)]
    struct Broken;
    impl PrivilegedOps for Broken {
        fn call_with_fds(&self, op: PrivOp) -> Result<(PrivOutcome, Vec<OwnedFd>), RpcError> {
            Err(RpcError::new(
                ErrorCode::Unavailable,
                format!("no helper for {}", op.name()),
            ))
        }
        fn channel(&self) -> Channel {
            Channel::InProcess
        }
    }
    let f = Fixture::new();
    let net = HostNetwork::new(
        net_cfg(1),
        TAP_OWNER,
        Arc::new(Broken),
        f.store.clone(),
        f.layout.clone(),
    );
    let err = net.reconcile().unwrap_err();
    assert_eq!(err.to_rpc().code, ErrorCode::Unavailable);
    let status = net.status(None, 0);
    assert!(!status.ready);
    assert_eq!(
        status.error.as_deref(),
        Some("privileged operation ensure_bridge failed: no helper for ensure_bridge")
    );
}

mod rename;
mod vm_reconcile;
