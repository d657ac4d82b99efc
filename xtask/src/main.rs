//! `cargo xtask`: the project's own tasks, written in Rust so they run the
//! same on every machine of this kind.
//!
//! - `setup`  installs what the project needs (idempotent, fast when done)
//! - `image`  builds the busybox OCI image tarball tests and users import
//! - `test`   setup + build (eBPF included) + lint + every test
//! - `up`     setup + build + a single-node cluster in the foreground
//! - `bench`  one benchmark in release mode, figures to the target dir

mod bench;
mod image;
mod setup;
mod test;
mod up;
mod util;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install Debian packages, the nightly toolchain with rust-src,
    /// bpf-linker, and mount bpffs. Safe to run again.
    Setup,
    /// Build the busybox OCI image tarball from Debian's busybox-static.
    Image(image::ImageArgs),
    /// Set up, build everything (eBPF included), lint, and run all tests.
    Test(test::TestArgs),
    /// Set up, build, and start a single-node cluster in the foreground.
    Up,
    /// Run a benchmark (`lb`) in release mode.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Image(args) => image::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Up => up::run(),
        Command::Bench(args) => bench::run(&args),
    }
}
