//! `cargo xtask image`: the busybox OCI image tarball.

use std::path::PathBuf;

use clap::Args;

use crate::util::{step, target_dir};

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Where to write the tarball (default: <target>/images/busybox-oci.tar).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &ImageArgs) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(default_path);
    step("image", || {
        let built = waggle_tests::image::build_busybox(&out)?;
        Ok(format!(
            "{} ({} KiB, manifest {}) written to {}",
            built.name,
            built.size / 1024,
            built.manifest_digest,
            out.display()
        ))
    })
}

pub fn default_path() -> PathBuf {
    target_dir().join("images").join("busybox-oci.tar")
}
