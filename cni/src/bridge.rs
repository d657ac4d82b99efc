//! The bridge steps of ADD: the bridge itself, the veth pair with one end on
//! the bridge and one in the pod, and the pod side's addresses and routes.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{NetConf, format_mac};
use crate::error::{Error, Result};
use crate::link::{Link, Netlink, is_errno};
use crate::netns::NetNs;
use crate::spec::{Interface, IpConfig, Route};

/// The host end's name is derived from the attachment, so DEL finds it even
/// without the pod's namespace: `wv` + FNV-1a of `containerID/ifname`.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in container_id.bytes().chain([b'/']).chain(ifname.bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("wv{hash:08x}")
}

/// Creates the bridge when missing (tolerating a parallel ADD creating it
/// first) and brings it up; refuses a non-bridge link of that name.
pub async fn ensure_bridge(nl: &Netlink, conf: &NetConf) -> Result<Link> {
    let link = match nl.bridge(&conf.bridge).await? {
        Some(link) => link,
        None => {
            match nl.add_bridge(&conf.bridge, conf.mtu).await {
                Ok(()) => {}
                Err(Error::Netlink { source, .. }) if is_errno(&source, libc::EEXIST) => {}
                Err(err) => return Err(err),
            }
            // Whatever holds the name now: ours, a parallel ADD's, or a link
            // of another kind (refused below).
            nl.link(&conf.bridge)
                .await?
                .ok_or_else(|| Error::InvalidConfig(format!("bridge {} vanished after creation", conf.bridge)))?
        }
    };
    if link.kind != Some(rtnetlink::packet_route::link::InfoKind::Bridge) {
        return Err(Error::InvalidConfig(format!("{} already exists and is not a bridge", conf.bridge)));
    }
    if !link.up {
        nl.set_up(&link).await?;
    }
    if conf.promisc_mode {
        nl.set_promisc(&link, true).await?;
    }
    Ok(link)
}

/// isGateway: the bridge holds each gateway address. An address of the same
/// family inside the new subnet is an error unless forceAddress replaces it.
pub async fn ensure_gateway_addresses(nl: &Netlink, bridge: &Link, gateways: &[IpNet], force: bool) -> Result<()> {
    let existing = nl.addresses(bridge).await?;
    for gw in gateways {
        if existing.contains(gw) {
            continue;
        }
        for old in existing.iter().filter(|old| old.addr().is_ipv4() == gw.addr().is_ipv4()) {
            let clashes = gw.contains(&old.addr()) || old.contains(&gw.addr());
            if clashes && !is_link_local(old.addr()) {
                if !force {
                    return Err(Error::InvalidConfig(format!(
                        "bridge {} already has address {old}, not {gw} (set forceAddress to replace it)",
                        bridge.name
                    )));
                }
                nl.del_address(bridge, *old).await?;
            }
        }
        nl.add_address(bridge, *gw).await?;
    }
    Ok(())
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

/// The veth pair, already in place: the host end on the bridge and up.
#[derive(Debug)]
pub struct Veth {
    pub host: Link,
    pub container: Link,
}

/// Creates the pair with the pod end born inside `ns` under `ifname`.
pub async fn create_veth(
    host_nl: &Netlink,
    pod_nl: &Netlink,
    ns: &NetNs,
    conf: &NetConf,
    host_name: &str,
    ifname: &str,
    bridge: &Link,
) -> Result<Veth> {
    let add = || host_nl.add_veth(host_name, bridge.index, ifname, ns.fd(), conf.mtu, conf.mac);
    let mut added = add().await;
    // The pod end was checked absent, so EEXIST names the host end: a leftover
    // of this very attachment (its name derives from it) from a crashed ADD.
    if matches!(&added, Err(err) if is_errno(err, libc::EEXIST)) && host_nl.del_link(host_name).await? {
        added = add().await;
    }
    let missing = |name: &str| Error::InvalidConfig(format!("veth end {name} vanished after creation"));
    let host = match added {
        Ok(Some(host)) => host,
        Ok(None) => host_nl.link(host_name).await?.ok_or_else(|| missing(host_name))?,
        Err(err) if is_errno(&err, libc::EEXIST) => {
            return Err(Error::InterfaceExists {
                ifname: format!("{ifname} or {host_name}"),
                netns: ns.path().display().to_string(),
            });
        }
        Err(err) => return Err(Error::netlink(format!("creating veth {host_name}/{ifname}"), err)),
    };
    if conf.hairpin_mode {
        host_nl.set_hairpin(&host, true).await?;
    }
    let container = pod_nl.link(ifname).await?.ok_or_else(|| missing(ifname))?;
    Ok(Veth { host, container })
}

/// Addresses, link up, then routes; a route without `gw` goes through the
/// gateway of its family, as libcni's ConfigureIface does.
pub async fn configure_pod_side(pod_nl: &Netlink, link: &Link, ips: &[IpConfig], routes: &[Route]) -> Result<()> {
    for ip in ips {
        pod_nl.add_address(link, ip.address).await?;
    }
    if !link.up {
        pod_nl.set_up(link).await?;
    }
    for route in routes {
        let v4 = route.dst.addr().is_ipv4();
        let gw =
            route.gw.or_else(|| ips.iter().filter(|ip| ip.address.addr().is_ipv4() == v4).find_map(|ip| ip.gateway));
        pod_nl.add_route(route.dst, gw, link).await?;
    }
    Ok(())
}

/// The three interfaces of a bridge result, in the reference plugin's order.
pub fn result_interfaces(bridge: &Link, veth: &Veth, sandbox: &NetNs) -> Vec<Interface> {
    vec![
        Interface { name: bridge.name.clone(), mac: Some(format_mac(&bridge.mac)), mtu: bridge.mtu, sandbox: None },
        Interface {
            name: veth.host.name.clone(),
            mac: Some(format_mac(&veth.host.mac)),
            mtu: veth.host.mtu,
            sandbox: None,
        },
        Interface {
            name: veth.container.name.clone(),
            mac: Some(format_mac(&veth.container.mac)),
            mtu: veth.container.mtu,
            sandbox: Some(sandbox.path().display().to_string()),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_short_and_distinct_per_attachment() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(a, host_veth_name("abd", "eth0"));
        assert!(a.len() <= 15 && a.starts_with("wv"));
    }
}
