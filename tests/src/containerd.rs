//! A private containerd for one test: its own root, state, config and socket
//! under a temporary directory, stopped by PID on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Plugins a test containerd does not need; CRI in particular is slow to start
/// and wants global paths.
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
];

/// A running containerd owned by the test.
#[derive(Debug)]
pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Containerd {
    /// Starts containerd and waits until its socket answers.
    pub fn start() -> anyhow::Result<Self> {
        // Unix socket paths are limited to 108 bytes: keep the directory short.
        let dir = tempfile::Builder::new()
            .prefix("wgt-ctrd-")
            .tempdir_in("/var/tmp")
            .context("creating the containerd directory")?;
        let socket = dir.path().join("c.sock");
        let config = config_toml(dir.path(), &socket);
        let config_path = dir.path().join("config.toml");
        fs::write(&config_path, config).context("writing containerd config")?;
        let log = fs::File::create(dir.path().join("containerd.log")).context("creating containerd log")?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning containerd (is it installed? run `cargo xtask setup`)")?;
        let mut me = Self { child, dir, socket };
        me.wait_ready(Duration::from_secs(30))?;
        Ok(me)
    }

    /// The gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The directory holding root, state, config and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's own log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait()? {
                bail!("containerd exited early ({status}):\n{}", self.log());
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("containerd did not open {} within {timeout:?}:\n{}", self.socket.display(), self.log())
    }

    /// Kills the shims this containerd started (a test that failed half way may
    /// leave tasks running) and unmounts whatever is left under our directory.
    fn reap_leftovers(&self) {
        crate::cleanup::kill_processes_mentioning(&self.socket.to_string_lossy(), "containerd-shim");
        crate::cleanup::unmount_under(self.dir.path());
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        self.reap_leftovers();
    }
}

fn config_toml(dir: &Path, socket: &Path) -> String {
    let disabled = DISABLED_PLUGINS.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [{disabled}]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.runtime.v1.linux"]
  shim_debug = false
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        socket = socket.display(),
    )
}
