//! The scheduling framework, shaped like upstream's
//! (pkg/scheduler/framework): one trait per extension point, a
//! [`CycleState`] carrying what PreFilter/PreScore computed once per pod to
//! the per-node Filter/Score calls, and [`Status`] codes
//! Unschedulable | UnschedulableAndUnresolvable | Error.

pub mod node_info;
pub mod resource;

use std::any::Any;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;
use waggle_api::selector::LabelSelector;

pub use self::node_info::NodeInfo;

/// Highest score a Score plugin may give after normalization.
pub const MAX_NODE_SCORE: i64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Success,
    /// The pod does not fit now; preemption or a cluster change could help.
    Unschedulable,
    /// Nothing about this node will change that (labels, taints, name).
    UnschedulableAndUnresolvable,
    Error,
    /// The plugin has nothing to do for this pod (PreFilter/PreScore).
    Skip,
}

/// A plugin's verdict, with the reasons shown to users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    pub plugin: &'static str,
}

impl Status {
    pub fn success() -> Self {
        Self { code: Code::Success, reasons: Vec::new(), plugin: "" }
    }
    pub fn skip() -> Self {
        Self { code: Code::Skip, reasons: Vec::new(), plugin: "" }
    }
    pub fn new(code: Code, reason: impl Into<String>) -> Self {
        Self { code, reasons: vec![reason.into()], plugin: "" }
    }
    pub fn with_reasons(code: Code, reasons: Vec<String>) -> Self {
        Self { code, reasons, plugin: "" }
    }
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
    pub fn with_plugin(mut self, plugin: &'static str) -> Self {
        self.plugin = plugin;
        self
    }
}

/// A value kept in the [`CycleState`]: cloneable, so that preemption can
/// try removing pods on a copy (upstream's StateData.Clone).
pub trait StateData: Any + Send + Sync {
    fn clone_box(&self) -> Box<dyn StateData>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_box(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Per-pod data shared between a plugin's extension points in one cycle.
#[derive(Default)]
pub struct CycleState {
    data: HashMap<&'static str, Box<dyn StateData>>,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        Self { data: self.data.iter().map(|(k, v)| (*k, v.as_ref().clone_box())).collect() }
    }
}

impl std::fmt::Debug for CycleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CycleState").field("keys", &self.data.keys().collect::<Vec<_>>()).finish()
    }
}

impl CycleState {
    pub fn write<T: Any + Clone + Send + Sync>(&mut self, key: &'static str, value: T) {
        self.data.insert(key, Box::new(value));
    }
    pub fn read<T: Any + Send + Sync>(&self, key: &'static str) -> Option<&T> {
        self.data.get(key)?.as_ref().as_any().downcast_ref()
    }
    pub fn read_mut<T: Any + Send + Sync>(&mut self, key: &'static str) -> Option<&mut T> {
        self.data.get_mut(key)?.as_mut().as_any_mut().downcast_mut()
    }
}

/// What plugins may look up besides nodes and pods (upstream's listers):
/// namespace labels for `namespaceSelector`, and the selector of the
/// Services, ReplicaSets, StatefulSets and ReplicationControllers a pod
/// belongs to (for the default topology spread constraints).
pub trait Listers: Send + Sync {
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;
    /// The union of the selectors of the pod's Services and controllers
    /// (upstream's helper.DefaultSelector); None when nothing selects it.
    fn default_selector(&self, pod: &Pod) -> Option<LabelSelector>;
}

/// Listers that know nothing: no namespace labels, no owners.
#[derive(Debug, Default)]
pub struct NoListers;

impl Listers for NoListers {
    fn namespace_labels(&self, _namespace: &str) -> Option<BTreeMap<String, String>> {
        None
    }
    fn default_selector(&self, _pod: &Pod) -> Option<LabelSelector> {
        None
    }
}

/// The cluster as one cycle sees it.
#[derive(Clone, Copy)]
pub struct Snapshot<'a> {
    pub nodes: &'a [NodeInfo],
    pub listers: &'a dyn Listers,
    /// Pods waiting for a node preemption made room on (by node index).
    pub nominated: Option<&'a HashMap<usize, Vec<std::sync::Arc<Pod>>>>,
}

impl std::fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("nodes", &self.nodes.len()).finish()
    }
}

impl<'a> Snapshot<'a> {
    pub fn new(nodes: &'a [NodeInfo], listers: &'a dyn Listers) -> Self {
        Self { nodes, listers, nominated: None }
    }
}

pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
}

/// Once per pod, before any node is looked at.
pub trait PreFilterPlugin: Plugin {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, snapshot: &Snapshot<'_>) -> Status;
}

/// Keeps a PreFilter's state true when preemption removes (or puts back)
/// a pod on a node (upstream's PreFilterExtensions).
pub trait PreFilterExtensions: Plugin {
    fn add_pod(&self, state: &mut CycleState, pod: &Pod, added: &Pod, node: &NodeInfo, listers: &dyn Listers);
    fn remove_pod(&self, state: &mut CycleState, pod: &Pod, removed: &Pod, node: &NodeInfo, listers: &dyn Listers);
}

/// Once per (pod, node): may the pod run there?
pub trait FilterPlugin: Plugin {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status;
}

/// Once per pod, with the feasible nodes, before scoring.
pub trait PreScorePlugin: Plugin {
    fn pre_score(&self, state: &mut CycleState, pod: &Pod, nodes: &[&NodeInfo], snapshot: &Snapshot<'_>) -> Status;
}

/// Once per (pod, feasible node): how good a place is it?
pub trait ScorePlugin: Plugin {
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status>;
    /// Brings raw scores into 0..=MAX_NODE_SCORE.
    /// `nodes[i]` is the node `scores[i]` belongs to.
    fn normalize(&self, _state: &CycleState, _pod: &Pod, _nodes: &[&NodeInfo], _scores: &mut [i64]) -> Status {
        Status::success()
    }
}

/// Writes the decision to the API.
#[async_trait::async_trait]
pub trait BindPlugin: Plugin {
    async fn bind(&self, pod: &Pod, node: &str) -> Status;
}

/// Scales scores so the highest becomes MAX_NODE_SCORE (optionally
/// reversed: the lowest does), upstream's DefaultNormalizeScore.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = MAX_NODE_SCORE * *s / max;
        *s = if reverse { MAX_NODE_SCORE - v } else { v };
    }
}

/// The pod's priority (resolved from its PriorityClass at admission).
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}
