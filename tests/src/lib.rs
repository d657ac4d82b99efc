//! Harnesses that waggle's tests share: network namespaces and veth pairs with
//! unique names, a private containerd, and a busybox OCI image built locally.
//!
//! Everything here cleans up in `Drop`, so a failing test leaves nothing
//! behind, and every name is unique, so tests run in parallel.

pub mod bpffs;
pub mod cleanup;
pub mod containerd;
pub mod echo;
pub mod image;
pub mod lbnet;
pub mod names;
pub mod netns;
pub mod node;
pub mod packet;

use std::path::PathBuf;

use anyhow::Context as _;

pub use containerd::Containerd;
pub use netns::{NetNs, VethPair};
pub use node::{NodeGuard, target_bin};

/// True when the process runs as root; privileged tests check this first and
/// fail loudly rather than skip, because CI runs as root.
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A binary of this workspace beside the running test binary
/// (`<target>/<profile>/<name>`): `cargo build -p <its package>` first.
pub fn target_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|d| d.parent()).context("the test binary has no target dir")?;
    let bin = dir.join(name);
    anyhow::ensure!(bin.exists(), "{} is missing: build it first (cargo build -p {name})", bin.display());
    Ok(bin)
}
