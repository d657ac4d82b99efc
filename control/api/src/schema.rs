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

/// Decodes `obj` as the built-in type of `group`/`kind`; `Ok(None)` when no
/// typed schema is known for it. Err carries upstream's wording of a type error.
pub fn decode(group: &str, kind: &str, obj: &Value) -> Result<Option<Decoded>, String> {
    use k8s_openapi::api::{
        apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz, autoscaling::v2 as autoscaling,
        batch::v1 as batch, coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
        events::v1 as events, networking::v1 as networking, rbac::v1 as rbac, scheduling::v1 as scheduling,
    };
    let typed = match (group, kind) {
        ("", "Namespace") => round_trip::<core::Namespace>(obj),
        ("", "Pod") => round_trip::<core::Pod>(obj),
        ("", "Service") => round_trip::<core::Service>(obj),
        ("", "Endpoints") => round_trip::<core::Endpoints>(obj),
        ("", "Node") => round_trip::<core::Node>(obj),
        ("", "ConfigMap") => round_trip::<core::ConfigMap>(obj),
        ("", "Secret") => round_trip::<core::Secret>(obj),
        ("", "ServiceAccount") => round_trip::<core::ServiceAccount>(obj),
        ("", "Event") => round_trip::<core::Event>(obj),
        ("", "PersistentVolume") => round_trip::<core::PersistentVolume>(obj),
        ("", "PersistentVolumeClaim") => round_trip::<core::PersistentVolumeClaim>(obj),
        ("apps", "Deployment") => round_trip::<apps::Deployment>(obj),
        ("apps", "ReplicaSet") => round_trip::<apps::ReplicaSet>(obj),
        ("apps", "StatefulSet") => round_trip::<apps::StatefulSet>(obj),
        ("apps", "DaemonSet") => round_trip::<apps::DaemonSet>(obj),
        ("batch", "Job") => round_trip::<batch::Job>(obj),
        ("batch", "CronJob") => round_trip::<batch::CronJob>(obj),
        ("networking.k8s.io", "NetworkPolicy") => round_trip::<networking::NetworkPolicy>(obj),
        ("networking.k8s.io", "Ingress") => round_trip::<networking::Ingress>(obj),
        ("discovery.k8s.io", "EndpointSlice") => round_trip::<discovery::EndpointSlice>(obj),
        ("coordination.k8s.io", "Lease") => round_trip::<coordination::Lease>(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => round_trip::<autoscaling::HorizontalPodAutoscaler>(obj),
        ("rbac.authorization.k8s.io", "Role") => round_trip::<rbac::Role>(obj),
        ("rbac.authorization.k8s.io", "RoleBinding") => round_trip::<rbac::RoleBinding>(obj),
        ("rbac.authorization.k8s.io", "ClusterRole") => round_trip::<rbac::ClusterRole>(obj),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => round_trip::<rbac::ClusterRoleBinding>(obj),
        ("events.k8s.io", "Event") => round_trip::<events::Event>(obj),
        ("scheduling.k8s.io", "PriorityClass") => round_trip::<scheduling::PriorityClass>(obj),
        ("authorization.k8s.io", "SelfSubjectAccessReview") => round_trip::<authz::SelfSubjectAccessReview>(obj),
        ("authentication.k8s.io", "SelfSubjectReview") => round_trip::<authn::SelfSubjectReview>(obj),
        _ => return Ok(None),
    };
    let typed = typed.map_err(|e| format!("{kind} in version \"v1\" cannot be handled as a {kind}: {e}"))?;
    let mut unknown = Vec::new();
    diff(obj, &typed, "", &mut unknown);
    Ok(Some(Decoded { unknown }))
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
    fn dropping_removes_exactly_the_unknown_fields() {
        let mut obj = json!({"spec": {"replica": 2, "replicas": 1, "containers": [{"imag": "x", "name": "c"}]}});
        drop_fields(&mut obj, &["spec.replica".into(), "spec.containers[0].imag".into()]);
        assert_eq!(obj, json!({"spec": {"replicas": 1, "containers": [{"name": "c"}]}}));
    }
}
