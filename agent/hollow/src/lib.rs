//! Hollow nodes, in the spirit of kubemark: each one is a Node object with
//! capacity and a Ready condition, a Lease renewed like a kubelet's, and a
//! pod "runtime" that only writes status: pods bound to a hollow node become
//! Running and Ready with a fake IP, and their graceful deletion is finished
//! at once. No container runs.
//!
//! Hollow nodes carry the labels `type=hollow` and `waggle.dev/hollow=true`
//! so nobody mistakes them for real ones.
//!
//! - [`node`]: the Node object and its status;
//! - [`lease`]: heartbeats in `kube-node-lease`;
//! - [`pods`]: the pod status writer.

pub mod lease;
pub mod node;
pub mod pods;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use tokio::task::JoinHandle;

/// The label every hollow node carries (with `type=hollow`).
pub const HOLLOW_LABEL: &str = "waggle.dev/hollow";

/// What went wrong with a hollow node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Config(String),
}

impl Error {
    pub(crate) fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube { action, source }
    }
}

/// True when the API answered `code`.
pub(crate) fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// How many hollow nodes, how they are named and what they offer.
#[derive(Clone, Debug)]
pub struct HollowConfig {
    /// Number of nodes.
    pub count: usize,
    /// Node names are `<prefix><index>`.
    pub name_prefix: String,
    /// How often each node's Lease is renewed (a kubelet's default: 10 s).
    pub lease_period: Duration,
    /// The Lease's duration in seconds (a kubelet's default: 40).
    pub lease_duration_seconds: i32,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
}

impl Default for HollowConfig {
    fn default() -> Self {
        Self {
            count: 1,
            name_prefix: "hollow-node-".into(),
            lease_period: Duration::from_secs(10),
            lease_duration_seconds: 40,
            cpu: "4".into(),
            memory: "16Gi".into(),
            pods: "110".into(),
        }
    }
}

impl HollowConfig {
    pub fn validate(&self) -> Result<(), Error> {
        if self.count == 0 {
            return Err(Error::Config("--hollow needs at least one node".into()));
        }
        // Node i gets 10.(64 + i/256).(i%256).0/24 for its pods.
        if self.count > 192 * 256 {
            return Err(Error::Config(format!("{} hollow nodes is more than the fake pod IP ranges hold", self.count)));
        }
        if self.lease_period.is_zero() {
            return Err(Error::Config("the lease period must be positive".into()));
        }
        Ok(())
    }

    pub fn node_name(&self, index: usize) -> String {
        format!("{}{index}", self.name_prefix)
    }
}

/// The nodes of one hollow agent and what they share: which of them are
/// "stopped" (a simulated dead kubelet: no heartbeats, no pod updates).
#[derive(Debug)]
pub struct HollowNodes {
    names: Vec<String>,
    stopped: Arc<Mutex<HashSet<String>>>,
    tasks: Vec<JoinHandle<Result<(), Error>>>,
}

impl HollowNodes {
    /// Registers the nodes, then starts heartbeating and the pod status writer.
    pub async fn start(client: Client, config: HollowConfig) -> Result<Self, Error> {
        config.validate()?;
        let names: Vec<String> = (0..config.count).map(|i| config.node_name(i)).collect();
        node::register_all(&client, &config, &names).await?;
        let stopped = Arc::new(Mutex::new(HashSet::new()));
        let live = Liveness { stopped: stopped.clone() };
        let tasks = vec![
            tokio::spawn(lease::run(client.clone(), config.clone(), names.clone(), live.clone())),
            tokio::spawn(pods::run(client, names.clone(), live)),
        ];
        tracing::info!(nodes = names.len(), prefix = %config.name_prefix, "hollow nodes registered");
        Ok(Self { names, stopped, tasks })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Simulates a node whose kubelet died: its Lease is no longer renewed
    /// and its pods are no longer updated nor deleted.
    pub fn stop_node(&self, name: &str) {
        if let Ok(mut s) = self.stopped.lock() {
            s.insert(name.to_owned());
        }
    }

    /// Brings a stopped node back.
    pub fn restart_node(&self, name: &str) {
        if let Ok(mut s) = self.stopped.lock() {
            s.remove(name);
        }
    }

    /// Waits until one of the background tasks stops (they do not, short of
    /// an error).
    pub async fn wait(mut self) -> Result<(), Error> {
        let mut tasks = std::mem::take(&mut self.tasks);
        let (r, _, rest) = futures::future::select_all(tasks.drain(..)).await;
        for t in rest {
            t.abort();
        }
        match r {
            Ok(r) => r,
            Err(e) => Err(Error::Config(format!("a hollow node task ended: {e}"))),
        }
    }
}

impl Drop for HollowNodes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Which nodes are alive, shared by the tasks.
#[derive(Clone, Debug)]
pub(crate) struct Liveness {
    stopped: Arc<Mutex<HashSet<String>>>,
}

impl Liveness {
    pub(crate) fn is_alive(&self, name: &str) -> bool {
        self.stopped.lock().map(|s| !s.contains(name)).unwrap_or(true)
    }
}

pub(crate) fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}
