//! Protobuf request bodies (`Content-Type: application/vnd.kubernetes.protobuf`).
//!
//! kubectl 1.32+ sends them from its typed clients (`create namespace|deployment|…`,
//! `auth can-i`, `auth whoami`, `create token`) and never falls back to JSON
//! after a 415. [`decode`] turns one into the JSON object kubectl 1.31 sent for
//! the same command, so everything after the request parser only sees JSON.
//!
//! The wire format is the magic `k8s\0` followed by a `runtime.Unknown`
//! envelope whose `raw` is the object as its upstream `generated.proto`
//! message; [`k8s_pb`] has the prost types. One module per API group converts
//! them field by field, following Go's `encoding/json` rules ([`json`]), and
//! refuses fields it does not translate instead of dropping them.

mod apps;
mod authentication;
mod authorization;
mod batch;
mod core;
mod json;
mod meta;
mod networking;
mod pod;
mod policy;
mod rbac;
mod scheduling;

use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::{Map, Value};

/// The media type of protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The 4 bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Why a protobuf body could not be turned into JSON.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("protobuf body does not start with the Kubernetes magic \"k8s\\0\"")]
    Magic,
    #[error("decoding the protobuf runtime.Unknown envelope: {0}")]
    Envelope(prost::DecodeError),
    #[error("protobuf envelope names no kind")]
    MissingKind,
    #[error("protobuf bodies with contentEncoding {0:?} are not supported")]
    ContentEncoding(String),
    #[error("protobuf envelope carries contentType {0:?}, not {MEDIA_TYPE}")]
    ContentType(String),
    #[error("protobuf bodies of kind {kind} ({api_version}) are not supported")]
    UnsupportedKind { api_version: String, kind: String },
    #[error("decoding {kind} from protobuf: {source}")]
    Object { kind: &'static str, source: prost::DecodeError },
    #[error("protobuf field {0} is not supported")]
    UnsupportedField(&'static str),
    #[error("protobuf IntOrString has unknown type {0}")]
    IntOrString(i64),
    #[error("protobuf Time of {0} seconds is out of range")]
    Time(i64),
    #[error("protobuf managedFields fieldsV1 is not JSON: {0}")]
    FieldsV1(serde_json::Error),
}

/// Converts the `raw` bytes of one kind into the object's fields after
/// `kind` and `apiVersion`.
type Converter = fn(&[u8]) -> json::Result<Map<String, Value>>;

/// Every kind a protobuf body may carry: what kubectl's typed clients send.
const KINDS: &[(&str, &str, Converter)] = &[
    ("v1", "Namespace", core::namespace),
    ("v1", "ConfigMap", core::config_map),
    ("v1", "Secret", core::secret),
    ("v1", "Service", core::service),
    ("v1", "ServiceAccount", core::service_account),
    ("v1", "Pod", core::pod),
    ("v1", "ResourceQuota", core::resource_quota),
    ("apps/v1", "Deployment", apps::deployment),
    ("batch/v1", "Job", batch::job),
    ("batch/v1", "CronJob", batch::cron_job),
    ("rbac.authorization.k8s.io/v1", "Role", rbac::role),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", rbac::cluster_role),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", rbac::role_binding),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", rbac::cluster_role_binding),
    ("scheduling.k8s.io/v1", "PriorityClass", scheduling::priority_class),
    ("networking.k8s.io/v1", "Ingress", networking::ingress),
    ("policy/v1", "PodDisruptionBudget", policy::pod_disruption_budget),
    ("policy/v1", "Eviction", policy::eviction),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview", authorization::self_subject_access_review),
    ("authentication.k8s.io/v1", "SelfSubjectReview", authentication::self_subject_review),
    ("authentication.k8s.io/v1", "TokenRequest", authentication::token_request),
];

/// `apiVersion` and `kind` of every kind [`decode`] accepts (DeleteOptions,
/// accepted under any apiVersion, is listed as `v1`).
pub fn supported_kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
    KINDS.iter().map(|(api_version, kind, _)| (*api_version, *kind)).chain([("v1", "DeleteOptions")])
}

/// Decodes a `k8s\0`-prefixed protobuf request body into the object as
/// Kubernetes JSON, with `kind` and `apiVersion` set.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body.strip_prefix(MAGIC).ok_or(ProtobufError::Magic)?;
    let Unknown { type_meta, raw, content_encoding, content_type } =
        Unknown::decode(envelope).map_err(ProtobufError::Envelope)?;
    // Go always writes these strings, empty when unused.
    if let Some(encoding) = content_encoding.filter(|e| !e.is_empty()) {
        return Err(ProtobufError::ContentEncoding(encoding));
    }
    if let Some(content_type) = content_type.filter(|t| !t.is_empty() && t != MEDIA_TYPE) {
        return Err(ProtobufError::ContentType(content_type));
    }
    let TypeMeta { api_version, kind } = type_meta.unwrap_or_default();
    let (api_version, kind) = (api_version.unwrap_or_default(), kind.unwrap_or_default());
    if kind.is_empty() {
        return Err(ProtobufError::MissingKind);
    }
    let raw = raw.unwrap_or_default();
    let fields = if kind == "DeleteOptions" {
        // Registered in every group version; the envelope says which one.
        meta::delete_options(message(&raw)?)?
    } else {
        let convert =
            KINDS.iter().find(|(v, k, _)| *v == api_version && *k == kind).map(|(_, _, convert)| *convert).ok_or_else(
                || ProtobufError::UnsupportedKind { api_version: api_version.clone(), kind: kind.clone() },
            )?;
        convert(&raw)?
    };
    let mut object = Map::with_capacity(fields.len() + 2);
    object.insert("kind".into(), Value::String(kind));
    object.insert("apiVersion".into(), Value::String(api_version));
    object.extend(fields);
    Ok(Value::Object(object))
}

/// Decodes the `raw` bytes of the envelope as message `M`.
fn message<M: Message + Default>(raw: &[u8]) -> json::Result<M> {
    M::decode(raw).map_err(|source| {
        let kind = std::any::type_name::<M>().rsplit("::").next().unwrap_or("object");
        ProtobufError::Object { kind, source }
    })
}

#[cfg(test)]
mod tests;
