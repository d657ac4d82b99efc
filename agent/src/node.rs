//! The Node object: registered at boot, its status (capacity, addresses,
//! conditions, node info) written then and refreshed as a heartbeat.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::error::Error;
use crate::machine::Machine;
use crate::pod::status::time;

/// The kubelet version the node reports (kubectl shows it; semver).
pub const KUBELET_VERSION: &str = "v1.33.0-waggle";
/// Port of the agent's HTTP API, as reported in the Node's daemonEndpoints.
pub const DEFAULT_PORT: u16 = 10250;

#[derive(Debug)]
pub struct NodeInfo<'a> {
    pub name: &'a str,
    pub ip: IpAddr,
    pub machine: &'a Machine,
    pub pod_cidr: Option<&'a ipnet::IpNet>,
    pub port: u16,
    pub runtime_version: &'a str,
    /// When the agent started: the conditions' lastTransitionTime, so that
    /// heartbeats do not look like transitions.
    pub since: std::time::SystemTime,
    /// The node's images, as `status.images` lists them.
    pub images: Vec<k8s_openapi::api::core::v1::ContainerImage>,
}

/// Upstream's nodeStatusMaxImages.
const MAX_IMAGES: usize = 50;

/// `status.images`: one entry per image digest with its tags and
/// `repository@digest` names, largest first, at most 50 (as the kubelet).
pub fn images_of(list: &[waggle_runtime::ImageSummary]) -> Vec<k8s_openapi::api::core::v1::ContainerImage> {
    let mut by_digest: BTreeMap<&str, (Vec<String>, u64)> = BTreeMap::new();
    for i in list {
        let e = by_digest.entry(i.digest.as_str()).or_insert_with(|| (Vec::new(), i.size));
        let repo = i.name.split('@').next().unwrap_or(&i.name);
        let repo = match repo.rsplit_once(':') {
            Some((r, tag)) if !tag.contains('/') => r,
            _ => repo,
        };
        for name in [i.name.clone(), format!("{repo}@{}", i.digest)] {
            if !e.0.contains(&name) {
                e.0.push(name);
            }
        }
    }
    let mut out: Vec<_> = by_digest
        .into_values()
        .map(|(names, size)| k8s_openapi::api::core::v1::ContainerImage {
            names: Some(names),
            size_bytes: Some(size as i64),
        })
        .collect();
    out.sort_by_key(|i| std::cmp::Reverse(i.size_bytes));
    out.truncate(MAX_IMAGES);
    out
}

fn capacity(m: &Machine) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_owned(), Quantity(m.cpus.to_string())),
        ("memory".to_owned(), Quantity(format!("{}Ki", m.memory_kib))),
        ("pods".to_owned(), Quantity("110".into())),
        ("ephemeral-storage".to_owned(), Quantity("10Gi".into())),
    ])
}

fn status(n: &NodeInfo<'_>) -> NodeStatus {
    let now = time(std::time::SystemTime::now());
    let cond = |kind: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(time(n.since)),
    };
    NodeStatus {
        capacity: Some(capacity(n.machine)),
        allocatable: Some(capacity(n.machine)),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: n.ip.to_string() },
            NodeAddress { type_: "Hostname".into(), address: n.name.to_owned() },
        ]),
        conditions: Some(vec![
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "waggle agent is posting ready status"),
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(n.port) }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            operating_system: "linux".into(),
            kernel_version: n.machine.kernel_version.clone(),
            os_image: n.machine.os_image.clone(),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: KUBELET_VERSION.into(),
            container_runtime_version: n.runtime_version.to_owned(),
            machine_id: n.machine.machine_id.clone(),
            system_uuid: n.machine.machine_id.clone(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_owned(),
            ..Default::default()
        }),
        images: (!n.images.is_empty()).then(|| n.images.clone()),
        ..Default::default()
    }
}

/// Creates the Node if missing, sets its podCIDR if the control plane has
/// not, writes its status. Returns the Node and the podCIDR to use.
pub async fn register(client: &kube::Client, n: &NodeInfo<'_>) -> Result<(Node, Option<ipnet::IpNet>), Error> {
    let api: Api<Node> = Api::all(client.clone());
    let existing = api.get_opt(n.name).await.map_err(Error::kube(format!("reading node {}", n.name)))?;
    let node = match existing {
        Some(node) => node,
        None => {
            let labels = BTreeMap::from([
                ("kubernetes.io/hostname".to_owned(), n.name.to_owned()),
                ("kubernetes.io/os".to_owned(), "linux".to_owned()),
                ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
            ]);
            let node = Node {
                metadata: ObjectMeta { name: Some(n.name.to_owned()), labels: Some(labels), ..Default::default() },
                spec: Some(NodeSpec {
                    pod_cidr: n.pod_cidr.map(ToString::to_string),
                    pod_cidrs: n.pod_cidr.map(|c| vec![c.to_string()]),
                    ..Default::default()
                }),
                status: None,
            };
            match api.create(&PostParams::default(), &node).await {
                Ok(created) => {
                    tracing::info!(node = %n.name, "registered the node");
                    created
                }
                Err(e) if crate::error::is_conflict(&e) => {
                    api.get(n.name).await.map_err(Error::kube(format!("reading node {}", n.name)))?
                }
                Err(e) => return Err(Error::kube(format!("creating node {}", n.name))(e)),
            }
        }
    };
    let assigned = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).and_then(|c| c.parse().ok());
    let cidr = match (assigned, n.pod_cidr) {
        (Some(a), _) => Some(a),
        (None, Some(c)) => {
            let patch = json!({"spec": {"podCIDR": c.to_string(), "podCIDRs": [c.to_string()]}});
            api.patch(n.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::kube(format!("setting the podCIDR of node {}", n.name)))?;
            Some(*c)
        }
        (None, None) => None,
    };
    let node = write_status(client, n).await?;
    Ok((node, cidr))
}

/// Writes the node's status (the heartbeat).
pub async fn write_status(client: &kube::Client, n: &NodeInfo<'_>) -> Result<Node, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = json!({"status": status(n)});
    api.patch_status(n.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!("writing the status of node {}", n.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, digest: &str, size: u64) -> waggle_runtime::ImageSummary {
        waggle_runtime::ImageSummary { name: name.into(), digest: digest.into(), size }
    }

    #[test]
    fn status_images_group_names_by_digest_largest_first_with_repository_digests() {
        let got = images_of(&[
            image("docker.io/library/busybox:1", "sha256:b", 10),
            image("127.0.0.1:5000/app:v1", "sha256:a", 99),
            image("docker.io/library/busybox:latest", "sha256:b", 10),
        ]);
        let names: Vec<Vec<String>> = got.iter().map(|i| i.names.clone().unwrap_or_default()).collect();
        assert_eq!(
            names,
            [
                vec!["127.0.0.1:5000/app:v1".to_owned(), "127.0.0.1:5000/app@sha256:a".to_owned()],
                vec![
                    "docker.io/library/busybox:1".to_owned(),
                    "docker.io/library/busybox@sha256:b".to_owned(),
                    "docker.io/library/busybox:latest".to_owned(),
                ],
            ]
        );
        assert_eq!(got[0].size_bytes, Some(99));
        let many: Vec<_> = (0..60).map(|i| image(&format!("x:{i}"), &format!("sha256:{i}"), i)).collect();
        assert_eq!(images_of(&many).len(), 50, "at most 50, as the kubelet");
    }
}
