//! Command-line flags, defined apart from the code that runs them.

mod agent;
mod images;
mod proxy;
mod server;
mod store;

use clap::{Parser, Subcommand};

/// Kubernetes-compatible orchestrator with an eBPF-first dataplane.
///
#[derive(Debug, Parser)]
#[command(name = "waggle", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent (kubelet): register the node, run its pods on containerd;
    /// or, with `--hollow N`, N simulated nodes for tests and benchmarks.
    Agent(Box<agent::AgentArgs>),
    /// Manage images in the node's containerd.
    #[command(subcommand)]
    Images(images::ImagesCommand),
    /// Run only the Service proxy: watch Services and EndpointSlices and
    /// program the eBPF load balancer (pinned maps, tc on pod veths).
    Proxy(Box<proxy::ProxyArgs>),
    /// Run the control plane: store and Kubernetes API server.
    Server(server::ServerArgs),
    /// Run one store member serving etcd's v3 API (etcd's flag names), or restore a snapshot.
    Store(store::StoreCommand),
    /// Print the version.
    Version,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Agent(args) => agent::run(*args),
        Command::Images(cmd) => images::run(cmd),
        Command::Proxy(args) => proxy::run(*args),
        Command::Server(args) => server::run(args),
        Command::Store(cmd) => store::run(cmd),
        Command::Version => {
            println!("waggle {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
