//! Per-VM capabilities (issue #14 item 7): "a new per-VM feature is a new
//! capability, not new branches in the lifecycle code". A capability has
//! hooks the lifecycle runs at fixed points, in a fixed order:
//!
//! * `reserved`: the VM's row and address exist (the create's reservation);
//! * `disks`: what the create's disks include (pure, no I/O), in order;
//! * `starting`: before its VMM is launched, in order; it may add to the
//!   launch (the network's tap). A failure undoes the capabilities already
//!   started (their `stopped`, in reverse) and fails the start;
//! * `stopped`: its VMM is gone (stopped, killed, a failed start, found
//!   dead), in reverse order, every one attempted;
//! * `removed`: the VM is being removed, after its disks, in reverse order,
//!   best effort;
//! * `renamed`: a pooled clone (`pool`) was taken by `vm create` under the
//!   create's name (the row has it already), in order, best effort;
//! * `reconfigured`: `vm set` changes the stopped VM's configuration, in
//!   order, before its row does; a failure refuses the change (the ones
//!   before it have made theirs: each must be one that is right for the
//!   row either way, as growing a disk is).
//!
//! Today's: the work disk (its size in the create's disks, grown by `vm
//! set --disk`), the network (a tap from the pool while the VMM runs, and with it
//! the VM's firewall and NAT rules), `.vm` DNS (its name published while
//! the VM exists) and the owner's `known_hosts` line (dropped with the VM).
//! The hooks are blocking; the lifecycle runs them on a blocking thread.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use banger_proto::RpcError;

use super::VmDns;
use crate::network::HostNetwork;
use crate::privileged::{PrivilegedOps, PrivilegedOpsExt as _};
use crate::store::{VmConfigUpdate, VmRow};

/// What capabilities add to the disks a create makes (the root disk is
/// the VM's own: a copy of its image).
#[derive(Debug, Default)]
pub(crate) struct Disks {
    /// The work disk's size.
    pub work_disk_bytes: Option<u64>,
}

/// What capabilities add to a VMM launch.
#[derive(Debug, Default)]
pub(crate) struct Launch {
    /// The tap the VM's NIC is on.
    pub tap: Option<String>,
}

/// One per-VM feature. Every hook defaults to doing nothing.
pub(crate) trait VmCapability: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    fn reserved(&self, _vm: &VmRow, _ip: Ipv4Addr) {}
    fn renamed(&self, _old: &str, _vm: &VmRow, _ip: Ipv4Addr) -> Result<(), RpcError> {
        Ok(())
    }
    fn disks(&self, _vm: &VmRow, _disks: &mut Disks) {}
    fn reconfigured(&self, _vm: &VmRow, _to: &VmConfigUpdate) -> Result<(), RpcError> {
        Ok(())
    }
    fn starting(&self, _vm: &VmRow, _launch: &mut Launch) -> Result<(), RpcError> {
        Ok(())
    }
    fn stopped(&self, _vm: &VmRow) -> Result<(), RpcError> {
        Ok(())
    }
    fn removed(&self, _vm: &VmRow) -> Result<(), RpcError> {
        Ok(())
    }
}

/// The VM's work disk (`/dev/vdb`, the guest's `/work`): made with the
/// create's disks at the VM's size, grown (never shrunk) by `vm set
/// --disk` while the VM is stopped. It goes with the VM's other disks.
#[derive(Debug)]
pub(crate) struct WorkDisk(pub Arc<dyn PrivilegedOps>);

impl VmCapability for WorkDisk {
    fn name(&self) -> &'static str {
        "work disk"
    }
    fn disks(&self, vm: &VmRow, disks: &mut Disks) {
        disks.work_disk_bytes = Some(vm.disk_bytes);
    }
    fn reconfigured(&self, vm: &VmRow, to: &VmConfigUpdate) -> Result<(), RpcError> {
        if to.disk_bytes < vm.disk_bytes {
            return Err(RpcError::new(
                banger_proto::ErrorCode::BadRequest,
                format!(
                    "invalid disk size {}: VM {} has {} bytes and disks only grow",
                    to.disk_bytes, vm.name, vm.disk_bytes
                ),
            ));
        }
        if to.disk_bytes > vm.disk_bytes {
            self.0.request(banger_proto::privops::GrowWorkDisk {
                vm_id: vm.id.clone(),
                bytes: to.disk_bytes,
            })?;
        }
        Ok(())
    }
}

/// The VM's network: a tap while its VMM runs (with the firewall's rules
/// for its address, NAT included when the VM has it).
#[derive(Debug)]
pub(crate) struct Network(pub Arc<HostNetwork>);

impl VmCapability for Network {
    fn name(&self) -> &'static str {
        "network"
    }
    fn starting(&self, vm: &VmRow, launch: &mut Launch) -> Result<(), RpcError> {
        launch.tap = Some(self.0.attach(&vm.id).map_err(|e| e.to_rpc())?);
        Ok(())
    }
    fn stopped(&self, vm: &VmRow) -> Result<(), RpcError> {
        self.0.detach(&vm.id).map_err(|e| e.to_rpc())
    }
    fn removed(&self, vm: &VmRow) -> Result<(), RpcError> {
        self.stopped(vm)
    }
}

/// `NAME.vm` in banger's DNS, from the reservation until the VM is removed.
#[derive(Debug)]
pub(crate) struct Dns(pub Arc<dyn VmDns>);

impl VmCapability for Dns {
    fn name(&self) -> &'static str {
        "dns"
    }
    fn reserved(&self, vm: &VmRow, ip: Ipv4Addr) {
        self.0.publish(&vm.name, ip);
    }
    fn renamed(&self, old: &str, vm: &VmRow, ip: Ipv4Addr) -> Result<(), RpcError> {
        self.0.withdraw(old);
        self.0.publish(&vm.name, ip);
        Ok(())
    }
    fn removed(&self, vm: &VmRow) -> Result<(), RpcError> {
        self.0.withdraw(&vm.name);
        Ok(())
    }
}

/// The VM's line in banger's `known_hosts` (written with its host key when
/// the guest is configured), dropped with the VM.
#[derive(Debug)]
pub(crate) struct KnownHost(pub PathBuf);

impl VmCapability for KnownHost {
    fn name(&self) -> &'static str {
        "known_hosts"
    }
    fn removed(&self, vm: &VmRow) -> Result<(), RpcError> {
        super::guest::set_known_host(&self.0, &format!("{}.vm", vm.name), None)
    }
    fn renamed(&self, old: &str, vm: &VmRow, _ip: Ipv4Addr) -> Result<(), RpcError> {
        super::guest::rename_known_host(&self.0, &format!("{old}.vm"), &format!("{}.vm", vm.name))
    }
}

/// The capabilities every VM has, in their fixed order.
#[derive(Debug)]
pub(crate) struct Capabilities(Vec<Box<dyn VmCapability>>);

impl Capabilities {
    pub(crate) fn new(caps: Vec<Box<dyn VmCapability>>) -> Capabilities {
        Capabilities(caps)
    }

    pub(crate) fn reserved(&self, vm: &VmRow, ip: Ipv4Addr) {
        for c in &self.0 {
            c.reserved(vm, ip);
        }
    }

    /// Every capability's `renamed`, in order, each attempted: the
    /// failures, by capability.
    pub(crate) fn renamed(
        &self,
        old: &str,
        vm: &VmRow,
        ip: Ipv4Addr,
    ) -> Vec<(&'static str, RpcError)> {
        self.0
            .iter()
            .filter_map(|c| c.renamed(old, vm, ip).err().map(|e| (c.name(), e)))
            .collect()
    }

    /// What every capability adds to the create's disks, in order.
    pub(crate) fn disks(&self, vm: &VmRow) -> Disks {
        let mut disks = Disks::default();
        for c in &self.0 {
            c.disks(vm, &mut disks);
        }
        disks
    }

    /// Every capability's `reconfigured`, in order; the first failure
    /// refuses the change, naming the capability.
    pub(crate) fn reconfigured(&self, vm: &VmRow, to: &VmConfigUpdate) -> Result<(), RpcError> {
        for c in &self.0 {
            c.reconfigured(vm, to)
                .map_err(|e| e.context(format!("changing the VM's {}", c.name())))?;
        }
        Ok(())
    }

    /// Every capability's `starting`, in order; on a failure the ones
    /// started are stopped again (in reverse) and the error names the one
    /// that failed.
    pub(crate) fn starting(&self, vm: &VmRow) -> Result<Launch, RpcError> {
        let mut launch = Launch::default();
        for (i, c) in self.0.iter().enumerate() {
            if let Err(e) = c.starting(vm, &mut launch) {
                for done in self.0[..i].iter().rev() {
                    if let Err(u) = done.stopped(vm) {
                        tracing::warn!(vm = %vm.name, capability = done.name(), error = %u.render(), "undoing a failed start");
                    }
                }
                return Err(e.context(format!("starting the VM's {}", c.name())));
            }
        }
        Ok(launch)
    }

    /// Every capability's `stopped`, in reverse order, each attempted; the
    /// first error is returned.
    pub(crate) fn stopped(&self, vm: &VmRow) -> Result<(), RpcError> {
        let mut first = None;
        for c in self.0.iter().rev() {
            if let Err(e) = c.stopped(vm) {
                tracing::warn!(vm = %vm.name, capability = c.name(), error = %e.render(), "stopping a capability");
                first.get_or_insert(e.context(format!("stopping the VM's {}", c.name())));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Every capability's `removed`, in reverse order, best effort: the
    /// failures, by capability.
    pub(crate) fn removed(&self, vm: &VmRow) -> Vec<(&'static str, RpcError)> {
        self.0
            .iter()
            .rev()
            .filter_map(|c| c.removed(vm).err().map(|e| (c.name(), e)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use banger_proto::ErrorCode;

    use super::*;

    /// Records its hooks in a shared log; fails the hooks it is told to.
    #[derive(Debug)]
    struct Rec {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        fail: &'static [&'static str],
    }

    impl Rec {
        fn hook(&self, hook: &str) -> Result<(), RpcError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("{}.{hook}", self.name));
            if self.fail.contains(&hook) {
                return Err(RpcError::new(
                    ErrorCode::Internal,
                    format!("{} broke", self.name),
                ));
            }
            Ok(())
        }
    }

    impl VmCapability for Rec {
        fn name(&self) -> &'static str {
            self.name
        }
        fn reserved(&self, _: &VmRow, _: Ipv4Addr) {
            let _ = self.hook("reserved");
        }
        fn disks(&self, vm: &VmRow, disks: &mut Disks) {
            let _ = self.hook("disks");
            disks.work_disk_bytes.get_or_insert(vm.disk_bytes);
        }
        fn reconfigured(&self, _: &VmRow, _: &VmConfigUpdate) -> Result<(), RpcError> {
            self.hook("reconfigured")
        }
        fn starting(&self, _: &VmRow, launch: &mut Launch) -> Result<(), RpcError> {
            self.hook("starting")?;
            launch
                .tap
                .get_or_insert_with(|| format!("tap-of-{}", self.name));
            Ok(())
        }
        fn stopped(&self, _: &VmRow) -> Result<(), RpcError> {
            self.hook("stopped")
        }
        fn removed(&self, _: &VmRow) -> Result<(), RpcError> {
            self.hook("removed")
        }
    }

    fn vm() -> VmRow {
        VmRow {
            id: "0".repeat(32),
            name: "dev".into(),
            image_id: "1".repeat(32),
            state: crate::store::VmState::Created,
            state_reason: None,
            vmm: crate::store::Vmm::Qemu,
            vcpus: 1,
            memory_mib: 512,
            disk_bytes: 1 << 30,
            nat: false,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn caps(fail: [&'static [&'static str]; 3]) -> (Capabilities, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let caps = ["a", "b", "c"]
            .into_iter()
            .zip(fail)
            .map(|(name, fail)| {
                Box::new(Rec {
                    name,
                    log: Arc::clone(&log),
                    fail,
                }) as Box<dyn VmCapability>
            })
            .collect();
        (Capabilities::new(caps), log)
    }

    fn taken(log: &Mutex<Vec<String>>) -> Vec<String> {
        std::mem::take(&mut log.lock().unwrap())
    }

    /// The create's disks and `vm set` go through every capability in
    /// order; a failed change stops at the capability that failed, named.
    #[test]
    fn disks_and_changes_go_through_every_capability_in_order() {
        let vm = vm();
        let (all, log) = caps([&[], &[], &[]]);
        assert_eq!(all.disks(&vm).work_disk_bytes, Some(vm.disk_bytes));
        let to = VmConfigUpdate {
            vcpus: 2,
            memory_mib: 512,
            disk_bytes: 2 << 30,
            nat: false,
        };
        all.reconfigured(&vm, &to).unwrap();
        assert_eq!(
            taken(&log),
            [
                "a.disks",
                "b.disks",
                "c.disks",
                "a.reconfigured",
                "b.reconfigured",
                "c.reconfigured"
            ]
        );
        let (broken, log) = caps([&[], &["reconfigured"], &[]]);
        let e = broken.reconfigured(&vm, &to).unwrap_err();
        assert!(e.render().contains("changing the VM's b"), "{}", e.render());
        assert_eq!(taken(&log), ["a.reconfigured", "b.reconfigured"]);
    }

    /// The work disk refuses to shrink before asking the executor (a
    /// privileged side that fails every call proves it was not asked).
    #[test]
    fn the_work_disk_refuses_to_shrink_without_asking_the_executor() {
        #[derive(Debug)]
        struct Unreachable;
        impl PrivilegedOps for Unreachable {
            fn call_with_fds(
                &self,
                op: banger_proto::privops::PrivOp,
            ) -> Result<
                (
                    banger_proto::privops::PrivOutcome,
                    Vec<std::os::fd::OwnedFd>,
                ),
                RpcError,
            > {
                panic!("asked the executor: {}", op.name())
            }
            fn channel(&self) -> crate::privileged::Channel {
                crate::privileged::Channel::InProcess
            }
        }
        let disk = WorkDisk(Arc::new(Unreachable));
        let vm = vm();
        let mut disks = Disks::default();
        disk.disks(&vm, &mut disks);
        assert_eq!(disks.work_disk_bytes, Some(1 << 30));
        let smaller = VmConfigUpdate {
            vcpus: 1,
            memory_mib: 512,
            disk_bytes: 1 << 29,
            nat: false,
        };
        let e = disk.reconfigured(&vm, &smaller).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.render().contains("disks only grow"), "{}", e.render());
        // Unchanged: nothing to ask either.
        let same = VmConfigUpdate {
            disk_bytes: 1 << 30,
            ..smaller
        };
        disk.reconfigured(&vm, &same).unwrap();
    }

    #[test]
    fn hooks_run_in_order_and_a_failed_start_is_undone() {
        let vm = vm();
        let (all, log) = caps([&[], &[], &[]]);
        all.reserved(&vm, Ipv4Addr::new(10, 0, 0, 2));
        let launch = all.starting(&vm).unwrap();
        assert_eq!(launch.tap.as_deref(), Some("tap-of-a"));
        all.stopped(&vm).unwrap();
        assert!(all.removed(&vm).is_empty());
        assert_eq!(
            taken(&log),
            [
                "a.reserved",
                "b.reserved",
                "c.reserved",
                "a.starting",
                "b.starting",
                "c.starting",
                "c.stopped",
                "b.stopped",
                "a.stopped",
                "c.removed",
                "b.removed",
                "a.removed",
            ]
        );

        // b fails to start: a is stopped again, c never starts.
        let (broken, log) = caps([&[], &["starting"], &[]]);
        let e = broken.starting(&vm).unwrap_err();
        assert!(e.render().contains("starting the VM's b"), "{}", e.render());
        assert_eq!(taken(&log), ["a.starting", "b.starting", "a.stopped"]);

        // A failing stop or remove does not keep the others from running.
        let (broken, log) = caps([&["stopped", "removed"], &[], &["stopped"]]);
        let e = broken.stopped(&vm).unwrap_err();
        assert!(e.render().contains("stopping the VM's c"), "{}", e.render());
        let failed: Vec<&str> = broken.removed(&vm).iter().map(|(n, _)| *n).collect();
        assert_eq!(failed, ["a"]);
        assert_eq!(
            taken(&log),
            [
                "c.stopped",
                "b.stopped",
                "a.stopped",
                "c.removed",
                "b.removed",
                "a.removed"
            ]
        );
    }
}
