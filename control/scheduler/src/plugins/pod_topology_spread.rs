//! PodTopologySpread, as upstream's plugin.
//!
//! A pod's `topologySpreadConstraints` (or, when it has none and a Service
//! or controller selects it, upstream's system defaults: hostname skew 3
//! and zone skew 5, both ScheduleAnyway) are split into hard ones
//! (DoNotSchedule: Filter) and soft ones (ScheduleAnyway: Score).
//!
//! PreFilter counts the matching pods per topology domain once per cycle
//! (nodes must carry every constraint's key and pass nodeAffinityPolicy,
//! default Honor, and nodeTaintsPolicy, default Ignore) and keeps the
//! smallest count; Filter computes the skew from those. PreScore counts for
//! the domains of the feasible nodes; Score weighs each constraint by
//! log(domains + 2) and normalisation turns fewer matching pods into a
//! higher score.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use waggle_api::selector::{LabelSelector, Requirement};

use super::node_affinity::required_matches;
use super::{label_selector, pod_labels, tolerates};
use crate::framework::{
    Code, CycleState, FilterPlugin, Listers, MAX_NODE_SCORE, NodeInfo, Plugin, PreFilterExtensions, PreFilterPlugin,
    PreScorePlugin, ScorePlugin, Snapshot, Status,
};

pub const NAME: &str = "PodTopologySpread";
pub const ERR_CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
const STATE: &str = "PreFilterPodTopologySpread";
const SCORE_STATE: &str = "PreScorePodTopologySpread";

#[derive(Debug, Default)]
pub struct PodTopologySpread;

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }
}

#[derive(Clone, Debug)]
pub struct Constraint {
    pub max_skew: i64,
    pub topology_key: String,
    /// DoNotSchedule (a Filter) rather than ScheduleAnyway (a Score).
    pub hard: bool,
    pub selector: Option<LabelSelector>,
    pub min_domains: i64,
    pub honor_node_affinity: bool,
    pub honor_node_taints: bool,
}

impl Constraint {
    fn new(c: &TopologySpreadConstraint, pod: &Pod) -> Self {
        let mut selector = label_selector(c.label_selector.as_ref());
        if let Some(sel) = selector.as_mut() {
            let labels = pod_labels(pod);
            for key in c.match_label_keys.iter().flatten() {
                if let Some(v) = labels.get(key) {
                    sel.requirements.push(Requirement::In(key.clone(), vec![v.clone()]));
                }
            }
        }
        Self {
            max_skew: i64::from(c.max_skew),
            topology_key: c.topology_key.clone(),
            hard: c.when_unsatisfiable != "ScheduleAnyway",
            selector,
            min_domains: c.min_domains.map(i64::from).unwrap_or(1),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    /// Upstream's system default constraints for a pod its owners select.
    fn system_defaults(selector: LabelSelector) -> Vec<Self> {
        [(3, LABEL_HOSTNAME), (5, LABEL_ZONE)]
            .into_iter()
            .map(|(skew, key)| Self {
                max_skew: skew,
                topology_key: key.into(),
                hard: false,
                selector: Some(selector.clone()),
                min_domains: 1,
                honor_node_affinity: true,
                honor_node_taints: false,
            })
            .collect()
    }

    /// Whether the node's domain counts for this constraint.
    fn includes(&self, pod: &Pod, node: &NodeInfo) -> bool {
        if self.honor_node_affinity && !required_matches(pod, node) {
            return false;
        }
        if self.honor_node_taints {
            let tols = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
            let taints = node.node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
            if taints
                .iter()
                .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .any(|taint| !tols.iter().any(|t| tolerates(t, taint)))
            {
                return false;
            }
        }
        true
    }

    /// Live pods in `namespace` on the node that the selector matches; an
    /// empty selector counts none (upstream).
    fn count(&self, pods: &[std::sync::Arc<Pod>], namespace: &str) -> i64 {
        let Some(sel) = self.selector.as_ref().filter(|s| !s.is_empty()) else { return 0 };
        pods.iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.metadata.namespace.as_deref().unwrap_or_default() == namespace
                    && sel.matches(pod_labels(p))
            })
            .count() as i64
    }

    fn matches_pod(&self, pod: &Pod) -> bool {
        self.selector.as_ref().is_some_and(|s| s.matches(pod_labels(pod)))
    }
}

/// The pod's constraints and whether they are the system defaults.
pub fn constraints(pod: &Pod, listers: &dyn Listers) -> (Vec<Constraint>, bool) {
    let own = pod.spec.as_ref().and_then(|s| s.topology_spread_constraints.as_deref()).unwrap_or_default();
    if !own.is_empty() {
        return (own.iter().map(|c| Constraint::new(c, pod)).collect(), false);
    }
    match listers.default_selector(pod).filter(|s| !s.is_empty()) {
        Some(sel) => (Constraint::system_defaults(sel), true),
        None => (Vec::new(), true),
    }
}

fn has_all_keys(node: &NodeInfo, constraints: &[Constraint]) -> bool {
    let labels = node.labels();
    constraints.iter().all(|c| labels.contains_key(&c.topology_key))
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or_default()
}

#[derive(Clone, Debug, Default)]
struct PreFilterState {
    constraints: Vec<Constraint>,
    /// Per constraint: domain value → matching pods.
    counts: Vec<HashMap<String, i64>>,
    /// Per constraint: the smallest count among its domains.
    min: Vec<i64>,
}

impl PreFilterState {
    fn recompute_min(&mut self, i: usize) {
        self.min[i] = self.counts[i].values().copied().min().unwrap_or(i64::from(i32::MAX));
    }

    fn update(&mut self, pod: &Pod, other: &Pod, node: &NodeInfo, by: i64) {
        if !has_all_keys(node, &self.constraints) || namespace(other) != namespace(pod) {
            return;
        }
        for i in 0..self.constraints.len() {
            let c = &self.constraints[i];
            if !c.includes(pod, node) || !c.matches_pod(other) || c.selector.as_ref().is_none_or(|s| s.is_empty()) {
                continue;
            }
            let Some(v) = node.labels().get(&c.topology_key) else { continue };
            *self.counts[i].entry(v.clone()).or_default() += by;
            self.recompute_min(i);
        }
    }
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, snapshot: &Snapshot<'_>) -> Status {
        let hard: Vec<Constraint> = constraints(pod, snapshot.listers).0.into_iter().filter(|c| c.hard).collect();
        if hard.is_empty() {
            return Status::skip();
        }
        let ns = namespace(pod);
        let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); hard.len()];
        for node in snapshot.nodes {
            if !has_all_keys(node, &hard) {
                continue;
            }
            let labels = node.labels();
            for (i, c) in hard.iter().enumerate() {
                if !c.includes(pod, node) {
                    continue;
                }
                let Some(v) = labels.get(&c.topology_key) else { continue };
                let n = c.count(&node.pods, ns);
                *counts[i].entry(v.clone()).or_default() += n;
            }
        }
        let mut s = PreFilterState { min: vec![0; hard.len()], constraints: hard, counts };
        for i in 0..s.constraints.len() {
            s.recompute_min(i);
        }
        state.write(STATE, s);
        Status::success()
    }
}

impl PreFilterExtensions for PodTopologySpread {
    fn add_pod(&self, state: &mut CycleState, pod: &Pod, added: &Pod, node: &NodeInfo, _listers: &dyn Listers) {
        if let Some(s) = state.read_mut::<PreFilterState>(STATE) {
            s.update(pod, added, node, 1);
        }
    }
    fn remove_pod(&self, state: &mut CycleState, pod: &Pod, removed: &Pod, node: &NodeInfo, _listers: &dyn Listers) {
        if let Some(s) = state.read_mut::<PreFilterState>(STATE) {
            s.update(pod, removed, node, -1);
        }
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(STATE) else { return Status::success() };
        let labels = node.labels();
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = labels.get(&c.topology_key) else {
                return Status::new(Code::UnschedulableAndUnresolvable, ERR_NODE_LABEL_NOT_MATCH);
            };
            let self_match = i64::from(c.matches_pod(pod));
            // Fewer domains than minDomains: the global minimum counts as 0.
            let min = if (s.counts[i].len() as i64) < c.min_domains { 0 } else { s.min[i] };
            let matching = s.counts[i].get(value).copied().unwrap_or(0);
            if matching + self_match - min > c.max_skew {
                return Status::new(Code::Unschedulable, ERR_CONSTRAINTS_NOT_MATCH);
            }
        }
        Status::success()
    }
}

#[derive(Clone, Debug, Default)]
struct ScoreState {
    constraints: Vec<Constraint>,
    /// Feasible nodes that lack a constraint's key (scored 0).
    ignored: std::collections::HashSet<String>,
    /// Per constraint (not hostname): domain value → matching pods.
    counts: Vec<HashMap<String, i64>>,
    weights: Vec<f64>,
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(&self, state: &mut CycleState, pod: &Pod, feasible: &[&NodeInfo], snapshot: &Snapshot<'_>) -> Status {
        let (all, system_defaulted) = constraints(pod, snapshot.listers);
        let soft: Vec<Constraint> = all.into_iter().filter(|c| !c.hard).collect();
        if soft.is_empty() || feasible.is_empty() {
            return Status::skip();
        }
        let require_all = !system_defaulted;
        let mut s = ScoreState { counts: vec![HashMap::new(); soft.len()], ..Default::default() };
        let mut sizes = vec![0usize; soft.len()];
        for node in feasible {
            if require_all && !has_all_keys(node, &soft) {
                s.ignored.insert(node.name.clone());
                continue;
            }
            for (i, c) in soft.iter().enumerate() {
                if c.topology_key == LABEL_HOSTNAME {
                    continue;
                }
                let Some(v) = node.labels().get(&c.topology_key) else { continue };
                if !s.counts[i].contains_key(v) {
                    s.counts[i].insert(v.clone(), 0);
                    sizes[i] += 1;
                }
            }
        }
        s.weights = soft
            .iter()
            .zip(&sizes)
            .map(|(c, size)| {
                let size = if c.topology_key == LABEL_HOSTNAME { feasible.len() - s.ignored.len() } else { *size };
                ((size + 2) as f64).ln()
            })
            .collect();
        // Count in every node of a feasible node's domain (hostname: in Score).
        if soft.iter().any(|c| c.topology_key != LABEL_HOSTNAME) {
            let ns = namespace(pod);
            for node in snapshot.nodes {
                if require_all && !has_all_keys(node, &soft) {
                    continue;
                }
                for (i, c) in soft.iter().enumerate() {
                    if c.topology_key == LABEL_HOSTNAME || !c.includes(pod, node) {
                        continue;
                    }
                    let Some(v) = node.labels().get(&c.topology_key) else { continue };
                    if let Some(n) = s.counts[i].get_mut(v) {
                        *n += c.count(&node.pods, ns);
                    }
                }
            }
        }
        s.constraints = soft;
        state.write(SCORE_STATE, s);
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<ScoreState>(SCORE_STATE) else { return Ok(0) };
        if s.ignored.contains(&node.name) {
            return Ok(0);
        }
        let labels = node.labels();
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(v) = labels.get(&c.topology_key) else { continue };
            let count = if c.topology_key == LABEL_HOSTNAME {
                c.count(&node.pods, namespace(pod))
            } else {
                s.counts[i].get(v).copied().unwrap_or(0)
            };
            score += count as f64 * s.weights[i] + (c.max_skew - 1) as f64;
        }
        Ok(score.round() as i64)
    }

    fn normalize(&self, state: &CycleState, _pod: &Pod, nodes: &[&NodeInfo], scores: &mut [i64]) -> Status {
        let Some(s) = state.read::<ScoreState>(SCORE_STATE) else { return Status::success() };
        let mut min = i64::MAX;
        let mut max = 0;
        for (n, score) in nodes.iter().zip(scores.iter()) {
            if !s.ignored.contains(&n.name) {
                min = min.min(*score);
                max = max.max(*score);
            }
        }
        for (n, score) in nodes.iter().zip(scores.iter_mut()) {
            *score = if s.ignored.contains(&n.name) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *score) / max
            };
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::NoListers;
    use crate::plugins::test_support::{node, pod_with};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as MetaSelector;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn spread(max_skew: i32, key: &str, when: &str, min_domains: Option<i32>) -> Pod {
        let mut p = pod_with("new", &[("app", "web")]);
        p.spec.get_or_insert_default().topology_spread_constraints = Some(vec![TopologySpreadConstraint {
            max_skew,
            topology_key: key.into(),
            when_unsatisfiable: when.into(),
            min_domains,
            label_selector: Some(MetaSelector {
                match_labels: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        p
    }

    /// Zone z1: nodes a, b; zone z2: node c. `web` pods: a has 2, c has 0.
    fn cluster() -> Vec<NodeInfo> {
        let mut a = node("a", &[("zone", "z1"), (LABEL_HOSTNAME, "a")]);
        a.add_pod(Arc::new(pod_with("w1", &[("app", "web")])));
        a.add_pod(Arc::new(pod_with("w2", &[("app", "web")])));
        a.add_pod(Arc::new(pod_with("other", &[("app", "db")])));
        let b = node("b", &[("zone", "z1"), (LABEL_HOSTNAME, "b")]);
        let c = node("c", &[("zone", "z2"), (LABEL_HOSTNAME, "c")]);
        let nolabel = node("d", &[]);
        vec![a, b, c, nolabel]
    }

    fn filter_all(pod: &Pod, nodes: &[NodeInfo]) -> Vec<Status> {
        let mut state = CycleState::default();
        let pre = PodTopologySpread.pre_filter(&mut state, pod, &Snapshot::new(nodes, &NoListers));
        assert!(pre.is_success());
        nodes.iter().map(|n| PodTopologySpread.filter(&state, pod, n)).collect()
    }

    #[test]
    fn do_not_schedule_keeps_the_skew_within_max_skew() {
        let got = filter_all(&spread(1, "zone", "DoNotSchedule", None), &cluster());
        // z1 has 2, z2 has 0: z1 would make the skew 3.
        assert_eq!(got[0], Status::new(Code::Unschedulable, ERR_CONSTRAINTS_NOT_MATCH));
        assert_eq!(got[1], Status::new(Code::Unschedulable, ERR_CONSTRAINTS_NOT_MATCH));
        assert!(got[2].is_success());
        assert_eq!(got[3], Status::new(Code::UnschedulableAndUnresolvable, ERR_NODE_LABEL_NOT_MATCH));
        // A skew of 3 is allowed with maxSkew 3.
        assert!(filter_all(&spread(3, "zone", "DoNotSchedule", None), &cluster())[0].is_success());
    }

    #[test]
    fn min_domains_counts_missing_domains_as_empty() {
        // With hostname: a has 2, b 0, c 0 → min 0. maxSkew 2 lets b in, a out.
        let got = filter_all(&spread(2, LABEL_HOSTNAME, "DoNotSchedule", None), &cluster());
        assert!(!got[0].is_success() && got[1].is_success());
        // z1 has 2, z2 has 1: at maxSkew 2 both zones take one more...
        let mut nodes = cluster();
        nodes[2].add_pod(Arc::new(pod_with("w3", &[("app", "web")])));
        let got = filter_all(&spread(2, "zone", "DoNotSchedule", None), &nodes);
        assert!(got[0].is_success() && got[2].is_success());
        // ...but with five zones wanted and two present, the minimum counts as 0.
        let got = filter_all(&spread(2, "zone", "DoNotSchedule", Some(5)), &nodes);
        assert!(!got[0].is_success() && got[2].is_success());
    }

    #[test]
    fn schedule_anyway_scores_the_emptier_domain_higher() {
        let nodes = cluster();
        let p = spread(1, "zone", "ScheduleAnyway", None);
        let mut state = CycleState::default();
        let snap = Snapshot::new(&nodes, &NoListers);
        assert_eq!(PodTopologySpread.pre_filter(&mut state, &p, &snap).code, Code::Skip);
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        assert!(PodTopologySpread.pre_score(&mut state, &p, &refs, &snap).is_success());
        let mut scores: Vec<i64> = nodes.iter().map(|n| PodTopologySpread.score(&state, &p, n).unwrap_or(-1)).collect();
        // z1: 2 pods × ln(2 + 2) ≈ 2.77 → 3; z2: 0; the unlabeled node is ignored.
        assert_eq!(scores, vec![3, 3, 0, 0]);
        PodTopologySpread.normalize(&state, &p, &refs, &mut scores);
        assert_eq!(scores, vec![0, 0, MAX_NODE_SCORE, 0]);
    }

    struct Owned;
    impl Listers for Owned {
        fn namespace_labels(&self, _: &str) -> Option<BTreeMap<String, String>> {
            None
        }
        fn default_selector(&self, _: &Pod) -> Option<LabelSelector> {
            Some(LabelSelector { requirements: vec![Requirement::Equals("app".into(), "web".into())] })
        }
    }

    #[test]
    fn pods_owned_by_a_controller_get_the_soft_system_defaults() {
        let p = pod_with("new", &[("app", "web")]);
        let (cs, defaulted) = constraints(&p, &Owned);
        assert!(defaulted);
        let keys: Vec<(&str, i64, bool)> = cs.iter().map(|c| (c.topology_key.as_str(), c.max_skew, c.hard)).collect();
        assert_eq!(keys, vec![(LABEL_HOSTNAME, 3, false), (LABEL_ZONE, 5, false)]);
        assert!(constraints(&p, &NoListers).0.is_empty());
    }

    #[test]
    fn removing_a_pod_lowers_its_domains_count() {
        let nodes = cluster();
        let p = spread(1, "zone", "DoNotSchedule", None);
        let mut state = CycleState::default();
        let _ = PodTopologySpread.pre_filter(&mut state, &p, &Snapshot::new(&nodes, &NoListers));
        let w1 = nodes[0].pods[0].clone();
        let w2 = nodes[0].pods[1].clone();
        PodTopologySpread.remove_pod(&mut state, &p, &w1, &nodes[0], &NoListers);
        assert!(!PodTopologySpread.filter(&state, &p, &nodes[1]).is_success());
        PodTopologySpread.remove_pod(&mut state, &p, &w2, &nodes[0], &NoListers);
        assert!(PodTopologySpread.filter(&state, &p, &nodes[1]).is_success());
    }
}
