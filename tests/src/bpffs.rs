//! A unique directory under /sys/fs/bpf for pinned maps, removed on drop.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::names;

/// `/sys/fs/bpf/wgt-<prefix>-<unique>`; removed with every pin inside it.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let path = Path::new("/sys/fs/bpf").join(names::unique(&format!("wgt{prefix}")));
        std::fs::create_dir(&path).with_context(|| format!("creating {} (is bpffs mounted?)", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.path) {
            eprintln!("cleanup: removing {}: {err}", self.path.display());
        }
    }
}
