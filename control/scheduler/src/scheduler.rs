//! The scheduler's loop: watches pods and nodes into reflectors; pods that
//! need a node enter the queue; each batch of queued pods is scheduled
//! against one snapshot of the cluster, which each decision updates (the
//! pod is "assumed" on its node before the bind returns, as upstream does),
//! and binds run concurrently. A pod that fits nowhere gets
//! PodScheduled=False/Unschedulable and a FailedScheduling event, and waits
//! for a cluster change.

use std::collections::HashMap;
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

fn responsible(profile: &Profile, pod: &Pod) -> bool {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_SCHEDULER_NAME);
    name == profile.scheduler_name
}

/// Unbound, alive and ours.
fn needs_scheduling(profile: &Profile, pod: &Pod) -> bool {
    let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let finished = matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
    !bound && !finished && pod.metadata.deletion_timestamp.is_none() && responsible(profile, pod)
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
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => on_pod(&s, &pod),
                    Ok(watcher::Event::Delete(pod)) => {
                        s.queue.forget(&key(&pod));
                        s.queue.move_all_to_active();
                    }
                    Ok(watcher::Event::InitDone) => s.queue.move_all_to_active(),
                    Ok(watcher::Event::Init) => {}
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
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            s.queue.flush_older_than(config.unschedulable_retry);
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

fn on_pod(s: &Shared, pod: &Pod) {
    if needs_scheduling(&s.profile, pod) {
        s.queue.add(&key(pod));
    } else {
        s.queue.forget(&key(pod));
        // A finished pod frees its node's resources.
        if matches!(pod.status.as_ref().and_then(|st| st.phase.as_deref()), Some("Succeeded" | "Failed")) {
            s.queue.move_all_to_active();
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
            if needs_scheduling(&s.profile, &pod)
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
        let keys = s.queue.pop_all().await;
        let Cluster { mut nodes, mut nominated } = snapshot(&s);
        for k in keys {
            let (ns, name) = k.split_once('/').unwrap_or_default();
            let Some(pod) = s.pods.get(&ObjectRef::new(name).within(ns)) else { continue };
            if !needs_scheduling(&s.profile, &pod) {
                continue;
            }
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
