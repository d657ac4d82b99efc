//! Shared by the black-box tests: an API server on a free port with its own
//! data dir, and the real kubectl pointed at it.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use anyhow::Context as _;
use waggle_apiserver::{ApiServerConfig, RunningApiServer};
use waggle_store::{MemStore, MemStoreConfig};

/// A `waggle` API server (in memory store) for one test.
pub struct TestServer {
    pub server: RunningApiServer,
    controllers: Option<tokio::task::JoinHandle<Result<(), waggle_controllers::Error>>>,
    scheduler: Option<tokio::task::JoinHandle<Result<(), waggle_scheduler::Error>>>,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl TestServer {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts with a configuration adjusted by `tune`.
    pub async fn start_with(tune: impl FnOnce(&mut ApiServerConfig)) -> anyhow::Result<Self> {
        // Logs only when asked for (RUST_LOG), captured per test.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::Builder::new().prefix("wgt-api-").tempdir()?;
        let store = Arc::new(MemStore::new(MemStoreConfig::default())?);
        let mut config =
            ApiServerConfig { secure_port: 0, data_dir: dir.path().to_path_buf(), ..ApiServerConfig::default() };
        tune(&mut config);
        let server = waggle_apiserver::start(config, store).await?;
        let kubeconfig = dir.path().join("admin.kubeconfig");
        std::fs::write(&kubeconfig, &server.admin_kubeconfig)?;
        Ok(Self { server, controllers: None, scheduler: None, dir, kubeconfig })
    }

    /// Also runs the controllers (namespace, garbage collector), as `waggle server` does.
    pub async fn with_controllers() -> anyhow::Result<Self> {
        let mut me = Self::start().await?;
        let kubeconfig = me.server.kubeconfig_for("system:kube-controller-manager", &["system:masters"])?;
        let client = waggle_controllers::client_from_kubeconfig(&kubeconfig).await?;
        me.controllers = Some(tokio::spawn(waggle_controllers::run(client)));
        Ok(me)
    }

    /// A kube-rs client with the admin's credentials.
    pub async fn kube_client(&self) -> anyhow::Result<kube::Client> {
        Ok(waggle_controllers::client_from_kubeconfig(&self.server.admin_kubeconfig).await?)
    }

    /// A kube-rs client with its own identity (in `system:masters`).
    pub async fn client_as(&self, user: &str) -> anyhow::Result<kube::Client> {
        let kubeconfig = self.server.kubeconfig_for(user, &["system:masters"])?;
        Ok(waggle_controllers::client_from_kubeconfig(&kubeconfig).await?)
    }

    /// Runs `count` hollow nodes named `<prefix><i>` in this process.
    pub async fn hollow_nodes(&self, count: usize, prefix: &str) -> anyhow::Result<waggle_hollow::HollowNodes> {
        self.hollow_nodes_with(waggle_hollow::HollowConfig {
            count,
            name_prefix: prefix.into(),
            ..waggle_hollow::HollowConfig::default()
        })
        .await
    }

    pub async fn hollow_nodes_with(
        &self,
        config: waggle_hollow::HollowConfig,
    ) -> anyhow::Result<waggle_hollow::HollowNodes> {
        let client = self.client_as("system:node:hollow").await?;
        Ok(waggle_hollow::HollowNodes::start(client, config).await?)
    }

    /// Controllers (with `config`) and the scheduler, as `waggle server` runs them.
    pub async fn with_control_plane(config: waggle_controllers::ControllerConfig) -> anyhow::Result<Self> {
        let mut me = Self::start().await?;
        let client = me.client_as("system:kube-controller-manager").await?;
        me.controllers = Some(tokio::spawn(waggle_controllers::run_with(client, config)));
        let client = me.client_as("system:kube-scheduler").await?;
        me.scheduler = Some(tokio::spawn(waggle_scheduler::run(client, waggle_scheduler::SchedulerConfig::default())));
        Ok(me)
    }

    pub fn kubectl(&self, minor: u32) -> Kubectl {
        Kubectl::new(minor, &self.kubeconfig, &self.dir.path().join(format!("kube-cache-{minor}")))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(c) = &self.controllers {
            c.abort();
        }
        if let Some(s) = &self.scheduler {
            s.abort();
        }
    }
}

/// Polls `check` every 200 ms until it succeeds or `timeout` passes;
/// returns the last error.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e.context("timed out")),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

/// Fails with both texts unless `haystack` contains `needle`.
pub fn ensure_contains(haystack: &str, needle: &str) -> anyhow::Result<()> {
    anyhow::ensure!(haystack.contains(needle), "expected {needle:?} in:\n{haystack}");
    Ok(())
}

/// The pod's Ready condition is True.
pub fn is_ready(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// One installed kubectl version, with its own discovery cache.
pub struct Kubectl {
    pub path: PathBuf,
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
}

impl Kubectl {
    pub fn new(minor: u32, kubeconfig: &Path, cache_dir: &Path) -> Self {
        Self {
            path: PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}")),
            kubeconfig: kubeconfig.to_path_buf(),
            cache_dir: cache_dir.to_path_buf(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(&self.cache_dir).args(args);
        cmd.env_remove("KUBECONFIG");
        cmd
    }

    /// Runs kubectl; returns the output whatever the exit status.
    pub fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command(args).output().with_context(|| format!("running {} {args:?}", self.path.display()))
    }

    /// Runs kubectl and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.output(args)?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl on a terminal (util-linux `script` gives it a pty) of
    /// `rows`×`cols`, as a person at a shell would; `stdin` is typed into
    /// it. kubectl is killed after `limit` seconds. Returns the output
    /// whatever the exit status (script passes on kubectl's).
    pub fn output_in_pty(
        &self,
        args: &[&str],
        rows: u16,
        cols: u16,
        stdin: &str,
        limit: u32,
    ) -> anyhow::Result<Output> {
        use std::io::Write as _;
        let cmd = self.command(args);
        let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
        let line = std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(quote).collect::<Vec<_>>().join(" ");
        let mut child = Command::new("script")
            .args(["--quiet", "--return", "--command"])
            .arg(format!("stty rows {rows} cols {cols}; exec timeout -s KILL {limit} {line}"))
            .arg("/dev/null")
            .env_remove("KUBECONFIG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running script (util-linux)")?;
        let mut input = child.stdin.take().context("stdin")?;
        input.write_all(stdin.as_bytes())?;
        // script ends the session when its input ends: keep it open until
        // kubectl is done.
        let out = child.wait_with_output();
        drop(input);
        Ok(out?)
    }

    /// Runs kubectl with `stdin`; returns the output whatever the exit status.
    pub fn output_stdin(&self, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
        use std::io::Write as _;
        let mut child = self
            .command(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child.stdin.take().context("stdin")?.write_all(stdin.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// Runs kubectl with `stdin`, requiring success.
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        let out = self.output_stdin(args, stdin)?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.output(args)?;
        anyhow::ensure!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
