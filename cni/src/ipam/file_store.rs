//! The on-disk store, laid out exactly like host-local's so either plugin can
//! read the other's state: `<dataDir>/<network>/<ip>` holding
//! `<containerID>\r\n<ifname>`, `last_reserved_ip.<set>`, and a `lock` file
//! that is flocked for as long as the store is open.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::{IpamError, IpamStore, Owner};

/// host-local's separator between container ID and interface name.
const LINE_BREAK: &str = "\r\n";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const LOCK_FILE: &str = "lock";

/// An open, exclusively locked network directory. The lock is released on drop.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl FileStore {
    /// Creates the directory if needed and blocks until the lock is held.
    pub fn open_locked(dir: &Path) -> Result<Self, IpamError> {
        fs::create_dir_all(dir).map_err(|e| IpamError::store(format!("creating {}", dir.display()), e))?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| IpamError::store(format!("opening {}", path.display()), e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| IpamError::store(format!("locking {}", path.display()), errno.into()))?;
        Ok(Self { dir: dir.to_path_buf(), _lock: lock })
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }
}

/// Overwrites `path` from its start and cuts it to `bytes`' length. Opening
/// with O_TRUNC would make ext4 flush the file on close (auto_da_alloc), a
/// disk write per ADD for a hint that host-local also keeps without fsync.
fn write_in_place(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    file.write_all(bytes)?;
    file.set_len(bytes.len() as u64)
}

impl IpamStore for FileStore {
    fn reserve(&mut self, owner: &Owner, ip: IpAddr, range_set: usize) -> Result<bool, IpamError> {
        let path = self.ip_path(ip);
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(err) => {
                return Err(IpamError::store(format!("creating {}", path.display()), err));
            }
        };
        let content = format!("{}{LINE_BREAK}{}", owner.container_id.trim(), owner.ifname);
        if let Err(err) = file.write_all(content.as_bytes()) {
            let _ = fs::remove_file(&path);
            return Err(IpamError::store(format!("writing {}", path.display()), err));
        }
        let last = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
        write_in_place(&last, ip.to_string().as_bytes())
            .map_err(|e| IpamError::store(format!("writing {}", last.display()), e))?;
        Ok(true)
    }

    fn last_reserved(&self, range_set: usize) -> Result<Option<IpAddr>, IpamError> {
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
        match fs::read_to_string(&path) {
            // A corrupt hint only costs a longer search, so it is ignored.
            Ok(text) => Ok(text.trim().parse().ok()),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(IpamError::store(format!("reading {}", path.display()), err)),
        }
    }

    fn release(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        let path = self.ip_path(ip);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
            Err(err) => Err(IpamError::store(format!("removing {}", path.display()), err)),
        }
    }

    fn list(&self) -> Result<Vec<(IpAddr, Owner)>, IpamError> {
        let entries =
            fs::read_dir(&self.dir).map_err(|e| IpamError::store(format!("listing {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| IpamError::store(format!("listing {}", self.dir.display()), e))?;
            let Some(ip) = entry.file_name().to_str().and_then(|name| name.parse::<IpAddr>().ok()) else {
                continue;
            };
            let text = match fs::read_to_string(entry.path()) {
                Ok(text) => text,
                Err(err) if err.kind() == ErrorKind::NotFound => continue,
                Err(err) => {
                    return Err(IpamError::store(format!("reading {}", entry.path().display()), err));
                }
            };
            let mut lines = text.lines().map(str::trim);
            let container_id = lines.next().unwrap_or_default().to_string();
            let ifname = lines.next().unwrap_or_default().to_string();
            out.push((ip, Owner { container_id, ifname }));
        }
        Ok(out)
    }
}
