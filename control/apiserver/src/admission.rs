//! What happens to an object between the request and the store: metadata
//! the server owns, defaulting, validation, and status rules.

use serde_json::{Value, json};
use waggle_api::{ResourceInfo, StatusError, defaults, meta, validation};

/// Now, as upstream writes timestamps (RFC 3339, seconds, `Z`).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Random suffix for `generateName`, from upstream's alphabet (no vowels,
/// no look-alikes).
pub fn generate_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes().iter().take(5).map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

/// Everything but metadata and status: what `generation` tracks.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

/// The initial status of a new object, as upstream's PrepareForCreate sets it.
fn initial_status(r: &ResourceInfo, obj: &mut Value) {
    match (r.group, r.kind) {
        ("", "Namespace") => obj["status"] = json!({"phase": "Active"}),
        ("", "Pod") => {
            let qos = qos_class(obj);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        ("", "Service") => obj["status"] = json!({"loadBalancer": {}}),
        ("", "PersistentVolume" | "PersistentVolumeClaim") => obj["status"] = json!({"phase": "Pending"}),
        ("", "Node") => {}
        _ if r.has_status_subresource() => {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        _ => {}
    }
}

/// BestEffort, Burstable or Guaranteed, from the containers' resources.
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| pod.pointer(&format!("/spec/{l}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(res));
            let r = req.and_then(|m| m.get(res)).or(l);
            if l.is_none() || r != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// `metadata`, `spec` and `status` must be objects when present: everything
/// after this relies on it (and bad input must never reach a panic).
fn check_shape(r: &ResourceInfo, obj: &Value) -> Result<(), StatusError> {
    if !obj.is_object() {
        return Err(StatusError::bad_request(format!("the {} must be a JSON object, not {obj}", r.kind)));
    }
    for field in ["metadata", "spec", "status"] {
        if let Some(v) = obj.get(field)
            && !(v.is_object() || v.is_null())
        {
            let name = meta::name(obj).unwrap_or_default();
            return Err(StatusError::invalid(
                r,
                name,
                vec![waggle_api::status::Cause {
                    reason: "FieldValueTypeInvalid".into(),
                    message: format!("Invalid value: {v}: must be an object"),
                    field: field.into(),
                }],
            ));
        }
    }
    Ok(())
}

/// Prepares a new object: server-owned metadata, defaults, status, validation.
pub fn prepare_create(r: &ResourceInfo, obj: &mut Value) -> Result<(), StatusError> {
    check_shape(r, obj)?;
    obj["apiVersion"] = json!(r.api_version());
    obj["kind"] = json!(r.kind);
    let name = meta::name(obj).unwrap_or_default().to_owned();
    {
        let m = meta::metadata_mut(obj);
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.insert("generation".into(), json!(1));
        for server_owned in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            m.remove(server_owned);
        }
        if !r.namespaced() {
            m.remove("namespace");
        }
    }
    if r.kind == "Namespace" && r.group.is_empty() {
        let m = meta::metadata_mut(obj);
        let labels = m.entry("labels").or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
        // The namespace controller's finalizer: set on create only, so that
        // removing it through `finalize` sticks.
        if obj.pointer("/spec/finalizers").is_none_or(Value::is_null) {
            obj["spec"]["finalizers"] = json!(["kubernetes"]);
        }
    }
    defaults::apply(r.group, r.kind, obj);
    initial_status(r, obj);
    let causes = validation::validate(r.group, r.kind, obj);
    if !causes.is_empty() {
        return Err(StatusError::invalid(r, &name, causes));
    }
    Ok(())
}

/// The PriorityClasses every cluster has (upstream's apiserver creates them).
const SYSTEM_PRIORITY_CLASSES: &[(&str, i64)] =
    &[("system-node-critical", 2_000_001_000), ("system-cluster-critical", 2_000_000_000)];

/// Upstream's Priority admission plugin, for a new pod: resolves
/// `spec.priorityClassName` (or the globalDefault class) to `spec.priority`
/// and `spec.preemptionPolicy`. `classes` are the stored PriorityClasses.
/// A named class that does not exist, or a priority that disagrees with
/// the class, is Forbidden.
pub fn resolve_pod_priority(pod: &mut Value, classes: &[Value]) -> Result<(), StatusError> {
    let name = meta::name(pod).unwrap_or_default().to_owned();
    let forbidden =
        |why: String| StatusError::new(waggle_api::Reason::Forbidden, format!("pods \"{name}\" is forbidden: {why}"));
    let wanted = pod.pointer("/spec/priorityClassName").and_then(Value::as_str).unwrap_or_default().to_owned();
    let class_of = |c: &Value| -> (String, i64, String) {
        (
            meta::name(c).unwrap_or_default().to_owned(),
            c.get("value").and_then(Value::as_i64).unwrap_or(0),
            c.get("preemptionPolicy").and_then(Value::as_str).unwrap_or("PreemptLowerPriority").to_owned(),
        )
    };
    let resolved = if wanted.is_empty() {
        // The globalDefault class with the lowest value, if any (upstream).
        classes
            .iter()
            .filter(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
            .map(class_of)
            .min_by_key(|(_, v, _)| *v)
    } else {
        match classes.iter().find(|c| meta::name(c) == Some(wanted.as_str())) {
            Some(c) => Some(class_of(c)),
            None => match SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _)| *n == wanted) {
                Some((n, v)) => Some(((*n).to_owned(), *v, "PreemptLowerPriority".to_owned())),
                None => return Err(forbidden(format!("no PriorityClass with name {wanted} was found"))),
            },
        }
    };
    let (class, value, policy) = resolved.unwrap_or_else(|| (String::new(), 0, "PreemptLowerPriority".into()));
    if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64)
        && given != value
    {
        return Err(forbidden(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission \
             controller computed {value} from the given PriorityClass name"
        )));
    }
    if let Some(given) = pod.pointer("/spec/preemptionPolicy").and_then(Value::as_str).filter(|p| !p.is_empty())
        && !class.is_empty()
        && given != policy
    {
        return Err(forbidden(format!(
            "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission \
             controller computed {policy} from the given PriorityClass name"
        )));
    }
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        if !class.is_empty() {
            spec.insert("priorityClassName".into(), json!(class));
        }
        spec.insert("priority".into(), json!(value));
        spec.entry("preemptionPolicy").or_insert_with(|| json!(policy));
    }
    Ok(())
}

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePart {
    /// The main resource: everything but status (when there is a status subresource).
    Main,
    /// The status subresource: only status.
    Status,
}

/// Merges a write into the current object: server-owned metadata is kept,
/// status or the rest is kept depending on `part`, generation follows spec.
pub fn prepare_update(
    r: &ResourceInfo,
    current: &Value,
    mut new: Value,
    part: WritePart,
) -> Result<Value, StatusError> {
    check_shape(r, &new)?;
    let name = meta::name(current).unwrap_or_default().to_owned();
    if part == WritePart::Status {
        let mut merged = current.clone();
        merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        return Ok(merged);
    }
    new["apiVersion"] = json!(r.api_version());
    new["kind"] = json!(r.kind);
    {
        let cur_meta = current.get("metadata").cloned().unwrap_or(Value::Null);
        let m = meta::metadata_mut(&mut new);
        for owned in
            ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "name"]
        {
            match cur_meta.get(owned) {
                Some(v) => {
                    m.insert(owned.into(), v.clone());
                }
                None => {
                    m.remove(owned);
                }
            }
        }
        m.insert("generation".into(), cur_meta.get("generation").cloned().unwrap_or(json!(1)));
    }
    if r.has_status_subresource() {
        match current.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if r.kind == "Namespace" && r.group.is_empty() {
        let m = meta::metadata_mut(&mut new);
        let labels = m.entry("labels").or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
    defaults::apply(r.group, r.kind, &mut new);
    if spec_part(&new) != spec_part(current) {
        let generation = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
        meta::set_meta(&mut new, "generation", Some(json!(generation)));
    }
    let mut causes = validation::validate(r.group, r.kind, &new);
    causes.extend(validation::validate_update(r.group, r.kind, current, &new));
    if !causes.is_empty() {
        return Err(StatusError::invalid(r, &name, causes));
    }
    Ok(new)
}

/// True when nothing but the resourceVersion differs: the write is a no-op.
/// (A change of ownership alone is a write, as upstream.)
pub fn unchanged(current: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(current) == strip(new)
}

#[cfg(test)]
mod priority_tests {
    use super::*;

    #[test]
    fn a_pods_priority_comes_from_its_class_or_the_global_default() {
        let classes = vec![
            json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"}),
            json!({"metadata": {"name": "default"}, "value": 5, "globalDefault": true}),
        ];
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "high"}});
        resolve_pod_priority(&mut pod, &classes).expect("admitted");
        assert_eq!(pod["spec"]["priority"], 1000);
        assert_eq!(pod["spec"]["preemptionPolicy"], "Never");
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {}});
        resolve_pod_priority(&mut pod, &classes).expect("admitted");
        assert_eq!(
            (pod["spec"]["priority"].clone(), pod["spec"]["priorityClassName"].clone()),
            (json!(5), json!("default"))
        );
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "system-node-critical"}});
        resolve_pod_priority(&mut pod, &[]).expect("admitted");
        assert_eq!(pod["spec"]["priority"], 2_000_001_000);
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {}});
        resolve_pod_priority(&mut pod, &[]).expect("admitted");
        assert_eq!(pod["spec"]["priority"], 0);
    }

    #[test]
    fn an_unknown_class_or_a_contradicting_priority_is_forbidden() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "nope"}});
        let e = resolve_pod_priority(&mut pod, &[]).expect_err("forbidden");
        assert_eq!(e.message, "pods \"p\" is forbidden: no PriorityClass with name nope was found");
        let classes = vec![json!({"metadata": {"name": "high"}, "value": 1000})];
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "high", "priority": 7}});
        assert!(resolve_pod_priority(&mut pod, &classes).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waggle_api::registry::lookup;

    #[test]
    fn create_sets_server_owned_metadata_and_defaults() {
        let deploy = lookup("apps", "v1", "deployments").expect("registered");
        let mut d = json!({"metadata": {"name": "web", "resourceVersion": "9"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}},
            "status": {"replicas": 9}});
        prepare_create(deploy, &mut d).expect("valid");
        assert_eq!(d["metadata"]["generation"], 1);
        assert!(d["metadata"]["uid"].is_string());
        assert!(d["metadata"].get("resourceVersion").is_none());
        assert!(d.get("status").is_none());
        assert_eq!(d["spec"]["replicas"], 1);
    }

    #[test]
    fn update_bumps_generation_only_when_spec_changes_and_keeps_status() {
        let deploy = lookup("apps", "v1", "deployments").expect("registered");
        let mut cur = json!({"metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}});
        prepare_create(deploy, &mut cur).expect("valid");
        cur["status"] = json!({"replicas": 1});
        let mut relabel = cur.clone();
        relabel["metadata"]["labels"] = json!({"x": "y"});
        relabel["status"] = json!({"replicas": 5});
        let out = prepare_update(deploy, &cur, relabel, WritePart::Main).expect("valid");
        assert_eq!(out["metadata"]["generation"], 1);
        assert_eq!(out["status"]["replicas"], 1, "status is the subresource's to change");
        let mut scaled = cur.clone();
        scaled["spec"]["replicas"] = json!(3);
        let out = prepare_update(deploy, &cur, scaled, WritePart::Main).expect("valid");
        assert_eq!(out["metadata"]["generation"], 2);
    }

    #[test]
    fn qos_follows_requests_and_limits() {
        assert_eq!(qos_class(&json!({"spec": {"containers": [{}]}})), "BestEffort");
        assert_eq!(
            qos_class(&json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}})),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}})),
            "Burstable"
        );
    }
}
