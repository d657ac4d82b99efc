//! The Deployment controller: one ReplicaSet per pod template, named
//! `<deployment>-<pod-template-hash>`; RollingUpdate (maxSurge and
//! maxUnavailable) or Recreate between them; revisions in the
//! `deployment.kubernetes.io/revision` annotation (a rollback is a template
//! patch by kubectl, after which the matching old ReplicaSet is reused and
//! gets the next revision); revisionHistoryLimit; pause; proportional
//! scaling; status and the Available/Progressing conditions that
//! `kubectl rollout status` reads.
//!
//! Not done: adoption of orphaned ReplicaSets matching the selector.

pub mod hash;
pub mod rolling;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt as _};
use serde_json::json;

use self::rolling::OldRs;
use crate::informer::Informers;
use crate::pod_state;
use crate::{Error, informer, is_not_found};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";

struct Ctx {
    client: Client,
    replicasets: Store<ReplicaSet>,
    pods: Store<Pod>,
}

pub async fn run(client: Client, informers: &Informers) -> Result<(), Error> {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        replicasets: informers.replicasets.store(),
        pods: informers.pods.store(),
    });
    informers.pods.ready().await;
    informer::run_owner(
        informer::Source::Watch(Api::<Deployment>::all(client)),
        &informers.replicasets,
        "deployment",
        ctx,
        reconcile,
    )
    .await;
    Ok(())
}

fn replicas_of(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available_of(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

pub fn revision_of(obj: &impl kube::Resource) -> i64 {
    obj.annotations().get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// The template without the pod-template-hash label, for comparisons.
fn template_without_hash(t: Option<&PodTemplateSpec>) -> serde_json::Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    let mut now_empty = false;
    if let Some(labels) = v.pointer_mut("/metadata/labels").and_then(|l| l.as_object_mut()) {
        labels.remove(HASH_LABEL);
        now_empty = labels.is_empty();
    }
    if now_empty && let Some(m) = v.pointer_mut("/metadata").and_then(|m| m.as_object_mut()) {
        m.remove("labels");
    }
    v
}

/// The deployment as the sync needs it, resolved once.
struct Plan<'a> {
    d: &'a Deployment,
    ns: String,
    name: String,
    replicas: i32,
    max_surge: i32,
    max_unavailable: i32,
    recreate: bool,
    paused: bool,
}

#[tracing::instrument(skip_all, fields(kind = "Deployment", namespace = %d.namespace().unwrap_or_default(), name = %d.name_any()))]
async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let strategy = spec.strategy.clone().unwrap_or_default();
    let recreate = strategy.type_.as_deref() == Some("Recreate");
    let (max_surge, max_unavailable) = if recreate {
        (0, 0)
    } else {
        let ru = strategy.rolling_update.unwrap_or_default();
        rolling::resolve_fenceposts(ru.max_surge.as_ref(), ru.max_unavailable.as_ref(), replicas)
    };
    let plan = Plan {
        d: &d,
        ns: d.namespace().unwrap_or_default(),
        name: d.name_any(),
        replicas,
        max_surge,
        max_unavailable,
        recreate,
        paused: spec.paused.unwrap_or(false),
    };
    let uid = d.uid().unwrap_or_default();
    let mut all: Vec<Arc<ReplicaSet>> = ctx
        .replicasets
        .state()
        .into_iter()
        .filter(|rs| {
            rs.namespace().as_deref() == Some(plan.ns.as_str()) && pod_state::is_controlled_by(rs.as_ref(), &uid)
        })
        .collect();
    all.sort_by_key(|rs| (rs.metadata.creation_timestamp.clone(), rs.name_any()));

    // A ReplicaSet whose status lags its spec would make the arithmetic
    // count pods twice: wait for its controller.
    let lagging = all.iter().any(|rs| {
        rs.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0) < rs.metadata.generation.unwrap_or(0)
    });

    let wanted = template_without_hash(Some(&spec.template));
    let new_rs = all
        .iter()
        .find(|rs| template_without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == wanted)
        .cloned();
    let max_old_revision = all
        .iter()
        .filter(|rs| Some(rs.uid()) != new_rs.as_ref().map(|n| n.uid()))
        .map(|rs| revision_of(rs.as_ref()))
        .max()
        .unwrap_or(0);
    let mut created = None;

    if !lagging {
        if is_scaling_event(&plan, &all) || plan.paused {
            scale(&ctx, &plan, new_rs.as_deref(), &all).await?;
        } else {
            if new_rs.is_none() {
                // The next pass, triggered by the new ReplicaSet's event, finds
                // it in the cache; going on now would count without it.
                let rs = create_new_rs(&ctx, &plan, &all, max_old_revision + 1).await?;
                created = Some(rs.name_any());
            } else if let Some(rs) = &new_rs {
                sync_revision(&ctx, &plan, rs, max_old_revision + 1).await?;
            }
            if let Some(rs) = new_rs.as_ref().filter(|_| created.is_none()) {
                if plan.recreate {
                    rollout_recreate(&ctx, &plan, rs, &all).await?;
                } else {
                    rollout_rolling(&ctx, &plan, rs, &all).await?;
                }
            }
        }
    }
    if let Some(rs) = &new_rs {
        let rev = revision_of(rs.as_ref()).max(max_old_revision + 1);
        if revision_of(plan.d) != rev && !plan.paused {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &plan.ns);
            let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
            api.patch(&plan.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::kube(format!("annotating deployment {}/{}", plan.ns, plan.name)))?;
        }
    }
    let complete = write_status(&ctx, &plan, new_rs.as_deref(), &all, created.as_deref()).await?;
    if complete {
        cleanup(&ctx, &plan, new_rs.as_deref(), &all, spec.revision_history_limit.unwrap_or(10)).await?;
    }
    if lagging || (!complete && !plan.paused) {
        // Progress is driven by ReplicaSet events; the requeue covers the
        // progress deadline and Recreate's wait for old pods to go.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    Ok(Action::await_change())
}

/// Upstream: some active ReplicaSet was sized for another `spec.replicas`.
fn is_scaling_event(plan: &Plan<'_>, all: &[Arc<ReplicaSet>]) -> bool {
    all.iter().filter(|rs| replicas_of(rs) > 0).any(|rs| {
        rs.annotations().get(DESIRED_REPLICAS).and_then(|v| v.parse::<i32>().ok()).is_some_and(|v| v != plan.replicas)
    })
}

async fn scale_rs(ctx: &Ctx, plan: &Plan<'_>, rs: &ReplicaSet, replicas: i32) -> Result<(), Error> {
    let desired = plan.replicas.to_string();
    let max = (plan.replicas + plan.max_surge).to_string();
    if replicas_of(rs) == replicas
        && rs.annotations().get(DESIRED_REPLICAS) == Some(&desired)
        && rs.annotations().get(MAX_REPLICAS) == Some(&max)
    {
        return Ok(());
    }
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &plan.ns);
    let patch = json!({
        "metadata": {"annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max}},
        "spec": {"replicas": replicas},
    });
    api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(Error::kube(format!(
        "scaling replicaset {}/{}",
        plan.ns,
        rs.name_any()
    )))?;
    tracing::info!(replicaset = %rs.name_any(), from = replicas_of(rs), to = replicas, "scaled");
    Ok(())
}

/// Upstream's `scale`: one active ReplicaSet takes the new size; a
/// saturated new one means old ones go to zero; otherwise the change is
/// shared out in proportion.
async fn scale(ctx: &Ctx, plan: &Plan<'_>, new_rs: Option<&ReplicaSet>, all: &[Arc<ReplicaSet>]) -> Result<(), Error> {
    let active: Vec<&Arc<ReplicaSet>> = all.iter().filter(|rs| replicas_of(rs) > 0).collect();
    if active.len() <= 1 {
        let target = active.first().map(|rs| rs.as_ref()).or(new_rs).or(all.last().map(|rs| rs.as_ref()));
        if let Some(rs) = target {
            scale_rs(ctx, plan, rs, plan.replicas).await?;
        }
        return Ok(());
    }
    if let Some(n) = new_rs.filter(|n| replicas_of(n) == plan.replicas && available_of(n) >= plan.replicas) {
        for rs in all.iter().filter(|rs| rs.uid() != n.uid()) {
            scale_rs(ctx, plan, rs, 0).await?;
        }
        return Ok(());
    }
    let current: i32 = active.iter().map(|rs| replicas_of(rs)).sum();
    let allowed = plan.replicas + plan.max_surge;
    let to_add = allowed - current;
    let mut ordered = active.clone();
    // Newest first when growing, largest first either way (upstream's sort).
    ordered.sort_by_key(|rs| {
        (std::cmp::Reverse(replicas_of(rs)), std::cmp::Reverse(rs.metadata.creation_timestamp.clone()))
    });
    let sizes: Vec<i32> = ordered.iter().map(|rs| replicas_of(rs)).collect();
    for (rs, size) in ordered.iter().zip(rolling::proportional(&sizes, to_add)) {
        scale_rs(ctx, plan, rs, size).await?;
    }
    Ok(())
}

fn rs_annotations(plan: &Plan<'_>, revision: i64) -> BTreeMap<String, String> {
    let mut a: BTreeMap<String, String> = plan
        .d
        .annotations()
        .iter()
        .filter(|(k, _)| {
            ![LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    a.insert(REVISION.into(), revision.to_string());
    a.insert(DESIRED_REPLICAS.into(), plan.replicas.to_string());
    a.insert(MAX_REPLICAS.into(), (plan.replicas + plan.max_surge).to_string());
    a
}

async fn create_new_rs(
    ctx: &Ctx,
    plan: &Plan<'_>,
    all: &[Arc<ReplicaSet>],
    revision: i64,
) -> Result<ReplicaSet, Error> {
    let spec = plan.d.spec.clone().unwrap_or_default();
    let template = spec.template.clone();
    let mut collision = plan.d.status.as_ref().and_then(|s| s.collision_count);
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &plan.ns);
    for _ in 0..5 {
        let hash = hash::pod_template_hash(&template, collision);
        let mut t = template.clone();
        let meta = t.metadata.get_or_insert_with(ObjectMeta::default);
        meta.labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.clone());
        let mut selector: LabelSelector = spec.selector.clone();
        selector.match_labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.clone());
        let mut labels = meta.labels.clone().unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.clone());
        // Rolling updates start the new ReplicaSet at what the surge allows.
        let all_spec: i32 = all.iter().map(|rs| replicas_of(rs)).sum();
        let initial = if plan.recreate || plan.paused {
            0
        } else {
            rolling::new_rs_replicas(plan.replicas, plan.max_surge, all_spec, 0)
        };
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", plan.name)),
                namespace: Some(plan.ns.clone()),
                labels: Some(labels),
                annotations: Some(rs_annotations(plan, revision)),
                owner_references: Some(vec![pod_state::owner_ref("apps/v1", "Deployment", plan.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(initial),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(t),
            }),
            status: None,
        };
        let name = rs.name_any();
        match api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                tracing::info!(replicaset = %name, revision, replicas = initial, "created new replicaset");
                return Ok(created);
            }
            Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 409) => {
                // Ours already (the cache lags) when the template matches.
                let existing = api.get(&name).await.map_err(Error::kube(format!("reading replicaset {name}")))?;
                let same = template_without_hash(existing.spec.as_ref().and_then(|s| s.template.as_ref()))
                    == template_without_hash(Some(&template));
                if same && pod_state::is_controlled_by(&existing, &plan.d.uid().unwrap_or_default()) {
                    return Ok(existing);
                }
                collision = Some(collision.unwrap_or(0) + 1);
                let dapi: Api<Deployment> = Api::namespaced(ctx.client.clone(), &plan.ns);
                let patch = json!({"status": {"collisionCount": collision}});
                dapi.patch_status(&plan.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(Error::kube(format!("recording a hash collision on {}", plan.name)))?;
            }
            Err(e) => return Err(Error::kube(format!("creating replicaset {}/{name}", plan.ns))(e)),
        }
    }
    Err(Error::Config {
        reason: format!("deployment {}/{}: too many pod-template-hash collisions", plan.ns, plan.name),
    })
}

/// A reused ReplicaSet (after a rollback) becomes the newest revision.
async fn sync_revision(ctx: &Ctx, plan: &Plan<'_>, rs: &ReplicaSet, next: i64) -> Result<(), Error> {
    let current = revision_of(rs);
    if current >= next {
        return Ok(());
    }
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &plan.ns);
    let mut annotations = serde_json::Map::new();
    for (k, v) in rs_annotations(plan, next) {
        if k != DESIRED_REPLICAS && k != MAX_REPLICAS {
            annotations.insert(k, json!(v));
        }
    }
    let patch = json!({"metadata": {"annotations": annotations}});
    api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!("setting the revision of replicaset {}", rs.name_any())))?;
    tracing::info!(replicaset = %rs.name_any(), from = current, to = next, "reused replicaset gets the next revision");
    Ok(())
}

async fn rollout_rolling(
    ctx: &Ctx,
    plan: &Plan<'_>,
    new_rs: &ReplicaSet,
    all: &[Arc<ReplicaSet>],
) -> Result<(), Error> {
    let all_spec: i32 = all.iter().map(|rs| replicas_of(rs)).sum();
    let target = rolling::new_rs_replicas(plan.replicas, plan.max_surge, all_spec, replicas_of(new_rs));
    if target != replicas_of(new_rs) {
        // One step at a time: the next event brings fresh counts.
        return scale_rs(ctx, plan, new_rs, target).await;
    }
    let old: Vec<&Arc<ReplicaSet>> = all.iter().filter(|rs| rs.uid() != new_rs.uid()).collect();
    let counts: Vec<OldRs> =
        old.iter().map(|rs| OldRs { spec: replicas_of(rs), available: available_of(rs) }).collect();
    let specs = rolling::scale_down_old(
        plan.replicas,
        plan.max_unavailable,
        replicas_of(new_rs),
        available_of(new_rs),
        &counts,
    );
    for (rs, spec) in old.iter().zip(specs) {
        if spec != replicas_of(rs) {
            scale_rs(ctx, plan, rs, spec).await?;
        }
    }
    Ok(())
}

async fn rollout_recreate(
    ctx: &Ctx,
    plan: &Plan<'_>,
    new_rs: &ReplicaSet,
    all: &[Arc<ReplicaSet>],
) -> Result<(), Error> {
    let old: Vec<&Arc<ReplicaSet>> = all.iter().filter(|rs| rs.uid() != new_rs.uid()).collect();
    let mut scaled_down = false;
    for rs in &old {
        if replicas_of(rs) > 0 {
            scale_rs(ctx, plan, rs, 0).await?;
            scaled_down = true;
        }
    }
    if scaled_down {
        return Ok(());
    }
    // Recreate's promise: no old pod runs (nor terminates) beside a new one.
    let old_uids: Vec<String> = old.iter().filter_map(|rs| rs.uid()).collect();
    let old_pods = ctx.pods.state().iter().any(|p| {
        p.namespace().as_deref() == Some(plan.ns.as_str())
            && pod_state::controller_of(p.as_ref()).is_some_and(|o| old_uids.contains(&o.uid))
            && !matches!(pod_state::phase(p), "Succeeded" | "Failed")
    });
    if old_pods {
        return Ok(());
    }
    scale_rs(ctx, plan, new_rs, plan.replicas).await
}

/// Old ReplicaSets beyond revisionHistoryLimit, with no pods, go (oldest
/// revision first).
async fn cleanup(
    ctx: &Ctx,
    plan: &Plan<'_>,
    new_rs: Option<&ReplicaSet>,
    all: &[Arc<ReplicaSet>],
    limit: i32,
) -> Result<(), Error> {
    let mut old: Vec<&Arc<ReplicaSet>> = all
        .iter()
        .filter(|rs| new_rs.is_none_or(|n| n.uid() != rs.uid()))
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let excess = old.len() as i64 - i64::from(limit.max(0));
    if excess <= 0 {
        return Ok(());
    }
    old.sort_by_key(|rs| revision_of(rs.as_ref()));
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &plan.ns);
    let empty = old.into_iter().filter(|rs| replicas_of(rs) == 0 && rs.status.as_ref().is_none_or(|s| s.replicas == 0));
    for rs in empty.take(excess as usize) {
        match api.delete(&rs.name_any(), &DeleteParams::background()).await {
            Ok(_) => tracing::info!(replicaset = %rs.name_any(), "deleted old replicaset beyond the history limit"),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("deleting old replicaset {}", rs.name_any()))(e)),
        }
    }
    Ok(())
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    previous: Option<&DeploymentCondition>,
) -> DeploymentCondition {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let same = previous.is_some_and(|p| p.status == status && p.reason.as_deref() == Some(reason));
    let transition = previous
        .filter(|p| p.status == status)
        .and_then(|p| p.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    let update =
        if same { previous.and_then(|p| p.last_update_time.clone()).unwrap_or_else(|| now.clone()) } else { now };
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(transition),
        last_update_time: Some(update),
    }
}

/// Writes the status when it changed; returns whether the rollout is complete.
async fn write_status(
    ctx: &Ctx,
    plan: &Plan<'_>,
    new_rs: Option<&ReplicaSet>,
    all: &[Arc<ReplicaSet>],
    created: Option<&str>,
) -> Result<bool, Error> {
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(|rs| f(rs)).sum::<i32>();
    let replicas = sum(&|rs| rs.status.as_ref().map(|s| s.replicas).unwrap_or(0));
    let ready = sum(&|rs| rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0));
    let available = sum(&available_of);
    let updated = new_rs.and_then(|rs| rs.status.as_ref()).map(|s| s.replicas).unwrap_or(0);
    let generation = plan.d.metadata.generation;
    let old_status = plan.d.status.clone().unwrap_or_default();
    let old_conditions = old_status.conditions.clone().unwrap_or_default();
    let previous = |t: &str| old_conditions.iter().find(|c| c.type_ == t);

    let available_cond = if available >= plan.replicas - plan.max_unavailable {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            previous("Available"),
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            previous("Available"),
        )
    };
    let rs_name = new_rs.map(|rs| rs.name_any()).unwrap_or_default();
    let complete = new_rs.is_some()
        && updated == plan.replicas
        && replicas == plan.replicas
        && available == plan.replicas
        && new_rs.is_some_and(|rs| replicas_of(rs) == plan.replicas);
    let progressed = updated > old_status.updated_replicas.unwrap_or(0)
        || replicas != old_status.replicas.unwrap_or(0)
        || ready > old_status.ready_replicas.unwrap_or(0)
        || available > old_status.available_replicas.unwrap_or(0);
    let prev_progressing = previous("Progressing");
    let deadline = plan.d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).unwrap_or(600);
    let progressing = if plan.paused {
        condition("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into(), prev_progressing)
    } else if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            prev_progressing,
        )
    } else if let Some(c) = created {
        condition("Progressing", "True", "NewReplicaSetCreated", format!("Created new replica set \"{c}\""), None)
    } else if progressed || prev_progressing.is_none() {
        let mut c = condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
            prev_progressing,
        );
        c.last_update_time = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        c
    } else {
        let since = prev_progressing.and_then(|c| c.last_update_time.as_ref()).map(|t| t.0.as_second()).unwrap_or(0);
        let timed_out = k8s_openapi::jiff::Timestamp::now().as_second() - since > i64::from(deadline);
        if timed_out && prev_progressing.is_some_and(|c| c.reason.as_deref() != Some("NewReplicaSetAvailable")) {
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                prev_progressing,
            )
        } else {
            prev_progressing.cloned().unwrap_or_else(|| {
                condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{rs_name}\" is progressing."),
                    None,
                )
            })
        }
    };
    let status = DeploymentStatus {
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((plan.replicas - available).max(0)),
        observed_generation: generation,
        collision_count: old_status.collision_count,
        conditions: Some(vec![available_cond, progressing]),
        terminating_replicas: None,
    };
    if status != old_status {
        let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &plan.ns);
        let patch = json!({"status": status});
        match api.patch_status(&plan.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(Error::kube(format!("updating the status of deployment {}/{}", plan.ns, plan.name))(e));
            }
        }
    }
    Ok(complete)
}
