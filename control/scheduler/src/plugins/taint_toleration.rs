//! TaintToleration: NoSchedule and NoExecute taints must be tolerated
//! (Filter); nodes with fewer untolerated PreferNoSchedule taints score
//! higher (Score, normalized in reverse).

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

use super::tolerates;
use crate::framework::{
    Code, CycleState, FilterPlugin, NodeInfo, Plugin, PreScorePlugin, ScorePlugin, Snapshot, Status, default_normalize,
};

pub const NAME: &str = "TaintToleration";
const STATE: &str = "PreScoreTaintToleration";

#[derive(Debug, Default)]
pub struct TaintToleration;

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default()
}

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default()
}

/// Upstream's message: `node(s) had untolerated taint {key: value}`.
pub fn reason(taint: &Taint) -> String {
    format!("node(s) had untolerated taint {{{}: {}}}", taint.key, taint.value.as_deref().unwrap_or(""))
}

impl FilterPlugin for TaintToleration {
    fn filter(&self, _state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let tols = tolerations(pod);
        let untolerated = taints(node)
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .find(|taint| !tols.iter().any(|t| tolerates(t, taint)));
        match untolerated {
            Some(taint) => Status::new(Code::UnschedulableAndUnresolvable, reason(taint)),
            None => Status::success(),
        }
    }
}

impl PreScorePlugin for TaintToleration {
    fn pre_score(&self, state: &mut CycleState, pod: &Pod, _nodes: &[&NodeInfo], _snapshot: &Snapshot<'_>) -> Status {
        let prefer: Vec<Toleration> = tolerations(pod)
            .iter()
            .filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule"))
            .cloned()
            .collect();
        state.write(STATE, prefer);
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    fn score(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let empty = Vec::new();
        let tols = state.read::<Vec<Toleration>>(STATE).unwrap_or(&empty);
        let n = taints(node)
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule")
            .filter(|taint| !tols.iter().any(|t| tolerates(t, taint)))
            .count();
        Ok(n as i64)
    }

    fn normalize(&self, _state: &CycleState, _pod: &Pod, _nodes: &[&NodeInfo], scores: &mut [i64]) -> Status {
        default_normalize(scores, true);
        Status::success()
    }
}
