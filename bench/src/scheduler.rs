//! The scheduler benchmark: upstream scheduler_perf's SchedulingBasic case
//! (5,000 nodes, then 10,000 pods with the default pod template) against a
//! real `waggle server` (API server and scheduler, durable store) and a
//! `waggle agent --hollow 5000` process for the nodes.
//!
//! Measured from the first pod create to the last pod seen bound by a
//! watch: pods/s, per-pod latency (create sent → bound seen), the server's
//! RSS, and whether the hollow agent kept its 5,000 Leases fresh.
//!
//! No kube-scheduler exists on this machine; the figures are compared with
//! upstream's CI floor for this case (680 pods/s) and the goal
//! (1,000 pods/s).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args as ClapArgs;
use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;

use crate::report;
use crate::server::{rss_mb, wait_for_client};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The `waggle` binary to benchmark.
    #[arg(long)]
    pub waggle: PathBuf,
    #[arg(long, default_value_t = 5_000)]
    pub nodes: usize,
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Concurrent pod creators.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Where the JSON report goes.
    #[arg(long)]
    pub out: PathBuf,
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).context("stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Ok(ticks / 100.0)
}

/// Upstream's pod-default.yaml: one pause container asking 100m CPU and 500Mi.
fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": "scheduler"}},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                 "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]},
    }))?)
}

/// The 1, 5 and 15 minute load averages (the machine is shared; figures
/// are only comparable at a similar load).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn count<K>(api: &Api<K>) -> anyhow::Result<usize>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    Ok(api.list_metadata(&ListParams::default()).await?.items.len())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!("the scheduling cycle alone: {} nodes, {} pods…", args.nodes, args.pods);
    let (nodes, pods) = (args.nodes, args.pods);
    let cycle = tokio::task::spawn_blocking(move || crate::scheduler_cycle::run(nodes, pods)).await??;
    println!("{:.0} pods/s", cycle["pods_per_second"].as_f64().unwrap_or(0.0));
    let dir = tempfile::Builder::new().prefix("waggle-bench-scheduler-").tempdir_in("/var/tmp")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    // The processes' logs go next to the report.
    let logs = args.out.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&logs)?;
    let log = |name: &str| -> anyhow::Result<Stdio> { Ok(std::fs::File::create(logs.join(name))?.into()) };
    let server = Proc(
        Command::new(&args.waggle)
            .args(["server", "--disable-controllers", "--disable-agent", "--secure-port", &port.to_string()])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(log("scheduler-server.log")?)
            .spawn()
            .with_context(|| format!("starting {}", args.waggle.display()))?,
    );
    let server_pid = server.0.id();
    let client = wait_for_client(&kubeconfig, Duration::from_secs(30)).await?;

    println!("starting {} hollow nodes…", args.nodes);
    let t_nodes = Instant::now();
    let agent = Proc(
        Command::new(&args.waggle)
            .args(["agent", "--hollow", &args.nodes.to_string(), "--name-prefix", "bench-node-", "--kubeconfig"])
            .arg(&kubeconfig)
            .stdout(Stdio::null())
            .stderr(log("scheduler-agent.log")?)
            .spawn()
            .context("starting the hollow agent")?,
    );
    let agent_pid = agent.0.id();
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if count(&nodes).await? >= args.nodes {
            break;
        }
        anyhow::ensure!(t_nodes.elapsed() < Duration::from_secs(600), "nodes did not register within 10 minutes");
    }
    let nodes_secs = t_nodes.elapsed().as_secs_f64();
    println!("{} nodes registered in {nodes_secs:.1} s", args.nodes);
    // Let the scheduler's node watch catch up before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server_cpu_before = cpu_seconds(server_pid)?;
    let agent_cpu_before = cpu_seconds(agent_pid)?;

    // Create time (client side) and bound time (seen by a watch), per pod.
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (tx, mut done) = tokio::sync::watch::channel(0usize);
    let watch = {
        let bound = bound.clone();
        let pods = pods.clone();
        let want = args.pods;
        tokio::spawn(async move {
            let mut stream = watcher(pods, watcher::Config::default().labels("bench=scheduler"))
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(ev) = stream.next().await {
                let Ok(p) = ev else { continue };
                if p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty()) {
                    let now = Instant::now();
                    let mut b = bound.lock().unwrap_or_else(|e| e.into_inner());
                    b.entry(p.metadata.name.unwrap_or_default()).or_insert(now);
                    let n = b.len();
                    drop(b);
                    let _ = tx.send(n);
                    if n >= want {
                        return;
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!("creating {} pods with {} clients…", args.pods, args.clients);
    let load_before = loadavg();
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut creators = Vec::new();
    for _ in 0..args.clients {
        let (pods, next, created, total) = (pods.clone(), next.clone(), created.clone(), args.pods);
        creators.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                let name = format!("pod-{i}");
                let t = Instant::now();
                created.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), t);
                pods.create(&PostParams::default(), &pod(&name)?).await?;
            }
        }));
    }
    for c in creators {
        c.await??;
    }
    let create_secs = start.elapsed().as_secs_f64();
    let timeout = Duration::from_secs(600);
    while *done.borrow() < args.pods {
        anyhow::ensure!(start.elapsed() < timeout, "only {} of {} pods bound in 10 minutes", *done.borrow(), args.pods);
        let _ = tokio::time::timeout(Duration::from_secs(1), done.changed()).await;
    }
    let total_secs = start.elapsed().as_secs_f64();
    let load_after = loadavg();
    watch.abort();
    let server_cpu = cpu_seconds(server_pid)? - server_cpu_before;
    let agent_cpu = cpu_seconds(agent_pid)? - agent_cpu_before;
    let rss_server = rss_mb(server_pid)?;
    let rss_agent = rss_mb(agent_pid)?;

    let mut latencies: Vec<Duration> = {
        let c = created.lock().unwrap_or_else(|e| e.into_inner());
        let b = bound.lock().unwrap_or_else(|e| e.into_inner());
        b.iter().filter_map(|(n, t)| Some(t.saturating_duration_since(*c.get(n)?))).collect()
    };
    let latency = report::percentiles(&mut latencies);
    let rate = args.pods as f64 / total_secs;
    // The scheduler's own pace, as upstream's SchedulingThroughput sees it:
    // pods bound per second from the first binding to the last (pod
    // creation, bounded by the API server's write rate, paces both ends).
    let bind_window = {
        let b = bound.lock().unwrap_or_else(|e| e.into_inner());
        match (b.values().min(), b.values().max()) {
            (Some(first), Some(last)) => last.saturating_duration_since(*first).as_secs_f64(),
            _ => 0.0,
        }
    };
    let bind_rate = if bind_window > 0.0 { args.pods as f64 / bind_window } else { 0.0 };
    let create_rate = args.pods as f64 / create_secs;

    // Did the hollow agent keep every Lease fresh (renewed within its
    // 40 s duration) while all this went on?
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = k8s_openapi::jiff::Timestamp::now();
    let all_leases = leases.list(&ListParams::default()).await?.items;
    let fresh = all_leases
        .iter()
        .filter(|l| {
            l.spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .is_some_and(|t| now.duration_since(t.0).as_secs_f64() < 40.0)
        })
        .count();
    let running =
        pods.list_metadata(&ListParams::default().labels("bench=scheduler")).await.map(|l| l.items.len()).unwrap_or(0);

    let report = serde_json::json!({
        "bench": "scheduler",
        "case": "SchedulingBasic",
        "nodes": args.nodes,
        "pods": args.pods,
        "clients": args.clients,
        "nodes_registered_seconds": nodes_secs,
        "pods_created_seconds": create_secs,
        "all_bound_seconds": total_secs,
        "pods_per_second": rate,
        "creates_per_second": create_rate,
        "first_to_last_bound_seconds": bind_window,
        "bound_per_second_first_to_last_bind": bind_rate,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "scheduling_latency": latency,
        "server_cpu_seconds": server_cpu,
        "agent_cpu_seconds": agent_cpu,
        "rss_mb_server": rss_server,
        "rss_mb_hollow_agent": rss_agent,
        "leases": all_leases.len(),
        "leases_fresh": fresh,
        "pods_listed": running,
        "cycle_only": cycle,
        "goals": {"pods_per_second_at_least": 1000, "upstream_ci_floor_pods_per_second": 680},
    });
    report::write(&args.out, &report)?;
    drop(agent);
    drop(server);
    println!();
    println!("{:<52} {:>12}", "measure", "value");
    println!("{:<52} {:>12.0}", "scheduling cycle alone, pods/s", cycle["pods_per_second"].as_f64().unwrap_or(0.0));
    println!("{:<52} {:>12.2}", "scheduling cycle alone, p99 ms", cycle["cycle"]["p99_ms"].as_f64().unwrap_or(0.0));
    println!(
        "{:<52} {:>12.3}",
        "snapshot update per cycle, p99 ms",
        cycle["snapshot_update"]["p99_ms"].as_f64().unwrap_or(0.0)
    );
    println!("{:<52} {:>12.1}", "first snapshot (every node), ms", cycle["first_snapshot_ms"].as_f64().unwrap_or(0.0));
    println!("{:<52} {:>12.1}", format!("{} hollow nodes registered, s", args.nodes), nodes_secs);
    println!("{:<52} {:>12.1}", format!("{} pods created, s", args.pods), create_secs);
    println!("{:<52} {:>12.1}", "first create → all bound, s", total_secs);
    println!("{:<52} {:>12.0}", "pods/s (goal ≥ 1000; upstream CI floor 680)", rate);
    println!("{:<52} {:>12.0}", "pods created/s (the API server's pace)", create_rate);
    println!("{:<52} {:>12.0}", "pods bound/s, first to last binding", bind_rate);
    println!("{:<52} {:>12.0}", "create → bound p50, ms", latency["p50_ms"].as_f64().unwrap_or(0.0));
    println!("{:<52} {:>12.0}", "create → bound p99, ms", latency["p99_ms"].as_f64().unwrap_or(0.0));
    println!("{:<52} {:>12.1}", "server CPU during the run, s", server_cpu);
    println!("{:<52} {:>12.1}", "hollow agent CPU during the run, s", agent_cpu);
    println!("{:<52} {:>12.0}", "waggle server RSS, MB", rss_server);
    println!("{:<52} {:>12.0}", "hollow agent RSS, MB", rss_agent);
    println!("{:<52} {:>12}", "leases renewed within 40 s", format!("{fresh}/{}", all_leases.len()));
    println!("{:<52} {:>12}", "load average before", load_before);
    println!("{:<52} {:>12}", "load average after", load_after);
    println!("report: {}", args.out.display());
    Ok(())
}
