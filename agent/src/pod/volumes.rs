//! Pod volumes on the node: emptyDir, hostPath, configMap, secret and
//! downwardAPI are directories the agent prepares under the pod's directory
//! (hostPath is the host's own path), bound into containers at their mounts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod};
use waggle_runtime::BindMount;

use super::env::{ConfigSource, field_value};

/// Why a volume could not be made (shown as CreateContainerConfigError).
#[derive(Debug, PartialEq, Eq)]
pub struct VolumeError(pub String);

fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), VolumeError> {
    let err = |what: String| move |e: std::io::Error| VolumeError(format!("{what}: {e}"));
    std::fs::create_dir_all(dir).map_err(err(format!("creating {}", dir.display())))?;
    for (name, bytes) in files {
        if name.split('/').any(|part| part == ".." || part.is_empty()) {
            return Err(VolumeError(format!("key path {name:?} is not allowed")));
        }
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&path, bytes).map_err(err(format!("writing {}", path.display())))?;
    }
    Ok(())
}

fn select(data: Vec<(String, Vec<u8>)>, items: Option<&Vec<KeyToPath>>) -> Vec<(String, Vec<u8>)> {
    match items {
        None => data,
        Some(items) => items
            .iter()
            .filter_map(|i| data.iter().find(|(k, _)| *k == i.key).map(|(_, v)| (i.path.clone(), v.clone())))
            .collect(),
    }
}

/// Makes every volume of the pod; returns volume name → host path.
pub async fn prepare(
    pod: &Pod,
    pod_dir: &Path,
    pod_ip: &str,
    host_ip: &str,
    source: &dyn ConfigSource,
) -> Result<HashMap<String, PathBuf>, VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = HashMap::new();
    for v in pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let dir = pod_dir.join("volumes").join(&v.name);
        if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            if matches!(h.type_.as_deref(), Some("DirectoryOrCreate")) {
                std::fs::create_dir_all(&path).map_err(|e| VolumeError(format!("creating {}: {e}", h.path)))?;
            }
            out.insert(v.name.clone(), path);
        } else if v.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).map_err(|e| VolumeError(format!("creating {}: {e}", dir.display())))?;
            out.insert(v.name.clone(), dir);
        } else if let Some(c) = &v.config_map {
            let cm = source.config_map(ns, &c.name).await.map_err(VolumeError)?;
            let Some(cm) = cm else {
                if c.optional.unwrap_or(false) {
                    write_files(&dir, &[])?;
                    out.insert(v.name.clone(), dir);
                    continue;
                }
                return Err(VolumeError(format!("configmap \"{}\" not found", c.name)));
            };
            let mut data: Vec<(String, Vec<u8>)> =
                cm.data.into_iter().flatten().map(|(k, v)| (k, v.into_bytes())).collect();
            data.extend(cm.binary_data.into_iter().flatten().map(|(k, v)| (k, v.0)));
            write_files(&dir, &select(data, c.items.as_ref()))?;
            out.insert(v.name.clone(), dir);
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let secret = source.secret(ns, &name).await.map_err(VolumeError)?;
            let Some(secret) = secret else {
                if s.optional.unwrap_or(false) {
                    write_files(&dir, &[])?;
                    out.insert(v.name.clone(), dir);
                    continue;
                }
                return Err(VolumeError(format!("secret \"{name}\" not found")));
            };
            let mut data: Vec<(String, Vec<u8>)> = secret.data.into_iter().flatten().map(|(k, v)| (k, v.0)).collect();
            data.extend(secret.string_data.into_iter().flatten().map(|(k, v)| (k, v.into_bytes())));
            write_files(&dir, &select(data, s.items.as_ref()))?;
            out.insert(v.name.clone(), dir);
        } else if let Some(d) = &v.downward_api {
            let mut files = Vec::new();
            for item in d.items.iter().flatten() {
                if let Some(f) = &item.field_ref {
                    let value = match f.field_path.as_str() {
                        "metadata.labels" | "metadata.annotations" => {
                            let map = if f.field_path == "metadata.labels" {
                                &pod.metadata.labels
                            } else {
                                &pod.metadata.annotations
                            };
                            map.iter().flatten().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect()
                        }
                        p => field_value(pod, p, pod_ip, host_ip).unwrap_or_default(),
                    };
                    files.push((item.path.clone(), value.into_bytes()));
                }
            }
            write_files(&dir, &files)?;
            out.insert(v.name.clone(), dir);
        } else {
            tracing::warn!(volume = %v.name, "volume type not supported by this agent; mounting an empty directory");
            std::fs::create_dir_all(&dir).map_err(|e| VolumeError(format!("creating {}: {e}", dir.display())))?;
            out.insert(v.name.clone(), dir);
        }
    }
    Ok(out)
}

/// The container's volumeMounts as bind mounts.
pub fn binds(c: &Container, volumes: &HashMap<String, PathBuf>) -> Result<Vec<BindMount>, VolumeError> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let base = volumes
            .get(&m.name)
            .ok_or_else(|| VolumeError(format!("volumeMount {:?} names no volume of the pod", m.name)))?;
        let mut source = base.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.split('/').any(|p| p == "..") {
                return Err(VolumeError(format!("subPath {sub:?} is not allowed")));
            }
            source = base.join(sub);
            if !source.exists() {
                std::fs::create_dir_all(&source)
                    .map_err(|e| VolumeError(format!("creating {}: {e}", source.display())))?;
            }
        }
        out.push(BindMount {
            source: source.to_string_lossy().into_owned(),
            destination: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false),
        });
    }
    Ok(out)
}
