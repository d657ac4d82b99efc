//! GET of one object and LIST of a collection (with selectors, paging and Tables).

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use std::sync::Arc;

use serde_json::{Value, json};
use waggle_api::selector::{FieldSelector, LabelSelector};
use waggle_api::{ResourceInfo, StatusError};

use super::table::{Include, table};
use crate::objects::parse_rv;
use crate::request::{Query, metadata_version, table_version};
use crate::response::{ApiResult, json as respond};
use crate::routes::Target;
use crate::state::App;
use crate::watchcache::CachedObject;

/// Page size used to scan when selectors filter a limited list.
const SCAN_CHUNK: i64 = 500;

pub async fn get(app: &App, t: &Target, q: &Query, headers: &HeaderMap) -> ApiResult {
    let name = t.name.as_deref().unwrap_or_default();
    let obj = app.objects.get(t.resource, t.namespace.as_deref(), name).await?;
    if let Some(version) = table_version(headers) {
        let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
        let tbl = table(
            t.resource,
            &[obj],
            json!({"resourceVersion": rv}),
            Include::parse(q.get("includeObject")),
            version,
            true,
        );
        return Ok(respond(StatusCode::OK, &tbl));
    }
    if let Some(version) = metadata_version(headers) {
        return Ok(respond(StatusCode::OK, &super::table::partial_object_metadata(&obj, version)));
    }
    Ok(respond(StatusCode::OK, &obj))
}

/// Field selectors each kind supports (metadata.name and metadata.namespace first).
pub fn supported_fields(r: &ResourceInfo) -> &'static [&'static str] {
    match (r.group, r.kind) {
        ("", "Pod") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Event") => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "Node") => &["metadata.name", "metadata.namespace", "spec.unschedulable"],
        ("", "Secret") => &["metadata.name", "metadata.namespace", "type"],
        ("", "Namespace") => &["metadata.name", "metadata.namespace", "status.phase"],
        ("", "ReplicationController") => &["metadata.name", "metadata.namespace", "status.replicas"],
        ("batch", "Job") => &["metadata.name", "metadata.namespace", "status.successful"],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

/// Selectors of a list or watch.
#[derive(Debug, Default)]
pub struct Selectors {
    pub label: LabelSelector,
    pub field: FieldSelector,
}

impl Selectors {
    pub fn parse(r: &ResourceInfo, q: &Query) -> Result<Self, StatusError> {
        let label = LabelSelector::parse(q.get("labelSelector").unwrap_or_default())
            .map_err(|e| StatusError::bad_request(e.to_string()))?;
        let field = FieldSelector::parse(q.get("fieldSelector").unwrap_or_default())
            .map_err(|e| StatusError::bad_request(e.to_string()))?;
        field.check_supported(supported_fields(r)).map_err(StatusError::bad_request)?;
        Ok(Self { label, field })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.label.matches_object(obj) && self.field.matches_object(obj)
    }

    /// Matches a cached object by the labels and fields it keeps (every
    /// field a selector may name: [`Selectors::parse`] rejects the others).
    pub fn matches_cached(&self, obj: &CachedObject) -> bool {
        (self.label.is_empty() || self.label.matches(obj.labels()))
            && self.field.terms.iter().all(|t| (obj.field(&t.field) == t.value) != t.negated)
    }
}

/// The opaque continue token: the revision the first page was read at and
/// the last key returned.
fn encode_continue(revision: i64, key: &[u8]) -> String {
    let raw = json!({"rv": revision, "start": base64::engine::general_purpose::STANDARD.encode(key)});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.to_string())
}

fn decode_continue(token: &str) -> Result<(i64, Vec<u8>), StatusError> {
    let bad = || StatusError::bad_request(format!("continue key is not valid: {token}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let key = v
        .get("start")
        .and_then(Value::as_str)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(bad)?;
    Ok((rv, key))
}

/// A list result before it is rendered. Items are shared with the watch
/// cache when they come from it: rendering never copies them.
pub struct Listed {
    pub items: Vec<Arc<CachedObject>>,
    pub revision: i64,
    pub continue_token: Option<String>,
}

/// Reads a list honouring selectors, `limit`/`continue` and `resourceVersion`.
pub async fn list_objects(app: &App, t: &Target, q: &Query, selectors: &Selectors) -> Result<Listed, StatusError> {
    let ns = t.namespace.as_deref();
    let limit = q.int("limit")?.unwrap_or(0).max(0);
    let (mut revision, mut after) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, key) = decode_continue(token)?;
            (rv, Some(key))
        }
        None => (0, None),
    };
    if after.is_none()
        && let Some(rv) = q.get("resourceVersion").filter(|v| !v.is_empty() && *v != "0")
    {
        let rv = parse_rv(rv)?;
        if q.get("resourceVersionMatch") == Some("Exact") {
            revision = rv;
        } else {
            let current = app.objects.current_revision().await?;
            if rv > current {
                return Err(crate::objects::store_error(waggle_store::StoreError::FutureRevision {
                    op: "list",
                    requested: rv,
                    current,
                }));
            }
        }
    }
    // Unpaginated lists come from the watch cache: "0" as it is, "" once it
    // has caught up with the store, "N" once it has reached N.
    if after.is_none() && (limit == 0 || q.get("resourceVersion") == Some("0")) && revision == 0 {
        let rv = q.get("resourceVersion").unwrap_or_default();
        let cache = match rv {
            "0" => Some(app.caches.get(t.resource).await?),
            "" => app.caches.consistent(t.resource).await?,
            n => app.caches.reaching(t.resource, parse_rv(n)?).await?,
        };
        if let Some(cache) = cache {
            let (objects, revision) = cache.list_prefix(&crate::objects::prefix(t.resource, ns)).await;
            let items = objects.into_iter().filter(|o| selectors.matches_cached(o)).collect();
            return Ok(Listed { items, revision, continue_token: None });
        }
    }
    // Pages come from the watch cache as long as it can show the revision
    // the list is read at: a first page (resourceVersion "") once the cache
    // has caught up with the store, the next ones while nothing of the type
    // has changed since the first. Otherwise the store serves them.
    let exact = after.is_none() && revision != 0;
    if limit > 0 && !exact && (after.is_some() || q.get("resourceVersion").unwrap_or_default().is_empty()) {
        let cache = match after {
            Some(_) => Some(app.caches.get(t.resource).await?),
            None => app.caches.consistent(t.resource).await?,
        };
        let prefix = crate::objects::prefix(t.resource, ns);
        if let Some(cache) = cache
            && let Some(page) =
                cache.page(&prefix, after.as_deref(), revision, limit as usize, |o| selectors.matches_cached(o)).await
        {
            let token = page.next_key.map(|k| encode_continue(page.revision, &k));
            return Ok(Listed { items: page.items, revision: page.revision, continue_token: token });
        }
    }
    // `metadata.name=x` reads one key.
    if let Some(name) = selectors.field.exact_name()
        && after.is_none()
        && (ns.is_some() || !t.resource.namespaced())
    {
        let found = app.objects.try_get(t.resource, ns, name).await?;
        let revision = app.objects.current_revision().await?;
        let items = found
            .into_iter()
            .filter(|o| selectors.matches(o))
            .map(|o| Arc::new(CachedObject::new(t.resource, &o)))
            .collect();
        return Ok(Listed { items, revision, continue_token: None });
    }
    let mut items = Vec::new();
    loop {
        let want = if limit == 0 { 0 } else { SCAN_CHUNK.max(limit) };
        let page = app.objects.list(t.resource, ns, revision, want, after.as_deref()).await?;
        revision = page.revision;
        let count = page.items.len();
        for (i, obj) in page.items.into_iter().enumerate() {
            if !selectors.matches(&obj) {
                continue;
            }
            let key = crate::objects::key(
                t.resource,
                waggle_api::meta::namespace(&obj),
                waggle_api::meta::name(&obj).unwrap_or_default(),
            );
            items.push(Arc::new(CachedObject::new(t.resource, &obj)));
            if limit > 0 && items.len() as i64 == limit {
                let more = i + 1 < count || page.next_key.is_some();
                let token = more.then(|| encode_continue(revision, &key));
                return Ok(Listed { items, revision, continue_token: token });
            }
        }
        match page.next_key {
            Some(k) => after = Some(k),
            None => return Ok(Listed { items, revision, continue_token: None }),
        }
    }
}

pub async fn list(app: &App, t: &Target, q: &Query, headers: &HeaderMap) -> ApiResult {
    let selectors = Selectors::parse(t.resource, q)?;
    let listed = list_objects(app, t, q, &selectors).await?;
    let mut list_meta = json!({"resourceVersion": listed.revision.to_string()});
    if let Some(c) = &listed.continue_token {
        list_meta["continue"] = json!(c);
    }
    if let Some(version) = table_version(headers) {
        let tbl = table(
            t.resource,
            listed.items.iter().map(|o| o.value()),
            list_meta,
            Include::parse(q.get("includeObject")),
            version,
            true,
        );
        return Ok(respond(StatusCode::OK, &tbl));
    }
    if let Some(version) = metadata_version(headers) {
        let items: Vec<Value> =
            listed.items.iter().map(|o| super::table::partial_object_metadata(&o.value(), version)).collect();
        let list = json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": format!("meta.k8s.io/{version}"),
            "metadata": list_meta,
            "items": items,
        });
        return Ok(respond(StatusCode::OK, &list));
    }
    Ok(list_response(t.resource, &list_meta, &listed.items))
}

/// `{"kind":"<Kind>List",…,"items":[…]}`: the items' JSON (written once by
/// the watch cache) concatenated, never re-serialized.
fn list_response(r: &ResourceInfo, list_meta: &Value, items: &[Arc<CachedObject>]) -> axum::response::Response {
    let size: usize = items.iter().map(|o| o.json().len() + 1).sum();
    let mut buf = Vec::with_capacity(256 + size);
    let head = json!({"kind": r.list_kind(), "apiVersion": r.api_version(), "metadata": list_meta});
    let head = serde_json::to_vec(&head).unwrap_or_default();
    // `{"kind":…,"metadata":{…}` then `,"items":[` … `]}`
    buf.extend_from_slice(&head[..head.len().saturating_sub(1)]);
    buf.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(item.json());
    }
    buf.extend_from_slice(b"]}");
    let mut resp = axum::response::Response::new(axum::body::Body::from(buf));
    resp.headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, b"/registry/core/pods/ns/p");
        assert_eq!(decode_continue(&t).expect("decodes"), (42, b"/registry/core/pods/ns/p".to_vec()));
        assert!(decode_continue("!!").is_err());
    }
}
