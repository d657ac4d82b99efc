//! NodeName: a pod naming a node (`spec.nodeName`) fits only there.

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{Code, CycleState, FilterPlugin, NodeInfo, Plugin, Status};

pub const NAME: &str = "NodeName";
pub const REASON: &str = "node(s) didn't match the requested node name";

#[derive(Debug, Default)]
pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty()) {
            Some(n) if n != node.name => Status::new(Code::UnschedulableAndUnresolvable, REASON),
            _ => Status::success(),
        }
    }
}
