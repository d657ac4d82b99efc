//! `waggle server` as a process: it comes up with its certificates and
//! kubeconfig, and keeps the cluster's state across a restart.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use support::Kubectl;

/// The `waggle` binary next to this test's directory (built by
/// `cargo build --all-targets`, which `cargo xtask test` runs first).
fn waggle_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|d| d.parent()).context("test binary has no target dir")?;
    let bin = dir.join("waggle");
    anyhow::ensure!(bin.exists(), "{} is missing: build it first (cargo build --bin waggle)", bin.display());
    Ok(bin)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data_dir: &std::path::Path, port: u16) -> anyhow::Result<Server> {
    let child = Command::new(waggle_bin()?)
        .args(["server", "--disable-agent", "--secure-port", &port.to_string(), "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Server(child))
}

async fn wait_ready(k: &Kubectl) -> anyhow::Result<()> {
    for _ in 0..100 {
        if k.output(&["get", "ns", "default"]).is_ok_and(|o| o.status.success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("waggle server did not answer within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keeps_objects_and_allocations_across_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("wgt-srv-").tempdir()?;
    let port = free_port()?;
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let k = Kubectl::new(33, &kubeconfig, &dir.path().join("cache"));
    {
        let _server = start(dir.path(), port)?;
        wait_ready(&k).await?;
        k.ok(&["create", "namespace", "kept"])?;
        k.ok(&["create", "service", "nodeport", "np", "--tcp=80:80"])?;
    }
    let _server = start(dir.path(), port)?;
    wait_ready(&k).await?;
    anyhow::ensure!(
        k.ok(&["get", "namespace", "kept", "-o", "name"])?.trim() == "namespace/kept",
        "namespace survived"
    );
    let first = k.ok(&["get", "svc", "np", "-o", "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}"])?;
    k.ok(&["create", "service", "nodeport", "np2", "--tcp=80:80"])?;
    let second = k.ok(&["get", "svc", "np2", "-o", "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}"])?;
    let (a, b): (Vec<&str>, Vec<&str>) = (first.split(' ').collect(), second.split(' ').collect());
    anyhow::ensure!(
        a[0] != b[0] && a[1] != b[1],
        "allocations after a restart avoid the kept ones: {first} vs {second}"
    );
    Ok(())
}
