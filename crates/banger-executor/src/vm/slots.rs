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

/// The lowest VM slot uid of `jail` neither `taken` (a journaled VMM's,
/// or reserved by a launch in flight) nor `passed` (over, its uid owning
/// a held tap).
pub(super) fn free_slot(
    jail: &InstallJail,
    taken: &BTreeSet<u32>,
    passed: &BTreeSet<u32>,
) -> Result<u32, VmOpError> {
    let slots = jail.count.saturating_sub(1);
    (1..jail.count)
        .map(|k| jail.uid_base + k)
        .find(|uid| !taken.contains(uid) && !passed.contains(uid))
        .ok_or(VmOpError::NoJailSlot {
            base: jail.uid_base,
            count: jail.count,
            running: taken.difference(passed).count(),
            passed: passed.len(),
            slots,
        })
}

/// A slot reserved for a launch in flight; released when dropped (by then
/// the journal holds it, or the launch failed).
pub(super) struct Slot<'a> {
    reserved: &'a Mutex<BTreeSet<u32>>,
    uid: u32,
}

impl Slot<'_> {
    /// The slot's uid (= its gid).
    pub(super) fn uid(&self) -> u32 {
        self.uid
    }
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
    /// Reserve the lowest slot neither journaled nor reserved. Every
    /// journaled tap its uid owns goes back to root first (`taps`): one
    /// that a process holds is deleted unless a live journaled VMM (or a
    /// launch in flight) names it, and then the slot is passed over, so a
    /// VMM that sets its tap's owner to a free slot's uid blocks that slot
    /// only while it lives (hostile reads of the tap hand-over, finding 3
    /// and the third read's F3).
    pub(super) fn reserve_slot(&self) -> Result<Slot<'_>, VmOpError> {
        let mut held = std::collections::BTreeSet::new();
        loop {
            let mut reserved = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let mut taken = reserved.clone();
            {
                let txn = self.journal.open().map_err(journal_err)?;
                taken.extend(txn.state.vmms.iter().filter_map(|e| e.uid));
            }
            let uid = free_slot(&self.jail, &taken, &held)?;
            reserved.insert(uid);
            drop(reserved);
            let slot = Slot {
                reserved: &self.slots,
                uid,
            };
            match self.give_back_slot_taps(uid)? {
                None => return Ok(slot),
                Some(tap) => {
                    tracing::warn!(slot = uid, tap = %tap, "a tap of the slot's uid a live VMM holds: slot passed over");
                    held.insert(uid);
                }
            }
        }
    }

    /// Whether `uid` is a VM slot's (slot k ≥ 1 of the install's range).
    pub(crate) fn is_vm_slot(&self, uid: u32) -> bool {
        uid > self.jail.uid_base
            && u64::from(uid) < u64::from(self.jail.uid_base) + u64::from(self.jail.count)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::vm) fn jail(count: u32) -> InstallJail {
        InstallJail {
            uid_base: 2_000_000,
            count,
        }
    }

    #[test]
    fn the_lowest_slot_not_taken_is_given_and_slot_0_never() {
        let j = jail(4);
        let mut taken = BTreeSet::new();
        assert_eq!(free_slot(&j, &taken, &BTreeSet::new()).unwrap(), 2_000_001);
        taken.insert(2_000_001);
        taken.insert(2_000_003);
        assert_eq!(free_slot(&j, &taken, &BTreeSet::new()).unwrap(), 2_000_002);
        // A slot freed (its entry gone) is given again, lowest first.
        taken.remove(&2_000_001);
        taken.insert(2_000_002);
        assert_eq!(free_slot(&j, &taken, &BTreeSet::new()).unwrap(), 2_000_001);
    }

    #[test]
    fn a_full_range_refuses_the_launch_naming_it() {
        let j = jail(3);
        let taken: BTreeSet<u32> = [2_000_001, 2_000_002].into();
        let e = free_slot(&j, &taken, &BTreeSet::new()).unwrap_err();
        assert!(
            e.to_string()
                .contains("jail range 2000000:3 has 2 VMMs running or launching in its 2 VM slots"),
            "{e}"
        );
        // A slot passed over (its uid owns a held tap) is not counted as
        // a VMM's.
        let passed: BTreeSet<u32> = [2_000_002].into();
        let taken: BTreeSet<u32> = [2_000_001].into();
        let e = free_slot(&j, &taken, &passed).unwrap_err();
        assert!(
            e.to_string().contains(
                "has 1 VMMs running or launching and 1 slots passed over (a held tap of its uid) \
                 in its 2 VM slots"
            ),
            "{e}"
        );
        // A range of one id has no VM slot at all.
        let e = free_slot(&jail(1), &BTreeSet::new(), &BTreeSet::new()).unwrap_err();
        assert!(e.to_string().contains("2000000:1"), "{e}");
    }

    /// A host over a fresh state dir and journal, with `jail`.
    pub(in crate::vm) fn host(dir: &std::path::Path, jail: InstallJail) -> VmHost {
        std::fs::create_dir_all(dir.join("state/vms")).unwrap();
        VmHost::new(
            super::super::VmHostConfig {
                state_dir: dir.join("state"),
                owner: (
                    rustix::process::geteuid().as_raw(),
                    rustix::process::getegid().as_raw(),
                ),
                qemu_binary: None,
                firecracker_binary: None,
                jail,
            },
            std::sync::Arc::new(crate::journal::JournalFile::new(dir.join("journal.json"))),
            std::sync::Arc::new(banger_host::probe::fake::FakeHost::healthy()),
            std::sync::Arc::new(banger_host::net::fake::FakeNet::new()),
        )
    }

    fn entry(vm_id: &str, pid: u32, uid: Option<u32>) -> crate::journal::VmmEntry {
        crate::journal::VmmEntry {
            vm_id: vm_id.into(),
            pid,
            start_time: banger_host::jail::start_time(pid).unwrap(),
            vmm: banger_proto::vmops::VmmKind::Qemu,
            uid,
            cgroup: None,
            tap: None,
            console_offset: None,
        }
    }

    /// A stand-in VMM (`sleep`) running as jail uid `slot`, journaled as
    /// VM `id`'s.
    pub(in crate::vm) fn journaled_stand_in(
        h: &VmHost,
        slot: u32,
        id: &str,
    ) -> std::process::Child {
        journaled_vmm(h, slot, id, "sleep".as_ref(), &["60"])
    }

    /// `program` with `args` running as jail uid `slot`, journaled as VM
    /// `id`'s.
    fn journaled_vmm(
        h: &VmHost,
        slot: u32,
        id: &str,
        program: &std::path::Path,
        args: &[&str],
    ) -> std::process::Child {
        use std::os::unix::process::CommandExt as _;
        #[allow(clippy::disallowed_methods, reason = "a stand-in VMM of a slot uid")]
        let vmm = std::process::Command::new(program)
            .args(args)
            .uid(slot)
            .gid(slot)
            .spawn()
            .unwrap();
        let mut txn = h.journal.open().unwrap();
        txn.state.vmms.push(entry(id, vmm.id(), Some(slot)));
        txn.save().unwrap();
        vmm
    }

    /// Whether VM `id` is journaled, and the slot a launch would get now.
    fn entry_and_next_slot(h: &VmHost, id: &str) -> (bool, Result<u32, VmOpError>) {
        let journal = h.journal.open().unwrap();
        let journaled = journal.state.vmms.iter().any(|e| e.vm_id == id);
        drop(journal);
        (journaled, h.reserve_slot().map(|s| s.uid()))
    }

    /// Slots held by journaled VMMs and by launches in flight are not
    /// given; a reservation dropped (its launch journaled or failed) is.
    #[test]
    fn journaled_and_reserved_slots_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path(), jail(4));
        {
            let mut txn = h.journal.open().unwrap();
            txn.state
                .vmms
                .push(entry("a", std::process::id(), Some(2_000_001)));
            txn.save().unwrap();
        }
        let first = h.reserve_slot().unwrap();
        assert_eq!(first.uid(), 2_000_002);
        let second = h.reserve_slot().unwrap();
        assert_eq!(second.uid(), 2_000_003);
        assert!(matches!(
            h.reserve_slot().map(|s| s.uid()),
            Err(VmOpError::NoJailSlot { .. })
        ));
        drop(first);
        assert_eq!(h.reserve_slot().unwrap().uid(), 2_000_002);
    }

    /// Re-adoption also requires the journaled jail uid: a live process
    /// with the journaled pid and start time but another uid (here this
    /// test process, root) is not the VMM, and its entry goes.
    #[test]
    fn a_process_without_the_journaled_jail_uid_is_not_re_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path(), jail(4));
        let me = std::process::id();
        let (wrong, right) = ("0".repeat(32), "1".repeat(32));
        {
            let mut txn = h.journal.open().unwrap();
            txn.state.vmms.push(entry(&wrong, me, Some(2_000_001)));
            let own = rustix::process::geteuid().as_raw();
            txn.state.vmms.push(entry(&right, me, Some(own)));
            txn.save().unwrap();
        }
        let st = h.status_inner(&wrong).unwrap().unwrap();
        assert!(!st.running, "adopted a process of another uid: {st:?}");
        assert!(
            h.journal
                .open()
                .unwrap()
                .state
                .vmms
                .iter()
                .all(|e| e.vm_id != wrong),
            "its entry stays"
        );
        let st = h.status_inner(&right).unwrap().unwrap();
        assert!(st.running && st.adopted, "{st:?}");
        // Not ours to signal: forget it without a stop.
        h.procs.lock().unwrap().clear();
    }

    /// Hostile review of the VMM-jail fixes, finding 2: stopping an
    /// adopted VMM sent `SIGKILL` after the grace period and reported it
    /// stopped whether or not its pidfd said it exited, so its journal
    /// entry went and its jail uid was given again while it might still
    /// run. A held process of the slot uid (a script whose shell waits in
    /// the kernel for its next line: it outlives `SIGKILL` while held)
    /// stands for it: the stop fails, saying so, and the entry and the
    /// slot stay.
    #[test]
    fn an_adopted_vmm_that_outlives_its_kill_keeps_its_entry_and_slot() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path(), jail(4));
        let (slot, id) = (2_000_001, "2".repeat(32));
        let held = banger_vmm::testing::Held::new(b"#!/bin/sh\n");
        let mut vmm = journaled_vmm(&h, slot, &id, &held.path(), &[]);
        let pid = held.reader(std::time::Duration::from_secs(5));
        assert_eq!(pid, vmm.id(), "another process is held");
        held.assert_outlives_kill(pid);
        let stopped = h.stop(&id, std::time::Duration::from_millis(100), false);
        let (journaled, next) = entry_and_next_slot(&h, &id);
        drop(held);
        let _ = vmm.kill();
        let _ = vmm.wait();
        eprintln!("stop: {stopped:?}");
        assert!(
            stopped.is_err(),
            "a VMM alive after SIGKILL reported stopped: {stopped:?}"
        );
        assert!(journaled, "its journal entry went");
        assert_ne!(next.unwrap(), slot, "its jail uid was given again");
    }

    /// Hostile read of the VMM table, finding 1: an error reading a
    /// journaled VMM during re-adoption (no descriptor left for
    /// `/proc/<pid>/stat`, `status` or the pidfd) counted as "gone", so
    /// the entry of a live VMM went and its jail uid was given again. A
    /// thread sharing this one's descriptor table keeps taking every free
    /// descriptor while status re-reads the journal: an error is fine, a
    /// dropped entry is not.
    #[test]
    fn an_error_reading_a_journaled_vmm_keeps_its_entry() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path(), jail(4));
        let (slot, id) = (2_000_001, "3".repeat(32));
        let mut vmm = journaled_stand_in(&h, slot, &id);
        let (dropped, errors) = std::thread::scope(|s| {
            s.spawn(|| {
                // A descriptor table of this thread's own (and of the
                // thread it starts): the test harness's threads keep theirs.
                // SAFETY: unshare(CLONE_FILES) takes no pointers.
                assert_eq!(unsafe { libc::unshare(libc::CLONE_FILES) }, 0);
                let stop = AtomicBool::new(false);
                std::thread::scope(|s2| {
                    s2.spawn(|| {
                        let base = std::fs::File::open("/dev/null").unwrap();
                        while !stop.load(Ordering::Relaxed) {
                            let mut held = Vec::new();
                            while let Ok(fd) = base.try_clone() {
                                held.push(fd);
                            }
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            drop(held);
                            std::thread::yield_now();
                        }
                    });
                    let (mut dropped, mut errors) = (None, 0);
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                    for t in 0.. {
                        if std::time::Instant::now() > deadline {
                            break;
                        }
                        h.procs.lock().unwrap().clear();
                        match h.status_inner(&id) {
                            Ok(Some(st)) if !st.running => {
                                dropped = Some(t);
                                break;
                            }
                            Err(_) => errors += 1,
                            Ok(_) => {}
                        }
                    }
                    stop.store(true, Ordering::Relaxed);
                    // Its pidfd is of this descriptor table: closed here.
                    h.procs.lock().unwrap().clear();
                    (dropped, errors)
                })
            })
            .join()
            .unwrap()
        });
        let (journaled, next) = entry_and_next_slot(&h, &id);
        let _ = vmm.kill();
        let _ = vmm.wait();
        assert!(
            dropped.is_none() && journaled,
            "entry dropped while the VMM lives (try {dropped:?}); next slot given: {next:?}"
        );
        assert_ne!(next.unwrap(), slot, "its jail uid was given again");
        assert!(errors > 0, "no status ran out of descriptors");
    }

    /// Hostile read of the VMM table, finding 2: forgetting a VMM removed
    /// every entry of its VM, so a status that had read an old entry (its
    /// process gone) and a launch journaling a new one meanwhile left the
    /// new VMM unjournaled. Each round journals a gone VMM, then races a
    /// status against an instant "launch" (the launch's journal write, of
    /// this live process): the launch's entry must stay.
    #[test]
    fn forgetting_an_old_vmm_keeps_a_newer_launchs_entry() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path(), jail(4));
        let id = "4".repeat(32);
        #[allow(clippy::disallowed_methods, reason = "a pid that has exited")]
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        let me = std::process::id();
        let newer = entry(&id, me, None);
        let mut dropped = None;
        for round in 0..2000 {
            {
                let mut txn = h.journal.open().unwrap();
                txn.state.vmms.clear();
                txn.state.vmms.push(crate::journal::VmmEntry {
                    pid: gone_pid,
                    start_time: 1,
                    ..newer.clone()
                });
                txn.save().unwrap();
            }
            h.procs.lock().unwrap().clear();
            let start = std::sync::Barrier::new(2);
            std::thread::scope(|s| {
                s.spawn(|| {
                    start.wait();
                    let _ = h.status_inner(&id);
                });
                start.wait();
                // The launch's journal write (`journal_vmm`).
                let mut txn = h.journal.open().unwrap();
                txn.state.vmms.retain(|e| e.vm_id != id);
                txn.state.vmms.push(newer.clone());
                txn.save().unwrap();
            });
            let journal = h.journal.open().unwrap();
            if !journal.state.vmms.contains(&newer) {
                dropped = Some(round);
                break;
            }
        }
        // An adopted entry of this process: forgotten, never signalled.
        h.procs.lock().unwrap().clear();
        assert_eq!(dropped, None, "newer entry dropped at round {dropped:?}");
    }
}
