//! What the workload controllers read from a pod: is it active, ready,
//! available; is it controlled by a given owner. Upstream's podutil.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::ResourceExt as _;
use kube::core::{Selector, SelectorExt as _};

/// Not terminating and not finished: counts towards a controller's replicas.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Ready for at least `min_ready_seconds`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: k8s_openapi::jiff::Timestamp) -> bool {
    let Some(ready) = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == "True")
    else {
        return false;
    };
    if min_ready_seconds <= 0 {
        return true;
    }
    ready
        .last_transition_time
        .as_ref()
        .is_some_and(|t| now.as_second() - t.0.as_second() >= i64::from(min_ready_seconds))
}

pub fn controller_of(pod: &impl kube::Resource) -> Option<&OwnerReference> {
    pod.meta().owner_references.as_ref()?.iter().find(|o| o.controller == Some(true))
}

pub fn is_controlled_by(obj: &impl kube::Resource, owner_uid: &str) -> bool {
    controller_of(obj).is_some_and(|o| o.uid == owner_uid)
}

/// A label selector as kube-rs' matcher; `None` when it is malformed.
/// An empty selector matches everything (upstream's LabelSelectorAsSelector).
pub fn selector(s: Option<&LabelSelector>) -> Option<Selector> {
    match s {
        Some(s) => Selector::try_from(s.clone()).ok(),
        None => Some(Selector::default()),
    }
}

pub fn matches(selector: &Selector, obj: &impl kube::Resource) -> bool {
    selector.matches(obj.labels())
}

pub fn owner_ref(api_version: &str, kind: &str, obj: &impl kube::Resource) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether this pod's node is known (bound).
pub fn is_assigned(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty())
}

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}
