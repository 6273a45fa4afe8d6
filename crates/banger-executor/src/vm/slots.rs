//! Per-VM jail uids (issue #13 finding 11, docs/jail.md): slot 0 of the
//! install's range (`uid_base`) runs the disk tools; a launched QEMU gets
//! the lowest slot k ≥ 1 no journaled running VMM holds and no launch in
//! flight has reserved, and runs as uid = gid = `uid_base + k`. The slot
//! is the journal's (`VmmEntry::uid`) from the launch until the entry
//! goes.

use std::collections::BTreeSet;
use std::sync::Mutex;

use banger_proto::install::InstallJail;

use super::VmHost;
use super::error::{VmOpError, journal_err};

/// The lowest VM slot uid of `jail` not in `taken`.
pub(super) fn free_slot(jail: &InstallJail, taken: &BTreeSet<u32>) -> Result<u32, VmOpError> {
    let slots = jail.count.saturating_sub(1);
    (1..jail.count)
        .map(|k| jail.uid_base + k)
        .find(|uid| !taken.contains(uid))
        .ok_or(VmOpError::NoJailSlot {
            base: jail.uid_base,
            count: jail.count,
            running: taken.len(),
            slots,
        })
}

/// Whether `uid` is a VM slot (not slot 0) of `jail`.
pub(super) fn is_vm_slot(jail: &InstallJail, uid: u32) -> bool {
    uid > jail.uid_base && u64::from(uid) < u64::from(jail.uid_base) + u64::from(jail.count)
}

/// A slot reserved for a launch in flight; released when dropped (by then
/// the journal holds it, or the launch failed).
pub(super) struct Slot<'a> {
    reserved: &'a Mutex<BTreeSet<u32>>,
    pub uid: u32,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.uid);
    }
}

impl VmHost {
    /// Reserve the lowest slot neither journaled nor reserved.
    pub(super) fn reserve_slot(&self) -> Result<Slot<'_>, VmOpError> {
        let mut reserved = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken = reserved.clone();
        {
            let txn = self.journal.open().map_err(journal_err)?;
            taken.extend(txn.state.vmms.iter().filter_map(|e| e.uid));
        }
        let uid = free_slot(&self.jail, &taken)?;
        reserved.insert(uid);
        Ok(Slot {
            reserved: &self.slots,
            uid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jail(count: u32) -> InstallJail {
        InstallJail {
            uid_base: 2_000_000,
            count,
        }
    }

    #[test]
    fn the_lowest_slot_not_taken_is_given_and_slot_0_never() {
        let j = jail(4);
        let mut taken = BTreeSet::new();
        assert_eq!(free_slot(&j, &taken).unwrap(), 2_000_001);
        taken.insert(2_000_001);
        taken.insert(2_000_003);
        assert_eq!(free_slot(&j, &taken).unwrap(), 2_000_002);
        // A slot freed (its entry gone) is given again, lowest first.
        taken.remove(&2_000_001);
        taken.insert(2_000_002);
        assert_eq!(free_slot(&j, &taken).unwrap(), 2_000_001);
    }

    #[test]
    fn a_full_range_refuses_the_launch_naming_it() {
        let j = jail(3);
        let taken: BTreeSet<u32> = [2_000_001, 2_000_002].into();
        let e = free_slot(&j, &taken).unwrap_err();
        assert!(
            e.to_string()
                .contains("jail range 2000000:3 has 2 VMMs running in its 2 VM slots"),
            "{e}"
        );
        // A range of one id has no VM slot at all.
        let e = free_slot(&jail(1), &BTreeSet::new()).unwrap_err();
        assert!(e.to_string().contains("2000000:1"), "{e}");
    }

    #[test]
    fn only_slots_past_0_and_inside_the_range_are_vm_slots() {
        let j = jail(4);
        assert!(!is_vm_slot(&j, 2_000_000));
        assert!(is_vm_slot(&j, 2_000_001));
        assert!(is_vm_slot(&j, 2_000_003));
        assert!(!is_vm_slot(&j, 2_000_004));
        assert!(!is_vm_slot(&j, 1000));
    }
}
