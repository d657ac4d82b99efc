//! What the cluster knows about each member: kept in the raft membership,
//! so every member can reach every other and `MemberList` can report them.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's name (etcd's `--name`).
    pub name: String,
    /// Where its peers reach it, e.g. `http://127.0.0.1:2380`.
    pub peer_url: String,
    /// Where clients reach it (may be empty for an in-process member).
    pub client_urls: Vec<String>,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.peer_url)
    }
}
