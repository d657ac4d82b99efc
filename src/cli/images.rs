//! `waggle images …`: image management against containerd.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use waggle_runtime::Runtime;

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Import the images of an OCI layout tarball and unpack them.
    Import(ImportArgs),
    /// Pull an image from its OCI registry (plain HTTP for registries on
    /// localhost and those named by --insecure-registry) and unpack it.
    Pull(PullArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// OCI layout tarball (e.g. from `cargo xtask image`).
    pub file: PathBuf,
    #[command(flatten)]
    pub containerd: ContainerdArgs,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference (`busybox`, `127.0.0.1:5000/app:v1`, `repo@sha256:…`).
    pub image: String,
    /// User name for the registry's basic auth.
    #[arg(long, env = "WAGGLE_REGISTRY_USERNAME", requires = "password")]
    pub username: Option<String>,
    /// Password for the registry's basic auth.
    #[arg(long, env = "WAGGLE_REGISTRY_PASSWORD", requires = "username")]
    pub password: Option<String>,
    #[command(flatten)]
    pub registries: RegistryFlags,
    #[command(flatten)]
    pub containerd: ContainerdArgs,
}

#[derive(Debug, Args)]
pub struct RegistryFlags {
    /// A registry to pull from over plain HTTP (`host:port`, or `host` for
    /// all its ports), as containerd's hosts.toml allows; repeat or separate
    /// with commas. Registries on loopback always are.
    #[arg(long, value_delimiter = ',')]
    pub insecure_registry: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ContainerdArgs {
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
        ImagesCommand::Pull(args) => rt.block_on(pull(args)),
    }
}

async fn connect(args: &ContainerdArgs) -> anyhow::Result<Runtime> {
    Runtime::connect(&args.address, &args.namespace)
        .await
        .with_context(|| format!("is containerd running at {}?", args.address.display()))
}

async fn pull(args: PullArgs) -> anyhow::Result<()> {
    let runtime = connect(&args.containerd).await?.with_insecure_registries(&args.registries.insecure_registry);
    let credentials = match (args.username, args.password) {
        (Some(username), Some(password)) => Some(waggle_runtime::Credentials { username, password }),
        _ => None,
    };
    let pulled = runtime.pull_image(&args.image, credentials.as_ref()).await?;
    println!("{}\t{}\t{} bytes", pulled.image.name, pulled.image.manifest_digest, pulled.size);
    Ok(())
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let runtime = connect(&args.containerd).await?;
    let images = runtime.import_archive(&args.file).await?;
    for image in images {
        println!("{}\t{}", image.name, image.manifest_digest);
    }
    Ok(())
}
