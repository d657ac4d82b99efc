//! The scheduler's loop: watches pods and nodes; their events keep the
//! [`Cache`] (one NodeInfo per node, bound and assumed pods counted on
//! them) and the queue up to date. A thread of its own takes the queued
//! pods and schedules them one at a time against a snapshot that each cycle
//! brings up to date from the cache by copying only the nodes changed since
//! the last cycle. A placed pod is assumed in the cache before its binding
//! is written (as upstream does), and binds run concurrently on the
//! runtime, a bounded number at a time. A pod that fits nowhere gets
//! PodScheduled=False/Unschedulable and a FailedScheduling event, and waits
//! for a cluster change.
//!
//! The scheduling work runs off the async runtime so that it cannot starve
//! the watches: a pod watch that falls behind the API server's window is
//! closed and relisted, and the bindings it has not shown yet keep pods
//! assumed for longer.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, watch};

use crate::algorithm::{self, CycleCursor};
use crate::cache::{Cache, CacheSnapshot, bound_node, is_terminal, pod_key as key};
use crate::framework::{Listers, Snapshot, priority};
use crate::nominator::Nominator;
use crate::plugins::label_selector;
use crate::profile::{DEFAULT_SCHEDULER_NAME, Profile};
use crate::queue::SchedulingQueue;
use crate::{Error, SchedulerConfig};

/// Binds in flight at once; the scheduling thread waits for a free one.
const BIND_CONCURRENCY: usize = 64;
/// A binding with no answer by then is retried (a bound pod is then skipped).
const BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// An assumed pod whose binding was written but that the watch never shows
/// bound is dropped from the cache this long after the binding.
const ASSUME_TTL: Duration = Duration::from_secs(30);

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
    bound_node(pod).is_none()
        && !is_terminal(pod)
        && pod.metadata.deletion_timestamp.is_none()
        && responsible(scheduler_name, pod)
}

/// What the event handlers keep up to date for the scheduling thread.
#[derive(Debug)]
struct Informed {
    queue: SchedulingQueue,
    cache: Mutex<Cache>,
    nominator: Nominator,
}

impl Informed {
    fn new() -> Self {
        Self {
            queue: SchedulingQueue::default(),
            cache: Mutex::new(Cache::new(ASSUME_TTL)),
            nominator: Nominator::default(),
        }
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What one pod watch event (already applied to the reflector's store)
/// means for the cache, the nominated pods and the queue. Handlers only
/// record and enqueue.
///
/// A relist (the watch expired, e.g. a 410 after the scheduler fell behind
/// the API server's window) fills the reflector's buffer and swaps it into
/// the store only at `InitDone`. A pod enqueued at `InitApply` could be
/// popped before the store has it and dropped as gone, with no later event
/// to bring it back: so the listed pods are taken at `InitDone`, from the
/// store, which also tells the cache which pods are gone.
fn on_pod_event(scheduler_name: &str, inf: &Informed, pods: &Store<Pod>, ev: &watcher::Event<Pod>) {
    match ev {
        watcher::Event::Apply(pod) => {
            // The store's copy, so that the cache shares it rather than holding another.
            let pod = pods.get(&ObjectRef::from_obj(pod)).unwrap_or_else(|| Arc::new(pod.clone()));
            let pending = needs_scheduling(scheduler_name, &pod);
            inf.cache().set_pod(pod.clone());
            inf.nominator.set_pod(&pod, pending);
            enqueue(scheduler_name, &inf.queue, &pod);
        }
        watcher::Event::Delete(pod) => {
            let k = key(pod);
            // The cache first: the pods moved to active must see the room this made.
            inf.cache().remove_pod(pod);
            inf.nominator.remove(&k);
            inf.queue.forget(&k);
            inf.queue.move_all_to_active();
        }
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
        watcher::Event::InitDone => {
            let pods = pods.state();
            tracing::info!(pods = pods.len(), "pod list (re)loaded");
            inf.cache().replace_pods(&pods);
            let pending: Vec<(Arc<Pod>, bool)> =
                pods.iter().map(|p| (p.clone(), needs_scheduling(scheduler_name, p))).collect();
            inf.nominator.replace(&pending);
            for pod in &pods {
                enqueue(scheduler_name, &inf.queue, pod);
            }
            inf.queue.move_all_to_active();
        }
    }
}

fn enqueue(scheduler_name: &str, queue: &SchedulingQueue, pod: &Pod) {
    if needs_scheduling(scheduler_name, pod) {
        queue.add(&key(pod));
    } else {
        queue.forget(&key(pod));
        // A finished pod frees its node's resources.
        if is_terminal(pod) {
            queue.move_all_to_active();
        }
    }
}

/// What one node watch event means for the cache; any change to the nodes
/// gives the unschedulable pods another try.
fn on_node_event(inf: &Informed, nodes: &Store<Node>, ev: &watcher::Event<Node>) {
    match ev {
        watcher::Event::Apply(node) => {
            let node = nodes.get(&ObjectRef::from_obj(node)).unwrap_or_else(|| Arc::new(node.clone()));
            inf.cache().set_node(node);
            inf.queue.move_all_to_active();
        }
        watcher::Event::Delete(node) => inf.cache().remove_node(&node.name_any()),
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
        watcher::Event::InitDone => {
            let nodes = nodes.state();
            tracing::info!(nodes = nodes.len(), "node list (re)loaded");
            inf.cache().replace_nodes(&nodes);
            inf.queue.move_all_to_active();
        }
    }
}

/// The popped key's pod if it still needs scheduling, as the store has it now.
fn pending(scheduler_name: &str, pods: &Store<Pod>, key: &str) -> Option<Arc<Pod>> {
    let (ns, name) = key.split_once('/').unwrap_or_default();
    let pod = pods.get(&ObjectRef::new(name).within(ns))?;
    needs_scheduling(scheduler_name, &pod).then_some(pod)
}

struct Shared {
    client: Client,
    profile: Profile,
    informed: Informed,
    pods: Store<Pod>,
    listers: StoreListers,
    binds: Arc<Semaphore>,
    /// Cycles run, bindings that succeeded and that failed (for the progress log).
    cycles: AtomicU64,
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
        informed: Informed::new(),
        pods,
        listers: StoreListers { namespaces, services, replica_sets, stateful_sets },
        binds: Arc::new(Semaphore::new(BIND_CONCURRENCY)),
        cycles: AtomicU64::new(0),
        bound: AtomicU64::new(0),
        bind_failures: AtomicU64::new(0),
    });

    // Handlers only record and enqueue.
    let s = shared.clone();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer)
        .for_each(move |ev| {
            match ev {
                Ok(ev) => on_pod_event(&s.profile.scheduler_name, &s.informed, &s.pods, &ev),
                Err(e) => tracing::warn!(error = %e, "pod watch"),
            }
            std::future::ready(())
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
            match ev {
                Ok(ev) => on_node_event(&s.informed, &nodes, &ev),
                Err(e) => tracing::warn!(error = %e, "node watch"),
            }
            std::future::ready(())
        });
    let s = shared.clone();
    let housekeeping = async move {
        let mut last = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for n in 0u64.. {
            tick.tick().await;
            s.informed.cache().cleanup_expired(Instant::now());
            if !n.is_multiple_of(5) {
                continue;
            }
            s.informed.queue.flush_older_than(config.unschedulable_retry);
            let (active, unschedulable) = s.informed.queue.lengths();
            let (nodes, pods, assumed) = s.informed.cache().counts();
            let now = (
                active,
                unschedulable,
                nodes,
                pods,
                assumed,
                s.cycles.load(Ordering::Relaxed),
                s.bound.load(Ordering::Relaxed),
                s.bind_failures.load(Ordering::Relaxed),
            );
            if last != Some(now) {
                let (.., cycles, bound, bind_failures) = now;
                tracing::info!(
                    active,
                    unschedulable,
                    nodes,
                    pods,
                    assumed,
                    cycles,
                    bound,
                    bind_failures,
                    "scheduling queue"
                );
                last = Some(now);
            }
        }
    };
    // The scheduling thread stops when this future is dropped (`_stop` with it).
    let (_stop, stop) = watch::channel(());
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let (s, rt) = (shared.clone(), Handle::current());
    std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || {
            let _ = done_tx.send(schedule_loop(&s, LoopContext { rt, stop }));
        })
        .map_err(Error::Thread)?;
    tokio::select! {
        _ = pod_events => Err(Error::Stopped("the pod watch ended")),
        _ = node_events => Err(Error::Stopped("the node watch ended")),
        _ = housekeeping => Err(Error::Stopped("the housekeeping loop ended")),
        _ = listers => Err(Error::Stopped("a lister's watch ended")),
        r = done => r.unwrap_or(Err(Error::Stopped("the scheduling thread panicked"))),
    }
}

/// The scheduling thread's way back into the runtime: it waits there for
/// queued pods and free bind permits, and spawns binds there.
struct LoopContext {
    rt: Handle,
    /// Closed when `run` is dropped.
    stop: watch::Receiver<()>,
}

impl LoopContext {
    /// Waits for `f` on the runtime; None when the scheduler is stopping.
    fn wait<F: Future>(&mut self, f: F) -> Option<F::Output> {
        let stop = &mut self.stop;
        self.rt.block_on(async {
            tokio::select! {
                biased;
                _ = stop.changed() => None,
                out = f => Some(out),
            }
        })
    }
}

fn schedule_loop(s: &Arc<Shared>, mut ctx: LoopContext) -> Result<(), Error> {
    let _runtime = ctx.rt.enter();
    let mut cursor = CycleCursor::default();
    let mut snap = CacheSnapshot::default();
    loop {
        let Some(keys) = ctx.wait(s.informed.queue.pop_all()) else { return Ok(()) };
        for k in keys {
            let Some(pod) = pending(&s.profile.scheduler_name, &s.pods, &k) else { continue };
            if s.informed.cache().is_assumed(&k) {
                continue;
            }
            if !schedule_one(s, &mut ctx, &mut snap, &mut cursor, k, pod) {
                return Ok(());
            }
        }
    }
}

/// One scheduling cycle for `pod`; false when the scheduler is stopping.
fn schedule_one(
    s: &Arc<Shared>,
    ctx: &mut LoopContext,
    snap: &mut CacheSnapshot,
    cursor: &mut CycleCursor,
    k: String,
    pod: Arc<Pod>,
) -> bool {
    s.cycles.fetch_add(1, Ordering::Relaxed);
    s.informed.cache().update_snapshot(snap);
    let nominated = s.informed.nominator.by_node(&snap.index);
    let result = {
        let view = Snapshot { nodes: &snap.nodes, listers: &s.listers, nominated: nominated.as_ref() };
        algorithm::schedule(&s.profile, &pod, &view, cursor)
    };
    let (ns, name) = k.split_once('/').unwrap_or_default();
    match result {
        Ok(i) => {
            let node = snap.nodes[i].name.clone();
            if let Err(e) = s.informed.cache().assume(pod.clone(), &node) {
                tracing::warn!(error = %e, "not binding");
                return true;
            }
            s.informed.nominator.remove(&k);
            tracing::debug!(namespace = ns, pod = name, %node, "assumed");
            let Some(Ok(permit)) = ctx.wait(s.binds.clone().acquire_owned()) else { return false };
            let s2 = s.clone();
            ctx.rt.spawn(async move {
                let _permit = permit;
                bind(&s2, &k, &pod, &node).await;
            });
        }
        Err(fit) => {
            s.informed.queue.park(&k);
            let message = fit.message();
            tracing::debug!(namespace = ns, pod = name, %message, "unschedulable");
            // Later cycles count the pod on the node it made room on (upstream's
            // nominated pods); the victims stay in the cache until their deletion shows.
            let preemption = fit.preemption.map(|c| {
                let node = snap.nodes[c.node].name.clone();
                s.informed.nominator.nominate(pod.clone(), &node);
                (node, c.victims)
            });
            let s2 = s.clone();
            ctx.rt.spawn(async move {
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
    true
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
        s.informed.cache().finish_binding(key, Instant::now());
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
    s.informed.cache().forget(key);
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.informed.queue.requeue(key);
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
            "spec": {"containers": [{"name": "c", "image": "i",
                                     "resources": {"requests": {"cpu": "100m"}}}]},
        }))
        .expect("a valid pod")
    }

    fn bound(name: &str, node: &str) -> Pod {
        let mut p = pod(name);
        p.spec.as_mut().expect("spec").node_name = Some(node.into());
        p
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"}},
        }))
        .expect("a valid node")
    }

    /// Feeds one event through the reflector and the handler, as the pod
    /// watch does, and lets the scheduling loop take a batch right after.
    fn step(
        writer: &mut reflector::store::Writer<Pod>,
        store: &Store<Pod>,
        inf: &Informed,
        ev: watcher::Event<Pod>,
    ) -> Vec<String> {
        writer.apply_watcher_event(&ev);
        on_pod_event(DEFAULT_SCHEDULER_NAME, inf, store, &ev);
        inf.queue.try_pop_all().into_iter().filter(|k| pending(DEFAULT_SCHEDULER_NAME, store, k).is_some()).collect()
    }

    /// (milli-CPU requested, pods) on `node` as the next cycle sees it.
    fn on_node(inf: &Informed, node: &str) -> Option<(i64, i64)> {
        let mut snap = CacheSnapshot::default();
        inf.cache().update_snapshot(&mut snap);
        let n = &snap.nodes[*snap.index.get(node)?];
        Some((n.requested.milli_cpu, n.pod_count))
    }

    #[test]
    fn pods_seen_first_in_a_relist_are_scheduled_even_when_the_loop_pops_mid_relist() {
        let (store, mut writer) = reflector::store();
        let inf = Informed::new();
        let mut scheduled = Vec::new();
        for ev in [watcher::Event::Init, watcher::Event::InitDone, watcher::Event::Apply(pod("a"))] {
            scheduled.extend(step(&mut writer, &store, &inf, ev));
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
            scheduled.extend(step(&mut writer, &store, &inf, ev));
        }
        scheduled.sort();
        assert_eq!(scheduled, ["default/a", "default/b"]);
    }

    #[test]
    fn bound_and_other_schedulers_pods_are_not_queued_by_a_relist() {
        let (store, mut writer) = reflector::store();
        let inf = Informed::new();
        let mut other = pod("other");
        other.spec.as_mut().expect("spec").scheduler_name = Some("someone-else".into());
        let mut scheduled = Vec::new();
        for ev in [
            watcher::Event::Init,
            watcher::Event::InitApply(bound("bound", "n1")),
            watcher::Event::InitApply(other),
            watcher::Event::InitApply(pod("c")),
            watcher::Event::InitDone,
        ] {
            scheduled.extend(step(&mut writer, &store, &inf, ev));
        }
        assert_eq!(scheduled, ["default/c"]);
    }

    #[test]
    fn the_pod_watch_confirms_assumed_pods_and_a_deletion_frees_the_node() {
        let (nodes, mut node_writer) = reflector::store();
        let (store, mut writer) = reflector::store();
        let inf = Informed::new();
        for ev in [watcher::Event::Init, watcher::Event::InitApply(node("n1")), watcher::Event::InitDone] {
            node_writer.apply_watcher_event(&ev);
            on_node_event(&inf, &nodes, &ev);
        }
        step(&mut writer, &store, &inf, watcher::Event::Init);
        step(&mut writer, &store, &inf, watcher::Event::InitDone);
        assert_eq!(step(&mut writer, &store, &inf, watcher::Event::Apply(pod("a"))), ["default/a"]);
        inf.cache().assume(Arc::new(pod("a")), "n1").expect("assumed");
        // Bound by another scheduler, seen by the watch only.
        step(&mut writer, &store, &inf, watcher::Event::Apply(bound("b", "n1")));
        assert_eq!(on_node(&inf, "n1"), Some((200, 2)));
        step(&mut writer, &store, &inf, watcher::Event::Apply(bound("a", "n1")));
        assert!(!inf.cache().is_assumed("default/a"));
        assert_eq!(on_node(&inf, "n1"), Some((200, 2)));
        step(&mut writer, &store, &inf, watcher::Event::Delete(bound("b", "n1")));
        assert_eq!(on_node(&inf, "n1"), Some((100, 1)));
        // The node is deleted: no longer a place to schedule.
        let ev = watcher::Event::Delete(node("n1"));
        node_writer.apply_watcher_event(&ev);
        on_node_event(&inf, &nodes, &ev);
        assert_eq!(on_node(&inf, "n1"), None);
    }
}
