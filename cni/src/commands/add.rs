//! ADD: address from IPAM, bridge, veth pair, pod-side configuration, result.
//! Every step taken is undone when a later one fails.

use ipnet::IpNet;

use super::{ipam_add, ipam_del, runtime};
use crate::bridge;
use crate::config::NetConf;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::link::Netlink;
use crate::netns::NetNs;
use crate::spec::{CniResult, Route};
use crate::sysctl;

pub fn cmd_add(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<CniResult> {
    let netns = env.netns.as_ref().ok_or(Error::InvalidEnv { name: "CNI_NETNS", why: "missing".into() })?;
    let ns = NetNs::open(netns)?;
    runtime()?.block_on(async {
        let host_nl = Netlink::connect()?;
        let pod_nl = Netlink::connect_in(&ns)?;
        // Checked before anything is allocated, so this failure leaves nothing to undo.
        if pod_nl.link(&env.ifname).await?.is_some() {
            return Err(Error::InterfaceExists { ifname: env.ifname.clone(), netns: netns.display().to_string() });
        }
        let ipam = ipam_add(env, conf, stdin)?;
        let host_name = bridge::host_veth_name(&env.container_id, &env.ifname);
        match attach(env, conf, &ns, &host_nl, &pod_nl, &host_name, ipam).await {
            Ok(result) => Ok(result),
            Err(err) => {
                tracing::warn!(error = %err, "ADD failed, undoing");
                undo(env, conf, stdin, &host_nl, &host_name).await;
                Err(err)
            }
        }
    })
}

async fn undo(env: &Env, conf: &NetConf, stdin: &[u8], host_nl: &Netlink, host_name: &str) {
    // Deleting the host end removes the pod end with it.
    if let Err(err) = host_nl.del_link(host_name).await {
        tracing::error!(error = %err, host_name, "undo: deleting the veth pair");
    }
    if let Err(err) = ipam_del(env, conf, stdin) {
        tracing::error!(error = %err, "undo: releasing addresses");
    }
}

async fn attach(
    env: &Env,
    conf: &NetConf,
    ns: &NetNs,
    host_nl: &Netlink,
    pod_nl: &Netlink,
    host_name: &str,
    ipam: CniResult,
) -> Result<CniResult> {
    if ipam.ips.is_empty() {
        return Err(Error::InvalidConfig("IPAM returned no addresses".into()));
    }
    let bridge_link = bridge::ensure_bridge(host_nl, conf).await?;
    let veth = bridge::create_veth(host_nl, pod_nl, ns, conf, host_name, &env.ifname, &bridge_link).await?;

    let mut routes = ipam.routes.clone();
    if conf.is_default_gateway {
        add_default_routes(&mut routes, &ipam);
    }
    bridge::configure_pod_side(pod_nl, &veth.container, &ipam.ips, &routes).await?;

    if conf.is_gateway {
        let gateways: Vec<IpNet> = ipam
            .ips
            .iter()
            .filter_map(|ip| ip.gateway.and_then(|gw| IpNet::new(gw, ip.address.prefix_len()).ok()))
            .collect();
        bridge::ensure_gateway_addresses(host_nl, &bridge_link, &gateways, conf.force_address).await?;
        let v4 = ipam.ips.iter().any(|ip| ip.address.addr().is_ipv4());
        let v6 = ipam.ips.iter().any(|ip| ip.address.addr().is_ipv6());
        sysctl::enable_forwarding(v4, v6)?;
    }
    if conf.ip_masq {
        // Masquerading belongs to waggle's eBPF dataplane; no iptables here.
        tracing::info!("ipMasq requested: left to the waggle dataplane");
    }

    // The bridge's MAC may change as ports join, so read it after attaching.
    let bridge_link = host_nl.bridge(&conf.bridge).await?.unwrap_or(bridge_link);
    Ok(build_result(conf, ipam, routes, bridge::result_interfaces(&bridge_link, &veth, ns)))
}

/// isDefaultGateway: a default route per family through that family's gateway,
/// unless the IPAM routes already carry one.
fn add_default_routes(routes: &mut Vec<Route>, ipam: &CniResult) {
    for ip in &ipam.ips {
        let Some(gw) = ip.gateway else { continue };
        let dst: IpNet = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" }.parse().unwrap_or(ip.address);
        if !routes.iter().any(|r| r.dst == dst) {
            routes.push(Route { dst, gw: Some(gw) });
        }
    }
}

/// Our interfaces come after any a previous plugin reported, and each IP
/// points at the pod interface.
fn build_result(
    conf: &NetConf,
    ipam: CniResult,
    routes: Vec<Route>,
    interfaces: Vec<crate::spec::Interface>,
) -> CniResult {
    let mut result = conf.prev_result.clone().unwrap_or_default();
    let pod_index = result.interfaces.len() + interfaces.len() - 1;
    result.interfaces.extend(interfaces);
    result.ips.extend(ipam.ips.into_iter().map(|mut ip| {
        ip.interface = Some(pod_index);
        ip
    }));
    result.routes.extend(routes);
    if result.dns == Default::default() {
        result.dns = ipam.dns;
    }
    result.convert_to(conf.version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::IpConfig;

    #[test]
    fn default_routes_are_added_per_family_but_never_twice() {
        let ipam = CniResult {
            ips: vec![
                IpConfig {
                    version: None,
                    interface: None,
                    address: "10.1.0.2/24".parse().expect("net"),
                    gateway: Some("10.1.0.1".parse().expect("ip")),
                },
                IpConfig {
                    version: None,
                    interface: None,
                    address: "fd00::2/64".parse().expect("net"),
                    gateway: Some("fd00::1".parse().expect("ip")),
                },
            ],
            ..Default::default()
        };
        let mut routes = vec![Route { dst: "0.0.0.0/0".parse().expect("net"), gw: None }];
        add_default_routes(&mut routes, &ipam);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1].dst.to_string(), "::/0");
    }
}
