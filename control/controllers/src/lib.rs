//! waggle's controllers. Each is an API client (kube-rs): it never touches
//! the store, so it works against waggle's API server or any Kubernetes one.
//!
//! - [`namespace`]: empties a deleted namespace, then finalizes it;
//! - [`gc`]: the garbage collector (ownerReferences; Background, Foreground
//!   and Orphan propagation);
//! - [`replicaset`], [`deployment`], [`daemonset`], [`statefulset`], [`job`],
//!   [`cronjob`]: workloads;
//! - [`informer`]: one watch per kind shared by every controller;
//! - [`endpoints`], [`endpointslice`]: Service backends;
//! - [`nodelifecycle`]: unreachable nodes are tainted, their pods evicted;
//! - [`serviceaccount`]: a `default` ServiceAccount in every namespace;
//! - [`leader`]: leader election through a Lease (for the controller
//!   manager and the scheduler).

pub mod backends;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod expectations;
pub mod gc;
pub mod informer;
pub mod job;
pub mod leader;
pub mod namespace;
pub mod nodelifecycle;
pub mod owner_index;
pub mod pod_state;
pub mod replicaset;
pub mod resources;
pub mod serviceaccount;
pub mod statefulset;

pub use nodelifecycle::NodeLifecycleConfig;

use kube::Client;

/// What went wrong in a controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{reason}")]
    Config { reason: String },
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    pub(crate) fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube { action, source }
    }
}

/// A kube-rs client from a kubeconfig's text.
pub async fn client_from_kubeconfig(text: &str) -> Result<Client, Error> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(text)
        .map_err(|e| Error::Config { reason: format!("reading the kubeconfig: {e}") })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Config { reason: format!("building a client configuration: {e}") })?;
    Client::try_from(config).map_err(Error::kube("building a client"))
}

/// True when the API answered 404.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Settings of the controller manager, parsed once by its caller.
#[derive(Clone, Debug, Default)]
pub struct ControllerConfig {
    pub node_lifecycle: NodeLifecycleConfig,
}

/// Runs every controller until one of them stops (they do not, short of the
/// process ending).
pub async fn run(client: Client) -> Result<(), Error> {
    run_with(client, ControllerConfig::default()).await
}

pub async fn run_with(client: Client, config: ControllerConfig) -> Result<(), Error> {
    let resources = resources::discover(&client).await?;
    // One watch per shared kind, whatever the number of controllers reading it.
    let informers = informer::Informers::start(&client);
    let i = &informers;
    tokio::select! {
        r = namespace::run(client.clone(), resources.clone()) => r,
        r = gc::run(client.clone(), resources) => r,
        r = replicaset::run(client.clone(), i) => r,
        r = deployment::run(client.clone(), i) => r,
        r = daemonset::run(client.clone(), i) => r,
        r = statefulset::run(client.clone(), i) => r,
        r = job::run(client.clone(), i) => r,
        r = cronjob::run(client.clone(), i) => r,
        r = endpoints::run(client.clone(), i) => r,
        r = endpointslice::run(client.clone(), i) => r,
        r = nodelifecycle::run(client.clone(), i, config.node_lifecycle) => r,
        r = serviceaccount::run(client) => r,
    }
}
