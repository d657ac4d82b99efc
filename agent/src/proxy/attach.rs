//! Puts `tc_lb` on every interface Service traffic enters by: the host side
//! of each pod veth (the ports of the node's pod bridge) and the node
//! interfaces named in the configuration (NodePort, externalIPs); and
//! `xdp_lb` on the node uplink when one is configured (named, or the
//! interface of the default route).
//!
//! Pod veths come and go with pods, so a thread lists the node's links every
//! `scan_interval` and attaches to new ones (through links pinned in the pin
//! dir, so the program stays when the agent dies), and forgets the pins of
//! links that are gone. It runs inside the node's network namespace
//! (`--node-netns`), where interface names and indexes mean something.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt as _;
use rtnetlink::packet_route::link::LinkAttribute;
use waggle_dataplane::Dataplane;

use crate::Error;

/// What to attach to.
#[derive(Clone, Debug)]
pub struct AttachConfig {
    /// Ports of this bridge get the program (pod veths' host sides).
    pub bridge: Option<String>,
    /// These interfaces get it too, when they exist.
    pub interfaces: Vec<String>,
    /// Network namespace of the node's links (default: the agent's own).
    pub node_netns: Option<PathBuf>,
    /// Where `xdp_lb` goes.
    pub uplink: Uplink,
    pub scan_interval: Duration,
}

/// The node uplink that gets `xdp_lb` (NodePort, externalIPs and
/// LoadBalancer IPs balanced before the stack sees the frame).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Uplink {
    /// No XDP; a pinned XDP link a previous run left is detached.
    #[default]
    None,
    /// This interface.
    Named(String),
    /// The interface of the IPv4 default route, looked up at every scan
    /// (so the program follows the route when it moves).
    DefaultRoute,
}

impl std::str::FromStr for Uplink {
    type Err = String;

    /// `none`, `auto` (the default route's interface) or an interface name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err("an empty uplink name (use `none` or `auto`)".into()),
            "none" => Ok(Self::None),
            "auto" => Ok(Self::DefaultRoute),
            name if name.len() >= 16 || name.contains(['/', ' ']) => Err(format!("{name:?} is not an interface name")),
            name => Ok(Self::Named(name.to_owned())),
        }
    }
}

/// Stops the scanning thread when dropped (attachments stay: they are pinned).
#[derive(Debug)]
pub struct Attacher {
    stop: Arc<AtomicBool>,
}

impl Drop for Attacher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts the scanning thread. The first scan happens before this returns,
/// so the interfaces that exist now are covered when it does.
pub fn spawn(dp: Arc<Mutex<Dataplane>>, config: AttachConfig) -> Result<Attacher, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let (first_tx, first_rx) = std::sync::mpsc::channel::<Result<(), Error>>();
    let thread_stop = stop.clone();
    std::thread::Builder::new()
        .name("waggle-proxy-attach".into())
        .spawn(move || {
            if let Err(e) = enter_netns(config.node_netns.as_ref()) {
                let _ = first_tx.send(Err(e));
                return;
            }
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = first_tx.send(Err(Error::Io { what: "starting the attach runtime".into(), source: e }));
                    return;
                }
            };
            rt.block_on(scan_loop(dp, config, thread_stop, first_tx));
        })
        .map_err(Error::io("starting the attach thread"))?;
    first_rx.recv().map_err(|_| Error::Config("the attach thread ended before its first scan".into()))??;
    Ok(Attacher { stop })
}

fn enter_netns(netns: Option<&PathBuf>) -> Result<(), Error> {
    let Some(path) = netns else { return Ok(()) };
    let file = std::fs::File::open(path).map_err(Error::io(format!("opening {}", path.display())))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::Io { what: format!("entering {}", path.display()), source: e.into() })
}

async fn scan_loop(
    dp: Arc<Mutex<Dataplane>>,
    config: AttachConfig,
    stop: Arc<AtomicBool>,
    first: std::sync::mpsc::Sender<Result<(), Error>>,
) {
    let handle = match rtnetlink::new_connection() {
        Ok((conn, handle, _)) => {
            tokio::spawn(conn);
            handle
        }
        Err(e) => {
            let _ = first.send(Err(Error::io("opening a netlink socket")(e)));
            return;
        }
    };
    let mut first = Some(first);
    while !stop.load(Ordering::Relaxed) {
        let result = scan_once(&handle, &dp, &config).await;
        match first.take() {
            Some(tx) => {
                let failed = result.is_err();
                let _ = tx.send(result);
                if failed {
                    return;
                }
            }
            None => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "attaching the Service load balancer to interfaces failed");
                }
            }
        }
        tokio::time::sleep(config.scan_interval).await;
    }
}

/// One pass: attach to interfaces that need the program, forget pins of
/// interfaces that are gone.
async fn scan_once(handle: &rtnetlink::Handle, dp: &Mutex<Dataplane>, config: &AttachConfig) -> Result<(), Error> {
    let uplink = match &config.uplink {
        Uplink::None => None,
        Uplink::Named(name) => Some(name.clone()),
        Uplink::DefaultRoute => default_route_interface(handle).await?,
    };
    let mut links = handle.link().get().execute();
    let mut all: Vec<(u32, String, Option<u32>)> = Vec::new();
    loop {
        let msg = match links.try_next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => break,
            Err(e) => return Err(Error::Config(format!("listing network links: {e}"))),
        };
        let mut name = None;
        let mut controller = None;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Controller(i) => controller = Some(*i),
                _ => {}
            }
        }
        if let Some(name) = name {
            all.push((msg.header.index, name, controller));
        }
    }
    let bridge_index =
        config.bridge.as_ref().and_then(|b| all.iter().find(|(_, n, _)| n == b)).map(|(index, _, _)| *index);
    let wanted: BTreeSet<&str> = all
        .iter()
        .filter(|(_, name, controller)| {
            config.interfaces.iter().any(|i| i == name) || (bridge_index.is_some() && *controller == bridge_index)
        })
        .map(|(_, name, _)| name.as_str())
        .collect();
    let existing: BTreeSet<&str> = all.iter().map(|(_, n, _)| n.as_str()).collect();
    let mut dp = dp.lock().map_err(|_| Error::Config("the dataplane lock is poisoned".into()))?;
    for gone in dp.pinned_tc_lb_ifaces()? {
        if !existing.contains(gone.as_str()) {
            tracing::debug!(iface = %gone, "interface gone; forgetting its LB link");
            dp.forget_tc_lb_pinned(&gone)?;
        }
    }
    for iface in wanted {
        if !dp.has_tc_lb_pinned(iface) {
            dp.attach_tc_lb_pinned(iface)?;
        }
    }
    // XDP: on the uplink only; off every other interface (the uplink moved,
    // or the flag changed since a previous run pinned it).
    let uplink = uplink.filter(|u| existing.contains(u.as_str()));
    for pinned in dp.pinned_xdp_lb_ifaces()? {
        if uplink.as_deref() != Some(pinned.as_str()) {
            dp.detach_xdp_lb_pinned(&pinned)?;
        }
    }
    if let Some(uplink) = uplink
        && !dp.has_xdp_lb_pinned(&uplink)
    {
        dp.attach_xdp_lb_pinned(&uplink)?;
    }
    Ok(())
}

/// Name of the interface the main table's IPv4 default route leaves by, if
/// there is one (several: the lowest metric).
async fn default_route_interface(handle: &rtnetlink::Handle) -> Result<Option<String>, Error> {
    use rtnetlink::packet_route::route::{RouteAttribute, RouteType};
    let query = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build();
    let routes: Vec<rtnetlink::packet_route::route::RouteMessage> = handle
        .route()
        .get(query)
        .execute()
        .try_collect()
        .await
        .map_err(|e| Error::Config(format!("listing routes: {e}")))?;
    let mut best: Option<(u32, u32)> = None;
    for route in routes {
        if route.header.destination_prefix_length != 0 || route.header.kind != RouteType::Unicast {
            continue;
        }
        let mut oif = None;
        let mut metric = 0;
        let mut table = u32::from(route.header.table);
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Priority(p) => metric = *p,
                RouteAttribute::Table(t) => table = *t,
                _ => {}
            }
        }
        const MAIN_TABLE: u32 = 254;
        if table != MAIN_TABLE {
            continue;
        }
        if let Some(oif) = oif
            && best.is_none_or(|(m, _)| metric < m)
        {
            best = Some((metric, oif));
        }
    }
    let Some((_, index)) = best else { return Ok(None) };
    let mut links = handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(Error::Config(format!("looking up interface {index}: {e}"))),
    }
}
