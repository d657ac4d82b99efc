//! Liveness, readiness and startup probes (exec, httpGet, tcpSocket).
//!
//! Network probes are made from inside the pod's network namespace to the
//! pod's address, so they work whatever namespace the node's network is in
//! (the agent may run beside a test's "node" namespace, or in a multi-node
//! setup on one machine).

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::Notify;

use super::ProbeView;
use crate::cri::ContainerRuntime;
use crate::network::enter_and_run;

/// What a probe needs to reach its container.
#[derive(Clone, Debug)]
pub struct Target {
    pub container_id: String,
    pub container: Container,
    pub netns: PathBuf,
    pub pod_ip: Option<IpAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Startup,
    Readiness,
    Liveness,
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.map(|v| v.max(0) as u64).unwrap_or(default))
}

pub(crate) fn resolve_port(c: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

/// One probe attempt: true on success.
pub async fn run_once(probe: &Probe, target: &Target, runtime: &dyn ContainerRuntime) -> bool {
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    if let Some(exec) = &probe.exec {
        let args = exec.command.clone().unwrap_or_default();
        return matches!(runtime.exec(&target.container_id, &args, timeout).await, Ok((0, _)));
    }
    let Some(pod_ip) = target.pod_ip else { return false };
    if let Some(http) = &probe.http_get {
        let Some(port) = resolve_port(&target.container, &http.port) else { return false };
        let host = http.host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(pod_ip);
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> =
            http.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
        let addr = SocketAddr::new(host, port);
        return enter_and_run(&target.netns, move || http_get(addr, &path, &headers, timeout))
            .await
            .ok()
            .flatten()
            .is_some_and(|code| (200..400).contains(&code));
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = resolve_port(&target.container, &tcp.port) else { return false };
        let host = tcp.host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(pod_ip);
        let addr = SocketAddr::new(host, port);
        return enter_and_run(&target.netns, move || TcpStream::connect_timeout(&addr, timeout).is_ok())
            .await
            .unwrap_or(false);
    }
    // gRPC probes and probes with no handler count as failing.
    false
}

/// An HTTP/1.1 GET: the response's status code, None when no response came
/// (probes count 200–399 as success, as upstream).
pub(crate) fn http_get(addr: SocketAddr, path: &str, headers: &[(String, String)], timeout: Duration) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while !got.contains(&b'\n') && got.len() < 64 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&got);
    line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok())
}

/// Runs the container's probes until aborted, recording results in `view`
/// and waking the pod's worker on every change.
pub fn spawn(
    target: Target,
    runtime: Arc<dyn ContainerRuntime>,
    view: Arc<Mutex<ProbeView>>,
    wake: Arc<Notify>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let c = target.container.clone();
    let mut tasks = Vec::new();
    let has_startup = c.startup_probe.is_some();
    if let Some(p) = c.startup_probe.clone() {
        tasks.push(tokio::spawn(probe_loop(
            Kind::Startup,
            p,
            target.clone(),
            runtime.clone(),
            view.clone(),
            wake.clone(),
            false,
        )));
    }
    if let Some(p) = c.readiness_probe.clone() {
        tasks.push(tokio::spawn(probe_loop(
            Kind::Readiness,
            p,
            target.clone(),
            runtime.clone(),
            view.clone(),
            wake.clone(),
            has_startup,
        )));
    }
    if let Some(p) = c.liveness_probe.clone() {
        tasks.push(tokio::spawn(probe_loop(Kind::Liveness, p, target, runtime, view, wake, has_startup)));
    }
    tasks
}

fn lock(view: &Mutex<ProbeView>) -> std::sync::MutexGuard<'_, ProbeView> {
    view.lock().unwrap_or_else(|p| p.into_inner())
}

async fn probe_loop(
    kind: Kind,
    probe: Probe,
    target: Target,
    runtime: Arc<dyn ContainerRuntime>,
    view: Arc<Mutex<ProbeView>>,
    wake: Arc<Notify>,
    wait_for_startup: bool,
) {
    let id = target.container_id.clone();
    let period = secs(probe.period_seconds, 10).max(Duration::from_secs(1));
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1) as u32;
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1) as u32;
    tokio::time::sleep(secs(probe.initial_delay_seconds, 0)).await;
    if wait_for_startup {
        while !lock(&view).started.get(&id).copied().unwrap_or(false) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        let ok = run_once(&probe, &target, runtime.as_ref()).await;
        if ok {
            successes += 1;
            failures = 0;
        } else {
            failures += 1;
            successes = 0;
        }
        let mut changed = false;
        {
            let mut v = lock(&view);
            match kind {
                Kind::Readiness => {
                    let now = if ok && successes >= success_threshold {
                        Some(true)
                    } else if !ok && failures >= failure_threshold {
                        Some(false)
                    } else {
                        None
                    };
                    if let Some(now) = now
                        && v.ready.insert(id.clone(), now) != Some(now)
                    {
                        changed = true;
                    }
                }
                Kind::Liveness => {
                    if !ok && failures >= failure_threshold {
                        tracing::info!(container = %id, "liveness probe failed {failures} times; the container will be restarted");
                        v.liveness_failed.insert(id.clone(), true);
                        changed = true;
                    }
                }
                Kind::Startup => {
                    if ok {
                        v.started.insert(id.clone(), true);
                        changed = true;
                    } else if failures >= failure_threshold {
                        tracing::info!(container = %id, "startup probe failed {failures} times; the container will be restarted");
                        v.liveness_failed.insert(id.clone(), true);
                        changed = true;
                    }
                }
            }
        }
        if changed {
            wake.notify_one();
        }
        let done = match kind {
            Kind::Liveness => !ok && failures >= failure_threshold,
            Kind::Startup => ok || failures >= failure_threshold,
            Kind::Readiness => false,
        };
        if done {
            return;
        }
        tokio::time::sleep(period).await;
    }
}
