//! The agent's configuration: parsed once by the CLI, validated once, passed down as a value.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// How the agent reaches containerd.
#[derive(Clone, Debug)]
pub enum ContainerdEndpoint {
    /// An existing containerd's gRPC socket.
    Socket(PathBuf),
    /// The agent starts and supervises its own containerd under `<root-dir>/containerd`.
    Supervised { binary: PathBuf },
}

/// Where pods get their network.
#[derive(Clone, Debug)]
pub struct CniConfig {
    /// Where plugin binaries are found (CNI_PATH).
    pub bin_dir: PathBuf,
    /// Where the agent writes its conflist and reads the first one.
    pub conf_dir: PathBuf,
    /// The node's bridge.
    pub bridge: String,
    /// Network namespace the plugins run in (the node's "host" network);
    /// `None` is the agent's own.
    pub host_netns: Option<PathBuf>,
    /// Directory of the pods' network namespace files.
    pub netns_dir: PathBuf,
}

/// Everything the agent needs to run, validated.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    /// State: pod directories (logs, volumes, network results), IPAM, containerd (if supervised).
    pub root_dir: PathBuf,
    pub containerd: ContainerdEndpoint,
    /// containerd namespace of this node's images and containers.
    pub containerd_namespace: String,
    /// runc's state directory (default: the shim's, under /run/containerd).
    pub runc_root: Option<PathBuf>,
    /// Registries pulled from over plain HTTP besides loopback ones
    /// (`host` or `host:port`).
    pub insecure_registries: Vec<String>,
    pub image_gc: crate::image_gc::ImageGcPolicy,
    pub cni: CniConfig,
    /// The podCIDR to use when the control plane has not set one on the Node.
    pub pod_cidr: Option<ipnet::IpNet>,
    /// The node's InternalIP (default: the first non-loopback IPv4 address).
    pub node_ip: Option<IpAddr>,
    /// Where the agent's HTTP API (container logs) listens; `None` disables it.
    pub listen: Option<SocketAddr>,
    /// HTTPS with client certificates for that API; `None` serves plain HTTP
    /// (only for tests and loopback).
    pub tls: Option<crate::tls::TlsSettings>,
    pub lease_duration: Duration,
    pub status_interval: Duration,
    /// First CrashLoopBackOff delay; it doubles per restart up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often each pod is re-synced even when nothing is reported.
    pub resync: Duration,
    /// How often CPU and memory usage is sampled (the window of the CPU rates).
    pub stats_period: Duration,
    /// The Service proxy (eBPF load balancing); `None` runs none.
    pub proxy: Option<crate::proxy::ProxyConfig>,
}

impl AgentConfig {
    /// A configuration with upstream's defaults for what is not given.
    pub fn new(node_name: &str, root_dir: PathBuf, containerd: ContainerdEndpoint, cni: CniConfig) -> Self {
        Self {
            node_name: node_name.to_owned(),
            root_dir,
            containerd,
            containerd_namespace: "waggle".into(),
            runc_root: None,
            insecure_registries: Vec::new(),
            image_gc: crate::image_gc::ImageGcPolicy::default(),
            cni,
            pod_cidr: None,
            node_ip: None,
            listen: None,
            tls: None,
            lease_duration: Duration::from_secs(40),
            status_interval: Duration::from_secs(10),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            resync: Duration::from_secs(5),
            stats_period: Duration::from_secs(5),
            proxy: None,
        }
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.root_dir.join("pods")
    }
}
