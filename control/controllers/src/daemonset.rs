//! The DaemonSet controller: one pod per eligible node. Eligible: the
//! template's nodeSelector matches and every NoSchedule/NoExecute taint is
//! tolerated (with the tolerations upstream adds to daemon pods). Pods are
//! pinned with required node affinity on `metadata.name` and placed by the
//! scheduler, as upstream does. A changed template rolls out one node at a
//! time (RollingUpdate, maxUnavailable 1) unless the strategy is OnDelete.
//!
//! Not done: required node affinity terms in the template when choosing
//! nodes, maxSurge, ControllerRevisions (the hash label is computed here).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};
use serde_json::json;

use crate::deployment::hash::pod_template_hash;
use crate::expectations::Expectations;
use crate::informer::{self, Informer, Informers};
use crate::nodelifecycle::tolerates;
use crate::{Error, is_not_found, pod_state};

pub const HASH_LABEL: &str = "controller-revision-hash";

struct Ctx {
    client: Client,
    pods: Arc<Informer<Pod>>,
    nodes: Store<Node>,
    expectations: Expectations,
}

pub async fn run(client: Client, informers: &Informers) -> Result<(), Error> {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: informers.pods.clone(),
        nodes: informers.nodes.store(),
        expectations: Expectations::default(),
    });
    let (pod_events, node_events) = (informers.pods.subscribe(), informers.nodes.subscribe());
    informers.pods.ready().await;
    informers.nodes.ready().await;
    let controller = Controller::new(Api::<DaemonSet>::all(client), watcher::Config::default());
    let daemonsets = controller.store();
    let controller = controller
        .owns_shared_stream(pod_events)
        // Any node change may make a node (in)eligible for every DaemonSet.
        .watches_shared_stream(node_events, move |_node: Arc<Node>| {
            daemonsets.state().iter().map(|d| ObjectRef::from_obj(d.as_ref())).collect::<Vec<_>>()
        });
    informer::drive(controller, "daemonset", ctx, reconcile).await;
    Ok(())
}

/// Tolerations upstream adds to every daemon pod.
fn daemon_tolerations(mut own: Vec<Toleration>) -> Vec<Toleration> {
    let add = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        if !own.iter().any(|t| t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect)) {
            own.push(add(key, effect));
        }
    }
    own
}

pub fn eligible(ds: &DaemonSet, node: &Node) -> bool {
    let spec = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let selector = spec.and_then(|s| s.node_selector.clone()).unwrap_or_default();
    if !selector.iter().all(|(k, v)| node.labels().get(k) == Some(v)) {
        return false;
    }
    let tolerations = daemon_tolerations(spec.and_then(|s| s.tolerations.clone()).unwrap_or_default());
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)))
}

fn pod_node(pod: &Pod) -> Option<String> {
    if let Some(n) = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()) {
        return Some(n);
    }
    // Not yet scheduled: the node it is pinned to.
    let terms = pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    terms
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name")?
        .values
        .as_ref()?
        .first()
        .cloned()
}

#[tracing::instrument(skip_all, fields(kind = "DaemonSet", namespace = %ds.namespace().unwrap_or_default(), name = %ds.name_any()))]
async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let key = format!("{ns}/{name}");
    let spec = ds.spec.clone().unwrap_or_default();
    let hash = pod_template_hash(&spec.template, None);
    let pods: Vec<Arc<Pod>> =
        ctx.pods.controlled_by(ds.as_ref()).into_iter().filter(|p| pod_state::is_active(p)).collect();
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for p in &pods {
        if let Some(n) = pod_node(p) {
            by_node.entry(n).or_default().push(p.clone());
        }
    }
    let nodes = ctx.nodes.state();
    let eligible_nodes: Vec<&Arc<Node>> = nodes.iter().filter(|n| eligible(&ds, n)).collect();
    let settled = ctx.expectations.satisfied(&key, |n| pods.iter().any(|p| p.name_any() == n));
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if settled {
        let mut created = Vec::new();
        let mut deleted = Vec::new();
        for node in &eligible_nodes {
            let node_name = node.name_any();
            let on_node = by_node.get(&node_name).map(Vec::as_slice).unwrap_or_default();
            if on_node.is_empty() {
                let pod = daemon_pod(&ds, &hash, &node_name);
                let p = api
                    .create(&PostParams::default(), &pod)
                    .await
                    .map_err(Error::kube(format!("creating a daemon pod of {key} on {node_name}")))?;
                created.push(p.name_any());
            } else if on_node.len() > 1 {
                deleted.extend(on_node.iter().skip(1).map(|p| p.name_any()));
            }
        }
        // Pods on nodes that are gone or no longer eligible.
        for (node, ps) in &by_node {
            if !eligible_nodes.iter().any(|n| &n.name_any() == node) {
                deleted.extend(ps.iter().map(|p| p.name_any()));
            }
        }
        // RollingUpdate, maxUnavailable 1: replace one outdated pod when all are ready.
        let rolling = spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()) != Some("OnDelete");
        let all_ready = pods.iter().all(|p| pod_state::is_ready(p));
        if rolling
            && all_ready
            && deleted.is_empty()
            && created.is_empty()
            && let Some(old) = pods.iter().find(|p| p.labels().get(HASH_LABEL) != Some(&hash))
        {
            deleted.push(old.name_any());
        }
        ctx.expectations.expect_adds(&key, created);
        ctx.expectations.expect_deletes(&key, deleted.clone());
        for victim in deleted {
            match api.delete(&victim, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(pod = %victim, "deleted daemon pod"),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::kube(format!("deleting daemon pod {ns}/{victim}"))(e)),
            }
        }
    }
    let now = k8s_openapi::jiff::Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let scheduled: Vec<&Arc<Pod>> =
        pods.iter().filter(|p| pod_node(p).is_some_and(|n| eligible_nodes.iter().any(|e| e.name_any() == n))).collect();
    let status = DaemonSetStatus {
        desired_number_scheduled: eligible_nodes.len() as i32,
        current_number_scheduled: scheduled.len() as i32,
        number_misscheduled: (pods.len() - scheduled.len()) as i32,
        number_ready: scheduled.iter().filter(|p| pod_state::is_ready(p)).count() as i32,
        number_available: Some(scheduled.iter().filter(|p| pod_state::is_available(p, min_ready, now)).count() as i32),
        number_unavailable: Some(
            (eligible_nodes.len() - scheduled.iter().filter(|p| pod_state::is_available(p, min_ready, now)).count())
                as i32,
        ),
        updated_number_scheduled: Some(
            scheduled.iter().filter(|p| p.labels().get(HASH_LABEL) == Some(&hash)).count() as i32
        ),
        observed_generation: ds.metadata.generation,
        collision_count: None,
        conditions: None,
    };
    if ds.status.as_ref() != Some(&status) {
        let dapi: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"status": status});
        match dapi.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("updating the status of daemonset {key}"))(e)),
        }
    }
    if settled { Ok(Action::requeue(Duration::from_secs(30))) } else { Ok(Action::requeue(Duration::from_secs(1))) }
}

fn daemon_pod(ds: &DaemonSet, hash: &str, node: &str) -> Pod {
    let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    let mut spec = template.spec.unwrap_or_default();
    spec.tolerations = Some(daemon_tolerations(spec.tolerations.unwrap_or_default()));
    let pin = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    affinity.node_affinity = Some(NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector { node_selector_terms: vec![pin] }),
        preferred_during_scheduling_ignored_during_execution: affinity
            .node_affinity
            .as_ref()
            .and_then(|n| n.preferred_during_scheduling_ignored_during_execution.clone()),
    });
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![pod_state::owner_ref("apps/v1", "DaemonSet", ds)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}
