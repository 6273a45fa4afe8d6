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

/// The namespace the tap comes back to: the calling thread's (the
/// helper's own thread, so no ptrace access check; in dev mode and tests,
/// the namespace the executor works in).
const THREAD_NET: &str = "/proc/thread-self/ns/net";

/// One launch's tap mover.
pub(crate) struct FcTap<'a> {
    net: &'a dyn HostNet,
    /// The tap's name, for `disable_ipv6`, up and messages.
    tap: String,
    /// Its journaled interface index.
    index: u32,
    /// The bridge's name (messages) and checked index.
    bridge: String,
    bridge_index: u32,
    /// The namespace it comes back to, opened when this was made.
    home: OwnedFd,
}

impl<'a> FcTap<'a> {
    /// A mover for `tap` (journaled index `index`), a port of `bridge`
    /// (index `bridge_index`, checked by the caller), coming back to the
    /// calling thread's network namespace. Make it on the thread that
    /// launches.
    pub(crate) fn new(
        net: &'a dyn HostNet,
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
            tap: tap.to_string(),
            index,
            bridge: bridge.to_string(),
            bridge_index,
            home,
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
        FcTap::new(self.net.as_ref(), name, index, &bridge, bridge_index).map_err(|e| {
            invalid(
                "tap",
                name,
                format!("opening this thread's network namespace ({THREAD_NET}): {e}"),
            )
        })
    }
}

impl JailTap for FcTap<'_> {
    fn enter(&mut self, jail_ns: BorrowedFd<'_>) -> Result<(), String> {
        self.net
            .move_link_to_netns(&self.tap, self.index, jail_ns)
            .map_err(|e| chain(&e))
    }

    fn leave(&mut self, jail_rtnl: BorrowedFd<'_>) -> Result<(), String> {
        let (tap, index) = (self.tap.as_str(), self.index);
        self.net
            .move_link_back(jail_rtnl, tap, index, self.home.as_fd())
            .map_err(|e| chain(&e))?;
        let restored = self
            .net
            .disable_ipv6(tap)
            .and_then(|()| self.net.set_master_index(index, self.bridge_index))
            .and_then(|()| self.net.set_up(tap));
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
    use banger_host::net::LinkKind;
    use banger_host::net::fake::FakeNet;

    fn null() -> std::fs::File {
        std::fs::File::open("/dev/null").unwrap()
    }

    /// A host with `banger0` and `bangertap0`; the tap's index, moved in.
    fn moved_in(net: &FakeNet) -> (FcTap<'_>, u32) {
        let index = net.link_named("bangertap0").unwrap().index;
        let bridge = net.link_named("banger0").unwrap().index;
        let mut tap = FcTap::new(net, "bangertap0", index, "banger0", bridge).unwrap();
        tap.enter(null().as_fd()).unwrap();
        (tap, index)
    }

    fn host() -> FakeNet {
        FakeNet::new()
            .with_link("banger0", LinkKind::Bridge)
            .with_link("bangertap0", LinkKind::Tap)
    }

    /// In, then back: by index, IPv6 off before the bridge and up, in
    /// that order; the tap ends on its bridge, up, IPv6 off.
    #[test]
    fn a_tap_goes_in_by_index_and_comes_back_restored() {
        let net = host();
        let (mut tap, index) = moved_in(&net);
        assert_eq!(net.link_named("bangertap0"), None);
        tap.leave(null().as_fd()).unwrap();
        assert_eq!(
            net.mutating_calls(),
            [
                "move_link_to_netns(bangertap0)",
                "move_link_back(bangertap0)",
                "disable_ipv6(bangertap0)",
                "set_master(bangertap0, banger0)",
                "set_up(bangertap0)",
            ]
        );
        let back = net.link_named("bangertap0").unwrap();
        assert_eq!(
            (back.index, back.master.as_deref(), back.up),
            (index, Some("banger0"), true)
        );
        assert!(net.state().ipv6_off.contains("bangertap0"));
    }

    /// A tap whose index is taken does not come back (the fake, as the
    /// kernel: `EBUSY`), and the error says which link and why; nothing
    /// is restored on whatever has the index.
    #[test]
    fn a_tap_that_cannot_come_back_says_so_and_nothing_else_is_touched() {
        let net = host();
        let (mut tap, index) = moved_in(&net);
        // Another link takes the index meanwhile.
        let mut squat = net.state().in_jail[0].clone();
        squat.name = "squat".into();
        net.state.lock().unwrap().links.push(squat);
        let e = tap.leave(null().as_fd()).unwrap_err();
        assert!(e.contains(&format!("#{index} (bangertap0)")), "{e}");
        assert!(e.contains("busy"), "{e}");
        assert_eq!(
            net.mutating_calls().last().map(String::as_str),
            Some("move_link_back(bangertap0)")
        );
    }
}
