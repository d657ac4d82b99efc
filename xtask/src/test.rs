//! `cargo xtask test`: what CI runs (`.ci/run`), and what a newcomer runs.

use std::process::Command;

use clap::Args;

use crate::util::{cargo, exec, step, succeeds};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    pub no_lint: bool,
    /// Passed to the test runner (e.g. a test name filter).
    #[arg(trailing_var_arg = true)]
    pub rest: Vec<String>,
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    crate::setup::run()?;
    if !args.no_lint {
        step("fmt", || {
            exec(cargo().args(["fmt", "--all", "--", "--check"]))?;
            Ok("clean".into())
        })?;
    }
    // The default members include agent/dataplane, whose build.rs builds the
    // eBPF object with the nightly toolchain and bpf-linker.
    step("build", || {
        exec(cargo().args(["build", "--all-targets"]))?;
        Ok("workspace and eBPF object built".into())
    })?;
    if !args.no_lint {
        step("clippy", || {
            exec(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
            // The eBPF crate only builds for the BPF target, with the nightly.
            exec(
                Command::new("rustup")
                    .current_dir(crate::util::workspace_root())
                    .args(["run", "nightly", "cargo", "clippy", "-p", "waggle-ebpf-programs"])
                    .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core", "--release"])
                    .args(["--", "-D", "warnings"])
                    .env("CARGO_TARGET_DIR", crate::util::target_dir().join("ebpf-clippy"))
                    .env_remove("RUSTUP_TOOLCHAIN")
                    .env_remove("CARGO"),
            )?;
            Ok("no warnings (host crates and eBPF programs)".into())
        })?;
    }
    step("tests", || {
        // nextest runs each test in its own process, so a test that enters a
        // namespace or crashes cannot disturb another.
        let mut cmd = if succeeds(Command::new("cargo").args(["nextest", "--version"])) {
            let mut c = cargo();
            c.args(["nextest", "run", "--no-fail-fast", "--status-level", "all", "--final-status-level", "slow"]);
            c
        } else {
            let mut c = cargo();
            c.args(["test", "--no-fail-fast"]);
            c
        };
        exec(cmd.args(&args.rest))?;
        Ok("all passed".into())
    })
}
