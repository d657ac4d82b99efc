//! The node lifecycle controller: a node whose Lease (or Ready heartbeat)
//! is older than the grace period gets Ready=Unknown and the taints
//! `node.kubernetes.io/unreachable` (NoSchedule, NoExecute); a NotReady node
//! gets `node.kubernetes.io/not-ready`. Pods on it are marked not ready, and
//! evicted (deleted) once their toleration of the NoExecute taint runs out.
//! Taints go when the node is Ready again.
//!
//! Like upstream this is a periodic monitor over cached nodes and leases
//! (monitorNodeHealth), not an event-driven reconcile: the trigger is the
//! absence of events. The DefaultTolerationSeconds admission plugin is
//! emulated: a pod with no toleration for these taints tolerates them for
//! `default_toleration_seconds`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};
use serde_json::json;

use crate::informer::Informers;
use crate::{Error, informer, is_not_found, pod_state};

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
const LEASE_NAMESPACE: &str = "kube-node-lease";

#[derive(Clone, Debug)]
pub struct NodeLifecycleConfig {
    /// How often node health is checked (upstream: 5 s).
    pub monitor_period: Duration,
    /// How long a node may go without a heartbeat (upstream: 40 s).
    pub grace_period: Duration,
    /// Toleration for pods that declare none (upstream admission: 300 s).
    pub default_toleration_seconds: i64,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        Self {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(40),
            default_toleration_seconds: 300,
        }
    }
}

struct Caches {
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
}

pub async fn run(client: Client, informers: &Informers, config: NodeLifecycleConfig) -> Result<(), Error> {
    // Only this controller reads leases: its own watch, kept while it runs.
    let leases = informer::cache(Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE), watcher::Config::default());
    let caches = Caches { nodes: informers.nodes.store(), leases: leases.store(), pods: informers.pods.store() };
    // Nodes that were silent before this controller started get the grace
    // period from now, as upstream's node health map starts empty.
    let started = Timestamp::now();
    let mut tick = tokio::time::interval(config.monitor_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = monitor(&client, &config, &caches, started).await {
            tracing::warn!(error = %e, "node lifecycle");
        }
    }
}

/// How the controller sees a node on one tick.
#[derive(Debug, PartialEq)]
enum Health<'a> {
    /// No Ready condition posted yet, and not silent for the grace period
    /// since it was created (or since this controller started): a kubelet
    /// still registering (it creates the Node, then posts its status), as
    /// upstream's nodeStartupGracePeriod. Left alone: tainting it
    /// unreachable for one tick kept the scheduler off a fresh node.
    Registering,
    /// The Ready condition's status, and whether the node went silent.
    Reported { ready: &'a str, silent: bool },
}

fn health<'a>(
    node: &'a Node,
    lease: Option<Timestamp>,
    started: Timestamp,
    now: Timestamp,
    grace: Duration,
) -> Health<'a> {
    let c =
        node.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    let heartbeat = c.and_then(|c| c.last_heartbeat_time.as_ref()).map(|t| t.0);
    let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let last = [heartbeat, lease, created, Some(started)].into_iter().flatten().max().unwrap_or(started);
    let silent = now.as_millisecond() - last.as_millisecond() > grace.as_millis() as i64;
    match c {
        Some(c) => Health::Reported { ready: c.status.as_str(), silent },
        None if !silent => Health::Registering,
        None => Health::Reported { ready: "Unknown", silent },
    }
}

async fn monitor(
    client: &Client,
    config: &NodeLifecycleConfig,
    caches: &Caches,
    started: Timestamp,
) -> Result<(), Error> {
    let now = Timestamp::now();
    let nodes_api: Api<Node> = Api::all(client.clone());
    let mut unhealthy: BTreeMap<String, Vec<Taint>> = BTreeMap::new();
    for node in caches.nodes.state() {
        let name = node.name_any();
        let lease = caches
            .leases
            .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE))
            .and_then(|l| l.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map(|t| t.0));
        let Health::Reported { mut ready, silent } = health(&node, lease, started, now, config.grace_period) else {
            continue;
        };
        if silent && ready != "Unknown" {
            mark_unknown(&nodes_api, &name).await?;
            ready = "Unknown";
        }
        let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let wanted = wanted_taints(ready, &taints, now);
        if wanted != taints {
            // No taints left: drop the field, as kubectl taint does.
            let value = if wanted.is_empty() { serde_json::Value::Null } else { json!(wanted) };
            let patch = json!({"spec": {"taints": value}});
            nodes_api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::kube(format!("tainting node {name}")))?;
            tracing::info!(node = %name, ready, "node taints updated");
        }
        if ready != "True" {
            unhealthy.insert(name, wanted.into_iter().filter(|t| t.effect == "NoExecute").collect());
        }
    }
    if unhealthy.is_empty() {
        return Ok(());
    }
    for pod in caches.pods.state() {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else { continue };
        let Some(taints) = unhealthy.get(node) else { continue };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if pod_state::is_ready(&pod) {
            let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": Time(now)}]}});
            match api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(Error::kube(format!("marking pod {ns}/{} not ready", pod.name_any()))(e)),
            }
        }
        let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
        let due = taints.iter().filter_map(|t| evict_at(t, &tolerations, config.default_toleration_seconds)).min();
        tracing::debug!(pod = %pod.name_any(), namespace = %ns, node, ?due, "pod on an unhealthy node");
        if due.is_some_and(|d| d <= now) {
            match api.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => tracing::info!(pod = %pod.name_any(), namespace = %ns, node, "evicted from an unhealthy node"),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::kube(format!("evicting pod {ns}/{}", pod.name_any()))(e)),
            }
        }
    }
    Ok(())
}

async fn mark_unknown(api: &Api<Node>, name: &str) -> Result<(), Error> {
    let t = Time(Timestamp::now());
    let conditions: Vec<_> = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]
        .iter()
        .map(|c| {
            json!({"type": c, "status": "Unknown", "reason": "NodeStatusUnknown",
                   "message": "Kubelet stopped posting node status.", "lastTransitionTime": t})
        })
        .collect();
    let patch = json!({"status": {"conditions": conditions}});
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map_err(Error::kube(format!("marking node {name} unknown")))?;
    tracing::info!(node = %name, "node stopped heartbeating: Ready=Unknown");
    Ok(())
}

/// The node's taints with this controller's set to match its readiness
/// (others' taints untouched, existing ones keep their timeAdded).
pub fn wanted_taints(ready: &str, current: &[Taint], now: Timestamp) -> Vec<Taint> {
    let key = match ready {
        "True" => None,
        "Unknown" => Some(UNREACHABLE),
        _ => Some(NOT_READY),
    };
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| (t.key != UNREACHABLE && t.key != NOT_READY) || Some(t.key.as_str()) == key)
        .cloned()
        .collect();
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !out.iter().any(|t| t.key == key && t.effect == effect) {
                let time_added = (effect == "NoExecute").then_some(Time(now));
                out.push(Taint { key: key.into(), effect: effect.into(), value: None, time_added });
            }
        }
    }
    out
}

pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    match t.operator.as_deref() {
        Some("Exists") => t.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            t.key.as_deref() == Some(taint.key.as_str())
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// When a pod must leave a node with this NoExecute taint: now when not
/// tolerated, never when tolerated forever.
pub fn evict_at(taint: &Taint, tolerations: &[Toleration], default_seconds: i64) -> Option<Timestamp> {
    let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
    let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
    let seconds = if matching.is_empty() {
        if taint.key == UNREACHABLE || taint.key == NOT_READY { Some(default_seconds) } else { Some(0) }
    } else if matching.iter().any(|t| t.toleration_seconds.is_none()) {
        None
    } else {
        matching.iter().filter_map(|t| t.toleration_seconds).min()
    };
    let seconds = seconds?.max(0);
    added.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint { key: key.into(), effect: effect.into(), value: None, time_added: Some(Time(Timestamp::UNIX_EPOCH)) }
    }

    #[test]
    fn an_unknown_node_gets_both_unreachable_taints_and_a_ready_one_loses_them() {
        let t = wanted_taints("Unknown", &[taint("other", "NoSchedule")], Timestamp::UNIX_EPOCH);
        let keys: Vec<_> = t.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect();
        assert_eq!(keys, [("other", "NoSchedule"), (UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]);
        let back = wanted_taints("True", &t, Timestamp::UNIX_EPOCH);
        assert_eq!(back, vec![taint("other", "NoSchedule")]);
    }

    #[test]
    fn a_node_that_has_not_posted_its_status_yet_is_left_alone_until_the_grace_period_ends() {
        let grace = Duration::from_secs(40);
        let now = Timestamp::from_second(1_000_000).expect("a timestamp");
        let ago = |s: i64| Time(now - k8s_openapi::jiff::SignedDuration::from_secs(s));
        let mut node = Node::default();
        node.metadata.creation_timestamp = Some(ago(1));
        let long_ago = ago(3600).0;
        assert_eq!(health(&node, None, long_ago, now, grace), Health::Registering);
        node.metadata.creation_timestamp = Some(ago(41));
        assert_eq!(health(&node, None, long_ago, now, grace), Health::Reported { ready: "Unknown", silent: true });
        let ready =
            serde_json::json!({"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": ago(2)}]});
        node.status = Some(serde_json::from_value(ready).expect("a status"));
        assert_eq!(health(&node, None, long_ago, now, grace), Health::Reported { ready: "True", silent: false });
    }

    #[test]
    fn pods_without_a_toleration_get_the_default_seconds_and_tolerating_forever_means_never() {
        let t = taint(UNREACHABLE, "NoExecute");
        assert_eq!(evict_at(&t, &[], 300).map(|t| t.as_second()), Some(300));
        let forever = Toleration { operator: Some("Exists".into()), ..Default::default() };
        assert_eq!(evict_at(&t, &[forever], 300), None);
        let short = Toleration {
            key: Some(UNREACHABLE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(5),
            value: None,
        };
        assert_eq!(evict_at(&t, &[short], 300).map(|t| t.as_second()), Some(5));
        assert_eq!(evict_at(&taint("custom", "NoExecute"), &[], 300).map(|t| t.as_second()), Some(0));
    }
}
