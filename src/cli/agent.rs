//! `waggle agent`: the node agent. Only hollow (simulated) nodes so far:
//! `waggle agent --hollow N --kubeconfig FILE` registers N nodes that
//! heartbeat and report their pods Running without running containers.
//!
//! Boot order: read the kubeconfig, build a client, register the nodes,
//! then heartbeat until interrupted.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use waggle_hollow::{HollowConfig, HollowNodes};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Run this many hollow (simulated) nodes instead of a real one.
    #[arg(long)]
    pub hollow: Option<usize>,
    /// Kubeconfig to reach the API server with.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Hollow node names are `<prefix><index>`.
    #[arg(long, default_value = "hollow-node-")]
    pub name_prefix: String,
    /// Seconds between Lease renewals.
    #[arg(long, default_value_t = 10)]
    pub lease_period_seconds: u64,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(args))
}

async fn serve(args: AgentArgs) -> anyhow::Result<()> {
    // 1. Only hollow nodes exist so far.
    let Some(count) = args.hollow else {
        anyhow::bail!("only hollow nodes are implemented: pass --hollow N");
    };
    let config = HollowConfig {
        count,
        name_prefix: args.name_prefix,
        lease_period: Duration::from_secs(args.lease_period_seconds),
        ..HollowConfig::default()
    };
    config.validate()?;
    // 2. A client from the kubeconfig.
    let text =
        std::fs::read_to_string(&args.kubeconfig).with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let client = waggle_controllers::client_from_kubeconfig(&text).await?;
    // 3. Register the nodes and run them.
    let nodes = HollowNodes::start(client, config).await.context("starting hollow nodes")?;
    println!("{} hollow nodes running", nodes.names().len());
    tokio::select! {
        r = nodes.wait() => r.context("running hollow nodes"),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted, stopping");
            Ok(())
        }
    }
}
