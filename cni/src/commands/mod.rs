//! One module per CNI command; `main` calls exactly one `cmd_*`.
//!
//! Helpers shared by several commands (the IPAM front that chooses between
//! the built-in store and a delegated plugin, the tokio runtime) live here.

mod add;
mod check;
mod del;
mod gc;
mod status;
mod version;

use std::net::IpAddr;

pub use add::cmd_add;
pub use check::cmd_check;
pub use del::cmd_del;
pub use gc::cmd_gc;
pub use status::cmd_status;
pub use version::cmd_version;

use crate::config::{IpamConf, NetConf, parse_ip_maybe_cidr};
use crate::env::Env;
use crate::error::{Error, Result};
use crate::ipam::{self, FileStore, Owner};
use crate::spec::{CniResult, Dns};

/// Netlink is async in rtnetlink; one thread is all a plugin invocation needs,
/// and it must stay one thread because namespaces are entered per thread.
/// Only the I/O driver: nothing here sleeps or times out.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|err| Error::io("starting the async runtime", err))
}

/// Addresses asked for in the config plus CNI_ARGS `IP=` (comma separated).
fn requested_ips(env: &Env, conf: &NetConf) -> Result<Vec<IpAddr>> {
    let mut ips = conf.requested_ips.clone();
    if let Some(list) = env.arg("IP") {
        for text in list.split(',').filter(|t| !t.is_empty()) {
            ips.push(parse_ip_maybe_cidr(text)?);
        }
    }
    Ok(ips)
}

/// IPAM ADD: addresses, routes and DNS, either built in or from the delegate.
fn ipam_add(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<CniResult> {
    match &conf.ipam {
        crate::config::Ipam::Delegate { plugin } => ipam::delegate::add(plugin, &env.path, stdin),
        crate::config::Ipam::Builtin(ipam_conf) => {
            let requested = requested_ips(env, conf)?;
            let mut store = FileStore::open_locked(&ipam_conf.network_dir)?;
            let owner = Owner::new(&env.container_id, &env.ifname);
            let ips = ipam::allocate(&mut store, &ipam_conf.range_sets, &owner, &requested)?;
            tracing::info!(container = %env.container_id, ?ips, "allocated");
            Ok(CniResult {
                cni_version: conf.version.as_str().to_string(),
                interfaces: Vec::new(),
                ips,
                routes: ipam_conf.routes.clone(),
                dns: read_resolv_conf(ipam_conf)?,
            })
        }
    }
}

/// IPAM DEL: releasing what is not held is success.
fn ipam_del(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<()> {
    match &conf.ipam {
        crate::config::Ipam::Delegate { plugin } => ipam::delegate::exec(plugin, &env.path, "DEL", stdin).map(|_| ()),
        crate::config::Ipam::Builtin(ipam_conf) => {
            let mut store = FileStore::open_locked(&ipam_conf.network_dir)?;
            let freed = ipam::release_owner(&mut store, &Owner::new(&env.container_id, &env.ifname))?;
            tracing::info!(container = %env.container_id, ?freed, "released");
            Ok(())
        }
    }
}

/// host-local's `resolvConf`: nameserver, domain, search and options lines.
fn read_resolv_conf(conf: &IpamConf) -> Result<Dns> {
    let Some(path) = &conf.resolv_conf else {
        return Ok(Dns::default());
    };
    let text = std::fs::read_to_string(path).map_err(|err| Error::io(format!("reading {}", path.display()), err))?;
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.map(String::from)),
            Some("domain") => dns.domain = words.next().map(String::from),
            Some("search") => dns.search.extend(words.map(String::from)),
            Some("options") => dns.options.extend(words.map(String::from)),
            _ => {}
        }
    }
    Ok(dns)
}
