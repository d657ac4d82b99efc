//! `waggle agent`: the node agent (kubelet). Flags are parsed and validated
//! here into an `AgentConfig`; the boot script is `waggle_agent::run`.
//! With `--hollow N` it runs N simulated nodes instead (`waggle_hollow`):
//! they heartbeat and report their pods Running without running containers.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use waggle_agent::tls::TlsSettings;
use waggle_agent::{AgentConfig, CniConfig, ContainerdEndpoint};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Run this many hollow (simulated) nodes instead of a real one.
    #[arg(long)]
    pub hollow: Option<usize>,
    /// Hollow node names are `<prefix><index>`.
    #[arg(long, default_value = "hollow-node-")]
    pub name_prefix: String,
    /// Seconds between a hollow node's Lease renewals.
    #[arg(long, default_value_t = 10)]
    pub lease_period_seconds: u64,
    /// Credentials and address of the API server.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// The Node this agent registers and runs pods for (required for a real
    /// agent; optional so that `--hollow N` can share this subcommand).
    #[arg(long)]
    pub node_name: Option<String>,
    /// containerd's socket; without it the agent starts and supervises its own containerd.
    #[arg(long)]
    pub container_runtime_endpoint: Option<PathBuf>,
    /// containerd binary for the supervised containerd.
    #[arg(long, default_value = "containerd")]
    pub containerd_binary: PathBuf,
    /// containerd namespace of this node's images and containers.
    #[arg(long, default_value = "waggle")]
    pub containerd_namespace: String,
    /// runc's state directory (default: the shim's).
    #[arg(long)]
    pub runc_root: Option<PathBuf>,
    #[command(flatten)]
    pub registries: super::images::RegistryFlags,
    #[command(flatten)]
    pub image_gc: ImageGcFlags,
    /// Pods' directories (logs, volumes), sandbox state, IPAM state.
    #[arg(long, default_value = "/var/lib/waggle/agent")]
    pub root_dir: PathBuf,
    /// CNI plugin binaries (waggle-cni).
    #[arg(long, default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// Where the agent writes its conflist (the first conflist there is used).
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The node's pod bridge.
    #[arg(long, default_value = "waggle0")]
    pub cni_bridge: String,
    /// Network namespace standing for the node's network: CNI plugins run in
    /// it (default: the agent's own). For several nodes on one machine, and tests.
    #[arg(long)]
    pub node_netns: Option<PathBuf>,
    /// Where the pods' network namespace files live.
    #[arg(long, default_value = "/var/run/netns")]
    pub netns_dir: PathBuf,
    /// podCIDR to use when the control plane assigns none.
    #[arg(long)]
    pub pod_cidr: Option<ipnet::IpNet>,
    /// InternalIP of the node (default: first global IPv4 address).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Address of the agent's API (container logs); `none` disables it.
    #[arg(long, default_value = "0.0.0.0:10250")]
    pub listen: String,
    /// PEM serving certificate of the agent API (default: self-signed for the node).
    #[arg(long, requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM key of --tls-cert-file.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// PEM CA bundle client certificates must chain to (default: the kubeconfig's cluster CA).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Client certificate CNs or groups (O) allowed to use the agent API.
    #[arg(long, value_delimiter = ',')]
    pub api_allowed_clients: Option<Vec<String>>,
    /// Serve the agent API over plain HTTP, without client authentication (tests only).
    #[arg(long)]
    pub insecure_http_api: bool,
    /// First CrashLoopBackOff delay in seconds (doubles up to 300).
    #[arg(long, default_value_t = 10)]
    pub backoff_seconds: u64,
    /// Do not run the Service proxy (eBPF load balancing of Services).
    #[arg(long)]
    pub disable_proxy: bool,
    #[command(flatten)]
    pub proxy: super::proxy::ProxyFlags,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(args))
}

fn config(args: &AgentArgs, kubeconfig: &kube::config::Kubeconfig) -> anyhow::Result<AgentConfig> {
    let containerd = match &args.container_runtime_endpoint {
        Some(sock) => ContainerdEndpoint::Socket(sock.clone()),
        None => ContainerdEndpoint::Supervised { binary: args.containerd_binary.clone() },
    };
    let cni = CniConfig {
        bin_dir: args.cni_bin_dir.clone(),
        conf_dir: args.cni_conf_dir.clone(),
        bridge: args.cni_bridge.clone(),
        host_netns: args.node_netns.clone(),
        netns_dir: args.netns_dir.clone(),
    };
    anyhow::ensure!(
        !args.cni_bridge.is_empty() && args.cni_bridge.len() <= 15,
        "--cni-bridge {:?} is not a valid interface name",
        args.cni_bridge
    );
    let node_name = args.node_name.as_deref().context("--node-name is required")?;
    anyhow::ensure!(!node_name.is_empty(), "--node-name must not be empty");
    let mut c = AgentConfig::new(node_name, args.root_dir.clone(), containerd, cni);
    c.containerd_namespace = args.containerd_namespace.clone();
    c.runc_root = args.runc_root.clone();
    c.insecure_registries = args.registries.insecure_registry.clone();
    c.image_gc = args.image_gc.policy()?;
    c.pod_cidr = args.pod_cidr;
    c.node_ip = args.node_ip;
    c.listen = if args.listen == "none" {
        None
    } else {
        Some(args.listen.parse::<SocketAddr>().with_context(|| format!("--listen {:?}", args.listen))?)
    };
    c.backoff_base = Duration::from_secs(args.backoff_seconds.max(1));
    if !args.insecure_http_api {
        c.tls = Some(tls_settings(args, kubeconfig)?);
    }
    if !args.disable_proxy {
        let mut proxy = args.proxy.config(node_name, Some(args.cni_bridge.clone()))?;
        proxy.attach.node_netns = args.node_netns.clone();
        c.proxy = Some(proxy);
    }
    Ok(c)
}

fn tls_settings(args: &AgentArgs, kubeconfig: &kube::config::Kubeconfig) -> anyhow::Result<TlsSettings> {
    let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let serving = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
        _ => None,
    };
    let client_ca_pem = match &args.client_ca_file {
        Some(p) => read(p)?,
        None => {
            use base64::Engine as _;
            let data = kubeconfig
                .clusters
                .iter()
                .find_map(|c| c.cluster.as_ref()?.certificate_authority_data.clone())
                .context("the kubeconfig has no certificate-authority-data: give --client-ca-file")?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .context("decoding the kubeconfig's certificate-authority-data")?;
            String::from_utf8(bytes).context("the kubeconfig's CA is not PEM text")?
        }
    };
    Ok(TlsSettings {
        serving,
        client_ca_pem,
        allowed: args.api_allowed_clients.clone().unwrap_or_else(waggle_agent::tls::default_allowed),
    })
}

async fn serve(args: AgentArgs) -> anyhow::Result<()> {
    if let Some(count) = args.hollow {
        return serve_hollow(&args, count).await;
    }
    let text =
        std::fs::read_to_string(&args.kubeconfig).with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).context("parsing the kubeconfig")?;
    let config = config(&args, &kubeconfig)?;
    let client_config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(client_config).context("building the API client")?;
    tokio::select! {
        r = waggle_agent::run(config, client) => r.context("running the agent"),
        _ = shutdown_signal() => {
            // Containers keep running: a restarted agent re-adopts them.
            tracing::info!("agent stopping; pods keep running");
            Ok(())
        }
    }
}

/// `--hollow N`: register N simulated nodes and run them until interrupted.
async fn serve_hollow(args: &AgentArgs, count: usize) -> anyhow::Result<()> {
    let config = waggle_hollow::HollowConfig {
        count,
        name_prefix: args.name_prefix.clone(),
        lease_period: Duration::from_secs(args.lease_period_seconds),
        ..waggle_hollow::HollowConfig::default()
    };
    config.validate()?;
    let text =
        std::fs::read_to_string(&args.kubeconfig).with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let client = waggle_controllers::client_from_kubeconfig(&text).await?;
    let nodes = waggle_hollow::HollowNodes::start(client, config).await.context("starting hollow nodes")?;
    println!("{} hollow nodes running", nodes.names().len());
    tokio::select! {
        r = nodes.wait() => r.context("running hollow nodes"),
        _ = shutdown_signal() => {
            tracing::info!("interrupted, stopping");
            Ok(())
        }
    }
}

pub(crate) async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Image garbage collection, with the kubelet's flag names and defaults.
#[derive(Debug, Args)]
pub struct ImageGcFlags {
    /// Disk usage (percent of the image filesystem) at which unused images
    /// are removed; 100 turns image garbage collection off.
    #[arg(long, default_value_t = 85)]
    pub image_gc_high_threshold: u8,
    /// Disk usage the removal brings the image filesystem back to.
    #[arg(long, default_value_t = 80)]
    pub image_gc_low_threshold: u8,
    /// How long an unused image is kept at least (e.g. 2m, 90s, 0s).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub minimum_image_ttl_duration: std::time::Duration,
    /// How often image garbage collection runs (the kubelet's is 5m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub image_gc_period: std::time::Duration,
    /// The filesystem of containerd's images (default: containerd's content
    /// root, as its Introspection service says).
    #[arg(long)]
    pub image_fs: Option<PathBuf>,
}

impl ImageGcFlags {
    pub fn policy(&self) -> anyhow::Result<waggle_agent::image_gc::ImageGcPolicy> {
        anyhow::ensure!(!self.image_gc_period.is_zero(), "--image-gc-period must be more than 0");
        let p = waggle_agent::image_gc::ImageGcPolicy {
            high_threshold_percent: self.image_gc_high_threshold,
            low_threshold_percent: self.image_gc_low_threshold,
            min_age: self.minimum_image_ttl_duration,
            period: self.image_gc_period,
            image_fs: self.image_fs.clone(),
        };
        p.validate().map_err(anyhow::Error::msg)?;
        Ok(p)
    }
}
