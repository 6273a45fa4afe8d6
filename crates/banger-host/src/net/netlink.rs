//! A minimal synchronous rtnetlink client: one socket per [`RealNet`] call,
//! opened on the calling thread (so it lives in that thread's network
//! namespace), one request at a time.
//!
//! [`RealNet`]: super::RealNet

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, IntoRawFd as _, OwnedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, Nla,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    BridgeBooleanOptionFlags, BridgeBooleanOptions, InfoBridge, InfoData, InfoKind, InfoTun,
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use super::{Ipv4Cidr, Link, LinkKind, NetError, RouteV4};

/// `IFLA_TUN_OWNER` (u32), `IFLA_TUN_GROUP` (u32) and `IFLA_TUN_TYPE`
/// (u8) inside a tun link's `IFLA_INFO_DATA`
/// (`include/uapi/linux/if_link.h`).
const IFLA_TUN_OWNER: u16 = 1;
const IFLA_TUN_GROUP: u16 = 2;
const IFLA_TUN_TYPE: u16 = 3;
/// `IFF_TAP` as reported in `IFLA_TUN_TYPE`.
const TUN_TYPE_TAP: u8 = 2;

pub(super) struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    pub(super) fn open() -> Result<Netlink, NetError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetError::Socket)?;
        socket.bind_auto().map_err(NetError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetError::Socket)?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// A client on `socket`, a route netlink socket opened elsewhere (in a
    /// jail's network namespace, by its cloner: requests on it act there).
    /// Not bound here: the kernel binds it at the first send.
    pub(super) fn on(socket: OwnedFd) -> Netlink {
        // SAFETY: `socket` is an open descriptor this function owns; its
        // ownership passes to the `Socket`, which closes it.
        let socket = unsafe { Socket::from_raw_fd(socket.into_raw_fd()) };
        Netlink { socket, seq: 0 }
    }

    /// Move the link with interface index `index` (`name`, for messages)
    /// into the network namespace behind `ns` (`RTM_SETLINK` with
    /// `IFLA_NET_NS_FD`), with `IFLA_NEW_IFINDEX` = `index` when
    /// `keep_index`: the kernel keeps the index or refuses (`EBUSY`),
    /// never gives it another. `what` says where it goes.
    pub(super) fn move_to_netns(
        &mut self,
        name: &str,
        index: u32,
        ns: BorrowedFd<'_>,
        keep_index: bool,
        what: &str,
    ) -> Result<(), NetError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        if keep_index {
            let new = i32::try_from(index).map_err(|_| NetError::Request {
                request: format!("move link #{index} ({name}) {what}"),
                source: io::Error::new(io::ErrorKind::InvalidInput, "index out of range"),
            })?;
            msg.attributes.push(LinkAttribute::NewIfIndex(new));
        }
        self.ack(
            RouteNetlinkMessage::SetLink(msg),
            0,
            &format!("move link #{index} ({name}) {what}"),
        )
    }

    /// Send a request and wait for its acknowledgement.
    pub(super) fn ack(
        &mut self,
        msg: RouteNetlinkMessage,
        extra_flags: u16,
        request: &str,
    ) -> Result<(), NetError> {
        self.exchange(
            msg,
            NLM_F_REQUEST | NLM_F_ACK | extra_flags,
            request,
            |_| {},
        )
    }

    /// Send a dump request and collect every reply.
    pub(super) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        request: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetError> {
        let mut out = Vec::new();
        self.exchange(msg, NLM_F_REQUEST | NLM_F_DUMP, request, |m| out.push(m))?;
        Ok(out)
    }

    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        request: &str,
        mut on_reply: impl FnMut(RouteNetlinkMessage),
    ) -> Result<(), NetError> {
        let failed = |source: io::Error| NetError::Request {
            request: request.to_string(),
            source,
        };
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = flags;
        packet.header.sequence_number = seq;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(failed)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        loop {
            let (datagram, _) = self.socket.recv_from_full().map_err(failed)?;
            let mut offset = 0;
            while offset < datagram.len() {
                let reply: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&datagram[offset..]).map_err(|source| {
                        NetError::Decode {
                            request: request.to_string(),
                            source,
                        }
                    })?;
                let len = reply.header.length as usize;
                let ours = reply.header.sequence_number == seq;
                match reply.payload {
                    _ if !ours => {}
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => Err(failed(io::Error::from_raw_os_error(-code.get()))),
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => on_reply(m),
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
            if !dump && flags & NLM_F_ACK == 0 {
                return Ok(());
            }
        }
    }

    /// Every link, with its IPv4 addresses.
    pub(super) fn links(&mut self) -> Result<Vec<Link>, NetError> {
        let mut links = Vec::new();
        let mut masters = Vec::new();
        for m in self.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            "list links",
        )? {
            if let RouteNetlinkMessage::NewLink(l) = m {
                let (link, master) = link_from(&l);
                links.push(link);
                masters.push(master);
            }
        }
        let names: Vec<(u32, String)> = links.iter().map(|l| (l.index, l.name.clone())).collect();
        let name_of = |idx: u32| {
            names
                .iter()
                .find(|(i, _)| *i == idx)
                .map(|(_, n)| n.clone())
        };
        for (link, master) in links.iter_mut().zip(masters) {
            link.master = master.and_then(name_of);
        }
        let mut addr = AddressMessage::default();
        addr.header.family = AddressFamily::Inet;
        for m in self.dump(RouteNetlinkMessage::GetAddress(addr), "list addresses")? {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                let Some(ip) = address_of(&a) else { continue };
                if let Some(link) = links.iter_mut().find(|l| l.index == a.header.index) {
                    link.addresses.push(Ipv4Cidr::new(ip, a.header.prefix_len));
                }
            }
        }
        Ok(links)
    }

    /// The index of the link called `name`.
    pub(super) fn index_of(&mut self, name: &str) -> Result<u32, NetError> {
        Ok(self.get_link(name)?.header.index)
    }

    /// The MAC of the link called `name` (`IFLA_ADDRESS`), if it has a
    /// six-byte one.
    pub(super) fn link_mac(&mut self, name: &str) -> Result<Option<[u8; 6]>, NetError> {
        Ok(self
            .get_link(name)?
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
                _ => None,
            }))
    }

    /// The kernel's description of the link called `name` (`RTM_GETLINK`).
    fn get_link(&mut self, name: &str) -> Result<LinkMessage, NetError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let mut found = None;
        let res = self.exchange(
            RouteNetlinkMessage::GetLink(msg),
            NLM_F_REQUEST,
            &format!("get link {name}"),
            |m| {
                if let RouteNetlinkMessage::NewLink(l) = m {
                    found = Some(l);
                }
            },
        );
        match res {
            Err(e) if e.errno() == Some(libc::ENODEV) => Err(NetError::NoSuchLink {
                name: name.to_string(),
            }),
            Err(e) => Err(e),
            Ok(()) => found.ok_or_else(|| NetError::NoSuchLink {
                name: name.to_string(),
            }),
        }
    }

    pub(super) fn create_bridge(&mut self, name: &str) -> Result<(), NetError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.ack(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("create bridge {name}"),
        )
    }

    /// One `RTM_NEWLINK` change to the existing link `name`: `fill` sets
    /// what changes on a message that already names the link's index.
    fn change_link(
        &mut self,
        name: &str,
        what: &str,
        fill: impl FnOnce(&mut LinkMessage),
    ) -> Result<(), NetError> {
        let mut msg = LinkMessage::default();
        msg.header.index = self.index_of(name)?;
        fill(&mut msg);
        self.ack(RouteNetlinkMessage::NewLink(msg), 0, what)
    }

    pub(super) fn set_up(&mut self, name: &str) -> Result<(), NetError> {
        self.change_link(name, &format!("set {name} up"), |msg| {
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
        })
    }

    pub(super) fn set_down(&mut self, name: &str) -> Result<(), NetError> {
        self.change_link(name, &format!("set {name} down"), |msg| {
            msg.header.flags = LinkFlags::empty();
            msg.header.change_mask = LinkFlags::Up;
        })
    }

    /// `IFLA_BR_MULTI_BOOLOPT` with `BR_BOOLOPT_NO_LL_LEARN` set (and only
    /// that bit in the mask, so no other option changes). A kernel without
    /// the option (before 5.0) refuses the request.
    pub(super) fn set_no_linklocal_learn(&mut self, name: &str) -> Result<(), NetError> {
        let flag = BridgeBooleanOptionFlags::NoLinkLocalLearn;
        self.change_link(name, &format!("set no_linklocal_learn on {name}"), |msg| {
            msg.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Bridge),
                LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::MultiBoolOpt(
                    BridgeBooleanOptions {
                        value: flag,
                        mask: flag,
                    },
                )])),
            ]))
        })
    }

    pub(super) fn set_mac(&mut self, name: &str, mac: [u8; 6]) -> Result<(), NetError> {
        self.change_link(name, &format!("set the MAC of {name}"), |msg| {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()))
        })
    }

    pub(super) fn set_master(&mut self, name: &str, master: &str) -> Result<(), NetError> {
        let master_index = self.index_of(master)?;
        self.change_link(name, &format!("set master of {name} to {master}"), |msg| {
            msg.attributes.push(LinkAttribute::Controller(master_index))
        })
    }

    /// Make the link with index `link` a port of the one with index
    /// `master` (`RTM_NEWLINK` with `IFLA_MASTER`): both named by the index
    /// the caller checked, never looked up again by name.
    pub(super) fn set_master_index(&mut self, link: u32, master: u32) -> Result<(), NetError> {
        let mut msg = LinkMessage::default();
        msg.header.index = link;
        msg.attributes.push(LinkAttribute::Controller(master));
        self.ack(
            RouteNetlinkMessage::NewLink(msg),
            0,
            &format!("set master of link #{link} to link #{master}"),
        )
    }

    /// Delete a link; `Ok(false)` when it did not exist.
    pub(super) fn delete_link(&mut self, name: &str) -> Result<bool, NetError> {
        let index = match self.index_of(name) {
            Ok(i) => i,
            Err(NetError::NoSuchLink { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.delete_link_index(index)
    }

    /// Delete the link with interface index `index` (`RTM_DELLINK` naming
    /// only the index); `Ok(false)` when no link has it.
    pub(super) fn delete_link_index(&mut self, index: u32) -> Result<bool, NetError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.ack(
            RouteNetlinkMessage::DelLink(msg),
            0,
            &format!("delete link #{index}"),
        ) {
            Ok(()) => Ok(true),
            // Gone between the lookup and the delete: someone else removed it.
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn address_message(&mut self, link: &str, cidr: Ipv4Cidr) -> Result<AddressMessage, NetError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = cidr.prefix_len;
        msg.header.scope = AddressScope::Universe;
        msg.header.index = self.index_of(link)?;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(cidr.address)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(cidr.address)));
        Ok(msg)
    }

    pub(super) fn add_address(&mut self, link: &str, cidr: Ipv4Cidr) -> Result<(), NetError> {
        let mut msg = self.address_message(link, cidr)?;
        if cidr.prefix_len < 31 {
            msg.attributes
                .push(AddressAttribute::Broadcast(cidr.broadcast()));
        }
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("add address {cidr} to {link}"),
        )
    }

    pub(super) fn del_address(&mut self, link: &str, cidr: Ipv4Cidr) -> Result<(), NetError> {
        let msg = self.address_message(link, cidr)?;
        self.ack(
            RouteNetlinkMessage::DelAddress(msg),
            0,
            &format!("delete address {cidr} from {link}"),
        )
    }

    /// IPv4 unicast routes in every table.
    pub(super) fn routes_v4(&mut self) -> Result<Vec<RouteV4>, NetError> {
        let links = self.links()?;
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let mut routes = Vec::new();
        for m in self.dump(RouteNetlinkMessage::GetRoute(msg), "list IPv4 routes")? {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if r.header.kind != RouteType::Unicast {
                continue;
            }
            let mut destination = Ipv4Addr::UNSPECIFIED;
            let mut interface = None;
            let mut table = u32::from(r.header.table);
            let mut gateways = Vec::new();
            let mut nexthop_id = None;
            for attr in &r.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = *ip,
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateways.push(*ip),
                    RouteAttribute::MultiPath(hops) => {
                        for hop in hops {
                            for a in &hop.attributes {
                                if let RouteAttribute::Gateway(RouteAddress::Inet(ip)) = a {
                                    gateways.push(*ip);
                                }
                            }
                        }
                    }
                    RouteAttribute::Oif(idx) => {
                        interface = links
                            .iter()
                            .find(|l| l.index == *idx)
                            .map(|l| l.name.clone())
                    }
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::NhId(id) => nexthop_id = Some(*id),
                    _ => {}
                }
            }
            routes.push(RouteV4 {
                destination: Ipv4Cidr::new(destination, r.header.destination_prefix_length),
                interface,
                table,
                gateways,
                nexthop_id,
            });
        }
        Ok(routes)
    }
}

/// A link message as a [`Link`] (addresses empty) plus its master's index.
fn link_from(l: &LinkMessage) -> (Link, Option<u32>) {
    let mut name = String::new();
    let mut master = None;
    let mut kind = LinkKind::Unspecified;
    let (mut tap_owner, mut tap_group) = (None, None);
    for attr in &l.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Controller(idx) => master = Some(*idx),
            LinkAttribute::LinkInfo(infos) => {
                let (k, owner, group) = kind_from(infos);
                kind = k;
                (tap_owner, tap_group) = (owner, group);
            }
            _ => {}
        }
    }
    let link = Link {
        index: l.header.index,
        name,
        kind,
        master: None,
        up: l.header.flags.contains(LinkFlags::Up),
        addresses: Vec::new(),
        link_type: u16::from(l.header.link_layer_type),
        tap_owner,
        tap_group,
    };
    (link, master)
}

/// The link's kind, and a tun device's owner and group (when set).
fn kind_from(infos: &[LinkInfo]) -> (LinkKind, Option<u32>, Option<u32>) {
    let mut kind = LinkKind::Unspecified;
    let mut tun_type = None;
    let (mut owner, mut group) = (None, None);
    for info in infos {
        match info {
            LinkInfo::Kind(InfoKind::Bridge) => kind = LinkKind::Bridge,
            LinkInfo::Kind(InfoKind::Tun) => kind = LinkKind::Tun,
            LinkInfo::Kind(other) => kind = LinkKind::Other(other.to_string()),
            LinkInfo::Data(InfoData::Tun(nlas)) => {
                for nla in nlas {
                    let InfoTun::Other(nla) = nla else { continue };
                    let mut value = vec![0; nla.value_len()];
                    nla.emit_value(&mut value);
                    let id = || {
                        value
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map(u32::from_ne_bytes)
                    };
                    match nla.kind() {
                        IFLA_TUN_OWNER => owner = id(),
                        IFLA_TUN_GROUP => group = id(),
                        IFLA_TUN_TYPE => tun_type = value.first().copied(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if kind == LinkKind::Tun && tun_type == Some(TUN_TYPE_TAP) {
        kind = LinkKind::Tap;
    }
    if !matches!(kind, LinkKind::Tap | LinkKind::Tun) {
        (owner, group) = (None, None);
    }
    (kind, owner, group)
}

fn address_of(a: &AddressMessage) -> Option<Ipv4Addr> {
    let mut address = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(IpAddr::V4(ip)) => return Some(*ip),
            AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
            _ => {}
        }
    }
    address
}
