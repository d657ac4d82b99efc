//! A container's environment: `env` (value, fieldRef, configMapKeyRef,
//! secretKeyRef, resourceFieldRef) and `envFrom`, with `$(VAR)` expansion as
//! upstream does it.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

/// Where ConfigMaps and Secrets come from (the API server, or a fake).
#[async_trait]
pub trait ConfigSource: Send + Sync {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, String>;
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String>;
}

#[async_trait]
impl ConfigSource for kube::Client {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        kube::Api::<ConfigMap>::namespaced(self.clone(), namespace).get_opt(name).await.map_err(|e| e.to_string())
    }
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        kube::Api::<Secret>::namespaced(self.clone(), namespace).get_opt(name).await.map_err(|e| e.to_string())
    }
}

/// Why the environment could not be made (shown as CreateContainerConfigError).
#[derive(Debug, PartialEq, Eq)]
pub struct EnvError(pub String);

fn secret_data(s: &Secret) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in s.data.iter().flatten() {
        out.insert(k.clone(), String::from_utf8_lossy(&v.0).into_owned());
    }
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// The value of a downward-API field path.
pub fn field_value(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let in_map = |map: Option<&BTreeMap<String, String>>, prefix: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_owned(),
        _ if path.starts_with("metadata.labels['") => in_map(m.labels.as_ref(), "metadata.labels['")?,
        _ if path.starts_with("metadata.annotations['") => in_map(m.annotations.as_ref(), "metadata.annotations['")?,
        _ => return None,
    })
}

/// Expands `$(NAME)` from `vars`; `$$` escapes; unknown references stay as written.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `NAME=value` lines in definition order (later definitions win), plus the
/// map used to expand command and args.
pub async fn resolve(
    pod: &Pod,
    c: &Container,
    pod_ip: &str,
    host_ip: &str,
    source: &dyn ConfigSource,
) -> Result<(Vec<String>, HashMap<String, String>), EnvError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut order: Vec<String> = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    let set = |order: &mut Vec<String>, vars: &mut HashMap<String, String>, k: String, v: String| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match source.config_map(ns, &r.name).await.map_err(EnvError)? {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut order, &mut vars, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if optional => {}
                None => return Err(EnvError(format!("configmap \"{}\" not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match source.secret(ns, &r.name).await.map_err(EnvError)? {
                Some(s) => {
                    for (k, v) in secret_data(&s) {
                        set(&mut order, &mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if optional => {}
                None => return Err(EnvError(format!("secret \"{}\" not found", r.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &vars)
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field_value(pod, &f.field_path, pod_ip, host_ip)
                    .ok_or_else(|| EnvError(format!("unsupported fieldPath {:?}", f.field_path)))?
            } else if let Some(k) = &from.config_map_key_ref {
                let optional = k.optional.unwrap_or(false);
                let cm = source.config_map(ns, &k.name).await.map_err(EnvError)?;
                match cm.and_then(|cm| cm.data.and_then(|d| d.get(&k.key).cloned())) {
                    Some(v) => v,
                    None if optional => continue,
                    None => {
                        return Err(EnvError(format!("couldn't find key {} in ConfigMap {ns}/{}", k.key, k.name)));
                    }
                }
            } else if let Some(k) = &from.secret_key_ref {
                let optional = k.optional.unwrap_or(false);
                let s = source.secret(ns, &k.name).await.map_err(EnvError)?;
                match s.and_then(|s| secret_data(&s).get(&k.key).cloned()) {
                    Some(v) => v,
                    None if optional => continue,
                    None => return Err(EnvError(format!("couldn't find key {} in Secret {ns}/{}", k.key, k.name))),
                }
            } else if let Some(r) = &from.resource_field_ref {
                resource_value(c, &r.resource)
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut order, &mut vars, e.name.clone(), value);
    }
    let lines = order.iter().map(|k| format!("{k}={}", vars.get(k).map(String::as_str).unwrap_or(""))).collect();
    Ok((lines, vars))
}

fn resource_value(c: &Container, resource: &str) -> String {
    let r = c.resources.clone().unwrap_or_default();
    let (map, key) = match resource.split_once('.') {
        Some(("limits", k)) => (r.limits, k.to_owned()),
        Some(("requests", k)) => (r.requests, k.to_owned()),
        _ => return String::new(),
    };
    map.and_then(|m| m.get(&key).map(|q| q.0.clone())).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMapKeySelector, EnvVar, EnvVarSource, ObjectFieldSelector, SecretKeySelector,
    };

    struct Fake;

    #[async_trait]
    impl ConfigSource for Fake {
        async fn config_map(&self, _ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
            Ok((name == "cm").then(|| ConfigMap {
                data: Some(BTreeMap::from([("color".to_owned(), "blue".to_owned())])),
                ..Default::default()
            }))
        }
        async fn secret(&self, _ns: &str, name: &str) -> Result<Option<Secret>, String> {
            Ok((name == "s").then(|| Secret {
                data: Some(BTreeMap::from([("pw".to_owned(), ByteString(b"hunter2".to_vec()))])),
                ..Default::default()
            }))
        }
    }

    fn var(name: &str, value: Option<&str>, from: Option<EnvVarSource>) -> EnvVar {
        EnvVar { name: name.into(), value: value.map(str::to_owned), value_from: from }
    }

    #[tokio::test]
    async fn resolves_values_fields_config_maps_and_secrets_in_order() {
        let pod = crate::pod::status::tests::pod_with(&["c"], &[], "Always");
        let c = Container {
            name: "c".into(),
            env: Some(vec![
                var("A", Some("x"), None),
                var("B", Some("$(A)-y"), None),
                var(
                    "POD",
                    None,
                    Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                ),
                var(
                    "IP",
                    None,
                    Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                ),
                var(
                    "COLOR",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cm".into(),
                            key: "color".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                ),
                var(
                    "PW",
                    None,
                    Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector { name: "s".into(), key: "pw".into(), optional: None }),
                        ..Default::default()
                    }),
                ),
            ]),
            ..Default::default()
        };
        let (lines, _) = resolve(&pod, &c, "10.1.2.3", "1.1.1.1", &Fake).await.expect("resolves");
        assert_eq!(lines, vec!["A=x", "B=x-y", "POD=p", "IP=10.1.2.3", "COLOR=blue", "PW=hunter2"]);
    }

    #[tokio::test]
    async fn a_missing_config_map_key_is_an_error_unless_optional() {
        let pod = crate::pod::status::tests::pod_with(&["c"], &[], "Always");
        let sel = |optional| {
            Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector { name: "nope".into(), key: "k".into(), optional }),
                ..Default::default()
            })
        };
        let c = Container { name: "c".into(), env: Some(vec![var("X", None, sel(None))]), ..Default::default() };
        assert!(resolve(&pod, &c, "", "", &Fake).await.is_err());
        let c = Container { name: "c".into(), env: Some(vec![var("X", None, sel(Some(true)))]), ..Default::default() };
        assert_eq!(resolve(&pod, &c, "", "", &Fake).await.expect("optional").0, Vec::<String>::new());
    }

    #[test]
    fn expansion_keeps_unknown_references_and_unescapes_double_dollars() {
        let vars = HashMap::from([("A".to_owned(), "1".to_owned())]);
        assert_eq!(expand("$(A)/$(B)/$$(A)/$", &vars), "1/$(B)/$(A)/$");
    }
}
