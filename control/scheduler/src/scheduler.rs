//! The scheduler's loop: watches pods and nodes into reflectors; pods that
//! need a node enter the queue; each batch of queued pods is scheduled
//! against one snapshot of the cluster, which each decision updates (the
//! pod is "assumed" on its node before the bind returns, as upstream does),
//! and binds run concurrently. A pod that fits nowhere gets
//! PodScheduled=False/Unschedulable and a FailedScheduling event, and waits
//! for a cluster change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Event, EventSource, Namespace, Node, ObjectReference, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::algorithm::{self, CycleCursor};
use crate::framework::{Listers, NodeInfo, Snapshot, priority};
use crate::plugins::label_selector;
use crate::profile::{DEFAULT_SCHEDULER_NAME, Profile};
use crate::queue::SchedulingQueue;
use crate::{Error, SchedulerConfig};

/// Binds in flight at once.
const BIND_CONCURRENCY: usize = 64;
/// A binding with no answer by then is retried (a bound pod is then skipped).
const BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// Assumed pods the watch never confirms are dropped after this.
const ASSUME_TTL: Duration = Duration::from_secs(30);

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn responsible(scheduler_name: &str, pod: &Pod) -> bool {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_SCHEDULER_NAME);
    name == scheduler_name
}

/// Unbound, alive and for the scheduler named `scheduler_name`.
fn needs_scheduling(scheduler_name: &str, pod: &Pod) -> bool {
    let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let finished = matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
    !bound && !finished && pod.metadata.deletion_timestamp.is_none() && responsible(scheduler_name, pod)
}

/// What one pod watch event (already applied to the reflector's store)
/// means for the queue. Handlers only enqueue.
///
/// A relist (the watch expired, e.g. a 410 after the scheduler fell behind
/// the API server's window) fills the reflector's buffer and swaps it into
/// the store only at `InitDone`. A pod enqueued at `InitApply` could be
/// popped before the store has it and dropped as gone, with no later event
/// to bring it back: so the listed pods are enqueued at `InitDone`, from
/// the store.
fn on_pod_event(scheduler_name: &str, queue: &SchedulingQueue, pods: &Store<Pod>, ev: &watcher::Event<Pod>) {
    match ev {
        watcher::Event::Apply(pod) => on_pod(scheduler_name, queue, pod),
        watcher::Event::Delete(pod) => {
            queue.forget(&key(pod));
            queue.move_all_to_active();
        }
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
        watcher::Event::InitDone => {
            let pods = pods.state();
            tracing::info!(pods = pods.len(), "pod list (re)loaded");
            for pod in &pods {
                on_pod(scheduler_name, queue, pod);
            }
            queue.move_all_to_active();
        }
    }
}

/// The popped keys' pods that still need scheduling, as the store has them now.
fn pending(scheduler_name: &str, pods: &Store<Pod>, keys: Vec<String>) -> Vec<(String, Arc<Pod>)> {
    keys.into_iter()
        .filter_map(|k| {
            let (ns, name) = k.split_once('/').unwrap_or_default();
            let pod = pods.get(&ObjectRef::new(name).within(ns))?;
            needs_scheduling(scheduler_name, &pod).then_some((k, pod))
        })
        .collect()
}

/// Pods placed by this scheduler whose binding the watch has not shown yet.
#[derive(Debug, Default)]
struct Assumed {
    pods: HashMap<String, (Arc<Pod>, String, Instant)>,
}

struct Shared {
    client: Client,
    profile: Profile,
    queue: SchedulingQueue,
    pods: Store<Pod>,
    nodes: Store<Node>,
    listers: StoreListers,
    assumed: Mutex<Assumed>,
    binds: Arc<Semaphore>,
    /// Bindings that succeeded, and that failed (for the progress log).
    bound: AtomicU64,
    bind_failures: AtomicU64,
}

/// The plugins' look-ups, from the scheduler's reflectors.
struct StoreListers {
    namespaces: Store<Namespace>,
    services: Store<Service>,
    replica_sets: Store<ReplicaSet>,
    stateful_sets: Store<StatefulSet>,
}

impl Listers for StoreListers {
    fn namespace_labels(&self, namespace: &str) -> Option<std::collections::BTreeMap<String, String>> {
        self.namespaces.get(&ObjectRef::new(namespace)).map(|n| n.metadata.labels.clone().unwrap_or_default())
    }

    fn default_selector(&self, pod: &Pod) -> Option<waggle_api::selector::LabelSelector> {
        use waggle_api::selector::{LabelSelector, Requirement};
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let labels = crate::plugins::pod_labels(pod);
        let mut set = std::collections::BTreeMap::new();
        for svc in self.services.state() {
            if svc.metadata.namespace.as_deref() != Some(ns) {
                continue;
            }
            let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty()) else {
                continue;
            };
            if sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                set.extend(sel.clone());
            }
        }
        let mut out = LabelSelector { requirements: set.into_iter().map(|(k, v)| Requirement::Equals(k, v)).collect() };
        let owners = self
            .replica_sets
            .state()
            .into_iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(ns))
            .map(|r| label_selector(Some(&r.spec.as_ref()?.selector)))
            .chain(
                self.stateful_sets
                    .state()
                    .into_iter()
                    .filter(|r| r.metadata.namespace.as_deref() == Some(ns))
                    .map(|r| label_selector(Some(&r.spec.as_ref()?.selector))),
            );
        for sel in owners.flatten() {
            if !sel.is_empty() && sel.matches(labels) {
                out.requirements.extend(sel.requirements);
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// Keeps a reflector's store filled; a change in these only affects scoring.
async fn reflect<K>(client: Client, writer: reflector::store::Writer<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    watcher(Api::<K>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(|ev| async move {
            if let Err(e) = ev {
                tracing::warn!(error = %e, kind = %K::kind(&()), "watch");
            }
        })
        .await
}

pub async fn run(client: Client, config: SchedulerConfig) -> Result<(), Error> {
    let profile = config.profile(client.clone());
    tracing::info!(?profile, "scheduler starting");
    let (pods, pod_writer) = reflector::store();
    let (nodes, node_writer) = reflector::store();
    let (namespaces, ns_writer) = reflector::store();
    let (services, svc_writer) = reflector::store();
    let (replica_sets, rs_writer) = reflector::store();
    let (stateful_sets, ss_writer) = reflector::store();
    let shared = Arc::new(Shared {
        client: client.clone(),
        profile,
        queue: SchedulingQueue::default(),
        pods,
        nodes,
        listers: StoreListers { namespaces, services, replica_sets, stateful_sets },
        assumed: Mutex::new(Assumed::default()),
        binds: Arc::new(Semaphore::new(BIND_CONCURRENCY)),
        bound: AtomicU64::new(0),
        bind_failures: AtomicU64::new(0),
    });

    // Handlers only enqueue.
    let s = shared.clone();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer)
        .for_each(move |ev| {
            let s = s.clone();
            async move {
                match ev {
                    Ok(ev) => on_pod_event(&s.profile.scheduler_name, &s.queue, &s.pods, &ev),
                    Err(e) => tracing::warn!(error = %e, "pod watch"),
                }
            }
        });
    let s = shared.clone();
    let listers = futures::future::join4(
        reflect(client.clone(), ns_writer),
        reflect(client.clone(), svc_writer),
        reflect(client.clone(), rs_writer),
        reflect(client.clone(), ss_writer),
    );
    let node_events = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .for_each(move |ev| {
            let s = s.clone();
            async move {
                match ev {
                    Ok(watcher::Event::Apply(_) | watcher::Event::InitDone) => s.queue.move_all_to_active(),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "node watch"),
                }
            }
        });
    let s = shared.clone();
    let flush = async move {
        let mut last = None;
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            s.queue.flush_older_than(config.unschedulable_retry);
            let (active, unschedulable) = s.queue.lengths();
            let assumed = s.assumed.lock().map(|a| a.pods.len()).unwrap_or_default();
            let now = (
                active,
                unschedulable,
                assumed,
                s.bound.load(Ordering::Relaxed),
                s.bind_failures.load(Ordering::Relaxed),
            );
            if last != Some(now) {
                let (_, _, _, bound, bind_failures) = now;
                tracing::info!(active, unschedulable, assumed, bound, bind_failures, "scheduling queue");
                last = Some(now);
            }
        }
    };
    tokio::select! {
        _ = pod_events => Err(Error::Stopped("the pod watch ended")),
        _ = node_events => Err(Error::Stopped("the node watch ended")),
        _ = flush => Err(Error::Stopped("the flush loop ended")),
        _ = listers => Err(Error::Stopped("a lister's watch ended")),
        r = schedule_loop(shared) => r,
    }
}

fn on_pod(scheduler_name: &str, queue: &SchedulingQueue, pod: &Pod) {
    if needs_scheduling(scheduler_name, pod) {
        queue.add(&key(pod));
    } else {
        queue.forget(&key(pod));
        // A finished pod frees its node's resources.
        if matches!(pod.status.as_ref().and_then(|st| st.phase.as_deref()), Some("Succeeded" | "Failed")) {
            queue.move_all_to_active();
        }
    }
}

/// The cluster as the next cycles see it: nodes in a stable order, bound
/// and assumed pods counted on their nodes, and the pods nominated to a
/// node by preemption (by node index).
struct Cluster {
    nodes: Vec<NodeInfo>,
    nominated: HashMap<usize, Vec<Arc<Pod>>>,
}

fn snapshot(s: &Shared) -> Cluster {
    let mut nodes: Vec<NodeInfo> = s.nodes.state().into_iter().map(NodeInfo::new).collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let index: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
    let mut nominated: HashMap<usize, Vec<Arc<Pod>>> = HashMap::new();
    for pod in s.pods.state() {
        let Some(node) = pod.spec.as_ref().and_then(|sp| sp.node_name.as_deref()).filter(|n| !n.is_empty()) else {
            if needs_scheduling(&s.profile.scheduler_name, &pod)
                && let Some(n) = pod.status.as_ref().and_then(|st| st.nominated_node_name.as_deref())
                && let Some(&i) = index.get(n)
            {
                nominated.entry(i).or_default().push(pod);
            }
            continue;
        };
        if matches!(pod.status.as_ref().and_then(|st| st.phase.as_deref()), Some("Succeeded" | "Failed")) {
            continue;
        }
        if let Some(&i) = index.get(node) {
            nodes[i].add_pod(pod);
        }
    }
    if let Ok(mut assumed) = s.assumed.lock() {
        assumed.pods.retain(|k, (pod, node, at)| {
            let (ns, name) = k.split_once('/').unwrap_or_default();
            let seen_bound = s.pods.get(&ObjectRef::new(name).within(ns)).is_none_or(|p| {
                p.uid() != pod.uid()
                    || p.spec.as_ref().and_then(|sp| sp.node_name.as_deref()).is_some_and(|n| !n.is_empty())
            });
            if seen_bound || at.elapsed() > ASSUME_TTL {
                return false;
            }
            if let Some(&i) = index.get(node.as_str()) {
                nodes[i].add_pod(pod.clone());
            }
            true
        });
    }
    Cluster { nodes, nominated }
}

async fn schedule_loop(s: Arc<Shared>) -> Result<(), Error> {
    let mut cursor = CycleCursor::default();
    loop {
        let batch = pending(&s.profile.scheduler_name, &s.pods, s.queue.pop_all().await);
        let Cluster { mut nodes, mut nominated } = snapshot(&s);
        for (k, pod) in batch {
            let (ns, name) = k.split_once('/').unwrap_or_default();
            if s.assumed.lock().map(|a| a.pods.contains_key(&k)).unwrap_or(false) {
                continue;
            }
            let result = {
                let snap = Snapshot { nodes: &nodes, listers: &s.listers, nominated: Some(&nominated) };
                algorithm::schedule(&s.profile, &pod, &snap, &mut cursor)
            };
            match result {
                Ok(i) => {
                    let node = nodes[i].name.clone();
                    nodes[i].add_pod(pod.clone());
                    for list in nominated.values_mut() {
                        list.retain(|p| p.uid() != pod.uid());
                    }
                    if let Ok(mut a) = s.assumed.lock() {
                        a.pods.insert(k.clone(), (pod.clone(), node.clone(), Instant::now()));
                    }
                    tracing::debug!(namespace = ns, pod = name, %node, "assumed");
                    let permit = s.binds.clone().acquire_owned().await;
                    let s2 = s.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        bind(&s2, &k, &pod, &node).await;
                    });
                }
                Err(fit) => {
                    s.queue.park(&k);
                    let message = fit.message();
                    tracing::debug!(namespace = ns, pod = name, %message, "unschedulable");
                    let preemption = fit.preemption.map(|c| {
                        let node = nodes[c.node].name.clone();
                        // Later cycles in this batch see the victims gone and the room taken.
                        for v in &c.victims {
                            nodes[c.node].remove_pod(v);
                        }
                        for list in nominated.values_mut() {
                            list.retain(|p| p.uid() != pod.uid());
                        }
                        nominated.entry(c.node).or_default().push(pod.clone());
                        (node, c.victims)
                    });
                    let s2 = s.clone();
                    tokio::spawn(async move {
                        if let Some((node, victims)) = preemption
                            && let Err(e) = preempt(&s2, &pod, &node, &victims).await
                        {
                            tracing::warn!(error = %e, "preempting");
                        }
                        if let Err(e) = record_failure(&s2, &pod, &message).await {
                            tracing::warn!(error = %e, "recording a scheduling failure");
                        }
                    });
                }
            }
        }
    }
}

/// Carries preemption out: the pod is nominated to the node, the victims
/// are deleted gracefully (with a Preempted event each).
async fn preempt(s: &Shared, pod: &Pod, node: &str, victims: &[Arc<Pod>]) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_default();
    tracing::info!(pod = %key(pod), node, victims = victims.len(), priority = priority(pod), "preempting");
    let api: Api<Pod> = Api::namespaced(s.client.clone(), &ns);
    let patch = json!({"status": {"nominatedNodeName": node}});
    api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    for v in victims {
        let vns = v.namespace().unwrap_or_default();
        let vapi: Api<Pod> = Api::namespaced(s.client.clone(), &vns);
        let message = format!("Preempted by pod {} on node {node}", pod.uid().unwrap_or_default());
        if let Err(e) = event(&s.client, v, "Normal", "Preempted", &message).await {
            tracing::debug!(error = %e, "preempted event");
        }
        match vapi.delete(&v.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn bind(s: &Shared, key: &str, pod: &Pod, node: &str) {
    let status = match tokio::time::timeout(BIND_TIMEOUT, s.profile.bind.bind(pod, node)).await {
        Ok(status) => status,
        Err(_) => crate::framework::Status::new(
            crate::framework::Code::Error,
            format!("binding {key} to {node}: no answer within {BIND_TIMEOUT:?}"),
        ),
    };
    if status.is_success() {
        s.bound.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(pod = key, node, "bound");
        // The event is not on the binding's path (nor holding its permit).
        let (client, pod, message) = (s.client.clone(), pod.clone(), format!("Successfully assigned {key} to {node}"));
        tokio::spawn(async move {
            if let Err(e) = event(&client, &pod, "Normal", "Scheduled", &message).await {
                tracing::debug!(error = %e, "scheduled event");
            }
        });
        return;
    }
    s.bind_failures.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(pod = key, node, reasons = ?status.reasons, "binding failed; retrying");
    if let Ok(mut a) = s.assumed.lock() {
        a.pods.remove(key);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.queue.requeue(key);
}

/// PodScheduled=False with upstream's reason and message, and a
/// FailedScheduling event, both only when the message changed.
async fn record_failure(s: &Shared, pod: &Pod, message: &str) -> Result<(), kube::Error> {
    let conditions = pod.status.as_ref().and_then(|st| st.conditions.clone()).unwrap_or_default();
    if conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.message.as_deref() == Some(message))
    {
        return Ok(());
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut next: Vec<serde_json::Value> =
        conditions.iter().filter(|c| c.type_ != "PodScheduled").filter_map(|c| serde_json::to_value(c).ok()).collect();
    next.push(json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                     "lastProbeTime": null, "lastTransitionTime": now}));
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(s.client.clone(), &ns);
    let patch = json!({"status": {"conditions": next}});
    api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    event(&s.client, pod, "Warning", "FailedScheduling", message).await
}

async fn event(client: &Client, pod: &Pod, type_: &str, reason: &str, message: &str) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", pod.name_any(), now.as_nanosecond())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(ns.clone()),
            name: Some(pod.name_any()),
            uid: pod.uid(),
            resource_version: pod.resource_version(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        action: Some(if type_ == "Normal" { "Binding" } else { "Scheduling" }.into()),
        reporting_component: Some(DEFAULT_SCHEDULER_NAME.into()),
        reporting_instance: Some(DEFAULT_SCHEDULER_NAME.into()),
        source: Some(EventSource { component: Some(DEFAULT_SCHEDULER_NAME.into()), host: None }),
        ..Default::default()
    };
    Api::<Event>::namespaced(client.clone(), &ns).create(&PostParams::default(), &ev).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "resourceVersion": "1"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }))
        .expect("a valid pod")
    }

    /// Feeds one event through the reflector and the handler, as the pod
    /// watch does, and lets the scheduling loop take a batch right after.
    fn step(
        writer: &mut reflector::store::Writer<Pod>,
        store: &Store<Pod>,
        queue: &SchedulingQueue,
        ev: watcher::Event<Pod>,
    ) -> Vec<String> {
        writer.apply_watcher_event(&ev);
        on_pod_event(DEFAULT_SCHEDULER_NAME, queue, store, &ev);
        pending(DEFAULT_SCHEDULER_NAME, store, queue.try_pop_all()).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn pods_seen_first_in_a_relist_are_scheduled_even_when_the_loop_pops_mid_relist() {
        let (store, mut writer) = reflector::store();
        let queue = SchedulingQueue::default();
        let mut scheduled = Vec::new();
        for ev in [watcher::Event::Init, watcher::Event::InitDone, watcher::Event::Apply(pod("a"))] {
            scheduled.extend(step(&mut writer, &store, &queue, ev));
        }
        assert_eq!(scheduled, ["default/a"]);
        // The watch expired; "b" was created meanwhile and shows up only in the relist.
        scheduled.clear();
        for ev in [
            watcher::Event::Init,
            watcher::Event::InitApply(pod("a")),
            watcher::Event::InitApply(pod("b")),
            watcher::Event::InitDone,
        ] {
            scheduled.extend(step(&mut writer, &store, &queue, ev));
        }
        scheduled.sort();
        assert_eq!(scheduled, ["default/a", "default/b"]);
    }

    #[test]
    fn bound_and_other_schedulers_pods_are_not_queued_by_a_relist() {
        let (store, mut writer) = reflector::store();
        let queue = SchedulingQueue::default();
        let mut bound = pod("bound");
        bound.spec.as_mut().expect("spec").node_name = Some("n1".into());
        let mut other = pod("other");
        other.spec.as_mut().expect("spec").scheduler_name = Some("someone-else".into());
        let mut scheduled = Vec::new();
        for ev in [
            watcher::Event::Init,
            watcher::Event::InitApply(bound),
            watcher::Event::InitApply(other),
            watcher::Event::InitApply(pod("c")),
            watcher::Event::InitDone,
        ] {
            scheduled.extend(step(&mut writer, &store, &queue, ev));
        }
        assert_eq!(scheduled, ["default/c"]);
    }
}
