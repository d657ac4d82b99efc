//! Server-side printing: the `meta.k8s.io/v1` Table kubectl shows for
//! `kubectl get`, with upstream's columns for the common kinds.

use chrono_lite::age_since;
use serde_json::{Value, json};

/// One column definition.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    pub ty: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: u8,
}

const fn col(name: &'static str, priority: u8) -> Column {
    Column { name, ty: "string", format: "", description: "", priority }
}

const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    description: "Name must be unique within a namespace.",
    priority: 0,
};
const AGE: Column = Column {
    name: "Age",
    ty: "string",
    format: "",
    description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
    priority: 0,
};

/// The columns of `kind`.
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    match (group, kind) {
        ("", "Pod") => vec![
            NAME,
            col("Ready", 0),
            col("Status", 0),
            col("Restarts", 0),
            AGE,
            col("IP", 1),
            col("Node", 1),
            col("Nominated Node", 1),
            col("Readiness Gates", 1),
        ],
        ("", "Node") => vec![
            NAME,
            col("Status", 0),
            col("Roles", 0),
            AGE,
            col("Version", 0),
            col("Internal-IP", 1),
            col("External-IP", 1),
            col("OS-Image", 1),
            col("Kernel-Version", 1),
            col("Container-Runtime", 1),
        ],
        ("", "Service") => vec![
            NAME,
            col("Type", 0),
            col("Cluster-IP", 0),
            col("External-IP", 0),
            col("Port(s)", 0),
            AGE,
            col("Selector", 1),
        ],
        ("", "Namespace") => vec![NAME, col("Status", 0), AGE],
        ("", "ConfigMap") => vec![NAME, col("Data", 0), AGE],
        ("", "Secret") => vec![NAME, col("Type", 0), col("Data", 0), AGE],
        ("", "ServiceAccount") => vec![NAME, col("Secrets", 0), AGE],
        ("", "Endpoints") => vec![NAME, col("Endpoints", 0), AGE],
        ("", "Event") => vec![
            col("Last Seen", 0),
            col("Type", 0),
            col("Reason", 0),
            col("Object", 0),
            col("Message", 0),
            col("Source", 1),
            col("First Seen", 1),
            col("Count", 1),
            col("Name", 1),
        ],
        ("apps", "Deployment") => vec![
            NAME,
            col("Ready", 0),
            col("Up-to-date", 0),
            col("Available", 0),
            AGE,
            col("Containers", 1),
            col("Images", 1),
            col("Selector", 1),
        ],
        ("apps", "ReplicaSet") => vec![
            NAME,
            col("Desired", 0),
            col("Current", 0),
            col("Ready", 0),
            AGE,
            col("Containers", 1),
            col("Images", 1),
            col("Selector", 1),
        ],
        ("apps", "StatefulSet") => vec![NAME, col("Ready", 0), AGE, col("Containers", 1), col("Images", 1)],
        ("apps", "ControllerRevision") => vec![NAME, col("Controller", 0), col("Revision", 0), AGE],
        ("apps", "DaemonSet") => vec![
            NAME,
            col("Desired", 0),
            col("Current", 0),
            col("Ready", 0),
            col("Up-to-date", 0),
            col("Available", 0),
            col("Node Selector", 0),
            AGE,
            col("Containers", 1),
            col("Images", 1),
            col("Selector", 1),
        ],
        ("batch", "Job") => vec![
            NAME,
            col("Status", 0),
            col("Completions", 0),
            col("Duration", 0),
            AGE,
            col("Containers", 1),
            col("Images", 1),
            col("Selector", 1),
        ],
        ("batch", "CronJob") => vec![
            NAME,
            col("Schedule", 0),
            col("Timezone", 0),
            col("Suspend", 0),
            col("Active", 0),
            col("Last Schedule", 0),
            AGE,
            col("Containers", 1),
            col("Images", 1),
            col("Selector", 1),
        ],
        ("coordination.k8s.io", "Lease") => vec![NAME, col("Holder", 0), AGE],
        ("networking.k8s.io", "Ingress") => {
            vec![NAME, col("Class", 0), col("Hosts", 0), col("Address", 0), col("Ports", 0), AGE]
        }
        ("networking.k8s.io", "NetworkPolicy") => vec![NAME, col("Pod-Selector", 0), AGE],
        ("", "PersistentVolume") => vec![
            NAME,
            col("Capacity", 0),
            col("Access Modes", 0),
            col("Reclaim Policy", 0),
            col("Status", 0),
            col("Claim", 0),
            col("StorageClass", 0),
            col("VolumeAttributesClass", 0),
            col("Reason", 0),
            AGE,
            col("VolumeMode", 1),
        ],
        ("", "PersistentVolumeClaim") => vec![
            NAME,
            col("Status", 0),
            col("Volume", 0),
            col("Capacity", 0),
            col("Access Modes", 0),
            col("StorageClass", 0),
            col("VolumeAttributesClass", 0),
            AGE,
            col("VolumeMode", 1),
        ],
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => vec![NAME, col("Created At", 0)],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            vec![NAME, col("Role", 0), AGE, col("Users", 1), col("Groups", 1), col("ServiceAccounts", 1)]
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            vec![NAME, col("Value", 0), col("Global-Default", 0), AGE, col("PreemptionPolicy", 0)]
        }
        ("autoscaling", "HorizontalPodAutoscaler") => vec![
            NAME,
            col("Reference", 0),
            col("Targets", 0),
            col("MinPods", 0),
            col("MaxPods", 0),
            col("Replicas", 0),
            AGE,
        ],
        ("discovery.k8s.io", "EndpointSlice") => {
            vec![NAME, col("AddressType", 0), col("Ports", 0), col("Endpoints", 0), AGE]
        }
        _ => vec![NAME, AGE],
    }
}

/// The column definitions as JSON.
pub fn column_definitions(group: &str, kind: &str) -> Vec<Value> {
    columns(group, kind)
        .iter()
        .map(|c| json!({"name": c.name, "type": c.ty, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect()
}

fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn n(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

/// The cells of one row for `obj`, at `now_unix` seconds.
pub fn cells(group: &str, kind: &str, obj: &Value, now_unix: i64) -> Vec<Value> {
    let name = s(obj.pointer("/metadata/name"));
    let age = age_since(obj.pointer("/metadata/creationTimestamp").and_then(Value::as_str), now_unix);
    let strs: Vec<String> = match (group, kind) {
        ("", "Pod") => pod_cells(obj, name, age),
        ("", "Node") => {
            let ready = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map(|c| if c["status"] == "True" { "Ready" } else { "NotReady" })
                .unwrap_or("Unknown");
            let mut status = ready.to_owned();
            if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/")).map(str::to_owned).collect()
                })
                .unwrap_or_default();
            let addr = |t: &str| {
                obj.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|x| x["type"] == t))
                    .map(|x| s(x.get("address")))
                    .unwrap_or_default()
            };
            let info = |f: &str| s(obj.pointer(&format!("/status/nodeInfo/{f}")));
            vec![
                name,
                status,
                or_none(roles.join(",")),
                age,
                info("kubeletVersion"),
                or_none(addr("InternalIP")),
                or_none(addr("ExternalIP")),
                or_none(info("osImage")),
                or_none(info("kernelVersion")),
                or_none(info("containerRuntimeVersion")),
            ]
        }
        ("", "Service") => {
            let ports: Vec<String> = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let proto = s(p.get("protocol"));
                            match p.get("nodePort").and_then(Value::as_i64) {
                                Some(np) => format!("{}:{np}/{proto}", n(p.get("port"))),
                                None => format!("{}/{proto}", n(p.get("port"))),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut external: Vec<String> = obj
                .pointer("/spec/externalIPs")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|v| s(Some(v))).collect())
                .unwrap_or_default();
            if let Some(ing) = obj.pointer("/status/loadBalancer/ingress").and_then(Value::as_array) {
                external.extend(ing.iter().map(|i| s(i.get("ip").or(i.get("hostname")))));
            }
            let ty = s(obj.pointer("/spec/type"));
            let ext = if !external.is_empty() {
                external.join(",")
            } else if ty == "LoadBalancer" {
                "<pending>".into()
            } else if ty == "ExternalName" {
                s(obj.pointer("/spec/externalName"))
            } else {
                "<none>".into()
            };
            let selector = obj
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(Some(v)))).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            vec![
                name,
                ty,
                or_none(s(obj.pointer("/spec/clusterIP"))),
                ext,
                or_none(ports.join(",")),
                age,
                or_none(selector),
            ]
        }
        ("", "Namespace") => vec![name, s(obj.pointer("/status/phase")), age],
        ("", "ConfigMap") => {
            let count = obj.get("data").and_then(Value::as_object).map_or(0, |m| m.len())
                + obj.get("binaryData").and_then(Value::as_object).map_or(0, |m| m.len());
            vec![name, count.to_string(), age]
        }
        ("", "Secret") => {
            let count = obj.get("data").and_then(Value::as_object).map_or(0, |m| m.len());
            vec![name, s(obj.get("type")), count.to_string(), age]
        }
        ("", "ServiceAccount") => {
            let count = obj.get("secrets").and_then(Value::as_array).map_or(0, |m| m.len());
            vec![name, count.to_string(), age]
        }
        ("", "Endpoints") => {
            let mut eps = Vec::new();
            for subset in obj.get("subsets").and_then(Value::as_array).into_iter().flatten() {
                for a in subset.get("addresses").and_then(Value::as_array).into_iter().flatten() {
                    for p in subset.get("ports").and_then(Value::as_array).into_iter().flatten() {
                        eps.push(format!("{}:{}", s(a.get("ip")), n(p.get("port"))));
                    }
                }
            }
            vec![name, or_none(eps.join(",")), age]
        }
        ("", "Event") => {
            let last = obj.get("lastTimestamp").or(obj.get("eventTime")).and_then(Value::as_str);
            let first = obj.get("firstTimestamp").or(obj.get("eventTime")).and_then(Value::as_str);
            let involved = format!(
                "{}/{}",
                s(obj.pointer("/involvedObject/kind")).to_lowercase(),
                s(obj.pointer("/involvedObject/name"))
            );
            let source = or_none(s(obj.pointer("/source/component")));
            vec![
                age_since(last, now_unix),
                s(obj.get("type")),
                s(obj.get("reason")),
                involved,
                s(obj.get("message")),
                source,
                age_since(first, now_unix),
                n(obj.get("count")).max(1).to_string(),
                name,
            ]
        }
        ("apps", "Deployment") => {
            let (c, i) = containers_images(obj.pointer("/spec/template/spec"));
            vec![
                name,
                format!("{}/{}", n(obj.pointer("/status/readyReplicas")), n(obj.pointer("/spec/replicas"))),
                n(obj.pointer("/status/updatedReplicas")).to_string(),
                n(obj.pointer("/status/availableReplicas")).to_string(),
                age,
                c,
                i,
                selector_string(obj.pointer("/spec/selector")),
            ]
        }
        ("apps", "ReplicaSet") => {
            let (c, i) = containers_images(obj.pointer("/spec/template/spec"));
            vec![
                name,
                n(obj.pointer("/spec/replicas")).to_string(),
                n(obj.pointer("/status/replicas")).to_string(),
                n(obj.pointer("/status/readyReplicas")).to_string(),
                age,
                c,
                i,
                selector_string(obj.pointer("/spec/selector")),
            ]
        }
        ("apps", "StatefulSet") => {
            let (c, i) = containers_images(obj.pointer("/spec/template/spec"));
            vec![
                name,
                format!("{}/{}", n(obj.pointer("/status/readyReplicas")), n(obj.pointer("/spec/replicas"))),
                age,
                c,
                i,
            ]
        }
        ("apps", "ControllerRevision") => {
            // `statefulset.apps/web`: the controlling owner, as upstream prints it.
            let owner = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|o| o.iter().find(|o| o["controller"] == true))
                .map(|o| {
                    let kind = s(o.get("kind")).to_lowercase();
                    let group = s(o.get("apiVersion")).rsplit_once('/').map(|(g, _)| g.to_owned()).unwrap_or_default();
                    let name = s(o.get("name"));
                    if group.is_empty() { format!("{kind}/{name}") } else { format!("{kind}.{group}/{name}") }
                })
                .unwrap_or_default();
            vec![name, or_none(owner), n(obj.pointer("/revision")).to_string(), age]
        }
        ("apps", "DaemonSet") => {
            let (c, i) = containers_images(obj.pointer("/spec/template/spec"));
            let node_selector = obj
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(Some(v)))).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            vec![
                name,
                n(obj.pointer("/status/desiredNumberScheduled")).to_string(),
                n(obj.pointer("/status/currentNumberScheduled")).to_string(),
                n(obj.pointer("/status/numberReady")).to_string(),
                n(obj.pointer("/status/updatedNumberScheduled")).to_string(),
                n(obj.pointer("/status/numberAvailable")).to_string(),
                or_none(node_selector),
                age,
                c,
                i,
                selector_string(obj.pointer("/spec/selector")),
            ]
        }
        ("batch", "Job") => {
            let (c, i) = containers_images(obj.pointer("/spec/template/spec"));
            let succeeded = n(obj.pointer("/status/succeeded"));
            let completions = obj.pointer("/spec/completions").and_then(Value::as_i64);
            let status = job_status(obj);
            let comp = match completions {
                Some(c) => format!("{succeeded}/{c}"),
                None => format!("{succeeded}/1 of {}", n(obj.pointer("/spec/parallelism"))),
            };
            let start = obj.pointer("/status/startTime").and_then(Value::as_str).and_then(parse_rfc3339);
            let end = obj.pointer("/status/completionTime").and_then(Value::as_str).and_then(parse_rfc3339);
            let duration = match (start, end) {
                (Some(s), Some(e)) => human_duration(e - s),
                (Some(s), None) => human_duration(now_unix - s),
                _ => String::new(),
            };
            vec![name, status, comp, duration, age, c, i, selector_string(obj.pointer("/spec/selector"))]
        }
        ("batch", "CronJob") => {
            let active = obj.pointer("/status/active").and_then(Value::as_array).map_or(0, Vec::len);
            let last = obj.pointer("/status/lastScheduleTime").and_then(Value::as_str);
            let (c, i) = containers_images(obj.pointer("/spec/jobTemplate/spec/template/spec"));
            vec![
                name,
                s(obj.pointer("/spec/schedule")),
                or_none(s(obj.pointer("/spec/timeZone"))),
                // Upstream's printBoolPtr.
                match obj.pointer("/spec/suspend").and_then(Value::as_bool) {
                    Some(true) => "True".into(),
                    Some(false) => "False".into(),
                    None => "<unset>".into(),
                },
                active.to_string(),
                if last.is_some() { age_since(last, now_unix) } else { "<none>".into() },
                age,
                c,
                i,
                selector_string(obj.pointer("/spec/jobTemplate/spec/selector")),
            ]
        }
        ("coordination.k8s.io", "Lease") => vec![name, s(obj.pointer("/spec/holderIdentity")), age],
        ("networking.k8s.io", "Ingress") => ingress_cells(obj, name, age),
        ("networking.k8s.io", "NetworkPolicy") => vec![name, selector_string(obj.pointer("/spec/podSelector")), age],
        ("", "PersistentVolume") => {
            let claim = match obj.pointer("/spec/claimRef") {
                Some(c) if c.is_object() => format!("{}/{}", s(c.get("namespace")), s(c.get("name"))),
                _ => String::new(),
            };
            vec![
                name,
                s(obj.pointer("/spec/capacity/storage")),
                access_modes(obj.pointer("/spec/accessModes")),
                s(obj.pointer("/spec/persistentVolumeReclaimPolicy")),
                s(obj.pointer("/status/phase")),
                claim,
                s(obj.pointer("/spec/storageClassName")),
                or_unset(s(obj.pointer("/spec/volumeAttributesClassName"))),
                s(obj.pointer("/status/reason")),
                age,
                s(obj.pointer("/spec/volumeMode")),
            ]
        }
        ("", "PersistentVolumeClaim") => {
            let bound = s(obj.pointer("/status/phase")) == "Bound";
            let (capacity, modes) = if bound {
                (s(obj.pointer("/status/capacity/storage")), access_modes(obj.pointer("/status/accessModes")))
            } else {
                (String::new(), String::new())
            };
            vec![
                name,
                s(obj.pointer("/status/phase")),
                s(obj.pointer("/spec/volumeName")),
                capacity,
                modes,
                s(obj.pointer("/spec/storageClassName")),
                or_unset(s(obj.pointer("/spec/volumeAttributesClassName"))),
                age,
                s(obj.pointer("/spec/volumeMode")),
            ]
        }
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            vec![name, s(obj.pointer("/metadata/creationTimestamp"))]
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            let subjects = obj.get("subjects").and_then(Value::as_array);
            let of_kind = |kind: &str| -> String {
                subjects
                    .into_iter()
                    .flatten()
                    .filter(|x| s(x.get("kind")) == kind)
                    .map(|x| match (kind, x.get("namespace").and_then(Value::as_str)) {
                        ("ServiceAccount", Some(ns)) => format!("{ns}/{}", s(x.get("name"))),
                        _ => s(x.get("name")),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                name,
                format!("{}/{}", s(obj.pointer("/roleRef/kind")), s(obj.pointer("/roleRef/name"))),
                age,
                of_kind("User"),
                of_kind("Group"),
                of_kind("ServiceAccount"),
            ]
        }
        ("scheduling.k8s.io", "PriorityClass") => vec![
            name,
            n(obj.get("value")).to_string(),
            (obj.get("globalDefault").and_then(Value::as_bool) == Some(true)).to_string(),
            age,
            s(obj.get("preemptionPolicy")),
        ],
        ("autoscaling", "HorizontalPodAutoscaler") => vec![
            name,
            format!("{}/{}", s(obj.pointer("/spec/scaleTargetRef/kind")), s(obj.pointer("/spec/scaleTargetRef/name"))),
            hpa_targets(obj),
            obj.pointer("/spec/minReplicas").and_then(Value::as_i64).unwrap_or(1).to_string(),
            n(obj.pointer("/spec/maxReplicas")).to_string(),
            n(obj.pointer("/status/currentReplicas")).to_string(),
            age,
        ],
        ("discovery.k8s.io", "EndpointSlice") => {
            let ports: Vec<String> = obj
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| match p.get("port").and_then(Value::as_i64) {
                    Some(port) => port.to_string(),
                    None => "<unset>".into(),
                })
                .collect();
            let addresses: Vec<String> = obj
                .get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|e| e.get("addresses").and_then(Value::as_array).into_iter().flatten())
                .map(|a| s(Some(a)))
                .collect();
            vec![
                name,
                s(obj.get("addressType")),
                if ports.is_empty() { "<unset>".into() } else { ports.join(",") },
                first_three(&addresses, ","),
                age,
            ]
        }
        _ => vec![name, age],
    };
    strs.into_iter().map(Value::String).collect()
}

fn or_unset(s: String) -> String {
    if s.is_empty() { "<unset>".into() } else { s }
}

/// Up to three items, then `+ N more...`, as upstream lists hosts and endpoints.
fn first_three(items: &[String], sep: &str) -> String {
    match items.len() {
        0 => "<none>".into(),
        1..=3 => items.join(sep),
        n => format!("{} + {} more...", items[..3].join(sep), n - 3),
    }
}

/// `RWO,ROX,RWX,RWOP`
fn access_modes(modes: Option<&Value>) -> String {
    let mut out: Vec<&str> = Vec::new();
    for m in modes.and_then(Value::as_array).into_iter().flatten() {
        let short = match m.as_str() {
            Some("ReadWriteOnce") => "RWO",
            Some("ReadOnlyMany") => "ROX",
            Some("ReadWriteMany") => "RWX",
            Some("ReadWriteOncePod") => "RWOP",
            _ => continue,
        };
        if !out.contains(&short) {
            out.push(short);
        }
    }
    out.join(",")
}

fn ingress_cells(obj: &Value, name: String, age: String) -> Vec<String> {
    let rules = obj.pointer("/spec/rules").and_then(Value::as_array);
    let hosts: Vec<String> =
        rules.into_iter().flatten().filter_map(|r| r.get("host").and_then(Value::as_str)).map(str::to_owned).collect();
    let hosts = if hosts.is_empty() { "*".into() } else { first_three(&hosts, ",") };
    let address: Vec<String> = obj
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|i| s(i.get("ip").or(i.get("hostname"))))
        .collect();
    let tls = obj.pointer("/spec/tls").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    vec![
        name,
        or_none(s(obj.pointer("/spec/ingressClassName"))),
        hosts,
        address.join(","),
        if tls { "80, 443".into() } else { "80".into() },
        age,
    ]
}

/// `cpu: 40%/80%`, `<unknown>` for metrics not measured yet.
fn hpa_targets(obj: &Value) -> String {
    let specs = obj.pointer("/spec/metrics").and_then(Value::as_array);
    let current = obj.pointer("/status/currentMetrics").and_then(Value::as_array);
    let mut out = Vec::new();
    for (i, m) in specs.into_iter().flatten().enumerate() {
        let cur = current.and_then(|c| c.get(i));
        if s(m.get("type")) == "Resource" {
            let res = s(m.pointer("/resource/name"));
            let target = m.pointer("/resource/target");
            let text = match target.and_then(|t| t.get("averageUtilization")).and_then(Value::as_i64) {
                Some(t) => {
                    let c = cur.and_then(|c| c.pointer("/resource/current/averageUtilization")).and_then(Value::as_i64);
                    format!("{}/{t}%", c.map_or("<unknown>".into(), |c| format!("{c}%")))
                }
                None => {
                    let t = s(target.and_then(|t| t.get("averageValue").or(t.get("value"))));
                    let c = s(cur.and_then(|c| c.pointer("/resource/current/averageValue")));
                    format!("{}/{t}", if c.is_empty() { "<unknown>".into() } else { c })
                }
            };
            out.push(format!("{res}: {text}"));
        } else {
            out.push("<unknown>/<unknown>".into());
        }
    }
    if out.is_empty() { "<none>".into() } else { first_three(&out, ", ") }
}

fn job_status(obj: &Value) -> String {
    let conds = obj.pointer("/status/conditions").and_then(Value::as_array);
    for c in conds.into_iter().flatten() {
        if c["status"] == "True" {
            match c["type"].as_str() {
                Some("Complete") => return "Complete".into(),
                Some("Failed") => return "Failed".into(),
                Some("Suspended") => return "Suspended".into(),
                _ => {}
            }
        }
    }
    "Running".into()
}

fn containers_images(spec: Option<&Value>) -> (String, String) {
    let cs = spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
    let names: Vec<String> = cs.into_iter().flatten().map(|c| s(c.get("name"))).collect();
    let images: Vec<String> = cs.into_iter().flatten().map(|c| s(c.get("image"))).collect();
    (names.join(","), images.join(","))
}

fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else { return "<none>".into() };
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(Some(v)))).collect())
        .unwrap_or_default();
    for e in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let vals: Vec<String> =
            e.get("values").and_then(Value::as_array).into_iter().flatten().map(|v| s(Some(v))).collect();
        let op = s(e.get("operator"));
        let key = s(e.get("key"));
        parts.push(match op.as_str() {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key,
            _ => format!("!{key}"),
        });
    }
    or_none(parts.join(","))
}

fn pod_cells(pod: &Value, name: String, age: String) -> Vec<String> {
    let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array);
    let total = pod.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
    let ready = statuses.into_iter().flatten().filter(|c| c["ready"] == true).count();
    let restarts: i64 = statuses.into_iter().flatten().map(|c| n(c.get("restartCount"))).sum();
    let mut status = s(pod.pointer("/status/reason"));
    if status.is_empty() {
        status = s(pod.pointer("/status/phase"));
    }
    for c in statuses.into_iter().flatten() {
        if let Some(reason) = c.pointer("/state/waiting/reason").and_then(Value::as_str).filter(|r| !r.is_empty()) {
            status = reason.to_owned();
        } else if let Some(reason) =
            c.pointer("/state/terminated/reason").and_then(Value::as_str).filter(|r| !r.is_empty())
        {
            status = reason.to_owned();
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        status = "Terminating".into();
    }
    let gates = pod.pointer("/spec/readinessGates").and_then(Value::as_array).map_or(0, Vec::len);
    vec![
        name,
        format!("{ready}/{total}"),
        status,
        restarts.to_string(),
        age,
        or_none(s(pod.pointer("/status/podIP"))),
        or_none(s(pod.pointer("/spec/nodeName"))),
        or_none(s(pod.pointer("/status/nominatedNodeName"))),
        if gates == 0 { "<none>".into() } else { format!("0/{gates}") },
    ]
}

/// Ages as upstream's `duration.HumanDuration` prints them.
mod chrono_lite {
    /// Seconds since the Unix epoch of an RFC 3339 `YYYY-MM-DDTHH:MM:SSZ` time.
    pub fn parse_rfc3339(ts: &str) -> Option<i64> {
        let b = ts.as_bytes();
        if b.len() < 20 {
            return None;
        }
        let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
        // Days from civil (Howard Hinnant's algorithm).
        let y2 = if mo <= 2 { y - 1 } else { y };
        let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
        let yoe = y2 - era * 400;
        let mp = (mo + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(days * 86_400 + h * 3600 + mi * 60 + s)
    }

    pub fn age_since(ts: Option<&str>, now: i64) -> String {
        match ts.and_then(parse_rfc3339) {
            Some(t) => human(now - t),
            None => "<unknown>".into(),
        }
    }

    pub fn human(secs: i64) -> String {
        if secs < -1 {
            return "<invalid>".into();
        }
        let secs = secs.max(0);
        let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
        if secs < 120 {
            format!("{secs}s")
        } else if m < 10 {
            if secs % 60 == 0 { format!("{m}m") } else { format!("{m}m{}s", secs % 60) }
        } else if m < 180 {
            format!("{m}m")
        } else if h < 8 {
            if m % 60 == 0 { format!("{h}h") } else { format!("{h}h{}m", m % 60) }
        } else if h < 48 {
            format!("{h}h")
        } else if h < 24 * 8 {
            if h % 24 == 0 { format!("{d}d") } else { format!("{d}d{}h", h % 24) }
        } else if h < 24 * 365 * 2 {
            format!("{d}d")
        } else if h < 24 * 365 * 8 {
            let y = d / 365;
            if d % 365 == 0 { format!("{y}y") } else { format!("{y}y{}d", d % 365) }
        } else {
            format!("{}y", d / 365)
        }
    }
}

pub use chrono_lite::{human as human_duration, parse_rfc3339};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(330), "5m30s");
        assert_eq!(human_duration(3 * 3600 + 120), "3h2m");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01Z"), Some(86_401));
    }

    #[test]
    fn pod_rows_show_ready_status_and_restarts() {
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "1970-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [{"ready": true, "restartCount": 2}]}
        });
        let cells = cells("", "Pod", &pod, 60);
        assert_eq!(cells[..5], [json!("p"), json!("1/1"), json!("Running"), json!("2"), json!("60s")]);
        assert_eq!(cells[5], json!("10.0.0.5"));
        assert_eq!(cells.len(), columns("", "Pod").len());
    }

    #[test]
    fn every_kind_has_as_many_cells_as_columns() {
        for (g, k) in [
            ("", "Node"),
            ("", "Service"),
            ("apps", "Deployment"),
            ("apps", "ReplicaSet"),
            ("", "Event"),
            ("batch", "Job"),
            ("", "ConfigMap"),
            ("apps", "DaemonSet"),
            ("apps", "ControllerRevision"),
            ("apps", "StatefulSet"),
            ("batch", "CronJob"),
            ("networking.k8s.io", "Ingress"),
            ("networking.k8s.io", "NetworkPolicy"),
            ("", "PersistentVolume"),
            ("", "PersistentVolumeClaim"),
            ("rbac.authorization.k8s.io", "Role"),
            ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
            ("scheduling.k8s.io", "PriorityClass"),
            ("autoscaling", "HorizontalPodAutoscaler"),
            ("discovery.k8s.io", "EndpointSlice"),
            ("coordination.k8s.io", "Lease"),
            ("apps", "StatefulSet"),
            ("x", "Other"),
        ] {
            assert_eq!(cells(g, k, &json!({}), 0).len(), columns(g, k).len(), "{g}/{k}");
        }
    }

    #[test]
    fn newer_kinds_print_upstreams_cells() {
        let ing = json!({"metadata": {"name": "web"}, "spec": {"ingressClassName": "nginx",
            "rules": [{"host": "a.example"}, {"host": "b.example"}], "tls": [{"hosts": ["a.example"]}]}});
        assert_eq!(
            cells("networking.k8s.io", "Ingress", &ing, 0)[1..5],
            [json!("nginx"), json!("a.example,b.example"), json!(""), json!("80, 443")]
        );
        let pvc = json!({"metadata": {"name": "data"}, "spec": {"volumeName": "pv1", "storageClassName": "local"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}});
        assert_eq!(
            cells("", "PersistentVolumeClaim", &pvc, 0)[1..7],
            [json!("Bound"), json!("pv1"), json!("1Gi"), json!("RWO"), json!("local"), json!("<unset>")]
        );
        let rb = json!({"metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]});
        let row = cells("rbac.authorization.k8s.io", "RoleBinding", &rb, 0);
        assert_eq!((row[1].clone(), row[5].clone()), (json!("ClusterRole/view"), json!("ns/sa")));
        let hpa = json!({"metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "maxReplicas": 5, "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}});
        assert_eq!(
            cells("autoscaling", "HorizontalPodAutoscaler", &hpa, 0)[1..5],
            [json!("Deployment/web"), json!("cpu: <unknown>/80%"), json!("1"), json!("5")]
        );
        let slice = json!({"metadata": {"name": "s"}, "addressType": "IPv4", "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]});
        assert_eq!(
            cells("discovery.k8s.io", "EndpointSlice", &slice, 0)[1..4],
            [json!("IPv4"), json!("80"), json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...")]
        );
    }
}
