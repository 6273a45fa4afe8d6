//! The VM service's in-memory view of each VM's VMM: the last `VmmState`
//! the executor reported for it running, so `vm ls` and `vm show` read a
//! pid without a privileged call per VM per request, and without a file.
//!
//! The executor's journal is the authority for VMM facts; this is only the
//! daemon's latest answer from it, never written to disk. It is filled by
//! every answer the daemon gets — the launch, boot's readiness poll, the
//! watchdog, the startup reconcile (so after a restart it is rebuilt from
//! the journal, through `VmmStatus`, not from files) and `vm stats` — and
//! an entry goes when an answer says the VMM is not running, when the VM is
//! stopped, killed or fails to start, and when it is removed.
//!
//! It lives in VmService, which makes every one of those calls: a table of
//! its own rather than a field of HostNetwork (which holds the other
//! per-VM transient handle, the tap, in `NetState.assigned`), because the
//! network never asks about VMMs.
//!
//! Every writer holds the VM's lock (`vm_locks[id]`), so an answer is never
//! older than a stop or start that ran meanwhile: lifecycle changes hold it
//! throughout, the watchdog `try_lock`s, the startup reconcile runs before
//! the daemon serves, and `vm stats` records only when its `try_lock` got
//! the lock before it asked. The mutex is subsystem-local: last in the lock
//! order, never held across an await.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use banger_proto::vmops::VmmState;

/// VM id → the executor's last answer about its running VMM.
#[derive(Debug, Default)]
pub struct VmmCache(Mutex<HashMap<String, VmmState>>);

impl VmmCache {
    fn table(&self) -> MutexGuard<'_, HashMap<String, VmmState>> {
        // Every write is one map operation: a panic leaves nothing half-done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep an answer from the executor: a running VMM is recorded, one
    /// that is not running removes the VM's entry. The caller holds the
    /// VM's lock.
    pub(super) fn record(&self, s: &VmmState) {
        let mut t = self.table();
        if s.running {
            t.insert(s.vm_id.clone(), s.clone());
        } else {
            t.remove(&s.vm_id);
        }
    }

    /// The VM's VMM is gone (stopped, killed, a failed start) or the VM is.
    /// The caller holds the VM's lock.
    pub(super) fn forget(&self, vm_id: &str) {
        self.table().remove(vm_id);
    }

    /// The pid of the VM's VMM, as the executor last reported it running.
    pub fn pid(&self, vm_id: &str) -> Option<u32> {
        self.table().get(vm_id).and_then(|s| s.pid)
    }

    /// The executor's last answer about the VM's running VMM.
    #[cfg(test)]
    pub(super) fn get(&self, vm_id: &str) -> Option<VmmState> {
        self.table().get(vm_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(vm_id: &str, running: bool, pid: u32) -> VmmState {
        VmmState {
            vm_id: vm_id.into(),
            running,
            pid: Some(pid),
            vmm: Some(banger_proto::vmops::VmmKind::Qemu),
            adopted: false,
            ready: None,
            start_time: Some(777),
            sockets: vec!["run/qmp.sock".into()],
            root_devices: Vec::new(),
        }
    }

    #[test]
    fn a_running_answer_is_kept_and_a_stopped_one_or_a_stop_clears_it() {
        let c = VmmCache::default();
        assert_eq!(c.pid("a"), None);
        c.record(&state("a", true, 42));
        c.record(&state("b", true, 43));
        assert_eq!(c.pid("a"), Some(42));
        assert_eq!(c.get("a"), Some(state("a", true, 42)));
        // A later answer replaces the earlier (a relaunch, a re-adoption).
        c.record(&state("a", true, 44));
        assert_eq!(c.pid("a"), Some(44));
        // The executor says it is gone: so is the entry.
        c.record(&state("a", false, 44));
        assert_eq!(c.get("a"), None);
        // Stopped or removed.
        c.forget("b");
        assert_eq!(c.pid("b"), None);
        c.forget("never");
    }
}
