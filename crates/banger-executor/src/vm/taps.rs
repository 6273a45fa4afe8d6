//! A journaled tap handed to a VMM's uid for its launch, and given back
//! (Firecracker jail design, part 2 step 2; docs/jail.md "Taps").
//!
//! Idle taps are root's: `EnsureTap` makes them with tun owner 0, so no
//! process of the owner or of a slot uid can attach to one. A VMM that
//! opens its tap by name (Firecracker) gets it just before its launch:
//! `HostNet::hand_tap` attaches as root only while the name has the
//! interface index journaled for it, sets the tun owner and group (the
//! VMM's uid and gid) and detaches. QEMU gets root's own descriptor of
//! its tap, so its tap is handed to root (0, 0) the same way before root
//! opens it. Either VMM holds an attached descriptor, through which it
//! can set the tap's owner and group itself (no capability needed), so
//! the VMM's journal entry names the tap, which goes back to root (owner
//! and group 0) once that VMM is gone (stop, kill, a status that finds it
//! exited; a launch that fails), at the executor's start (every idle
//! journaled tap), and when a slot is reserved (every journaled tap that
//! slot's uid owns). Root's give-back (and QEMU's hand-over to root) also
//! sets the tap's MAC, which a holder can change too, to [`idle_mac`].
//! A tap some process holds (`EBUSY`) is never taken from a live VMM: a
//! hand-over is refused, and a reservation passes over the slot whose
//! uid owns it. A give-back that finds its tap held while no live
//! journaled VMM and no launch in flight names it deletes the tap (an
//! escaped VMM left its descriptor to a process that outlives it); the
//! journal keeps the name without an index, so the next `EnsureTap`
//! makes a new, root's, tap.

use std::os::fd::OwnedFd;

use banger_host::net::{Link, LinkKind, NetError};

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

/// `NetError::errno` is `EBUSY`: a process holds the tap.
pub(super) fn busy(e: &NetError) -> bool {
    e.errno() == Some(rustix::io::Errno::BUSY.raw_os_error())
}

impl VmHost {
    /// Hand the journaled tap `name` to `ids` (tun owner uid, group gid)
    /// for a launch: the tap must be journaled with its interface index
    /// (an `EnsureTap` made or checked it), and is changed only while that
    /// index is its own. The journal stays locked meanwhile (no
    /// `DeleteTap` or teardown between).
    pub(super) fn hand_tap(
        &self,
        name: &str,
        (uid, gid): (u32, u32),
    ) -> Result<HandedTap<'_>, VmOpError> {
        self.hand_journaled(name, uid, |index| self.net.hand_tap(name, index, uid, gid))
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
            self.net.take_tap(name, index, idle_mac(index))
        })
    }

    /// Under the journal's lock: `hand` the journaled tap `name` (its
    /// journaled interface index) to `uid`, and count it in flight.
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
    /// (`txn`). Nothing changes when the journal no longer lists the tap,
    /// the name has another index, or it is root's already (with its
    /// [`idle_mac`]); nor while a launch in flight has handed it (a launch
    /// of the same tap raced this one's end). A tap still held (`EBUSY`)
    /// is left as it is while a live journaled VMM names it; otherwise
    /// (a process outlived the VMM with its descriptor, and may have made
    /// the tap another uid's) it is deleted by its journaled index, which
    /// detaches every holder, and journaled without an index and as
    /// root's, for the next `EnsureTap` to make again.
    pub(super) fn give_back_journaled(&self, txn: &mut Txn<'_>, name: &str) {
        if self.in_flight(name) {
            return;
        }
        let to_root = |source| VmOpError::HandTap {
            name: name.to_string(),
            uid: 0,
            source,
        };
        let given = (|| {
            let Some(index) = txn.state.tap(name).and_then(|t| t.ifindex) else {
                return Ok(());
            };
            let link = self.net.link(name).map_err(to_root)?;
            let Some(link) = link.filter(|l| l.index == index) else {
                return Ok(());
            };
            match self.give_back_link(&link) {
                Err(VmOpError::HandTap { source, .. })
                    if busy(&source) && !self.held_by_a_live_vmm(txn, name) =>
                {
                    self.net.delete_link_index(index).map_err(to_root)?;
                    if let Some(mut entry) = txn.state.tap(name).cloned() {
                        entry.ifindex = None;
                        entry.owner_uid = 0;
                        txn.state.upsert_tap(entry);
                        txn.save().map_err(journal_err)?;
                    }
                    tracing::warn!(tap = name, owner = ?link.tap_owner, "a tap held after its VMM was gone was deleted (the next EnsureTap makes it again)");
                    Ok(())
                }
                other => other,
            }
        })();
        if let Err(e) = given {
            tracing::warn!(tap = name, error = %banger_proto::error::chain(&e).join(": "), "a tap was not given back to root");
        }
    }

    /// Whether a launch in flight has handed `name`.
    fn in_flight(&self, name: &str) -> bool {
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

    /// Give `link` (a journaled tap of the journaled index, checked by the
    /// caller) back to root, owner and group, with its [`idle_mac`],
    /// unless it is so already.
    fn give_back_link(&self, link: &Link) -> Result<(), VmOpError> {
        let mac = idle_mac(link.index);
        let err = |source| VmOpError::HandTap {
            name: link.name.clone(),
            uid: 0,
            source,
        };
        if roots(link) && self.net.link_mac(&link.name).map_err(err)? == Some(mac) {
            return Ok(());
        }
        self.net
            .take_tap(&link.name, link.index, mac)
            .map(drop)
            .map_err(err)
    }

    /// Before slot `uid` is given to a launch: every journaled tap (of its
    /// journaled index) whose tun owner is `uid` goes back to root, so the
    /// new VMM reaches no tap an earlier holder of the slot had. One that
    /// a process holds refuses the slot (`EBUSY`, see [`busy`]).
    pub(super) fn give_back_slot_taps(&self, uid: u32) -> Result<(), VmOpError> {
        let txn = self.journal.open().map_err(journal_err)?;
        if txn.state.taps.is_empty() {
            return Ok(());
        }
        let links = self.tap_links()?;
        for entry in &txn.state.taps {
            let Some(link) = links.iter().find(|l| l.name == entry.name) else {
                continue;
            };
            if link.tap_owner == Some(uid) && entry.ifindex == Some(link.index) {
                self.give_back_link(link)?;
            }
        }
        Ok(())
    }

    /// At start: every journaled tap that is not root's goes back to root
    /// unless a process holds it (a VMM that outlived the executor: its
    /// tap goes back when it is found gone). A tap journaled without an
    /// index (before version 2) that still has the tun owner it was made
    /// for gets its index journaled first, as `EnsureTap` records it.
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
                if link.kind != LinkKind::Tap || roots(link) {
                    continue;
                }
                match entry.ifindex {
                    Some(index) if index == link.index => todo.push(link),
                    None if link.tap_owner == Some(entry.owner_uid) => {
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
                match self.give_back_link(link) {
                    Ok(()) => tracing::info!(tap = %link.name, "an idle tap went back to root"),
                    Err(VmOpError::HandTap { source, .. }) if busy(&source) => {
                        tracing::info!(tap = %link.name, owner = ?link.tap_owner, "a held tap keeps its uid until its VMM is gone")
                    }
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
