//! `waggle-bench`: one benchmark per module, run by `cargo xtask bench
//! <name>`, which builds this in release mode. Each writes its figures to a
//! JSON report and prints a table.

mod apiserver;
mod cni;
mod lb;
mod report;
mod store;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Service load balancing: tc_lb per-packet cost and programming time.
    Lb {
        /// Where the JSON report goes.
        out: PathBuf,
    },
    /// CNI: ADD and DEL latency of waggle-cni against the reference bridge + host-local.
    Cni(cni::Args),
    /// API server: pod creates/s (1 and 32 clients), LIST of many pods, watch fan-out, RSS.
    Apiserver(apiserver::Args),
    /// Cluster store: waggle store against etcd 3.4, puts/s and latency (1 and 64 clients, 1 and 3 members), watch latency.
    Store(store::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Lb { out } => lb::run(&out),
        Bench::Cni(args) => cni::run(args),
        Bench::Apiserver(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(apiserver::run(args))
        }
        Bench::Store(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(store::run(args))
        }
    }
}
