//! What the scheduler knows about one node in a cycle: the Node, its pods
//! (those with pod affinity terms listed apart, as upstream does, so that
//! the affinity plugins only walk those), the resources they request, the
//! used host ports.

use std::collections::{BTreeMap, HashSet};
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
    pub pods: Vec<Arc<Pod>>,
    /// Pods with any pod affinity or anti-affinity term.
    pub pods_with_affinity: Vec<Arc<Pod>>,
    /// Pods with required anti-affinity terms.
    pub pods_with_required_anti_affinity: Vec<Arc<Pod>>,
}

pub fn has_pod_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
}

pub fn has_required_anti_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .is_some_and(|t| !t.is_empty())
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
            pods: Vec::new(),
            pods_with_affinity: Vec::new(),
            pods_with_required_anti_affinity: Vec::new(),
        }
    }

    pub fn add_pod(&mut self, pod: Arc<Pod>) {
        self.requested.add(&pod_requests(&pod, false));
        self.non_zero_requested.add(&pod_requests(&pod, true));
        self.pod_count += 1;
        self.used_ports.extend(host_ports(&pod));
        if has_pod_affinity(&pod) {
            self.pods_with_affinity.push(pod.clone());
        }
        if has_required_anti_affinity(&pod) {
            self.pods_with_required_anti_affinity.push(pod.clone());
        }
        self.pods.push(pod);
    }

    /// Takes a pod (matched by namespace and name) off the node; false
    /// when it is not there.
    pub fn remove_pod(&mut self, pod: &Pod) -> bool {
        let same =
            |p: &Arc<Pod>| p.metadata.namespace == pod.metadata.namespace && p.metadata.name == pod.metadata.name;
        let Some(i) = self.pods.iter().position(same) else { return false };
        let gone = self.pods.swap_remove(i);
        self.pods_with_affinity.retain(|p| !same(p));
        self.pods_with_required_anti_affinity.retain(|p| !same(p));
        self.requested.sub(&pod_requests(&gone, false));
        self.non_zero_requested.sub(&pod_requests(&gone, true));
        self.pod_count -= 1;
        for port in host_ports(&gone) {
            self.used_ports.remove(&port);
        }
        true
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
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
