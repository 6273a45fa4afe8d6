//! A journaled tap handed to a VMM's uid for its launch, and given back
//! (Firecracker jail design, part 2 step 2; docs/jail.md "Taps").
//!
//! Idle taps are root's: `EnsureTap` makes them with tun owner 0, so no
//! process of the owner or of a slot uid can attach to one. A VMM that
//! opens its tap by name (Firecracker) gets it just before its launch,
//! taken back first (reset and idle MAC, as a give-back does: state an
//! escaped VMM left on a tap not yet given back never reaches the next),
//! then handed: `HostNet::hand_tap` attaches as root only while the name has the
//! interface index journaled for it, sets the tun owner and group (the
//! VMM's uid and gid) and detaches. QEMU gets root's own descriptor of
//! its tap, so its tap is handed to root (0, 0) the same way before root
//! opens it. Either VMM holds an attached descriptor, through which it
//! can set the tap's owner and group itself (no capability needed), so
//! the VMM's journal entry names the tap, which goes back to root (owner
//! and group 0) once that VMM is gone (stop, kill, a status that finds it
//! exited; a launch that fails), at the executor's start (every
//! journaled tap), and when a slot is reserved (every journaled tap that
//! slot's uid owns). Root's give-back (and QEMU's hand-over to root) also
//! sets the tap's MAC, which a holder can change too, to [`idle_mac`], and
//! resets the device state a holder can set (`HostNet::take_tap`).
//! Every give-back attaches ([`VmHost::take_back`]), even to a tap that
//! looks idle: QEMU's descriptor is root's, so a holder of it is seen
//! only by the attach's `EBUSY`. A tap some process holds is never taken
//! from a live VMM: a hand-over is refused, and a reservation passes over
//! the slot whose uid owns it. A give-back (at a VMM's end, the start-up
//! sweep, a reservation) that finds its tap held while no live journaled
//! VMM and no launch in flight names it deletes the tap (an escaped VMM
//! left its descriptor to a process that outlives it); the journal keeps
//! the name without an index, so the next `EnsureTap` makes a new,
//! root's, tap.

use std::os::fd::OwnedFd;

use banger_host::net::{Link, LinkKind, NetError, retry_while_busy};

use super::VmHost;
use super::error::{VmOpError, journal_err};
use crate::journal::Txn;

/// A tap handed to a VMM's ids for a launch in flight: given back to root
/// when dropped (the launch failed), unless the launch journaled its VMM
/// with it ([`HandedTap::keep`]).
pub(super) struct HandedTap<'a> {
    host: &'a VmHost,
    name: Option<String>,
}

impl HandedTap<'_> {
    /// The VMM's journal entry names the tap: it goes back to root when
    /// that VMM is gone, not now. Returns the tap's name. Called while the
    /// journal that names it is locked (`VmHost::journal_vmm`): a status
    /// that finds that VMM gone must see the tap out of flight.
    pub(super) fn keep(&mut self) -> String {
        let name = self.name.take().expect("a handed tap is kept once");
        self.host.handing(&name, false);
        name
    }
}

impl Drop for HandedTap<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            self.host.handing(&name, false);
            self.host.give_back_tap(&name);
        }
    }
}

/// A tap whose tun owner is root and whose group is unset or root's.
fn roots(link: &Link) -> bool {
    link.tap_owner == Some(0) && matches!(link.tap_group, None | Some(0))
}

/// The MAC root gives a tap it takes back: `06:ba:` and the tap's
/// interface index (big-endian), locally administered and unicast, of no
/// guest (`02:ba:` and its address) nor bridge (`02:ba:` and the
/// bridge's), and of no other tap. The executor does not know the MAC
/// the kernel chose at the tap's creation (random, never journaled), so
/// it cannot restore that one.
pub(super) fn idle_mac(index: u32) -> [u8; 6] {
    let [a, b, c, d] = index.to_be_bytes();
    [0x06, 0xba, a, b, c, d]
}

/// What [`VmHost::take_back`] came to.
enum TakenBack {
    /// The tap is root's, with its idle MAC.
    Root,
    /// A live journaled VMM or a launch in flight holds it: left as it is.
    Held,
    /// Held with no live VMM naming it: deleted.
    Deleted,
}

/// `NetError::errno` is `EBUSY`: a process holds the tap.
pub(super) fn busy(e: &NetError) -> bool {
    e.errno() == Some(rustix::io::Errno::BUSY.raw_os_error())
}

impl VmHost {
    /// Hand the journaled tap `name` to `ids` (tun owner uid, group gid)
    /// for a launch: the tap must be journaled with its interface index
    /// (an `EnsureTap` made or checked it), and is changed only while that
    /// index is its own. The journal stays locked meanwhile (no
    /// `DeleteTap` or teardown between). It is taken back first, as a
    /// give-back does (device state reset, [`idle_mac`]): a VMM gone but
    /// not yet seen gone has had no give-back, and what it set on the tap
    /// would reach the VMM handed it next (hostile read of the fourth
    /// round, L1).
    pub(super) fn hand_tap(
        &self,
        name: &str,
        (uid, gid): (u32, u32),
    ) -> Result<HandedTap<'_>, VmOpError> {
        self.hand_journaled(name, uid, |index| {
            retry_while_busy(busy, || {
                drop(self.net.take_tap(name, index, idle_mac(index))?);
                self.net.hand_tap(name, index, uid, gid)
            })
        })
        .map(|(handed, ())| handed)
    }

    /// Hand the journaled tap `name` to root for a QEMU launch, as
    /// [`VmHost::hand_tap`] does (the journal locked, its index checked
    /// after the attach), setting its MAC to [`idle_mac`]: root's
    /// descriptor attached to that tap, which QEMU gets. Never an attach
    /// by name after the journal is let go: a `DeleteTap` meanwhile would
    /// make that attach create a new tap (tun has no flag that attaches
    /// only to an existing one).
    pub(super) fn take_tap_for_qemu(
        &self,
        name: &str,
    ) -> Result<(HandedTap<'_>, OwnedFd), VmOpError> {
        self.hand_journaled(name, 0, |index| {
            retry_while_busy(busy, || self.net.take_tap(name, index, idle_mac(index)))
        })
    }

    /// Under the journal's lock: `hand` the journaled tap `name` (its
    /// journaled interface index) to `uid`, and count it in flight. The
    /// hand-overs above wait out a transient `EBUSY` (a copy of root's
    /// descriptor in a child another thread forked:
    /// [`banger_host::net::BUSY_GRACE`]); a tap held longer is refused.
    fn hand_journaled<T>(
        &self,
        name: &str,
        uid: u32,
        hand: impl FnOnce(u32) -> Result<T, NetError>,
    ) -> Result<(HandedTap<'_>, T), VmOpError> {
        let txn = self.journal.open().map_err(journal_err)?;
        let Some(index) = txn.state.tap(name).and_then(|t| t.ifindex) else {
            return Err(VmOpError::Invalid {
                what: "tap",
                value: name.to_string(),
                reason: "not journaled with its interface index (ensure the tap first)".into(),
            });
        };
        let handed = hand(index).map_err(|source| VmOpError::HandTap {
            name: name.to_string(),
            uid,
            source,
        })?;
        self.handing(name, true);
        drop(txn);
        Ok((
            HandedTap {
                host: self,
                name: Some(name.to_string()),
            },
            handed,
        ))
    }

    /// Best effort, after the VMM it was handed to is gone (or its launch
    /// failed): give the journaled tap `name` back to root, under the
    /// journal's lock.
    pub(super) fn give_back_tap(&self, name: &str) {
        match self.journal.open() {
            Ok(mut txn) => self.give_back_journaled(&mut txn, name),
            Err(e) => {
                tracing::warn!(tap = name, error = %banger_proto::error::chain(&e).join(": "), "a tap was not given back to root")
            }
        }
    }

    /// Count a launch in flight handing `name` (`true`), or one less.
    fn handing(&self, name: &str, handing: bool) {
        let mut count = self.handing.lock().unwrap_or_else(|e| e.into_inner());
        let n = count.entry(name.to_string()).or_default();
        if handing {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
        }
        if *n == 0 {
            count.remove(name);
        }
    }

    /// [`VmHost::give_back_tap`] for a caller that holds the journal
    /// (`txn`): [`VmHost::take_back`] the tap, unless the journal no
    /// longer lists it, the name has another index, or a launch in flight
    /// has handed it (a launch of the same tap raced this one's end).
    pub(super) fn give_back_journaled(&self, txn: &mut Txn<'_>, name: &str) {
        if self.in_flight(name) {
            return;
        }
        let given = (|| {
            let Some(index) = txn.state.tap(name).and_then(|t| t.ifindex) else {
                return Ok(TakenBack::Root);
            };
            let link = self.net.link(name).map_err(|source| VmOpError::HandTap {
                name: name.to_string(),
                uid: 0,
                source,
            })?;
            match link.filter(|l| l.index == index) {
                Some(link) => self.take_back(txn, &link),
                None => Ok(TakenBack::Root),
            }
        })();
        match given {
            Ok(TakenBack::Held) => {
                tracing::info!(tap = name, "a tap a live VMM holds stays with that VMM")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(tap = name, error = %banger_proto::error::chain(&e).join(": "), "a tap was not given back to root")
            }
        }
    }

    /// The one rule for a journaled tap `link` (of its journaled index,
    /// checked by the caller) whose VMM may be gone: attach to it as root,
    /// always (a tap that looks idle, owner and group 0 and its
    /// [`idle_mac`], can be held all the same: QEMU's descriptor is
    /// root's), and give it to root, owner, group and [`idle_mac`]. A tap
    /// some process holds (`EBUSY`) is left while a live journaled VMM
    /// names it or a launch in flight has handed it ([`TakenBack::Held`]);
    /// otherwise (a process outlived the VMM with its descriptor, and may
    /// have made the tap another uid's) it is deleted by its journaled
    /// index, which detaches every holder, and journaled without an index
    /// and as root's, for the next `EnsureTap` to make again.
    fn take_back(&self, txn: &mut Txn<'_>, link: &Link) -> Result<TakenBack, VmOpError> {
        let err = |source| VmOpError::HandTap {
            name: link.name.clone(),
            uid: 0,
            source,
        };
        let source = match self
            .net
            .take_tap(&link.name, link.index, idle_mac(link.index))
        {
            Ok(_) => return Ok(TakenBack::Root),
            Err(source) => source,
        };
        if !busy(&source) {
            return Err(err(source));
        }
        if self.in_flight(&link.name) || self.held_by_a_live_vmm(txn, &link.name) {
            return Ok(TakenBack::Held);
        }
        self.net.delete_link_index(link.index).map_err(err)?;
        if let Some(mut entry) = txn.state.tap(&link.name).cloned() {
            entry.ifindex = None;
            entry.owner_uid = 0;
            txn.state.upsert_tap(entry);
            txn.save().map_err(journal_err)?;
        }
        tracing::warn!(tap = %link.name, owner = ?link.tap_owner, "a tap held while no live VMM named it was deleted (the next EnsureTap makes it again)");
        Ok(TakenBack::Deleted)
    }

    /// Whether a launch in flight has handed `name` (`DeleteTap` and
    /// `Teardown` refuse it: `Executor::not_in_flight`).
    pub(crate) fn in_flight(&self, name: &str) -> bool {
        self.handing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }

    /// Whether a journaled VMM that still runs (its pid with its journaled
    /// start time and uid) names the tap `name`; one whose process cannot
    /// be read counts as running.
    fn held_by_a_live_vmm(&self, txn: &Txn<'_>, name: &str) -> bool {
        txn.state
            .vmms
            .iter()
            .filter(|e| e.tap.as_deref() == Some(name))
            .any(|e| banger_host::jail::is_journaled(e.pid, e.start_time, e.uid).unwrap_or(true))
    }

    /// The host's links, for a give back (its error a `HandTap` to root).
    fn tap_links(&self) -> Result<Vec<Link>, VmOpError> {
        self.net.links().map_err(|source| VmOpError::HandTap {
            name: "every journaled tap".into(),
            uid: 0,
            source,
        })
    }

    /// Before slot `uid` is given to a launch: every journaled tap (of its
    /// journaled index) whose tun owner is `uid` is [`VmHost::take_back`]n,
    /// so the new VMM reaches no tap an earlier holder of the slot had.
    /// Returns the name of one that a live VMM holds (the slot is passed
    /// over), if any.
    pub(super) fn give_back_slot_taps(&self, uid: u32) -> Result<Option<String>, VmOpError> {
        let mut txn = self.journal.open().map_err(journal_err)?;
        if txn.state.taps.is_empty() {
            return Ok(None);
        }
        let links = self.tap_links()?;
        let slots: Vec<&Link> = links
            .iter()
            .filter(|l| l.tap_owner == Some(uid))
            .filter(|l| txn.state.tap(&l.name).and_then(|t| t.ifindex) == Some(l.index))
            .collect();
        for link in slots {
            if let TakenBack::Held = self.take_back(&mut txn, link)? {
                return Ok(Some(link.name.clone()));
            }
        }
        Ok(None)
    }

    /// At start: every journaled tap is [`VmHost::take_back`]n (a VMM
    /// that outlived the executor keeps its tap until it is found gone;
    /// a held tap no live VMM names is deleted). A tap journaled without
    /// an index (before version 2) that is not root's and still has the
    /// tun owner it was made for gets its index journaled first, as
    /// `EnsureTap` records it.
    pub(crate) fn give_back_idle_taps(&self) {
        let swept = self.journal.open().map_err(journal_err).and_then(|mut txn| {
            if txn.state.taps.is_empty() {
                return Ok(());
            }
            let links = self.tap_links()?;
            let mut todo = Vec::new();
            let mut indexed = false;
            for entry in &mut txn.state.taps {
                let Some(link) = links.iter().find(|l| l.name == entry.name) else {
                    continue;
                };
                if link.kind != LinkKind::Tap {
                    continue;
                }
                match entry.ifindex {
                    Some(index) if index == link.index => todo.push(link),
                    None if !roots(link) && link.tap_owner == Some(entry.owner_uid) => {
                        entry.ifindex = Some(link.index);
                        indexed = true;
                        todo.push(link);
                    }
                    _ => {}
                }
            }
            if indexed {
                txn.save().map_err(journal_err)?;
            }
            for link in todo {
                match self.take_back(&mut txn, link) {
                    Ok(TakenBack::Root) if !roots(link) => tracing::info!(tap = %link.name, "an idle tap went back to root"),
                    Ok(TakenBack::Held) => {
                        tracing::info!(tap = %link.name, owner = ?link.tap_owner, "a held tap stays with its live VMM until it is gone")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(tap = %link.name, error = %banger_proto::error::chain(&e).join(": "), "a tap was not given back to root")
                    }
                }
            }
            Ok(())
        });
        if let Err(e) = swept {
            tracing::warn!(error = %banger_proto::error::chain(&e).join(": "), "giving idle taps back to root");
        }
    }
}
