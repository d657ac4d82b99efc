//! `apps/v1`: Deployment.

use k8s_pb::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use serde_json::{Map, Value, json};

use super::json::{Obj, Result};
use super::message;
use super::meta::{int_or_string, label_selector, object_meta};
use super::pod::pod_template_spec;

pub(super) fn deployment(raw: &[u8]) -> Result<Map<String, Value>> {
    let Deployment { metadata, spec, status: _ } = message(raw)?;
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .object("spec", deployment_spec(spec.unwrap_or_default())?)
        .object("status", json!({}))
        .into_map())
}

fn deployment_spec(s: DeploymentSpec) -> Result<Value> {
    let DeploymentSpec {
        replicas,
        selector,
        template,
        strategy,
        min_ready_seconds,
        revision_history_limit,
        paused,
        progress_deadline_seconds,
    } = s;
    Ok(Obj::new()
        .int_ptr("replicas", replicas)
        .object_ptr("selector", selector.map(label_selector))
        .object("template", pod_template_spec(template.unwrap_or_default())?)
        .object("strategy", deployment_strategy(strategy.unwrap_or_default())?)
        .int("minReadySeconds", min_ready_seconds)
        .int_ptr("revisionHistoryLimit", revision_history_limit)
        .bool("paused", paused)
        .int_ptr("progressDeadlineSeconds", progress_deadline_seconds)
        .build())
}

fn deployment_strategy(s: DeploymentStrategy) -> Result<Value> {
    let DeploymentStrategy { r#type, rolling_update } = s;
    let rolling_update = match rolling_update {
        Some(RollingUpdateDeployment { max_unavailable, max_surge }) => Some(
            Obj::new()
                .object_ptr("maxUnavailable", max_unavailable.map(int_or_string).transpose()?)
                .object_ptr("maxSurge", max_surge.map(int_or_string).transpose()?)
                .build(),
        ),
        None => None,
    };
    Ok(Obj::new().string("type", r#type).object_ptr("rollingUpdate", rolling_update).build())
}
