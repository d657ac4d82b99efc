//! `imagePullSecrets`: registry credentials from the pod's
//! `kubernetes.io/dockerconfigjson` (and legacy `kubernetes.io/dockercfg`)
//! Secrets, matched to an image's registry as the kubelet's keyring does
//! for the registry part of a key.

use std::collections::HashMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use tracing::debug;
use waggle_runtime::Credentials;

use super::env::ConfigSource;

#[derive(Debug, Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Debug, Default, Deserialize)]
struct DockerAuth {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// base64 of `username:password`.
    #[serde(default)]
    auth: Option<String>,
}

/// The registry host of a normalised image name (`host[:port]/repo:tag`).
fn registry_of(image: &str) -> &str {
    image.split('/').next().unwrap_or(image)
}

/// The registry a dockerconfig key names: keys may be URLs
/// (`https://index.docker.io/v1/`) or bare hosts.
fn key_registry(key: &str) -> &str {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

fn credentials_of(auth: &DockerAuth) -> Option<Credentials> {
    if let (Some(u), Some(p)) = (&auth.username, &auth.password)
        && !u.is_empty()
    {
        return Some(Credentials { username: u.clone(), password: p.clone() });
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(auth.auth.as_deref()?.trim()).ok()?;
    let (u, p) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(Credentials { username: u.to_owned(), password: p.to_owned() })
}

/// Credentials from one Secret's data for `image`'s registry.
pub fn from_secret_data(data: &HashMap<String, Vec<u8>>, image: &str) -> Option<Credentials> {
    let auths: HashMap<String, DockerAuth> = if let Some(json) = data.get(".dockerconfigjson") {
        serde_json::from_slice::<DockerConfigJson>(json).ok()?.auths
    } else {
        serde_json::from_slice(data.get(".dockercfg")?).ok()?
    };
    let registry = registry_of(image);
    auths.iter().find(|(k, _)| key_registry(k) == registry).and_then(|(_, a)| credentials_of(a))
}

/// The first of the pod's pull secrets that has credentials for `image`'s
/// registry; none means an anonymous pull.
pub async fn credentials_for(pod: &Pod, image: &str, configs: &dyn ConfigSource) -> Option<Credentials> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let names = pod.spec.as_ref()?.image_pull_secrets.as_ref()?;
    for name in names.iter().map(|r| r.name.as_str()) {
        let secret = match configs.secret(ns, name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                debug!(secret = %name, "image pull secret not found; pulling without it");
                continue;
            }
            Err(e) => {
                debug!(secret = %name, error = %e, "reading an image pull secret failed");
                continue;
            }
        };
        let data: HashMap<String, Vec<u8>> =
            secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        if let Some(c) = from_secret_data(&data, image) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(key: &str, json: &str) -> HashMap<String, Vec<u8>> {
        HashMap::from([(key.to_owned(), json.as_bytes().to_vec())])
    }

    #[test]
    fn dockerconfigjson_credentials_are_found_by_the_images_registry() {
        let d = data(".dockerconfigjson", r#"{"auths":{"127.0.0.1:5000":{"username":"u","password":"p"}}}"#);
        let c = from_secret_data(&d, "127.0.0.1:5000/app:v1");
        assert_eq!(c, Some(Credentials { username: "u".into(), password: "p".into() }));
        assert_eq!(from_secret_data(&d, "127.0.0.1:5001/app:v1"), None);
    }

    #[test]
    fn an_auth_field_and_url_keys_are_understood() {
        // base64("alice:s3:cret")
        let d =
            data(".dockerconfigjson", r#"{"auths":{"https://index.docker.io/v1/":{"auth":"YWxpY2U6czM6Y3JldA=="}}}"#);
        let c = from_secret_data(&d, "docker.io/library/busybox:latest");
        assert_eq!(c, Some(Credentials { username: "alice".into(), password: "s3:cret".into() }));
        let legacy = data(".dockercfg", r#"{"http://reg.example:5000":{"username":"a","password":"b"}}"#);
        assert!(from_secret_data(&legacy, "reg.example:5000/x:1").is_some());
    }
}
