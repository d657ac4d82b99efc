//! Defaulting, as upstream's `SetDefaults_*` functions do it, on JSON objects.
//! Runs on create and update before validation.

use serde_json::{Map, Value, json};

/// Sets `obj[path…]` to `value` unless something is already there.
fn default(obj: &mut Value, path: &[&str], value: Value) {
    let mut cur = obj;
    for (i, part) in path.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Some(map) = cur.as_object_mut() else { return };
        if i + 1 == path.len() {
            let slot = map.entry(*part).or_insert(Value::Null);
            if slot.is_null() {
                *slot = value;
            }
            return;
        }
        cur = map.entry(*part).or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Applies the defaults of `kind` (group and version are those of the registry).
pub fn apply(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Pod") => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec);
            }
            pod_tolerations(obj);
        }
        ("", "Service") => service(obj),
        ("", "Secret") => default(obj, &["type"], json!("Opaque")),
        ("apps", "Deployment") => {
            default(obj, &["spec", "replicas"], json!(1));
            default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            default(obj, &["spec", "progressDeadlineSeconds"], json!(600));
            let strategy_type = obj.pointer("/spec/strategy/type").and_then(Value::as_str).map(str::to_owned);
            match strategy_type.as_deref() {
                None | Some("RollingUpdate") => {
                    default(obj, &["spec", "strategy", "type"], json!("RollingUpdate"));
                    default(obj, &["spec", "strategy", "rollingUpdate", "maxUnavailable"], json!("25%"));
                    default(obj, &["spec", "strategy", "rollingUpdate", "maxSurge"], json!("25%"));
                }
                _ => {}
            }
            template(obj);
        }
        ("apps", "ReplicaSet") => {
            default(obj, &["spec", "replicas"], json!(1));
            template(obj);
        }
        ("apps", "StatefulSet") => {
            default(obj, &["spec", "replicas"], json!(1));
            default(obj, &["spec", "podManagementPolicy"], json!("OrderedReady"));
            default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            default(obj, &["spec", "updateStrategy", "type"], json!("RollingUpdate"));
            if obj.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                default(obj, &["spec", "updateStrategy", "rollingUpdate", "partition"], json!(0));
            }
            default(obj, &["spec", "persistentVolumeClaimRetentionPolicy", "whenDeleted"], json!("Retain"));
            default(obj, &["spec", "persistentVolumeClaimRetentionPolicy", "whenScaled"], json!("Retain"));
            template(obj);
        }
        ("apps", "DaemonSet") => {
            default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            default(obj, &["spec", "updateStrategy", "type"], json!("RollingUpdate"));
            if obj.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                default(obj, &["spec", "updateStrategy", "rollingUpdate", "maxUnavailable"], json!(1));
                default(obj, &["spec", "updateStrategy", "rollingUpdate", "maxSurge"], json!(0));
            }
            template(obj);
        }
        ("batch", "Job") => job_spec(obj.get_mut("spec")),
        ("batch", "CronJob") => {
            default(obj, &["spec", "concurrencyPolicy"], json!("Allow"));
            default(obj, &["spec", "suspend"], json!(false));
            default(obj, &["spec", "successfulJobsHistoryLimit"], json!(3));
            default(obj, &["spec", "failedJobsHistoryLimit"], json!(1));
            if let Some(job) = obj.pointer_mut("/spec/jobTemplate/spec") {
                job_spec(Some(job));
            }
        }
        _ => {}
    }
}

fn template(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        pod_spec(spec);
    }
}

fn job_spec(spec: Option<&mut Value>) {
    let Some(spec) = spec else { return };
    if spec.get("completions").is_none_or(Value::is_null) && spec.get("parallelism").is_none_or(Value::is_null) {
        default(spec, &["completions"], json!(1));
    }
    default(spec, &["parallelism"], json!(1));
    default(spec, &["backoffLimit"], json!(6));
    default(spec, &["completionMode"], json!("NonIndexed"));
    default(spec, &["suspend"], json!(false));
    default(spec, &["podReplacementPolicy"], json!("TerminatingOrFailed"));
    default(spec, &["manualSelector"], Value::Null);
    if let Some(pod) = spec.pointer_mut("/template/spec") {
        pod_spec(pod);
    }
}

/// Pod spec defaults (also inside templates).
pub fn pod_spec(spec: &mut Value) {
    default(spec, &["restartPolicy"], json!("Always"));
    default(spec, &["terminationGracePeriodSeconds"], json!(30));
    default(spec, &["dnsPolicy"], json!("ClusterFirst"));
    default(spec, &["securityContext"], json!({}));
    default(spec, &["schedulerName"], json!("default-scheduler"));
    default(spec, &["enableServiceLinks"], json!(true));
    for list in ["initContainers", "containers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers {
                container(c);
            }
        }
    }
}

fn container(c: &mut Value) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default().to_owned();
    let policy = if image_tag_is_latest(&image) { "Always" } else { "IfNotPresent" };
    default(c, &["imagePullPolicy"], json!(policy));
    default(c, &["terminationMessagePath"], json!("/dev/termination-log"));
    default(c, &["terminationMessagePolicy"], json!("File"));
    default(c, &["resources"], json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            default(p, &["protocol"], json!("TCP"));
        }
    }
}

/// `nginx`, `nginx:latest` → true; `nginx:1.25`, `img@sha256:…` → false.
fn image_tag_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => true,
        Some((_, tag)) => tag == "latest",
    }
}

/// The DefaultTolerationSeconds admission plugin: 300 s for not-ready and
/// unreachable nodes unless the pod says otherwise.
fn pod_tolerations(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else { return };
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let present = list.iter().any(|t| {
            t.get("key").and_then(Value::as_str) == Some(key)
                || (t.get("operator").and_then(Value::as_str) == Some("Exists") && t.get("key").is_none())
        });
        if !present {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

fn service(svc: &mut Value) {
    default(svc, &["spec", "type"], json!("ClusterIP"));
    default(svc, &["spec", "sessionAffinity"], json!("None"));
    let ty = svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_owned();
    if ty == "ExternalName" {
        return;
    }
    default(svc, &["spec", "internalTrafficPolicy"], json!("Cluster"));
    if ty == "NodePort" || ty == "LoadBalancer" {
        default(svc, &["spec", "externalTrafficPolicy"], json!("Cluster"));
    }
    if svc.pointer("/spec/sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        default(svc, &["spec", "sessionAffinityConfig", "clientIP", "timeoutSeconds"], json!(10800));
    }
    if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports {
            default(p, &["protocol"], json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                default(p, &["targetPort"], port);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_gets_upstream_defaults() {
        let mut d = json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}}});
        apply("apps", "Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    }

    #[test]
    fn latest_images_are_always_pulled() {
        assert!(image_tag_is_latest("nginx"));
        assert!(image_tag_is_latest("registry:5000/nginx"));
        assert!(!image_tag_is_latest("registry:5000/nginx:1.2"));
        assert!(!image_tag_is_latest("nginx@sha256:abc"));
    }

    #[test]
    fn service_ports_default_target_port_and_protocol() {
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply("", "Service", &mut s);
        assert_eq!(s["spec"]["ports"][0], json!({"port": 80, "protocol": "TCP", "targetPort": 80}));
        assert_eq!(s["spec"]["type"], "ClusterIP");
    }

    #[test]
    fn pods_tolerate_unready_nodes_for_five_minutes() {
        let mut p = json!({"spec": {"containers": []}});
        apply("", "Pod", &mut p);
        assert_eq!(p["spec"]["tolerations"].as_array().map(Vec::len), Some(2));
    }
}
