//! `cargo xtask up`: set up, build, and run `waggle server` (control plane and
//! this machine's node agent) in the foreground: a single-node cluster.

use std::os::unix::process::CommandExt as _;
use std::process::Command;

use anyhow::Context as _;

use crate::util::{cargo, exec, step, target_dir};

/// Where `cargo xtask up` keeps the cluster's data (certificates, kubeconfig).
const DATA_DIR: &str = "/var/lib/waggle";

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    step("build", || {
        exec(cargo().args(["build", "--release", "--bin", "waggle", "-p", "waggle-cni"]))?;
        Ok("waggle and waggle-cni built (release)".into())
    })?;
    let kubeconfig = format!("{DATA_DIR}/admin.kubeconfig");
    println!("[xtask] starting waggle server (control plane + this machine's node agent)");
    println!("[xtask] in another shell: export KUBECONFIG={kubeconfig}; kubectl get nodes");
    println!(
        "[xtask] images: cargo xtask image --out /tmp/busybox.tar && {}/release/waggle images import /tmp/busybox.tar --address {DATA_DIR}/agent/containerd/containerd.sock",
        target_dir().display()
    );
    let err = Command::new(target_dir().join("release").join("waggle"))
        .args(["server", "--data-dir", DATA_DIR, "--write-kubeconfig", &kubeconfig])
        .exec();
    Err(err).context("starting waggle server")
}
