//! HostNetwork: the bridge, the tap pool, per-VM NAT, `.vm` DNS and resolver
//! routing, as docs/network.md and ARCHITECTURE.md ("Host network") describe
//! them.
//!
//! All kernel work goes through the privileged-ops seam; this service decides
//! *what* the host should look like (from config and the store) and asks the
//! executor to make it so. Its methods are blocking (they make privileged
//! calls) and the daemon runs them on blocking threads. The internal mutex is
//! a subsystem-local lock: last in the lock order, never held across an
//! await, guest I/O or network I/O.

pub mod leases;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use banger_proto::net::{BridgeSpec, FirewallSpec, GuestRule, TAP_PREFIX, TapSpec};
use banger_proto::net::{NetStatus, TeardownReport};
use banger_proto::privops::{
    DeleteTap, DeviceState, HostDevice, PrivCall, ProbeDevice, QueryNetStatus, SnapshotBackend,
    Teardown,
};
use banger_proto::rpc::{HostStatus, NatStatus, TapAssignment, TapPoolStatus};
use banger_proto::{ErrorCode, RpcError};

use crate::config::{Ipv4Cidr, NetworkConfig};
use crate::handles;
use crate::layout::Layout;
use crate::privileged::{PrivilegedOps, PrivilegedOpsExt};
use crate::store::{Store, VmRow};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("privileged operation {op} failed")]
    Privileged {
        op: &'static str,
        #[source]
        source: RpcError,
    },
    #[error("reading VMs and leases from the store")]
    Store(#[source] crate::store::StoreError),
    #[error("VM handles")]
    Handles(#[source] handles::HandlesError),
    #[error("VM {vm} has no IP lease")]
    NoLease { vm: String },
}

impl NetError {
    pub fn to_rpc(&self) -> RpcError {
        let code = match self {
            NetError::Privileged { source, .. } => source.code,
            NetError::Handles(_) | NetError::Store(_) => ErrorCode::Internal,
            NetError::NoLease { .. } => ErrorCode::InvalidState,
        };
        RpcError::from_error(code, self)
    }
}

#[derive(Debug, Default)]
struct NetState {
    /// Whether the last reconcile completed; `error` says why not.
    ready: bool,
    error: Option<String>,
    /// Taps ready for the next VM.
    free: BTreeSet<String>,
    /// VM id → tap.
    assigned: BTreeMap<String, String>,
    resolver: bool,
}

/// The host network service.
#[derive(Debug)]
pub struct HostNetwork {
    cfg: NetworkConfig,
    bridge_ip: Ipv4Addr,
    /// Uid that will own the taps (the uid that runs the VMMs).
    tap_owner: u32,
    privileged: Arc<dyn PrivilegedOps>,
    store: Arc<Store>,
    layout: Layout,
    state: Mutex<NetState>,
}

impl HostNetwork {
    pub fn new(
        cfg: NetworkConfig,
        tap_owner: u32,
        privileged: Arc<dyn PrivilegedOps>,
        store: Arc<Store>,
        layout: Layout,
    ) -> Self {
        let bridge_ip = leases::bridge_address(cfg.subnet);
        HostNetwork {
            cfg,
            bridge_ip,
            tap_owner,
            privileged,
            store,
            layout,
            state: Mutex::new(NetState::default()),
        }
    }

    pub fn subnet(&self) -> Ipv4Cidr {
        self.cfg.subnet
    }

    pub fn bridge_ip(&self) -> Ipv4Addr {
        self.bridge_ip
    }

    fn request<R: PrivCall>(&self, request: R) -> Result<R::Response, NetError> {
        self.privileged
            .request(request)
            .map_err(|source| NetError::Privileged {
                op: R::NAME,
                source,
            })
    }

    /// Bring the host in line with config and the store: bridge, taps of
    /// running VMs, the free pool, the firewall. Idempotent; run at startup
    /// and whenever the desired state may have drifted.
    pub fn reconcile(&self) -> Result<(), NetError> {
        let mut st = self.state.lock().expect("network state poisoned");
        let result = self.reconcile_locked(&mut st);
        st.ready = result.is_ok();
        st.error = result
            .as_ref()
            .err()
            .map(|e| banger_proto::error::chain(e).join(": "));
        result
    }

    fn reconcile_locked(&self, st: &mut NetState) -> Result<(), NetError> {
        self.request(BridgeSpec::for_subnet(&self.cfg.bridge, self.cfg.subnet))?;
        let taps = self.request(QueryNetStatus)?.taps;
        // Only taps on the configured bridge are usable; banger's taps left on
        // another bridge (the bridge was renamed) or on none are deleted, and
        // the pool makes new ones.
        let mut existing: BTreeSet<String> = BTreeSet::new();
        for t in taps.into_iter().filter(|t| t.present) {
            if t.master.as_deref() == Some(self.cfg.bridge.as_str()) {
                existing.insert(t.name);
            } else {
                tracing::info!(tap = %t.name, master = ?t.master, "deleting a tap that is not on the bridge");
                self.request(DeleteTap { name: t.name })?;
            }
        }

        // Taps of running VMs: keep the one recorded in handles.json when the
        // executor still has it, otherwise hand out a new one.
        st.assigned.clear();
        let running = self.running_vms()?;
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let mut need_tap = Vec::new();
        for vm in &running {
            let h = handles::load(&self.layout.vm_dir(&vm.id)).map_err(NetError::Handles)?;
            match h.tap {
                Some(tap) if existing.contains(&tap) && !taken.contains(&tap) => {
                    taken.insert(tap.clone());
                    st.assigned.insert(vm.id.clone(), tap);
                }
                _ => need_tap.push(vm.id.clone()),
            }
        }
        st.free = existing.difference(&taken).cloned().collect();
        for vm_id in need_tap {
            let tap = self.take_tap(st)?;
            self.record_tap(&vm_id, Some(tap.clone()))?;
            st.assigned.insert(vm_id, tap);
        }
        self.refill_pool(st)?;
        self.sync_firewall(st)?;
        Ok(())
    }

    /// VMs whose VMM may run: their taps stay theirs (a stopping VM's
    /// until its stop, or the VM reconcile, gives it back).
    fn running_vms(&self) -> Result<Vec<VmRow>, NetError> {
        let vms = self.store.list_vms().map_err(NetError::Store)?;
        Ok(vms.into_iter().filter(|v| v.state.vmm_may_run()).collect())
    }

    /// VM id → leased address.
    fn lease_map(&self) -> Result<BTreeMap<String, Ipv4Addr>, NetError> {
        Ok(self
            .store
            .leases()
            .map_err(NetError::Store)?
            .into_iter()
            .map(|l| (l.vm_id, l.ip))
            .collect())
    }

    /// Keep a VM's tap in its `handles.json` (what the next reconcile
    /// reads after a crash; a file an older daemon wrote loses its VMM copy
    /// here).
    fn record_tap(&self, vm_id: &str, tap: Option<String>) -> Result<(), NetError> {
        handles::update(&self.layout.vm_dir(vm_id), |h| h.tap = tap).map_err(NetError::Handles)
    }

    /// A free tap, creating one when the pool is empty.
    fn take_tap(&self, st: &mut NetState) -> Result<String, NetError> {
        if let Some(tap) = st.free.pop_first() {
            return Ok(tap);
        }
        self.create_tap(st)
    }

    fn create_tap(&self, st: &NetState) -> Result<String, NetError> {
        let used: BTreeSet<&String> = st.free.iter().chain(st.assigned.values()).collect();
        let name = (0u32..)
            .map(|i| format!("{TAP_PREFIX}{i}"))
            .find(|n| !used.contains(n))
            .expect("tap indices are unbounded");
        self.request(TapSpec {
            name: name.clone(),
            bridge: self.cfg.bridge.clone(),
            owner_uid: self.tap_owner,
        })?;
        Ok(name)
    }

    /// Grow or shrink the free pool to exactly `tap_pool` taps.
    fn refill_pool(&self, st: &mut NetState) -> Result<(), NetError> {
        let target = self.cfg.tap_pool as usize;
        while st.free.len() < target {
            let tap = self.create_tap(st)?;
            st.free.insert(tap);
        }
        while st.free.len() > target {
            let tap = st.free.pop_last().expect("non-empty");
            self.request(DeleteTap { name: tap })?;
        }
        Ok(())
    }

    fn sync_firewall(&self, st: &NetState) -> Result<(), NetError> {
        let leases = self.lease_map()?;
        let mut guests = Vec::new();
        for vm in self.running_vms()? {
            let (Some(tap), Some(ip)) = (st.assigned.get(&vm.id), leases.get(&vm.id)) else {
                continue;
            };
            guests.push(GuestRule {
                tap: tap.clone(),
                ip: *ip,
                nat: vm.nat,
            });
        }
        self.request(FirewallSpec {
            bridge: self.cfg.bridge.clone(),
            guests,
            allow_inter_vm: self.cfg.allow_inter_vm,
        })
    }

    /// Give a VM a tap from the pool (start of its boot). The pool is
    /// refilled afterwards so the next start does not wait either.
    pub fn attach(&self, vm_id: &str) -> Result<String, NetError> {
        let mut st = self.state.lock().expect("network state poisoned");
        if let Some(tap) = st.assigned.get(vm_id) {
            return Ok(tap.clone());
        }
        let tap = self.take_tap(&mut st)?;
        self.record_tap(vm_id, Some(tap.clone()))?;
        st.assigned.insert(vm_id.to_string(), tap.clone());
        self.sync_firewall(&st)?;
        self.refill_pool(&mut st)?;
        Ok(tap)
    }

    /// The tap a VM holds now (`vm ls`, `vm show`, `vm stats`): from
    /// memory, never from its `handles.json`.
    pub fn tap_of(&self, vm_id: &str) -> Option<String> {
        let st = self.state.lock().expect("network state poisoned");
        st.assigned.get(vm_id).cloned()
    }

    /// Return a VM's tap to the pool (VM stopped or deleted).
    pub fn detach(&self, vm_id: &str) -> Result<(), NetError> {
        let mut st = self.state.lock().expect("network state poisoned");
        if let Some(tap) = st.assigned.remove(vm_id) {
            st.free.insert(tap);
            self.record_tap(vm_id, None)?;
            self.sync_firewall(&st)?;
            self.refill_pool(&mut st)?;
        }
        Ok(())
    }

    /// `.vm` records for every VM that holds a lease.
    pub fn dns_records(&self) -> Result<Vec<(String, Ipv4Addr)>, NetError> {
        let leases = self.lease_map()?;
        Ok(self
            .store
            .list_vms()
            .map_err(NetError::Store)?
            .into_iter()
            .filter_map(|vm| leases.get(&vm.id).map(|ip| (vm.name, *ip)))
            .collect())
    }

    pub fn set_resolver_routing(&self, applied: bool) {
        self.state.lock().expect("network state poisoned").resolver = applied;
    }

    /// Current state, for `banger host status`.
    pub fn status(&self, dns_address: Option<String>, dns_records: usize) -> HostStatus {
        let st = self.state.lock().expect("network state poisoned");
        // Best-effort: without the kernel's view the bridge shows absent
        // and NAT off; why is in the log.
        let kernel: Option<NetStatus> = self
            .privileged
            .request(QueryNetStatus)
            .inspect_err(|e| tracing::warn!(error = %e.render(), "host status: net status"))
            .ok();
        let leases = self.lease_map().unwrap_or_default();
        let vms: BTreeMap<String, VmRow> = self
            .store
            .list_vms()
            .map(|vs| vs.into_iter().map(|v| (v.id.clone(), v)).collect())
            .unwrap_or_default();
        let assigned = st
            .assigned
            .iter()
            .filter_map(|(vm_id, tap)| {
                let vm = vms.get(vm_id)?;
                Some(TapAssignment {
                    tap: tap.clone(),
                    vm: vm.name.clone(),
                    ip: *leases.get(vm_id)?,
                    nat: vm.nat,
                })
            })
            .collect();
        let bridge_present = kernel
            .as_ref()
            .map(|k| {
                k.bridges
                    .iter()
                    .any(|b| b.name == self.cfg.bridge && b.present)
            })
            .unwrap_or(false);
        HostStatus {
            ready: st.ready,
            error: st.error.clone(),
            bridge: self.cfg.bridge.clone(),
            bridge_present,
            subnet: self.cfg.subnet.to_string(),
            bridge_address: self.bridge_ip,
            dns_address,
            dns_records,
            nat: NatStatus {
                firewall: kernel.as_ref().is_some_and(|k| k.firewall),
                ip_forward: kernel.as_ref().is_some_and(|k| k.ip_forward),
                nat_guests: kernel.map(|k| k.nat_guests).unwrap_or_default(),
            },
            tap_pool: TapPoolStatus {
                target: self.cfg.tap_pool,
                free: st.free.iter().cloned().collect(),
                assigned,
            },
            resolver_routing: st.resolver,
            snapshot_backend: self.snapshot_backend(),
        }
    }

    /// The backend new VM root disks get here, by the executor's own rule
    /// (`SnapshotBackend::select`): dm-snapshot where the executor reports
    /// `/dev/mapper/control` usable (it opens *and* `DM_VERSION` succeeds
    /// for the executor, which needs `CAP_SYS_ADMIN`) and `dmsetup` is
    /// installed, else reflink where the state directory has it, else a
    /// sparse copy. Loop devices are attached by ioctl (no `losetup`).
    pub fn snapshot_backend(&self) -> SnapshotBackend {
        let mapper = self
            .privileged
            .request(ProbeDevice {
                device: HostDevice::MapperControl,
            })
            .inspect_err(|e| tracing::warn!(error = %e.render(), "probing device-mapper"))
            .is_ok_and(|d| d.state == DeviceState::Present);
        let tools = banger_host::runner::resolve("dmsetup".as_ref()).is_some();
        let reflink = banger_host::probe::probe_reflink(&self.layout.state_dir).support
            == banger_host::probe::ReflinkSupport::Supported;
        SnapshotBackend::select(mapper && tools, reflink)
    }

    /// Remove every host object banger created. The service is left "not
    /// ready" until the next reconcile.
    pub fn teardown(&self) -> Result<TeardownReport, NetError> {
        let mut st = self.state.lock().expect("network state poisoned");
        let report = self.request(Teardown)?;
        for vm_id in st.assigned.keys() {
            // The taps are gone; forget them so reconcile hands out new ones.
            if let Err(e) = self.record_tap(vm_id, None) {
                tracing::warn!(vm = %vm_id, error = %e, "clearing tap from handles");
            }
        }
        *st = NetState {
            ready: false,
            error: Some(
                "torn down by `banger host teardown`; restart bangerd to set up again".into(),
            ),
            ..NetState::default()
        };
        Ok(report)
    }
}
