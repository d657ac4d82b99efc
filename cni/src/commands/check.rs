//! CHECK: the pod's network still matches the recorded result (`prevResult`).

use super::runtime;
use crate::bridge;
use crate::config::{Ipam, NetConf, format_mac};
use crate::env::Env;
use crate::error::{Error, Result};
use crate::ipam::{self, FileStore, Owner};
use crate::link::Netlink;
use crate::netns::NetNs;

pub fn cmd_check(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<()> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| Error::InvalidConfig("CHECK needs prevResult".into()))?;
    let netns = env.netns.as_ref().ok_or(Error::InvalidEnv { name: "CNI_NETNS", why: "missing".into() })?;
    let ns = NetNs::open(netns)?;
    check_ipam(env, conf, stdin, prev)?;
    let mismatch = |what: String| Err(Error::CheckMismatch(what));

    runtime()?.block_on(async {
        let pod_nl = Netlink::connect_in(&ns)?;
        let Some(link) = pod_nl.link(&env.ifname).await? else {
            return mismatch(format!("interface {} is missing in {}", env.ifname, netns.display()));
        };
        let ours = prev.interfaces.iter().position(|i| i.name == env.ifname && i.sandbox.is_some());
        if let Some(mac) = ours.and_then(|i| prev.interfaces[i].mac.as_ref())
            && *mac != format_mac(&link.mac)
        {
            return mismatch(format!("{} has MAC {}, expected {mac}", env.ifname, format_mac(&link.mac)));
        }
        let present = pod_nl.addresses(&link).await?;
        for ip in prev.ips.iter().filter(|ip| ip.interface.is_none() || ip.interface == ours) {
            if !present.contains(&ip.address) {
                return mismatch(format!("address {} is missing on {}", ip.address, env.ifname));
            }
        }
        for family_v6 in [false, true] {
            let table = pod_nl.routes(family_v6).await?;
            for route in prev.routes.iter().filter(|r| r.dst.addr().is_ipv6() == family_v6) {
                let found =
                    table.iter().any(|entry| entry.dst == route.dst && (route.gw.is_none() || entry.gw == route.gw));
                if !found {
                    return mismatch(format!("route to {} via {:?} is missing", route.dst, route.gw));
                }
            }
        }
        let host_nl = Netlink::connect()?;
        let host_name = bridge::host_veth_name(&env.container_id, &env.ifname);
        let bridge_link = host_nl.link(&conf.bridge).await?;
        let host = host_nl.link(&host_name).await?;
        match (bridge_link, host) {
            (Some(br), Some(host)) if host.controller == Some(br.index) => Ok(()),
            (None, _) => mismatch(format!("bridge {} is missing", conf.bridge)),
            _ => mismatch(format!("host veth {host_name} is missing or not on bridge {}", conf.bridge)),
        }
    })
}

fn check_ipam(env: &Env, conf: &NetConf, stdin: &[u8], prev: &crate::spec::CniResult) -> Result<()> {
    match &conf.ipam {
        Ipam::Delegate { plugin } => ipam::delegate::exec(plugin, &env.path, "CHECK", stdin).map(|_| ()),
        Ipam::Builtin(ipam_conf) => {
            let store = FileStore::open_locked(&ipam_conf.network_dir)?;
            let owner = Owner::new(&env.container_id, &env.ifname);
            let held = ipam::addresses_of(&store, &owner)?;
            for ip in &prev.ips {
                if !held.contains(&ip.address.addr()) {
                    return Err(Error::CheckMismatch(format!(
                        "address {} is not allocated to {}/{}",
                        ip.address, env.container_id, env.ifname
                    )));
                }
            }
            Ok(())
        }
    }
}
