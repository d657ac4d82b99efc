//! Where the socket-level LB programs attach: a cgroup v2 hierarchy.
//!
//! Hosts with only cgroup v1 controllers in use (as here: containerd's runc
//! runs with cgroupfs v1) usually still mount the v2 hierarchy, empty of
//! controllers (`/sys/fs/cgroup/unified` on hybrid systems); every process is
//! in it, at its root unless moved. BPF cgroup programs only need that
//! hierarchy, not any controller, so socket LB works on such hosts too. When
//! no cgroup2 is mounted at all, one can be mounted at a private point: the
//! v2 hierarchy is one per kernel, whatever the mount point.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Finding or mounting the cgroup v2 hierarchy failed.
#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting cgroup2 at {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The mount point of the cgroup v2 hierarchy in this mount namespace, if any.
pub fn cgroup2_mount() -> Result<Option<PathBuf>, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let info = std::fs::read_to_string(path).map_err(|source| CgroupError::Read { path: path.to_owned(), source })?;
    Ok(find_cgroup2(&info))
}

/// The cgroup v2 hierarchy's mount point, mounting it at `fallback` when
/// none is mounted yet.
pub fn cgroup2_mount_or(fallback: &Path) -> Result<PathBuf, CgroupError> {
    if let Some(found) = cgroup2_mount()? {
        return Ok(found);
    }
    std::fs::create_dir_all(fallback).map_err(|source| CgroupError::Mount { path: fallback.to_owned(), source })?;
    let target = std::ffi::CString::new(fallback.as_os_str().as_encoded_bytes()).map_err(|_| CgroupError::Mount {
        path: fallback.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL byte in the path"),
    })?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(c"cgroup2".as_ptr(), target.as_ptr(), c"cgroup2".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(CgroupError::Mount { path: fallback.to_owned(), source: std::io::Error::last_os_error() });
    }
    tracing::info!(path = %fallback.display(), "mounted the cgroup v2 hierarchy");
    Ok(fallback.to_owned())
}

/// Mount point of the first `cgroup2` file system in a mountinfo text.
fn find_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "<id> <parent> <maj:min> <root> <mount point> <options> [optional…] - <fstype> <source> <super options>"
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(|p| PathBuf::from(unescape(p)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_of_a_hybrid_host() {
        let info = "\
35 25 0:30 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
36 35 0:31 / /sys/fs/cgroup/cpu rw,relatime shared:5 - cgroup cgroup rw,cpu
44 35 0:39 / /sys/fs/cgroup/unified rw,relatime shared:13 - cgroup2 cgroup2 rw
";
        assert_eq!(find_cgroup2(info), Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn no_cgroup2_mount_is_none() {
        let info = "36 35 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        assert_eq!(find_cgroup2(info), None);
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        let info = "44 35 0:39 / /run/my\\040cgroup rw - cgroup2 none rw\n";
        assert_eq!(find_cgroup2(info), Some(PathBuf::from("/run/my cgroup")));
    }
}
