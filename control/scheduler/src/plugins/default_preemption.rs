//! DefaultPreemption, upstream's PostFilter: when a pod fits nowhere, find
//! a node where evicting pods of lower priority would make it fit, with
//! the fewest and least important victims.
//!
//! On each node that failed with a resolvable status: take every
//! lower-priority pod off (on a copy of the node and of the cycle state,
//! through the PreFilter extensions), check the pod fits, then put the
//! victims back most important first, keeping each one that still lets the
//! pod fit. Among the candidates, upstream's order picks one: lowest
//! highest-victim priority, lowest priority sum, fewest victims, latest
//! start of the most important victims. This is pure; the scheduler
//! deletes the victims and nominates the node.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use crate::framework::{Code, CycleState, FilterPlugin, NodeInfo, Snapshot, priority};
use crate::profile::Profile;

pub const NAME: &str = "DefaultPreemption";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Upstream's minCandidateNodesPercentage and minCandidateNodesAbsolute.
const MIN_CANDIDATE_PERCENTAGE: usize = 10;
const MIN_CANDIDATE_ABSOLUTE: usize = 100;

/// Where to make room, and whom to evict.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub node: usize,
    pub victims: Vec<Arc<Pod>>,
}

fn start_time(p: &Pod) -> Timestamp {
    p.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).unwrap_or_else(Timestamp::now)
}

/// Upstream's MoreImportantPod: higher priority, then the one that started first.
fn more_important(a: &Pod, b: &Pod) -> Ordering {
    priority(b).cmp(&priority(a)).then_with(|| start_time(a).cmp(&start_time(b)))
}

/// Why the pod may not preempt, if it may not.
pub fn ineligible(pod: &Pod, nodes: &[NodeInfo]) -> Option<&'static str> {
    let spec = pod.spec.as_ref()?;
    if spec.preemption_policy.as_deref() == Some("Never") {
        return Some("not eligible due to preemptionPolicy=Never.");
    }
    // Already nominated and victims still terminating there: wait for them.
    let nominated = pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty())?;
    let node = nodes.iter().find(|n| n.name == nominated)?;
    let prio = priority(pod);
    node.pods
        .iter()
        .any(|p| p.metadata.deletion_timestamp.is_some() && priority(p) < prio)
        .then_some("not eligible due to a terminating pod on the nominated node.")
}

fn fits(filters: &[&Arc<dyn FilterPlugin>], state: &CycleState, pod: &Pod, node: &NodeInfo) -> bool {
    filters.iter().all(|f| f.filter(state, pod, node).is_success())
}

/// The fewest victims on `node` that let `pod` fit, if any do.
fn select_victims(
    profile: &Profile,
    filters: &[&Arc<dyn FilterPlugin>],
    state: &CycleState,
    pod: &Pod,
    node: &NodeInfo,
    snapshot: &Snapshot<'_>,
) -> Option<Vec<Arc<Pod>>> {
    let prio = priority(pod);
    let mut potential: Vec<Arc<Pod>> = node.pods.iter().filter(|p| priority(p) < prio).cloned().collect();
    if potential.is_empty() {
        return None;
    }
    let mut node = node.clone();
    let mut state = state.clone();
    for v in &potential {
        node.remove_pod(v);
        for e in &profile.pre_filter_extensions {
            e.remove_pod(&mut state, pod, v, &node, snapshot.listers);
        }
    }
    if !fits(filters, &state, pod, &node) {
        return None;
    }
    potential.sort_by(|a, b| more_important(a, b));
    let mut victims = Vec::new();
    for p in potential {
        node.add_pod(p.clone());
        for e in &profile.pre_filter_extensions {
            e.add_pod(&mut state, pod, &p, &node, snapshot.listers);
        }
        if !fits(filters, &state, pod, &node) {
            node.remove_pod(&p);
            for e in &profile.pre_filter_extensions {
                e.remove_pod(&mut state, pod, &p, &node, snapshot.listers);
            }
            victims.push(p);
        }
    }
    (!victims.is_empty()).then_some(victims)
}

/// Upstream's pickOneNodeForPreemption, without PodDisruptionBudgets.
fn pick(mut candidates: Vec<Candidate>) -> Option<Candidate> {
    let highest = |c: &Candidate| c.victims.iter().map(|p| priority(p)).max().unwrap_or(i32::MIN);
    // Priorities shifted to be positive, so that more victims never sum lower.
    let sum = |c: &Candidate| c.victims.iter().map(|p| i64::from(priority(p)) + i64::from(i32::MAX) + 1).sum::<i64>();
    let earliest_of_highest = |c: &Candidate| {
        let h = highest(c);
        c.victims.iter().filter(|p| priority(p) == h).map(|p| start_time(p)).min().unwrap_or_else(Timestamp::now)
    };
    candidates.sort_by(|a, b| {
        highest(a)
            .cmp(&highest(b))
            .then_with(|| sum(a).cmp(&sum(b)))
            .then_with(|| a.victims.len().cmp(&b.victims.len()))
            .then_with(|| earliest_of_highest(b).cmp(&earliest_of_highest(a)))
    });
    candidates.into_iter().next()
}

/// The PostFilter: a candidate, or the message upstream appends to the
/// failure (`preemption: …`).
pub fn preempt(
    profile: &Profile,
    filters: &[&Arc<dyn FilterPlugin>],
    state: &CycleState,
    pod: &Pod,
    snapshot: &Snapshot<'_>,
    statuses: &[Option<Code>],
    offset: usize,
) -> Result<Candidate, String> {
    if let Some(why) = ineligible(pod, snapshot.nodes) {
        return Err(format!("preemption: {why}"));
    }
    let n = snapshot.nodes.len();
    let want = (n * MIN_CANDIDATE_PERCENTAGE / 100).max(MIN_CANDIDATE_ABSOLUTE).min(n);
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut candidates = Vec::new();
    for k in 0..n {
        let i = (offset + k) % n;
        // Nodes no eviction can help (labels, taints, name) are left out.
        if statuses[i] != Some(Code::Unschedulable) {
            *reasons.entry(NOT_HELPFUL).or_default() += 1;
            continue;
        }
        if candidates.len() >= want {
            continue;
        }
        match select_victims(profile, filters, state, pod, &snapshot.nodes[i], snapshot) {
            Some(victims) => candidates.push(Candidate { node: i, victims }),
            None => *reasons.entry(NO_VICTIMS).or_default() += 1,
        }
    }
    pick(candidates).ok_or_else(|| {
        let parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
        format!("preemption: 0/{n} nodes are available: {}.", parts.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::NoListers;
    use crate::plugins::test_support::{node_with_cpu, pod_with};
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod(name: &str, cpu: &str, prio: i32) -> Arc<Pod> {
        let mut p = pod_with(name, &[]);
        if let Some(spec) = p.spec.as_mut() {
            spec.priority = Some(prio);
            spec.containers[0].resources = Some(ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".to_owned(), Quantity(cpu.into()))])),
                ..Default::default()
            });
        }
        Arc::new(p)
    }

    fn profile() -> Profile {
        crate::algorithm::tests::profile(crate::plugins::node_resources_fit::ScoringStrategy::LeastAllocated)
    }

    fn run(pod: &Pod, nodes: &[NodeInfo]) -> Result<Candidate, String> {
        let profile = profile();
        let snap = Snapshot::new(nodes, &NoListers);
        let mut state = CycleState::default();
        for p in &profile.pre_filter {
            let _ = p.pre_filter(&mut state, pod, &snap);
        }
        let filters: Vec<&Arc<dyn FilterPlugin>> = profile.filter.iter().collect();
        let statuses: Vec<Option<Code>> = nodes
            .iter()
            .map(|n| filters.iter().map(|f| f.filter(&state, pod, n)).find(|s| !s.is_success()).map(|s| s.code))
            .collect();
        preempt(&profile, &filters, &state, pod, &snap, &statuses, 0)
    }

    #[test]
    fn the_node_with_the_least_important_victims_is_chosen() {
        let mut a = node_with_cpu("a", "2", &[]);
        a.add_pod(pod("a-mid", "2", 100));
        let mut b = node_with_cpu("b", "2", &[]);
        b.add_pod(pod("b-low1", "1", 1));
        b.add_pod(pod("b-low2", "1", 1));
        let nodes = vec![a, b];
        let got = run(&pod("hi", "1", 1000), &nodes).expect("a candidate");
        // b's victims are less important; and one of its two pods is enough.
        assert_eq!(nodes[got.node].name, "b");
        assert_eq!(got.victims.len(), 1);
    }

    #[test]
    fn pods_of_equal_or_higher_priority_are_never_victims() {
        let mut a = node_with_cpu("a", "2", &[]);
        a.add_pod(pod("same", "2", 1000));
        let got = run(&pod("hi", "1", 1000), &[a]).err();
        assert_eq!(
            got.as_deref(),
            Some("preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.")
        );
    }

    #[test]
    fn preemption_policy_never_is_respected() {
        let mut a = node_with_cpu("a", "2", &[]);
        a.add_pod(pod("low", "2", 1));
        let mut p = (*pod("hi", "1", 1000)).clone();
        p.spec.get_or_insert_default().preemption_policy = Some("Never".into());
        assert_eq!(run(&p, &[a]).err().as_deref(), Some("preemption: not eligible due to preemptionPolicy=Never."));
    }
}
