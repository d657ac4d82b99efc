//! `waggle agent`: the node agent (kubelet). Flags are parsed and validated
//! here into an `AgentConfig`; the boot script is `waggle_agent::run`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use waggle_agent::{AgentConfig, CniConfig, ContainerdEndpoint};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Credentials and address of the API server.
    #[arg(long, env = "WAGGLE_KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// The Node this agent registers and runs pods for.
    #[arg(long)]
    pub node_name: String,
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
    /// First CrashLoopBackOff delay in seconds (doubles up to 300).
    #[arg(long, default_value_t = 10)]
    pub backoff_seconds: u64,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(args))
}

fn config(args: &AgentArgs) -> anyhow::Result<AgentConfig> {
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
    let mut c = AgentConfig::new(&args.node_name, args.root_dir.clone(), containerd, cni);
    c.containerd_namespace = args.containerd_namespace.clone();
    c.runc_root = args.runc_root.clone();
    c.pod_cidr = args.pod_cidr;
    c.node_ip = args.node_ip;
    c.listen = if args.listen == "none" {
        None
    } else {
        Some(args.listen.parse::<SocketAddr>().with_context(|| format!("--listen {:?}", args.listen))?)
    };
    c.backoff_base = Duration::from_secs(args.backoff_seconds.max(1));
    Ok(c)
}

async fn serve(args: AgentArgs) -> anyhow::Result<()> {
    let config = config(&args)?;
    let text =
        std::fs::read_to_string(&args.kubeconfig).with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).context("parsing the kubeconfig")?;
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

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
