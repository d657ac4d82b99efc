//! `waggle-bench`: one benchmark per module, run by `cargo xtask bench
//! <name>`, which builds this in release mode. Each writes its figures to a
//! JSON report and prints a table.

mod apiserver;
mod cni;
mod lb;
mod podstartup;
mod report;
mod scheduler;
mod scheduler_cycle;
mod server;
mod store;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Service load balancing: waggle's eBPF path against kube-proxy-shaped
    /// iptables (connection rate, latency, programming time), per-packet cost.
    Lb(lb::Args),
    /// CNI: ADD and DEL latency of waggle-cni against the reference bridge + host-local.
    Cni(cni::Args),
    /// API server: pod creates/s (1 and 32 clients), LIST of many pods, watch fan-out, RSS.
    Apiserver(apiserver::Args),
    /// Pod startup: create → Running latency of pods on a real node, agent RSS.
    Podstartup(podstartup::Args),
    /// Scheduler: scheduler_perf's SchedulingBasic (5,000 hollow nodes, 10,000 pods): pods/s, p99, RSS.
    Scheduler(scheduler::Args),
    /// Cluster store: waggle store against etcd 3.4, puts/s and latency (1 and 64 clients, 1 and 3 members), watch latency.
    Store(store::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Lb(args) => lb::run(&args),
        Bench::Cni(args) => cni::run(args),
        Bench::Apiserver(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(apiserver::run(args))
        }
        Bench::Podstartup(args) => podstartup::run(args),
        Bench::Scheduler(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(scheduler::run(args))
        }
        Bench::Store(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(store::run(args))
        }
    }
}
