//! Errors of the replicated store's own machinery (starting a member,
//! opening its disk, changing membership). Errors of requests are the
//! store's [`StoreError`](waggle_store::StoreError).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    #[error("opening the raft database in {path}: {source}")]
    Open { path: PathBuf, source: rocksdb::Error },
    #[error("raft database {path} is not a waggle raft store (format marker {found:?})")]
    Foreign { path: PathBuf, found: String },
    #[error("reading the raft database {path}: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("binding the peer listener on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("starting raft member {id}: {reason}")]
    Start { id: u64, reason: String },
    #[error("{op}: {reason}")]
    Raft { op: &'static str, reason: String },
}
