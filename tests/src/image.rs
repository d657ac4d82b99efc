//! Builds a tiny busybox OCI image (an OCI layout tarball) from Debian's
//! busybox-static, because no registry can be reached here.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// The busybox binary from Debian's busybox-static.
pub const BUSYBOX: &str = "/bin/busybox";
/// The name the image is imported under.
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:waggle";

/// What was written.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// `io.containerd.image.name` of the image in the tarball.
    pub name: String,
    /// Digest of the image manifest.
    pub manifest_digest: String,
    /// Size of the tarball in bytes.
    pub size: u64,
}

/// The name of the busybox image whose command is a pause process.
pub const PAUSE_IMAGE: &str = "docker.io/library/busybox:waggle-pause";

/// What the pause image runs: it sleeps until SIGTERM and then exits 0, as a
/// pod sandbox's pause process must (a plain `sleep` as PID 1 ignores SIGTERM).
pub const PAUSE_COMMAND: &[&str] = &["sh", "-c", "trap 'exit 0' TERM INT; sleep 2147483647 & wait"];

/// Writes the busybox image to `out` as an OCI layout tarball.
pub fn build_busybox(out: &Path) -> anyhow::Result<BuiltImage> {
    build_busybox_image(out, BUSYBOX_IMAGE, &["sh"])
}

/// Writes the busybox image under [`PAUSE_IMAGE`] with [`PAUSE_COMMAND`] as
/// its command: a sandbox image for containerd's CRI plugin (upstream's pause
/// image cannot be pulled here).
pub fn build_pause(out: &Path) -> anyhow::Result<BuiltImage> {
    build_busybox_image(out, PAUSE_IMAGE, PAUSE_COMMAND)
}

/// The busybox rootfs as an image named `name` whose default command is `cmd`.
pub fn build_busybox_image(out: &Path, name: &str, cmd: &[&str]) -> anyhow::Result<BuiltImage> {
    let busybox = fs::read(BUSYBOX).with_context(|| format!("reading {BUSYBOX} (apt package busybox-static)"))?;
    let applets = applets()?;
    let layer = rootfs_layer(&busybox, &applets)?;
    let layer_digest = digest(&layer);

    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))?;
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))?;
    let manifest_digest = digest(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag_of(name),
            },
        }],
    }))?;

    let mut files: BTreeMap<String, &[u8]> = BTreeMap::new();
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    files.insert("oci-layout".into(), layout);
    files.insert("index.json".into(), &index);
    for (d, bytes) in [(&layer_digest, &layer[..]), (&config_digest, &config[..]), (&manifest_digest, &manifest[..])] {
        files.insert(format!("blobs/sha256/{}", d.trim_start_matches("sha256:")), bytes);
    }
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut archive = tar::Builder::new(Vec::new());
    append_dir(&mut archive, "blobs/", 0o755)?;
    append_dir(&mut archive, "blobs/sha256/", 0o755)?;
    for (path, bytes) in files {
        append_file(&mut archive, &path, bytes, 0o644)?;
    }
    let tarball = archive.into_inner()?;
    let mut f = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    f.write_all(&tarball)?;
    Ok(BuiltImage { name: name.into(), manifest_digest, size: tarball.len() as u64 })
}

/// Applet paths (`bin/sh`, `usr/bin/wc`, …) as busybox itself lists them.
fn applets() -> anyhow::Result<Vec<String>> {
    let out = Command::new(BUSYBOX).arg("--list-full").output().context("running busybox --list-full")?;
    if !out.status.success() {
        bail!("busybox --list-full failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
}

/// One uncompressed layer: /bin/busybox, a symlink per applet, and the usual
/// empty directories.
fn rootfs_layer(busybox: &[u8], applets: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut layer = tar::Builder::new(Vec::new());
    for dir in
        ["bin/", "sbin/", "usr/", "usr/bin/", "usr/sbin/", "etc/", "root/", "var/", "proc/", "sys/", "dev/", "run/"]
    {
        append_dir(&mut layer, dir, 0o755)?;
    }
    append_dir(&mut layer, "tmp/", 0o1777)?;
    append_file(&mut layer, "bin/busybox", busybox, 0o755)?;
    append_file(
        &mut layer,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        0o644,
    )?;
    append_file(&mut layer, "etc/group", b"root:x:0:\nnobody:x:65534:\n", 0o644)?;
    for applet in applets {
        if applet == "bin/busybox" {
            continue;
        }
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        header.set_mtime(0);
        layer.append_link(&mut header, applet, "/bin/busybox")?;
    }
    Ok(layer.into_inner()?)
}

fn append_dir(archive: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> anyhow::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(mode);
    header.set_mtime(0);
    archive.append_data(&mut header, path, std::io::empty())?;
    Ok(())
}

fn append_file(archive: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    archive.append_data(&mut header, path, bytes)?;
    Ok(())
}

/// The tag of an image reference (`latest` when it has none).
fn tag_of(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.split_once(':').map_or("latest", |(_, tag)| tag)
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
