//! STATUS (CNI 1.1): can the plugin serve an ADD right now?

use std::collections::HashSet;

use crate::config::{Ipam, NetConf};
use crate::env::Env;
use crate::error::{Error, Result};
use crate::ipam::{FileStore, IpamStore as _, delegate};

/// Ready when the IPAM store opens and every range set still has a free
/// address (51 otherwise); a missing delegated IPAM plugin is 50.
pub fn cmd_status(env: &Env, conf: &NetConf) -> Result<()> {
    match &conf.ipam {
        Ipam::Delegate { plugin } => {
            delegate::find_plugin(plugin, &env.path).map(|_| ()).map_err(|err| Error::NotAvailable(err.to_string()))
        }
        Ipam::Builtin(ipam_conf) => {
            let store =
                FileStore::open_locked(&ipam_conf.network_dir).map_err(|err| Error::NotAvailable(err.to_string()))?;
            let taken: HashSet<_> = store.list()?.into_iter().map(|(ip, _)| ip).collect();
            for set in &ipam_conf.range_sets {
                if !set.candidates(None).any(|(ip, _)| !taken.contains(&ip)) {
                    return Err(Error::NotReady(format!("no free address left in {}", set.describe())));
                }
            }
            Ok(())
        }
    }
}
