//! The scheduling cycle alone, in process: SchedulingBasic's 5,000 nodes
//! and 10,000 pods through `waggle_scheduler::algorithm::schedule` with
//! the default profile, as the scheduler's loop runs it: the snapshot
//! brought up to date from the cache, the pod scheduled, then assumed in
//! the cache. Separates what the scheduler costs from what the
//! API server and the hollow kubelets cost in the end-to-end run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use waggle_scheduler::algorithm::{CycleCursor, schedule};
use waggle_scheduler::cache::{Cache, CacheSnapshot};
use waggle_scheduler::framework::{BindPlugin, NoListers, Plugin, Snapshot, Status};
use waggle_scheduler::plugins::node_resources_fit::ScoringStrategy;
use waggle_scheduler::profile::{DEFAULT_SCHEDULER_NAME, Profile};

use crate::report;

/// The algorithm never binds; the profile needs a binder all the same.
struct NotBinding;

impl Plugin for NotBinding {
    fn name(&self) -> &'static str {
        "NotBinding"
    }
}

#[async_trait::async_trait]
impl BindPlugin for NotBinding {
    async fn bind(&self, _pod: &Pod, _node: &str) -> Status {
        Status::new(waggle_scheduler::framework::Code::Error, "the cycle benchmark does not bind")
    }
}

/// Upstream's node-default.yaml: 4 CPUs, 32Gi, 110 pods.
fn node(i: usize) -> anyhow::Result<Node> {
    let name = format!("node-{i}");
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
                   "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"}},
    }))?)
}

fn pod(i: usize) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("pod-{i}"), "namespace": "default"},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                 "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]},
    }))?)
}

/// Runs the cycle benchmark; returns its part of the report.
pub fn run(nodes: usize, pods: usize) -> anyhow::Result<serde_json::Value> {
    let profile =
        Profile::default_plugins(DEFAULT_SCHEDULER_NAME, ScoringStrategy::LeastAllocated, None, Arc::new(NotBinding));
    let node_objects: Vec<Arc<Node>> = (0..nodes).map(|i| node(i).map(Arc::new)).collect::<Result<_, _>>()?;
    let pod_objects: Vec<Arc<Pod>> = (0..pods).map(|i| pod(i).map(Arc::new)).collect::<Result<_, _>>()?;
    let mut cache = Cache::new(Duration::from_secs(30));
    for n in &node_objects {
        cache.set_node(n.clone());
    }
    // The first snapshot copies every node; later ones only what changed.
    let mut snap = CacheSnapshot::default();
    let t = Instant::now();
    cache.update_snapshot(&mut snap);
    let first_snapshot = t.elapsed();
    let mut cursor = CycleCursor::default();
    let mut cycles = Vec::with_capacity(pods);
    let mut updates = Vec::with_capacity(pods);
    let mut placed: BTreeMap<String, usize> = BTreeMap::new();
    let start = Instant::now();
    for p in &pod_objects {
        let t = Instant::now();
        cache.update_snapshot(&mut snap);
        updates.push(t.elapsed());
        let i = schedule(&profile, p, &Snapshot::new(&snap.nodes, &NoListers), &mut cursor)
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        let node = snap.nodes[i].name.clone();
        cache.assume(p.clone(), &node)?;
        cycles.push(t.elapsed());
        *placed.entry(node).or_default() += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let most = placed.values().copied().max().unwrap_or(0);
    Ok(serde_json::json!({
        "nodes": nodes,
        "pods": pods,
        "pods_per_second": pods as f64 / secs,
        "cycle": report::percentiles(&mut cycles),
        "snapshot_update": report::percentiles(&mut updates),
        "first_snapshot_ms": first_snapshot.as_secs_f64() * 1000.0,
        "nodes_used": placed.len(),
        "most_pods_on_a_node": most,
    }))
}
