//! `waggle server`: the control plane in one process. Boot order: store,
//! API server (certificates, bootstrap objects), admin kubeconfig,
//! controllers, scheduler.
//!
//! The embedded store is durable on this machine (RocksDB under
//! `<data-dir>/store`), not replicated. Not yet here: the node agent (run
//! `waggle agent --hollow N` for simulated nodes) and leader election.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use waggle_apiserver::ApiServerConfig;
use waggle_store::MemStoreConfig;

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Where certificates and cluster state live.
    #[arg(long, env = "WAGGLE_DATA_DIR", default_value = "/var/lib/waggle")]
    pub data_dir: PathBuf,
    /// Address the API server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// Port of the HTTPS API (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// CIDR ClusterIPs are allocated from.
    #[arg(long = "service-cluster-ip-range", default_value = "10.96.0.0/12")]
    pub service_cidr: ipnet::Ipv4Net,
    /// Inclusive NodePort range, `low-high`.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    pub service_node_port_range: (u16, u16),
    /// Write the admin kubeconfig here (default: <data-dir>/admin.kubeconfig).
    #[arg(long)]
    pub write_kubeconfig: Option<PathBuf>,
    /// Do not run the controllers (namespace, garbage collector, workloads, ...).
    #[arg(long)]
    pub disable_controllers: bool,
    /// Do not run the scheduler.
    #[arg(long)]
    pub disable_scheduler: bool,
    /// A KubeSchedulerConfiguration file (kubescheduler.config.k8s.io/v1).
    #[arg(long)]
    pub scheduler_config: Option<PathBuf>,
    /// Run the controllers and the scheduler only while holding their Leases
    /// in kube-system, so several servers can share one store.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Seconds a node may go without a heartbeat before it is NotReady.
    #[arg(long, default_value_t = 40)]
    pub node_monitor_grace_period: u64,
    /// Seconds pods tolerate an unreachable or not-ready node when they say nothing.
    #[arg(long, default_value_t = 300)]
    pub default_not_ready_toleration_seconds: i64,
    /// Keep the store in memory only, without its RocksDB database: nothing
    /// survives a restart. For benchmarks (the API server's own cost, apart
    /// from the disk's) and throwaway clusters.
    #[arg(long)]
    pub in_memory_store: bool,
    /// Do not run a node agent on this machine (a control plane without a node).
    #[arg(long)]
    pub disable_agent: bool,
    /// Name of this machine's Node (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// podCIDR of this machine's Node.
    #[arg(long, default_value = "10.244.0.0/24")]
    pub pod_cidr: ipnet::IpNet,
    /// Where the CNI plugins are (default: next to this binary, where waggle-cni is built).
    #[arg(long)]
    pub cni_bin_dir: Option<PathBuf>,
    /// Where this machine's agent serves its HTTPS API (logs, exec, attach,
    /// port-forward, stats for `kubectl top`), as the kubelet's port 10250;
    /// `none` serves none.
    #[arg(long, default_value = "0.0.0.0:10250")]
    pub agent_listen: String,
    /// Do not run the agent's Service proxy (eBPF load balancing of Services).
    #[arg(long)]
    pub disable_proxy: bool,
    #[command(flatten)]
    pub proxy: super::proxy::ProxyFlags,
    #[command(flatten)]
    pub registries: super::images::RegistryFlags,
    #[command(flatten)]
    pub image_gc: super::agent::ImageGcFlags,
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s.split_once('-').ok_or_else(|| format!("{s:?} is not a range like 30000-32767"))?;
    let lo: u16 = lo.trim().parse().map_err(|e| format!("{lo:?}: {e}"))?;
    let hi: u16 = hi.trim().parse().map_err(|e| format!("{hi:?}: {e}"))?;
    if lo == 0 || lo > hi {
        return Err(format!("{s:?} is not a valid port range"));
    }
    Ok((lo, hi))
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(args))
}

async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    // 0. Configuration files, validated before anything starts.
    let scheduler_config = match &args.scheduler_config {
        None => waggle_scheduler::SchedulerConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            waggle_scheduler::SchedulerConfig::from_kube_scheduler_configuration(&text)?
        }
    };
    // 1. The store: embedded, single member, durable in <data-dir>/store
    //    (or in memory only).
    let store = Arc::new(if args.in_memory_store {
        waggle_store::MemStore::new(MemStoreConfig::default())?
    } else {
        super::store::open_store(&args.data_dir.join("store"), MemStoreConfig::default())?
    });
    // 2. The API server.
    let config = ApiServerConfig {
        bind_address: args.bind_address,
        secure_port: args.secure_port,
        data_dir: args.data_dir.clone(),
        service_cidr: args.service_cidr,
        node_port_range: args.service_node_port_range,
        ..ApiServerConfig::default()
    };
    let server = waggle_apiserver::start(config, store).await.context("starting the API server")?;
    // 3. The admin kubeconfig.
    let path = args.write_kubeconfig.clone().unwrap_or_else(|| args.data_dir.join("admin.kubeconfig"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private(&path, &server.admin_kubeconfig)?;
    println!("waggle server listening on https://{}", server.addr);
    println!("admin kubeconfig: {}", path.display());
    // 4. The controllers, as clients of the API server with their own identity.
    let controllers = if args.disable_controllers {
        None
    } else {
        let client = client_for(&server, "system:kube-controller-manager").await?;
        let config = waggle_controllers::ControllerConfig {
            node_lifecycle: waggle_controllers::NodeLifecycleConfig {
                grace_period: std::time::Duration::from_secs(args.node_monitor_grace_period),
                default_toleration_seconds: args.default_not_ready_toleration_seconds,
                ..Default::default()
            },
        };
        let election = election("kube-controller-manager", &args);
        Some(tokio::spawn(async move {
            match election {
                None => waggle_controllers::run_with(client, config).await,
                Some(e) => waggle_controllers::leader::run_as_leader(client.clone(), e, || {
                    waggle_controllers::run_with(client, config)
                })
                .await
                .and_then(|r| r),
            }
        }))
    };
    // 5. The scheduler, with its own identity.
    let scheduler = if args.disable_scheduler {
        None
    } else {
        let client = client_for(&server, "system:kube-scheduler").await?;
        let config = scheduler_config;
        let election = election("kube-scheduler", &args);
        Some(tokio::spawn(async move {
            match election {
                None => waggle_scheduler::run(client, config).await.map_err(anyhow::Error::from),
                Some(e) => waggle_controllers::leader::run_as_leader(client.clone(), e, || {
                    waggle_scheduler::run(client, config)
                })
                .await
                .map_err(anyhow::Error::from)?
                .map_err(anyhow::Error::from),
            }
        }))
    };
    // 6. The node agent of this machine, with its own identity.
    let agent = if args.disable_agent {
        None
    } else {
        let config = agent_config(&args, &server)?;
        let client = client_for(&server, &format!("system:node:{}", config.node_name)).await?;
        println!(
            "node agent for {} (containerd socket {})",
            config.node_name,
            config.root_dir.join("containerd").join("containerd.sock").display()
        );
        Some(tokio::spawn(async move { waggle_agent::run(config, client).await }))
    };
    tokio::select! {
        _ = server.wait() => Ok(()),
        Some(r) = async { match agent { Some(c) => Some(c.await), None => None } } => {
            match r {
                Ok(Ok(())) => anyhow::bail!("the node agent stopped"),
                Ok(Err(e)) => Err(e).context("running the node agent"),
                Err(e) => Err(e).context("the node agent task"),
            }
        }
        Some(r) = async { match scheduler { Some(c) => Some(c.await), None => None } } => {
            match r {
                Ok(Ok(())) => anyhow::bail!("the scheduler stopped"),
                Ok(Err(e)) => Err(e).context("running the scheduler"),
                Err(e) => Err(e).context("the scheduler task"),
            }
        }
        Some(r) = async { match controllers { Some(c) => Some(c.await), None => None } } => {
            match r {
                Ok(Ok(())) => anyhow::bail!("the controllers stopped"),
                Ok(Err(e)) => Err(e).context("running the controllers"),
                Err(e) => Err(e).context("the controllers task"),
            }
        }
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted, stopping");
            Ok(())
        }
    }
}

/// The agent of the server's own machine: a supervised containerd and CNI
/// state under `<data-dir>/agent`, waggle-cni from next to this binary.
fn agent_config(
    args: &ServerArgs,
    server: &waggle_apiserver::RunningApiServer,
) -> anyhow::Result<waggle_agent::AgentConfig> {
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name (or give --node-name)")?
            .trim()
            .to_lowercase(),
    };
    anyhow::ensure!(!node_name.is_empty(), "the node name is empty: give --node-name");
    let root = args.data_dir.join("agent");
    let bin_dir = match &args.cni_bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("this binary has no directory")?.to_path_buf(),
    };
    anyhow::ensure!(
        bin_dir.join("waggle-cni").exists(),
        "{} has no waggle-cni: build it (cargo build -p waggle-cni) or give --cni-bin-dir",
        bin_dir.display()
    );
    let cni = waggle_agent::CniConfig {
        bin_dir,
        conf_dir: root.join("cni").join("net.d"),
        bridge: "waggle0".into(),
        host_netns: None,
        netns_dir: PathBuf::from("/var/run/netns"),
    };
    let containerd = waggle_agent::ContainerdEndpoint::Supervised { binary: PathBuf::from("containerd") };
    let bridge = cni.bridge.clone();
    let mut config = waggle_agent::AgentConfig::new(&node_name, root, containerd, cni);
    config.pod_cidr = Some(args.pod_cidr);
    config.insecure_registries = args.registries.insecure_registry.clone();
    config.image_gc = args.image_gc.policy()?;
    config.listen = match args.agent_listen.as_str() {
        "none" => None,
        addr => Some(addr.parse().with_context(|| format!("--agent-listen {addr:?} is not an address:port"))?),
    };
    if !args.disable_proxy {
        config.proxy = Some(args.proxy.config(&node_name, Some(bridge))?);
    }
    config.tls = Some(waggle_agent::tls::TlsSettings {
        serving: None,
        client_ca_pem: server.pki.ca.cert_pem.clone(),
        allowed: waggle_agent::tls::default_allowed(),
    });
    Ok(config)
}

/// Leader election settings for a component, unless disabled. The identity
/// is unique per process, as upstream's `<hostname>_<uuid>`.
fn election(lease: &str, args: &ServerArgs) -> Option<waggle_controllers::leader::LeaderElectionConfig> {
    if !args.leader_elect {
        return None;
    }
    let host =
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "waggle".into());
    let identity = format!("{host}_{}_{}", std::process::id(), args.secure_port);
    Some(waggle_controllers::leader::LeaderElectionConfig::new(lease, &identity))
}

/// A kube-rs client for a control-plane component, with a client certificate
/// issued by the cluster CA.
async fn client_for(server: &waggle_apiserver::RunningApiServer, user: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig = server.kubeconfig_for(user, &["system:masters"]).context("issuing a client certificate")?;
    Ok(waggle_controllers::client_from_kubeconfig(&kubeconfig).await?)
}

fn write_private(path: &std::path::Path, data: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data.as_bytes()).with_context(|| format!("writing {}", path.display()))
}
