//! One scheduling cycle over a snapshot, with no I/O: PreFilter once,
//! Filter over (a share of) the nodes, PreScore once, Score the feasible
//! ones, pick the best (ties at random). Failures come back as a
//! [`FitError`] whose message has upstream's shape.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{Code, CycleState, FilterPlugin, NodeInfo, Snapshot, Status, priority};
use crate::plugins::default_preemption::{self, Candidate};
use crate::profile::Profile;

/// Why a pod fits nowhere.
#[derive(Clone, Debug)]
pub struct FitError {
    pub num_all_nodes: usize,
    /// Reason → number of nodes that gave it.
    pub reasons: BTreeMap<String, usize>,
    /// Any status was an Error rather than a verdict.
    pub internal_error: bool,
    /// What preemption said when it found nothing (`preemption: …`).
    pub post_filter_message: Option<String>,
    /// Where preemption would make room, and the victims.
    pub preemption: Option<Candidate>,
}

impl FitError {
    fn new(num_all_nodes: usize) -> Self {
        Self {
            num_all_nodes,
            reasons: BTreeMap::new(),
            internal_error: false,
            post_filter_message: None,
            preemption: None,
        }
    }

    /// `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {k: v}.`
    /// followed by preemption's own message when it found nothing.
    pub fn message(&self) -> String {
        let mut parts: Vec<String> = self.reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.sort();
        let mut m = format!("0/{} nodes are available: {}.", self.num_all_nodes, parts.join(", "));
        if let Some(post) = &self.post_filter_message {
            m.push(' ');
            m.push_str(post);
        }
        m
    }
}

/// How many feasible nodes to look for before scoring (upstream's
/// numFeasibleNodesToFind with its adaptive percentage).
pub fn num_feasible_nodes_to_find(num_all: usize, percentage: Option<i32>) -> usize {
    const MIN_FEASIBLE: usize = 100;
    const MIN_PERCENTAGE: i64 = 5;
    if num_all < MIN_FEASIBLE || percentage.is_some_and(|p| p >= 100) {
        return num_all;
    }
    let adaptive = match percentage.filter(|p| *p > 0) {
        Some(p) => i64::from(p),
        None => (50 - num_all as i64 / 125).max(MIN_PERCENTAGE),
    };
    ((num_all as i64 * adaptive / 100) as usize).max(MIN_FEASIBLE)
}

/// State kept across cycles: where the next Filter pass starts (so nodes
/// are looked at in turn) and a small random generator for ties.
#[derive(Debug)]
pub struct CycleCursor {
    pub next_start: usize,
    rng: u64,
}

impl Default for CycleCursor {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Self { next_start: 0, rng: seed | 1 }
    }
}

impl CycleCursor {
    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn record(reasons: &mut BTreeMap<String, usize>, status: &Status, error: &mut bool) {
    if status.code == Code::Error {
        *error = true;
    }
    for r in &status.reasons {
        *reasons.entry(r.clone()).or_default() += 1;
    }
}

fn same_pod(a: &Pod, b: &Pod) -> bool {
    a.metadata.namespace == b.metadata.namespace && a.metadata.name == b.metadata.name
}

/// The first failing filter on the node, counting pods nominated there
/// with at least the pod's priority as if they ran (upstream's
/// addNominatedPods), and then without them.
fn filter_node(
    profile: &Profile,
    filters: &[&Arc<dyn FilterPlugin>],
    state: &CycleState,
    pod: &Pod,
    node: &NodeInfo,
    nominated: Option<&Vec<Arc<Pod>>>,
    snapshot: &Snapshot<'_>,
) -> Option<Status> {
    let prio = priority(pod);
    let others: Vec<&Arc<Pod>> =
        nominated.into_iter().flatten().filter(|p| priority(p) >= prio && !same_pod(p, pod)).collect();
    if !others.is_empty() {
        let mut with = node.clone();
        let mut st = state.clone();
        for p in others {
            with.add_pod(p.clone());
            for e in &profile.pre_filter_extensions {
                e.add_pod(&mut st, pod, p, &with, snapshot.listers);
            }
        }
        if let Some(s) = filters.iter().map(|f| f.filter(&st, pod, &with)).find(|s| !s.is_success()) {
            return Some(s);
        }
    }
    filters.iter().map(|f| f.filter(state, pod, node)).find(|s| !s.is_success())
}

/// Picks a node for `pod` among the snapshot's nodes; returns its index.
pub fn schedule(
    profile: &Profile,
    pod: &Pod,
    snapshot: &Snapshot<'_>,
    cursor: &mut CycleCursor,
) -> Result<usize, FitError> {
    let nodes = snapshot.nodes;
    let mut fit_error = FitError::new(nodes.len());
    if nodes.is_empty() {
        return Err(fit_error);
    }
    let mut state = CycleState::default();
    let mut skip_filter: Vec<&'static str> = Vec::new();
    for p in &profile.pre_filter {
        let s = p.pre_filter(&mut state, pod, snapshot);
        match s.code {
            Code::Success => {}
            Code::Skip => skip_filter.push(p.name()),
            _ => {
                // A PreFilter rejection applies to every node.
                for r in &s.reasons {
                    fit_error.reasons.insert(r.clone(), nodes.len());
                }
                fit_error.internal_error = s.code == Code::Error;
                return Err(fit_error);
            }
        }
    }
    let filters: Vec<&Arc<dyn FilterPlugin>> =
        profile.filter.iter().filter(|f| !skip_filter.contains(&f.name())).collect();
    let want = num_feasible_nodes_to_find(nodes.len(), profile.percentage_of_nodes_to_score);
    let mut feasible: Vec<usize> = Vec::with_capacity(want.min(nodes.len()));
    let mut statuses: Vec<Option<Code>> = Vec::new();
    let start = cursor.next_start % nodes.len();
    let mut examined = 0;
    for offset in 0..nodes.len() {
        if feasible.len() >= want {
            break;
        }
        let i = (start + offset) % nodes.len();
        examined += 1;
        let nominated = snapshot.nominated.and_then(|m| m.get(&i));
        match filter_node(profile, &filters, &state, pod, &nodes[i], nominated, snapshot) {
            None => feasible.push(i),
            Some(s) => {
                record(&mut fit_error.reasons, &s, &mut fit_error.internal_error);
                if statuses.is_empty() {
                    statuses = vec![None; nodes.len()];
                }
                statuses[i] = Some(s.code);
            }
        }
    }
    cursor.next_start = (start + examined) % nodes.len();
    match feasible.len() {
        0 => {
            if profile.preemption && !fit_error.internal_error {
                let offset = cursor.next_random() as usize % nodes.len();
                match default_preemption::preempt(profile, &filters, &state, pod, snapshot, &statuses, offset) {
                    Ok(c) => fit_error.preemption = Some(c),
                    Err(m) => fit_error.post_filter_message = Some(m),
                }
            }
            return Err(fit_error);
        }
        1 => return Ok(feasible[0]),
        _ => {}
    }
    let feasible_infos: Vec<&NodeInfo> = feasible.iter().map(|i| &nodes[*i]).collect();
    let mut skip_score: Vec<&'static str> = Vec::new();
    for p in &profile.pre_score {
        let s = p.pre_score(&mut state, pod, &feasible_infos, snapshot);
        if s.code == Code::Skip {
            skip_score.push(p.name());
        }
    }
    let mut totals = vec![0i64; feasible.len()];
    for (plugin, weight) in profile.score.iter().filter(|(p, _)| !skip_score.contains(&p.name())) {
        let mut scores: Vec<i64> = feasible_infos.iter().map(|n| plugin.score(&state, pod, n).unwrap_or(0)).collect();
        plugin.normalize(&state, pod, &feasible_infos, &mut scores);
        for (t, s) in totals.iter_mut().zip(scores) {
            *t += s * weight;
        }
    }
    // The best score; among equals, each has the same chance (reservoir).
    let mut best = 0;
    let mut ties = 0u64;
    for (i, t) in totals.iter().enumerate() {
        if *t > totals[best] {
            best = i;
            ties = 1;
        } else if *t == totals[best] {
            ties += 1;
            if cursor.next_random().is_multiple_of(ties) {
                best = i;
            }
        }
    }
    Ok(feasible[best])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::framework::{BindPlugin, NoListers, Plugin};
    use crate::plugins::node_resources_fit::ScoringStrategy;
    use crate::plugins::taint_toleration::reason;
    use k8s_openapi::api::core::v1::{Container, Node, NodeSpec, NodeStatus, PodSpec, ResourceRequirements, Taint};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::sync::Arc;

    /// A binder that binds nothing: the algorithm never calls it.
    struct NoBinder;
    impl Plugin for NoBinder {
        fn name(&self) -> &'static str {
            "NoBinder"
        }
    }
    #[async_trait::async_trait]
    impl BindPlugin for NoBinder {
        async fn bind(&self, _pod: &Pod, _node: &str) -> Status {
            Status::success()
        }
    }

    pub(crate) fn profile(strategy: ScoringStrategy) -> Profile {
        Profile::default_plugins("default-scheduler", strategy, None, Arc::new(NoBinder))
    }

    fn node(name: &str, cpu: &str, taints: Vec<Taint>, labels: &[(&str, &str)]) -> NodeInfo {
        let alloc = BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.into())),
            ("memory".to_owned(), Quantity("16Gi".into())),
            ("pods".to_owned(), Quantity("110".into())),
        ]);
        NodeInfo::new(Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
                ..Default::default()
            },
            spec: Some(NodeSpec { taints: Some(taints), ..Default::default() }),
            status: Some(NodeStatus { allocatable: Some(alloc), ..Default::default() }),
        }))
    }

    fn pod(cpu: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([("cpu".to_owned(), Quantity(cpu.into()))])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn least_allocated_picks_the_emptier_node_and_most_allocated_the_fuller() {
        let mut busy = node("busy", "4", vec![], &[]);
        busy.add_pod(Arc::new(pod("3")));
        let nodes = vec![busy, node("idle", "4", vec![], &[])];
        let mut cursor = CycleCursor::default();
        let least = schedule(
            &profile(ScoringStrategy::LeastAllocated),
            &pod("500m"),
            &Snapshot::new(&nodes, &NoListers),
            &mut cursor,
        );
        assert_eq!(least.map(|i| nodes[i].name.as_str()).ok(), Some("idle"));
        let most = schedule(
            &profile(ScoringStrategy::MostAllocated),
            &pod("500m"),
            &Snapshot::new(&nodes, &NoListers),
            &mut cursor,
        );
        assert_eq!(most.map(|i| nodes[i].name.as_str()).ok(), Some("busy"));
    }

    #[test]
    fn each_node_reports_why_it_was_filtered_out() {
        let taint =
            Taint { key: "dedicated".into(), value: Some("db".into()), effect: "NoSchedule".into(), time_added: None };
        let nodes = vec![node("small", "1", vec![], &[]), node("tainted", "8", vec![taint], &[])];
        let err = schedule(
            &profile(ScoringStrategy::LeastAllocated),
            &pod("2"),
            &Snapshot::new(&nodes, &NoListers),
            &mut CycleCursor::default(),
        )
        .err()
        .map(|e| e.message());
        assert_eq!(
            err.as_deref(),
            Some(
                "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: db}. \
                 preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, \
                 1 Preemption is not helpful for scheduling."
            )
        );
    }

    #[test]
    fn a_node_selector_narrows_the_choice_to_matching_nodes() {
        let nodes = vec![node("a", "4", vec![], &[("disk", "hdd")]), node("b", "4", vec![], &[("disk", "ssd")])];
        let mut p = pod("100m");
        if let Some(spec) = p.spec.as_mut() {
            spec.node_selector = Some(BTreeMap::from([("disk".to_owned(), "ssd".to_owned())]));
        }
        for _ in 0..5 {
            let got = schedule(
                &profile(ScoringStrategy::LeastAllocated),
                &p,
                &Snapshot::new(&nodes, &NoListers),
                &mut CycleCursor::default(),
            );
            assert_eq!(got.ok(), Some(1));
        }
    }

    #[test]
    fn small_clusters_are_searched_whole_and_large_ones_adaptively() {
        assert_eq!(num_feasible_nodes_to_find(50, None), 50);
        assert_eq!(num_feasible_nodes_to_find(1000, None), 420);
        assert_eq!(num_feasible_nodes_to_find(5000, None), 500);
        assert_eq!(num_feasible_nodes_to_find(5000, Some(100)), 5000);
        assert_eq!(num_feasible_nodes_to_find(200, Some(10)), 100);
    }

    #[test]
    fn the_failure_message_has_upstreams_shape() {
        let taint =
            Taint { key: "dedicated".into(), value: Some("db".into()), effect: "NoSchedule".into(), time_added: None };
        let mut e = FitError::new(3);
        e.reasons = BTreeMap::from([(reason(&taint), 2), ("Insufficient cpu".to_owned(), 1)]);
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: db}."
        );
    }
}
