//! NodeResourcesBalancedAllocation: nodes whose cpu and memory would be
//! used in similar fractions score higher (1 - standard deviation).

use k8s_openapi::api::core::v1::Pod;

use crate::framework::resource::pod_requests;
use crate::framework::{CycleState, MAX_NODE_SCORE, NodeInfo, Plugin, ScorePlugin, Status};

pub const NAME: &str = "NodeResourcesBalancedAllocation";

#[derive(Debug, Default)]
pub struct BalancedAllocation;

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }
}

pub fn balance_score(fractions: &[f64]) -> i64 {
    if fractions.is_empty() {
        return MAX_NODE_SCORE;
    }
    let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
    let var = fractions.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / fractions.len() as f64;
    ((1.0 - var.sqrt()) * MAX_NODE_SCORE as f64) as i64
}

impl ScorePlugin for BalancedAllocation {
    fn score(&self, _state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        // Upstream uses the pod's actual requests here, not the defaults.
        let req = pod_requests(pod, false);
        let frac = |used: i64, cap: i64| if cap > 0 { (used as f64 / cap as f64).min(1.0) } else { 0.0 };
        let f = [
            frac(node.requested.milli_cpu + req.milli_cpu, node.allocatable.milli_cpu),
            frac(node.requested.memory + req.memory, node.allocatable.memory),
        ];
        Ok(balance_score(&f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_fractions_score_the_maximum() {
        assert_eq!(balance_score(&[0.5, 0.5]), 100);
        assert_eq!(balance_score(&[0.0, 1.0]), 50);
    }
}
