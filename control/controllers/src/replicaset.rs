//! The ReplicaSet controller: creates and deletes pods so that the number of
//! active pods it controls equals `spec.replicas`, and reports
//! replicas/readyReplicas/availableReplicas/observedGeneration.
//!
//! Pods are read from a reflector fed by the same watch that triggers the
//! controller; creations and deletions wait for the cache through
//! [`Expectations`]. Orphans matching the selector are not adopted (upstream
//! adopts them).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt as _};
use serde_json::json;

use crate::expectations::Expectations;
use crate::informer::{Informer, Informers, Source};
use crate::pod_state::{self, is_active};
use crate::{Error, informer, is_not_found};

/// At most this many pods are created or deleted by one sync (upstream: 500).
const BURST: usize = 500;
/// Requests in flight at once within one sync.
const CONCURRENCY: usize = 16;

struct Ctx {
    client: Client,
    pods: Arc<Informer<Pod>>,
    expectations: Expectations,
}

pub async fn run(client: Client, informers: &Informers) -> Result<(), Error> {
    let ctx =
        Arc::new(Ctx { client: client.clone(), pods: informers.pods.clone(), expectations: Expectations::default() });
    informer::run_owner(Source::Shared(&informers.replicasets), &informers.pods, "replicaset", ctx, reconcile).await;
    Ok(())
}

#[tracing::instrument(skip_all, fields(kind = "ReplicaSet", namespace = %rs.namespace().unwrap_or_default(), name = %rs.name_any()))]
async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let key = format!("{ns}/{name}");
    let owned: Vec<Arc<Pod>> = ctx.pods.controlled_by(rs.as_ref());
    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| is_active(p)).collect();
    let want = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;

    let settled = ctx.expectations.satisfied(&key, |n| active.iter().any(|p| p.name_any() == n));
    if settled && rs.metadata.deletion_timestamp.is_none() {
        if active.len() < want {
            create_pods(&ctx, &rs, &key, (want - active.len()).min(BURST)).await?;
        } else if active.len() > want {
            let mut ranked: Vec<&Arc<Pod>> = active.clone();
            ranked.sort_by_key(|p| deletion_rank(p));
            let victims: Vec<String> =
                ranked.iter().take((active.len() - want).min(BURST)).map(|p| p.name_any()).collect();
            delete_pods(&ctx, &ns, &key, victims).await?;
        }
    }

    let min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let status = compute_status(&rs, &active, min_ready);
    if rs.status.as_ref() != Some(&status) {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"status": status});
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(Error::kube(format!("updating the status of replicaset {key}"))(e)),
        }
    }
    if !settled {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Ready pods become available after minReadySeconds without any event.
    if min_ready > 0 && status.ready_replicas != status.available_replicas {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

fn compute_status(rs: &ReplicaSet, active: &[&Arc<Pod>], min_ready: i32) -> ReplicaSetStatus {
    let now = k8s_openapi::jiff::Timestamp::now();
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled =
        active.iter().filter(|p| template_labels.iter().all(|(k, v)| p.labels().get(k) == Some(v))).count();
    let ready = active.iter().filter(|p| pod_state::is_ready(p)).count();
    let available = active.iter().filter(|p| pod_state::is_available(p, min_ready, now)).count();
    ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(fully_labeled as i32),
        ready_replicas: Some(ready as i32),
        available_replicas: Some(available as i32),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: rs.status.as_ref().and_then(|s| s.terminating_replicas),
    }
}

/// Upstream's ActivePods ordering, least wanted first: unassigned before
/// assigned, Pending before Running, not ready before ready, newer before
/// older.
fn deletion_rank(p: &Pod) -> (u8, u8, u8, std::cmp::Reverse<i64>) {
    let assigned = u8::from(pod_state::is_assigned(p));
    let phase = match pod_state::phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let ready = u8::from(pod_state::is_ready(p));
    let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0);
    (assigned, phase, ready, std::cmp::Reverse(created))
}

async fn create_pods(ctx: &Ctx, rs: &ReplicaSet, key: &str, count: usize) -> Result<(), Error> {
    let ns = rs.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pod = pod_from_template(rs);
    let pp = PostParams::default();
    let creates: Vec<_> = (0..count).map(|_| api.create(&pp, &pod)).collect();
    let mut results = futures::stream::iter(creates).buffer_unordered(CONCURRENCY);
    let mut created = Vec::new();
    let mut first_error = None;
    while let Some(r) = results.next().await {
        match r {
            Ok(p) => created.push(p.name_any()),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    tracing::info!(created = created.len(), "created pods");
    ctx.expectations.expect_adds(key, created);
    match first_error {
        Some(e) => Err(Error::kube(format!("creating pods for replicaset {key}"))(e)),
        None => Ok(()),
    }
}

async fn delete_pods(ctx: &Ctx, ns: &str, key: &str, names: Vec<String>) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    ctx.expectations.expect_deletes(key, names.clone());
    let dp = DeleteParams::default();
    let deletes: Vec<_> = names.iter().map(|n| api.delete(n, &dp)).collect();
    let mut results = futures::stream::iter(deletes).buffer_unordered(CONCURRENCY);
    while let Some(r) = results.next().await {
        match r {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                ctx.expectations.forget(key);
                return Err(Error::kube(format!("deleting pods of replicaset {key}"))(e));
            }
        }
    }
    tracing::info!(deleted = names.len(), "deleted pods");
    Ok(())
}

fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![pod_state::owner_ref("apps/v1", "ReplicaSet", rs)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};

    fn pod(node: Option<&str>, phase: &str, ready: bool) -> Pod {
        Pod {
            spec: Some(PodSpec { node_name: node.map(str::to_owned), ..Default::default() }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn unscheduled_and_unready_pods_are_deleted_before_running_ready_ones() {
        let running = pod(Some("n"), "Running", true);
        let unready = pod(Some("n"), "Running", false);
        let pending = pod(Some("n"), "Pending", false);
        let unassigned = pod(None, "Pending", false);
        let mut v = [&running, &unready, &pending, &unassigned];
        v.sort_by_key(|p| deletion_rank(p));
        assert_eq!(v, [&unassigned, &pending, &unready, &running]);
    }
}
