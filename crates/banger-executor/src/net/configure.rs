//! How banger's bridge is set up once it exists, every `EnsureBridge`
//! (and IPv6 off on each of banger's links): each step is one write of
//! what should be there, made before the bridge goes up.

use banger_host::net::{Ipv4Cidr, Link};

use crate::Executor;
use crate::error::ExecError;
use crate::journal::Txn;

impl Executor {
    /// IPv6 off, exactly our address, up (forwarding: [`Executor::enable_forwarding`]). Changes only what
    /// differs (IPv6 is switched off every time: it is one write), and the
    /// MAC also when the journal does not say it was written (`mac_set`).
    pub(super) fn configure_bridge(
        &self,
        link: &Link,
        cidr: Ipv4Cidr,
        mac_set: bool,
    ) -> Result<(), ExecError> {
        let name = &link.name;
        self.ipv6_off(name)?;
        // Issue #13 F2: the bridge learns a source MAC from any frame to a
        // link-local group address before (for LLDP, without) the
        // `bridge banger` hook, so any tap could move a guest's MAC to its
        // own port. Set every time, before the bridge goes up: one write.
        self.net
            .set_no_linklocal_learn(name)
            .map_err(|source| ExecError::NoLinkLocalLearn {
                name: name.clone(),
                source,
            })?;
        // Item 18: a bridge with no MAC of its own takes the lowest of its
        // ports', and whoever holds a tap's descriptor sets that tap's MAC
        // (`SIOCSIFHWADDR`, no capability). Fixed here, every time (one
        // write), before the bridge goes up: `02:ba:` and the bridge's
        // address — root's choice, from the install — in banger's own
        // locally administered range, and no guest's, since no guest may
        // hold the bridge's address (`validate::guest_address`).
        // Only when it differs (item 19): the kernel announces every MAC
        // write, the same MAC included (`NETDEV_CHANGEADDR`), and the host
        // then flushes its whole neighbour table on the bridge, permanent
        // entries too — the owner could repeat `EnsureBridge` to do that.
        // But a matching MAC is the bridge's own only once banger wrote
        // it: a bridge from before item 18 follows its lowest port's, which
        // a tap's holder may have made match (review of item 19).
        let [a, b, c, d] = cidr.address.octets();
        let mac = [0x02, 0xba, a, b, c, d];
        let set_mac_err = |source| ExecError::SetMac {
            name: name.clone(),
            source,
        };
        if !mac_set || self.net.link_mac(name).map_err(set_mac_err)? != Some(mac) {
            self.net.set_mac(name, mac).map_err(set_mac_err)?;
        }
        for stray in link.addresses.iter().filter(|a| **a != cidr) {
            self.net
                .del_address(name, *stray)
                .map_err(|source| ExecError::RemoveAddress {
                    name: name.clone(),
                    address: *stray,
                    source,
                })?;
        }
        if !link.addresses.contains(&cidr) {
            self.net
                .add_address(name, cidr)
                .map_err(|source| ExecError::SetAddress {
                    name: name.clone(),
                    address: cidr,
                    source,
                })?;
        }
        if !link.up {
            self.net.set_up(name).map_err(|source| ExecError::SetUp {
                name: name.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Forwarding on (host-wide: `net.ipv4.ip_forward`). When banger is
    /// the one turning it on, the journal says so first
    /// (`ip_forward_enabled`), so teardown turns it back off; a value that
    /// was already on is left alone and never recorded (item 15).
    pub(super) fn enable_forwarding(&self, txn: &mut Txn<'_>) -> Result<(), ExecError> {
        if self.net.ip_forward().map_err(ExecError::IpForward)? {
            return Ok(());
        }
        let recorded = txn.state.ip_forward_enabled;
        if !recorded {
            txn.state.ip_forward_enabled = true;
            txn.save()?;
        }
        let set = self.net.set_ip_forward(true).map_err(ExecError::IpForward);
        if set.is_err() && !recorded {
            txn.state.ip_forward_enabled = false;
            if let Err(e) = txn.save() {
                tracing::warn!(error = %e, "clearing ip_forward_enabled after a failed write");
            }
        }
        set
    }

    /// Teardown's end, once no bridge of banger's is left: forwarding back
    /// off when the journal says banger turned it on and it is still on;
    /// untouched otherwise. Returns what was changed, if anything.
    pub(super) fn restore_forwarding(
        &self,
        txn: &mut Txn<'_>,
    ) -> Result<Option<String>, ExecError> {
        if !txn.state.ip_forward_enabled {
            return Ok(None);
        }
        let changed = if self.net.ip_forward().map_err(ExecError::IpForward)? {
            self.net
                .set_ip_forward(false)
                .map_err(ExecError::IpForward)?;
            Some("ip_forward (banger turned it on)".to_string())
        } else {
            None
        };
        txn.state.ip_forward_enabled = false;
        Ok(changed)
    }

    /// Gap 14: banger gives guests no IPv6, and a link of banger's with
    /// IPv6 on takes router advertisements from whatever sits on a tap (an
    /// on-link route or a default route for the host, an address). Off
    /// before the link goes up, so it never runs IPv6 at all.
    pub(super) fn ipv6_off(&self, name: &str) -> Result<(), ExecError> {
        self.net
            .disable_ipv6(name)
            .map_err(|source| ExecError::DisableIpv6 {
                name: name.to_string(),
                source,
            })
    }
}
