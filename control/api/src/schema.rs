//! Decoding against the built-in types (k8s-openapi), as upstream decodes a
//! request body into its Go struct: type errors become a 400, and fields the
//! type does not have are reported, so that `fieldValidation=Strict|Warn|Ignore`
//! can reject, warn about or drop them.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The outcome of decoding an object against its type.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Dotted paths (`spec.replica`, `spec.template.spec.containers[0].imag`)
    /// of fields the type does not have.
    pub unknown: Vec<String>,
}

/// Calls `$m!(group, kind, Type)` for every built-in kind with a typed schema.
macro_rules! built_in_kinds {
    ($m:ident) => {{
        use k8s_openapi::api::{
            apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz, autoscaling::v2 as autoscaling,
            batch::v1 as batch, coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
            events::v1 as events, networking::v1 as networking, rbac::v1 as rbac, scheduling::v1 as scheduling,
        };
        $m!("", "Namespace", core::Namespace);
        $m!("", "Pod", core::Pod);
        $m!("", "Service", core::Service);
        $m!("", "Endpoints", core::Endpoints);
        $m!("", "Node", core::Node);
        $m!("", "ConfigMap", core::ConfigMap);
        $m!("", "Secret", core::Secret);
        $m!("", "ServiceAccount", core::ServiceAccount);
        $m!("", "Event", core::Event);
        $m!("", "PersistentVolume", core::PersistentVolume);
        $m!("", "PersistentVolumeClaim", core::PersistentVolumeClaim);
        $m!("apps", "Deployment", apps::Deployment);
        $m!("apps", "ReplicaSet", apps::ReplicaSet);
        $m!("apps", "StatefulSet", apps::StatefulSet);
        $m!("apps", "DaemonSet", apps::DaemonSet);
        $m!("apps", "ControllerRevision", apps::ControllerRevision);
        $m!("batch", "Job", batch::Job);
        $m!("batch", "CronJob", batch::CronJob);
        $m!("networking.k8s.io", "NetworkPolicy", networking::NetworkPolicy);
        $m!("networking.k8s.io", "Ingress", networking::Ingress);
        $m!("discovery.k8s.io", "EndpointSlice", discovery::EndpointSlice);
        $m!("coordination.k8s.io", "Lease", coordination::Lease);
        $m!("autoscaling", "HorizontalPodAutoscaler", autoscaling::HorizontalPodAutoscaler);
        $m!("rbac.authorization.k8s.io", "Role", rbac::Role);
        $m!("rbac.authorization.k8s.io", "RoleBinding", rbac::RoleBinding);
        $m!("rbac.authorization.k8s.io", "ClusterRole", rbac::ClusterRole);
        $m!("rbac.authorization.k8s.io", "ClusterRoleBinding", rbac::ClusterRoleBinding);
        $m!("events.k8s.io", "Event", events::Event);
        $m!("scheduling.k8s.io", "PriorityClass", scheduling::PriorityClass);
        $m!("authorization.k8s.io", "SelfSubjectAccessReview", authz::SelfSubjectAccessReview);
        $m!("authentication.k8s.io", "SelfSubjectReview", authn::SelfSubjectReview);
    }};
}

/// Decodes `obj` as the built-in type of `group`/`kind`; `Ok(None)` when no
/// typed schema is known for it. Err carries upstream's wording of a type error.
pub fn decode(group: &str, kind: &str, obj: &Value) -> Result<Option<Decoded>, String> {
    let mut typed = None;
    macro_rules! try_kind {
        ($g:expr, $k:expr, $t:ty) => {
            if typed.is_none() && group == $g && kind == $k {
                typed = Some(round_trip::<$t>(obj));
            }
        };
    }
    built_in_kinds!(try_kind);
    let Some(typed) = typed else { return Ok(None) };
    let typed = typed.map_err(|e| format!("{kind} in version \"v1\" cannot be handled as a {kind}: {e}"))?;
    let mut unknown = Vec::new();
    diff(obj, &typed, "", &mut unknown);
    Ok(Some(Decoded { unknown }))
}

/// OpenAPI v3 `components.schemas` for the built-in kinds of one
/// group-version (and every type they refer to), named as upstream names them
/// (`io.k8s.api.apps.v1.Deployment`), each kind tagged with
/// `x-kubernetes-group-version-kind`. This is what `kubectl explain` reads.
pub fn openapi_schemas(group: &str, version: &str, kinds: &[&str]) -> serde_json::Map<String, Value> {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut roots: Vec<(String, &str)> = Vec::new();
    macro_rules! add_kind {
        ($g:expr, $k:expr, $t:ty) => {
            if group == $g && kinds.contains(&$k) {
                let _ = generator.subschema_for::<$t>();
                roots.push((<$t as schemars::JsonSchema>::schema_name().into_owned(), $k));
            }
        };
    }
    built_in_kinds!(add_kind);
    let mut defs = generator.take_definitions(true);
    for (name, kind) in roots {
        if let Some(schema) = defs.get_mut(&name).and_then(Value::as_object_mut) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                serde_json::json!([{"group": group, "version": version, "kind": kind}]),
            );
        }
    }
    defs
}

fn round_trip<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<Value, serde_json::Error> {
    let typed: T = serde_json::from_value(obj.clone())?;
    serde_json::to_value(&typed)
}

/// Paths present (and not null) in `input` but absent from `typed`.
fn diff(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (k, v) in i {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match t.get(k) {
                    Some(tv) => diff(v, tv, &p, out),
                    None if v.is_null() => {}
                    // Empty lists and objects may be omitted by the typed encoder.
                    None if v.as_array().is_some_and(Vec::is_empty) || v.as_object().is_some_and(|m| m.is_empty()) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (iv, tv)) in i.iter().zip(t).enumerate() {
                diff(iv, tv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Removes the fields at `paths` (as reported by [`decode`]) from `obj`.
pub fn drop_fields(obj: &mut Value, paths: &[String]) {
    for p in paths {
        drop_path(obj, p);
    }
}

fn drop_path(obj: &mut Value, path: &str) {
    let (head, rest) = match path.find(['.', '[']) {
        Some(i) if path.as_bytes()[i] == b'.' => (&path[..i], Some(&path[i + 1..])),
        Some(i) => (&path[..i], Some(&path[i..])),
        None => (path, None),
    };
    if let Some(rest) = rest.and_then(|r| r.strip_prefix('[')) {
        // `name[3].more` or `name[3]`
        let Some((idx, tail)) = rest.split_once(']') else { return };
        let Ok(idx) = idx.parse::<usize>() else { return };
        let tail = tail.strip_prefix('.').unwrap_or(tail);
        let target = if head.is_empty() { Some(obj) } else { obj.get_mut(head) };
        if let Some(el) = target.and_then(|v| v.get_mut(idx)) {
            if tail.is_empty() {
                *el = Value::Null;
            } else {
                drop_path(el, tail);
            }
        }
        return;
    }
    match rest {
        None => {
            if let Some(m) = obj.as_object_mut() {
                m.remove(head);
            }
        }
        Some(rest) => {
            if let Some(child) = obj.get_mut(head) {
                drop_path(child, rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_misspelt_fields_at_any_depth() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "creationTimestamp": null},
            "spec": {"replica": 2, "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "imag": "x", "resources": {}}]}}},
            "status": {}});
        let decoded = decode("apps", "Deployment", &d).expect("decodes").expect("typed");
        assert_eq!(
            decoded.unknown,
            vec!["spec.replica".to_owned(), "spec.template.spec.containers[0].imag".to_owned()]
        );
    }

    #[test]
    fn a_wrong_type_is_a_decode_error() {
        let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": "two"}});
        let err = decode("apps", "Deployment", &d).expect_err("type error");
        assert!(err.contains("cannot be handled as a Deployment"), "{err}");
    }

    #[test]
    fn known_fields_and_free_form_maps_are_not_unknown() {
        let cm = json!({"metadata": {"name": "c", "labels": {"x": "y"}, "annotations": {"k": "v"}}, "data": {"any-key": "v"}});
        assert_eq!(decode("", "ConfigMap", &cm).expect("ok").expect("typed").unknown, Vec::<String>::new());
        assert!(decode("example.com", "Widget", &cm).expect("ok").is_none());
    }

    #[test]
    fn schemas_carry_upstream_names_references_and_the_group_version_kind() {
        let defs = openapi_schemas("apps", "v1", &["Deployment"]);
        let d = &defs["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(d["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        assert!(defs.contains_key("io.k8s.api.apps.v1.DeploymentSpec"), "{:?}", defs.keys().collect::<Vec<_>>());
        let spec_ref = d["properties"]["spec"].to_string();
        assert!(spec_ref.contains("#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"), "{spec_ref}");
    }

    #[test]
    fn dropping_removes_exactly_the_unknown_fields() {
        let mut obj = json!({"spec": {"replica": 2, "replicas": 1, "containers": [{"imag": "x", "name": "c"}]}});
        drop_fields(&mut obj, &["spec.replica".into(), "spec.containers[0].imag".into()]);
        assert_eq!(obj, json!({"spec": {"replicas": 1, "containers": [{"name": "c"}]}}));
    }
}
