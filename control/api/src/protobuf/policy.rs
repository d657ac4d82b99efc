//! `policy/v1`: PodDisruptionBudget (`kubectl create poddisruptionbudget`) and
//! Eviction (`kubectl drain`, through the typed client).

use k8s_pb::api::policy::v1::{Eviction, PodDisruptionBudget, PodDisruptionBudgetSpec};
use serde_json::{Map, Value, json};

use super::json::{Obj, Result};
use super::message;
use super::meta::{delete_options, int_or_string, label_selector, object_meta};

pub(super) fn pod_disruption_budget(raw: &[u8]) -> Result<Map<String, Value>> {
    let PodDisruptionBudget { metadata, spec, status: _ } = message(raw)?;
    let PodDisruptionBudgetSpec { min_available, selector, max_unavailable, unhealthy_pod_eviction_policy } =
        spec.unwrap_or_default();
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .object(
            "spec",
            Obj::new()
                .object_ptr("minAvailable", min_available.map(int_or_string).transpose()?)
                .object_ptr("selector", selector.map(label_selector))
                .object_ptr("maxUnavailable", max_unavailable.map(int_or_string).transpose()?)
                .string_ptr("unhealthyPodEvictionPolicy", unhealthy_pod_eviction_policy)
                .build(),
        )
        // The status counters have no omitempty.
        .object("status", json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}))
        .into_map())
}

pub(super) fn eviction(raw: &[u8]) -> Result<Map<String, Value>> {
    let Eviction { metadata, delete_options: options } = message(raw)?;
    // Nested DeleteOptions carry no TypeMeta of their own.
    let options = options.map(delete_options).transpose()?.map(Value::Object);
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .object_ptr("deleteOptions", options)
        .into_map())
}
