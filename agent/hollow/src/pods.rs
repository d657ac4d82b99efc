//! The hollow "runtime": a pod bound to a live hollow node is reported
//! Running and Ready with a fake IP from the node's range; a pod marked for
//! deletion is deleted with grace 0, as a kubelet does once its containers
//! have stopped.
//!
//! Pods run forever unless annotated: `hollow.waggle.dev/run-seconds: "N"`
//! makes them finish N seconds after starting, Succeeded, or Failed when
//! `hollow.waggle.dev/exit-code` is not 0 (for Jobs in tests).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

use crate::{Error, Liveness, is_status, now};

pub const RUN_SECONDS: &str = "hollow.waggle.dev/run-seconds";
pub const EXIT_CODE: &str = "hollow.waggle.dev/exit-code";

struct Ctx {
    client: Client,
    /// Node name → its index (for its pod IP range).
    index: HashMap<String, usize>,
    /// Node name → the last host number handed out in its /24.
    next_ip: Mutex<HashMap<String, u32>>,
    live: Liveness,
}

pub(crate) async fn run(client: Client, names: Vec<String>, live: Liveness) -> Result<(), Error> {
    let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
    let api: Api<Pod> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client, index, next_ip: Mutex::new(HashMap::new()), live });
    Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "hollow pod reconcile");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_pod: Arc<Pod>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %err, "hollow pod");
    Action::requeue(Duration::from_secs(1))
}

#[tracing::instrument(skip_all, fields(namespace = %pod.namespace().unwrap_or_default(), pod = %pod.name_any()))]
async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { return Ok(Action::await_change()) };
    let Some(&index) = ctx.index.get(&node) else { return Ok(Action::await_change()) };
    if !ctx.live.is_alive(&node) {
        // A dead kubelet answers nothing; look again later in case it comes back.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if pod.metadata.deletion_timestamp.is_some() {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
            ..Default::default()
        };
        return match api.delete(&name, &dp).await {
            Ok(_) => {
                tracing::debug!("deletion finished");
                Ok(Action::await_change())
            }
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(Action::await_change()),
            Err(e) => Err(Error::kube(format!("finishing the deletion of pod {ns}/{name}"))(e)),
        };
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Ok(Action::await_change());
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let ip = status.and_then(|s| s.pod_ip.clone());
    if phase == Some("Running") && ready && ip.is_some() {
        let Some(run) = pod.annotations().get(RUN_SECONDS).and_then(|v| v.parse::<i64>().ok()) else {
            return Ok(Action::await_change());
        };
        let started = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0.as_second()).unwrap_or(0);
        let left = started + run - now().as_second();
        if left > 0 {
            return Ok(Action::requeue(Duration::from_secs(left as u64)));
        }
        let code = pod.annotations().get(EXIT_CODE).and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
        let patch = json!({"status": finished_status(&pod, code)});
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => tracing::debug!(code, "finished"),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(Error::kube(format!("reporting pod {ns}/{name} finished"))(e)),
        }
        return Ok(Action::await_change());
    }
    let ip = match ip {
        Some(ip) => ip,
        None => next_ip(&ctx, &node, index),
    };
    let patch = json!({"status": running_status(&pod, &crate::node::node_ip(index), &ip)});
    match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => tracing::debug!(%ip, "running"),
        Err(e) if is_status(&e, 404) => {}
        Err(e) => return Err(Error::kube(format!("reporting pod {ns}/{name} running"))(e)),
    }
    Ok(Action::await_change())
}

/// A fake address from the node's /24: hosts 1..=254 in turn. Pods on one
/// hollow node are short-lived enough in tests that wrapping is harmless.
fn next_ip(ctx: &Ctx, node: &str, index: usize) -> String {
    let host = match ctx.next_ip.lock() {
        Ok(mut m) => {
            let n = m.entry(node.to_owned()).or_insert(0);
            *n = *n % 254 + 1;
            *n
        }
        Err(_) => 1,
    };
    format!("10.{}.{}.{host}", 64 + index / 256, index % 256)
}

/// One status per container of the pod, all in `state`.
fn container_statuses(pod: &Pod, ready: bool, state: &Value) -> Vec<Value> {
    let uid = pod.uid().unwrap_or_default();
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    containers
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            json!({
                "name": c.name,
                "imageID": format!("hollow://{image}"),
                "image": image,
                "containerID": format!("hollow://{uid}/{}", c.name),
                "ready": ready,
                "started": ready,
                "restartCount": 0,
                "state": state,
            })
        })
        .collect()
}

fn finished_status(pod: &Pod, code: i32) -> Value {
    let t = Time(now());
    let cond = |type_: &str, status: &str| json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": t});
    let reason = if code == 0 { "Completed" } else { "Error" };
    let state = json!({"terminated": {"exitCode": code, "reason": reason, "finishedAt": t}});
    json!({
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [cond("PodReadyToStartContainers", "False"), cond("Initialized", "True"), cond("ContainersReady", "False"), cond("Ready", "False"), cond("PodScheduled", "True")],
        "containerStatuses": container_statuses(pod, false, &state),
    })
}

fn running_status(pod: &Pod, host_ip: &str, ip: &str) -> Value {
    let t = Time(now());
    let started = pod.status.as_ref().and_then(|s| s.start_time.clone()).unwrap_or_else(|| t.clone());
    let cond = |type_: &str| json!({"type": type_, "status": "True", "lastProbeTime": null, "lastTransitionTime": t});
    json!({
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": started,
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("ContainersReady"), cond("Ready"), cond("PodScheduled")],
        "containerStatuses": container_statuses(pod, true, &json!({"running": {"startedAt": started}})),
        "qosClass": "BestEffort",
    })
}
