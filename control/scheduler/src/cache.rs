//! The scheduler's cache, shaped like upstream's (pkg/scheduler/internal/cache):
//! one [`NodeInfo`] per node, kept up to date by the informers' events
//! (nodes, bound pods) and by the scheduler's own decisions (assumed pods),
//! so that a cycle never rebuilds the cluster from the reflectors.
//!
//! - A pod the scheduler placed is *assumed* on its node at once, before its
//!   binding is written. Its binding finishing starts a deadline; the
//!   watch showing the pod bound *confirms* it; a failed binding *forgets*
//!   it; an assumed pod the watch never confirms expires at its deadline.
//! - Every change to a node's entry gives it a new generation. A
//!   [`CacheSnapshot`] remembers the generation it was taken at, and
//!   [`Cache::update_snapshot`] copies only the entries changed since
//!   (found through an index by generation, so the cost follows the number
//!   of changes, not of nodes). Only a node joining or leaving reorders the
//!   snapshot's list, which moves (not copies) the unchanged entries.
//! - A pod bound to a node not seen yet is counted on a placeholder entry,
//!   which becomes the node when it arrives (and outlives its node while
//!   pods are still counted on it), as upstream's "imaginary" NodeInfo.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::framework::NodeInfo;

/// `namespace/name`: how the cache and the queue name a pod.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The node a pod is bound to, if any.
pub fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

/// Succeeded or Failed: the pod no longer uses its node's resources.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    #[error("assuming pod {0}: the cache already has it")]
    AlreadyCached(String),
}

#[derive(Debug)]
struct NodeEntry {
    info: NodeInfo,
    /// False for a placeholder: pods are bound to a node not (or no longer) seen.
    present: bool,
    generation: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PodState {
    /// Seen bound by the watch.
    Bound,
    /// Placed by this scheduler; `deadline` is set once its binding finished.
    Assumed { deadline: Option<Instant> },
}

#[derive(Debug)]
struct PodEntry {
    pod: Arc<Pod>,
    node: String,
    state: PodState,
}

#[derive(Debug)]
pub struct Cache {
    /// By name, so that a rebuilt snapshot list comes out sorted.
    nodes: BTreeMap<String, NodeEntry>,
    /// Generation → node: the entries changed after a given generation.
    by_generation: BTreeMap<u64, String>,
    generation: u64,
    /// Changes whenever a node joins or leaves the snapshot's list.
    membership: u64,
    pods: HashMap<String, PodEntry>,
    assumed: usize,
    /// How long an assumed pod whose binding finished waits for the watch.
    ttl: Duration,
}

/// The nodes one scheduling cycle sees, sorted by name, updated from the
/// [`Cache`] between cycles.
#[derive(Debug, Default)]
pub struct CacheSnapshot {
    pub nodes: Vec<NodeInfo>,
    pub index: HashMap<String, usize>,
    generation: u64,
    membership: u64,
}

/// What one [`Cache::update_snapshot`] did (for the progress log and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotUpdate {
    /// Entries copied from the cache.
    pub copied: usize,
    /// The node list was rebuilt (a node joined or left).
    pub relisted: bool,
}

fn placeholder(name: &str) -> NodeInfo {
    NodeInfo::new(Arc::new(Node {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
        ..Default::default()
    }))
}

impl Cache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            nodes: BTreeMap::new(),
            by_generation: BTreeMap::new(),
            generation: 0,
            membership: 0,
            pods: HashMap::new(),
            assumed: 0,
            ttl,
        }
    }

    /// (nodes, pods, of which assumed), for the progress log.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.nodes.values().filter(|e| e.present).count(), self.pods.len(), self.assumed)
    }

    /// The entry for `name`, created as a placeholder if new, with a new generation.
    fn touch(&mut self, name: &str) -> &mut NodeEntry {
        self.generation += 1;
        let generation = self.generation;
        let entry = self.nodes.entry(name.to_owned()).or_insert_with(|| NodeEntry {
            info: placeholder(name),
            present: false,
            generation: 0,
        });
        self.by_generation.remove(&entry.generation);
        self.by_generation.insert(generation, name.to_owned());
        entry.generation = generation;
        entry
    }

    /// Drops a placeholder that no pod is counted on any more.
    fn drop_if_unused(&mut self, name: &str) {
        if let Some(e) = self.nodes.get(name)
            && !e.present
            && e.info.pods.is_empty()
        {
            self.by_generation.remove(&e.generation);
            self.nodes.remove(name);
        }
    }

    /// A node was added or changed (labels, taints, allocatable, …); its pods stay.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let Some(name) = node.metadata.name.clone() else { return };
        let entry = self.touch(&name);
        let joined = !entry.present;
        let pods = std::mem::take(&mut entry.info.pods);
        entry.info = NodeInfo::new(node);
        for p in pods {
            entry.info.add_pod(p);
        }
        entry.present = true;
        if joined {
            self.membership += 1;
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if !self.nodes.get(name).is_some_and(|e| e.present) {
            return;
        }
        self.touch(name).present = false;
        self.membership += 1;
        self.drop_if_unused(name);
    }

    /// After a relist: exactly these nodes exist.
    pub fn replace_nodes(&mut self, nodes: &[Arc<Node>]) {
        let listed: std::collections::HashSet<&str> = nodes.iter().filter_map(|n| n.metadata.name.as_deref()).collect();
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|(n, e)| e.present && !listed.contains(n.as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            self.remove_node(&name);
        }
        for node in nodes {
            self.set_node(node.clone());
        }
    }

    fn add_to_node(&mut self, pod: Arc<Pod>, node: &str) {
        self.touch(node).info.add_pod(pod);
    }

    fn remove_from_node(&mut self, pod: &Pod, node: &str) {
        if self.nodes.contains_key(node) {
            self.touch(node).info.remove_pod(pod);
            self.drop_if_unused(node);
        }
    }

    /// Takes the pod under `key` out of the cache, whatever its state.
    fn remove_entry(&mut self, key: &str) {
        if let Some(e) = self.pods.remove(key) {
            if matches!(e.state, PodState::Assumed { .. }) {
                self.assumed -= 1;
            }
            self.remove_from_node(&e.pod, &e.node);
        }
    }

    /// A pod as the watch shows it. A bound, running pod is counted on its
    /// node (confirming it if it was assumed); a finished one no longer
    /// is. An unbound pod leaves an assumed one alone: its binding may not
    /// have reached the watch yet.
    pub fn set_pod(&mut self, pod: Arc<Pod>) {
        let key = pod_key(&pod);
        let same_pod = self.pods.get(&key).is_some_and(|e| e.pod.metadata.uid == pod.metadata.uid);
        if !same_pod {
            // A pod of the same name was deleted and created again.
            self.remove_entry(&key);
        }
        let Some(node) = bound_node(&pod).map(str::to_owned) else { return };
        self.remove_entry(&key);
        if is_terminal(&pod) {
            return;
        }
        self.add_to_node(pod.clone(), &node);
        self.pods.insert(key, PodEntry { pod, node, state: PodState::Bound });
    }

    /// A pod was deleted (only that pod: not another of the same name created since).
    pub fn remove_pod(&mut self, pod: &Pod) {
        let key = pod_key(pod);
        if self.pods.get(&key).is_some_and(|e| e.pod.metadata.uid == pod.metadata.uid) {
            self.remove_entry(&key);
        }
    }

    /// After a relist: these are all the pods there are.
    pub fn replace_pods(&mut self, pods: &[Arc<Pod>]) {
        let listed: HashMap<String, &Arc<Pod>> = pods.iter().map(|p| (pod_key(p), p)).collect();
        let gone: Vec<String> = self.pods.keys().filter(|k| !listed.contains_key(*k)).cloned().collect();
        for key in gone {
            self.remove_entry(&key);
        }
        for pod in pods {
            self.set_pod(pod.clone());
        }
    }

    /// The scheduler placed `pod` on `node`: counted there from now on.
    pub fn assume(&mut self, pod: Arc<Pod>, node: &str) -> Result<(), CacheError> {
        let key = pod_key(&pod);
        if self.pods.contains_key(&key) {
            return Err(CacheError::AlreadyCached(key));
        }
        self.add_to_node(pod.clone(), node);
        self.pods.insert(key, PodEntry { pod, node: node.to_owned(), state: PodState::Assumed { deadline: None } });
        self.assumed += 1;
        Ok(())
    }

    /// The binding of an assumed pod was written: it expires at `now` + TTL
    /// unless the watch confirms it first.
    pub fn finish_binding(&mut self, key: &str, now: Instant) {
        if let Some(e) = self.pods.get_mut(key)
            && let PodState::Assumed { deadline } = &mut e.state
        {
            *deadline = Some(now + self.ttl);
        }
    }

    /// The binding of an assumed pod failed: it no longer counts anywhere.
    pub fn forget(&mut self, key: &str) {
        if self.is_assumed(key) {
            self.remove_entry(key);
        }
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|e| matches!(e.state, PodState::Assumed { .. }))
    }

    /// Drops the assumed pods whose deadline passed; returns how many.
    pub fn cleanup_expired(&mut self, now: Instant) -> usize {
        if self.assumed == 0 {
            return 0;
        }
        let expired: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, e)| matches!(e.state, PodState::Assumed { deadline: Some(d) } if d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            tracing::warn!(pod = %key, "assumed pod expired: its binding never showed in the watch");
            self.remove_entry(key);
        }
        expired.len()
    }

    /// Brings `snap` up to date: copies the entries changed since it was
    /// last updated, and rebuilds its list only when nodes joined or left.
    pub fn update_snapshot(&self, snap: &mut CacheSnapshot) -> SnapshotUpdate {
        let mut update = SnapshotUpdate::default();
        if snap.generation == self.generation {
            return update;
        }
        if snap.membership != self.membership {
            let mut old: HashMap<String, NodeInfo> = snap.nodes.drain(..).map(|n| (n.name.clone(), n)).collect();
            for (name, e) in self.nodes.iter().filter(|(_, e)| e.present) {
                let info = match old.remove(name) {
                    Some(info) if e.generation <= snap.generation => info,
                    _ => {
                        update.copied += 1;
                        e.info.clone()
                    }
                };
                snap.nodes.push(info);
            }
            snap.index = snap.nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
            snap.membership = self.membership;
            update.relisted = true;
        } else {
            for name in self.by_generation.range(snap.generation + 1..).map(|(_, n)| n) {
                let (Some(e), Some(&i)) = (self.nodes.get(name), snap.index.get(name)) else { continue };
                snap.nodes[i] = e.info.clone();
                update.copied += 1;
            }
        }
        snap.generation = self.generation;
        update
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::NodeStatus;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;
    use crate::plugins::test_support::pod_with;

    const TTL: Duration = Duration::from_secs(30);

    fn node(name: &str, cpu: &str) -> Arc<Node> {
        let alloc = BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.into())),
            ("memory".to_owned(), Quantity("16Gi".into())),
            ("pods".to_owned(), Quantity("110".into())),
        ]);
        Arc::new(Node {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            status: Some(NodeStatus { allocatable: Some(alloc), ..Default::default() }),
            ..Default::default()
        })
    }

    /// A pod asking for 100m CPU, with a uid, bound to `node` if given.
    fn pod(name: &str, node: Option<&str>) -> Arc<Pod> {
        let mut p = pod_with(name, &[]);
        p.metadata.uid = Some(format!("uid-{name}"));
        p.spec.as_mut().expect("spec").node_name = node.map(str::to_owned);
        Arc::new(p)
    }

    /// Milli-CPU requested on `node` as a fresh snapshot sees it, and its pod count.
    fn requested(cache: &Cache, node: &str) -> Option<(i64, i64)> {
        let mut snap = CacheSnapshot::default();
        cache.update_snapshot(&mut snap);
        let n = &snap.nodes[*snap.index.get(node)?];
        Some((n.requested.milli_cpu, n.pod_count))
    }

    #[test]
    fn an_assumed_pod_counts_on_its_node_until_forgotten() {
        let mut cache = Cache::new(TTL);
        cache.set_node(node("n1", "4"));
        cache.assume(pod("a", None), "n1").expect("assumed");
        assert!(cache.is_assumed("default/a"));
        assert_eq!(requested(&cache, "n1"), Some((100, 1)));
        assert_eq!(cache.assume(pod("a", None), "n1"), Err(CacheError::AlreadyCached("default/a".into())));
        cache.forget("default/a");
        assert!(!cache.is_assumed("default/a"));
        assert_eq!(requested(&cache, "n1"), Some((0, 0)));
    }

    #[test]
    fn the_watch_confirms_an_assumed_pod_once_and_an_unbound_update_leaves_it_assumed() {
        let mut cache = Cache::new(TTL);
        cache.set_node(node("n1", "4"));
        cache.assume(pod("a", None), "n1").expect("assumed");
        // The pod's own status update, from before the binding.
        cache.set_pod(pod("a", None));
        assert!(cache.is_assumed("default/a"));
        assert_eq!(requested(&cache, "n1"), Some((100, 1)));
        cache.set_pod(pod("a", Some("n1")));
        assert!(!cache.is_assumed("default/a"));
        assert_eq!(requested(&cache, "n1"), Some((100, 1)));
        assert_eq!(cache.counts(), (1, 1, 0));
        // Confirmed pods are not forgotten by a late bind failure report.
        cache.forget("default/a");
        assert_eq!(requested(&cache, "n1"), Some((100, 1)));
    }

    #[test]
    fn an_assumed_pod_expires_only_after_its_binding_finished_and_the_ttl_passed() {
        let mut cache = Cache::new(TTL);
        cache.set_node(node("n1", "4"));
        cache.assume(pod("a", None), "n1").expect("assumed");
        let now = Instant::now();
        assert_eq!(cache.cleanup_expired(now + TTL * 10), 0, "no deadline before the binding finished");
        cache.finish_binding("default/a", now);
        assert_eq!(cache.cleanup_expired(now + TTL / 2), 0);
        assert_eq!(cache.cleanup_expired(now + TTL), 1);
        assert!(!cache.is_assumed("default/a"));
        assert_eq!(requested(&cache, "n1"), Some((0, 0)));
    }

    #[test]
    fn deleting_a_bound_pod_frees_its_resources() {
        let mut cache = Cache::new(TTL);
        cache.set_node(node("n1", "4"));
        cache.set_pod(pod("a", Some("n1")));
        cache.set_pod(pod("b", Some("n1")));
        assert_eq!(requested(&cache, "n1"), Some((200, 2)));
        cache.remove_pod(&pod("a", Some("n1")));
        assert_eq!(requested(&cache, "n1"), Some((100, 1)));
    }

    #[test]
    fn a_finished_pod_no_longer_counts_on_its_node() {
        let mut cache = Cache::new(TTL);
        cache.set_node(node("n1", "4"));
        cache.set_pod(pod("a", Some("n1")));
        let mut done = (*pod("a", Some("n1"))).clone();
        done.status =
            Some(k8s_openapi::api::core::v1::PodStatus { phase: Some("Succeeded".into()), ..Default::default() });
        cache.set_pod(Arc::new(done));
        assert_eq!(requested(&cache, "n1"), Some((0, 0)));
        assert_eq!(cache.counts(), (1, 0, 0));
    }

    #[test]
    fn a_pod_recreated_under_the_same_name_replaces_the_old_one() {
        let mut cache = Cache::new(TTL);
        cache.set_node(node("n1", "4"));
        cache.set_node(node("n2", "4"));
        cache.set_pod(pod("a", Some("n1")));
        let mut again = (*pod("a", Some("n2"))).clone();
        again.metadata.uid = Some("uid-a-2".into());
        cache.set_pod(Arc::new(again));
        assert_eq!(requested(&cache, "n1"), Some((0, 0)));
        assert_eq!(requested(&cache, "n2"), Some((100, 1)));
    }

    #[test]
    fn nodes_join_change_and_leave_and_their_pods_survive_a_node_update() {
        let mut cache = Cache::new(TTL);
        cache.set_node(node("n2", "4"));
        cache.set_node(node("n1", "4"));
        let mut snap = CacheSnapshot::default();
        cache.update_snapshot(&mut snap);
        let names: Vec<&str> = snap.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2"]);
        cache.set_pod(pod("a", Some("n1")));
        cache.set_node(node("n1", "8"));
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.nodes[0].allocatable.milli_cpu, 8000);
        assert_eq!(snap.nodes[0].pod_count, 1);
        cache.remove_node("n2");
        cache.update_snapshot(&mut snap);
        let names: Vec<&str> = snap.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n1"]);
        assert_eq!(snap.index.get("n1"), Some(&0));
        assert_eq!(cache.counts(), (1, 1, 0));
    }

    #[test]
    fn a_pod_bound_to_an_unseen_node_waits_on_a_placeholder_that_becomes_the_node() {
        let mut cache = Cache::new(TTL);
        cache.set_pod(pod("a", Some("late")));
        assert_eq!(requested(&cache, "late"), None, "a placeholder is not a node to schedule on");
        cache.set_node(node("late", "4"));
        assert_eq!(requested(&cache, "late"), Some((100, 1)));
        // The node leaves while its pod is still counted, then the pod goes too.
        cache.remove_node("late");
        assert_eq!(requested(&cache, "late"), None);
        cache.remove_pod(&pod("a", Some("late")));
        assert!(cache.nodes.is_empty() && cache.by_generation.is_empty());
    }

    #[test]
    fn a_snapshot_update_copies_only_the_nodes_that_changed() {
        let mut cache = Cache::new(TTL);
        for i in 0..100 {
            cache.set_node(node(&format!("n{i:03}"), "4"));
        }
        let mut snap = CacheSnapshot::default();
        let first = cache.update_snapshot(&mut snap);
        assert_eq!(first, SnapshotUpdate { copied: 100, relisted: true });
        assert_eq!(cache.update_snapshot(&mut snap), SnapshotUpdate::default());
        cache.assume(pod("a", None), "n042").expect("assumed");
        cache.set_pod(pod("b", Some("n007")));
        assert_eq!(cache.update_snapshot(&mut snap), SnapshotUpdate { copied: 2, relisted: false });
        assert_eq!(snap.nodes[42].pod_count, 1);
        assert_eq!(snap.nodes[7].pod_count, 1);
        // A node joining moves the others; only the new one is copied.
        cache.set_node(node("n050a", "4"));
        assert_eq!(cache.update_snapshot(&mut snap), SnapshotUpdate { copied: 1, relisted: true });
        assert_eq!(snap.nodes.len(), 101);
        assert_eq!(snap.nodes[snap.index["n042"]].pod_count, 1);
    }

    #[test]
    fn a_relist_drops_the_pods_and_nodes_that_are_gone_and_keeps_assumed_ones() {
        let mut cache = Cache::new(TTL);
        cache.replace_nodes(&[node("n1", "4"), node("n2", "4")]);
        cache.set_pod(pod("a", Some("n1")));
        cache.set_pod(pod("b", Some("n2")));
        cache.assume(pod("c", None), "n1").expect("assumed");
        cache.assume(pod("d", None), "n1").expect("assumed");
        // b was deleted, c's binding is not written yet, d was deleted while the watch was down.
        cache.replace_pods(&[pod("a", Some("n1")), pod("c", None)]);
        assert!(cache.is_assumed("default/c"));
        assert!(!cache.is_assumed("default/d"));
        assert_eq!(requested(&cache, "n1"), Some((200, 2)));
        assert_eq!(requested(&cache, "n2"), Some((0, 0)));
        cache.replace_nodes(&[node("n1", "4")]);
        assert_eq!(requested(&cache, "n2"), None);
        assert_eq!(cache.counts(), (1, 2, 1));
    }
}
