//! `waggle`: one binary for the control plane, the node agent and their tools.
//!
//! This file only parses flags and dispatches; each subcommand's work lives in
//! its own module under `src/cli/`.

mod cli;

use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    cli::run(args)
}
