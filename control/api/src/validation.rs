//! Validation answered with 422 Invalid and its causes, as upstream's
//! `ValidateX` functions report them. Covers names, required fields and the
//! cross-field rules users hit most; not yet every rule upstream has.

use serde_json::Value;

use crate::meta;
use crate::selector::{LabelSelector, labels_of};
use crate::status::Cause;

fn required(field: impl Into<String>) -> Cause {
    Cause { reason: "FieldValueRequired".into(), message: "Required value".into(), field: field.into() }
}

fn invalid(field: impl Into<String>, value: &Value, why: &str) -> Cause {
    Cause { reason: "FieldValueInvalid".into(), message: format!("Invalid value: {value}: {why}"), field: field.into() }
}

fn forbidden(field: impl Into<String>, why: &str) -> Cause {
    Cause { reason: "FieldValueForbidden".into(), message: format!("Forbidden: {why}"), field: field.into() }
}

/// Validates an object about to be created (or the new state of an update).
pub fn validate(group: &str, kind: &str, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = meta::name(obj).unwrap_or_default();
    let name_check = match kind {
        "Namespace" | "Service" => meta::validate_dns_label(name),
        _ => meta::validate_dns_subdomain(name),
    };
    if let Err(msg) = name_check {
        causes.push(Cause { reason: "FieldValueInvalid".into(), message: msg, field: "metadata.name".into() });
    }
    for (k, v) in labels_of(obj) {
        if crate::selector::validate_key(&k).is_err() {
            causes.push(invalid(
                "metadata.labels",
                &Value::String(k.clone()),
                "name part must consist of alphanumeric characters, '-', '_' or '.'",
            ));
        }
        if crate::selector::validate_value(&v).is_err() {
            causes.push(invalid(
                "metadata.labels",
                &Value::String(v),
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'",
            ));
        }
    }
    match (group, kind) {
        ("", "Pod") => pod_spec(obj.get("spec"), "spec", &mut causes),
        ("", "Service") => service(obj, &mut causes),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => workload(obj, &mut causes),
        ("batch", "Job") => {
            if let Some(t) = obj.pointer("/spec/template") {
                pod_spec(t.get("spec"), "spec.template.spec", &mut causes);
            } else {
                causes.push(required("spec.template"));
            }
        }
        _ => {}
    }
    causes
}

fn pod_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let containers = spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        causes.push(required(format!("{path}.containers")));
        return;
    };
    let mut names = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            causes.push(required(format!("{path}.containers[{i}].name")));
        } else if meta::validate_dns_label(name).is_err() {
            causes.push(invalid(
                format!("{path}.containers[{i}].name"),
                &Value::String(name.into()),
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
            ));
        } else if names.contains(&name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate".into(),
                message: format!("Duplicate value: \"{name}\""),
                field: format!("{path}.containers[{i}].name"),
            });
        }
        names.push(name);
        if c.get("image").and_then(Value::as_str).unwrap_or_default().trim().is_empty() {
            causes.push(required(format!("{path}.containers[{i}].image")));
        }
        if let Some(ports) = c.get("ports").and_then(Value::as_array) {
            for (j, p) in ports.iter().enumerate() {
                let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    causes.push(invalid(
                        format!("{path}.containers[{i}].ports[{j}].containerPort"),
                        p.get("containerPort").unwrap_or(&Value::Null),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
}

fn service(svc: &Value, causes: &mut Vec<Cause>) {
    let ty = svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!("Unsupported value: \"{ty}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
            field: "spec.type".into(),
        });
        return;
    }
    if ty == "ExternalName" {
        if svc.pointer("/spec/externalName").and_then(Value::as_str).unwrap_or_default().is_empty() {
            causes.push(required("spec.externalName"));
        }
        return;
    }
    let headless = svc.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let ports = svc.pointer("/spec/ports").and_then(Value::as_array);
    match ports {
        None if !headless => causes.push(required("spec.ports")),
        Some(p) if p.is_empty() && !headless => causes.push(required("spec.ports")),
        _ => {}
    }
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            causes.push(invalid(
                format!("spec.ports[{i}].port"),
                p.get("port").unwrap_or(&Value::Null),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if ports.is_some_and(|all| all.len() > 1)
            && p.get("name").and_then(Value::as_str).unwrap_or_default().is_empty()
        {
            causes.push(required(format!("spec.ports[{i}].name")));
        }
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            causes.push(invalid(
                format!("spec.ports[{i}].protocol"),
                &Value::String(proto.into()),
                "supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ));
        }
    }
}

fn workload(obj: &Value, causes: &mut Vec<Cause>) {
    if let Some(replicas) = obj.pointer("/spec/replicas").and_then(Value::as_i64)
        && replicas < 0
    {
        causes.push(invalid("spec.replicas", &Value::from(replicas), "must be greater than or equal to 0"));
    }
    let Some(selector) = obj.pointer("/spec/selector").filter(|s| !s.is_null()) else {
        causes.push(required("spec.selector"));
        return;
    };
    let parsed = LabelSelector::from_object(selector);
    match parsed {
        Ok(s) if s.is_empty() => {
            causes.push(invalid("spec.selector", selector, "empty selector is invalid for deployment"))
        }
        Ok(s) => {
            let template_labels = obj.pointer("/spec/template/metadata/labels").cloned().unwrap_or(Value::Null);
            let wrapped = serde_json::json!({"metadata": {"labels": template_labels}});
            if !s.matches_object(&wrapped) {
                causes.push(invalid(
                    "spec.template.metadata.labels",
                    &template_labels,
                    "`selector` does not match template `labels`",
                ));
            }
        }
        Err(e) => causes.push(invalid("spec.selector", selector, &e.to_string())),
    }
    match obj.pointer("/spec/template") {
        Some(t) => pod_spec(t.get("spec"), "spec.template.spec", causes),
        None => causes.push(required("spec.template")),
    }
}

/// Checks fields that may not change on update.
pub fn validate_update(group: &str, kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match (group, kind) {
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
            if old.pointer("/spec/selector") != new.pointer("/spec/selector") =>
        {
            causes.push(invalid(
                "spec.selector",
                new.pointer("/spec/selector").unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
        ("", "Service") => {
            let (o, n) = (old.pointer("/spec/clusterIP"), new.pointer("/spec/clusterIP"));
            if o.is_some() && n.is_some() && o != n {
                causes.push(invalid("spec.clusterIP", n.unwrap_or(&Value::Null), "field is immutable"));
            }
        }
        ("", "Pod") => {
            let strip = |spec: Option<&Value>| {
                let mut s = spec.cloned().unwrap_or(Value::Null);
                for list in ["containers", "initContainers"] {
                    if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
                        for c in cs {
                            if let Some(m) = c.as_object_mut() {
                                m.remove("image");
                            }
                        }
                    }
                }
                if let Some(m) = s.as_object_mut() {
                    m.remove("activeDeadlineSeconds");
                    m.remove("tolerations");
                    m.remove("terminationGracePeriodSeconds");
                    // Binding sets the node name once.
                    if old.pointer("/spec/nodeName").is_none_or(|v| v.as_str().unwrap_or_default().is_empty()) {
                        m.remove("nodeName");
                    }
                }
                s
            };
            if strip(old.get("spec")) != strip(new.get("spec")) {
                causes.push(forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
            }
        }
        _ => {}
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_without_image_is_invalid_where_upstream_says() {
        let pod = json!({"metadata": {"name": "bad"}, "spec": {"containers": [{"name": "c"}]}});
        let causes = validate("", "Pod", &pod);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.containers[0].image");
        assert_eq!(causes[0].message, "Required value");
    }

    #[test]
    fn a_deployment_whose_selector_misses_its_template_is_invalid() {
        let d = json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let causes = validate("apps", "Deployment", &d);
        assert!(causes.iter().any(|c| c.field == "spec.template.metadata.labels"), "{causes:?}");
    }

    #[test]
    fn bad_names_are_rejected() {
        let causes = validate("", "ConfigMap", &json!({"metadata": {"name": "Bad_Name"}}));
        assert_eq!(causes[0].field, "metadata.name");
    }

    #[test]
    fn selectors_are_immutable() {
        let old = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}}});
        let new = json!({"spec": {"selector": {"matchLabels": {"a": "2"}}}});
        assert_eq!(validate_update("apps", "Deployment", &old, &new).len(), 1);
    }
}
