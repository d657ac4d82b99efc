//! What the scheduler knows about one node in a cycle: the Node, the
//! resources its pods request, its used host ports.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::resource::{Resource, pod_requests};

/// A host port in use: (protocol, host IP, port).
pub type HostPort = (String, String, i32);

#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    pub allocatable: Resource,
    pub requested: Resource,
    /// Requests with upstream's defaults for containers that declare none.
    pub non_zero_requested: Resource,
    pub pod_count: i64,
    pub used_ports: HashSet<HostPort>,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> Self {
        let allocatable = Resource::from_list(node.status.as_ref().and_then(|s| s.allocatable.as_ref()));
        let name = node.metadata.name.clone().unwrap_or_default();
        Self {
            node,
            name,
            allocatable,
            requested: Resource::default(),
            non_zero_requested: Resource::default(),
            pod_count: 0,
            used_ports: HashSet::new(),
        }
    }

    pub fn add_pod(&mut self, pod: &Pod) {
        self.requested.add(&pod_requests(pod, false));
        self.non_zero_requested.add(&pod_requests(pod, true));
        self.pod_count += 1;
        self.used_ports.extend(host_ports(pod));
    }

    pub fn labels(&self) -> &std::collections::BTreeMap<String, String> {
        static EMPTY: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
        self.node.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }
}

pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else { return Vec::new() };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            let ip = p.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| "0.0.0.0".into());
            Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), ip, port))
        })
        .collect()
}
