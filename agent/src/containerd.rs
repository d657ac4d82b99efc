//! A containerd of the agent's own (when no `--container-runtime-endpoint` is
//! given): config, root and state under `<root-dir>/containerd`, restarted if
//! it dies, stopped with the agent.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::Error;

/// The supervisor's handle; dropping it stops containerd (kill on drop).
#[derive(Debug)]
pub struct Supervised {
    pub socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(dir: &Path, socket: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        socket = socket.display(),
    )
}

async fn spawn(binary: &Path, dir: &Path, socket: &Path) -> Result<Child, Error> {
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config(dir, socket))
        .map_err(Error::io(format!("writing {}", config_path.display())))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))
        .map_err(Error::io("opening containerd.log"))?;
    let log2 = log.try_clone().map_err(Error::io("opening containerd.log"))?;
    let _ = std::fs::remove_file(socket);
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::io(format!("starting {}", binary.display())))?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::Config(format!(
                "containerd exited at start ({status}); see {}",
                dir.join("containerd.log").display()
            )));
        }
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Config(format!("containerd did not open {} within 30 s", socket.display())))
}

/// Starts containerd and keeps it running.
pub async fn start(binary: &Path, dir: &Path) -> Result<Supervised, Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let socket = dir.join("containerd.sock");
    // An agent killed with SIGKILL leaves its containerd running (it must: the
    // pods' shims talk to it). A second one on the same root would wait on the
    // metadata lock, so the running one is adopted instead.
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        tracing::info!(socket = %socket.display(), "adopted the containerd left by an earlier agent");
        return Ok(Supervised { socket, task: tokio::spawn(async {}) });
    }
    let mut child = spawn(binary, dir, &socket).await?;
    tracing::info!(socket = %socket.display(), "started containerd");
    let (binary, dir2, sock2) = (binary.to_path_buf(), dir.to_path_buf(), socket.clone());
    let task = tokio::spawn(async move {
        loop {
            let status = child.wait().await;
            tracing::warn!(?status, "containerd exited; restarting it");
            tokio::time::sleep(Duration::from_secs(1)).await;
            match spawn(&binary, &dir2, &sock2).await {
                Ok(c) => child = c,
                Err(e) => {
                    tracing::error!(error = %e, "restarting containerd failed");
                    return;
                }
            }
        }
    });
    Ok(Supervised { socket, task })
}
