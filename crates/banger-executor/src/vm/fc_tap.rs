//! A jailed Firecracker's tap, moved into its network namespace for `PUT
//! /network-interfaces` and back (design step 5, docs/jail.md): the
//! executor's [`JailTap`] for `FirecrackerDriver::launch_jailed`.
//!
//! Everything goes by the tap's journaled interface index and the
//! bridge's checked one; the tap comes back with the same index or not at
//! all (`IFLA_NEW_IFINDEX`), so the name it is addressed by afterwards
//! (for `disable_ipv6` and up) is that link's: no other link can take a
//! name or an index in the host's namespace without `CAP_NET_ADMIN`
//! there, and the move back fails while either is taken. A move loses the
//! tap's bridge, up state and per-device sysctls; `leave` puts them back,
//! IPv6 off before the tap goes up (as `ensure_tap` does).

use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};

use banger_host::net::HostNet;
use banger_vmm::firecracker::JailTap;

use crate::journal::{JournalFile, Txn};

/// The namespace the tap comes back to: the calling thread's (the
/// helper's own thread, so no ptrace access check; in dev mode and tests,
/// the namespace the executor works in).
const THREAD_NET: &str = "/proc/thread-self/ns/net";

/// One launch's tap mover.
pub(crate) struct FcTap<'a> {
    net: &'a dyn HostNet,
    /// The journal that lists the tap, locked for the move back.
    journal: &'a JournalFile,
    /// The tap's name, for `disable_ipv6`, up and messages.
    tap: String,
    /// Its journaled interface index.
    index: u32,
    /// The bridge's name (messages) and checked index.
    bridge: String,
    bridge_index: u32,
    /// The namespace it comes back to, opened when this was made.
    home: OwnedFd,
    /// Leave it down when it comes back (a restore: up once the guest's
    /// agent has applied the new identity, by the launch's `TapDown`).
    pub(super) keep_down: bool,
}

impl<'a> FcTap<'a> {
    /// A mover for `tap` (journaled index `index`), a port of `bridge`
    /// (index `bridge_index`, checked by the caller), coming back to the
    /// calling thread's network namespace. Make it on the thread that
    /// launches.
    pub(crate) fn new(
        net: &'a dyn HostNet,
        journal: &'a JournalFile,
        tap: &str,
        index: u32,
        bridge: &str,
        bridge_index: u32,
    ) -> std::io::Result<FcTap<'a>> {
        let home = rustix::fs::open(
            THREAD_NET,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(FcTap {
            net,
            journal,
            tap: tap.to_string(),
            index,
            bridge: bridge.to_string(),
            bridge_index,
            home,
            keep_down: false,
        })
    }
}

impl super::VmHost {
    /// The mover for VM tap `name` of a Firecracker launch: its journaled
    /// interface index and bridge, that bridge's journaled index checked
    /// to be the index its name has now (a bridge deleted and made again
    /// since its entry is refused: ensure it first), read under the
    /// journal's lock; the namespace the tap comes back to is this
    /// thread's.
    pub(super) fn fc_tap(&self, name: &str) -> Result<FcTap<'_>, super::VmOpError> {
        let invalid = |what: &'static str, value: &str, reason: String| super::VmOpError::Invalid {
            what,
            value: value.to_string(),
            reason,
        };
        let txn = self.journal.open().map_err(super::error::journal_err)?;
        let Some((index, bridge)) = txn
            .state
            .tap(name)
            .and_then(|t| Some((t.ifindex?, t.bridge.clone())))
        else {
            return Err(invalid(
                "tap",
                name,
                "not journaled with its interface index (ensure the tap first)".into(),
            ));
        };
        let journaled = txn.state.bridge(&bridge).and_then(|b| b.ifindex);
        let now = self
            .net
            .link(&bridge)
            .map_err(|e| invalid("bridge", &bridge, chain(&e)))?
            .map(|l| l.index);
        let bridge_index = match (journaled, now) {
            (Some(j), Some(n)) if j == n => j,
            _ => {
                return Err(invalid(
                    "bridge",
                    &bridge,
                    format!(
                        "of tap {name}: journaled as link #{journaled:?}, the link of that name is #{now:?} (ensure the bridge first)"
                    ),
                ));
            }
        };
        drop(txn);
        FcTap::new(
            self.net.as_ref(),
            &self.journal,
            name,
            index,
            &bridge,
            bridge_index,
        )
        .map_err(|e| {
            invalid(
                "tap",
                name,
                format!("opening this thread's network namespace ({THREAD_NET}): {e}"),
            )
        })
    }
}

impl FcTap<'_> {
    /// Hostile read of the own-netns jail, F2: in J the tap is down, so its
    /// holder may change its link type (`TUNSETLINK`, no capability); one
    /// of another type than Ethernet is no bridge port and gets no MAC. A
    /// tap back with another type is deleted by its index and journaled
    /// without one (the next `EnsureTap` makes it again), and the launch
    /// fails. `txn` is the journal, locked since before the move back.
    fn ethernet(&self, txn: &mut Txn<'_>) -> Result<(), String> {
        let (tap, index) = (self.tap.as_str(), self.index);
        let link = self
            .net
            .links()
            .map_err(|e| format!("{tap} (link #{index}) is back, unchecked: {}", chain(&e)))?
            .into_iter()
            .find(|l| l.index == index);
        if link.as_ref().is_some_and(|l| l.ethernet()) {
            return Ok(());
        }
        let link_type = link.map(|l| l.link_type);
        let not_ethernet = format!(
            "{tap} (link #{index}) came back with link type {link_type:?}, not Ethernet (its holder changed it in the jail)"
        );
        // Kept journaled with its index while it may still be there: the
        // give-back then resets its type (`HostNet::take_tap`).
        if let Err(e) = self.net.delete_link_index(index) {
            return Err(format!("{not_ethernet}; deleting it failed: {}", chain(&e)));
        }
        if let Some(mut entry) = txn.state.tap(tap).cloned() {
            entry.ifindex = None;
            entry.owner_uid = 0;
            txn.state.upsert_tap(entry);
        }
        let saved = match txn.save() {
            Ok(()) => String::new(),
            Err(e) => format!(
                "; the journal was not saved: {}",
                banger_proto::error::chain(&e).join(": ")
            ),
        };
        Err(format!(
            "{not_ethernet}: deleted, journaled without an index (EnsureTap makes it again){saved}"
        ))
    }
}

impl JailTap for FcTap<'_> {
    /// Refused on a thread of another namespace than `home` (hostile
    /// read of the own-netns jail, informational): the move acts in the
    /// calling thread's namespace, and the tap comes back to `home`.
    fn enter(&mut self, jail_ns: BorrowedFd<'_>) -> Result<(), String> {
        let here = rustix::fs::stat(THREAD_NET).map_err(|e| format!("{THREAD_NET}: {e}"))?;
        let home = rustix::fs::fstat(&self.home).map_err(|e| format!("{THREAD_NET}: {e}"))?;
        if (here.st_dev, here.st_ino) != (home.st_dev, home.st_ino) {
            return Err(format!(
                "{} (link #{}) not moved: this thread's network namespace (inode {}) is not the one it comes back to (inode {}); the mover runs on the thread that made it",
                self.tap, self.index, here.st_ino, home.st_ino
            ));
        }
        self.net
            .move_link_to_netns(&self.tap, self.index, jail_ns)
            .map_err(|e| chain(&e))
    }

    /// Back, under the journal's lock (taken first, held to the end: no
    /// `DeleteTap`, `Teardown` or `EnsureTap` between the move and the
    /// checks), then checked: a tap the journal no longer lists with its
    /// index is deleted by that index and the launch fails (hostile read
    /// of the own-netns jail, F1: `DeleteTap` and `Teardown` refuse a tap
    /// in flight, this is the backstop). Nothing else takes the journal's
    /// lock here, and the in-flight table is not touched: no lock order
    /// to keep.
    fn leave(&mut self, jail_rtnl: BorrowedFd<'_>) -> Result<(), String> {
        let (tap, index) = (self.tap.as_str(), self.index);
        let mut txn = self.journal.open().map_err(|e| {
            format!(
                "{tap} (link #{index}) stays in the jail's network namespace: the journal: {}",
                banger_proto::error::chain(&e).join(": ")
            )
        })?;
        self.net
            .move_link_back(jail_rtnl, tap, index, self.home.as_fd())
            .map_err(|e| chain(&e))?;
        if txn.state.tap(tap).and_then(|t| t.ifindex) != Some(index) {
            let deleted = match self.net.delete_link_index(index) {
                Ok(_) => "deleted".to_string(),
                Err(e) => format!("deleting it failed: {}", chain(&e)),
            };
            return Err(format!(
                "{tap} (link #{index}) came back no longer in the journal with that index: {deleted}"
            ));
        }
        self.ethernet(&mut txn)?;
        let restored = self
            .net
            .disable_ipv6(tap)
            .and_then(|()| self.net.set_master_index(index, self.bridge_index))
            .and_then(|()| {
                if self.keep_down {
                    Ok(())
                } else {
                    self.net.set_up(tap)
                }
            });
        restored.map_err(|e| {
            format!(
                "{tap} (link #{index}) is back but not restored on {} (IPv6 off, bridge, up): {}",
                self.bridge,
                chain(&e)
            )
        })
    }
}

/// `e` and its sources, outermost first, on one line.
fn chain(e: &banger_host::net::NetError) -> String {
    banger_proto::error::chain(e).join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::TapEntry;
    use banger_host::net::LinkKind;
    use banger_host::net::fake::FakeNet;

    fn null() -> std::fs::File {
        std::fs::File::open("/dev/null").unwrap()
    }

    /// A host with `banger0` and `bangertap0`, the tap journaled with its
    /// index in a journal under `dir`.
    struct Host {
        net: FakeNet,
        journal: JournalFile,
        _dir: tempfile::TempDir,
    }

    fn host() -> Host {
        let net = FakeNet::new()
            .with_link("banger0", LinkKind::Bridge)
            .with_link("bangertap0", LinkKind::Tap);
        let dir = tempfile::tempdir().unwrap();
        let journal = JournalFile::new(dir.path().join("journal.json"));
        let mut txn = journal.open().unwrap();
        txn.state.upsert_tap(TapEntry {
            name: "bangertap0".into(),
            bridge: "banger0".into(),
            owner_uid: 0,
            ifindex: net.link_named("bangertap0").map(|l| l.index),
        });
        txn.save().unwrap();
        drop(txn);
        Host {
            net,
            journal,
            _dir: dir,
        }
    }

    /// The tap's mover, moved in, and the tap's index.
    fn moved_in(h: &Host) -> (FcTap<'_>, u32) {
        let index = h.net.link_named("bangertap0").unwrap().index;
        let bridge = h.net.link_named("banger0").unwrap().index;
        let mut tap =
            FcTap::new(&h.net, &h.journal, "bangertap0", index, "banger0", bridge).unwrap();
        tap.enter(null().as_fd()).unwrap();
        (tap, index)
    }

    /// In, then back: by index, IPv6 off before the bridge and up, in
    /// that order; the tap ends on its bridge, up, IPv6 off.
    #[test]
    fn a_tap_goes_in_by_index_and_comes_back_restored() {
        let h = host();
        let (mut tap, index) = moved_in(&h);
        assert_eq!(h.net.link_named("bangertap0"), None);
        tap.leave(null().as_fd()).unwrap();
        assert_eq!(
            h.net.mutating_calls(),
            [
                "move_link_to_netns(bangertap0)",
                "move_link_back(bangertap0)",
                "disable_ipv6(bangertap0)",
                "set_master(bangertap0, banger0)",
                "set_up(bangertap0)",
            ]
        );
        let back = h.net.link_named("bangertap0").unwrap();
        assert_eq!(
            (back.index, back.master.as_deref(), back.up),
            (index, Some("banger0"), true)
        );
        assert!(h.net.state().ipv6_off.contains("bangertap0"));
    }

    /// A tap whose index is taken does not come back (the fake, as the
    /// kernel: `EBUSY`), and the error says which link and why; nothing
    /// is restored on whatever has the index.
    #[test]
    fn a_tap_that_cannot_come_back_says_so_and_nothing_else_is_touched() {
        let h = host();
        let (mut tap, index) = moved_in(&h);
        // Another link takes the index meanwhile.
        let mut squat = h.net.state().in_jail[0].clone();
        squat.name = "squat".into();
        h.net.state.lock().unwrap().links.push(squat);
        let e = tap.leave(null().as_fd()).unwrap_err();
        assert!(e.contains(&format!("#{index} (bangertap0)")), "{e}");
        assert!(e.contains("busy"), "{e}");
        assert_eq!(
            h.net.mutating_calls().last().map(String::as_str),
            Some("move_link_back(bangertap0)")
        );
    }

    /// Hostile read of the own-netns jail, F1, defense in depth: a tap
    /// the journal stopped listing with its index while it was in the
    /// jail (whatever let that happen) is deleted by that index once
    /// back, and the launch fails: never a tap of root's making that no
    /// entry names.
    #[test]
    fn a_tap_no_longer_journaled_with_its_index_is_deleted_once_back() {
        for entry in [None, Some(None), Some(Some(4242))] {
            let h = host();
            let (mut tap, index) = moved_in(&h);
            let mut txn = h.journal.open().unwrap();
            match entry {
                None => txn.state.remove_tap("bangertap0"),
                Some(ifindex) => {
                    let mut e = txn.state.tap("bangertap0").cloned().unwrap();
                    e.ifindex = ifindex;
                    txn.state.upsert_tap(e);
                }
            }
            txn.save().unwrap();
            drop(txn);
            let e = tap.leave(null().as_fd());
            let link = h.net.link_named("bangertap0");
            assert!(
                link.is_none(),
                "entry {entry:?}: leave {e:?}, the tap is {link:?}"
            );
            let e = e.unwrap_err();
            assert!(
                e.contains(&format!("#{index}")) && e.contains("journal"),
                "{e}"
            );
            assert!(h.net.state().in_jail.is_empty());
        }
    }

    /// Hostile read of the own-netns jail (informational): the move in
    /// acts in the calling thread's namespace, so `enter` runs only on a
    /// thread of the namespace the tap comes back to (`home`); on another
    /// it is refused, nothing moved.
    #[test]
    fn a_tap_is_moved_in_only_from_the_namespace_it_comes_back_to() {
        let h = host();
        let index = h.net.link_named("bangertap0").unwrap().index;
        let bridge = h.net.link_named("banger0").unwrap().index;
        let mut tap =
            FcTap::new(&h.net, &h.journal, "bangertap0", index, "banger0", bridge).unwrap();
        let e = banger_host::net::netns::in_fresh_netns(|| tap.enter(null().as_fd()));
        assert!(
            e.as_ref().is_err_and(|e| e.contains("namespace")),
            "{e:?}; {:?}",
            h.net.mutating_calls()
        );
        assert!(h.net.mutating_calls().is_empty());
    }
}
