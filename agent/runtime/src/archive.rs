//! OCI image layout tarballs: `oci-layout`, `index.json`, `blobs/<alg>/<hex>`.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use crate::Error;

/// A content descriptor as the OCI image spec defines it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

impl From<&Descriptor> for containerd_client::types::Descriptor {
    fn from(d: &Descriptor) -> Self {
        Self {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            annotations: d.annotations.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

/// An image manifest (only the fields waggle needs).
#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An image config (only the fields waggle needs).
#[derive(Debug, Deserialize)]
pub struct ImageConfig {
    pub rootfs: RootFs,
    #[serde(default)]
    pub config: RunConfig,
}

#[derive(Debug, Deserialize)]
pub struct RootFs {
    pub diff_ids: Vec<String>,
}

/// The defaults a container of this image runs with.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: String,
    /// `uid[:gid]` or a user name; empty is root.
    #[serde(default)]
    pub user: String,
}

/// Annotation naming the image in an archive made by containerd or waggle.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation for a tag.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// An OCI layout tarball read into memory.
#[derive(Debug)]
pub struct OciArchive {
    path: String,
    blobs: HashMap<String, Vec<u8>>,
    /// (image name, manifest descriptor) for each named manifest in index.json.
    pub images: Vec<(String, Descriptor)>,
}

impl OciArchive {
    /// Reads the tarball at `path` and checks every blob against its digest.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let display = path.display().to_string();
        let io = |source| Error::ArchiveIo { path: display.clone(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut tar = tar::Archive::new(file);
        let mut blobs = HashMap::new();
        let mut index = None;
        for entry in tar.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            let name = entry.path().map_err(io)?.to_string_lossy().trim_start_matches("./").to_owned();
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes).map_err(io)?;
            if name == "index.json" {
                index = Some(bytes);
            } else if let Some(rest) = name.strip_prefix("blobs/") {
                let digest = rest.replacen('/', ":", 1);
                blobs.insert(digest, bytes);
            }
        }
        let bad = |reason: String| Error::Archive { path: display.clone(), reason };
        let index = index.ok_or_else(|| bad("no index.json (not an OCI layout archive)".into()))?;
        let index: Index =
            serde_json::from_slice(&index).map_err(|e| bad(format!("index.json is not an OCI index: {e}")))?;
        for (digest, bytes) in &blobs {
            verify(digest, bytes).map_err(&bad)?;
        }
        let images = index
            .manifests
            .into_iter()
            .filter_map(|d| {
                let name = d
                    .annotations
                    .get(IMAGE_NAME_ANNOTATION)
                    .or_else(|| d.annotations.get(REF_NAME_ANNOTATION))
                    .cloned()?;
                Some((name, d))
            })
            .collect::<Vec<_>>();
        if images.is_empty() {
            return Err(bad("index.json names no image (no io.containerd.image.name or ref.name annotation)".into()));
        }
        Ok(Self { path: display, blobs, images })
    }

    /// The blob with `digest`, or an error naming what is missing.
    pub fn blob(&self, digest: &str) -> Result<&[u8], Error> {
        self.blobs
            .get(digest)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::Archive { path: self.path.clone(), reason: format!("blob {digest} is missing") })
    }

    /// Parses the JSON blob with `digest` as `T`.
    pub fn json<T: for<'de> Deserialize<'de>>(&self, digest: &str) -> Result<T, Error> {
        serde_json::from_slice(self.blob(digest)?)
            .map_err(|e| Error::Archive { path: self.path.clone(), reason: format!("blob {digest}: {e}") })
    }
}

fn verify(digest: &str, bytes: &[u8]) -> Result<(), String> {
    use sha2::Digest as _;
    let Some(hex_digest) = digest.strip_prefix("sha256:") else {
        return Err(format!("blob {digest}: only sha256 digests are supported"));
    };
    let actual = hex::encode(sha2::Sha256::digest(bytes));
    if actual != hex_digest {
        return Err(format!("blob {digest} has digest sha256:{actual}"));
    }
    Ok(())
}

/// The snapshot chain IDs of a layer stack, as the OCI image spec defines them:
/// `chain[0] = diff[0]`, `chain[i] = sha256(chain[i-1] + " " + diff[i])`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    use sha2::Digest as _;
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match chain.last() {
            None => diff.clone(),
            Some(prev) => format!("sha256:{}", hex::encode(sha2::Sha256::digest(format!("{prev} {diff}")))),
        };
        chain.push(next);
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_of_one_layer_is_its_diff_id() {
        assert_eq!(chain_ids(&["sha256:aa".into()]), vec!["sha256:aa".to_owned()]);
    }

    #[test]
    fn chain_id_of_two_layers_hashes_parent_space_diff() {
        let ids = chain_ids(&["sha256:aa".into(), "sha256:bb".into()]);
        use sha2::Digest as _;
        let expected = format!("sha256:{}", hex::encode(sha2::Sha256::digest("sha256:aa sha256:bb")));
        assert_eq!(ids[1], expected);
    }

    #[test]
    fn rejects_a_blob_whose_bytes_do_not_match_its_digest() {
        assert!(verify("sha256:00", b"x").is_err());
        assert!(verify("md5:00", b"x").is_err());
    }
}
