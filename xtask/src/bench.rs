//! `cargo xtask bench <name>`: builds the benchmarks in release mode and runs
//! one; figures go to `<target dir>/bench/<name>.json`.

use clap::Args;

use crate::util::{cargo, exec, step, target_dir};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark: `lb` (Service load balancing).
    pub name: String,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.name == "lb", "unknown benchmark {:?}; known: lb", args.name);
    crate::setup::run()?;
    let out = target_dir().join("bench").join(format!("{}.json", args.name));
    let out_str = out.to_str().ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", out.display()))?.to_string();
    step("bench", || {
        exec(cargo().args(["run", "--release", "-p", "waggle-bench", "--", &args.name, &out_str]))?;
        Ok(format!("{} written", out.display()))
    })
}
