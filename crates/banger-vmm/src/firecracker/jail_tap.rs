//! The tap's round trip through a jailed Firecracker's network namespace
//! (design step 5, docs/jail.md). Firecracker attaches its tap by name at
//! `PUT /network-interfaces` and takes no descriptor, and the kernel looks
//! the name up in the namespace of the process that opens `/dev/net/tun`:
//! so the tap goes into the jail's namespace J for that one request and
//! comes back to the caller's right after it answers. Firecracker's
//! attached descriptor keeps working there. In J the jailed process sees
//! only `lo` and, for that moment, its own tap.

use std::os::fd::BorrowedFd;

use banger_host::jail::JailNet;

use super::VMM;
use crate::{LaunchSpec, VmmError};

/// What moves a jailed Firecracker's tap (`LaunchSpec::tap`) into its
/// network namespace and back: the executor's is by the tap's journaled
/// interface index, re-enslaving it to the spec's bridge, up, IPv6 off.
pub trait JailTap {
    /// Move the tap into the namespace behind `jail_ns` (from the
    /// caller's own, the host's: `RTM_SETLINK` with `IFLA_NET_NS_FD`).
    fn enter(&mut self, jail_ns: BorrowedFd<'_>) -> Result<(), String>;
    /// Move it back through `jail_rtnl` (a route netlink socket opened in
    /// the jail's namespace, with `CAP_NET_ADMIN`) with the same index,
    /// and restore what a move loses: its bridge, up, `disable_ipv6`.
    fn leave(&mut self, jail_rtnl: BorrowedFd<'_>) -> Result<(), String>;
}

/// A launch's [`JailTap`] and the jail's network handles.
pub(super) struct Moves<'a> {
    pub(super) tap: &'a mut dyn JailTap,
    pub(super) net: JailNet,
}

impl Moves<'_> {
    /// `put` (the `PUT /network-interfaces` request) with the tap in the
    /// jail's namespace: in, `put`, back — back also when `put` failed.
    /// The handles are closed before this returns, so nothing of root's
    /// keeps J alive: a tap that could not come back is deleted with J
    /// once the caller kills Firecracker (which it does on any error).
    pub(super) fn around(
        self,
        spec: &LaunchSpec,
        put: impl FnOnce() -> Result<(), VmmError>,
    ) -> Result<(), VmmError> {
        let Moves { tap, net } = self;
        let fail = |what: String| VmmError::JailTap { vmm: VMM, what };
        tap.enter(net.ns()).map_err(|e| {
            fail(format!(
                "moving {} into the jail's network namespace: {e}",
                spec.tap
            ))
        })?;
        let answered = put();
        let back = tap.leave(net.rtnl());
        drop(net);
        match back {
            Ok(()) => answered,
            Err(e) => {
                let after = match &answered {
                    Ok(()) => String::new(),
                    Err(put) => format!(" (after PUT /network-interfaces failed: {put})"),
                };
                Err(fail(format!(
                    "moving {} back from the jail's network namespace: {e}{after}; \
                     a tap still there is deleted with that namespace when firecracker is killed",
                    spec.tap
                )))
            }
        }
    }
}
