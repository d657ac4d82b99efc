//! A scheduling profile: which plugins run at each extension point, with
//! which score weights (upstream's defaults), under which schedulerName.

use std::sync::Arc;

use crate::framework::{BindPlugin, FilterPlugin, PreFilterExtensions, PreFilterPlugin, PreScorePlugin, ScorePlugin};
use crate::plugins::balanced_allocation::BalancedAllocation;
use crate::plugins::default_binder::DefaultBinder;
use crate::plugins::inter_pod_affinity::InterPodAffinity;
use crate::plugins::node_affinity::NodeAffinity;
use crate::plugins::node_name::NodeName;
use crate::plugins::node_ports::NodePorts;
use crate::plugins::node_resources_fit::{NodeResourcesFit, ScoringStrategy};
use crate::plugins::node_unschedulable::NodeUnschedulable;
use crate::plugins::pod_topology_spread::PodTopologySpread;
use crate::plugins::taint_toleration::TaintToleration;

pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

pub struct Profile {
    pub scheduler_name: String,
    pub percentage_of_nodes_to_score: Option<i32>,
    pub pre_filter: Vec<Arc<dyn PreFilterPlugin>>,
    /// Keep PreFilter state true as preemption takes pods off a node.
    pub pre_filter_extensions: Vec<Arc<dyn PreFilterExtensions>>,
    pub filter: Vec<Arc<dyn FilterPlugin>>,
    pub pre_score: Vec<Arc<dyn PreScorePlugin>>,
    pub score: Vec<(Arc<dyn ScorePlugin>, i64)>,
    /// DefaultPreemption as the PostFilter.
    pub preemption: bool,
    pub bind: Arc<dyn BindPlugin>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("scheduler_name", &self.scheduler_name)
            .field("filter", &self.filter.iter().map(|p| p.name()).collect::<Vec<_>>())
            .field("score", &self.score.iter().map(|(p, w)| (p.name(), *w)).collect::<Vec<_>>())
            .finish()
    }
}

impl Profile {
    /// Upstream's default plugin set (minus the volume plugins and
    /// ImageLocality), in upstream's order and weights.
    pub fn default_plugins(
        scheduler_name: &str,
        strategy: ScoringStrategy,
        percentage_of_nodes_to_score: Option<i32>,
        binder: Arc<dyn BindPlugin>,
    ) -> Self {
        let fit = Arc::new(NodeResourcesFit { strategy });
        let affinity = Arc::new(NodeAffinity);
        let taints = Arc::new(TaintToleration);
        let ports = Arc::new(NodePorts);
        let spread = Arc::new(PodTopologySpread);
        let pod_affinity = Arc::new(InterPodAffinity);
        Self {
            scheduler_name: scheduler_name.to_owned(),
            percentage_of_nodes_to_score,
            pre_filter: vec![affinity.clone(), ports.clone(), fit.clone(), spread.clone(), pod_affinity.clone()],
            pre_filter_extensions: vec![spread.clone(), pod_affinity.clone()],
            filter: vec![
                Arc::new(NodeUnschedulable),
                Arc::new(NodeName),
                taints.clone(),
                affinity.clone(),
                ports,
                fit.clone(),
                spread.clone(),
                pod_affinity.clone(),
            ],
            pre_score: vec![taints.clone(), affinity.clone(), fit.clone(), spread.clone(), pod_affinity.clone()],
            score: vec![
                (taints, 3),
                (affinity, 2),
                (fit, 1),
                (spread, 2),
                (pod_affinity, 2),
                (Arc::new(BalancedAllocation), 1),
            ],
            preemption: true,
            bind: binder,
        }
    }

    pub fn default_with_client(client: kube::Client) -> Self {
        Self::default_plugins(
            DEFAULT_SCHEDULER_NAME,
            ScoringStrategy::default(),
            None,
            Arc::new(DefaultBinder { client }),
        )
    }
}
