//! Container lifecycle hooks: postStart after a container starts, preStop
//! before it is stopped. A handler is exec (in the container), httpGet (from
//! the pod's network namespace; any HTTP response counts, as upstream's
//! kubelet does) or sleep.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::LifecycleHandler;

use super::probe::{Target, http_get, resolve_port};
use crate::cri::ContainerRuntime;
use crate::network::enter_and_run;

/// Which hook of the container, if it has one.
pub fn post_start(target: &Target) -> Option<&LifecycleHandler> {
    target.container.lifecycle.as_ref()?.post_start.as_ref()
}

pub fn pre_stop(target: &Target) -> Option<&LifecycleHandler> {
    target.container.lifecycle.as_ref()?.pre_stop.as_ref()
}

/// Runs one handler, giving up after `timeout`; the error is the message of
/// upstream's FailedPostStartHook / FailedPreStopHook events.
pub async fn run(
    handler: &LifecycleHandler,
    target: &Target,
    runtime: &dyn ContainerRuntime,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &handler.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return match runtime.exec(&target.container_id, &cmd, timeout).await {
            Ok((0, _)) => Ok(()),
            Ok((code, out)) => Err(format!(
                "Exec lifecycle hook ({cmd:?}) for Container \"{}\" failed - error: command exited with {code}, message: {:?}",
                target.container.name,
                String::from_utf8_lossy(&out).trim_end()
            )),
            Err(e) => Err(format!(
                "Exec lifecycle hook ({cmd:?}) for Container \"{}\" failed - error: {e}",
                target.container.name
            )),
        };
    }
    if let Some(http) = &handler.http_get {
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let failed = |why: &str| {
            Err(format!(
                "HTTP lifecycle hook ({path}) for Container \"{}\" failed - error: {why}",
                target.container.name
            ))
        };
        let Some(port) = resolve_port(&target.container, &http.port) else { return failed("the port is not valid") };
        let Some(host) = http.host.as_deref().and_then(|h| h.parse().ok()).or(target.pod_ip) else {
            return failed("the pod has no address");
        };
        let headers: Vec<(String, String)> =
            http.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
        let addr = SocketAddr::new(host, port);
        let path2 = path.clone();
        let got = enter_and_run(&target.netns, move || http_get(addr, &path2, &headers, timeout)).await;
        return match got {
            Ok(Some(_)) => Ok(()),
            Ok(None) => failed(&format!("no response from {addr}")),
            Err(e) => failed(&e.to_string()),
        };
    }
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    Err(format!(
        "invalid lifecycle handler for Container \"{}\": only exec, httpGet and sleep run",
        target.container.name
    ))
}
