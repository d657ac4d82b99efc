//! The StatefulSet controller (upstream's stateful_set_control): pods with
//! stable names `<set>-<ordinal>`, hostname and subdomain, one PVC per
//! volumeClaimTemplate and ordinal (`<claim>-<set>-<ordinal>`, kept on
//! scale-down and deletion under the default Retain policy; owned by the set
//! when `whenDeleted: Delete`).
//!
//! `OrderedReady` creates pods in ordinal order, each Running and Ready
//! (for minReadySeconds) before the next, and removes them in reverse;
//! `Parallel` creates and removes them all at once. Revisions are
//! ControllerRevisions named `<set>-<hash>` whose name is the pods'
//! `controller-revision-hash` label. RollingUpdate replaces pods from the
//! highest ordinal down to `partition`, one at a time, each healthy before
//! the next; OnDelete leaves pods until the user deletes them.
//!
//! `whenScaled: Delete` makes a condemned pod the owner of its claims, so
//! they go with it.
//!
//! Not done: adopting orphans, maxUnavailable > 1.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};
use serde_json::json;

use crate::deployment::hash::pod_template_hash;
use crate::expectations::Expectations;
use crate::informer::{self, Informer, Informers};
use crate::{Error, is_not_found, pod_state};

pub const REVISION_LABEL: &str = "controller-revision-hash";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

struct Ctx {
    client: Client,
    pods: Arc<Informer<Pod>>,
    revisions: Informer<ControllerRevision>,
    expectations: Expectations,
}

pub async fn run(client: Client, informers: &Informers) -> Result<(), Error> {
    // Only this controller reads ControllerRevisions: its own watch.
    let revisions: Informer<ControllerRevision> = informer::cache(Api::all(client.clone()), watcher::Config::default());
    revisions.ready().await;
    let pods = informers.pods.clone();
    let ctx = Arc::new(Ctx { client: client.clone(), pods, revisions, expectations: Expectations::default() });
    informer::run_owner(
        informer::Source::Watch(Api::<StatefulSet>::all(client)),
        &informers.pods,
        "statefulset",
        ctx,
        reconcile,
    )
    .await;
    Ok(())
}

/// `<set>-<ordinal>` → ordinal, for pods of this set only.
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let rest = pod.strip_prefix(set)?.strip_prefix('-')?;
    // "07" is not a name this controller makes.
    if rest.is_empty() || (rest.len() > 1 && rest.starts_with('0')) {
        return None;
    }
    rest.parse().ok().filter(|n: &i32| *n >= 0)
}

/// What the ordering logic needs to know of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub revision: String,
    pub terminating: bool,
    /// Succeeded or Failed: replaced.
    pub finished: bool,
    /// Running, Ready, and available for minReadySeconds.
    pub healthy: bool,
}

/// One thing to do to converge, in the order it must be done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create the pod of this replica index (ordinal = start + index).
    Create(usize),
    Delete(String),
}

/// The spec as the ordering logic sees it.
#[derive(Clone, Debug)]
pub struct Policy {
    pub ordered_ready: bool,
    /// `Some(partition)` under RollingUpdate; `None` under OnDelete.
    pub rolling_partition: Option<usize>,
}

/// Upstream's updateStatefulSet decision: `replicas[i]` is the pod of index
/// `i` if it exists; `condemned` are pods beyond the wanted count, highest
/// ordinal first. Under OrderedReady at most one step is returned.
pub fn plan(policy: &Policy, replicas: &[Option<PodView>], condemned: &[PodView], update_revision: &str) -> Vec<Step> {
    let monotonic = policy.ordered_ready;
    let mut steps = Vec::new();
    for (i, slot) in replicas.iter().enumerate() {
        match slot {
            None => {
                steps.push(Step::Create(i));
                if monotonic {
                    return steps;
                }
            }
            Some(p) if p.terminating || !p.healthy => {
                // A finished pod is deleted, then recreated once it is gone.
                if p.finished && !p.terminating {
                    steps.push(Step::Delete(p.name.clone()));
                }
                if monotonic {
                    return steps;
                }
            }
            Some(_) => {}
        }
    }
    // Scale down from the highest ordinal; under OrderedReady wait for each
    // to be gone, and never pass an unhealthy pod but the first one.
    let first_unhealthy = condemned.iter().find(|p| !p.healthy).map(|p| p.name.as_str());
    for p in condemned {
        if p.terminating {
            if monotonic {
                return steps;
            }
            continue;
        }
        if monotonic && !p.healthy && Some(p.name.as_str()) != first_unhealthy {
            return steps;
        }
        steps.push(Step::Delete(p.name.clone()));
        if monotonic {
            return steps;
        }
    }
    let Some(partition) = policy.rolling_partition else { return steps };
    if !steps.is_empty() || !condemned.is_empty() {
        return steps;
    }
    // Rolling update: highest index first down to the partition, one pod at
    // a time, each healthy again before the next.
    for slot in replicas.iter().skip(partition).rev() {
        let Some(p) = slot else { return steps };
        if p.revision != update_revision && !p.terminating {
            steps.push(Step::Delete(p.name.clone()));
            return steps;
        }
        if !p.healthy || p.terminating {
            return steps;
        }
    }
    steps
}

fn view(pod: &Pod, min_ready: i32, now: k8s_openapi::jiff::Timestamp) -> PodView {
    PodView {
        name: pod.name_any(),
        revision: pod.labels().get(REVISION_LABEL).cloned().unwrap_or_default(),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        finished: matches!(pod_state::phase(pod), "Succeeded" | "Failed"),
        healthy: pod_state::phase(pod) == "Running" && pod_state::is_available(pod, min_ready, now),
    }
}

/// A revision: its name (the pods' label) and the template it stands for.
#[derive(Clone, Debug)]
struct Revision {
    name: String,
    template: PodTemplateSpec,
}

#[tracing::instrument(skip_all, fields(kind = "StatefulSet", namespace = %set.namespace().unwrap_or_default(), name = %set.name_any()))]
async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let key = format!("{ns}/{name}");
    let spec = set.spec.clone().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);

    let owned: Vec<Arc<Pod>> = ctx.pods.controlled_by(set.as_ref());
    let settled = ctx
        .expectations
        .satisfied(&key, |n| owned.iter().any(|p| p.name_any() == n && p.metadata.deletion_timestamp.is_none()));

    let (current, update) = sync_revisions(&ctx, &set, &owned).await?;

    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0);
    let count = spec.replicas.unwrap_or(1).max(0) as usize;
    let mut replicas: Vec<Option<PodView>> = vec![None; count];
    let mut condemned: Vec<(i32, PodView)> = Vec::new();
    for pod in &owned {
        let Some(ord) = ordinal_of(&name, &pod.name_any()) else { continue };
        let v = view(pod, min_ready, now);
        match usize::try_from(ord - start).ok().filter(|i| *i < count) {
            Some(i) => replicas[i] = Some(v),
            None => condemned.push((ord, v)),
        }
    }
    condemned.sort_by_key(|(ord, _)| std::cmp::Reverse(*ord));
    let condemned: Vec<PodView> = condemned.into_iter().map(|(_, v)| v).collect();

    let rolling =
        spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0) as usize;
    let policy = Policy {
        ordered_ready: spec.pod_management_policy.as_deref().unwrap_or("OrderedReady") != "Parallel",
        rolling_partition: rolling.then_some(partition),
    };

    if settled {
        for step in plan(&policy, &replicas, &condemned, &update.name) {
            match step {
                Step::Create(i) => {
                    // Below the partition, a new pod keeps the current revision.
                    let rev = if rolling && i < partition { &current } else { &update };
                    create_pod(&ctx, &set, start + i as i32, rev, &key).await?;
                }
                Step::Delete(pod) => {
                    let condemned = ordinal_of(&name, &pod).is_some_and(|o| o < start || o - start >= count as i32);
                    if condemned && let Some(p) = owned.iter().find(|p| p.name_any() == pod) {
                        release_claims_with(&ctx, &set, p).await?;
                    }
                    tracing::info!(pod = %pod, "deleting pod");
                    ctx.expectations.expect_deletes(&key, [pod.clone()]);
                    match Api::<Pod>::namespaced(ctx.client.clone(), &ns).delete(&pod, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => {
                            ctx.expectations.forget(&key);
                            return Err(Error::kube(format!("deleting pod {ns}/{pod}"))(e));
                        }
                    }
                }
            }
        }
    }

    let status = compute_status(&set, &owned, &current, &update, rolling, count, min_ready, now);
    if set.status.as_ref() != Some(&status) {
        let patch = json!({"status": status});
        match Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(Error::kube(format!("updating the status of statefulset {key}"))(e)),
        }
    }
    truncate_history(&ctx, &set, &owned, &current, &update).await?;
    if !settled {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Ready pods become available after minReadySeconds without any event.
    if min_ready > 0 && status.ready_replicas != status.available_replicas {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

#[expect(clippy::too_many_arguments, reason = "the inputs of upstream's status computation, each needed")]
fn compute_status(
    set: &StatefulSet,
    owned: &[Arc<Pod>],
    current: &Revision,
    update: &Revision,
    rolling: bool,
    want: usize,
    min_ready: i32,
    now: k8s_openapi::jiff::Timestamp,
) -> StatefulSetStatus {
    let old = set.status.clone().unwrap_or_default();
    let name = set.name_any();
    let mut s = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: old.collision_count,
        conditions: old.conditions,
        current_revision: Some(current.name.clone()),
        update_revision: Some(update.name.clone()),
        ..Default::default()
    };
    let (mut replicas, mut ready, mut available, mut cur, mut upd) = (0, 0, 0, 0, 0);
    for pod in owned.iter().filter(|p| ordinal_of(&name, &p.name_any()).is_some()) {
        replicas += 1;
        if pod_state::phase(pod) == "Running" && pod_state::is_ready(pod) {
            ready += 1;
            if pod_state::is_available(pod, min_ready, now) {
                available += 1;
            }
        }
        if pod.metadata.deletion_timestamp.is_none() {
            let rev = pod.labels().get(REVISION_LABEL).map(String::as_str);
            if rev == Some(current.name.as_str()) {
                cur += 1;
            }
            if rev == Some(update.name.as_str()) {
                upd += 1;
            }
        }
    }
    s.replicas = replicas;
    s.ready_replicas = Some(ready);
    s.available_replicas = Some(available);
    s.current_replicas = Some(cur);
    s.updated_replicas = Some(upd);
    // A finished rolling update makes the update revision the current one.
    if rolling && upd as usize == want && ready as usize == want && replicas as usize == want {
        s.current_replicas = Some(upd);
        s.current_revision = Some(update.name.clone());
    }
    s
}

fn revisions_of(ctx: &Ctx, set: &StatefulSet) -> Vec<Arc<ControllerRevision>> {
    let mut v: Vec<Arc<ControllerRevision>> = ctx.revisions.controlled_by(set);
    v.sort_by_key(|r| (r.revision, r.name_any()));
    v
}

/// The template a ControllerRevision of a StatefulSet records.
fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(o) = t.as_object_mut() {
        o.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// Finds or records the revision of the set's template (the update
/// revision) and the current one (`status.currentRevision`, when it still
/// exists).
async fn sync_revisions(ctx: &Ctx, set: &StatefulSet, pods: &[Arc<Pod>]) -> Result<(Revision, Revision), Error> {
    let ns = set.namespace().unwrap_or_default();
    let template = set.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let collision = set.status.as_ref().and_then(|s| s.collision_count);
    let update_name = format!("{}-{}", set.name_any(), pod_template_hash(&template, collision));
    let revisions = revisions_of(ctx, set);
    let latest = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    match revisions.iter().find(|r| r.name_any() == update_name) {
        // Going back to an older template makes its revision the newest.
        Some(r) if r.revision < latest => {
            let patch = json!({"revision": latest + 1});
            api.patch(&update_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::kube(format!("renumbering controllerrevision {ns}/{update_name}")))?;
        }
        Some(_) => {}
        None => {
            let mut labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
            labels
                .insert(REVISION_LABEL.into(), update_name.trim_start_matches(&format!("{}-", set.name_any())).into());
            let mut data_template = serde_json::to_value(&template).unwrap_or_default();
            if let Some(o) = data_template.as_object_mut() {
                o.insert("$patch".into(), json!("replace"));
            }
            let rev = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(update_name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    owner_references: Some(vec![pod_state::owner_ref("apps/v1", "StatefulSet", set)]),
                    ..Default::default()
                },
                data: Some(RawExtension(json!({"spec": {"template": data_template}}))),
                revision: latest + 1,
            };
            match api.create(&PostParams::default(), &rev).await {
                Ok(_) => tracing::info!(revision = %update_name, "recorded controllerrevision"),
                // Our cache had not seen it yet.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(Error::kube(format!("creating controllerrevision {ns}/{update_name}"))(e)),
            }
        }
    }
    let update = Revision { name: update_name, template };
    let current_name = set.status.as_ref().and_then(|s| s.current_revision.clone());
    let current = current_name
        .filter(|n| *n != update.name)
        .and_then(|n| {
            let from_revision = revisions.iter().find(|r| r.name_any() == n).and_then(|r| template_of(r));
            // Without its ControllerRevision the template of a revision some
            // pods still run is unknown; they keep their label.
            from_revision
                .or_else(|| {
                    pods.iter().any(|p| p.labels().get(REVISION_LABEL) == Some(&n)).then(|| update.template.clone())
                })
                .map(|template| Revision { name: n, template })
        })
        .unwrap_or_else(|| update.clone());
    Ok((current, update))
}

/// Deletes revisions beyond revisionHistoryLimit that no pod runs and that
/// are neither current nor update, oldest first.
async fn truncate_history(
    ctx: &Ctx,
    set: &StatefulSet,
    pods: &[Arc<Pod>],
    current: &Revision,
    update: &Revision,
) -> Result<(), Error> {
    let limit = set.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0) as usize;
    let history: Vec<Arc<ControllerRevision>> = revisions_of(ctx, set)
        .into_iter()
        .filter(|r| {
            let n = r.name_any();
            n != current.name && n != update.name && !pods.iter().any(|p| p.labels().get(REVISION_LABEL) == Some(&n))
        })
        .collect();
    if history.len() <= limit {
        return Ok(());
    }
    let ns = set.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    for r in &history[..history.len() - limit] {
        match api.delete(&r.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("deleting controllerrevision {ns}/{}", r.name_any()))(e)),
        }
    }
    Ok(())
}

/// Under `whenScaled: Delete`, a condemned pod becomes an owner of its
/// claims, so the garbage collector removes them once the pod is gone (as
/// upstream does).
async fn release_claims_with(ctx: &Ctx, set: &StatefulSet, pod: &Pod) -> Result<(), Error> {
    let policy = set.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    if policy.and_then(|p| p.when_scaled.as_deref()) != Some("Delete") {
        return Ok(());
    }
    let Some(ordinal) = ordinal_of(&set.name_any(), &pod.name_any()) else { return Ok(()) };
    let ns = set.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for claim in claims_for(set, ordinal) {
        let mut owners = claim.metadata.owner_references.clone().unwrap_or_default();
        let mut by_pod = pod_state::owner_ref("v1", "Pod", pod);
        by_pod.controller = None;
        by_pod.block_owner_deletion = None;
        owners.push(by_pod);
        let patch = json!({"metadata": {"ownerReferences": owners}});
        match api.patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("handing claim {ns}/{} to its pod", claim.name_any()))(e)),
        }
    }
    Ok(())
}

/// `<claim>-<set>-<ordinal>`.
pub fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let spec = set.spec.clone().unwrap_or_default();
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    let delete_with_set =
        spec.persistent_volume_claim_retention_policy.as_ref().and_then(|p| p.when_deleted.as_deref())
            == Some("Delete");
    spec.volume_claim_templates
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&t.name_any(), &set.name_any(), ordinal)),
                    namespace: set.namespace(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: delete_with_set.then(|| {
                        let mut o = pod_state::owner_ref("apps/v1", "StatefulSet", set);
                        o.controller = None;
                        vec![o]
                    }),
                    ..Default::default()
                },
                spec: t.spec,
                status: None,
            }
        })
        .collect()
}

/// The pod of `ordinal` at `rev`: stable name, hostname, subdomain, labels,
/// and each claim template's volume bound to its PVC.
fn pod_for(set: &StatefulSet, ordinal: i32, rev: &Revision) -> Pod {
    let name = format!("{}-{ordinal}", set.name_any());
    let meta = rev.template.metadata.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), rev.name.clone());
    let mut spec = rev.template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    let service = set.spec.as_ref().and_then(|s| s.service_name.clone()).unwrap_or_default();
    if !service.is_empty() {
        spec.subdomain = Some(service);
    }
    let claims = set.spec.as_ref().and_then(|s| s.volume_claim_templates.clone()).unwrap_or_default();
    if !claims.is_empty() {
        let mut volumes: Vec<Volume> = spec.volumes.take().unwrap_or_default();
        for c in &claims {
            let claim = c.name_any();
            volumes.retain(|v| v.name != claim);
            volumes.push(Volume {
                name: claim.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&claim, &set.name_any(), ordinal),
                    read_only: None,
                }),
                ..Default::default()
            });
        }
        spec.volumes = Some(volumes);
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![pod_state::owner_ref("apps/v1", "StatefulSet", set)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

async fn create_pod(ctx: &Ctx, set: &StatefulSet, ordinal: i32, rev: &Revision, key: &str) -> Result<(), Error> {
    let ns = set.namespace().unwrap_or_default();
    // Claims first, as upstream: a pod never starts without its storage.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for claim in claims_for(set, ordinal) {
        match pvcs.create(&PostParams::default(), &claim).await {
            Ok(_) => tracing::info!(claim = %claim.name_any(), "created persistentvolumeclaim"),
            // Kept from an earlier pod of this ordinal (Retain).
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::kube(format!("creating persistentvolumeclaim {ns}/{}", claim.name_any()))(e)),
        }
    }
    let pod = pod_for(set, ordinal, rev);
    let name = pod.name_any();
    match Api::<Pod>::namespaced(ctx.client.clone(), &ns).create(&PostParams::default(), &pod).await {
        Ok(_) => {
            tracing::info!(pod = %name, revision = %rev.name, "created pod");
            ctx.expectations.expect_adds(key, [name]);
            Ok(())
        }
        Err(e) => Err(Error::kube(format!("creating pod {ns}/{name}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, rev: &str, healthy: bool) -> PodView {
        PodView { name: name.into(), revision: rev.into(), terminating: false, finished: false, healthy }
    }

    const ORDERED: Policy = Policy { ordered_ready: true, rolling_partition: Some(0) };
    const PARALLEL: Policy = Policy { ordered_ready: false, rolling_partition: Some(0) };

    #[test]
    fn ordinals_are_parsed_only_from_this_sets_pod_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(ordinal_of("web-1", "web-1-2"), Some(2));
    }

    #[test]
    fn ordered_ready_creates_the_lowest_missing_ordinal_only_after_its_predecessors_are_healthy() {
        assert_eq!(plan(&ORDERED, &[None, None, None], &[], "r1"), [Step::Create(0)]);
        let unready = [Some(pod("web-0", "r1", false)), None, None];
        assert_eq!(plan(&ORDERED, &unready, &[], "r1"), []);
        let ready = [Some(pod("web-0", "r1", true)), None, None];
        assert_eq!(plan(&ORDERED, &ready, &[], "r1"), [Step::Create(1)]);
    }

    #[test]
    fn parallel_creates_every_missing_pod_at_once() {
        let slots = [Some(pod("web-0", "r1", false)), None, None];
        assert_eq!(plan(&PARALLEL, &slots, &[], "r1"), [Step::Create(1), Step::Create(2)]);
    }

    #[test]
    fn ordered_ready_scales_down_from_the_highest_ordinal_one_at_a_time() {
        let slots = [Some(pod("web-0", "r1", true))];
        let condemned = [pod("web-2", "r1", true), pod("web-1", "r1", true)];
        assert_eq!(plan(&ORDERED, &slots, &condemned, "r1"), [Step::Delete("web-2".into())]);
        let mut going = pod("web-2", "r1", true);
        going.terminating = true;
        assert_eq!(plan(&ORDERED, &slots, &[going, pod("web-1", "r1", true)], "r1"), []);
        assert_eq!(
            plan(&PARALLEL, &slots, &condemned, "r1"),
            [Step::Delete("web-2".into()), Step::Delete("web-1".into())]
        );
    }

    #[test]
    fn ordered_ready_does_not_scale_down_past_an_unhealthy_pod_other_than_the_first() {
        let slots = [Some(pod("web-0", "r1", true))];
        let condemned = [pod("web-2", "r1", true), pod("web-1", "r1", false)];
        // web-1 is the first unhealthy one: it may go, but web-2 goes first.
        assert_eq!(plan(&ORDERED, &slots, &condemned, "r1"), [Step::Delete("web-2".into())]);
        let condemned = [pod("web-2", "r1", false), pod("web-1", "r1", false)];
        assert_eq!(plan(&ORDERED, &slots, &condemned, "r1"), [Step::Delete("web-2".into())]);
    }

    #[test]
    fn rolling_update_replaces_pods_from_the_highest_ordinal_down_to_the_partition() {
        let old = [Some(pod("web-0", "r1", true)), Some(pod("web-1", "r1", true)), Some(pod("web-2", "r1", true))];
        assert_eq!(plan(&ORDERED, &old, &[], "r2"), [Step::Delete("web-2".into())]);
        // web-2 is back at r2 but not ready: wait.
        let mid = [Some(pod("web-0", "r1", true)), Some(pod("web-1", "r1", true)), Some(pod("web-2", "r2", false))];
        assert_eq!(plan(&PARALLEL, &mid, &[], "r2"), []);
        let mid = [Some(pod("web-0", "r1", true)), Some(pod("web-1", "r1", true)), Some(pod("web-2", "r2", true))];
        assert_eq!(plan(&ORDERED, &mid, &[], "r2"), [Step::Delete("web-1".into())]);
        let partitioned = Policy { ordered_ready: true, rolling_partition: Some(2) };
        let low = [Some(pod("web-0", "r1", true)), Some(pod("web-1", "r1", true)), Some(pod("web-2", "r2", true))];
        assert_eq!(plan(&partitioned, &low, &[], "r2"), []);
    }

    #[test]
    fn on_delete_leaves_old_pods_alone() {
        let on_delete = Policy { ordered_ready: true, rolling_partition: None };
        let old = [Some(pod("web-0", "r1", true)), Some(pod("web-1", "r1", true))];
        assert_eq!(plan(&on_delete, &old, &[], "r2"), []);
    }

    #[test]
    fn a_finished_pod_is_deleted_to_be_recreated() {
        let mut failed = pod("web-0", "r1", false);
        failed.finished = true;
        assert_eq!(plan(&ORDERED, &[Some(failed), None], &[], "r1"), [Step::Delete("web-0".into())]);
    }

    #[test]
    fn pods_get_stable_identity_labels_and_their_claims() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": {
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]
            }
        }))
        .expect("test data");
        let rev = Revision { name: "web-abc".into(), template: set.spec.as_ref().expect("test data").template.clone() };
        let p = pod_for(&set, 2, &rev);
        assert_eq!(p.name_any(), "web-2");
        let l = p.labels();
        assert_eq!(l[POD_NAME_LABEL], "web-2");
        assert_eq!(l[POD_INDEX_LABEL], "2");
        assert_eq!(l[REVISION_LABEL], "web-abc");
        let spec = p.spec.expect("test data");
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let vol = &spec.volumes.expect("test data")[0];
        assert_eq!(vol.persistent_volume_claim.as_ref().expect("test data").claim_name, "data-web-2");
        let claims = claims_for(&set, 2);
        assert_eq!(claims[0].name_any(), "data-web-2");
        assert_eq!(claims[0].labels()["app"], "web");
        assert!(claims[0].metadata.owner_references.is_none(), "Retain: the claim outlives the set");
    }
}
