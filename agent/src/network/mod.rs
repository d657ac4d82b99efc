//! The pod network seam: a sandbox network namespace per pod, wired by a CNI
//! plugin. [`CniNetwork`] is the real thing; [`FakeNetwork`] hands out
//! addresses in memory for unit tests.

mod cni;
mod netns;
mod sandbox;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use thiserror::Error;

pub use cni::{CniInvoker, conflist_for};
pub use netns::{create_netns, delete_netns, enter_and_run};
pub use sandbox::CniNetwork;

#[derive(Debug, Error)]
pub enum NetworkError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {errno}")]
    Sys { what: String, errno: nix::errno::Errno },
    #[error("CNI {command} of {plugin} for {container}: code {code}: {msg}{details}")]
    Plugin { command: &'static str, plugin: String, container: String, code: u64, msg: String, details: String },
    #[error("CNI configuration: {0}")]
    Config(String),
}

/// Which pod a sandbox belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SandboxId {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

/// A pod's network, once set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxNet {
    pub netns: PathBuf,
    pub ips: Vec<IpAddr>,
}

#[async_trait]
pub trait PodNetwork: Send + Sync + std::fmt::Debug + 'static {
    /// Creates the netns and attaches it (CNI ADD); a sandbox already set up
    /// is returned as it is.
    async fn setup(&self, id: &SandboxId) -> Result<SandboxNet, NetworkError>;
    /// The sandbox if it is set up (from the agent's state on disk).
    async fn get(&self, uid: &str) -> Result<Option<SandboxNet>, NetworkError>;
    /// CNI DEL and netns removal; a sandbox already gone counts as torn down.
    async fn teardown(&self, uid: &str) -> Result<(), NetworkError>;
    /// The uids of every sandbox known (for cleaning up after pods that are gone).
    async fn list(&self) -> Result<Vec<String>, NetworkError>;
}

/// Addresses from 10.244.0.2 upwards, in memory.
#[derive(Debug, Default, Clone)]
pub struct FakeNetwork {
    inner: Arc<Mutex<(u8, HashMap<String, SandboxNet>)>>,
}

impl FakeNetwork {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u8, HashMap<String, SandboxNet>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl PodNetwork for FakeNetwork {
    async fn setup(&self, id: &SandboxId) -> Result<SandboxNet, NetworkError> {
        let mut g = self.lock();
        if let Some(net) = g.1.get(&id.uid) {
            return Ok(net.clone());
        }
        g.0 += 1;
        let ip = IpAddr::from([10, 244, 0, 1 + g.0]);
        let net = SandboxNet { netns: PathBuf::from(format!("/fake/netns/{}", id.uid)), ips: vec![ip] };
        g.1.insert(id.uid.clone(), net.clone());
        Ok(net)
    }

    async fn get(&self, uid: &str) -> Result<Option<SandboxNet>, NetworkError> {
        Ok(self.lock().1.get(uid).cloned())
    }

    async fn teardown(&self, uid: &str) -> Result<(), NetworkError> {
        self.lock().1.remove(uid);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<String>, NetworkError> {
        Ok(self.lock().1.keys().cloned().collect())
    }
}
