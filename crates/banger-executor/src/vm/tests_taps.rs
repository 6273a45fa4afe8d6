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
        assert!(net.delete_link_index(index).unwrap());
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
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain syscalls with integer arguments; only this
            // short-lived thread's credentials change.
            unsafe {
                assert_eq!(libc::syscall(libc::SYS_setresgid, uid, uid, uid), 0);
                assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
            }
            attach()
        })
        .join()
        .unwrap()
    })
}

/// Attach to the tap with the flags banger's taps have.
fn attach() -> std::io::Result<File> {
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = [0u8; 40];
    req[..TAP.len()].copy_from_slice(TAP.as_bytes());
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
    req[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes 40 bytes, the size of `req`, on
    // a live tun descriptor.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, req.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(tun)
}

/// A launch as `VmHost::launch` does it for a VMM that opens its tap by
/// name: the tap handed to `SLOT`, a stand-in VMM of that uid, journaled
/// with the tap. Returns the stand-in.
fn launch(h: &VmHost) -> std::process::Child {
    let handed = h
        .hand_tap(TAP, (SLOT, SLOT))
        .expect("handing the tap for a launch");
    use std::os::unix::process::CommandExt as _;
    #[allow(clippy::disallowed_methods, reason = "a stand-in VMM of a slot uid")]
    let vmm = std::process::Command::new("sleep")
        .arg("60")
        .uid(SLOT)
        .gid(SLOT)
        .spawn()
        .unwrap();
    let mut txn = h.journal.open().unwrap();
    txn.state.vmms.push(VmmEntry {
        vm_id: VM.into(),
        pid: vmm.id(),
        start_time: banger_host::jail::start_time(vmm.id()).unwrap(),
        vmm: VmmKind::Firecracker,
        uid: Some(SLOT),
        tap: Some(handed.keep()),
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
        tap: Some(TAP.into()),
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
/// uid (never forced): the sweep leaves it, and a reservation passes its
/// slot over until it is let go, and then gives it back.
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

        // Held (a process of the slot's that outlived its VMM): neither
        // the sweep nor a reservation takes it from under it.
        let handed = h.hand_tap(TAP, (SLOT, SLOT)).unwrap();
        handed.keep();
        let held = attach_as(SLOT).unwrap();
        h.give_back_idle_taps();
        assert_eq!(owner(net), Some(SLOT), "a held tap was taken");
        assert_eq!(h.reserve_slot().unwrap().uid, SLOT + 1);
        assert_eq!(owner(net), Some(SLOT));
        drop(held);
        assert_eq!(h.reserve_slot().unwrap().uid, SLOT);
        assert_eq!(owner(net), Some(0), "after its slot was reserved");
    });
}

/// A launch's hand-over is checked against the journal: a tap that is
/// not journaled, or journaled without its index, is refused untouched,
/// and one that took a journaled name (another index) too.
#[test]
fn a_tap_is_handed_only_with_its_journaled_index() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        let refused = h.hand_tap(TAP, (SLOT, SLOT)).map(|t| t.keep());
        assert!(
            matches!(refused, Err(VmOpError::Invalid { .. })),
            "{refused:?}"
        );
        let journal = |ifindex| journal_tap(&h, ifindex);
        journal(None);
        let refused = h.hand_tap(TAP, (SLOT, SLOT)).map(|t| t.keep());
        assert!(
            matches!(refused, Err(VmOpError::Invalid { .. })),
            "{refused:?}"
        );
        journal(Some(index + 100));
        let refused = h.hand_tap(TAP, (SLOT, SLOT)).map(|t| t.keep());
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
/// reservation fail (`EBUSY` giving it back), so a holder (here root's
/// descriptor, as a jailed QEMU gets it, set to that uid) blocked every
/// launch. That slot is now passed over; once let go, it is given again
/// and the tap goes back to root.
#[test]
fn a_held_tap_of_the_lowest_slots_uid_passes_that_slot_over() {
    with_a_tap(|net, index, dir| {
        let h = host(dir);
        journal_tap(&h, Some(index));
        let held = attach().expect("root attaches");
        tun_set(&held, libc::TUNSETOWNER, SLOT).expect("TUNSETOWNER");
        let next = h.reserve_slot().map(|s| s.uid);
        assert_eq!(owner(net), Some(SLOT));
        drop(held);
        assert!(
            matches!(next, Ok(uid) if uid == SLOT + 1),
            "a held tap of slot {SLOT} blocked the reservation: {next:?}"
        );
        assert_eq!(h.reserve_slot().unwrap().uid, SLOT);
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
