//! The node agent's resource usage summary, the subset of the kubelet's
//! `/stats/summary` (stats/v1alpha1) that metrics.k8s.io needs: CPU and
//! memory of the node, of each pod and of each container. The agent serves
//! it; the API server turns it into `NodeMetrics` and `PodMetrics`.

use serde::{Deserialize, Serialize};

/// `GET /stats/summary` of an agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeStats,
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    #[serde(default)]
    pub containers: Vec<ContainerStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// CPU: the cumulative usage and, once two samples exist, the rate over the
/// last sampling window (`window_seconds`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// RFC 3339 time of the sample.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    pub usage_core_nano_seconds: u64,
    /// Length of the window `usage_nano_cores` was averaged over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    pub usage_bytes: u64,
    /// Usage minus inactive file pages: what the kubelet and metrics.k8s.io report.
    pub working_set_bytes: u64,
}

impl CpuStats {
    /// CPU as a Kubernetes quantity in nanocores (`123456n`), as metrics-server writes it.
    pub fn quantity(&self) -> Option<String> {
        self.usage_nano_cores.map(|n| format!("{n}n"))
    }
}

impl MemoryStats {
    /// The working set as a quantity in Ki, as metrics-server writes it.
    pub fn quantity(&self) -> String {
        format!("{}Ki", self.working_set_bytes / 1024)
    }
}
