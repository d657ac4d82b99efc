//! `cargo xtask up`: set up, build, and run `waggle server` in the foreground.

use std::os::unix::process::CommandExt as _;
use std::process::Command;

use anyhow::Context as _;

use crate::util::{cargo, exec, step, target_dir};

/// Where `cargo xtask up` keeps the cluster's data (certificates, kubeconfig).
const DATA_DIR: &str = "/var/lib/waggle";

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    step("build", || {
        exec(cargo().args(["build", "--release", "--bin", "waggle"]))?;
        Ok("waggle built (release)".into())
    })?;
    let kubeconfig = format!("{DATA_DIR}/admin.kubeconfig");
    println!("[xtask] starting waggle server; in another shell: export KUBECONFIG={kubeconfig}; kubectl get ns");
    let err = Command::new(target_dir().join("release").join("waggle"))
        .args(["server", "--data-dir", DATA_DIR, "--write-kubeconfig", &kubeconfig])
        .exec();
    Err(err).context("starting waggle server")
}
