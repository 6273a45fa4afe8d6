//! The `.vm` name service's host side: port 53 sockets on the installed
//! bridge's address, handed to the daemon, and systemd-resolved routing
//! `~vm` to it.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;

use banger_proto::net::{DNS_PORT, DnsSockets, FdIndex, ResolverSpec};

use super::{VM_DOMAIN_ROUTE, journaled_bridge, save_quietly};
use crate::error::ExecError;
use crate::{Executor, WithFds};

impl Executor {
    pub(crate) fn open_dns_sockets(
        &self,
        address: Ipv4Addr,
    ) -> Result<WithFds<DnsSockets>, ExecError> {
        // Port 53 only on the installed bridge's address, not on one a
        // bridge of an earlier choice still holds.
        self.installed_bridge(|b| b.address == address, || format!("address {address}"))?;
        {
            let txn = self.journal.open()?;
            if !txn.state.bridges.iter().any(|b| b.address == address) {
                return Err(ExecError::NotBridgeAddress {
                    address,
                    hint: String::new(),
                });
            }
        }
        // std opens both with SOCK_CLOEXEC; TcpListener sets SO_REUSEADDR
        // and listens.
        let udp = UdpSocket::bind((address, DNS_PORT)).map_err(|source| ExecError::BindDns {
            proto: "UDP",
            address,
            source,
        })?;
        let tcp = TcpListener::bind((address, DNS_PORT)).map_err(|source| ExecError::BindDns {
            proto: "TCP",
            address,
            source,
        })?;
        Ok(WithFds {
            answer: DnsSockets {
                address,
                udp: FdIndex(0),
                tcp: FdIndex(1),
            },
            fds: vec![OwnedFd::from(udp), OwnedFd::from(tcp)],
        })
    }

    pub(crate) fn apply_resolver(&self, spec: ResolverSpec) -> Result<(), ExecError> {
        // systemd-resolved is host-wide and addresses links by index: from
        // any namespace but the host's, resolvectl would configure whatever
        // host link happens to share our bridge's index. Unless it is
        // certain we are in the host's namespace, refuse.
        if self.net.in_host_netns() != Some(true) {
            return Err(ExecError::ResolverNotHostNamespace { link: spec.bridge });
        }
        self.installed_bridge_named(&spec.bridge)?;
        let mut txn = self.journal.open()?;
        let bridge = journaled_bridge(&txn.state, &spec.bridge)?;
        if bridge.address != spec.dns {
            return Err(ExecError::NotBridgeAddress {
                address: spec.dns,
                hint: format!(" (bridge {} has {})", spec.bridge, bridge.address),
            });
        }
        let link = spec.bridge.clone();
        let was_journaled = txn.state.resolver_links.contains(&link);
        if !was_journaled {
            txn.state.resolver_links.push(link.clone());
            txn.save()?;
        }
        // The routing-only domain first: a link whose only domain is `~vm`
        // is no default-route resolver for systemd-resolved, so the bridge
        // never serves the host's other names, not even between the two
        // calls (second review: the other order left a window). Then the
        // default route off explicitly, before any server: resolved older
        // than v240 does not infer it from `~vm` (third review), and a
        // resolved without the verb fails here, before the bridge serves.
        let applied = match self.net.resolver_domain(&link, VM_DOMAIN_ROUTE) {
            Err(source) if source.is_tool_missing() => {
                // resolvectl is not there for the first verb: nothing set,
                // nothing to undo with; an earlier call's entry stays for
                // teardown.
                if !was_journaled {
                    txn.state.resolver_links.retain(|l| *l != link);
                    save_quietly(&txn);
                }
                return Err(ExecError::ResolverUnavailable { link, source });
            }
            first => first
                .and_then(|()| self.net.resolver_no_default_route(&link))
                .and_then(|()| self.net.resolver_dns(&link, spec.dns)),
        };
        let Err(source) = applied else {
            return Ok(());
        };
        // Item 20: whatever part was set (the domain; on an older banger's
        // link, a default route never turned off) is undone, and the link
        // is journaled as changed only while that undoing failed (teardown
        // reverts it again). resolvectl gone after the first verb is such
        // a failure too: the revert then fails and the entry stays.
        match self.net.resolver_revert(&link) {
            Ok(()) => {
                txn.state.resolver_links.retain(|l| *l != link);
                save_quietly(&txn);
                Err(ExecError::Resolver {
                    link,
                    dns: spec.dns,
                    source,
                })
            }
            Err(revert) => Err(ExecError::ResolverNotReverted {
                link,
                dns: spec.dns,
                revert: banger_proto::error::chain(&revert).join(": "),
                source: Box::new(source),
            }),
        }
    }
}
