//! waggle's node agent (the kubelet): registers the Node, renews its Lease,
//! and runs the pods bound to it on containerd, each in a network namespace of
//! its own wired by a CNI plugin (waggle-cni).
//!
//! [`run`] is the boot script. The seams are traits with in-memory fakes:
//! [`cri::ContainerRuntime`] (containerd), [`network::PodNetwork`] (netns +
//! CNI), [`pod::worker::PodApi`] and [`pod::env::ConfigSource`] (the API).

pub mod api;
pub mod config;
pub mod containerd;
pub mod cri;
mod error;
pub mod exec;
pub mod image_gc;
pub mod lease;
pub mod logs;
pub mod machine;
pub mod manager;
pub mod network;
pub mod node;
pub mod pod;
pub mod proxy;
pub mod spdy;
pub mod stats;
pub mod streaming;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

pub use config::{AgentConfig, CniConfig, ContainerdEndpoint};
pub use error::Error;
use kube::runtime::reflector;
use tracing::{info, warn};

use crate::machine::Machine;
use crate::network::{CniInvoker, CniNetwork, conflist_for};
use crate::node::NodeInfo;

/// The agent's boot script; runs until the pod watch ends or a step fails.
pub async fn run(config: AgentConfig, client: kube::Client) -> Result<(), Error> {
    let cfg = &config;
    let started = std::time::SystemTime::now();
    // 1. containerd: the one named, or one of our own.
    let (socket, _supervised) = match &cfg.containerd {
        ContainerdEndpoint::Socket(s) => (s.clone(), None),
        ContainerdEndpoint::Supervised { binary } => {
            let sup = containerd::start(binary, &cfg.root_dir.join("containerd")).await?;
            (sup.socket.clone(), Some(sup))
        }
    };
    let mut runtime = waggle_runtime::Runtime::connect(&socket, &cfg.containerd_namespace)
        .await
        .map_err(|e| Error::Runtime(e.into()))?;
    if let Some(root) = &cfg.runc_root {
        runtime = runtime.with_runc_root(root);
    }
    runtime = runtime.with_insecure_registries(&cfg.insecure_registries);
    let scratch = cfg.root_dir.join("tmp");
    std::fs::create_dir_all(&scratch).map_err(Error::io(format!("creating {}", scratch.display())))?;
    let exec_runtime = runtime.clone();
    let image_gc = tokio::spawn(image_gc::run(runtime.clone(), cfg.image_gc.clone()));
    let runtime: Arc<dyn cri::ContainerRuntime> = Arc::new(cri::Containerd::new(runtime, scratch));

    // 2. The agent API's port, bound now so the Node can advertise it.
    let listener = match cfg.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr).await.map_err(Error::io(format!("binding the agent API on {addr}")))?,
        ),
        None => None,
    };
    let port = match &listener {
        Some(l) => l.local_addr().map_err(Error::io("reading the agent API's address"))?.port(),
        None => node::DEFAULT_PORT,
    };

    // 3. The Node: machine facts, registration, podCIDR.
    let machine = Machine::read();
    let ip = cfg.node_ip.unwrap_or_else(machine::default_node_ip);
    let info = NodeInfo {
        name: &cfg.node_name,
        ip,
        machine: &machine,
        pod_cidr: cfg.pod_cidr.as_ref(),
        port,
        runtime_version: "containerd://1.6",
        since: started,
        images: exec_runtime.list_images().await.map(|l| node::images_of(&l)).unwrap_or_default(),
    };
    let (registered, pod_cidr) = node::register(&client, &info).await?;
    let pod_cidr = pod_cidr.ok_or_else(|| {
        Error::Config(format!(
            "node {} has no podCIDR: give --pod-cidr or let the control plane assign one",
            cfg.node_name
        ))
    })?;
    info!(node = %cfg.node_name, %ip, %pod_cidr, "node registered");

    // 4. Pod networking: our conflist first in the conf dir, then the plugins it names.
    let network = build_network(cfg, &pod_cidr)?;

    // 5. The pods bound to this node: a reflector feeding per-pod workers.
    let (store, writer) = reflector::store::<k8s_openapi::api::core::v1::Pod>();
    let shared = Arc::new(pod::worker::Shared {
        node: cfg.node_name.clone(),
        host_ip: ip.to_string(),
        pods_dir: cfg.pods_dir(),
        runtime: runtime.clone(),
        network: network.clone(),
        api: Arc::new(client.clone()),
        configs: Arc::new(client.clone()),
        lookup: manager::lookup(store.clone()),
        backoff_base: cfg.backoff_base,
        backoff_max: cfg.backoff_max,
        resync: cfg.resync,
    });
    let pods = tokio::spawn(manager::run(client.clone(), cfg.node_name.clone(), shared.clone(), writer, store.clone()));

    // 6. Heartbeats: the Lease, and the Node status now and then.
    let heartbeat = tokio::spawn(heartbeat(
        client.clone(),
        exec_runtime.clone(),
        cfg.clone(),
        machine.clone(),
        ip,
        port,
        registered.metadata.uid,
        started,
    ));

    // 7. The Service proxy: ClusterIPs, NodePorts on this node's address.
    let metrics = cfg.proxy.as_ref().map(|_| Arc::new(proxy::ProxyMetrics::new()));
    let proxy = match (&cfg.proxy, &metrics) {
        (Some(p), Some(m)) => {
            let mut p = p.clone();
            if let std::net::IpAddr::V4(v4) = ip
                && p.node_addresses.is_empty()
            {
                p.node_addresses.push(v4);
            }
            Some(tokio::spawn(supervise_proxy(p, client.clone(), m.clone())))
        }
        _ => None,
    };

    // 8. The agent's HTTPS API (container logs, exec, metrics).
    let tls =
        cfg.tls.as_ref().map(|t| tls::server_config(t, &cfg.node_name, ip).map(|c| (c, t.clone()))).transpose()?;
    let exec = Some((exec_runtime, cfg.root_dir.join("exec")));
    // 8. Resource usage from cgroups, for metrics.k8s.io (`kubectl top`).
    let stats = stats::Stats::default();
    let sampler = tokio::spawn(stats::run(
        stats.clone(),
        runtime.clone(),
        cfg.node_name.clone(),
        stats::CgroupPaths::default(),
        cfg.stats_period,
    ));
    let sources = api::Sources {
        store,
        runtime,
        node: cfg.node_name.clone(),
        exec,
        network: Some(network),
        stats,
        proxy_metrics: metrics,
    };
    let api = listener.map(|l| tokio::spawn(api::serve(l, tls, sources)));

    let result = tokio::select! {
        r = pods => r.map_err(|e| Error::Config(format!("the pod manager task failed: {e}")))?,
        r = async { match proxy { Some(p) => p.await, None => std::future::pending().await } } => {
            r.map_err(|e| Error::Config(format!("the Service proxy task failed: {e}")))?
        }
        r = async { match api { Some(a) => a.await, None => std::future::pending().await } } => {
            r.map_err(|e| Error::Config(format!("the agent API task failed: {e}")))?
        }
    };
    heartbeat.abort();
    sampler.abort();
    image_gc.abort();
    result
}

fn build_network(cfg: &AgentConfig, pod_cidr: &ipnet::IpNet) -> Result<Arc<dyn network::PodNetwork>, Error> {
    let conf_dir = &cfg.cni.conf_dir;
    std::fs::create_dir_all(conf_dir).map_err(Error::io(format!("creating {}", conf_dir.display())))?;
    let network_name = format!("waggle-{}", cfg.node_name);
    let conflist = conflist_for(&network_name, &cfg.cni.bridge, pod_cidr, &cfg.root_dir.join("cni").join("networks"));
    let path = conf_dir.join("10-waggle.conflist");
    let bytes = serde_json::to_vec_pretty(&conflist).map_err(|e| Error::Config(e.to_string()))?;
    std::fs::write(&path, bytes).map_err(Error::io(format!("writing {}", path.display())))?;
    let invoker = CniInvoker::load(conf_dir, &cfg.cni.bin_dir, cfg.cni.host_netns.clone())?;
    Ok(Arc::new(CniNetwork::new(
        invoker,
        cfg.cni.netns_dir.clone(),
        cfg.root_dir.join("sandboxes"),
        &sandbox_netns_prefix(&cfg.node_name),
    )))
}

/// The prefix of the network namespace files of `node`'s pods
/// (`<netns-dir>/<prefix>-<pod uid>`).
pub fn sandbox_netns_prefix(node: &str) -> String {
    format!("wgp-{}", short_hash(node))
}

/// Runs the Service proxy, and again after a back-off (1 s doubling to 30 s)
/// when it fails: a proxy that cannot load or attach must not take the
/// node's pods down with the whole agent (upstream runs them as separate
/// processes). Its pinned maps keep serving the Services meanwhile.
async fn supervise_proxy(
    config: proxy::ProxyConfig,
    client: kube::Client,
    metrics: Arc<proxy::ProxyMetrics>,
) -> Result<(), Error> {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = tokio::time::Instant::now();
        match proxy::run(config.clone(), client.clone(), metrics.clone()).await {
            Ok(()) => warn!("the Service proxy stopped; starting it again"),
            Err(e) => warn!(error = %e, retry_in = ?backoff, "the Service proxy failed; starting it again"),
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Eight hex digits naming a node in file names.
fn short_hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

#[expect(clippy::too_many_arguments, reason = "one call site: the pieces the heartbeat reports")]
async fn heartbeat(
    client: kube::Client,
    runtime: waggle_runtime::Runtime,
    cfg: AgentConfig,
    machine: Machine,
    ip: std::net::IpAddr,
    port: u16,
    node_uid: Option<String>,
    started: std::time::SystemTime,
) {
    let renew_every = (cfg.lease_duration / 4).max(Duration::from_secs(1));
    let mut last_status = tokio::time::Instant::now();
    loop {
        if let Err(e) =
            lease::renew(&client, &cfg.node_name, node_uid.as_deref(), cfg.lease_duration.as_secs() as i32).await
        {
            warn!(error = %e, "renewing the node lease failed");
        }
        if last_status.elapsed() >= cfg.status_interval {
            let info = NodeInfo {
                name: &cfg.node_name,
                ip,
                machine: &machine,
                pod_cidr: cfg.pod_cidr.as_ref(),
                port,
                runtime_version: "containerd://1.6",
                since: started,
                images: match runtime.list_images().await {
                    Ok(l) => node::images_of(&l),
                    Err(e) => {
                        warn!(error = %e, "listing the node's images failed");
                        Vec::new()
                    }
                },
            };
            match node::write_status(&client, &info).await {
                Ok(_) => last_status = tokio::time::Instant::now(),
                Err(e) => warn!(error = %e, "writing the node status failed"),
            }
        }
        tokio::time::sleep(renew_every).await;
    }
}
