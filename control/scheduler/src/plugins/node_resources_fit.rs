//! NodeResourcesFit: the pod's requests (PreFilter, once) must fit in what
//! the node has left (Filter); Score prefers the least allocated nodes
//! (spreading, the default) or the most allocated (bin packing).

use k8s_openapi::api::core::v1::Pod;

use crate::framework::resource::{Resource, pod_requests};
use crate::framework::{
    Code, CycleState, FilterPlugin, MAX_NODE_SCORE, NodeInfo, Plugin, PreFilterPlugin, PreScorePlugin, ScorePlugin,
    Snapshot, Status,
};

pub const NAME: &str = "NodeResourcesFit";
const STATE: &str = "PreFilterNodeResourcesFit";
const SCORE_STATE: &str = "PreScoreNodeResourcesFit";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub enum ScoringStrategy {
    #[default]
    LeastAllocated,
    MostAllocated,
}

#[derive(Debug, Default)]
pub struct NodeResourcesFit {
    pub strategy: ScoringStrategy,
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl PreFilterPlugin for NodeResourcesFit {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, _snapshot: &Snapshot<'_>) -> Status {
        state.write(STATE, pod_requests(pod, false));
        Status::success()
    }
}

/// Every resource the pod lacks on the node, with upstream's wording.
pub fn insufficient(req: &Resource, node: &NodeInfo) -> Vec<String> {
    let mut out = Vec::new();
    if node.pod_count + 1 > node.allocatable.allowed_pods {
        out.push("Too many pods".to_owned());
    }
    let a = &node.allocatable;
    let r = &node.requested;
    if req.milli_cpu > 0 && req.milli_cpu > a.milli_cpu - r.milli_cpu {
        out.push("Insufficient cpu".to_owned());
    }
    if req.memory > 0 && req.memory > a.memory - r.memory {
        out.push("Insufficient memory".to_owned());
    }
    if req.ephemeral_storage > 0 && req.ephemeral_storage > a.ephemeral_storage - r.ephemeral_storage {
        out.push("Insufficient ephemeral-storage".to_owned());
    }
    for (name, want) in &req.scalar {
        let have = a.scalar.get(name).copied().unwrap_or(0) - r.scalar.get(name).copied().unwrap_or(0);
        if *want > 0 && *want > have {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

impl FilterPlugin for NodeResourcesFit {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let computed;
        let req = match state.read::<Resource>(STATE) {
            Some(r) => r,
            None => {
                computed = pod_requests(pod, false);
                &computed
            }
        };
        let reasons = insufficient(req, node);
        if reasons.is_empty() { Status::success() } else { Status::with_reasons(Code::Unschedulable, reasons) }
    }
}

impl PreScorePlugin for NodeResourcesFit {
    fn pre_score(&self, state: &mut CycleState, pod: &Pod, _nodes: &[&NodeInfo], _snapshot: &Snapshot<'_>) -> Status {
        state.write(SCORE_STATE, pod_requests(pod, true));
        Status::success()
    }
}

/// One resource's score, 0..=100.
pub fn resource_score(strategy: ScoringStrategy, requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 {
        return 0;
    }
    match strategy {
        ScoringStrategy::LeastAllocated if requested > capacity => 0,
        ScoringStrategy::LeastAllocated => (capacity - requested) * MAX_NODE_SCORE / capacity,
        ScoringStrategy::MostAllocated => requested.min(capacity) * MAX_NODE_SCORE / capacity,
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let req = state.read::<Resource>(SCORE_STATE).cloned().unwrap_or_else(|| pod_requests(pod, true));
        // cpu and memory, weight 1 each (upstream's default resources).
        let cpu = resource_score(
            self.strategy,
            node.non_zero_requested.milli_cpu + req.milli_cpu,
            node.allocatable.milli_cpu,
        );
        let mem = resource_score(self.strategy, node.non_zero_requested.memory + req.memory, node.allocatable.memory);
        Ok((cpu + mem) / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn node(cpu: i64, pods: i64) -> NodeInfo {
        let mut n = NodeInfo::new(Arc::new(Default::default()));
        n.allocatable = Resource { milli_cpu: cpu, memory: 1 << 30, allowed_pods: pods, ..Default::default() };
        n
    }

    #[test]
    fn a_pod_that_asks_for_more_cpu_than_is_left_is_insufficient_cpu() {
        let mut n = node(1000, 10);
        n.requested.milli_cpu = 600;
        let req = Resource { milli_cpu: 500, ..Default::default() };
        assert_eq!(insufficient(&req, &n), vec!["Insufficient cpu".to_owned()]);
        assert!(insufficient(&Resource { milli_cpu: 400, ..Default::default() }, &n).is_empty());
    }

    #[test]
    fn a_full_node_has_too_many_pods() {
        let mut n = node(1000, 1);
        n.pod_count = 1;
        assert_eq!(insufficient(&Resource::default(), &n), vec!["Too many pods".to_owned()]);
    }

    #[test]
    fn least_allocated_prefers_empty_nodes_and_most_allocated_full_ones() {
        assert_eq!(resource_score(ScoringStrategy::LeastAllocated, 250, 1000), 75);
        assert_eq!(resource_score(ScoringStrategy::MostAllocated, 250, 1000), 25);
        assert_eq!(resource_score(ScoringStrategy::LeastAllocated, 2000, 1000), 0);
    }
}
