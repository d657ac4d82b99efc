//! OpenAPI v2 in protobuf (`GET /openapi/v2`), for kubectl 1.27/1.28, which
//! read no v3. Only what kubectl's checks need: every PATCH operation with
//! its `x-kubernetes-group-version-kind` and the `fieldValidation` query
//! parameter, so kubectl leaves validation to the server. Definitions are
//! empty (kubectl then uses its compiled-in types for patches).
//!
//! The messages below are the subset of gnostic's `openapi.v2` schema used
//! here, written for this project with the same field numbers.

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use prost::Message;
use waggle_api::registry;

/// The media type kubectl asks for and must get back.
/// (kubectl asks with `…spec.v2@v1.0+protobuf`; Go cannot parse an `@` in a
/// media type, so the answer spells it as upstream does.)
pub const MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

#[derive(Clone, PartialEq, Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    paths: Option<Paths>,
}

#[derive(Clone, PartialEq, Message)]
struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, Message)]
struct Paths {
    #[prost(message, repeated, tag = "2")]
    path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedPathItem {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<PathItem>,
}

#[derive(Clone, PartialEq, Message)]
struct PathItem {
    #[prost(message, optional, tag = "2")]
    get: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    patch: Option<Operation>,
}

#[derive(Clone, PartialEq, Message)]
struct Operation {
    #[prost(string, tag = "5")]
    operation_id: String,
    #[prost(message, repeated, tag = "8")]
    parameters: Vec<ParametersItem>,
    #[prost(message, repeated, tag = "13")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
struct ParametersItem {
    #[prost(message, optional, tag = "1")]
    parameter: Option<Parameter>,
}

#[derive(Clone, PartialEq, Message)]
struct Parameter {
    #[prost(message, optional, tag = "2")]
    non_body_parameter: Option<NonBodyParameter>,
}

#[derive(Clone, PartialEq, Message)]
struct NonBodyParameter {
    #[prost(message, optional, tag = "3")]
    query_parameter_sub_schema: Option<QueryParameterSubSchema>,
}

#[derive(Clone, PartialEq, Message)]
struct QueryParameterSubSchema {
    #[prost(string, tag = "2")]
    r#in: String,
    #[prost(string, tag = "4")]
    name: String,
    #[prost(string, tag = "6")]
    r#type: String,
}

#[derive(Clone, PartialEq, Message)]
struct NamedAny {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct AnyValue {
    #[prost(string, tag = "2")]
    yaml: String,
}

fn query(name: &str, ty: &str) -> ParametersItem {
    ParametersItem {
        parameter: Some(Parameter {
            non_body_parameter: Some(NonBodyParameter {
                query_parameter_sub_schema: Some(QueryParameterSubSchema {
                    r#in: "query".into(),
                    name: name.into(),
                    r#type: ty.into(),
                }),
            }),
        }),
    }
}

fn document() -> Document {
    let mut path = Vec::new();
    for r in registry::RESOURCES.iter().filter(|r| r.has_verb("patch")) {
        let base =
            if r.group.is_empty() { format!("/api/{}", r.version) } else { format!("/apis/{}/{}", r.group, r.version) };
        let item = if r.namespaced() {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let gvk = NamedAny {
            name: "x-kubernetes-group-version-kind".into(),
            value: Some(AnyValue {
                yaml: format!("group: \"{}\"\nkind: {}\nversion: {}\n", r.group, r.kind, r.version),
            }),
        };
        let patch = Operation {
            operation_id: format!("patch{}", r.kind),
            parameters: vec![
                query("dryRun", "string"),
                query("fieldManager", "string"),
                query("fieldValidation", "string"),
                query("force", "boolean"),
            ],
            vendor_extension: vec![gvk.clone()],
        };
        let get =
            Operation { operation_id: format!("read{}", r.kind), parameters: Vec::new(), vendor_extension: vec![gvk] };
        path.push(NamedPathItem { name: item, value: Some(PathItem { get: Some(get), patch: Some(patch) }) });
    }
    Document {
        swagger: "2.0".into(),
        info: Some(Info { title: "Kubernetes".into(), version: crate::system::GIT_VERSION.into() }),
        paths: Some(Paths { path }),
    }
}

/// `GET /openapi/v2` (and `/swagger-2.0.0.pb-v1`).
pub fn serve() -> Response {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    let bytes = BYTES.get_or_init(|| document().encode_to_vec()).clone();
    let mut resp = Response::new(axum::body::Body::from(bytes));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_patchable_resource_offers_field_validation() {
        let doc = Document::decode(document().encode_to_vec().as_slice()).expect("round trip");
        let paths = doc.paths.expect("paths").path;
        let deploy = paths
            .iter()
            .find(|p| p.name == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
            .expect("deployments");
        let patch = deploy.value.as_ref().and_then(|v| v.patch.as_ref()).expect("patch");
        assert!(patch.vendor_extension[0].value.as_ref().is_some_and(|v| v.yaml.contains("kind: Deployment")));
        assert!(patch.parameters.iter().any(|p| {
            p.parameter
                .as_ref()
                .and_then(|p| p.non_body_parameter.as_ref())
                .and_then(|p| p.query_parameter_sub_schema.as_ref())
                .is_some_and(|q| q.name == "fieldValidation")
        }));
    }
}
