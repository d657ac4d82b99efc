//! Image import: content blobs → image record → unpacked snapshots.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;

use containerd_client::services::v1::{
    AbortRequest, CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, InfoRequest, ListImagesRequest,
    UpdateImageRequest, WriteAction, WriteContentRequest,
    content_client::ContentClient,
    images_client::ImagesClient,
    leases_client::LeasesClient,
    snapshots::{
        CommitSnapshotRequest, PrepareSnapshotRequest, StatSnapshotRequest, snapshots_client::SnapshotsClient,
    },
};
use containerd_client::services::v1::{ApplyRequest, diff_client::DiffClient};
use prost_types::FieldMask;

use crate::archive::{Descriptor, ImageConfig, Manifest, OciArchive, chain_ids};
use crate::{Error, Runtime, SNAPSHOTTER};

/// Blobs are streamed to containerd in chunks of this size.
const CHUNK: usize = 1 << 20;

/// The bytes of one blob, as they arrive.
pub(crate) type BlobStream = Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, Error>> + Send>>;

/// Where an image's layers come from.
pub(crate) enum LayerSource<'a> {
    Archive(&'a OciArchive),
    Registry(&'a crate::pull::Registry),
}

impl LayerSource<'_> {
    async fn open(&self, layer: &Descriptor) -> Result<BlobStream, Error> {
        match self {
            Self::Archive(archive) => archive.blob(&layer.digest).map(chunks_of),
            Self::Registry(registry) => registry.blob_stream(&layer.digest).await,
        }
    }
}

fn chunks_of(bytes: &[u8]) -> BlobStream {
    let chunks: Vec<Result<bytes::Bytes, Error>> =
        bytes.chunks(CHUNK).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    Box::pin(futures_util::stream::iter(chunks))
}

/// An image now present and unpacked in containerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedImage {
    pub name: String,
    pub manifest_digest: String,
    /// Chain ID of the top layer: the parent snapshot of a container's rootfs.
    pub chain_id: String,
}

impl Runtime {
    /// Imports every named image of an OCI layout tarball and unpacks it for
    /// the overlayfs snapshotter. Importing the same archive twice is a no-op.
    pub async fn import_archive(&self, path: &Path) -> Result<Vec<ImportedImage>, Error> {
        let archive = OciArchive::read(path)?;
        let lease = self.create_lease(&format!("import {}", path.display())).await?;
        let result = self.import_with_lease(&archive, &lease).await;
        // The image records and snapshot labels now hold everything; the lease
        // only protected the import in flight.
        self.delete_lease(lease).await;
        result
    }

    async fn import_with_lease(&self, archive: &OciArchive, lease: &str) -> Result<Vec<ImportedImage>, Error> {
        let mut imported = Vec::new();
        for (name, manifest_desc) in &archive.images {
            let manifest_bytes = archive.blob(&manifest_desc.digest)?;
            let manifest: Manifest = archive.json(&manifest_desc.digest)?;
            let config_bytes = archive.blob(&manifest.config.digest)?;
            let image = self
                .store_image(name, manifest_desc, manifest_bytes, config_bytes, &LayerSource::Archive(archive), lease)
                .await?;
            tracing::info!(image = %name, digest = %manifest_desc.digest, "imported image");
            imported.push(image);
        }
        Ok(imported)
    }

    /// Stores one image whose manifest and config are at hand and whose
    /// layers `layers` streams: content (with the labels containerd's
    /// garbage collector follows), unpacked snapshots, and the image record
    /// `name` pointing at the manifest. Layers already in the content store
    /// are not fetched again.
    pub(crate) async fn store_image(
        &self,
        name: &str,
        manifest_desc: &Descriptor,
        manifest_bytes: &[u8],
        config_bytes: &[u8],
        layers: &LayerSource<'_>,
        lease: &str,
    ) -> Result<ImportedImage, Error> {
        let bad = |reason: String| Error::Image { image: name.to_owned(), reason };
        let manifest: Manifest =
            serde_json::from_slice(manifest_bytes).map_err(|e| bad(format!("the manifest is not valid: {e}")))?;
        let config: ImageConfig =
            serde_json::from_slice(config_bytes).map_err(|e| bad(format!("the image config is not valid: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(bad(format!(
                "{} layers but {} diff_ids in the config",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let chain = chain_ids(&config.rootfs.diff_ids);
        let top = chain.last().cloned().ok_or_else(|| bad("the image has no layers".into()))?;

        // Labels tell containerd's garbage collector what refers to what.
        for (i, layer) in manifest.layers.iter().enumerate() {
            if self.has_content(&layer.digest).await? {
                continue;
            }
            let labels = HashMap::from([("containerd.io/uncompressed".to_owned(), config.rootfs.diff_ids[i].clone())]);
            let data = layers.open(layer).await?;
            self.write_content(layer, data, labels, lease).await?;
        }
        let config_labels = HashMap::from([(format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"), top.clone())]);
        self.write_content(&manifest.config, chunks_of(config_bytes), config_labels, lease).await?;
        let mut manifest_labels =
            HashMap::from([("containerd.io/gc.ref.content.config".to_owned(), manifest.config.digest.clone())]);
        for (i, layer) in manifest.layers.iter().enumerate() {
            manifest_labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), layer.digest.clone());
        }
        self.write_content(manifest_desc, chunks_of(manifest_bytes), manifest_labels, lease).await?;

        self.unpack(&manifest.layers, &chain, lease).await?;
        self.put_image(name, manifest_desc).await?;
        Ok(ImportedImage { name: name.to_owned(), manifest_digest: manifest_desc.digest.clone(), chain_id: top })
    }

    pub(crate) async fn create_lease(&self, why: &str) -> Result<String, Error> {
        let id = format!("waggle-import-{}-{}", std::process::id(), unique());
        let labels = HashMap::from([("waggle.dev/purpose".to_owned(), why.to_owned())]);
        LeasesClient::new(self.channel.clone())
            .create(self.request(containerd_client::services::v1::CreateRequest { id: id.clone(), labels }))
            .await
            .map_err(Error::rpc("Leases.Create", &id))?;
        Ok(id)
    }

    /// Deletes a lease; what it protected is kept only if something else
    /// (an image record, a snapshot label) refers to it.
    pub(crate) async fn delete_lease(&self, lease: String) {
        let _ = LeasesClient::new(self.channel.clone())
            .delete(self.request(containerd_client::services::v1::DeleteRequest { id: lease, sync: false }))
            .await;
    }

    /// True when the content store holds a blob with this digest.
    async fn has_content(&self, digest: &str) -> Result<bool, Error> {
        let info = ContentClient::new(self.channel.clone())
            .info(self.request(InfoRequest { digest: digest.to_owned() }))
            .await
            .map_err(Error::rpc("Content.Info", digest));
        match info {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Streams one blob into the content store, where containerd checks its
    /// size and digest on commit; a blob already there is kept. If `data`
    /// fails, the half-written ingest is aborted and its error returned.
    async fn write_content(
        &self,
        desc: &Descriptor,
        data: BlobStream,
        labels: HashMap<String, String>,
        lease: &str,
    ) -> Result<(), Error> {
        use futures_util::StreamExt as _;
        // A ref of its own per attempt: a failed attempt's ingest never
        // blocks the next one.
        let r#ref = format!("waggle-{}-{}", desc.digest, unique());
        let (total, expected) = (desc.size, desc.digest.clone());
        // A task turns the data into write messages and ends with the
        // commit; if the data fails it stops without one (the stream just
        // ends) and the ingest is aborted below.
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let producer = {
            let (r#ref, mut data) = (r#ref.clone(), data);
            tokio::spawn(async move {
                let mut offset = 0i64;
                while let Some(chunk) = data.next().await {
                    let chunk = chunk?;
                    let len = chunk.len() as i64;
                    let msg = WriteContentRequest {
                        action: WriteAction::Write as i32,
                        r#ref: r#ref.clone(),
                        total,
                        expected: expected.clone(),
                        offset,
                        data: chunk.to_vec(),
                        labels: HashMap::new(),
                    };
                    if tx.send(msg).await.is_err() {
                        return Ok(()); // containerd ended the call; its answer says why
                    }
                    offset += len;
                }
                let commit = WriteContentRequest {
                    action: WriteAction::Commit as i32,
                    r#ref,
                    total,
                    expected,
                    offset,
                    data: Vec::new(),
                    labels,
                };
                let _ = tx.send(commit).await;
                Ok::<(), Error>(())
            })
        };
        let req = self.leased_request(tokio_stream::wrappers::ReceiverStream::new(rx), lease)?;
        let call = ContentClient::new(self.channel.clone()).write(req).await;
        let result = match call {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => break Ok(()),
                        Err(status) => break Err(status),
                    }
                }
            }
            Err(status) => Err(status),
        };
        let produced = producer.await.unwrap_or_else(|_| {
            Err(Error::Image { image: desc.digest.clone(), reason: "the blob reader panicked".into() })
        });
        if let Err(e) = produced {
            let _ = ContentClient::new(self.channel.clone())
                .abort(self.request(AbortRequest { r#ref: r#ref.clone() }))
                .await;
            return Err(e);
        }
        match result.map_err(Error::rpc("Content.Write", &desc.digest)) {
            Err(e) if e.is_already_exists() => Ok(()),
            other => other,
        }
    }

    /// Applies each layer on top of its parent and commits it under its chain ID.
    async fn unpack(&self, layers: &[Descriptor], chain: &[String], lease: &str) -> Result<(), Error> {
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        for (i, (layer, chain_id)) in layers.iter().zip(chain).enumerate() {
            let stat = snapshots
                .stat(self.request(StatSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key: chain_id.clone() }))
                .await;
            if stat.is_ok() {
                continue;
            }
            let parent = if i == 0 { String::new() } else { chain[i - 1].clone() };
            let key = format!("extract-{}-{chain_id}", unique());
            let mounts = snapshots
                .prepare(self.leased_request(
                    PrepareSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                        parent,
                        labels: HashMap::new(),
                    },
                    lease,
                )?)
                .await
                .map_err(Error::rpc("Snapshots.Prepare", &key))?
                .into_inner()
                .mounts;
            DiffClient::new(self.channel.clone())
                .apply(self.leased_request(
                    ApplyRequest { diff: Some(layer.into()), mounts, payloads: HashMap::new(), sync_fs: false },
                    lease,
                )?)
                .await
                .map_err(Error::rpc("Diff.Apply", &layer.digest))?;
            let commit = snapshots
                .commit(self.leased_request(
                    CommitSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        name: chain_id.clone(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                )?)
                .await
                .map_err(Error::rpc("Snapshots.Commit", chain_id));
            match commit {
                Err(e) if e.is_already_exists() => {
                    // Another import got there first; drop our copy.
                    let _ = snapshots
                        .remove(self.request(containerd_client::services::v1::snapshots::RemoveSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            key,
                        }))
                        .await;
                }
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// Creates the image record, or points an existing one at this manifest.
    async fn put_image(&self, name: &str, target: &Descriptor) -> Result<(), Error> {
        let mut images = ImagesClient::new(self.channel.clone());
        let image = Image { name: name.to_owned(), target: Some(target.into()), ..Default::default() };
        let created = images
            .create(self.request(CreateImageRequest { image: Some(image.clone()), source_date_epoch: None }))
            .await
            .map_err(Error::rpc("Images.Create", name));
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.is_already_exists() => {
                images
                    .update(self.request(UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(FieldMask { paths: vec!["target".into()] }),
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(Error::rpc("Images.Update", name))?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The manifest digest an image name points at.
    pub async fn image_target(&self, name: &str) -> Result<containerd_client::types::Descriptor, Error> {
        let image = ImagesClient::new(self.channel.clone())
            .get(self.request(GetImageRequest { name: name.to_owned() }))
            .await
            .map_err(Error::rpc("Images.Get", name))?
            .into_inner()
            .image;
        image
            .and_then(|i| i.target)
            .ok_or_else(|| Error::Image { image: name.to_owned(), reason: "has no target".into() })
    }
}

/// An image record of the namespace with the bytes its blobs take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSummary {
    pub name: String,
    /// The digest the name points at (a manifest, or an index).
    pub digest: String,
    /// Manifest, config and (compressed) layers, as the registry counts an
    /// image's size; an index counts only itself.
    pub size: u64,
}

impl Runtime {
    /// Every image of the namespace.
    pub async fn list_images(&self) -> Result<Vec<ImageSummary>, Error> {
        let images = ImagesClient::new(self.channel.clone())
            .list(self.request(ListImagesRequest { filters: Vec::new() }))
            .await
            .map_err(Error::rpc("Images.List", "images"))?
            .into_inner()
            .images;
        let mut sizes: HashMap<String, u64> = HashMap::new();
        let mut out = Vec::with_capacity(images.len());
        for image in images {
            let Some(target) = image.target else { continue };
            let size = match sizes.get(&target.digest) {
                Some(s) => *s,
                None => {
                    let size = self.manifest_size(&target).await;
                    sizes.insert(target.digest.clone(), size);
                    size
                }
            };
            out.push(ImageSummary { name: image.name, digest: target.digest, size });
        }
        Ok(out)
    }

    async fn manifest_size(&self, target: &containerd_client::types::Descriptor) -> u64 {
        let own = target.size.max(0) as u64;
        match self.read_json::<Manifest>(&target.digest).await {
            Ok(m) => own + m.config.size.max(0) as u64 + m.layers.iter().map(|l| l.size.max(0) as u64).sum::<u64>(),
            Err(_) => own,
        }
    }

    /// Where containerd keeps its content blobs (the content plugin's root,
    /// from the Introspection service): the image filesystem.
    pub async fn content_root(&self) -> Result<std::path::PathBuf, Error> {
        use containerd_client::services::v1::{PluginsRequest, introspection_client::IntrospectionClient};
        let plugins = IntrospectionClient::new(self.channel.clone())
            .plugins(
                self.request(PluginsRequest { filters: vec!["type==io.containerd.content.v1,id==content".into()] }),
            )
            .await
            .map_err(Error::rpc("Introspection.Plugins", "content"))?
            .into_inner()
            .plugins;
        plugins
            .into_iter()
            .find_map(|p| p.exports.get("root").cloned())
            .map(std::path::PathBuf::from)
            .ok_or_else(|| Error::Image { image: String::new(), reason: "containerd names no content root".into() })
    }

    /// Removes an image record and lets containerd collect, before it
    /// answers, the blobs and snapshots nothing else refers to.
    pub async fn delete_image(&self, name: &str) -> Result<(), Error> {
        ImagesClient::new(self.channel.clone())
            .delete(self.request(DeleteImageRequest { name: name.to_owned(), sync: true, ..Default::default() }))
            .await
            .map_err(Error::rpc("Images.Delete", name))?;
        Ok(())
    }
}

/// A short process-unique token for lease and snapshot keys.
pub(crate) fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format!("{:x}{:x}", nanos, N.fetch_add(1, Ordering::Relaxed))
}
