//! A small typed wrapper over rtnetlink: links, addresses and routes in one
//! network namespace (the one the netlink socket was opened in).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use futures_util::{StreamExt as _, TryStreamExt as _};
use ipnet::IpNet;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{Error, Result};
use crate::netns::NetNs;

/// What the plugin needs to know about a link.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: Option<u32>,
    pub controller: Option<u32>,
    pub kind: Option<InfoKind>,
    pub up: bool,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: Vec::new(),
            mtu: None,
            controller: None,
            kind: None,
            up: msg.header.flags.contains(LinkFlags::Up),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Address(mac) => link.mac = mac.clone(),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
                LinkAttribute::Controller(index) => link.controller = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A route as CHECK compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
}

/// True when a netlink failure is the kernel's `errno`.
pub fn is_errno(err: &rtnetlink::Error, errno: i32) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(msg) if msg.code.is_some_and(|c| c.get() == -errno))
}

fn not_found(err: &rtnetlink::Error) -> bool {
    is_errno(err, libc::ENODEV) || is_errno(err, libc::ENOENT)
}

/// A netlink connection bound to one namespace. Must be created inside a tokio runtime.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// The namespace the plugin runs in (the host side).
    pub fn connect() -> Result<Self> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|err| Error::io("opening a netlink socket", err))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// A socket opened inside `ns`; it keeps talking to `ns` afterwards.
    pub fn connect_in(ns: &NetNs) -> Result<Self> {
        let (conn, handle, _) = ns
            .enter(rtnetlink::new_connection)?
            .map_err(|err| Error::io(format!("opening a netlink socket in {}", ns.path().display()), err))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        let mut stream = self.handle.link().get().match_name(name.to_string()).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.as_ref().map(Link::from_message)),
            Err(err) if not_found(&err) => Ok(None),
            Err(err) => Err(Error::netlink(format!("looking up link {name}"), err)),
        }
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|err| Error::netlink("listing links", err))?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    pub async fn add_bridge(&self, name: &str, mtu: Option<u32>) -> Result<()> {
        let mut builder = LinkBridge::new(name);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(|err| Error::netlink(format!("creating bridge {name}"), err))
    }

    /// Creates `host` here, already a port of `controller` and up, and its
    /// peer `peer` directly inside the namespace `peer_ns`, so no interface is
    /// ever renamed or moved. One request instead of three: the kernel applies
    /// IFLA_MASTER and the header's flags to a link it creates. (Not to the
    /// peer: veth configures it before pairing, and a peerless veth refuses
    /// to go up with ENOTCONN.) NLM_F_ECHO has the kernel send the new host
    /// end back (from Linux 6.3), which saves looking it up afterwards;
    /// `Ok(None)` when the kernel did not echo it.
    ///
    /// Both ends get one TX and one RX queue from the start. Without these
    /// attributes veth allocates a queue per possible CPU and then trims the
    /// real count to one on each end (`veth_init_queues`), and trimming a
    /// registered device waits for an RCU grace period under the RTNL:
    /// measured with perf (sched_switch stacks), two expedited grace periods
    /// per ADD, over half of ADD's time on a loaded machine. One queue is the
    /// real count veth ends up with anyway.
    pub async fn add_veth(
        &self,
        host: &str,
        controller: u32,
        peer: &str,
        peer_ns: RawFd,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
    ) -> std::result::Result<Option<Link>, rtnetlink::Error> {
        let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .setns_by_fd(peer_ns)
            .append_extra_attribute(LinkAttribute::NumTxQueues(1))
            .append_extra_attribute(LinkAttribute::NumRxQueues(1));
        let mut builder = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .controller(controller)
            .append_extra_attribute(LinkAttribute::NumTxQueues(1))
            .append_extra_attribute(LinkAttribute::NumRxQueues(1))
            .up();
        if let Some(mtu) = mtu {
            peer_msg = peer_msg.mtu(mtu);
            builder = builder.mtu(mtu);
        }
        if let Some(mac) = peer_mac {
            peer_msg = peer_msg.address(mac.to_vec());
        }
        let builder = builder.set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(builder.build()));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO;
        let mut responses = self.handle.clone().request(req)?;
        let mut echoed = None;
        while let Some(msg) = responses.next().await {
            match msg.payload {
                NetlinkPayload::Error(err) => return Err(rtnetlink::Error::NetlinkError(err)),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    echoed.get_or_insert_with(|| Link::from_message(&link));
                }
                _ => {}
            }
        }
        Ok(echoed)
    }

    /// The bridge called `name`, or `None` when there is no bridge of that
    /// name (a link of another kind included). A dump of the bridges rather
    /// than a get by name: `rtnl_getlink` first runs the link's pending
    /// link-watch event (`linkwatch_sync_dev`), and for a bridge whose carrier
    /// just changed (its first port joined, its last one left) that is a
    /// qdisc deactivation waiting for an RCU grace period under the RTNL;
    /// perf showed it costing ADD 1.5–3 ms. A dump does not, and the kernel
    /// filters it to bridges (IFLA_LINKINFO kind), one message per bridge.
    pub async fn bridge(&self, name: &str) -> Result<Option<Link>> {
        let mut req = self.handle.link().get();
        req.message_mut().attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        let mut stream = req.execute();
        let mut found = None;
        while let Some(msg) = stream.try_next().await.map_err(|err| Error::netlink("listing bridges", err))? {
            let link = Link::from_message(&msg);
            if link.name == name && link.kind == Some(InfoKind::Bridge) {
                found = Some(link);
            }
        }
        Ok(found)
    }

    async fn set(&self, what: String, msg: LinkMessage) -> Result<()> {
        self.handle.link().set(msg).execute().await.map_err(|err| Error::netlink(what, err))
    }

    pub async fn set_up(&self, link: &Link) -> Result<()> {
        self.set(format!("setting {} up", link.name), LinkUnspec::new_with_index(link.index).up().build()).await
    }

    pub async fn set_promisc(&self, link: &Link, on: bool) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link.index).promiscuous(on).build();
        self.set(format!("setting promiscuous mode on {}", link.name), msg).await
    }

    pub async fn set_hairpin(&self, port: &Link, on: bool) -> Result<()> {
        self.handle
            .link()
            .set_port(LinkBridgePort::new(port.index).hairpin(on).build())
            .execute()
            .await
            .map_err(|err| Error::netlink(format!("setting hairpin mode on {}", port.name), err))
    }

    /// Deletes the link called `name`; `Ok(false)` when there was none. The
    /// kernel looks the name up itself (index 0 + IFLA_IFNAME): one request.
    pub async fn del_link(&self, name: &str) -> Result<bool> {
        let mut req = self.handle.link().del(0);
        req.message_mut().attributes.push(LinkAttribute::IfName(name.to_string()));
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(err) if not_found(&err) => Ok(false),
            Err(err) => Err(Error::netlink(format!("deleting link {name}"), err)),
        }
    }

    pub async fn addresses(&self, link: &Link) -> Result<Vec<IpNet>> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect()
            .await
            .map_err(|err| Error::netlink(format!("listing addresses of {}", link.name), err))?;
        let mut out = Vec::new();
        for msg in msgs {
            if msg.header.index != link.index {
                continue;
            }
            let addr = msg.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = addr.and_then(|ip| IpNet::new(ip, msg.header.prefix_len).ok()) {
                out.push(ip);
            }
        }
        Ok(out)
    }

    /// IPv6 addresses skip duplicate address detection, so they work at once
    /// (the address came from IPAM and is unique on the bridge).
    pub async fn add_address(&self, link: &Link, addr: IpNet) -> Result<()> {
        let mut req = self.handle.address().add(link.index, addr.addr(), addr.prefix_len());
        if addr.addr().is_ipv6() {
            req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(err) if is_errno(&err, libc::EEXIST) => Ok(()),
            Err(err) => Err(Error::netlink(format!("adding {addr} to {}", link.name), err)),
        }
    }

    pub async fn del_address(&self, link: &Link, addr: IpNet) -> Result<()> {
        let mut req = self.handle.address().get().set_link_index_filter(link.index).execute();
        while let Some(msg) = req.try_next().await.map_err(|err| Error::netlink("listing addresses", err))? {
            let same = msg.header.prefix_len == addr.prefix_len()
                && msg.attributes.iter().any(|a| matches!(a, AddressAttribute::Address(ip) if *ip == addr.addr()));
            if same && msg.header.index == link.index {
                return self
                    .handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(|err| Error::netlink(format!("removing {addr} from {}", link.name), err));
            }
        }
        Ok(())
    }

    pub async fn add_route(&self, dst: IpNet, gw: Option<IpAddr>, oif: &Link) -> Result<()> {
        let what = || format!("adding route {dst} via {gw:?} dev {}", oif.name);
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .map_err(|err| Error::InvalidConfig(format!("{}: {err}", what())))?
            .output_interface(oif.index);
        if let Some(gw) = gw {
            builder = builder.gateway(gw).map_err(|err| Error::InvalidConfig(format!("{}: {err}", what())))?;
        }
        match self.handle.route().add(builder.build()).execute().await {
            Ok(()) => Ok(()),
            Err(err) if is_errno(&err, libc::EEXIST) => Ok(()),
            Err(err) => Err(Error::netlink(what(), err)),
        }
    }

    pub async fn routes(&self, ipv6: bool) -> Result<Vec<RouteEntry>> {
        let query = if ipv6 {
            RouteMessageBuilder::<Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        };
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|err| Error::netlink("listing routes", err))?;
        let mut out = Vec::new();
        for msg in msgs {
            let mut dst = if ipv6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
            let mut gw = None;
            let mut oif = None;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Destination(addr) => dst = route_addr(addr).unwrap_or(dst),
                    RouteAttribute::Gateway(addr) => gw = route_addr(addr),
                    RouteAttribute::Oif(index) => oif = Some(*index),
                    _ => {}
                }
            }
            if let Ok(dst) = IpNet::new(dst, msg.header.destination_prefix_length) {
                out.push(RouteEntry { dst, gw, oif });
            }
        }
        Ok(out)
    }
}

fn route_addr(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}
