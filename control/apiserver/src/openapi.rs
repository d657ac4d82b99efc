//! OpenAPI v3: an index and one document per group-version, generated from
//! the registry. Each PATCH operation carries `x-kubernetes-group-version-kind`
//! and the `fieldValidation` parameter, which is what makes kubectl ≥ 1.29
//! leave validation to the server (`?fieldValidation=Strict`) for apply,
//! create -f and edit.
//!
//! `components.schemas` come from the compiled-in types (k8s-openapi's
//! schemars schemas, upstream's names), which is what `kubectl explain` reads.
//! PATCH operations do not list strategic merge patch as a request body, so
//! kubectl computes its patches from its compiled-in types.
//! OpenAPI v2 (protobuf, for kubectl 1.27/1.28) is in `openapi_v2`.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use waggle_api::registry::{self, ResourceInfo};

use crate::discovery::not_found;
use crate::response::json;

fn gv_path(g: &str, v: &str) -> String {
    if g.is_empty() { format!("api/{v}") } else { format!("apis/{g}/{v}") }
}

/// Every group-version document and its hash, built once: they depend only
/// on the registry and the compiled-in types.
fn documents() -> &'static HashMap<String, (Value, String)> {
    static DOCS: OnceLock<HashMap<String, (Value, String)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        registry::group_versions()
            .into_iter()
            .map(|(g, v)| {
                let doc = document(g, v);
                let hash = hash_of(&doc);
                (gv_path(g, v), (doc, hash))
            })
            .collect()
    })
}

/// `GET /openapi/v3`
pub fn index() -> Response {
    let mut paths = serde_json::Map::new();
    for (p, (_, hash)) in documents() {
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}));
    }
    json(StatusCode::OK, &json!({"paths": paths}))
}

/// `GET /openapi/v3/<api/v1 | apis/g/v>`
pub fn group_version(path: &str) -> Response {
    let Some((doc, _)) = documents().get(path.trim_matches('/')) else { return not_found() };
    let mut resp = json(StatusCode::OK, doc);
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, immutable"));
    resp
}

fn hash_of(doc: &Value) -> String {
    let mut h = DefaultHasher::new();
    doc.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

fn query_param(name: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": ty}, "uniqueItems": true})
}

fn document(g: &str, v: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for r in registry::resources_of(g, v) {
        let (collection, item) = resource_paths(r);
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let write_params = || {
            json!([
                query_param("dryRun", "string"),
                query_param("fieldManager", "string"),
                query_param("fieldValidation", "string"),
            ])
        };
        let mut patch_params = write_params();
        if let Some(a) = patch_params.as_array_mut() {
            a.push(query_param("force", "boolean"));
        }
        let op = |action: &str, params: Value| {
            json!({
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            })
        };
        let mut coll = serde_json::Map::new();
        if r.has_verb("list") {
            coll.insert("get".into(), op("list", json!([])));
        }
        if r.has_verb("create") {
            coll.insert("post".into(), op("post", write_params()));
        }
        if r.has_verb("deletecollection") {
            coll.insert("delete".into(), op("deletecollection", json!([])));
        }
        paths.insert(collection, Value::Object(coll));
        if r.has_verb("get") {
            let mut it = serde_json::Map::new();
            it.insert("get".into(), op("get", json!([])));
            if r.has_verb("update") {
                it.insert("put".into(), op("put", write_params()));
            }
            if r.has_verb("patch") {
                it.insert("patch".into(), op("patch", patch_params.clone()));
            }
            if r.has_verb("delete") {
                it.insert("delete".into(), op("delete", write_params()));
            }
            paths.insert(item.clone(), Value::Object(it));
            for s in r.subresources {
                let sgvk = json!({"group": s.group, "version": s.version, "kind": s.kind});
                let mut sub = serde_json::Map::new();
                for verb in s.verbs {
                    let (method, action, params) = match *verb {
                        "get" => ("get", "get", json!([])),
                        "update" => ("put", "put", write_params()),
                        "patch" => ("patch", "patch", patch_params.clone()),
                        "create" => ("post", "post", write_params()),
                        _ => continue,
                    };
                    sub.insert(
                        method.into(),
                        json!({
                            "x-kubernetes-action": action,
                            "x-kubernetes-group-version-kind": sgvk,
                            "parameters": params,
                            "responses": {"200": {"description": "OK"}},
                        }),
                    );
                }
                paths.insert(format!("{item}/{}", s.name), Value::Object(sub));
            }
        }
    }
    let kinds: Vec<&str> = registry::resources_of(g, v).map(|r| r.kind).collect();
    let schemas = waggle_api::schema::openapi_schemas(g, v, &kinds);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::system::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn resource_paths(r: &ResourceInfo) -> (String, String) {
    let base = format!("/{}", gv_path(r.group, r.version));
    let coll = if r.namespaced() {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let item = format!("{coll}/{{name}}");
    (coll, item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_offer_field_validation() {
        let doc = document("apps", "v1");
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        let params = patch["parameters"].as_array().expect("params");
        assert!(params.iter().any(|p| p["name"] == "fieldValidation"));
    }
}
