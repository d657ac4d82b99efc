//! The API server benchmark: a real `waggle server` process (durable store,
//! or `--store memory` for the API server's own cost),
//! driven by kube-rs clients.
//!
//! - pod creates/s with 1 and with 32 concurrent clients;
//! - LIST of every pod (p50/p99), as `kubectl get pods -A` would (limit=500 pages)
//!   and unpaginated (served from the watch cache);
//! - watch fan-out: time until 100 watchers have all seen a write;
//! - server RSS with all the pods stored.
//!
//! No kube-apiserver exists on this machine, so the figures are compared with
//! the goals rather than with a peer.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args as ClapArgs;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use crate::report;
use crate::server::{rss_mb, wait_for_client};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The `waggle` binary to benchmark.
    #[arg(long)]
    pub waggle: PathBuf,
    /// Pods to create in total (half with one client, half with 32).
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Watchers for the fan-out measurement.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// The server's store: `durable` (RocksDB, as deployed) or `memory`
    /// (`waggle server --in-memory-store`: the API server's own cost).
    #[arg(long, default_value = "durable", value_parser = ["durable", "memory"])]
    pub store: String,
    /// Where the JSON report goes.
    #[arg(long)]
    pub out: PathBuf,
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Just enough of a list to count it and follow `continue`.
#[derive(serde::Deserialize)]
struct Page {
    metadata: PageMeta,
    items: Vec<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct PageMeta {
    #[serde(rename = "continue")]
    continue_: Option<String>,
}

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": "apiserver"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }))?)
}

async fn create_pods(
    api: &Api<Pod>,
    prefix: &str,
    count: usize,
    clients: usize,
) -> anyhow::Result<(f64, serde_json::Value)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (api, next, prefix) = (api.clone(), next.clone(), prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(latencies);
                }
                let t = Instant::now();
                api.create(&PostParams::default(), &pod(&format!("{prefix}-{i}"))?).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((count as f64 / secs, report::percentiles(&mut all)))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("waggle-bench-apiserver-").tempdir_in("/var/tmp")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let child = Command::new(&args.waggle)
        // The API server alone: the scheduler (its own benchmark) would
        // keep every pending pod in its queue and retry it, and its CPU and
        // memory would be counted as the API server's.
        .args(["server", "--disable-controllers", "--disable-scheduler", "--disable-agent"])
        .args(["--secure-port", &port.to_string(), "--data-dir"])
        .arg(dir.path())
        .args((args.store == "memory").then_some("--in-memory-store"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", args.waggle.display()))?;
    let server = Server(child);
    let pid = server.0.id();
    let client = wait_for_client(&kubeconfig, Duration::from_secs(10)).await?;
    let rss_empty = rss_mb(pid)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let half = args.pods / 2;
    println!("creating {half} pods with 1 client…");
    let (rate_1, lat_1) = create_pods(&pods, "one", half, 1).await?;
    println!("creating {} pods with 32 clients…", args.pods - half);
    let (rate_32, lat_32) = create_pods(&pods, "many", args.pods - half, 32).await?;

    // LIST latency as a client sees it up to the last byte (bodies are not
    // decoded into typed objects: that is the client's cost, not the server's).
    let mut paged = Vec::new();
    let mut unpaged = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let mut url = "/api/v1/pods?limit=500".to_owned();
        let mut n = 0;
        loop {
            let body = client.request_text(http::Request::get(&url).body(Vec::new())?).await?;
            let page: Page = serde_json::from_str(&body)?;
            n += page.items.len();
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => url = format!("/api/v1/pods?limit=500&continue={c}"),
                None => break,
            }
        }
        anyhow::ensure!(n == args.pods, "paged list returned {n} pods");
        paged.push(t.elapsed());
        let t = Instant::now();
        let body = client.request_text(http::Request::get("/api/v1/pods").body(Vec::new())?).await?;
        unpaged.push(t.elapsed());
        let page: Page = serde_json::from_str(&body)?;
        anyhow::ensure!(page.items.len() == args.pods, "list returned {} pods", page.items.len());
    }

    // Watch fan-out: every watcher sees each write; time until the last one does.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "fanout"}, "data": {"n": "0"}}))?;
    let rv = cms.create(&PostParams::default(), &cm).await?.metadata.resource_version.unwrap_or_default();
    let mut streams = Vec::new();
    for _ in 0..args.watchers {
        streams.push(cms.watch(&WatchParams::default().fields("metadata.name=fanout"), &rv).await?.boxed());
    }
    let mut fanout = Vec::new();
    for i in 1..=20 {
        let t = Instant::now();
        cms.patch("fanout", &PatchParams::default(), &Patch::Merge(json!({"data": {"n": i.to_string()}}))).await?;
        for s in &mut streams {
            loop {
                match tokio::time::timeout(Duration::from_secs(10), s.try_next()).await?? {
                    Some(WatchEvent::Modified(_)) => break,
                    Some(WatchEvent::Bookmark(_)) => continue,
                    other => anyhow::bail!("unexpected watch event {other:?}"),
                }
            }
        }
        fanout.push(t.elapsed());
    }
    let rss_full = rss_mb(pid)?;

    let report = json!({
        "bench": "apiserver",
        "pods": args.pods,
        "store": args.store,
        "creates_per_second_1_client": rate_1,
        "create_latency_1_client": lat_1,
        "creates_per_second_32_clients": rate_32,
        "create_latency_32_clients": lat_32,
        "list_all_pods_paged_500": report::percentiles(&mut paged),
        "list_all_pods_unpaged": report::percentiles(&mut unpaged),
        "watch_fanout_watchers": args.watchers,
        "watch_fanout_all_seen": report::percentiles(&mut fanout),
        "rss_mb_empty": rss_empty,
        "rss_mb_with_pods": rss_full,
        "goals": {
            "creates_10000_pods_32_clients_seconds_under": 10,
            "list_10000_pods_p99_ms_under": 200,
            "rss_mb_under": 300,
        },
    });
    report::write(&args.out, &report)?;
    let path = &args.out;
    println!();
    println!("{:<44} {:>12}", "measure", "value");
    println!("{:<44} {:>12}", "store", args.store);
    println!("{:<44} {:>12.0}", "pod creates/s, 1 client", rate_1);
    println!("{:<44} {:>12.0}", "pod creates/s, 32 clients", rate_32);
    println!("{:<44} {:>12.1}", "10,000 pods at that rate, s (goal < 10)", 10_000.0 / rate_32);
    println!(
        "{:<44} {:>12.1}",
        "LIST all pods, 500/page, p99 ms",
        report["list_all_pods_paged_500"]["p99_ms"].as_f64().unwrap_or(0.0)
    );
    println!(
        "{:<44} {:>12.1}",
        "LIST all pods, one page (cache), p99 ms (goal < 200)",
        report["list_all_pods_unpaged"]["p99_ms"].as_f64().unwrap_or(0.0)
    );
    println!(
        "{:<44} {:>12.1}",
        "watch fan-out to all watchers, p99 ms",
        report["watch_fanout_all_seen"]["p99_ms"].as_f64().unwrap_or(0.0)
    );
    println!("{:<44} {:>12.0}", "server RSS with the pods, MB (goal < 300)", rss_full);
    println!("report: {}", path.display());
    Ok(())
}
