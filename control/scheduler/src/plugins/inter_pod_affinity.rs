//! InterPodAffinity: pod affinity and anti-affinity, as upstream's plugin.
//!
//! PreFilter walks the cluster's pods once per cycle and counts, per
//! topology pair (topologyKey, value):
//! - existing pods whose required anti-affinity terms match the incoming
//!   pod (symmetry: they keep it out of their domain);
//! - existing pods matching all of the incoming pod's required affinity
//!   terms, and those matching each of its required anti-affinity terms.
//!
//! Filter then only looks the node's labels up in those counts. PreScore
//! sums preferred terms (both ways) and existing pods' required affinity
//! (hardPodAffinityWeight) into per-domain scores; Score reads them, and
//! the scores are normalised min–max.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};
use waggle_api::selector::{LabelSelector, Requirement};

use super::{label_selector, pod_labels};
use crate::framework::{
    Code, CycleState, FilterPlugin, Listers, MAX_NODE_SCORE, NodeInfo, Plugin, PreFilterExtensions, PreFilterPlugin,
    PreScorePlugin, ScorePlugin, Snapshot, Status,
};

pub const NAME: &str = "InterPodAffinity";
pub const ERR_EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// Upstream's default hardPodAffinityWeight.
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;
const STATE: &str = "PreFilterInterPodAffinity";
const SCORE_STATE: &str = "PreScoreInterPodAffinity";

type TopologyPair = (String, String);

/// Per topology key, per value: how many pods.
#[derive(Clone, Debug, Default)]
struct Counts(HashMap<String, HashMap<String, i64>>);

impl Counts {
    fn bump(&mut self, (key, value): TopologyPair, by: i64) {
        let values = self.0.entry(key.clone()).or_default();
        let e = values.entry(value.clone()).or_default();
        *e += by;
        // Zeroes are dropped so that "no pod matches anywhere" stays empty.
        if *e == 0 {
            values.remove(&value);
            if values.is_empty() {
                self.0.remove(&key);
            }
        }
    }

    fn get(&self, key: &str, value: &str) -> i64 {
        self.0.get(key).and_then(|m| m.get(value)).copied().unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Any of the node's (key, value) labels counted.
    fn any_on(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().any(|(k, values)| labels.get(k).is_some_and(|v| values.get(v).is_some_and(|n| *n > 0)))
    }
}

#[derive(Debug, Default)]
pub struct InterPodAffinity;

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// One affinity term, resolved: which namespaces, which labels, which key.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    namespaces: HashSet<String>,
    /// None: no namespaceSelector (matches no namespace by labels).
    namespace_selector: Option<LabelSelector>,
    /// None: a nil labelSelector, which matches no pod.
    selector: Option<LabelSelector>,
    pub topology_key: String,
}

impl AffinityTerm {
    /// `owner` is the pod the term belongs to: its namespace is the default,
    /// its labels feed matchLabelKeys / mismatchLabelKeys.
    pub fn new(term: &PodAffinityTerm, owner: &Pod) -> Self {
        let mut namespaces: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        let namespace_selector = label_selector(term.namespace_selector.as_ref());
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.insert(owner.metadata.namespace.clone().unwrap_or_default());
        }
        let mut selector = label_selector(term.label_selector.as_ref());
        if let Some(sel) = selector.as_mut() {
            let labels = pod_labels(owner);
            for key in term.match_label_keys.iter().flatten() {
                if let Some(v) = labels.get(key) {
                    sel.requirements.push(Requirement::In(key.clone(), vec![v.clone()]));
                }
            }
            for key in term.mismatch_label_keys.iter().flatten() {
                if let Some(v) = labels.get(key) {
                    sel.requirements.push(Requirement::NotIn(key.clone(), vec![v.clone()]));
                }
            }
        }
        Self { namespaces, namespace_selector, selector, topology_key: term.topology_key.clone() }
    }

    fn namespace_matches(&self, pod: &Pod, listers: &dyn Listers) -> bool {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        if self.namespaces.contains(ns) {
            return true;
        }
        match &self.namespace_selector {
            None => false,
            Some(sel) if sel.is_empty() => true,
            Some(sel) => listers.namespace_labels(ns).is_some_and(|l| sel.matches(&l)),
        }
    }

    /// Whether `pod` is one of the pods the term is about.
    pub fn matches(&self, pod: &Pod, listers: &dyn Listers) -> bool {
        let Some(sel) = &self.selector else { return false };
        self.namespace_matches(pod, listers) && sel.matches(pod_labels(pod))
    }

    fn pair(&self, node: &NodeInfo) -> Option<TopologyPair> {
        node.labels().get(&self.topology_key).map(|v| (self.topology_key.clone(), v.clone()))
    }
}

#[derive(Clone, Debug)]
pub struct WeightedTerm {
    pub term: AffinityTerm,
    pub weight: i64,
}

/// A pod's affinity terms, resolved (upstream's PodInfo fields).
#[derive(Clone, Debug, Default)]
pub struct PodTerms {
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<WeightedTerm>,
    pub preferred_anti_affinity: Vec<WeightedTerm>,
}

impl PodTerms {
    pub fn of(pod: &Pod) -> Self {
        let Some(aff) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else { return Self::default() };
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms.into_iter().flatten().map(|t| AffinityTerm::new(t, pod)).collect()
        };
        let preferred = |terms: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<WeightedTerm> {
            terms
                .into_iter()
                .flatten()
                .map(|t| WeightedTerm {
                    term: AffinityTerm::new(&t.pod_affinity_term, pod),
                    weight: i64::from(t.weight),
                })
                .collect()
        };
        let a = aff.pod_affinity.as_ref();
        let anti = aff.pod_anti_affinity.as_ref();
        Self {
            required_affinity: required(a.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())),
            required_anti_affinity: required(
                anti.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()),
            ),
            preferred_affinity: preferred(
                a.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()),
            ),
            preferred_anti_affinity: preferred(
                anti.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()),
            ),
        }
    }

    fn has_preferred(&self) -> bool {
        !self.preferred_affinity.is_empty() || !self.preferred_anti_affinity.is_empty()
    }
}

fn matches_all(terms: &[AffinityTerm], pod: &Pod, listers: &dyn Listers) -> bool {
    !terms.is_empty() && terms.iter().all(|t| t.matches(pod, listers))
}

/// What PreFilter counted for one pod.
#[derive(Clone, Debug, Default)]
struct PreFilterState {
    terms: PodTerms,
    /// The incoming pod matches all its own required affinity terms.
    self_match: bool,
    existing_anti_affinity: Counts,
    affinity: Counts,
    anti_affinity: Counts,
}

impl PreFilterState {
    /// Counts `existing` (on `node`) in or out (multiplier ±1).
    fn update_with_pod(&mut self, incoming: &Pod, existing: &Pod, node: &NodeInfo, by: i64, listers: &dyn Listers) {
        for t in PodTerms::of(existing).required_anti_affinity {
            if t.matches(incoming, listers)
                && let Some(pair) = t.pair(node)
            {
                self.existing_anti_affinity.bump(pair, by);
            }
        }
        if matches_all(&self.terms.required_affinity, existing, listers) {
            let pairs: Vec<TopologyPair> = self.terms.required_affinity.iter().filter_map(|t| t.pair(node)).collect();
            for pair in pairs {
                self.affinity.bump(pair, by);
            }
        }
        let pairs: Vec<TopologyPair> = self
            .terms
            .required_anti_affinity
            .iter()
            .filter(|t| t.matches(existing, listers))
            .filter_map(|t| t.pair(node))
            .collect();
        for pair in pairs {
            self.anti_affinity.bump(pair, by);
        }
    }
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, snapshot: &Snapshot<'_>) -> Status {
        let listers = snapshot.listers;
        let terms = PodTerms::of(pod);
        let mut s = PreFilterState::default();
        // Existing pods' required anti-affinity against the incoming pod.
        for node in snapshot.nodes.iter().filter(|n| !n.pods_with_required_anti_affinity.is_empty()) {
            for existing in &node.pods_with_required_anti_affinity {
                for t in PodTerms::of(existing).required_anti_affinity {
                    if t.matches(pod, listers)
                        && let Some(pair) = t.pair(node)
                    {
                        s.existing_anti_affinity.bump(pair, 1);
                    }
                }
            }
        }
        if terms.required_affinity.is_empty() && terms.required_anti_affinity.is_empty() {
            if s.existing_anti_affinity.is_empty() {
                return Status::skip();
            }
        } else {
            // The incoming pod's required terms against every pod.
            for node in snapshot.nodes {
                for existing in &node.pods {
                    if matches_all(&terms.required_affinity, existing, listers) {
                        for pair in terms.required_affinity.iter().filter_map(|t| t.pair(node)) {
                            s.affinity.bump(pair, 1);
                        }
                    }
                    for t in &terms.required_anti_affinity {
                        if t.matches(existing, listers)
                            && let Some(pair) = t.pair(node)
                        {
                            s.anti_affinity.bump(pair, 1);
                        }
                    }
                }
            }
        }
        s.self_match = matches_all(&terms.required_affinity, pod, listers);
        s.terms = terms;
        state.write(STATE, s);
        Status::success()
    }
}

impl PreFilterExtensions for InterPodAffinity {
    fn add_pod(&self, state: &mut CycleState, pod: &Pod, added: &Pod, node: &NodeInfo, listers: &dyn Listers) {
        if let Some(s) = state.read_mut::<PreFilterState>(STATE) {
            s.update_with_pod(pod, added, node, 1, listers);
        }
    }
    fn remove_pod(&self, state: &mut CycleState, pod: &Pod, removed: &Pod, node: &NodeInfo, listers: &dyn Listers) {
        if let Some(s) = state.read_mut::<PreFilterState>(STATE) {
            s.update_with_pod(pod, removed, node, -1, listers);
        }
    }
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(STATE) else { return Status::success() };
        let labels = node.labels();
        // Upstream's order: the pod's affinity, its anti-affinity, then
        // existing pods' anti-affinity.
        let mut pods_exist = true;
        for t in &s.terms.required_affinity {
            match labels.get(&t.topology_key) {
                // Every topology key must be on the node.
                None => return Status::new(Code::UnschedulableAndUnresolvable, ERR_AFFINITY),
                Some(v) => {
                    if s.affinity.get(&t.topology_key, v) <= 0 {
                        pods_exist = false;
                    }
                }
            }
        }
        // The first pod of a group with affinity to itself may go anywhere.
        let first_of_group = s.affinity.is_empty() && s.self_match;
        if !(pods_exist || first_of_group) {
            return Status::new(Code::UnschedulableAndUnresolvable, ERR_AFFINITY);
        }
        for t in &s.terms.required_anti_affinity {
            if let Some(v) = labels.get(&t.topology_key)
                && s.anti_affinity.get(&t.topology_key, v) > 0
            {
                return Status::new(Code::Unschedulable, ERR_ANTI_AFFINITY);
            }
        }
        if s.existing_anti_affinity.any_on(labels) {
            return Status::new(Code::Unschedulable, ERR_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }
}

/// Per topology key, per value: the summed weights.
#[derive(Clone, Debug, Default)]
struct ScoreState {
    topology_score: HashMap<String, HashMap<String, i64>>,
}

impl ScoreState {
    fn process_term(
        &mut self,
        term: &AffinityTerm,
        weight: i64,
        pod: &Pod,
        node_labels: &BTreeMap<String, String>,
        listers: &dyn Listers,
    ) {
        if weight == 0 || !term.matches(pod, listers) {
            return;
        }
        if let Some(v) = node_labels.get(&term.topology_key) {
            *self.topology_score.entry(term.topology_key.clone()).or_default().entry(v.clone()).or_default() += weight;
        }
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(&self, state: &mut CycleState, pod: &Pod, _nodes: &[&NodeInfo], snapshot: &Snapshot<'_>) -> Status {
        let listers = snapshot.listers;
        let terms = PodTerms::of(pod);
        let has_preferred = terms.has_preferred();
        if !has_preferred && snapshot.nodes.iter().all(|n| n.pods_with_affinity.is_empty()) {
            return Status::skip();
        }
        let mut s = ScoreState::default();
        for node in snapshot.nodes {
            let labels = node.labels();
            if labels.is_empty() {
                continue;
            }
            // Unless the pod has preferred terms, only pods with affinity matter.
            let pods = if has_preferred { &node.pods } else { &node.pods_with_affinity };
            for existing in pods {
                for w in &terms.preferred_affinity {
                    s.process_term(&w.term, w.weight, existing, labels, listers);
                }
                for w in &terms.preferred_anti_affinity {
                    s.process_term(&w.term, -w.weight, existing, labels, listers);
                }
                if !node.pods_with_affinity.iter().any(|p| std::ptr::eq(p.as_ref(), existing.as_ref())) {
                    continue;
                }
                let theirs = PodTerms::of(existing);
                for t in &theirs.required_affinity {
                    s.process_term(t, HARD_POD_AFFINITY_WEIGHT, pod, labels, listers);
                }
                for w in &theirs.preferred_affinity {
                    s.process_term(&w.term, w.weight, pod, labels, listers);
                }
                for w in &theirs.preferred_anti_affinity {
                    s.process_term(&w.term, -w.weight, pod, labels, listers);
                }
            }
        }
        state.write(SCORE_STATE, s);
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<ScoreState>(SCORE_STATE) else { return Ok(0) };
        let labels = node.labels();
        Ok(s.topology_score.iter().filter_map(|(key, values)| labels.get(key).and_then(|v| values.get(v))).sum())
    }

    fn normalize(&self, state: &CycleState, _pod: &Pod, _nodes: &[&NodeInfo], scores: &mut [i64]) -> Status {
        if state.read::<ScoreState>(SCORE_STATE).is_none_or(|s| s.topology_score.is_empty()) {
            return Status::success();
        }
        let (min, max) = scores.iter().fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
        let diff = max - min;
        for s in scores.iter_mut() {
            *s = if diff > 0 { (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / diff as f64)) as i64 } else { 0 };
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::NoListers;
    use crate::plugins::test_support::{node, pod_with};
    use k8s_openapi::api::core::v1::{Affinity, PodAntiAffinity};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as MetaSelector;
    use std::sync::Arc;

    fn term(app: &str, key: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(MetaSelector {
                match_labels: Some(BTreeMap::from([("app".to_owned(), app.to_owned())])),
                ..Default::default()
            }),
            topology_key: key.into(),
            ..Default::default()
        }
    }

    fn with_anti(mut p: Pod, t: PodAffinityTerm) -> Pod {
        p.spec.get_or_insert_default().affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![t]),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn run_filter(pod: &Pod, nodes: &[NodeInfo]) -> Vec<Status> {
        let mut state = CycleState::default();
        let snap = Snapshot::new(nodes, &NoListers);
        let pre = InterPodAffinity.pre_filter(&mut state, pod, &snap);
        if pre.code == Code::Skip {
            return nodes.iter().map(|_| Status::success()).collect();
        }
        nodes.iter().map(|n| InterPodAffinity.filter(&state, pod, n)).collect()
    }

    #[test]
    fn required_anti_affinity_keeps_a_replica_off_nodes_running_one() {
        let web = |n: &str| with_anti(pod_with(n, &[("app", "web")]), term("web", "kubernetes.io/hostname"));
        let mut a = node("a", &[("kubernetes.io/hostname", "a")]);
        a.add_pod(Arc::new(web("w1")));
        let b = node("b", &[("kubernetes.io/hostname", "b")]);
        let got = run_filter(&web("w2"), &[a, b]);
        assert_eq!(got[0], Status::new(Code::Unschedulable, ERR_ANTI_AFFINITY));
        assert!(got[1].is_success());
    }

    #[test]
    fn an_existing_pods_anti_affinity_is_symmetric() {
        // The existing pod refuses `app=db` in its zone; the incoming db pod has no terms.
        let mut a = node("a", &[("zone", "z1")]);
        a.add_pod(Arc::new(with_anti(pod_with("lonely", &[("app", "x")]), term("db", "zone"))));
        let b = node("b", &[("zone", "z1")]);
        let c = node("c", &[("zone", "z2")]);
        let got = run_filter(&pod_with("db", &[("app", "db")]), &[a, b, c]);
        assert_eq!(got[1], Status::new(Code::Unschedulable, ERR_EXISTING_ANTI_AFFINITY));
        assert!(got[2].is_success());
    }

    #[test]
    fn required_affinity_follows_matching_pods_and_lets_the_first_one_in() {
        let mut p = pod_with("cache", &[("app", "cache")]);
        p.spec.get_or_insert_default().affinity = Some(Affinity {
            pod_affinity: Some(k8s_openapi::api::core::v1::PodAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![term("cache", "zone")]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let nodes = vec![node("a", &[("zone", "z1")]), node("b", &[("zone", "z2")]), node("c", &[])];
        // No cache pod anywhere yet: the pod matches its own term, so any zoned node will do.
        let got = run_filter(&p, &nodes);
        assert!(got[0].is_success() && got[1].is_success());
        assert_eq!(got[2], Status::new(Code::UnschedulableAndUnresolvable, ERR_AFFINITY));
        let mut nodes = nodes;
        nodes[1].add_pod(Arc::new(pod_with("cache-0", &[("app", "cache")])));
        let got = run_filter(&p, &nodes);
        assert_eq!(got[0], Status::new(Code::UnschedulableAndUnresolvable, ERR_AFFINITY));
        assert!(got[1].is_success());
    }

    #[test]
    fn preferred_anti_affinity_scores_empty_domains_highest() {
        let mut p = pod_with("web", &[("app", "web")]);
        p.spec.get_or_insert_default().affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                    weight: 10,
                    pod_affinity_term: term("web", "zone"),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut a = node("a", &[("zone", "z1")]);
        a.add_pod(Arc::new(pod_with("w1", &[("app", "web")])));
        let nodes = vec![a, node("b", &[("zone", "z2")])];
        let mut state = CycleState::default();
        let snap = Snapshot::new(&nodes, &NoListers);
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        assert!(InterPodAffinity.pre_score(&mut state, &p, &refs, &snap).is_success());
        let mut scores: Vec<i64> = nodes.iter().map(|n| InterPodAffinity.score(&state, &p, n).unwrap_or(0)).collect();
        assert_eq!(scores, vec![-10, 0]);
        InterPodAffinity.normalize(&state, &p, &refs, &mut scores);
        assert_eq!(scores, vec![0, MAX_NODE_SCORE]);
    }

    #[test]
    fn removing_a_pod_in_preemption_lifts_its_anti_affinity() {
        let web = |n: &str| with_anti(pod_with(n, &[("app", "web")]), term("web", "kubernetes.io/hostname"));
        let mut a = node("a", &[("kubernetes.io/hostname", "a")]);
        let w1 = web("w1");
        a.add_pod(Arc::new(w1.clone()));
        let nodes = vec![a];
        let incoming = web("w2");
        let mut state = CycleState::default();
        let _ = InterPodAffinity.pre_filter(&mut state, &incoming, &Snapshot::new(&nodes, &NoListers));
        assert!(!InterPodAffinity.filter(&state, &incoming, &nodes[0]).is_success());
        let mut copy = state.clone();
        InterPodAffinity.remove_pod(&mut copy, &incoming, &w1, &nodes[0], &NoListers);
        assert!(InterPodAffinity.filter(&copy, &incoming, &nodes[0]).is_success());
        assert!(!InterPodAffinity.filter(&state, &incoming, &nodes[0]).is_success());
    }
}
