//! waggle's scheduler: upstream's scheduling framework on kube-rs. An API
//! client only (pods/binding, pod status, events), so it also runs against
//! any Kubernetes API server.
//!
//! - [`framework`]: extension-point traits, cycle state, node info;
//! - [`plugins`]: one module per in-tree plugin, named as upstream;
//! - [`profile`]: which plugins run, with which weights;
//! - [`config`]: reading a KubeSchedulerConfiguration file;
//! - [`algorithm`]: one scheduling cycle, pure;
//! - [`queue`]: active and unschedulable pods;
//! - [`cache`]: node infos kept from events and assumed pods, snapshots
//!   updated incrementally;
//! - [`nominator`]: pods waiting for the node preemption made room on;
//! - [`scheduler`]: watches, the loop, binding and failure reporting.

pub mod algorithm;
pub mod cache;
pub mod config;
pub mod framework;
pub mod nominator;
pub mod plugins;
pub mod profile;
pub mod queue;
pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use crate::plugins::default_binder::DefaultBinder;
use crate::plugins::node_resources_fit::ScoringStrategy;
use crate::profile::{DEFAULT_SCHEDULER_NAME, Profile};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the scheduler stopped: {0}")]
    Stopped(&'static str),
    #[error("{0}")]
    Config(String),
    #[error("starting the scheduling thread: {0}")]
    Thread(std::io::Error),
}

/// The scheduler's settings (a subset of upstream's
/// KubeSchedulerConfiguration), parsed once by the caller.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub scheduler_name: String,
    pub scoring_strategy: ScoringStrategy,
    pub percentage_of_nodes_to_score: Option<i32>,
    /// Unschedulable pods are retried at least this often, cluster change or not.
    pub unschedulable_retry: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
            scoring_strategy: ScoringStrategy::LeastAllocated,
            percentage_of_nodes_to_score: None,
            unschedulable_retry: Duration::from_secs(60),
        }
    }
}

impl SchedulerConfig {
    pub fn profile(&self, client: Client) -> Profile {
        Profile::default_plugins(
            &self.scheduler_name,
            self.scoring_strategy,
            self.percentage_of_nodes_to_score,
            Arc::new(DefaultBinder { client }),
        )
    }
}

/// Runs the scheduler until its watches end (they do not, short of the
/// process ending).
pub async fn run(client: Client, config: SchedulerConfig) -> Result<(), Error> {
    scheduler::run(client, config).await
}
