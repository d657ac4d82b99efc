//! What the benchmarks that run `waggle server` share: waiting for its API
//! and reading a process's resident memory.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Resident set size of a process, in MiB.
pub fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS missing")?;
    Ok(kb / 1024.0)
}

/// A client for the server whose admin kubeconfig is (or will be) at
/// `kubeconfig`, once the server answers; an error after `timeout`.
pub async fn wait_for_client(kubeconfig: &Path, timeout: Duration) -> anyhow::Result<kube::Client> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(text) = std::fs::read_to_string(kubeconfig)
            && let Ok(c) = waggle_controllers::client_from_kubeconfig(&text).await
            && c.apiserver_version().await.is_ok()
        {
            return Ok(c);
        }
    }
    anyhow::bail!("waggle server did not come up within {timeout:?}")
}
