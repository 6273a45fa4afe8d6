//! Which links are banger's: a name in the journal, of the journaled kind,
//! and — for taps and bridges made since their index was kept — the
//! interface index journaled at creation; and the one place links are
//! deleted, after that check.

use banger_host::net::{Link, LinkKind};

use crate::Executor;
use crate::error::ExecError;
use crate::journal::{BridgeEntry, TapEntry};

/// Refuse an existing interface the journal does not list, or one of the
/// wrong kind.
pub(super) fn check_ours(
    link: Option<&Link>,
    journaled: bool,
    expected: LinkKind,
) -> Result<(), ExecError> {
    let Some(link) = link else { return Ok(()) };
    if !journaled {
        return Err(ExecError::NotOurs {
            name: link.name.clone(),
        });
    }
    if link.kind != expected {
        return Err(ExecError::WrongKind {
            name: link.name.clone(),
            expected: if expected == LinkKind::Bridge {
                "bridge"
            } else {
                "tap"
            },
            actual: link.kind.to_string(),
        });
    }
    Ok(())
}

/// Threat-model item 14: a bridge is banger's when its interface index is
/// the one journaled at its creation; an entry without one (older, or a
/// crash between the entry and the creation) goes by name and kind.
pub(super) fn check_bridge_identity(link: &Link, entry: &BridgeEntry) -> Result<(), ExecError> {
    match entry.ifindex {
        Some(index) if link.index != index => Err(ExecError::ReplacedBridge {
            name: link.name.clone(),
            index: link.index,
            journaled: index,
        }),
        _ => Ok(()),
    }
}

/// The journal entry of a link [`Executor::remove_link`] deletes: a tap's,
/// or a bridge's (if it has one).
#[derive(Clone, Copy)]
pub(super) enum Journaled<'a> {
    Tap(&'a TapEntry),
    Bridge(Option<&'a BridgeEntry>),
}

/// Gap 14: a journaled name is not enough to act on a tap; a same-named
/// tap that took the name after banger's was gone is not banger's to
/// delete or hand out. Issue #13 F3: nor is the tun owner an identity
/// (whoever can attach to the tap may change it with `TUNSETOWNER`, no
/// capability needed), so a tap is banger's when its interface index is
/// the one journaled at its creation. An entry without one (written before
/// indexes were kept, or by a helper that crashed between the entry and
/// the creation) falls back to the uid banger made the tap for.
pub(super) fn check_tap_identity(link: &Link, entry: &TapEntry) -> Result<(), ExecError> {
    match entry.ifindex {
        Some(index) if link.index != index => Err(ExecError::ReplacedTap {
            name: link.name.clone(),
            index: link.index,
            journaled: index,
        }),
        Some(_) => Ok(()),
        None if link.tap_owner != Some(entry.owner_uid) => Err(ExecError::ForeignTap {
            name: link.name.clone(),
            owner: link.tap_owner,
            journaled: entry.owner_uid,
        }),
        None => Ok(()),
    }
}

impl Executor {
    /// Delete one journaled interface. `known` is the kernel's view from the
    /// listing (`None` when the listing failed: then just try a bridge
    /// journaled without an index; a tap, or a bridge with one, is left, as
    /// its identity cannot be checked). `journaled` is its journal entry.
    /// Returns what was removed, `None` when it was already gone.
    pub(super) fn remove_link(
        &self,
        name: &str,
        journaled: Journaled<'_>,
        known: Option<Option<&Link>>,
    ) -> Result<Option<String>, ExecError> {
        let kind = match journaled {
            Journaled::Tap(_) => LinkKind::Tap,
            Journaled::Bridge(_) => LinkKind::Bridge,
        };
        let delete_err = |source| ExecError::DeleteLink {
            name: name.to_string(),
            source,
        };
        match (known, journaled) {
            (Some(None), _) => return Ok(None),
            (Some(Some(link)), _) => {
                check_ours(Some(link), true, kind.clone())?;
                match journaled {
                    Journaled::Tap(entry) => check_tap_identity(link, entry)?,
                    Journaled::Bridge(Some(entry)) => check_bridge_identity(link, entry)?,
                    Journaled::Bridge(None) => {}
                }
                // By the index just checked: a link that took the name
                // since is not the one deleted.
                let deleted = self.net.delete_link_index(link.index).map_err(delete_err)?;
                return Ok(deleted.then(|| format!("{kind} {name}")));
            }
            (None, Journaled::Tap(entry)) => {
                return Err(ExecError::ForeignTap {
                    name: name.to_string(),
                    owner: None,
                    journaled: entry.owner_uid,
                });
            }
            // No listing: a bridge whose index is journaled cannot be
            // told from another of its name, so it is left.
            (None, Journaled::Bridge(Some(entry))) if entry.ifindex.is_some() => {
                return Err(ExecError::UncheckedBridge {
                    name: name.to_string(),
                });
            }
            (None, Journaled::Bridge(_)) => {}
        }
        // No listing, and no index to tell this bridge from another.
        let deleted = self.net.delete_link(name).map_err(delete_err)?;
        Ok(deleted.then(|| format!("{kind} {name}")))
    }
}
