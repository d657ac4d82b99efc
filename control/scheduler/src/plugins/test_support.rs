//! Nodes and pods for the plugins' unit tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, NodeStatus, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::framework::NodeInfo;

fn labels(l: &[(&str, &str)]) -> BTreeMap<String, String> {
    l.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A node with 4 CPUs, 16Gi and room for 110 pods.
pub fn node(name: &str, l: &[(&str, &str)]) -> NodeInfo {
    node_with_cpu(name, "4", l)
}

pub fn node_with_cpu(name: &str, cpu: &str, l: &[(&str, &str)]) -> NodeInfo {
    let alloc = BTreeMap::from([
        ("cpu".to_owned(), Quantity(cpu.into())),
        ("memory".to_owned(), Quantity("16Gi".into())),
        ("pods".to_owned(), Quantity("110".into())),
    ]);
    NodeInfo::new(Arc::new(Node {
        metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels(l)), ..Default::default() },
        status: Some(NodeStatus { allocatable: Some(alloc), ..Default::default() }),
        ..Default::default()
    }))
}

/// A pod in `default` asking for 100m CPU.
pub fn pod_with(name: &str, l: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some(labels(l)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([("cpu".to_owned(), Quantity("100m".into()))])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}
