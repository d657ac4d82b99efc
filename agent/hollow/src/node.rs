//! The Node object of a hollow node: labels, capacity, Ready condition,
//! nodeInfo. Registration is idempotent: an existing node is updated.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::{Error, HOLLOW_LABEL, HollowConfig, is_status, now};

/// How many registrations run at once.
const CONCURRENCY: usize = 32;

pub async fn register_all(client: &kube::Client, config: &HollowConfig, names: &[String]) -> Result<(), Error> {
    let api: Api<Node> = Api::all(client.clone());
    let mut results = futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| register(&api, config, i, name))
        .buffer_unordered(CONCURRENCY);
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}

#[tracing::instrument(skip(api, config), fields(node = %name))]
async fn register(api: &Api<Node>, config: &HollowConfig, index: usize, name: &str) -> Result<(), Error> {
    let node = Node {
        metadata: ObjectMeta { name: Some(name.to_owned()), labels: Some(labels(name)), ..Default::default() },
        spec: Some(NodeSpec {
            pod_cidr: Some(pod_cidr(index)),
            pod_cidrs: Some(vec![pod_cidr(index)]),
            ..Default::default()
        }),
        status: None,
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(e) if is_status(&e, 409) => {
            let patch = json!({"metadata": {"labels": labels(name)}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::kube(format!("labelling node {name}")))?;
        }
        Err(e) => return Err(Error::kube(format!("creating node {name}"))(e)),
    }
    let status = json!({"status": status(config, index)});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(Error::kube(format!("writing the status of node {name}")))?;
    tracing::debug!("registered");
    Ok(())
}

pub fn labels(name: &str) -> BTreeMap<String, String> {
    [
        ("type", "hollow"),
        (HOLLOW_LABEL, "true"),
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Node i's pods get addresses from 10.(64 + i/256).(i%256).0/24.
pub fn pod_cidr(index: usize) -> String {
    format!("10.{}.{}.0/24", 64 + index / 256, index % 256)
}

/// The node's own (fake) address, in 172.16.0.0/12 from 172.16.0.1 on.
pub(crate) fn node_ip(index: usize) -> String {
    let i = index + 1;
    format!("172.{}.{}.{}", 16 + i / 65536, (i / 256) % 256, i % 256)
}

pub fn ready_condition(status: &str, reason: &str, message: &str) -> NodeCondition {
    let t = Time(now());
    NodeCondition {
        type_: "Ready".into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(t.clone()),
        last_transition_time: Some(t),
    }
}

fn status(config: &HollowConfig, index: usize) -> NodeStatus {
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", config.cpu.as_str()),
        ("memory", config.memory.as_str()),
        ("pods", config.pods.as_str()),
        ("ephemeral-storage", "100Gi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
    .collect();
    let pressure = |type_: &str, reason: &str| {
        let t = Time(now());
        NodeCondition {
            type_: type_.into(),
            status: "False".into(),
            reason: Some(reason.into()),
            message: Some("hollow node".into()),
            last_heartbeat_time: Some(t.clone()),
            last_transition_time: Some(t),
        }
    };
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(vec![
            pressure("MemoryPressure", "KubeletHasSufficientMemory"),
            pressure("DiskPressure", "KubeletHasNoDiskPressure"),
            pressure("PIDPressure", "KubeletHasSufficientPID"),
            ready_condition("True", "KubeletReady", "hollow kubelet is posting ready status"),
        ]),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: node_ip(index) },
            NodeAddress { type_: "Hostname".into(), address: config.node_name(index) },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            boot_id: format!("hollow-{index}"),
            container_runtime_version: "hollow://0.1.0".into(),
            kernel_version: "hollow".into(),
            kube_proxy_version: String::new(),
            kubelet_version: "v1.33.0-waggle-hollow".into(),
            machine_id: format!("hollow-{index}"),
            operating_system: "linux".into(),
            os_image: "waggle hollow node".into(),
            system_uuid: format!("hollow-{index}"),
            swap: None,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ranges_of_different_nodes_do_not_overlap() {
        assert_eq!(pod_cidr(0), "10.64.0.0/24");
        assert_eq!(pod_cidr(255), "10.64.255.0/24");
        assert_eq!(pod_cidr(256), "10.65.0.0/24");
    }

    #[test]
    fn hollow_nodes_are_labelled_as_hollow() {
        let l = labels("n1");
        assert_eq!(l.get("type").map(String::as_str), Some("hollow"));
        assert_eq!(l.get(HOLLOW_LABEL).map(String::as_str), Some("true"));
        assert_eq!(l.get("kubernetes.io/hostname").map(String::as_str), Some("n1"));
    }
}
