//! The window of a Firecracker launch in which its tap is in the jail's
//! network namespace (hostile read of the own-netns jail, F1): a
//! `DeleteTap` or `Teardown` that comes meanwhile finds no tap of that
//! name in the host's namespace. It must not take that for "already
//! gone": the tap comes back when the launch moves it back, and a tap the
//! journal no longer lists is never given back, never deleted, and makes
//! every later `EnsureTap` of its name fail.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd};
use std::sync::Arc;

use banger_host::net::fake::FakeNet;
use banger_host::net::netns::{attach_tap, in_fresh_netns, jail_namespace, set_link_type};
use banger_host::net::{HostNet, RealNet};
use banger_host::probe::fake::FakeHost;
use banger_proto::net::{BridgeSpec, TapSpec};
use banger_proto::privops::{DeleteTap, NetOp, PrivOp, Teardown};
use banger_vmm::firecracker::JailTap;

use super::VmHostConfig;
use super::fc_tap::FcTap;
use crate::Executor;

const TAP: &str = "bangertap0";
/// The ids of the first VM slot (`uid_base` + 1).
const SLOT: (u32, u32) = (2_000_001, 2_000_001);

/// An executor with VMs on `net`, `banger0` and `TAP` ensured.
fn executor(dir: &std::path::Path, net: Arc<dyn HostNet>) -> Executor {
    let exec = Executor::new(
        Arc::new(FakeHost::lab_host()),
        net,
        dir.join("journal.json"),
    )
    .with_vms(VmHostConfig::for_tests(dir));
    exec.execute(PrivOp::Net(NetOp::EnsureBridge(BridgeSpec {
        name: "banger0".into(),
        address: Ipv4Addr::new(10, 0, 0, 1),
        prefix_len: 24,
    })))
    .unwrap();
    exec.execute(PrivOp::Net(NetOp::EnsureTap(TapSpec {
        name: TAP.into(),
        bridge: "banger0".into(),
        owner_uid: 4242,
    })))
    .unwrap();
    exec
}

/// The executor's `FcTap`, and `op` sent to the executor once the tap is
/// in the jail (as an owner's request on another connection would be).
struct Meddling<'a> {
    tap: FcTap<'a>,
    exec: &'a Executor,
    op: PrivOp,
    answer: Option<Result<(), String>>,
}

impl JailTap for Meddling<'_> {
    fn enter(&mut self, jail_ns: BorrowedFd<'_>) -> Result<(), String> {
        self.tap.enter(jail_ns)?;
        let answer = self.exec.execute(self.op.clone());
        self.answer = Some(answer.map(drop).map_err(|e| e.render()));
        Ok(())
    }

    fn leave(&mut self, jail_rtnl: BorrowedFd<'_>) -> Result<(), String> {
        self.tap.leave(jail_rtnl)
    }
}

/// A `DeleteTap` or `Teardown` during the window is refused, naming the
/// tap and the launch in flight; after the launch the tap is journaled
/// with its index, or no link of its name is left: never a tap the
/// journal does not list.
#[test]
fn a_tap_deleted_or_torn_down_while_in_the_jail_is_never_left_unjournaled() {
    for op in [
        PrivOp::Net(NetOp::DeleteTap(DeleteTap { name: TAP.into() })),
        PrivOp::Net(NetOp::Teardown(Teardown)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let net = Arc::new(FakeNet::new());
        let exec = executor(dir.path(), net.clone());
        let host = exec.vm.as_deref().unwrap();
        // As `launch_firecracker`: handed, then moved in and back.
        let handed = host.hand_tap(TAP, SLOT).unwrap();
        let mut tap = Meddling {
            tap: host.fc_tap(TAP).unwrap(),
            exec: &exec,
            op: op.clone(),
            answer: None,
        };
        let null = File::open("/dev/null").unwrap();
        tap.enter(null.as_fd()).unwrap();
        let left = tap.leave(null.as_fd());
        // The launch ends (its VMM is gone or it failed): given back.
        drop(handed);
        let journaled = exec.journal.open().unwrap().state.tap(TAP).cloned();
        let link = net.link_named(TAP);
        let answer = tap.answer.clone().unwrap();
        assert!(
            link.is_none()
                || journaled.as_ref().and_then(|t| t.ifindex) == link.as_ref().map(|l| l.index),
            "{op:?} in the window answered {answer:?}, the move back {left:?}: the tap is link {link:?}, journaled as {journaled:?}"
        );
        let refusal = answer.unwrap_err();
        assert!(
            refusal.contains(TAP) && refusal.contains("launch in flight"),
            "{refusal}"
        );
        // Nothing was changed by the refusal: the tap is back, journaled,
        // on its bridge.
        let link = link.unwrap();
        assert_eq!(link.master.as_deref(), Some("banger0"), "{op:?}");
        assert_eq!(journaled.and_then(|t| t.ifindex), Some(link.index));
        assert_eq!(left, Ok(()));
    }
}

/// Hostile read of the own-netns jail, F2: in J the tap is down, so a
/// holder of it may change its link type (`TUNSETLINK`, no capability),
/// and a tap of another type than Ethernet is no bridge port and gets no
/// MAC. Stands for a Firecracker that does so between its attach and the
/// move back: `enter` moves the tap in, then a thread in J attaches to it
/// and sets `ARPHRD_NONE`; the descriptor is held until after `leave`.
struct Retyping<'a> {
    tap: FcTap<'a>,
    holder: Option<File>,
}

impl JailTap for Retyping<'_> {
    fn enter(&mut self, jail_ns: BorrowedFd<'_>) -> Result<(), String> {
        self.tap.enter(jail_ns)?;
        let ns = jail_ns.try_clone_to_owned().unwrap();
        self.holder = Some(std::thread::spawn(move || retype_in(&ns)).join().unwrap());
        Ok(())
    }

    fn leave(&mut self, jail_rtnl: BorrowedFd<'_>) -> Result<(), String> {
        self.tap.leave(jail_rtnl)
    }
}

/// On this (short-lived) thread: into `ns`, attach to `TAP` as a VMM
/// does, and make it `ARPHRD_NONE`.
fn retype_in(ns: &OwnedFd) -> File {
    // SAFETY: setns of this thread alone into a network namespace
    // descriptor that outlives the call.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    let tun = attach_tap(TAP);
    set_link_type(&tun, 0xfffe).unwrap_or_else(|e| panic!("TUNSETLINK in J: {e}"));
    tun
}

/// After a launch whose tap was made `ARPHRD_NONE` in J: the tap is an
/// Ethernet tap, root's, journaled with its index, or no link of its name
/// is left and its entry has no index; either way the next `EnsureTap`
/// gives an Ethernet tap on the bridge, up.
#[test]
fn a_tap_made_non_ethernet_in_the_jail_is_never_left_unusable() {
    assert!(rustix::process::geteuid().is_root(), "needs root");
    let dir = tempfile::tempdir().unwrap();
    in_fresh_netns(|| {
        let net = Arc::new(RealNet::new());
        let exec = executor(dir.path(), net.clone());
        let host = exec.vm.as_deref().unwrap();
        let handed = host.hand_tap(TAP, SLOT).unwrap();
        let (j, rtnl) = jail_namespace();
        let mut tap = Retyping {
            tap: host.fc_tap(TAP).unwrap(),
            holder: None,
        };
        tap.enter(j.as_fd()).unwrap();
        let left = tap.leave(rtnl.as_fd());
        // Firecracker killed (the launch failed) or, later, stopped.
        drop(tap);
        drop((j, rtnl));
        drop(handed);
        let link = net.link(TAP).unwrap();
        let journaled = exec.journal.open().unwrap().state.tap(TAP).cloned();
        let index = journaled.as_ref().and_then(|t| t.ifindex);
        let state =
            format!("the move back {left:?}; the tap is {link:?}, journaled as {journaled:?}");
        match &link {
            Some(l) => assert!(
                l.link_type == libc::ARPHRD_ETHER
                    && index == Some(l.index)
                    && l.tap_owner == Some(0),
                "{state}"
            ),
            None => assert!(journaled.is_some() && index.is_none(), "{state}"),
        }
        // `FcTap::leave` saw the type and failed the launch.
        let e = left.unwrap_err();
        assert!(e.contains("not Ethernet"), "{e}");
        let again = exec.execute(PrivOp::Net(NetOp::EnsureTap(TapSpec {
            name: TAP.into(),
            bridge: "banger0".into(),
            owner_uid: 4242,
        })));
        let link = net.link(TAP).unwrap();
        assert!(
            again.is_ok(),
            "EnsureTap after: {}; {state}; now {link:?}",
            again.unwrap_err().render()
        );
        let link = link.unwrap();
        assert_eq!(
            (link.link_type, link.master.as_deref(), link.up),
            (libc::ARPHRD_ETHER, Some("banger0"), true)
        );
    });
}

/// The executor's `FcTap`, and a `DeleteTap` then a `Teardown` sent to
/// the executor once the tap is in the jail (as the owner's requests on
/// other connections would be); their errors kept.
struct MeddlingTwice<'a> {
    tap: FcTap<'a>,
    exec: &'a Executor,
    answers: Vec<Result<(), crate::ExecError>>,
}

impl JailTap for MeddlingTwice<'_> {
    fn enter(&mut self, jail_ns: BorrowedFd<'_>) -> Result<(), String> {
        self.tap.enter(jail_ns)?;
        for op in [
            PrivOp::Net(NetOp::DeleteTap(DeleteTap { name: TAP.into() })),
            PrivOp::Net(NetOp::Teardown(Teardown)),
        ] {
            self.answers.push(self.exec.execute(op).map(drop));
        }
        Ok(())
    }

    fn leave(&mut self, jail_rtnl: BorrowedFd<'_>) -> Result<(), String> {
        self.tap.leave(jail_rtnl)
    }
}

/// F1 with the real kernel objects (review of the root-side fixes, L1):
/// the tap really moved into a real J, a `DeleteTap` and a `Teardown`
/// meanwhile are both refused (`invalid_state`, naming the tap); after the
/// move back the tap is in the host on `banger0`, journaled with its
/// index; once given back, a `Teardown` leaves no `bangertap*` link.
#[test]
fn a_tap_in_a_real_jail_is_not_deleted_or_torn_down_meanwhile() {
    assert!(rustix::process::geteuid().is_root(), "needs root");
    let dir = tempfile::tempdir().unwrap();
    in_fresh_netns(|| {
        let net = Arc::new(RealNet::new());
        let exec = executor(dir.path(), net.clone());
        let host = exec.vm.as_deref().unwrap();
        let handed = host.hand_tap(TAP, SLOT).unwrap();
        let (j, rtnl) = jail_namespace();
        let mut tap = MeddlingTwice {
            tap: host.fc_tap(TAP).unwrap(),
            exec: &exec,
            answers: Vec::new(),
        };
        tap.enter(j.as_fd()).unwrap();
        assert!(net.link(TAP).unwrap().is_none(), "the tap is in J");
        let left = tap.leave(rtnl.as_fd());
        let answers = std::mem::take(&mut tap.answers);
        drop(tap);
        drop((j, rtnl));
        let link = net.link(TAP).unwrap();
        let journaled = exec.journal.open().unwrap().state.tap(TAP).cloned();
        let state = format!(
            "answers {:?}; the move back {left:?}; the tap is {link:?}, journaled as {journaled:?}",
            answers
                .iter()
                .map(|a| a.as_ref().map_err(|e| e.render()))
                .collect::<Vec<_>>()
        );
        assert_eq!(answers.len(), 2, "{state}");
        for answer in &answers {
            let e = answer.as_ref().expect_err(&state);
            assert!(
                matches!(e, crate::ExecError::TapInFlight { name, .. } if name == TAP)
                    && e.code() == banger_proto::error::ErrorCode::InvalidState,
                "{state}"
            );
        }
        assert_eq!(left, Ok(()), "{state}");
        let link = link.expect(&state);
        assert_eq!(
            (
                link.master.as_deref(),
                journaled.as_ref().and_then(|t| t.ifindex)
            ),
            (Some("banger0"), Some(link.index)),
            "{state}"
        );
        // The launch ends: given back to root, then torn down.
        drop(handed);
        let back = net.link(TAP).unwrap().expect("given back, still there");
        assert_eq!(back.tap_owner, Some(0), "{back:?}");
        exec.execute(PrivOp::Net(NetOp::Teardown(Teardown)))
            .unwrap_or_else(|e| panic!("Teardown after: {}", e.render()));
        let taps: Vec<String> = net
            .links()
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .filter(|n| n.starts_with("bangertap"))
            .collect();
        assert_eq!(taps, Vec::<String>::new());
    });
}
