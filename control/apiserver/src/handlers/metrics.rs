//! metrics.k8s.io/v1beta1, what `kubectl top` reads: `NodeMetrics` and
//! `PodMetrics` built from the node agents' `/stats/summary`, as
//! metrics-server builds them from the kubelets'. Summaries are fetched on
//! demand, concurrently, and kept for a few seconds per node (agents sample
//! every few seconds), so a burst of requests costs one fetch per node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures::StreamExt as _;
use serde_json::{Value, json};
use waggle_api::registry::lookup;
use waggle_api::selector::{FieldSelector, LabelSelector};
use waggle_api::stats::{CpuStats, MemoryStats, Summary};
use waggle_api::{Reason, StatusError};

use crate::request::Query;
use crate::response::{ApiResult, json as respond};
use crate::routes::Target;
use crate::state::App;

/// How long a node's summary is reused.
const FRESH: Duration = Duration::from_secs(5);
/// Agents asked at once.
const CONCURRENCY: usize = 32;
pub const GROUP: &str = "metrics.k8s.io";
const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// Recent summaries by node name.
#[derive(Debug, Default)]
pub struct SummaryCache {
    entries: Mutex<HashMap<String, (Instant, Arc<Summary>)>>,
}

impl SummaryCache {
    fn fresh(&self, node: &str) -> Option<Arc<Summary>> {
        let entries = self.entries.lock().ok()?;
        entries.get(node).filter(|(at, _)| at.elapsed() < FRESH).map(|(_, s)| s.clone())
    }

    fn put(&self, node: &str, summary: Arc<Summary>) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, (at, _)| at.elapsed() < FRESH);
            entries.insert(node.to_owned(), (Instant::now(), summary));
        }
    }
}

/// The summary of `node`'s agent; `None` when it cannot be had (the node is
/// down, or has no agent API): such nodes and their pods have no metrics.
async fn summary(app: &App, node: &str) -> Option<Arc<Summary>> {
    if let Some(s) = app.summaries.fresh(node) {
        return Some(s);
    }
    match super::proxy::agent_get(app, node, "/stats/summary").await {
        Ok(body) => match serde_json::from_slice::<Summary>(&body) {
            Ok(s) => {
                let s = Arc::new(s);
                app.summaries.put(node, s.clone());
                Some(s)
            }
            Err(e) => {
                tracing::warn!(%node, error = %e, "decoding an agent's stats summary");
                None
            }
        },
        Err(e) => {
            tracing::warn!(%node, error = %e.message, "fetching an agent's stats summary");
            None
        }
    }
}

async fn summaries(app: &App, nodes: Vec<String>) -> HashMap<String, Arc<Summary>> {
    futures::stream::iter(nodes)
        .map(|n| async move { summary(app, &n).await.map(|s| (n, s)) })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

fn selectors(q: &Query) -> Result<(LabelSelector, FieldSelector), StatusError> {
    let label = LabelSelector::parse(q.get("labelSelector").unwrap_or_default())
        .map_err(|e| StatusError::bad_request(format!("unable to parse requirement: {e}")))?;
    let field = FieldSelector::parse(q.get("fieldSelector").unwrap_or_default())
        .map_err(|e| StatusError::bad_request(format!("invalid field selector: {e}")))?;
    Ok((label, field))
}

/// Objects of `plural` (core/v1) in `ns` (all: `None`) matching the selectors.
async fn core_objects(
    app: &App,
    plural: &str,
    ns: Option<&str>,
    label: &LabelSelector,
    field: &FieldSelector,
) -> Result<Vec<Value>, StatusError> {
    let r = lookup("", "v1", plural).ok_or_else(|| StatusError::internal(format!("{plural} not registered")))?;
    let page = app.objects.list(r, ns, 0, 0, None).await?;
    Ok(page.items.into_iter().filter(|o| label.matches_object(o) && field.matches_object(o)).collect())
}

fn usage(cpu: Option<&CpuStats>, memory: Option<&MemoryStats>) -> Option<(Value, String, String)> {
    let cpu = cpu?;
    let memory = memory?;
    let usage = json!({"cpu": cpu.quantity()?, "memory": memory.quantity()});
    let window = format!("{:.3}s", cpu.window_seconds.unwrap_or_default());
    Some((usage, cpu.time.clone(), window))
}

fn metadata(obj: &Value, now: &str) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("name".into(), obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null));
    if let Some(ns) = obj.pointer("/metadata/namespace") {
        m.insert("namespace".into(), ns.clone());
    }
    m.insert("creationTimestamp".into(), json!(now));
    if let Some(labels) = obj.pointer("/metadata/labels") {
        m.insert("labels".into(), labels.clone());
    }
    Value::Object(m)
}

async fn node_metrics(app: &App, nodes: Vec<Value>) -> Vec<Value> {
    let names: Vec<String> =
        nodes.iter().filter_map(|n| n.pointer("/metadata/name")?.as_str().map(str::to_owned)).collect();
    let stats = summaries(app, names).await;
    let now = crate::admission::now_rfc3339();
    nodes
        .iter()
        .filter_map(|node| {
            let name = node.pointer("/metadata/name")?.as_str()?;
            let s = stats.get(name)?;
            let (usage, timestamp, window) = usage(s.node.cpu.as_ref(), s.node.memory.as_ref())?;
            Some(json!({
                "kind": "NodeMetrics",
                "apiVersion": API_VERSION,
                "metadata": metadata(node, &now),
                "timestamp": timestamp,
                "window": window,
                "usage": usage,
            }))
        })
        .collect()
}

async fn pod_metrics(app: &App, pods: Vec<Value>) -> Vec<Value> {
    let mut nodes: Vec<String> =
        pods.iter().filter_map(|p| p.pointer("/spec/nodeName")?.as_str().map(str::to_owned)).collect();
    nodes.sort();
    nodes.dedup();
    let stats = summaries(app, nodes).await;
    let by_uid: HashMap<&str, &waggle_api::stats::PodStats> =
        stats.values().flat_map(|s| s.pods.iter()).map(|p| (p.pod_ref.uid.as_str(), p)).collect();
    let now = crate::admission::now_rfc3339();
    pods.iter()
        .filter_map(|pod| {
            let uid = pod.pointer("/metadata/uid")?.as_str()?;
            let p = by_uid.get(uid)?;
            // A pod is reported once every one of its containers has a rate.
            let mut containers = Vec::new();
            let mut first = None;
            for c in &p.containers {
                let (usage, timestamp, window) = usage(c.cpu.as_ref(), c.memory.as_ref())?;
                first.get_or_insert((timestamp, window));
                containers.push(json!({"name": c.name, "usage": usage}));
            }
            let (timestamp, window) = first?;
            Some(json!({
                "kind": "PodMetrics",
                "apiVersion": API_VERSION,
                "metadata": metadata(pod, &now),
                "timestamp": timestamp,
                "window": window,
                "containers": containers,
            }))
        })
        .collect()
}

fn not_found(t: &Target, name: &str) -> StatusError {
    // As metrics-server names them: `nodemetrics.metrics.k8s.io "x" not found`.
    let mut e = StatusError::new(Reason::NotFound, format!("{}.{GROUP} \"{name}\" not found", t.resource.singular));
    e.details.name = Some(name.to_owned());
    e.details.group = Some(GROUP.to_owned());
    e.details.kind = Some(t.resource.singular.to_owned());
    e
}

/// GET of one NodeMetrics or PodMetrics.
pub async fn get(app: &App, t: &Target) -> ApiResult {
    let name = t.name.as_deref().unwrap_or_default();
    let items = match t.resource.kind {
        "NodeMetrics" => {
            let r = lookup("", "v1", "nodes").ok_or_else(|| StatusError::internal("nodes not registered"))?;
            match app.objects.try_get(r, None, name).await? {
                Some(node) => node_metrics(app, vec![node]).await,
                None => Vec::new(),
            }
        }
        _ => {
            let r = lookup("", "v1", "pods").ok_or_else(|| StatusError::internal("pods not registered"))?;
            match app.objects.try_get(r, t.namespace.as_deref(), name).await? {
                Some(pod) => pod_metrics(app, vec![pod]).await,
                None => Vec::new(),
            }
        }
    };
    let item = items.into_iter().next().ok_or_else(|| not_found(t, name))?;
    Ok(respond(StatusCode::OK, &item))
}

/// LIST of NodeMetrics or PodMetrics, with label and field selectors.
pub async fn list(app: &App, t: &Target, q: &Query) -> ApiResult {
    let (label, field) = selectors(q)?;
    let items = match t.resource.kind {
        "NodeMetrics" => node_metrics(app, core_objects(app, "nodes", None, &label, &field).await?).await,
        _ => pod_metrics(app, core_objects(app, "pods", t.namespace.as_deref(), &label, &field).await?).await,
    };
    let list = json!({
        "kind": t.resource.list_kind(),
        "apiVersion": API_VERSION,
        "metadata": {},
        "items": items,
    });
    Ok(respond(StatusCode::OK, &list))
}

/// Labels as a sorted map, for tests.
#[cfg(test)]
fn labels(v: &Value) -> std::collections::BTreeMap<String, String> {
    serde_json::from_value(v.pointer("/metadata/labels").cloned().unwrap_or(json!({}))).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_needs_a_rate_and_writes_metrics_server_quantities() {
        let cpu = CpuStats {
            time: "2026-01-01T00:00:00Z".into(),
            usage_nano_cores: Some(1_500_000),
            usage_core_nano_seconds: 9,
            window_seconds: Some(5.0),
        };
        let mem = MemoryStats { time: cpu.time.clone(), usage_bytes: 4 << 20, working_set_bytes: 3 << 20 };
        let (u, ts, window) = usage(Some(&cpu), Some(&mem)).expect("usage");
        assert_eq!(u, json!({"cpu": "1500000n", "memory": "3072Ki"}));
        assert_eq!((ts.as_str(), window.as_str()), ("2026-01-01T00:00:00Z", "5.000s"));
        let no_rate = CpuStats { usage_nano_cores: None, ..cpu };
        assert!(usage(Some(&no_rate), Some(&mem)).is_none());
    }

    #[test]
    fn metadata_keeps_name_namespace_and_labels() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "x"}}});
        let m = metadata(&pod, "now");
        assert_eq!(m["name"], "p");
        assert_eq!(m["namespace"], "ns");
        assert_eq!(
            labels(&json!({"metadata": m})),
            std::collections::BTreeMap::from([("app".to_owned(), "x".to_owned())])
        );
        assert!(m.get("uid").is_none());
    }
}
