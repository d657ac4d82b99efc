//! `cargo xtask bench <name>`: builds the benchmarks in release mode and runs
//! one; figures go to `<target dir>/bench/<name>.json`.

use clap::Args;

use crate::util::{cargo, exec, step, target_dir};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark: `lb` (Service load balancing), `apiserver`, `cni`, `podstartup`, `scheduler`, `store`.
    pub name: String,
    /// Passed on to the benchmark (e.g. `--pods 2000`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

const KNOWN: &[&str] = &["lb", "apiserver", "cni", "podstartup", "scheduler", "store"];

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        KNOWN.contains(&args.name.as_str()),
        "unknown benchmark {:?}; known: {}",
        args.name,
        KNOWN.join(", ")
    );
    crate::setup::run()?;
    let out = target_dir().join("bench").join(format!("{}.json", args.name));
    let out_str = out.to_str().ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", out.display()))?.to_string();
    let mut bench_args: Vec<String> = vec![args.name.clone()];
    match args.name.as_str() {
        "apiserver" | "scheduler" | "store" => {
            step("build", || {
                exec(cargo().args(["build", "--release", "--bin", "waggle"]))?;
                Ok("waggle built (release)".into())
            })?;
            let waggle = target_dir().join("release").join("waggle");
            bench_args.extend(["--waggle".into(), waggle.to_string_lossy().into_owned(), "--out".into(), out_str]);
        }
        "cni" => {
            step("build", || {
                exec(cargo().args(["build", "--release", "-p", "waggle-cni"]))?;
                Ok("waggle-cni built (release)".into())
            })?;
            let plugin = target_dir().join("release").join("waggle-cni");
            bench_args.extend(["--plugin".into(), plugin.to_string_lossy().into_owned(), "--out".into(), out_str]);
        }
        "podstartup" => {
            step("build", || {
                exec(cargo().args(["build", "--release", "--bin", "waggle"]))?;
                exec(cargo().args(["build", "--release", "-p", "waggle-cni"]))?;
                Ok("waggle and waggle-cni built (release)".into())
            })?;
            let release = target_dir().join("release");
            bench_args.extend([
                "--waggle".into(),
                release.join("waggle").to_string_lossy().into_owned(),
                "--cni-bin-dir".into(),
                release.to_string_lossy().into_owned(),
                "--out".into(),
                out_str,
            ]);
        }
        _ => bench_args.push(out_str),
    }
    bench_args.extend(args.rest.iter().cloned());
    step("bench", || {
        exec(cargo().args(["run", "--release", "-p", "waggle-bench", "--"]).args(&bench_args))?;
        Ok(format!("{} written", out.display()))
    })
}
