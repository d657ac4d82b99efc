//! A private containerd for one test: its own root, state, config and socket
//! under a temporary directory, stopped by PID on drop.
//!
//! With [`CriOptions`] it also serves the Kubernetes CRI API (the
//! `io.containerd.grpc.v1.cri` plugin) with its own CNI directories, runc
//! root and sandbox network namespaces under that directory, optionally
//! inside a network namespace the test created (so CNI plugins wire their
//! host side there, never in the machine's own namespace).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The CRI plugin, disabled unless a test asks for it: it is slow to start.
const CRI_PLUGIN: &str = "io.containerd.grpc.v1.cri";

/// Plugins a test containerd does not need.
const DISABLED_PLUGINS: &[&str] = &[
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

/// The CRI plugin's configuration: which image its pod sandboxes run and
/// where its CNI plugins and network configurations are.
#[derive(Debug, Clone)]
pub struct CriOptions {
    /// `sandbox_image`; it must already be in the `k8s.io` namespace before
    /// the first RunPodSandbox, as nothing can be pulled here.
    pub sandbox_image: String,
    /// The one directory CRI execs CNI plugins from (with `loopback`).
    pub cni_bin_dir: PathBuf,
    /// The directory of CNI network configurations; CRI uses the first.
    pub cni_conf_dir: PathBuf,
}

/// How to start the test's containerd.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Enable the CRI plugin with this configuration.
    pub cri: Option<CriOptions>,
    /// Run containerd inside this network namespace (a bind-mounted netns file).
    pub netns: Option<PathBuf>,
}

impl Containerd {
    /// Starts containerd and waits until its socket answers.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&Options::default())
    }

    /// Starts containerd as `options` ask and waits until its socket answers.
    pub fn start_with(options: &Options) -> anyhow::Result<Self> {
        // Unix socket paths are limited to 108 bytes: keep the directory short.
        let dir = tempfile::Builder::new()
            .prefix("wgt-ctrd-")
            .tempdir_in("/var/tmp")
            .context("creating the containerd directory")?;
        let socket = dir.path().join("c.sock");
        let config = config_toml(dir.path(), &socket, options.cri.as_ref());
        let config_path = dir.path().join("config.toml");
        fs::write(&config_path, config).context("writing containerd config")?;
        let log = fs::File::create(dir.path().join("containerd.log")).context("creating containerd log")?;
        let mut command = match &options.netns {
            Some(netns) => {
                let mut nsenter = Command::new("nsenter");
                nsenter.arg(format!("--net={}", netns.display())).arg("containerd");
                nsenter
            }
            None => Command::new("containerd"),
        };
        let child = command
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

    /// Kills the containers and shims this containerd started (a test that
    /// failed half way may leave tasks running) and unmounts whatever is left
    /// under our directory (snapshots, sandbox network namespaces).
    fn reap_leftovers(&self) {
        // runc's root is `<dir>/runc` for the CRI plugin and for tests that
        // follow the harness; a dead shim leaves its container running.
        let runc_root = self.dir.path().join("runc");
        let runc = || {
            let mut cmd = Command::new("runc");
            cmd.arg("--root").arg(&runc_root);
            cmd
        };
        if let Ok(listed) = runc().args(["list", "-q"]).output() {
            for id in String::from_utf8_lossy(&listed.stdout).lines() {
                let _ = runc().args(["delete", "--force", id]).output();
            }
        }
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

fn config_toml(dir: &Path, socket: &Path, cri: Option<&CriOptions>) -> String {
    let disabled = DISABLED_PLUGINS
        .iter()
        .copied()
        .chain(cri.is_none().then_some(CRI_PLUGIN))
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut config = format!(
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
    );
    if let Some(cri) = cri {
        config.push_str(&cri_toml(dir, cri));
    }
    config
}

/// The CRI plugin's section. Paths that default to machine-wide places (runc's
/// root, sandbox network namespaces under /var/run/netns) are moved under the
/// test's directory; the streaming server listens on a free loopback port.
fn cri_toml(dir: &Path, cri: &CriOptions) -> String {
    format!(
        r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{runc_root}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin_dir}"
    conf_dir = "{conf_dir}"
    max_conf_num = 1
"#,
        sandbox_image = cri.sandbox_image,
        runc_root = dir.join("runc").display(),
        bin_dir = cri.cni_bin_dir.display(),
        conf_dir = cri.cni_conf_dir.display(),
    )
}
