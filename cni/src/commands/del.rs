//! DEL: release addresses and remove the veth pair. Idempotent: a second DEL,
//! a DEL without CNI_NETNS, or after the namespace is gone all succeed.

use super::{ipam_del, runtime};
use crate::bridge;
use crate::config::NetConf;
use crate::env::Env;
use crate::error::Result;
use crate::link::Netlink;
use crate::netns::NetNs;

pub fn cmd_del(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<()> {
    ipam_del(env, conf, stdin)?;
    runtime()?.block_on(async {
        // Deleting the host end takes the pod end with it: one request from
        // the host side, found by its derived name even without CNI_NETNS.
        let host_nl = Netlink::connect()?;
        if host_nl.del_link(&bridge::host_veth_name(&env.container_id, &env.ifname)).await? {
            return Ok(());
        }
        // No host end: whatever is left of the pod end still goes.
        if let Some(path) = &env.netns {
            match NetNs::open(path) {
                Ok(ns) => {
                    Netlink::connect_in(&ns)?.del_link(&env.ifname).await?;
                }
                Err(err) => tracing::info!(error = %err, "DEL: namespace already gone"),
            }
        }
        Ok(())
    })
}
