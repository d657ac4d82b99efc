//! The Service proxy (kube-proxy's job, with eBPF instead of iptables):
//! watches Services and EndpointSlices, keeps the desired load-balancing
//! state per Service, writes the diff into the pinned LB maps, and puts
//! `tc_lb` on the pod veths and node interfaces.
//!
//! [`run`] is its boot script:
//! 1. load the eBPF object, reusing the maps pinned under the pin dir (an
//!    agent restart keeps every frontend, backend and conntrack entry);
//! 2. read what the maps hold, so the first sync writes only differences;
//! 3. attach the socket-level LB to its cgroup (pinned links), or detach
//!    what a previous run attached when it is off;
//! 4. attach `tc_lb` (pinned links) and keep attaching to new pod veths;
//!    `xdp_lb` on the uplink;
//! 5. watch (reflectors) and sync, debounced.

mod attach;
pub mod convert;
pub mod metrics;
mod sync;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use waggle_dataplane::lb::{Current, Node, ServiceIndex};
use waggle_dataplane::{Dataplane, LbCapacity, LoadConfig};

pub use attach::{AttachConfig, Uplink};
pub use metrics::ProxyMetrics;
pub use sync::SyncTiming;

use crate::Error;
use sync::{Change, Syncer};

/// The proxy's configuration (flags of `waggle agent` and `waggle proxy`).
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub node_name: String,
    /// Addresses NodePorts are served on.
    pub node_addresses: Vec<Ipv4Addr>,
    /// bpffs directory of the pinned maps and links; one per node.
    pub pin_dir: PathBuf,
    pub capacity: LbCapacity,
    /// Where the socket-level LB attaches.
    pub sock_lb: SockLb,
    pub attach: AttachConfig,
    pub timing: SyncTiming,
}

/// The cgroup v2 directory whose processes get the socket-level LB: their
/// `connect()` and `sendmsg()` to a frontend go straight to a backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SockLb {
    /// Off; links a previous run pinned are detached.
    Off,
    /// The root of the cgroup v2 hierarchy (mounted at
    /// [`CGROUP2_FALLBACK`] when no cgroup2 is mounted): every process of
    /// the host, which is what a node wants.
    #[default]
    Root,
    /// This cgroup and those below it.
    Cgroup(PathBuf),
}

/// Where the proxy mounts the cgroup v2 hierarchy when none is mounted.
pub const CGROUP2_FALLBACK: &str = "/run/waggle/cgroup2";

impl std::str::FromStr for SockLb {
    type Err = String;

    /// `root`, `none` or a cgroup v2 directory.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err("an empty cgroup path (use `root` or `none`)".into()),
            "none" => Ok(Self::Off),
            "root" => Ok(Self::Root),
            path if path.starts_with('/') => Ok(Self::Cgroup(PathBuf::from(path))),
            other => Err(format!("{other:?} is neither `root`, `none` nor an absolute cgroup v2 path")),
        }
    }
}

impl ProxyConfig {
    /// Defaults for `node`: pins under `/sys/fs/bpf/waggle/<node>`, the pod
    /// bridge's ports get the program, 1 s link scans.
    pub fn new(node: &str, bridge: Option<String>) -> Self {
        Self {
            node_name: node.to_owned(),
            node_addresses: Vec::new(),
            pin_dir: default_pin_dir(node),
            capacity: LbCapacity::default(),
            sock_lb: SockLb::default(),
            attach: AttachConfig {
                bridge,
                interfaces: Vec::new(),
                node_netns: None,
                uplink: Uplink::None,
                scan_interval: Duration::from_secs(1),
            },
            timing: SyncTiming::default(),
        }
    }
}

/// `/sys/fs/bpf/waggle/<node>`: per node, so several nodes on one machine
/// (tests, `cargo xtask cluster`) never share maps.
pub fn default_pin_dir(node: &str) -> PathBuf {
    PathBuf::from("/sys/fs/bpf/waggle").join(node)
}

/// Attaches (or, when off, detaches) the socket-level LB as configured.
fn attach_sock_lb(dp: &mut Dataplane, target: &SockLb) -> Result<(), Error> {
    let cgroup = match target {
        SockLb::Off => return Ok(dp.detach_sock_lb_pinned()?),
        SockLb::Root => waggle_dataplane::cgroup::cgroup2_mount_or(std::path::Path::new(CGROUP2_FALLBACK))
            .map_err(|e| Error::Config(format!("finding the cgroup v2 hierarchy for the socket LB: {e}")))?,
        SockLb::Cgroup(path) => path.clone(),
    };
    dp.attach_sock_lb_pinned(&cgroup)?;
    Ok(())
}

/// Runs the proxy until its watches end or a step fails.
pub async fn run(config: ProxyConfig, client: kube::Client, metrics: Arc<ProxyMetrics>) -> Result<(), Error> {
    // 1–2. The maps, as the previous agent left them.
    let load = LoadConfig { pin_dir: Some(config.pin_dir.clone()), capacity: config.capacity };
    let mut dp = Dataplane::load_with(&load)?;
    // Parsing the kernel's BTF took ~9 MB of heap that is free again now.
    crate::stats::trim_heap();
    let current = Current::read(&dp.lb_maps().writers())?;
    metrics.frontends.set(current.frontend_count() as i64);
    tracing::info!(pin_dir = %config.pin_dir.display(), capacity = ?config.capacity, "Service proxy loaded its maps");

    // 3. The socket-level LB on its cgroup (BPF cgroup hooks do not care
    // which network namespace the attaching process is in).
    attach_sock_lb(&mut dp, &config.sock_lb)?;
    let dp = Arc::new(Mutex::new(dp));

    // 4. tc_lb on the interfaces, now and as pods come; xdp_lb on the uplink.
    let _attacher = attach::spawn(dp.clone(), config.attach.clone())?;

    // 5. Watches and syncs.
    let (services, writer) = reflector::store::<Service>();
    let service_events =
        reflector::reflector(writer, watcher(Api::<Service>::all(client.clone()), watcher::Config::default()))
            .default_backoff()
            .map(|e| e.map(|ev| Change::Service(Box::new(ev))));
    let slice_events = watcher(Api::<EndpointSlice>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|e| e.map(|ev| Change::Slice(Box::new(ev))));
    let events = std::pin::pin!(futures::stream::select(service_events, slice_events));
    let reporter = Reporter { controller: "waggle-proxy".into(), instance: Some(config.node_name.clone()) };
    let recorder = Recorder::new(client, reporter);
    let node = Node { name: config.node_name.clone(), addresses: config.node_addresses.clone() };
    let syncer = Syncer::new(ServiceIndex::new(node), current, dp, metrics, recorder, services, config.timing);
    syncer.run(events).await
}
