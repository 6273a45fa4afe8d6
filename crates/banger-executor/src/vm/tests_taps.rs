//! The tap hand-over (`taps`) against the real kernel: a tap made in a
//! fresh network namespace, stand-in VMMs (`sleep`) running as a slot uid
//! and journaled as a launch journals its VMM, and attaches made as that
//! uid and as another.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use banger_host::net::netns::in_fresh_netns;
use banger_host::net::{HostNet, RealNet};
use banger_host::probe::fake::FakeHost;
use banger_proto::install::InstallJail;
use banger_proto::vmops::VmmKind;

use super::error::VmOpError;
use super::{VmHost, VmHostConfig};
use crate::journal::{JournalFile, TapEntry, VmmEntry};

/// A hand-over against a copy of root's descriptor that a forked child
/// holds until its exec.
#[path = "tests_tap_busy.rs"]
mod busy;
/// Device state a holder sets on its tap, and root's take-back of it.
#[path = "tests_tap_state.rs"]
mod state;

const VM: &str = "0123456789abcdef0123456789abcdef";
const TAP: &str = "bangertap0";
const BASE: u32 = 2_000_000;
/// The slot a launch gets first: `BASE + 1`.
const SLOT: u32 = BASE + 1;
/// A uid that is neither root nor the slot's.
const OTHER: u32 = 4242;

/// A host over `dir` (state and journal) with the real network.
fn host(dir: &Path) -> VmHost {
    std::fs::create_dir_all(dir.join("state/vms")).unwrap();
    VmHost::new(
        VmHostConfig {
            state_dir: dir.join("state"),
            owner: (0, 0),
            qemu_binary: None,
            firecracker_binary: None,
            jail: InstallJail {
                uid_base: BASE,
                count: 4,
            },
        },
        Arc::new(JournalFile::new(dir.join("journal.json"))),
        Arc::new(FakeHost::healthy()),
        Arc::new(RealNet::new()),
    )
}

/// Run `f` (as root) in a fresh network namespace holding `TAP`, root's,
/// with its interface index and a temporary directory; the tap is
/// deleted afterwards.
fn with_a_tap(f: impl FnOnce(&RealNet, u32, &Path) + Send) {
    assert!(rustix::process::geteuid().is_root(), "needs root");
    let dir = tempfile::tempdir().unwrap();
    in_fresh_netns(|| {
        let net = RealNet::new();
        net.create_tap(TAP, 0).unwrap();
        let index = net.link(TAP).unwrap().unwrap().index;
        f(&net, index, dir.path());
        // A give-back may have deleted it (a tap held past its VMM), and
        // a test may have made another of the name.
        if let Some(link) = net.link(TAP).unwrap() {
            assert!(net.delete_link_index(link.index).unwrap());
        }
    });
}

/// Journal `TAP` as `EnsureTap` makes it (root's), with `ifindex`.
fn journal_tap(h: &VmHost, ifindex: Option<u32>) {
    let mut txn = h.journal.open().unwrap();
    txn.state.upsert_tap(TapEntry {
        name: TAP.into(),
        bridge: "banger0".into(),
        owner_uid: 0,
        ifindex,
    });
    txn.save().unwrap();
}

/// The tap's tun owner, as the kernel reports it.
fn owner(net: &RealNet) -> Option<u32> {
    net.link(TAP).unwrap().expect("the tap exists").tap_owner
}

/// Attach to the tap as `uid` (on a thread of its own, in this
/// namespace), as a VMM of that uid opens it by name.
fn attach_as(uid: u32) -> std::io::Result<File> {
    attach_as_then(uid, |_| Ok(()))
}

/// [`attach_as`], then `then` on the attached descriptor, still as `uid`.
fn attach_as_then(
    uid: u32,
    then: impl FnOnce(&File) -> std::io::Result<()> + Send,
) -> std::io::Result<File> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain syscalls with integer arguments; only this
            // short-lived thread's credentials change.
            unsafe {
                assert_eq!(libc::syscall(libc::SYS_setresgid, uid, uid, uid), 0);
                assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
            }
            let tun = attach()?;
            then(&tun)?;
            Ok(tun)
        })
        .join()
        .unwrap()
    })
}

/// Attach to the tap with the flags banger's taps have (a transient
/// `EBUSY` waited out: `banger_host::net::retry_while_busy`).
fn attach() -> std::io::Result<File> {
    banger_host::net::netns::try_attach_tap(TAP)
}

/// A launch as `VmHost::launch` does it for a VMM that opens its tap by
/// name: the tap handed to `SLOT`, a stand-in VMM of that uid, journaled
/// with the tap. Returns the stand-in.
fn launch(h: &VmHost) -> std::process::Child {
    let handed = h
        .hand_tap(TAP, (SLOT, SLOT))
        .expect("handing the tap for a launch");
    journaled_stand_in(h, handed, SLOT, VmmKind::Firecracker)
}

/// A stand-in VMM (`sleep`) of `slot`, journaled as `VM`'s `kind` with
/// the tap `handed` for it.
fn journaled_stand_in(
    h: &VmHost,
    mut handed: super::taps::HandedTap<'_>,
    slot: u32,
    kind: VmmKind,
) -> std::process::Child {
    use std::os::unix::process::CommandExt as _;
    #[allow(clippy::disallowed_methods, reason = "a stand-in VMM of a slot uid")]
    let vmm = std::process::Command::new("sleep")
        .arg("60")
        .uid(slot)
        .gid(slot)
        .spawn()
        .unwrap();
    let mut txn = h.journal.open().unwrap();
    txn.state.vmms.push(VmmEntry {
        vm_id: VM.into(),
        pid: vmm.id(),
        start_time: banger_host::jail::start_time(vmm.id()).unwrap(),
        vmm: kind,
        uid: Some(slot),
        cgroup: None,
        tap: Some(handed.keep()),
        console_offset: None,
    });
    txn.save().unwrap();
    vmm
}

/// A journal entry of VM `vm_id`'s Firecracker of `SLOT` with `TAP`,
/// whose process has exited.
fn gone_vmm(vm_id: &str) -> VmmEntry {
    #[allow(clippy::disallowed_methods, reason = "a pid that has exited")]
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    VmmEntry {
        vm_id: vm_id.into(),
        pid: gone.id(),
        start_time: 1,
        vmm: VmmKind::Firecracker,
        uid: Some(SLOT),
        cgroup: None,
        tap: Some(TAP.into()),
        console_offset: None,
    }
}

/// Journal `entry` beside any other.
fn journal_vmm(h: &VmHost, entry: VmmEntry) {
    let mut txn = h.journal.open().unwrap();
    txn.state.vmms.push(entry);
    txn.save().unwrap();
}

/// Firecracker jail design, part 2 step 2: an idle tap is root's; for a
/// launch it is the slot's (the slot attaches, no other uid does), and
/// root's again once the VMM is gone — stopped, killed, or gone while no
/// executor ran (the start-up sweep). A tap a process holds keeps its
/// uid while its VMM lives (the sweep leaves it), and is deleted once
/// that VMM is gone.
#[test]
fn a_tap_is_handed_to_a_slot_only_for_its_launch() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        assert_eq!(owner(net), Some(0));
        let idle = attach_as(SLOT);
        assert_eq!(
            idle.as_ref().err().and_then(|e| e.raw_os_error()),
            Some(libc::EPERM),
            "the slot attached to an idle tap: {idle:?}"
        );

        // Launched, then stopped.
        let mut vmm = launch(&h);
        assert_eq!(owner(net), Some(SLOT));
        let other = attach_as(OTHER);
        assert_eq!(
            other.as_ref().err().and_then(|e| e.raw_os_error()),
            Some(libc::EPERM),
            "another uid attached to the slot's tap: {other:?}"
        );
        drop(attach_as(SLOT).expect("the slot attaches to its tap"));
        let stopped = h.stop(VM, Duration::from_millis(100), false).unwrap();
        assert!(stopped.was_running, "{stopped:?}");
        let _ = vmm.wait();
        assert_eq!(owner(net), Some(0), "after a stop");

        // Launched, then killed.
        let mut vmm = launch(&h);
        assert_eq!(owner(net), Some(SLOT));
        h.stop(VM, Duration::ZERO, true).unwrap();
        let _ = vmm.wait();
        assert_eq!(owner(net), Some(0), "after a kill");

        // Launched; the executor goes (a crash), so does the VMM; the
        // next executor's start gives the tap back.
        let mut vmm = launch(&h);
        drop(h);
        vmm.kill().unwrap();
        let _ = vmm.wait();
        assert_eq!(owner(net), Some(SLOT));
        let h = host(dir);
        h.give_back_idle_taps();
        assert_eq!(owner(net), Some(0), "after the start-up sweep");
        // Its entry goes when a status finds it gone (its slot with it).
        assert!(!h.status(VM).unwrap().running);
        assert_eq!(owner(net), Some(0));

        // Held while its VMM lives: the sweep leaves it. Held once that
        // VMM is gone (a process of the slot's outlived it): the sweep
        // deletes it, detaching the holder.
        let mut vmm = launch(&h);
        let held = attach_as(SLOT).unwrap();
        h.give_back_idle_taps();
        assert_eq!(owner(net), Some(SLOT), "a live VMM's held tap was taken");
        vmm.kill().unwrap();
        let _ = vmm.wait();
        h.give_back_idle_taps();
        let after = net.link(TAP).unwrap().map(|l| l.index);
        drop(held);
        assert_eq!(after, None, "a tap held past its VMM was left");
    });
}

/// A launch's hand-over is checked against the journal: a tap that is
/// not journaled, or journaled without its index, is refused untouched,
/// and one that took a journaled name (another index) too.
#[test]
fn a_tap_is_handed_only_with_its_journaled_index() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        let refused = h.hand_tap(TAP, (SLOT, SLOT)).map(|mut t| t.keep());
        assert!(
            matches!(refused, Err(VmOpError::Invalid { .. })),
            "{refused:?}"
        );
        let journal = |ifindex| journal_tap(&h, ifindex);
        journal(None);
        let refused = h.hand_tap(TAP, (SLOT, SLOT)).map(|mut t| t.keep());
        assert!(
            matches!(refused, Err(VmOpError::Invalid { .. })),
            "{refused:?}"
        );
        journal(Some(index + 100));
        let refused = h.hand_tap(TAP, (SLOT, SLOT)).map(|mut t| t.keep());
        assert!(
            matches!(refused, Err(VmOpError::HandTap { .. })),
            "{refused:?}"
        );
        assert_eq!(owner(net), Some(0));
        // A launch that fails gives the tap back as it unwinds.
        journal(Some(index));
        drop(h.hand_tap(TAP, (SLOT, SLOT)).unwrap());
        assert_eq!(owner(net), Some(0), "a dropped hand-over kept its uid");
    });
}

/// Self-review of the give back: forgetting a VMM gave its tap back to
/// root whatever happened meanwhile, so a stop (or a status) finishing
/// while a launch of the same tap had handed it to its VMM's uid undid
/// that hand-over, and the new VMM could not attach. A gone VMM's entry
/// and a launch in flight with the same tap: the tap stays the
/// launch's; the launch failing then gives it back. A tap another
/// journaled VMM holds stays that VMM's too (`EBUSY`).
#[test]
fn a_give_back_never_undoes_a_launch_in_flight_or_another_vmms_tap() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        let gone = gone_vmm(VM);
        journal_vmm(&h, gone.clone());
        let in_flight = h.hand_tap(TAP, (SLOT, SLOT)).unwrap();
        assert!(!h.status(VM).unwrap().running);
        assert_eq!(owner(net), Some(SLOT), "a launch in flight lost its tap");
        drop(in_flight);
        assert_eq!(owner(net), Some(0), "a failed launch kept its tap's uid");

        let other = "f".repeat(32);
        let me = std::process::id();
        journal_vmm(&h, gone);
        journal_vmm(
            &h,
            VmmEntry {
                vm_id: other,
                pid: me,
                start_time: banger_host::jail::start_time(me).unwrap(),
                // This process, live (an unjailed VMM's entry: its uids
                // are root's, not a slot's).
                uid: None,
                ..gone_vmm(VM)
            },
        );
        h.hand_tap(TAP, (SLOT, SLOT)).unwrap().keep();
        let held = attach_as(SLOT).expect("the other VMM attaches");
        assert!(!h.status(VM).unwrap().running);
        assert_eq!(owner(net), Some(SLOT), "another VMM's tap was taken");
        drop(held);
        let mut txn = h.journal.open().unwrap();
        txn.state.vmms.clear();
        txn.save().unwrap();
    });
}

/// `ioctl(tun, request, value)` for the tun ioctls that take a value
/// (`TUNSETOWNER`, `TUNSETGROUP`), as a holder of the tap's descriptor
/// may call them.
fn tun_set(tun: &File, request: libc::c_ulong, value: u32) -> std::io::Result<()> {
    // SAFETY: both requests take their argument by value; no memory is
    // passed.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), request, libc::c_ulong::from(value)) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Hostile read of the tap hand-over, finding 2: a VMM can set the group
/// of the tap it holds (`TUNSETGROUP`; a group is never cleared, and an
/// attach needs both owner and group), and the give-back and the next
/// hand-over set only the owner, so the next launch's VMM could not
/// attach (`EPERM`). Both now set the group too (root's, the slot's).
#[test]
fn a_tap_whose_group_a_vmm_set_is_handed_whole_to_the_next_launch() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        let mut vmm = launch(&h);
        let held = attach_as(SLOT).expect("the slot attaches to its tap");
        tun_set(&held, libc::TUNSETGROUP, OTHER).expect("TUNSETGROUP");
        drop(held);
        h.stop(VM, Duration::ZERO, true).unwrap();
        let _ = vmm.wait();
        assert_eq!(owner(net), Some(0), "after a kill");
        let mut vmm = launch(&h);
        let attached = attach_as(SLOT);
        h.stop(VM, Duration::ZERO, true).unwrap();
        let _ = vmm.wait();
        assert!(
            attached.is_ok(),
            "the next launch's VMM could not attach to its tap: {attached:?}"
        );
    });
}

/// Hostile read of the tap hand-over, finding 3: a tap whose tun owner is
/// the lowest free slot's uid and that a process holds made every
/// reservation fail (`EBUSY` giving it back), so a holder (here a live
/// journaled QEMU of the next slot, root's descriptor set to that uid)
/// blocked every launch. That slot is now passed over while a live VMM
/// holds the tap; once that VMM is gone, it is given again and the tap
/// goes back to root.
#[test]
fn a_held_tap_of_the_lowest_slots_uid_passes_that_slot_over() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        let (mut vmm, held) = launch_qemu(&h, SLOT + 1);
        tun_set(&held, libc::TUNSETOWNER, SLOT).expect("TUNSETOWNER");
        let next = h.reserve_slot().map(|s| s.uid());
        assert_eq!(owner(net), Some(SLOT));
        drop(held);
        vmm.kill().unwrap();
        let _ = vmm.wait();
        assert!(
            matches!(next, Ok(uid) if uid == SLOT + 2),
            "a held tap of slot {SLOT} blocked the reservation: {next:?}"
        );
        assert_eq!(h.reserve_slot().unwrap().uid(), SLOT);
        assert_eq!(owner(net), Some(0), "after its slot was reserved");
    });
}

/// Hostile read of the tap hand-over, finding 4: a journaled VMM naming
/// the tap, alive or not, kept any other VMM's give-back from happening,
/// so a gone VMM's stale entry (another VM's, same tap) left the tap with
/// the uid of the next VMM on it once that one was stopped.
#[test]
fn a_gone_vmms_stale_entry_keeps_no_tap_from_going_back() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        journal_vmm(&h, gone_vmm(&"e".repeat(32)));
        let mut vmm = launch(&h);
        h.stop(VM, Duration::ZERO, true).unwrap();
        let _ = vmm.wait();
        assert_eq!(owner(net), Some(0), "a stale entry kept the tap handed");
    });
}

/// Hostile read of the tap hand-over, finding 5: two launches in flight
/// handing the same tap; the first failing took it off the in-flight set
/// and gave it back under the second. It stays handed until the last.
#[test]
fn a_failed_launch_leaves_the_tap_of_another_in_flight() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        let first = h.hand_tap(TAP, (SLOT, SLOT)).unwrap();
        let second = h.hand_tap(TAP, (SLOT, SLOT)).unwrap();
        drop(first);
        let kept = owner(net);
        drop(second);
        assert_eq!(kept, Some(SLOT), "the other launch in flight lost its tap");
        assert_eq!(owner(net), Some(0), "the last failed launch kept its uid");
    });
}

/// A process of `uid` holding `tap` (as its stdin) that outlives the VMM
/// it came from, as an escaped VMM leaves it (a child, or a descriptor
/// parked in flight over a socket).
fn holder(tap: &File, uid: u32) -> std::process::Child {
    use std::os::unix::process::CommandExt as _;
    #[allow(clippy::disallowed_methods, reason = "a holder of a slot uid")]
    std::process::Command::new("sleep")
        .arg("60")
        .uid(uid)
        .gid(uid)
        .stdin(tap.try_clone().unwrap())
        .spawn()
        .unwrap()
}

/// Second hostile read of the tap hand-over, finding A: a VMM that set
/// its tap's owner to another uid and left the descriptor to a holder
/// that outlives it got the give-back `EBUSY` (logged, nothing more); the
/// other uid attached once the holder let go. A held tap that no live
/// VMM and no launch in flight names is now deleted by its journaled
/// index (detaching the holder); the next `EnsureTap` makes a new one.
#[test]
fn a_tap_held_past_its_vmm_is_deleted_rather_than_left_to_its_new_owner() {
    with_a_tap(|net, _index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(_index));
        let mut vmm = launch(&h);
        // As the slot: attach, make the tap another uid's.
        let held = attach_as_then(SLOT, |tun| tun_set(tun, libc::TUNSETOWNER, OTHER))
            .expect("the slot attaches to its tap and sets its owner");
        let mut holder = holder(&held, SLOT);
        drop(held);
        h.stop(VM, Duration::ZERO, true).unwrap();
        let _ = vmm.wait();
        let after_stop = net.link(TAP).unwrap().map(|l| l.tap_owner);
        holder.kill().unwrap();
        let _ = holder.wait();
        let attached = attach_as(OTHER);
        assert!(
            matches!(after_stop, None | Some(Some(0))),
            "after the stop the tap is {after_stop:?}"
        );
        assert!(
            matches!(
                attached.as_ref().err().and_then(|e| e.raw_os_error()),
                Some(libc::EPERM | libc::ENODEV)
            ),
            "uid {OTHER} attached to the tap after its VMM was gone: {attached:?}"
        );
        if after_stop.is_none() {
            let txn = h.journal.open().unwrap();
            let entry = txn.state.tap(TAP).expect("the tap stays journaled");
            assert_eq!(entry.ifindex, None, "a deleted tap's index stays journaled");
            assert_eq!(entry.owner_uid, 0);
        }
    });
}

/// `SIOCSIFHWADDR` on an attached tap descriptor (no capability needed).
fn set_mac(tun: &File, mac: [u8; 6]) -> std::io::Result<()> {
    let mut req = [0u8; 40];
    req[16..18].copy_from_slice(&libc::ARPHRD_ETHER.to_ne_bytes());
    req[18..24].copy_from_slice(&mac);
    ifreq(tun, libc::SIOCSIFHWADDR, &mut req)
}

/// `request` on `tun` with the 40-byte `struct ifreq` `req`.
fn ifreq(tun: &File, request: libc::c_ulong, req: &mut [u8; 40]) -> std::io::Result<()> {
    // SAFETY: each request used here reads or writes one 40-byte
    // `struct ifreq`, `req`, which outlives the call.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), request, req.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Second hostile read of the tap hand-over, finding D: the give-back
/// set owner and group back, not the MAC a VMM gave its tap through its
/// descriptor (another guest's: the bridge keeps a local entry for it).
/// Root's give-back sets the idle tap MAC of its journaled index.
#[test]
fn a_tap_given_back_loses_the_mac_its_vmm_set() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        let mut vmm = launch(&h);
        let guests = [0x02, 0xba, 10, 0, 0, 5];
        let held = attach_as_then(SLOT, |tun| set_mac(tun, guests))
            .expect("the slot attaches to its tap and sets its MAC");
        assert_eq!(net.link_mac(TAP).unwrap(), Some(guests));
        drop(held);
        h.stop(VM, Duration::ZERO, true).unwrap();
        let _ = vmm.wait();
        assert_eq!(owner(net), Some(0));
        let mac = net.link_mac(TAP).unwrap();
        assert_ne!(
            mac,
            Some(guests),
            "the given-back tap kept the MAC its VMM set"
        );
    });
}

/// Second hostile read of the tap hand-over, finding B: a launch
/// journaled its VMM, then counted its tap out of flight; a status in
/// between that found the VMM gone skipped the give-back (the tap was
/// still in flight), and nothing gave it back after. The count now drops
/// in the journal's transaction that journals the VMM.
#[test]
fn a_status_right_after_a_launch_is_journaled_gives_its_tap_back() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        let mut handed = h.hand_tap(TAP, (SLOT, SLOT)).unwrap();
        h.journal_vmm(gone_vmm(VM), &mut handed).unwrap();
        assert!(!h.status(VM).unwrap().running);
        drop(handed);
        assert_eq!(owner(net), Some(0), "a gone VMM's tap kept its uid");
    });
}

/// Second hostile read of the tap hand-over, finding C: QEMU's tap was
/// handed to root, the journal let go, and root attached by name: a
/// `DeleteTap` between made that attach create a new tap, not
/// persistent and with no owner. Root's descriptor is now the one its
/// hand-over attached, to the journaled index.
#[test]
fn qemus_tap_descriptor_is_never_a_new_tap() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        let (handed, tap) = h.take_tap_for_qemu(TAP).unwrap();
        assert_eq!(owner(net), Some(0));
        // A `DeleteTap` now (the journal is not locked): root's
        // descriptor was attached to the journaled tap, which goes.
        assert!(net.delete_link_index(index).unwrap());
        let stray = net.link(TAP).unwrap();
        drop(tap);
        drop(handed);
        assert!(
            stray.is_none(),
            "QEMU's tap descriptor made a new tap: {stray:?}"
        );
        // A tap that took the name (another index) is refused, and no
        // other is made.
        net.create_tap(TAP, 0).unwrap();
        let other = net.link(TAP).unwrap().unwrap().index;
        let refused = h.take_tap_for_qemu(TAP).map(|(_, fd)| fd);
        assert!(
            matches!(refused, Err(VmOpError::HandTap { .. })),
            "{refused:?}"
        );
        assert_eq!(net.link(TAP).unwrap().map(|l| l.index), Some(other));
        // Journaled with that index, it is handed: the descriptor is
        // attached to it (`TUNGETIFF` names it).
        journal_tap(&h, Some(other));
        let (handed, tap) = h.take_tap_for_qemu(TAP).unwrap();
        let mut req = [0u8; 40];
        // SAFETY: TUNGETIFF writes one 40-byte `struct ifreq`, `req`.
        let rc = unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNGETIFF, req.as_mut_ptr()) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        assert_eq!(&req[..TAP.len() + 1], format!("{TAP}\0").as_bytes());
        drop(tap);
        drop(handed);
    });
}

/// A launch as `VmHost::launch` does it for QEMU: root's descriptor
/// attached to the tap (`take_tap_for_qemu`), a stand-in VMM of `SLOT`
/// journaled with the tap. Returns the stand-in and root's descriptor
/// (which a real QEMU inherits).
fn launch_qemu(h: &VmHost, slot: u32) -> (std::process::Child, File) {
    let (handed, tap) = h.take_tap_for_qemu(TAP).expect("taking the tap for QEMU");
    let vmm = journaled_stand_in(h, handed, slot, VmmKind::Qemu);
    (vmm, File::from(tap))
}

/// Whether `tun` is still attached to a tap (`TUNGETIFF`; `EBADFD` once
/// its tap was deleted).
fn attached(tun: &File) -> std::io::Result<()> {
    ifreq(tun, libc::TUNGETIFF, &mut [0u8; 40])
}

/// Third hostile read of the tap hand-over, finding F1: a give-back
/// returned without attaching when the tap already looked idle (owner
/// and group 0, its idle MAC), so a holder of QEMU's descriptor (root's,
/// already so) was never seen and the tap was left to it; after the stop
/// it could make the tap any uid's. The give-back now always attaches:
/// the held tap is deleted, detaching the holder.
#[test]
fn a_held_tap_that_looks_idle_is_deleted_when_its_vmm_is_gone() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        let (mut vmm, tap) = launch_qemu(&h, SLOT);
        // The escaped QEMU's child keeps the descriptor.
        let mut holder = holder(&tap, SLOT);
        drop(tap);
        h.stop(VM, Duration::ZERO, true).unwrap();
        let _ = vmm.wait();
        let after_stop = net.link(TAP).unwrap().map(|l| l.index);
        holder.kill().unwrap();
        let _ = holder.wait();
        assert_eq!(
            after_stop, None,
            "the held tap survived its VMM's stop (index {index})"
        );
        let txn = h.journal.open().unwrap();
        assert_eq!(txn.state.tap(TAP).map(|t| t.ifindex), Some(None));
    });
}

/// Third hostile read of the tap hand-over, findings F1 and F3: the
/// start-up sweep skipped every tap that looked root's and left every
/// held tap as it was, so a tap a process kept past its VMM (the
/// executor down meanwhile, or the entry already gone) stayed held. The
/// sweep now attaches to every journaled tap; a held one that no live
/// journaled VMM names is deleted, one a live VMM holds is left.
#[test]
fn the_start_up_sweep_deletes_held_taps_no_live_vmm_names() {
    for owner_of_holder in [0, OTHER] {
        with_a_tap(|net, index, dir| {
            let h = host(dir);
            journal_tap(&h, Some(index));
            let held = attach().expect("root attaches");
            tun_set(&held, libc::TUNSETOWNER, owner_of_holder).unwrap();
            let mut holder = holder(&held, SLOT);
            drop(held);
            h.give_back_idle_taps();
            let after = net.link(TAP).unwrap().map(|l| l.tap_owner);
            holder.kill().unwrap();
            let _ = holder.wait();
            assert_eq!(
                after, None,
                "the sweep left a held tap of owner {owner_of_holder}"
            );
        });
    }
    // One a live journaled VMM holds stays, with that VMM.
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        let (mut vmm, tap) = launch_qemu(&h, SLOT);
        h.give_back_idle_taps();
        assert_eq!(net.link(TAP).unwrap().map(|l| l.index), Some(index));
        attached(&tap).expect("a live VMM's tap stays attached");
        drop(tap);
        vmm.kill().unwrap();
        let _ = vmm.wait();
    });
}

/// Third hostile read of the tap hand-over, finding F3: a reservation
/// passed over a slot whose uid owned a held tap whatever held it, and
/// never deleted that tap, so a holder no live VMM named kept it (and
/// kept that slot out) for good. Such a tap is now deleted and the slot
/// given; one that a live journaled VMM holds still passes the slot over.
#[test]
fn a_reservation_deletes_a_held_tap_of_its_slot_that_no_live_vmm_names() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        let held = attach().expect("root attaches");
        tun_set(&held, libc::TUNSETOWNER, SLOT).expect("TUNSETOWNER");
        let mut holder = holder(&held, OTHER);
        drop(held);
        let next = h.reserve_slot().map(|s| s.uid());
        let after = net.link(TAP).unwrap().map(|l| l.tap_owner);
        holder.kill().unwrap();
        let _ = holder.wait();
        assert!(matches!(next, Ok(SLOT)), "{next:?}");
        assert_eq!(after, None, "the held tap of slot {SLOT} was left");
    });
}
