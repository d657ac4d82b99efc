//! Patches: JSON patch (RFC 6902) and JSON merge patch (RFC 7386) through the
//! `json-patch` crate, and strategic merge patch for built-in kinds.
//!
//! Strategic merge patch merges lists of objects by a merge key instead of
//! replacing them. Upstream takes the keys from Go struct tags; here they are
//! a table by field name ([`merge_key`]), which is enough because upstream's
//! built-in kinds use each list field name with one meaning (the only
//! ambiguity, `ports`, is settled by the elements themselves).

use serde_json::{Map, Value};

/// What went wrong applying a patch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"
    )]
    UnknownType,
    #[error("{0}")]
    Invalid(String),
}

/// The kinds of patch a PATCH request can carry, by Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Result<Self, PatchError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            _ => Err(PatchError::UnknownType),
        }
    }
}

/// Applies an RFC 6902 JSON patch.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| PatchError::Invalid(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &patch).map_err(|e| PatchError::Invalid(e.to_string()))
}

/// Applies an RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// The merge key of a list field in built-in kinds, if it merges by key.
/// `ports` is decided by what its elements carry.
pub fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if sample.is_some_and(|s| s.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// How server-side apply treats a list field of a built-in kind, as
/// upstream's `x-kubernetes-list-type` says: keyed (`map`, with its
/// `x-kubernetes-list-map-keys`), `set`, or `atomic` (replaced whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListType {
    Map(&'static [&'static str]),
    Set,
    Atomic,
}

/// The list type of `field` (`sample` is one of its elements). Mostly the
/// strategic merge key; apply keys some lists by more fields than SMP does.
pub fn list_type(field: &str, sample: Option<&Value>) -> ListType {
    if merges_as_set(field) {
        return ListType::Set;
    }
    match (field, merge_key(field, sample)) {
        ("ports", Some("containerPort")) => ListType::Map(&["containerPort", "protocol"]),
        ("ports", _) => ListType::Map(&["port", "protocol"]),
        ("topologySpreadConstraints", _) => ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
        (_, Some("name")) => ListType::Map(&["name"]),
        (_, Some("mountPath")) => ListType::Map(&["mountPath"]),
        (_, Some("devicePath")) => ListType::Map(&["devicePath"]),
        (_, Some("type")) => ListType::Map(&["type"]),
        (_, Some("uid")) => ListType::Map(&["uid"]),
        (_, Some("ip")) => ListType::Map(&["ip"]),
        _ => ListType::Atomic,
    }
}

/// The schema default of a list-map key that elements may leave out.
pub fn list_key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| Value::String("TCP".into()))
}

/// Primitive lists that merge as sets rather than being replaced.
fn merges_as_set(field: &str) -> bool {
    field == "finalizers"
}

const DIRECTIVE_PATCH: &str = "$patch";
const DIRECTIVE_RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to `target`.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => merge_map(t, p),
        (_, Some(p)) => {
            let mut fresh = Map::new();
            merge_map(&mut fresh, p)?;
            *target = Value::Object(fresh);
            Ok(())
        }
        _ => Err(PatchError::Invalid("a strategic merge patch must be a JSON object".into())),
    }
}

fn merge_map(target: &mut Map<String, Value>, patch: &Map<String, Value>) -> Result<(), PatchError> {
    match patch.get(DIRECTIVE_PATCH).and_then(Value::as_str) {
        Some("replace") => {
            *target = strip_directives(patch);
            return Ok(());
        }
        Some("delete") => {
            target.clear();
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(PatchError::Invalid(format!("unknown patch type: {other}"))),
    }
    if let Some(retain) = patch.get(DIRECTIVE_RETAIN_KEYS).and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, pv) in patch {
        if key == DIRECTIVE_PATCH || key == DIRECTIVE_RETAIN_KEYS || key.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            if let (Some(Value::Array(list)), Some(remove)) = (target.get_mut(field), pv.as_array()) {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if pv.is_null() {
            target.remove(key);
            continue;
        }
        match (target.get_mut(key), pv) {
            (Some(Value::Object(tm)), Value::Object(pm)) => merge_map(tm, pm)?,
            (Some(Value::Array(tl)), Value::Array(pl)) => {
                let order = patch.get(&format!("{SET_ELEMENT_ORDER}{key}")).and_then(Value::as_array);
                merge_list(key, tl, pl, order)?;
            }
            (_, Value::Object(pm)) => {
                let mut fresh = Map::new();
                merge_map(&mut fresh, pm)?;
                target.insert(key.clone(), Value::Object(fresh));
            }
            (_, Value::Array(pl)) => {
                let cleaned: Vec<Value> = pl
                    .iter()
                    .filter(|v| v.get(DIRECTIVE_PATCH).and_then(Value::as_str) != Some("delete"))
                    .map(strip_value)
                    .collect();
                target.insert(key.clone(), Value::Array(cleaned));
            }
            (_, other) => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
    Ok(())
}

fn merge_list(
    field: &str,
    target: &mut Vec<Value>,
    patch: &[Value],
    order: Option<&Vec<Value>>,
) -> Result<(), PatchError> {
    // `[{"$patch": "replace"}, …]` replaces the whole list.
    if patch.iter().any(|v| v.get(DIRECTIVE_PATCH).and_then(Value::as_str) == Some("replace")) {
        *target = patch
            .iter()
            .filter(|v| v.get(DIRECTIVE_PATCH).and_then(Value::as_str) != Some("replace"))
            .map(strip_value)
            .collect();
        return Ok(());
    }
    let sample = patch.first().or(target.first());
    let Some(key) = merge_key(field, sample) else {
        if merges_as_set(field) {
            for v in patch {
                if !target.contains(v) {
                    target.push(v.clone());
                }
            }
        } else {
            *target = patch.iter().map(strip_value).collect();
        }
        return Ok(());
    };
    for pv in patch {
        let Some(pm) = pv.as_object() else {
            return Err(PatchError::Invalid(format!("list {field} merges by {key}, but an element is not an object")));
        };
        let Some(kv) = pm.get(key) else {
            return Err(PatchError::Invalid(format!("map: {pv} does not contain declared merge key: {key}")));
        };
        let existing = target.iter().position(|t| t.get(key) == Some(kv));
        let delete = pm.get(DIRECTIVE_PATCH).and_then(Value::as_str) == Some("delete");
        match (existing, delete) {
            (Some(i), true) => {
                target.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                if let Some(tm) = target[i].as_object_mut() {
                    merge_map(tm, pm)?;
                }
            }
            (None, false) => target.push(strip_value(pv)),
        }
    }
    if let Some(order) = order {
        // Elements named in the order come first, in that order; the rest keep theirs.
        let pos = |v: &Value| order.iter().position(|o| o.get(key) == v.get(key)).unwrap_or(usize::MAX);
        target.sort_by_key(pos);
    }
    Ok(())
}

fn strip_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_directives(m)),
        Value::Array(a) => Value::Array(a.iter().map(strip_value).collect()),
        other => other.clone(),
    }
}

fn strip_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| {
            !(k.as_str() == DIRECTIVE_PATCH
                || k.as_str() == DIRECTIVE_RETAIN_KEYS
                || k.starts_with(SET_ELEMENT_ORDER)
                || k.starts_with(DELETE_FROM_PRIMITIVE_LIST))
        })
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), strip_value(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_image_patch_merges_containers_by_name() {
        let mut deploy = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}, {"name": "side"}],
            "containers": [{"image": "nginx:1.26", "name": "nginx"}]
        }}}});
        strategic_merge_patch(&mut deploy, &patch).expect("applies");
        let containers = &deploy["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:1.26");
        assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
        assert_eq!(containers[1]["name"], "side");
    }

    #[test]
    fn null_deletes_and_patch_delete_removes_list_elements() {
        let mut obj =
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"env": [{"name": "X"}, {"name": "Y"}]}});
        let patch = json!({"metadata": {"labels": {"a": null}}, "spec": {"env": [{"name": "X", "$patch": "delete"}]}});
        strategic_merge_patch(&mut obj, &patch).expect("applies");
        assert_eq!(obj["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(obj["spec"]["env"], json!([{"name": "Y"}]));
    }

    #[test]
    fn lists_without_merge_key_are_replaced() {
        let mut obj = json!({"spec": {"args": ["a", "b"]}});
        strategic_merge_patch(&mut obj, &json!({"spec": {"args": ["c"]}})).expect("applies");
        assert_eq!(obj["spec"]["args"], json!(["c"]));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let mut svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
        strategic_merge_patch(&mut svc, &json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}}))
            .expect("applies");
        assert_eq!(svc["spec"]["ports"], json!([{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443}]));
    }

    #[test]
    fn json_and_merge_patches_work() {
        let mut obj = json!({"metadata": {"resourceVersion": "5"}});
        json_patch(&mut obj, &json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "5"}, {"op": "add", "path": "/spec", "value": {"a": 1}}])).expect("applies");
        assert_eq!(obj["spec"]["a"], 1);
        assert!(json_patch(&mut obj, &json!([{"op": "test", "path": "/spec/a", "value": 2}])).is_err());
        merge_patch(&mut obj, &json!({"spec": {"a": null, "b": 2}}));
        assert_eq!(obj["spec"], json!({"b": 2}));
    }

    #[test]
    fn content_types_map_to_patch_types() {
        assert_eq!(PatchType::from_content_type("application/merge-patch+json"), Ok(PatchType::Merge));
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
            Ok(PatchType::StrategicMerge)
        );
        assert!(PatchType::from_content_type("text/plain").is_err());
    }
}
