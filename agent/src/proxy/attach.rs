//! Puts `tc_lb` on every interface Service traffic enters by: the host side
//! of each pod veth (the ports of the node's pod bridge) and the node
//! interfaces named in the configuration (NodePort, externalIPs).
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
    pub scan_interval: Duration,
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
    Ok(())
}
