//! The in-tree plugins, one module each, named as upstream's.

pub mod balanced_allocation;
pub mod default_binder;
pub mod default_preemption;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;
#[cfg(test)]
pub(crate) mod test_support;

use k8s_openapi::api::core::v1::{Taint, Toleration};

/// Whether a toleration tolerates a taint (upstream's ToleratesTaint).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    match t.operator.as_deref() {
        Some("Exists") => t.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            t.key.as_deref() == Some(taint.key.as_str())
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// A `metav1.LabelSelector` as a matcher. `None` (a nil selector) matches
/// nothing, `{}` everything, as upstream's LabelSelectorAsSelector.
pub fn label_selector(
    s: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Option<waggle_api::selector::LabelSelector> {
    use waggle_api::selector::{LabelSelector, Requirement};
    let s = s?;
    let mut requirements = Vec::new();
    for (k, v) in s.match_labels.iter().flatten() {
        requirements.push(Requirement::Equals(k.clone(), v.clone()));
    }
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        requirements.push(match e.operator.as_str() {
            "In" => Requirement::In(e.key.clone(), values),
            "NotIn" => Requirement::NotIn(e.key.clone(), values),
            "Exists" => Requirement::Exists(e.key.clone()),
            "DoesNotExist" => Requirement::NotExists(e.key.clone()),
            // Validation refuses other operators; one that got through selects nothing.
            _ => return None,
        });
    }
    Some(LabelSelector { requirements })
}

pub(crate) fn pod_labels(pod: &k8s_openapi::api::core::v1::Pod) -> &std::collections::BTreeMap<String, String> {
    static EMPTY: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
}
