//! A cgroup v2 directory of a test's own, for the socket-level LB programs:
//! they attach to a cgroup, and must never attach to one that holds other
//! tests' (or the host's) processes.
//!
//! [`Cgroup2::enter`] moves the whole calling process (cgroup v2 places
//! processes, not threads), so it is for test processes (nextest runs one per
//! test) and benchmarks. Dropping the guard moves the process back to where
//! it was and removes the directory.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::names::unique;

#[derive(Debug)]
pub struct Cgroup2 {
    path: PathBuf,
    /// Where this process was before [`Self::enter`], if it entered.
    origin: Option<PathBuf>,
}

impl Cgroup2 {
    /// A new, empty cgroup `wgt-<prefix>-<unique>` at the root of the cgroup
    /// v2 hierarchy mounted at `root` (`waggle_dataplane::cgroup` finds it).
    pub fn new(root: &Path, prefix: &str) -> anyhow::Result<Self> {
        let path = root.join(unique(&format!("wgt-{prefix}")));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, origin: None })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves this whole process into the cgroup.
    pub fn enter(&mut self) -> anyhow::Result<()> {
        let root = self.path.parent().context("a cgroup below the root")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let rel = own.lines().find_map(|l| l.strip_prefix("0::")).context("no cgroup v2 line in /proc/self/cgroup")?;
        self.origin = Some(root.join(rel.trim_start_matches('/')));
        move_self(&self.path)
    }

    /// Moves this process back to where it was before [`Self::enter`].
    pub fn leave(&mut self) -> anyhow::Result<()> {
        match self.origin.take() {
            Some(origin) => move_self(&origin),
            None => Ok(()),
        }
    }
}

fn move_self(cgroup: &Path) -> anyhow::Result<()> {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string()).with_context(|| format!("writing {}", procs.display()))
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        if let Err(e) = self.leave() {
            eprintln!("leaving cgroup {}: {e:#}", self.path.display());
        }
        if let Err(e) = std::fs::remove_dir(&self.path) {
            eprintln!("removing cgroup {}: {e}", self.path.display());
        }
    }
}
