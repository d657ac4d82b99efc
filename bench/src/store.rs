//! The store benchmark: `waggle store` and etcd (Debian's 3.4), 1 and 3
//! members on loopback ports, driven by the same Rust etcd v3 client
//! (`waggle_store::client`): puts/s and put latency with 1 and 64
//! concurrent clients, and watch delivery latency.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args as ClapArgs;
use serde_json::{Value, json};
use waggle_store::client::EtcdClient;
use waggle_tests::store_procs::StoreProcs;

use crate::report;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The waggle binary (runs as `waggle store`).
    #[arg(long)]
    pub waggle: PathBuf,
    /// The etcd binary to compare with.
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd: PathBuf,
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Watch events timed per run.
    #[arg(long, default_value_t = 300)]
    pub watch_events: usize,
    /// Where the JSON report goes.
    #[arg(long)]
    pub out: PathBuf,
}

const CLIENT_COUNTS: [usize; 2] = [1, 64];
const SIZES: [usize; 2] = [1, 3];

fn client(endpoint: &str) -> anyhow::Result<EtcdClient> {
    Ok(EtcdClient::connect_lazy(endpoint, Duration::from_secs(10))?)
}

/// Waits until every member names the same leader; returns its index.
async fn leader(procs: &StoreProcs) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for e in procs.endpoints() {
            if let Ok(s) = client(&e)?.status().await {
                ids.push(s.header.map_or(0, |h| h.member_id));
                leaders.push(s.leader);
            }
        }
        if leaders.len() == procs.members.len()
            && leaders.iter().all(|l| *l == leaders[0] && *l != 0)
            && let Some(i) = ids.iter().position(|id| *id == leaders[0])
        {
            // One write through it, so the cluster is really serving.
            if client(&procs.endpoint(i))?.put("bench/ready", "1").await.is_ok() {
                return Ok(i);
            }
        }
        if Instant::now() > deadline {
            bail!("no leader within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `clients` concurrent writers, each on its own connection, for `seconds`.
async fn puts(endpoint: &str, clients: usize, seconds: u64, value: Arc<Vec<u8>>) -> anyhow::Result<Value> {
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let mut kv = client(endpoint);
            let value = Arc::clone(&value);
            tokio::spawn(async move {
                let kv = kv.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
                let mut lat = Vec::new();
                let mut n = 0u64;
                while Instant::now() < until {
                    n += 1;
                    let t = Instant::now();
                    kv.put(format!("bench/{c}/{}", n % 1000), value.as_slice().to_vec()).await?;
                    lat.push(t.elapsed());
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = all.len() as f64 / elapsed;
    let mut stats = report::percentiles(&mut all);
    stats["puts_per_s"] = json!(rate);
    Ok(stats)
}

/// Time from a put's call until a watcher on another connection sees it.
async fn watch_latency(writer_endpoint: &str, watch_endpoint: &str, events: usize) -> anyhow::Result<Value> {
    let mut watcher = client(watch_endpoint)?;
    let (_keep, mut stream) = watcher.watch_prefix("watch/").await?;
    let mut kv = client(writer_endpoint)?;
    let mut lat = Vec::with_capacity(events);
    for n in 0..events {
        let key = format!("watch/{n}");
        let t = Instant::now();
        kv.put(key.clone(), "x").await?;
        loop {
            let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .context("no watch event within 10s")??
                .context("the watch stream ended")?;
            if resp.events.iter().any(|e| e.kv.as_ref().is_some_and(|kv| kv.key == key.as_bytes())) {
                lat.push(t.elapsed());
                break;
            }
        }
    }
    Ok(report::percentiles(&mut lat))
}

async fn measure(bin: &Path, size: usize, args: &Args) -> anyhow::Result<Value> {
    let mut procs = StoreProcs::new(bin, size, &[])?;
    procs.start_all()?;
    let leader = leader(&procs).await?;
    let endpoint = procs.endpoint(leader);
    let value = Arc::new(vec![b'v'; 256]);
    let mut out = json!({});
    for clients in CLIENT_COUNTS {
        let load_before = report::load_average();
        let mut stats = puts(&endpoint, clients, args.seconds, Arc::clone(&value)).await?;
        stats["load_average"] = json!([load_before, report::load_average()]);
        println!(
            "  {} {size} member(s), {clients:>2} clients: {:>8.0} puts/s  p50 {:>6.2} ms  p99 {:>6.2} ms  (load {load_before:.1})",
            bin.display(),
            stats["puts_per_s"].as_f64().unwrap_or(0.0),
            stats["p50_ms"].as_f64().unwrap_or(0.0),
            stats["p99_ms"].as_f64().unwrap_or(0.0)
        );
        out[format!("put_{clients}_clients")] = stats;
    }
    // Watch on a follower when there is one: delivery includes replication.
    let watch_on = procs.endpoint((leader + 1) % size);
    out["watch"] = watch_latency(&endpoint, &watch_on, args.watch_events).await?;
    Ok(out)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut results = json!({});
    for size in SIZES {
        for (system, bin) in [("waggle", &args.waggle), ("etcd", &args.etcd)] {
            println!("{system}, {size} member(s)…");
            let r = measure(bin, size, &args).await.with_context(|| format!("{system} with {size} member(s)"))?;
            results[system][format!("members_{size}")] = r;
        }
    }
    let f = |system: &str, size: usize, what: &str, field: &str| -> f64 {
        results[system][format!("members_{size}")][what][field].as_f64().unwrap_or(0.0)
    };
    println!();
    println!("{:<34} {:>12} {:>12} {:>8}", "measure", "waggle", "etcd 3.4", "ratio");
    let mut ratios = json!({});
    for size in SIZES {
        for clients in CLIENT_COUNTS {
            let what = format!("put_{clients}_clients");
            for (field, label, higher_better) in
                [("puts_per_s", "puts/s", true), ("p50_ms", "p50 ms", false), ("p99_ms", "p99 ms", false)]
            {
                let (w, e) = (f("waggle", size, &what, field), f("etcd", size, &what, field));
                let ratio = if higher_better { w / e.max(f64::MIN_POSITIVE) } else { e / w.max(f64::MIN_POSITIVE) };
                let name = format!("{size}m {clients:>2}c {label}");
                println!("{name:<34} {w:>12.2} {e:>12.2} {ratio:>7.2}x");
                ratios[format!("members_{size}")][&what][field] = json!(ratio);
            }
        }
        for (field, label) in [("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")] {
            let (w, e) = (f("waggle", size, "watch", field), f("etcd", size, "watch", field));
            let ratio = e / w.max(f64::MIN_POSITIVE);
            println!("{:<34} {w:>12.2} {e:>12.2} {ratio:>7.2}x", format!("{size}m watch delivery {label}"));
            ratios[format!("members_{size}")]["watch"][field] = json!(ratio);
        }
    }
    println!("(ratio: how many times better waggle is; > 1 is better)");
    for size in SIZES {
        let puts64 = ratios[format!("members_{size}")]["put_64_clients"]["puts_per_s"].as_f64().unwrap_or(0.0);
        let p99 = ratios[format!("members_{size}")]["put_64_clients"]["p99_ms"].as_f64().unwrap_or(0.0);
        println!("goal, {size} member(s) at 64 clients: puts/s ≥ 2× etcd ({puts64:.2}×), p99 no worse ({p99:.2}×)");
    }
    println!("load average now: {:.1} (2 cores, shared)", report::load_average());
    let report = json!({
        "benchmark": "store",
        "seconds_per_measure": args.seconds,
        "value_bytes": 256,
        "results": results,
        "ratios_waggle_over_etcd": ratios,
    });
    report::write(&args.out, &report)?;
    println!("report: {}", args.out.display());
    Ok(())
}
