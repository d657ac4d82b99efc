//! `waggle proxy`: only the Service proxy (kube-proxy's job), against any
//! API server; and the proxy flags `waggle agent` and `waggle server` share.
//! The boot script is `waggle_agent::proxy::run`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use waggle_agent::proxy::{ProxyConfig, ProxyMetrics, SockLb, Uplink};

/// Where the proxy pins its maps and how big they are.
#[derive(Debug, Args)]
pub struct ProxyFlags {
    /// bpffs directory of the LB maps and links (default:
    /// /sys/fs/bpf/waggle/<node-name>). Pinned maps survive a restart; maps
    /// pinned with other capacities are refused.
    #[arg(long)]
    pub bpf_pin_dir: Option<PathBuf>,
    /// Service frontends the LB map holds (ClusterIP, externalIP, NodePort
    /// per node address, per port).
    #[arg(long, default_value_t = 65_536)]
    pub lb_services_capacity: u32,
    /// Backends (endpoint address and port) the LB map holds.
    #[arg(long, default_value_t = 65_536)]
    pub lb_backends_capacity: u32,
    /// Tracked connections (both directions count).
    #[arg(long, default_value_t = 262_144)]
    pub lb_conntrack_capacity: u32,
    /// sessionAffinity ClientIP entries.
    #[arg(long, default_value_t = 65_536)]
    pub lb_affinity_capacity: u32,
    /// Maglev rows: one per Service port (two with a Local traffic policy);
    /// 4 KiB of kernel memory each.
    #[arg(long, default_value_t = 1024)]
    pub lb_maglev_rows: u32,
    /// Node interfaces that also get the Service load balancer (NodePort,
    /// externalIPs); pod veths get it without being named.
    #[arg(long, value_delimiter = ',')]
    pub proxy_interfaces: Vec<String>,
    /// Node uplink that gets the XDP load balancer (NodePort, externalIPs,
    /// LoadBalancer IPs from outside the node): an interface name, `auto`
    /// (the interface of the IPv4 default route), or `none`.
    #[arg(long, default_value = "none")]
    pub xdp_uplink: Uplink,
    /// cgroup v2 directory whose processes get the socket-level load
    /// balancer (a connect() to a Service goes straight to a backend, no NAT
    /// per packet): `root` (every process of the node; the cgroup2 hierarchy
    /// is mounted if it is not), `none`, or an absolute path.
    #[arg(long, default_value = "root")]
    pub sock_lb_cgroup: SockLb,
}

impl ProxyFlags {
    /// The proxy's configuration for `node`, whose pods hang off `bridge`.
    pub fn config(&self, node: &str, bridge: Option<String>) -> anyhow::Result<ProxyConfig> {
        let mut c = ProxyConfig::new(node, bridge);
        if let Some(dir) = &self.bpf_pin_dir {
            c.pin_dir = dir.clone();
        }
        c.capacity = waggle_dataplane::LbCapacity {
            services: self.lb_services_capacity,
            backends: self.lb_backends_capacity,
            maglev_rows: self.lb_maglev_rows,
            conntrack: self.lb_conntrack_capacity,
            affinity: self.lb_affinity_capacity,
        };
        for (flag, v) in [
            ("--lb-services-capacity", c.capacity.services),
            ("--lb-backends-capacity", c.capacity.backends),
            ("--lb-maglev-rows", c.capacity.maglev_rows),
            ("--lb-conntrack-capacity", c.capacity.conntrack),
            ("--lb-affinity-capacity", c.capacity.affinity),
        ] {
            anyhow::ensure!(v > 0, "{flag} must be at least 1");
        }
        c.attach.interfaces = self.proxy_interfaces.clone();
        c.attach.uplink = self.xdp_uplink.clone();
        c.sock_lb = self.sock_lb_cgroup.clone();
        Ok(c)
    }
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Credentials and address of the API server.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// The Node this proxy serves (its pin dir, its local endpoints).
    #[arg(long)]
    pub node_name: String,
    /// Addresses NodePorts are served on.
    #[arg(long, value_delimiter = ',')]
    pub nodeport_addresses: Vec<Ipv4Addr>,
    /// The pod bridge: each of its ports (pod veths) gets the load balancer.
    #[arg(long)]
    pub bridge: Option<String>,
    /// Network namespace of the node's interfaces (default: this process's).
    #[arg(long)]
    pub node_netns: Option<PathBuf>,
    /// Plain-HTTP address of /metrics; `none` disables it.
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub metrics_bind_address: String,
    #[command(flatten)]
    pub flags: ProxyFlags,
}

pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(args))
}

async fn serve(args: ProxyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.node_name.is_empty(), "--node-name must not be empty");
    let mut config = args.flags.config(&args.node_name, args.bridge.clone())?;
    config.node_addresses = args.nodeport_addresses.clone();
    config.attach.node_netns = args.node_netns.clone();
    let text =
        std::fs::read_to_string(&args.kubeconfig).with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let client = waggle_controllers::client_from_kubeconfig(&text).await?;
    let metrics = Arc::new(ProxyMetrics::new());
    let metrics_server = if args.metrics_bind_address == "none" {
        None
    } else {
        let addr: SocketAddr = args
            .metrics_bind_address
            .parse()
            .with_context(|| format!("--metrics-bind-address {:?}", args.metrics_bind_address))?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        Some(tokio::spawn(waggle_agent::proxy::metrics::serve(listener, metrics.clone())))
    };
    let result = tokio::select! {
        r = waggle_agent::proxy::run(config, client, metrics) => r.context("running the Service proxy"),
        r = async { match metrics_server { Some(m) => m.await, None => std::future::pending().await } } => {
            r.context("the metrics task")?.context("serving metrics")
        }
        r = super::agent::shutdown_signal() => {
            // The maps and links stay pinned: Services keep working.
            tracing::info!("proxy stopping; the load balancer stays in the kernel");
            r
        }
    };
    result
}
