//! NodePorts: a pod's host ports must be free on the node (same protocol
//! and port, and either address is the wildcard or both are equal).

use k8s_openapi::api::core::v1::Pod;

use crate::framework::node_info::{HostPort, host_ports};
use crate::framework::{Code, CycleState, FilterPlugin, NodeInfo, Plugin, PreFilterPlugin, Snapshot, Status};

pub const NAME: &str = "NodePorts";
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";
const STATE: &str = "PreFilterNodePorts";

#[derive(Debug, Default)]
pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, _snapshot: &Snapshot<'_>) -> Status {
        let ports = host_ports(pod);
        if ports.is_empty() {
            return Status::skip();
        }
        state.write(STATE, ports);
        Status::success()
    }
}

fn conflicts(want: &HostPort, used: &HostPort) -> bool {
    want.0 == used.0 && want.2 == used.2 && (want.1 == "0.0.0.0" || used.1 == "0.0.0.0" || want.1 == used.1)
}

impl FilterPlugin for NodePorts {
    fn filter(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Status {
        let Some(wanted) = state.read::<Vec<HostPort>>(STATE) else { return Status::success() };
        if wanted.iter().any(|w| node.used_ports.iter().any(|u| conflicts(w, u))) {
            return Status::new(Code::Unschedulable, REASON);
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wildcard_address_conflicts_with_any_address_on_the_same_port() {
        let any = ("TCP".to_owned(), "0.0.0.0".to_owned(), 80);
        let one = ("TCP".to_owned(), "10.0.0.1".to_owned(), 80);
        let other = ("TCP".to_owned(), "10.0.0.2".to_owned(), 80);
        let udp = ("UDP".to_owned(), "0.0.0.0".to_owned(), 80);
        assert!(conflicts(&any, &one));
        assert!(!conflicts(&one, &other));
        assert!(!conflicts(&udp, &any));
    }
}
