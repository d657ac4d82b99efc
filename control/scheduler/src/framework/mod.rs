//! The scheduling framework, shaped like upstream's
//! (pkg/scheduler/framework): one trait per extension point, a
//! [`CycleState`] carrying what PreFilter/PreScore computed once per pod to
//! the per-node Filter/Score calls, and [`Status`] codes
//! Unschedulable | UnschedulableAndUnresolvable | Error.

pub mod node_info;
pub mod resource;

use std::any::Any;
use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

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

/// Per-pod data shared between a plugin's extension points in one cycle.
#[derive(Default)]
pub struct CycleState {
    data: HashMap<&'static str, Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for CycleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CycleState").field("keys", &self.data.keys().collect::<Vec<_>>()).finish()
    }
}

impl CycleState {
    pub fn write<T: Any + Send + Sync>(&mut self, key: &'static str, value: T) {
        self.data.insert(key, Box::new(value));
    }
    pub fn read<T: Any + Send + Sync>(&self, key: &'static str) -> Option<&T> {
        self.data.get(key)?.downcast_ref()
    }
}

pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
}

/// Once per pod, before any node is looked at.
pub trait PreFilterPlugin: Plugin {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod) -> Status;
}

/// Once per (pod, node): may the pod run there?
pub trait FilterPlugin: Plugin {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status;
}

/// Once per pod, with the feasible nodes, before scoring.
pub trait PreScorePlugin: Plugin {
    fn pre_score(&self, state: &mut CycleState, pod: &Pod, nodes: &[&NodeInfo]) -> Status;
}

/// Once per (pod, feasible node): how good a place is it?
pub trait ScorePlugin: Plugin {
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status>;
    /// Brings raw scores into 0..=MAX_NODE_SCORE.
    fn normalize(&self, _state: &CycleState, _pod: &Pod, _scores: &mut [i64]) -> Status {
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
