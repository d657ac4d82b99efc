//! Running commands and timing steps.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

/// Runs `f` as a named step and prints one line: what it did and how long it took.
pub fn step(name: &str, f: impl FnOnce() -> anyhow::Result<String>) -> anyhow::Result<()> {
    let start = Instant::now();
    let result = f();
    let took = start.elapsed();
    match result {
        Ok(what) => {
            println!("[xtask] {name:<14} {what} ({:.1}s)", took.as_secs_f64());
            Ok(())
        }
        Err(err) => {
            println!("[xtask] {name:<14} FAILED after {:.1}s", took.as_secs_f64());
            Err(err.context(format!("step {name}")))
        }
    }
}

/// Runs a command with inherited stdio; fails on a non-zero exit.
pub fn exec(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command quietly and returns its stdout; fails on a non-zero exit.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stderr(Stdio::piped()).output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when `cmd` runs and exits zero (its output is discarded).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The workspace root (the parent of xtask/).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The shared build cache (see `.cargo/config.toml`); honours CARGO_TARGET_DIR.
/// The build cache cargo uses here: `CARGO_TARGET_DIR`, else what cargo
/// itself reports (`build.target-dir` of `.cargo/config.toml`, which a
/// worktree may override), else the default below.
pub fn target_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
            return PathBuf::from(dir);
        }
        let reported = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(workspace_root())
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| v.get("target_directory")?.as_str().map(PathBuf::from));
        reported.unwrap_or_else(|| PathBuf::from(TARGET_DIR))
    })
    .clone()
}

/// `build.target-dir` in `.cargo/config.toml`.
pub const TARGET_DIR: &str = "/var/tmp/waggle-target";

/// `cargo` as the one that runs xtask (so the same toolchain builds everything).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    // CI builds once from a fresh clone: incremental state would only cost disk.
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    cmd
}
