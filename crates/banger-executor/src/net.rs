//! The host-network operations: bridge, taps, firewall sync, DNS sockets,
//! resolver, status and teardown.
//!
//! Rules every operation follows:
//! * the pure checks of `validate::op` have already passed;
//! * the journal is locked for the whole operation, and the journal- and
//!   route-dependent checks run before the first change to the host;
//! * only interfaces the journal lists are ever changed or deleted; a
//!   same-named interface it does not list is refused, never adopted, and a
//!   journaled tap with another interface index than the one recorded at
//!   its creation is not banger's (its name was taken after banger's tap
//!   went);
//! * a journal entry is written before the object is created, and dropped
//!   again if the creation fails;
//! * doing an operation twice changes nothing the second time.

use std::net::Ipv4Addr;

use banger_host::net::{Ipv4Cidr, Link, LinkKind, NetError};
use banger_proto::net::{
    BridgeOutcome, BridgeSpec, BridgeStatus, FirewallSpec, NFT_TABLE, NetStatus, TapOutcome,
    TapSpec, TapStatus, TeardownReport,
};

use crate::error::ExecError;
use crate::firewall;
use crate::journal::{BridgeEntry, Journal, TapEntry, Txn};
use crate::{Executor, validate};

mod configure;
mod dns;
mod identity;

use identity::{Journaled, check_bridge_identity, check_ours, check_tap_identity};

/// The resolver routing domain: `~vm` sends `*.vm` lookups to the bridge's
/// DNS server without making it a default resolver.
pub const VM_DOMAIN_ROUTE: &str = "~vm";

fn journaled_bridge<'a>(journal: &'a Journal, name: &str) -> Result<&'a BridgeEntry, ExecError> {
    journal.bridge(name).ok_or_else(|| ExecError::NotJournaled {
        what: "bridge",
        name: name.to_string(),
    })
}

/// Best effort: write the journal after undoing an entry; the original
/// error is what the caller reports.
fn save_quietly(txn: &Txn<'_>) {
    if let Err(e) = txn.save() {
        tracing::warn!(error = %banger_proto::error::chain(&e).join(": "), "rewriting the journal after a failed step");
    }
}

/// How a bridge is named in refusals: `banger0 172.30.0.1/24`.
fn describe(spec: &BridgeSpec) -> String {
    format!(
        "{} {}",
        spec.name,
        Ipv4Cidr::new(spec.address, spec.prefix_len)
    )
}

impl Executor {
    /// Refuse `requested` unless it is the installed bridge (when there is
    /// one). `matches` says whether it is.
    fn installed_bridge(
        &self,
        matches: impl FnOnce(&BridgeSpec) -> bool,
        requested: impl FnOnce() -> String,
    ) -> Result<(), ExecError> {
        match &self.bridge {
            Some(installed) if !matches(installed) => Err(ExecError::NotInstalledBridge {
                requested: requested(),
                installed: describe(installed),
            }),
            _ => Ok(()),
        }
    }

    /// Refuse a bridge name other than the installed bridge's.
    pub(crate) fn installed_bridge_named(&self, name: &str) -> Result<(), ExecError> {
        self.installed_bridge(|b| b.name == name, || format!("bridge {name}"))
    }

    pub(crate) fn ensure_bridge(&self, spec: BridgeSpec) -> Result<BridgeOutcome, ExecError> {
        // Which subnet the host hands to guests (and binds DNS in) is root's
        // decision, never the owner's.
        self.installed_bridge(|b| *b == spec, || format!("bridge {}", describe(&spec)))?;
        let cidr = Ipv4Cidr::new(spec.address, spec.prefix_len);
        let name = spec.name.as_str();
        let mut txn = self.journal.open()?;
        if self.bridge.is_some() {
            self.remove_other_bridges(&mut txn, name)?;
        }
        let was_journaled = txn.state.bridge(name).is_some();
        let links = self.net.links().map_err(ExecError::ReadLinks)?;
        let existing = links.iter().find(|l| l.name == name).cloned();
        check_ours(existing.as_ref(), was_journaled, LinkKind::Bridge)?;
        if let (Some(link), Some(entry)) = (&existing, txn.state.bridge(name)) {
            check_bridge_identity(link, entry)?;
        }
        let routes = self.net.routes_v4().map_err(ExecError::ReadRoutes)?;
        if let Err(e) = validate::no_overlap(cidr, name, &routes) {
            // The clash may be banger's own bridge under an earlier name:
            // say how to move on rather than "choose another subnet".
            if let ExecError::SubnetOverlap { interface, .. } = &e
                && interface != name
                && txn.state.bridge(interface).is_some()
            {
                return Err(ExecError::RenamedBridge {
                    old: interface.clone(),
                    new: name.to_string(),
                });
            }
            return Err(e);
        }
        // Even root's own choice must not take over what the host reaches
        // elsewhere, through its default route above all.
        let resolvers = self.net.resolvers().map_err(ExecError::ReadResolvers)?;
        // Only while the bridge still exists: resolver settings die with the
        // link (a reboot, a removal), the journal's entry may not.
        let routed_here = existing.is_some() && txn.state.resolver_links.iter().any(|l| l == name);
        validate::holds_nothing_of_the_host(cidr, name, &links, &routes, &resolvers, routed_here)?;
        // Gap 14: the owner may never send SyncFirewall. The base rule set
        // (no guests: the host closed to the bridge but for DNS, nothing
        // routed from it, no IPv4 or ARP from any tap) is in before the
        // bridge exists, and back whenever banger's tables have gone (a
        // flushed ruleset). A bridge made anew gets it too: rules synced
        // for an earlier bridge of that name describe taps that are gone.
        let present = self.present_tables().map_err(ExecError::ListTables)?;
        if existing.is_none() || present.len() != firewall::FAMILIES.len() {
            let base = FirewallSpec {
                bridge: spec.name.clone(),
                guests: Vec::new(),
                allow_inter_vm: false,
            };
            self.replace_firewall(&mut txn, base, spec.address)?;
        }

        // Whether the MAC was written stays known only for the bridge it
        // was written to: one made anew has not had it yet.
        let mac_set = existing.is_some() && txn.state.bridge(name).is_some_and(|b| b.mac_set);
        // Until a new bridge exists, an entry keeps the index it had: that
        // of a bridge that is gone matches no other (fails closed).
        let previous = txn.state.bridge(name).cloned();
        let entry = BridgeEntry {
            name: spec.name.clone(),
            address: spec.address,
            prefix_len: spec.prefix_len,
            mac_set,
            ifindex: existing
                .as_ref()
                .map(|l| l.index)
                .or(previous.as_ref().and_then(|b| b.ifindex)),
        };
        if txn.state.bridge(name) != Some(&entry) {
            txn.state.upsert_bridge(entry);
            txn.save()?;
        }
        let created = existing.is_none();
        let link = match existing {
            Some(link) => link,
            None => {
                let fresh = self
                    .net
                    .create_bridge(name)
                    .map_err(|source| ExecError::CreateBridge {
                        name: name.to_string(),
                        source,
                    })
                    .and_then(|()| self.net.link(name).map_err(ExecError::ReadLinks));
                match fresh {
                    Ok(Some(link)) => link,
                    Ok(None) | Err(_) => {
                        match previous {
                            Some(entry) => txn.state.upsert_bridge(entry),
                            None => txn.state.remove_bridge(name),
                        }
                        save_quietly(&txn);
                        return Err(fresh.err().unwrap_or_else(|| ExecError::CreateBridge {
                            name: name.to_string(),
                            source: NetError::NoSuchLink {
                                name: name.to_string(),
                            },
                        }));
                    }
                }
            }
        };
        // The new bridge's index is journaled before it is configured: an
        // entry left by a failure from here names it and nothing else.
        let mut indexed: Result<(), ExecError> = Ok(());
        if let Some(entry) = txn.state.bridges.iter_mut().find(|b| b.name == name)
            && entry.ifindex != Some(link.index)
        {
            entry.ifindex = Some(link.index);
            indexed = txn.save().map_err(ExecError::from);
        }
        let configured = indexed
            .and_then(|()| self.configure_bridge(&link, cidr, mac_set))
            .and_then(|()| self.enable_forwarding(&mut txn));
        if let Err(e) = configured {
            if created {
                self.undo_create(&mut txn, name, was_journaled, true);
            }
            return Err(e);
        }
        if let Some(entry) = txn.state.bridges.iter_mut().find(|b| b.name == name)
            && !entry.mac_set
        {
            entry.mac_set = true;
            txn.save()?;
        }
        Ok(BridgeOutcome {
            name: spec.name,
            created,
        })
    }

    /// Remove every journaled bridge but `installed`, with its taps: a
    /// bridge of an earlier choice (the owner's, before installs recorded
    /// the subnet; root's, before a reinstall renamed it) would keep its
    /// subnet's route, and with it whatever addresses that subnet captured.
    /// Each removal is journaled as it happens; the first failure stops
    /// the operation.
    fn remove_other_bridges(&self, txn: &mut Txn<'_>, installed: &str) -> Result<(), ExecError> {
        let stale: Vec<String> = txn
            .state
            .bridges
            .iter()
            .filter(|b| b.name != installed)
            .map(|b| b.name.clone())
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let links = self.net.links().map_err(ExecError::ReadLinks)?;
        let known = |name: &str| Some(links.iter().find(|l| l.name == name));
        for bridge in stale {
            let taps: Vec<TapEntry> = txn
                .state
                .taps
                .iter()
                .filter(|t| t.bridge == bridge)
                .cloned()
                .collect();
            for tap in taps {
                self.remove_link(&tap.name, Journaled::Tap(&tap), known(&tap.name))?;
                txn.state.remove_tap(&tap.name);
                txn.save()?;
            }
            let entry = txn.state.bridge(&bridge).cloned();
            self.remove_link(&bridge, Journaled::Bridge(entry.as_ref()), known(&bridge))?;
            tracing::info!(
                bridge,
                installed,
                "removed a bridge that is not the installed one"
            );
            txn.state.remove_bridge(&bridge);
            txn.state.resolver_links.retain(|l| *l != bridge);
            txn.save()?;
        }
        Ok(())
    }

    /// Refuse to put anything on `bridge` while banger's tables are gone:
    /// without them a tap's frames reach the host and are routed unfiltered.
    pub(crate) fn require_firewall(&self, bridge: &str) -> Result<(), ExecError> {
        let present = self.present_tables().map_err(ExecError::ListTables)?;
        if present.len() != firewall::FAMILIES.len() {
            return Err(ExecError::FirewallMissing {
                bridge: bridge.to_string(),
            });
        }
        Ok(())
    }

    /// Roll back an interface created by this call: delete it and, if the
    /// journal did not list it before, drop its entry.
    fn undo_create(&self, txn: &mut Txn<'_>, name: &str, was_journaled: bool, bridge: bool) {
        if let Err(e) = self.net.delete_link(name) {
            tracing::warn!(name, error = %e, "removing a half-configured interface");
            return; // keep the entry: the interface may still exist
        }
        if !was_journaled {
            if bridge {
                txn.state.remove_bridge(name);
            } else {
                txn.state.remove_tap(name);
            }
            save_quietly(txn);
        }
    }

    pub(crate) fn ensure_tap(&self, spec: TapSpec) -> Result<TapOutcome, ExecError> {
        self.installed_bridge_named(&spec.bridge)?;
        // Gap 12: the request names the installed owner (root in dev
        // mode), never another uid. The tap itself is root's.
        if let Some(vm) = &self.vm
            && spec.owner_uid != vm.owner.0
        {
            return Err(ExecError::TapForOtherUser {
                name: spec.name,
                requested: spec.owner_uid,
                owner: vm.owner.0,
            });
        }
        let name = spec.name.as_str();
        let mut txn = self.journal.open()?;
        journaled_bridge(&txn.state, &spec.bridge)?;
        self.require_firewall(&spec.bridge)?;
        let journaled = txn.state.tap(name).cloned();
        let was_journaled = journaled.is_some();
        let links = self.net.links().map_err(ExecError::ReadLinks)?;
        let existing = links.iter().find(|l| l.name == name).cloned();
        check_ours(existing.as_ref(), was_journaled, LinkKind::Tap)?;
        // The same identity test as deletion (issue #13 F6): a tap is
        // handed out only if a teardown would remove it as banger's.
        if let (Some(link), Some(entry)) = (&existing, &journaled) {
            check_tap_identity(link, entry)?;
        }
        // Idle taps are root's; one handed to a VMM for its launch (the
        // owner's uid for a Firecracker of the owner's, a slot uid for a
        // jailed one) stays that uid's until the VMM is gone.
        if let Some(owner) = existing.as_ref().and_then(|l| l.tap_owner)
            && owner != 0
            && owner != spec.owner_uid
            && !self.vm.as_ref().is_some_and(|vm| vm.is_vm_slot(owner))
        {
            return Err(ExecError::TapOwner {
                name: name.to_string(),
                owner,
                requested: spec.owner_uid,
            });
        }
        let Some(bridge) = links.iter().find(|l| l.name == spec.bridge) else {
            return Err(ExecError::BridgeMissing {
                name: spec.bridge.clone(),
            });
        };
        // A tap goes only on the bridge banger made (item 14).
        if let Some(entry) = txn.state.bridge(&spec.bridge) {
            check_bridge_identity(bridge, entry)?;
        }

        // A tap is made root's (Firecracker jail design, part 2 step 2):
        // no process of the owner's attaches to it while no VM runs. An
        // older entry keeps the uid it was made for: its identity
        // fallback compares it.
        let mut entry = TapEntry {
            name: spec.name.clone(),
            bridge: spec.bridge.clone(),
            owner_uid: journaled.as_ref().map_or(0, |e| e.owner_uid),
            ifindex: existing.as_ref().map(|l| l.index),
        };
        if txn.state.tap(name) != Some(&entry) {
            txn.state.upsert_tap(entry.clone());
            txn.save()?;
        }
        let bridge_index = bridge.index;
        let mut tap_index = existing.as_ref().map(|l| l.index);
        let created = existing.is_none();
        if created && let Err(source) = self.net.create_tap(name, entry.owner_uid) {
            if !was_journaled {
                txn.state.remove_tap(name);
                save_quietly(&txn);
            }
            return Err(ExecError::CreateTap {
                name: name.to_string(),
                source,
            });
        }
        if created {
            // The new tap's index is its identity from now on. Nobody but
            // root can make a tap under this name meanwhile (the journal is
            // locked, and creating a tap needs CAP_NET_ADMIN).
            let index = match self.net.link(name) {
                Ok(Some(link)) => link.index,
                Ok(None) => {
                    self.undo_create(&mut txn, name, was_journaled, false);
                    return Err(ExecError::CreateTap {
                        name: name.to_string(),
                        source: NetError::NoSuchLink {
                            name: name.to_string(),
                        },
                    });
                }
                Err(e) => {
                    self.undo_create(&mut txn, name, was_journaled, false);
                    return Err(ExecError::ReadLinks(e));
                }
            };
            entry.ifindex = Some(index);
            tap_index = Some(index);
            txn.state.upsert_tap(entry);
            txn.save()?;
        }
        let tap_index = tap_index.expect("an existing tap's index, or the new one's");
        let (master, up) = existing
            .as_ref()
            .map(|l| (l.master.clone(), l.up))
            .unwrap_or((None, false));
        let attach = || -> Result<(), ExecError> {
            self.ipv6_off(name)?;
            if master.as_deref() != Some(spec.bridge.as_str()) {
                // Both by the index checked above (the bridge's against
                // the journal): never a same-named link made since.
                self.net
                    .set_master_index(tap_index, bridge_index)
                    .map_err(|source| ExecError::SetMaster {
                        name: name.to_string(),
                        bridge: spec.bridge.clone(),
                        source,
                    })?;
            }
            if !up {
                self.net.set_up(name).map_err(|source| ExecError::SetUp {
                    name: name.to_string(),
                    source,
                })?;
            }
            Ok(())
        };
        if let Err(e) = attach() {
            if created {
                self.undo_create(&mut txn, name, was_journaled, false);
            }
            return Err(e);
        }
        Ok(TapOutcome {
            name: spec.name,
            created,
        })
    }

    pub(crate) fn delete_tap(&self, name: String) -> Result<(), ExecError> {
        let mut txn = self.journal.open()?;
        let Some(entry) = txn.state.tap(&name).cloned() else {
            return Err(ExecError::NotJournaled { what: "tap", name });
        };
        self.not_in_flight(&txn, "DeleteTap", Some(&name))?;
        let existing = self.net.link(&name).map_err(ExecError::ReadLinks)?;
        self.remove_link(&name, Journaled::Tap(&entry), Some(existing.as_ref()))?;
        txn.state.remove_tap(&name);
        txn.save()?;
        Ok(())
    }

    pub(crate) fn sync_firewall(&self, spec: FirewallSpec) -> Result<(), ExecError> {
        self.installed_bridge_named(&spec.bridge)?;
        let mut txn = self.journal.open()?;
        let subnet = journaled_bridge(&txn.state, &spec.bridge)?.cidr();
        for g in &spec.guests {
            let tap = txn
                .state
                .tap(&g.tap)
                .ok_or_else(|| ExecError::NotJournaled {
                    what: "tap",
                    name: g.tap.clone(),
                })?;
            if tap.bridge != spec.bridge {
                return Err(ExecError::TapOnOtherBridge {
                    tap: g.tap.clone(),
                    bridge: spec.bridge.clone(),
                    journaled: tap.bridge.clone(),
                });
            }
            validate::guest_address(&g.tap, g.ip, &spec.bridge, subnet)?;
        }
        self.replace_firewall(&mut txn, spec, subnet.address)?;
        Ok(())
    }

    /// Replace banger's tables with exactly `spec` (validated) for the
    /// bridge holding `bridge_ip`, journaled first.
    fn replace_firewall(
        &self,
        txn: &mut Txn<'_>,
        spec: FirewallSpec,
        bridge_ip: Ipv4Addr,
    ) -> Result<(), ExecError> {
        let batch = firewall::ruleset(&spec, bridge_ip);
        tracing::debug!(bridge = %spec.bridge, %batch, "nft batch");

        let previous = (txn.state.firewall, txn.state.nat_guests.clone());
        txn.state.firewall = true;
        txn.state.nat_guests = firewall::nat_guests(&spec);
        txn.save()?;
        if let Err(source) = self.net.apply_nft(&batch) {
            // nft applies a batch all or nothing: the old tables stand.
            (txn.state.firewall, txn.state.nat_guests) = previous;
            save_quietly(txn);
            return Err(ExecError::ApplyFirewall {
                bridge: spec.bridge,
                source,
            });
        }
        Ok(())
    }

    /// banger's tables that exist now. A missing `nft` means there are none
    /// to see (and none banger could have made).
    fn present_tables(&self) -> Result<Vec<&'static str>, NetError> {
        let tables = match self.net.nft_tables() {
            Ok(t) => t,
            Err(e) if e.is_tool_missing() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(firewall::FAMILIES
            .into_iter()
            .filter(|f| tables.iter().any(|t| t.family == *f && t.name == NFT_TABLE))
            .collect())
    }

    pub(crate) fn net_status(&self) -> Result<NetStatus, ExecError> {
        let txn = self.journal.open()?;
        let links = self.net.links().map_err(ExecError::ReadLinks)?;
        let find = |name: &str| links.iter().find(|l| l.name == name);
        let bridges = txn
            .state
            .bridges
            .iter()
            .map(|b| {
                let link = find(&b.name);
                BridgeStatus {
                    name: b.name.clone(),
                    present: link.is_some(),
                    addresses: link
                        .map(|l| l.addresses.iter().map(|a| a.to_string()).collect())
                        .unwrap_or_default(),
                    up: link.is_some_and(|l| l.up),
                }
            })
            .collect();
        let taps = txn
            .state
            .taps
            .iter()
            .map(|t| {
                let link = find(&t.name);
                TapStatus {
                    name: t.name.clone(),
                    present: link.is_some(),
                    master: link.and_then(|l| l.master.clone()),
                    up: link.is_some_and(|l| l.up),
                }
            })
            .collect();
        let firewall = !self
            .present_tables()
            .map_err(ExecError::ListTables)?
            .is_empty();
        let ip_forward = self.net.ip_forward().map_err(ExecError::IpForward)?;
        Ok(NetStatus {
            bridges,
            taps,
            firewall,
            nat_guests: if firewall {
                txn.state.nat_guests.clone()
            } else {
                Vec::new()
            },
            ip_forward,
            resolver_links: txn.state.resolver_links.clone(),
        })
    }

    /// Refuse `op` while a launch in flight has handed the journaled tap
    /// `name` (`None`: any journaled tap). Hostile read of the own-netns
    /// jail, F1: a jailed Firecracker's tap is in its jail's network
    /// namespace for part of its launch, so the host's namespace has no
    /// link of its name; taken for "already gone", its entry would go and
    /// the tap come back unjournaled. Called with the journal locked
    /// (`txn`): a launch counts its tap in flight under that lock
    /// (`VmHost::hand_journaled`) and moves it only while counted, so the
    /// answer holds until the lock is let go. Lock order: the journal,
    /// then the in-flight table (held only to read it), as everywhere.
    fn not_in_flight(
        &self,
        txn: &Txn<'_>,
        op: &'static str,
        name: Option<&str>,
    ) -> Result<(), ExecError> {
        let Some(vm) = self.vm.as_deref() else {
            return Ok(());
        };
        let handed = txn
            .state
            .taps
            .iter()
            .map(|t| t.name.as_str())
            .filter(|t| name.is_none_or(|n| n == *t))
            .find(|t| vm.in_flight(t));
        match handed {
            Some(name) => Err(ExecError::TapInFlight {
                name: name.to_string(),
                op,
            }),
            None => Ok(()),
        }
    }

    /// Remove everything the journal lists (the snapshot devices of
    /// dm-snapshot root disks first), best effort: every step is
    /// attempted, "already gone" is success, failures are reported and their
    /// entries stay in the journal so a later teardown can retry them. A
    /// fully successful teardown leaves an empty journal.
    pub(crate) fn teardown(&self) -> Result<TeardownReport, ExecError> {
        let mut txn = self.journal.open()?;
        self.not_in_flight(&txn, "Teardown", None)?;
        let mut removed = Vec::new();
        let mut errors = Vec::new();
        // The loop and dm devices of dm-snapshot root disks (a running VM's
        // snapshot is busy: reported, and kept for a later attempt).
        let tools: std::sync::Arc<dyn crate::vm::snapshot::DiskTools> = match &self.vm {
            Some(vm) => std::sync::Arc::clone(&vm.tools),
            None => std::sync::Arc::new(crate::vm::snapshot::HostTools),
        };
        let links = self.vm.as_ref().map(|vm| vm.links());
        let (gone, failed) =
            crate::vm::snapshot::dm::teardown_all(&*tools, links.as_ref(), &mut txn.state);
        removed.extend(gone);
        errors.extend(failed);
        let mut fail = |e: ExecError| errors.push(e.render());

        let links = match self.net.links() {
            Ok(l) => Some(l),
            Err(e) => {
                fail(ExecError::ReadLinks(e));
                None
            }
        };
        // What the kernel says about `name`: Ok(None) when it is gone.
        let lookup = |name: &str| -> Option<Option<&Link>> {
            links.as_ref().map(|ls| ls.iter().find(|l| l.name == name))
        };

        // Resolver settings first: they die with the link anyway, but a
        // present link gets them reverted explicitly.
        let mut kept_links = Vec::new();
        for link in std::mem::take(&mut txn.state.resolver_links) {
            match lookup(&link) {
                Some(None) => removed.push(format!("resolver settings of {link} (link gone)")),
                _ => match self.net.resolver_revert(&link) {
                    Ok(()) => removed.push(format!("resolver settings of {link}")),
                    Err(source) => {
                        fail(ExecError::ResolverRevert {
                            link: link.clone(),
                            source,
                        });
                        kept_links.push(link);
                    }
                },
            }
        }
        txn.state.resolver_links = kept_links;

        let mut kept_taps = Vec::new();
        for tap in std::mem::take(&mut txn.state.taps) {
            match self.remove_link(&tap.name, Journaled::Tap(&tap), lookup(&tap.name)) {
                Ok(Some(what)) => removed.push(what),
                Ok(None) => {}
                Err(e) => {
                    fail(e);
                    kept_taps.push(tap);
                }
            }
        }
        txn.state.taps = kept_taps;

        // The bridge a kept link's base rule set describes (below).
        let base_bridge = match &self.bridge {
            Some(installed) => Some((installed.name.clone(), installed.address)),
            None => txn
                .state
                .bridges
                .first()
                .map(|b| (b.name.clone(), b.address)),
        };
        let mut kept_bridges = Vec::new();
        for bridge in std::mem::take(&mut txn.state.bridges) {
            match self.remove_link(
                &bridge.name,
                Journaled::Bridge(Some(&bridge)),
                lookup(&bridge.name),
            ) {
                Ok(Some(what)) => removed.push(what),
                Ok(None) => {}
                Err(e) => {
                    fail(e);
                    kept_bridges.push(bridge);
                }
            }
        }
        txn.state.bridges = kept_bridges;
        if txn.state.bridges.is_empty() {
            match self.restore_forwarding(&mut txn) {
                Ok(changed) => removed.extend(changed),
                Err(e) => fail(e),
            }
        }

        // Issue #13 F3: a link that stays (one that is not banger's to
        // remove, or whose removal failed) keeps the base rule set, whose
        // `bangertap*` drops in `input` and `forward` cover a tap that is no
        // bridge port: without it the host routes whatever such a tap
        // sends. The tables go only when nothing is left.
        let kept = !txn.state.taps.is_empty() || !txn.state.bridges.is_empty();
        if kept && let Some((name, address)) = base_bridge {
            let base = FirewallSpec {
                bridge: name,
                guests: Vec::new(),
                allow_inter_vm: false,
            };
            match self.replace_firewall(&mut txn, base, address) {
                Ok(()) => {
                    tracing::warn!("links remain after teardown: banger's base rule set stays")
                }
                Err(e) => fail(e),
            }
        } else {
            match self.present_tables() {
                Ok(present) if present.is_empty() => {
                    txn.state.firewall = false;
                    txn.state.nat_guests.clear();
                }
                Ok(present) => match self
                    .net
                    .apply_nft(&firewall::delete_tables(present.clone()))
                {
                    Ok(()) => {
                        removed
                            .extend(present.iter().map(|f| format!("nft table {f} {NFT_TABLE}")));
                        txn.state.firewall = false;
                        txn.state.nat_guests.clear();
                    }
                    Err(source) => fail(ExecError::DeleteTables(source)),
                },
                Err(e) => fail(ExecError::ListTables(e)),
            }
        }

        if let Err(e) = txn.save() {
            fail(ExecError::Journal(e));
        }
        Ok(TeardownReport { removed, errors })
    }
}
