//! A node's processes (`waggle server`, `waggle agent`) started inside a test
//! namespace, and everything they leave behind, released on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context as _;

use crate::cleanup;

/// A binary that cargo built next to the running test (`target/<profile>/`).
pub fn target_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|d| d.parent()).context("test binary has no target dir")?;
    let bin = dir.join(name);
    anyhow::ensure!(bin.exists(), "{} is missing: build it first (cargo build --all-targets)", bin.display());
    Ok(bin)
}

/// The processes of one node and its data dir. Pods outlive their agent by
/// design, so dropping this also stops the containerd and shims started under
/// the data dir, unmounts what they mounted there and deletes the pod network
/// namespaces whose names start with the node's prefix.
#[derive(Debug)]
pub struct NodeGuard {
    children: Vec<Child>,
    dir: PathBuf,
    pod_netns_prefix: String,
    remove: Vec<PathBuf>,
}

impl NodeGuard {
    /// `pod_netns_prefix`: what the agent names its pod namespaces with
    /// (`waggle_agent::sandbox_netns_prefix(node)`).
    pub fn new(dir: &Path, pod_netns_prefix: &str) -> Self {
        Self {
            children: Vec::new(),
            dir: dir.to_path_buf(),
            pod_netns_prefix: pod_netns_prefix.to_owned(),
            remove: Vec::new(),
        }
    }

    /// A directory outside the data dir that the node's processes create
    /// (e.g. a bpffs pin dir), removed on drop.
    pub fn remove_on_drop(&mut self, dir: &Path) {
        self.remove.push(dir.to_path_buf());
    }

    /// Takes ownership of a started process; it is killed on drop.
    pub fn adopt(&mut self, child: Child) -> u32 {
        let pid = child.id();
        self.children.push(child);
        pid
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        cleanup::kill_processes_mentioning(&self.dir.to_string_lossy(), "");
        std::thread::sleep(Duration::from_millis(300));
        cleanup::unmount_under(&self.dir);
        for dir in &self.remove {
            if let Err(e) = std::fs::remove_dir_all(dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                eprintln!("cleanup: removing {}: {e}", dir.display());
            }
        }
        if self.pod_netns_prefix.is_empty() {
            return;
        }
        if let Ok(entries) = std::fs::read_dir("/var/run/netns") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&self.pod_netns_prefix) {
                    let _ = Command::new("ip").args(["netns", "del", &name]).status();
                }
            }
        }
    }
}
