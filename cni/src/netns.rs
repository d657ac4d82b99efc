//! Network namespaces named by path (`CNI_NETNS`): open, check, enter briefly.

use std::fs::File;
use std::os::fd::{AsRawFd as _, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, PROC_SUPER_MAGIC, fstatfs};

use crate::error::{Error, Result};

#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the namespace; a missing path is "unknown container" (code 3).
    pub fn open(path: &Path) -> Result<Self> {
        let not_found = |source| Error::NetnsNotFound { path: path.display().to_string(), source };
        let file = File::open(path).map_err(not_found)?;
        let fs = fstatfs(&file).map_err(|errno| not_found(errno.into()))?;
        if fs.filesystem_type() != NSFS_MAGIC && fs.filesystem_type() != PROC_SUPER_MAGIC {
            return Err(not_found(std::io::Error::other("not a network namespace file")));
        }
        Ok(Self { file, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` with the calling thread inside this namespace, then moves the
    /// thread back. Sockets opened by `f` stay in this namespace.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> Result<R> {
        let home = File::open("/proc/thread-self/ns/net")
            .map_err(|err| Error::io("opening the current network namespace", err))?;
        setns(&self.file, CloneFlags::CLONE_NEWNET)
            .map_err(|errno| Error::io(format!("entering {}", self.path.display()), errno.into()))?;
        let out = f();
        setns(&home, CloneFlags::CLONE_NEWNET)
            .map_err(|errno| Error::io("returning to the host network namespace", errno.into()))?;
        Ok(out)
    }
}
