//! GC (CNI 1.1): release whatever belongs to attachments the runtime no
//! longer knows (`cni.dev/valid-attachments`).

use std::collections::HashSet;

use super::runtime;
use crate::bridge;
use crate::config::{Ipam, NetConf};
use crate::env::Env;
use crate::error::Result;
use crate::ipam::{self, FileStore};
use crate::link::Netlink;

pub fn cmd_gc(_env: &Env, conf: &NetConf) -> Result<()> {
    if let Ipam::Builtin(ipam_conf) = &conf.ipam {
        let mut store = FileStore::open_locked(&ipam_conf.network_dir)?;
        let freed = ipam::collect_garbage(&mut store, &conf.valid_attachments)?;
        tracing::info!(?freed, "GC released addresses");
    }
    // Stale host ends on our bridge: those named like ours but not derived
    // from any valid attachment.
    runtime()?.block_on(async {
        let nl = Netlink::connect()?;
        let Some(bridge_link) = nl.link(&conf.bridge).await? else {
            return Ok(());
        };
        let keep: HashSet<String> =
            conf.valid_attachments.iter().map(|a| bridge::host_veth_name(&a.container_id, &a.ifname)).collect();
        for link in nl.links().await? {
            let ours =
                link.controller == Some(bridge_link.index) && link.name.starts_with("wv") && link.name.len() == 10;
            if ours && !keep.contains(&link.name) {
                tracing::info!(link = %link.name, "GC deleting stale veth");
                nl.del_link(&link.name).await?;
            }
        }
        Ok(())
    })
}
