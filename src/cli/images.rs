//! `waggle images …`: image management against containerd.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use waggle_runtime::Runtime;

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Import the images of an OCI layout tarball and unpack them.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// OCI layout tarball (e.g. from `cargo xtask image`).
    pub file: PathBuf,
    /// containerd's gRPC socket.
    #[arg(long, env = "WAGGLE_CONTAINERD_ADDRESS", default_value = "/run/containerd/containerd.sock")]
    pub address: PathBuf,
    /// containerd namespace the node's images live in.
    #[arg(long, env = "WAGGLE_CONTAINERD_NAMESPACE", default_value = "waggle")]
    pub namespace: String,
}

pub fn run(cmd: ImagesCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match cmd {
        ImagesCommand::Import(args) => rt.block_on(import(args)),
    }
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let runtime = Runtime::connect(&args.address, &args.namespace)
        .await
        .with_context(|| format!("is containerd running at {}?", args.address.display()))?;
    let images = runtime.import_archive(&args.file).await?;
    for image in images {
        println!("{}\t{}", image.name, image.manifest_digest);
    }
    Ok(())
}
