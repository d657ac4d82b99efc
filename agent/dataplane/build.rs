//! Builds `ebpf/programs` for the bpfel target with the nightly toolchain and
//! bpf-linker (both installed by `cargo xtask setup`) and leaves the object in
//! OUT_DIR, where `src/object.rs` embeds it.
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};

const EBPF_PACKAGE: &str = "waggle-ebpf-programs";

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?);
    let ebpf_root = manifest_dir.join("../../ebpf");
    // aya-build watches the programs crate; the shared types live next to it.
    println!("cargo:rerun-if-changed={}", ebpf_root.join("common").display());
    let programs = ebpf_root.join("programs");
    let root_dir = programs.to_str().ok_or_else(|| anyhow!("path {} is not UTF-8", programs.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: EBPF_PACKAGE, root_dir, ..Default::default() }],
        aya_build::Toolchain::Nightly,
    )
    .with_context(|| {
        format!("building {EBPF_PACKAGE}; `cargo xtask setup` installs the nightly toolchain and bpf-linker it needs")
    })
}
