//! Image pulls from an OCI registry. containerd 1.6 has no Transfer service,
//! so waggle resolves and fetches itself (through `oci-client`, the OCI
//! distribution protocol): the manifest (an index resolved to this machine's
//! platform), the config and the layers go into containerd's content store,
//! then the layers are unpacked and the image record created as an import
//! does.

use std::collections::HashMap;

use futures_util::TryStreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;

use crate::archive::Descriptor;
use crate::images::{BlobStream, LayerSource};
use crate::{Error, ImportedImage, Runtime};

/// Credentials for a registry (basic auth, as in a dockerconfigjson).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// An image now present after a pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledImage {
    pub image: ImportedImage,
    /// Bytes of the manifest, config and layers as the registry serves them.
    pub size: u64,
}

/// One image's repository on its registry, with a client for it.
pub(crate) struct Registry {
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
    /// The normalised image name (for errors).
    image: String,
}

/// A manifest as the registry serves it.
struct RawManifest {
    bytes: bytes::Bytes,
    digest: String,
    versioned: Versioned,
}

impl Registry {
    fn new(name: &str, credentials: Option<&Credentials>, insecure: &[String]) -> Result<Self, Error> {
        let reference = parse(name)?;
        // rustls needs a process-wide crypto provider; the rest of waggle
        // uses ring too (a provider installed already is fine).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(ClientConfig {
            protocol: protocol_for(reference.resolve_registry(), insecure),
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        });
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Self { client, image: reference.whole(), reference, auth })
    }

    fn failed(&self, reason: String) -> Error {
        Error::Pull { image: self.image.clone(), reason }
    }

    async fn fetch_manifest(&self, reference: &Reference, accepted: &[&str]) -> Result<RawManifest, Error> {
        let (bytes, digest) =
            self.client.pull_manifest_raw(reference, &self.auth, accepted).await.map_err(|e| self.failed(chain(&e)))?;
        let versioned = serde_json::from_slice(&bytes)
            .map_err(|e| self.failed(format!("the manifest {digest} is not valid JSON: {e}")))?;
        Ok(RawManifest { bytes, digest, versioned })
    }

    /// The image's manifest for this machine: an index is resolved to its
    /// linux/<this architecture> entry.
    async fn resolve_manifest(&self) -> Result<RawManifest, Error> {
        let accepted = [
            OCI_IMAGE_MEDIA_TYPE,
            IMAGE_MANIFEST_MEDIA_TYPE,
            OCI_IMAGE_INDEX_MEDIA_TYPE,
            IMAGE_MANIFEST_LIST_MEDIA_TYPE,
        ];
        let top = self.fetch_manifest(&self.reference, &accepted).await?;
        let Some(entries) = &top.versioned.manifests else { return Ok(top) };
        let arch = this_architecture();
        let (digest, media_type) = entries
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == arch))
            .map(|m| (m.digest.clone(), m.media_type.clone()))
            .ok_or_else(|| {
                self.failed(format!("no matching manifest for linux/{arch} in the manifest list entries"))
            })?;
        tracing::debug!(image = %self.image, index = %top.digest, manifest = %digest, "resolved the index");
        let by_digest = self.reference.clone_with_digest(digest.clone());
        let manifest = self.fetch_manifest(&by_digest, &[media_type.as_str()]).await?;
        if manifest.versioned.manifests.is_some() {
            return Err(self.failed(format!("{digest} is an index inside an index")));
        }
        Ok(manifest)
    }

    /// A small blob (the config) in memory.
    async fn blob(&self, digest: &str) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.client.pull_blob(&self.reference, digest, &mut out).await.map_err(|e| self.failed(chain(&e)))?;
        Ok(out)
    }

    /// The blob with `digest`, streamed (oci-client checks its digest).
    pub(crate) async fn blob_stream(&self, digest: &str) -> Result<BlobStream, Error> {
        let stream = self.client.pull_blob_stream(&self.reference, digest).await.map_err(|e| self.failed(chain(&e)))?;
        let (image, digest) = (self.image.clone(), digest.to_owned());
        Ok(Box::pin(stream.map_err(move |e| Error::Pull {
            image: image.clone(),
            reason: format!("reading layer {digest}: {}", chain(&e)),
        })))
    }
}

/// A manifest or an index: enough to tell which one it is.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Versioned {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

/// What an image reference means in full, as containerd's CRI plugin and the
/// kubelet normalise it: `busybox` is `docker.io/library/busybox:latest`.
///
/// The distribution reference grammar checked by hand: oci-spec's parser
/// compiles a regex that keeps about 7 MB of heap for the agent's life, and
/// every container start normalises its image (pulls still use oci-client's
/// parser).
pub fn normalize_image(name: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::Pull { image: name.to_owned(), reason: format!("not a valid image reference: {why}") };
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':').ok_or_else(|| bad("a digest is algorithm:hex"))?;
        let algo_ok = !algo.is_empty() && algo.chars().all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c));
        let hex_ok = hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        if !algo_ok || !hex_ok {
            return Err(bad("invalid digest"));
        }
    }
    // A tag follows the last ':' after the last '/' (a ':' before is a port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let mut chars = t.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok || t.len() > 128 || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
            return Err(bad("invalid tag"));
        }
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    let first = parts[0];
    let has_domain = parts.len() > 1 && (first.contains(['.', ':']) || first == "localhost");
    let domain = if has_domain { parts.remove(0) } else { "docker.io" };
    if has_domain {
        let host = domain.split(':').next().unwrap_or("");
        let port_ok =
            domain.split_once(':').is_none_or(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        let host_ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-[]".contains(c));
        if !host_ok || !port_ok {
            return Err(bad("invalid registry host"));
        }
    }
    for p in &parts {
        if !path_component_ok(p) {
            return Err(bad("a repository name is lowercase letters, digits and separators"));
        }
    }
    if domain == "docker.io" && parts.len() == 1 {
        parts.insert(0, "library");
    }
    let mut out = format!("{domain}/{}", parts.join("/"));
    if let Some(t) = tag {
        out.push(':');
        out.push_str(t);
    }
    match digest {
        Some(d) => {
            out.push('@');
            out.push_str(d);
        }
        None if tag.is_none() => out.push_str(":latest"),
        None => {}
    }
    Ok(out)
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn path_component_ok(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

fn parse(name: &str) -> Result<Reference, Error> {
    name.parse::<Reference>()
        .map_err(|e| Error::Pull { image: name.to_owned(), reason: format!("not a valid image reference: {e}") })
}

/// The OCI name of this machine's architecture.
fn this_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Registries on the loopback interface are spoken to over plain HTTP, as
/// containerd allows for localhost, and so are those named insecure (by
/// `host:port`, or by `host` for any of its ports); every other one over HTTPS.
fn protocol_for(registry: &str, insecure: &[String]) -> ClientProtocol {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let named = insecure
        .iter()
        .any(|i| i.eq_ignore_ascii_case(registry) || i.trim_matches(['[', ']']).eq_ignore_ascii_case(host));
    if loopback || named { ClientProtocol::Http } else { ClientProtocol::Https }
}

/// Every error in a chain, outermost first: what reqwest says at the top
/// ("error sending request") means little without its cause.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl Runtime {
    /// Pulls `name` from its registry and makes it present under its
    /// normalised name. Blobs and snapshots already present are reused, so
    /// pulling an unchanged image again only fetches its manifest.
    pub async fn pull_image(&self, name: &str, credentials: Option<&Credentials>) -> Result<PulledImage, Error> {
        let registry = Registry::new(name, credentials, &self.insecure_registries)?;
        let raw = registry.resolve_manifest().await?;
        let manifest: crate::archive::Manifest = serde_json::from_slice(&raw.bytes)
            .map_err(|e| registry.failed(format!("the manifest is not valid: {e}")))?;
        let manifest_desc = Descriptor {
            media_type: raw.versioned.media_type.clone().unwrap_or_else(|| OCI_IMAGE_MEDIA_TYPE.to_owned()),
            digest: raw.digest.clone(),
            size: raw.bytes.len() as i64,
            annotations: HashMap::new(),
        };
        let config = registry.blob(&manifest.config.digest).await?;

        let full = registry.image.clone();
        let lease = self.create_lease(&format!("pull {full}")).await?;
        let stored = self
            .store_image(&full, &manifest_desc, &raw.bytes, &config, &LayerSource::Registry(&registry), &lease)
            .await;
        self.delete_lease(lease).await;
        let image = stored?;
        let size = raw.bytes.len() as u64
            + manifest.config.size.max(0) as u64
            + manifest.layers.iter().map(|l| l.size.max(0) as u64).sum::<u64>();
        tracing::info!(image = %full, digest = %image.manifest_digest, size, "pulled image");
        Ok(PulledImage { image, size })
    }
}

/// The pull's future must be Send for the agent to run it on any thread.
#[expect(dead_code, reason = "compiled only to check Send")]
fn pull_is_send(r: &Runtime) {
    fn is_send<T: Send>(_: T) {}
    is_send(r.pull_image("x", None));
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_normalised_as_the_cri_does() {
        assert_eq!(normalize_image("busybox").ok().as_deref(), Some("docker.io/library/busybox:latest"));
        assert_eq!(normalize_image("busybox:1.36").ok().as_deref(), Some("docker.io/library/busybox:1.36"));
        assert_eq!(normalize_image("127.0.0.1:5000/app:v1").ok().as_deref(), Some("127.0.0.1:5000/app:v1"));
        assert!(normalize_image("no spaces allowed").is_err());
        assert!(normalize_image("busybox::1").is_err());
        // The hand-written grammar agrees with oci-spec's on what it accepts.
        for name in [
            "busybox",
            "library/busybox:1",
            "quay.io/coreos/etcd:v3.5.0",
            "localhost/app",
            "localhost:5000/a/b/c:t",
            "[::1]:5000/app:v1",
            "my-reg.example:443/team__x/app.v2-x:1.0_rc",
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "busybox:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(normalize_image(name).ok(), parse(name).ok().map(|r| r.whole()), "{name}");
        }
        for bad in ["Busybox", "busybox:", "busybox@sha256:xyz", "a//b", "-a", "a-", "a..b", ":tag", "host:port/"] {
            assert!(normalize_image(bad).is_err(), "{bad}");
            assert!(parse(bad).is_err(), "oci-spec also rejects {bad}");
        }
    }

    #[test]
    fn loopback_and_named_insecure_registries_are_spoken_to_over_plain_http() {
        assert_eq!(protocol_for("127.0.0.1:5000", &[]), ClientProtocol::Http);
        assert_eq!(protocol_for("localhost:5000", &[]), ClientProtocol::Http);
        assert_eq!(protocol_for("localhost", &[]), ClientProtocol::Http);
        assert_eq!(protocol_for("[::1]:5000", &[]), ClientProtocol::Http);
        assert_eq!(protocol_for("index.docker.io", &[]), ClientProtocol::Https);
        assert_eq!(protocol_for("10.0.0.1:5000", &[]), ClientProtocol::Https);
        let insecure = ["10.0.0.1:5000".to_owned(), "registry.lan".to_owned(), "[fd00::1]".to_owned()];
        assert_eq!(protocol_for("10.0.0.1:5000", &insecure), ClientProtocol::Http);
        assert_eq!(protocol_for("10.0.0.1:5001", &insecure), ClientProtocol::Https, "another port");
        assert_eq!(protocol_for("registry.lan:8080", &insecure), ClientProtocol::Http, "any port of a host");
        assert_eq!(protocol_for("[fd00::1]:5000", &insecure), ClientProtocol::Http);
        assert_eq!(protocol_for("registry.lan.example", &insecure), ClientProtocol::Https);
    }
}
