//! The Kubernetes REST API over HTTPS, on waggle's store.
//!
//! [`start`] is the boot script: PKI, TLS, state, bootstrap objects, listener.
//! Requests go through [`handlers::dispatch`]: authentication, routing from
//! the resource registry, then one module per verb family.

mod admission;
mod alloc;
mod authn;
mod bootstrap;
pub mod config;
mod discovery;
pub(crate) mod handlers;
mod kubelet;
mod objects;
mod openapi;
mod openapi_v2;
mod owners;
pub mod pki;
mod request;
mod response;
mod routes;
mod serve;
mod state;
mod system;
mod tls;
mod watchcache;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use waggle_store::Store;

pub use config::ApiServerConfig;

/// What went wrong starting the API server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("making or loading the cluster certificates")]
    Pki(#[from] pki::PkiError),
    #[error("setting up TLS")]
    Tls(#[from] tls::TlsError),
    #[error("listening on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the bootstrap objects: {0}")]
    Bootstrap(String),
}

/// A running API server.
#[derive(Debug)]
pub struct RunningApiServer {
    /// Where it listens (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// An admin kubeconfig for it.
    pub admin_kubeconfig: String,
    /// The cluster PKI (for issuing node and test credentials).
    pub pki: pki::Pki,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningApiServer {
    /// A kubeconfig for a component or user, with a client certificate
    /// issued by the cluster CA (`user` as CN, `groups` as O).
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> Result<String, pki::PkiError> {
        let pair = self.pki.issue_client(user, groups)?;
        let url = match self.addr.ip() {
            IpAddr::V6(ip) => format!("https://[{ip}]:{}", self.addr.port()),
            IpAddr::V4(ip) => format!("https://{ip}:{}", self.addr.port()),
        };
        Ok(pki::kubeconfig(&url, &self.pki.ca.cert_pem, &pair, user))
    }

    /// Serves until the listener fails (it does not, short of the process ending).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningApiServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Every `interval`, compacts the store up to the revision it had one
/// interval earlier, so watches and lists can always go back one interval.
async fn compact_periodically(store: Arc<dyn Store>, interval: std::time::Duration) {
    let mut previous: Option<i64> = None;
    loop {
        tokio::time::sleep(interval).await;
        if let Some(rev) = previous
            && let Err(e) = store.compact(rev).await
        {
            tracing::warn!(revision = rev, error = %e, "compacting the store");
        }
        previous = store.current_revision().await.ok();
    }
}

/// Boots the API server on `store`.
pub async fn start(config: ApiServerConfig, store: Arc<dyn Store>) -> Result<RunningApiServer, StartError> {
    // 1. Certificates: CA, serving, admin.
    let mut ips: Vec<IpAddr> = vec![config.bind_address, IpAddr::V4(config.kubernetes_service_ip())];
    if !config.bind_address.is_loopback() {
        ips.push(IpAddr::from([127, 0, 0, 1]));
    }
    let pki = pki::Pki::load_or_create(&config.data_dir.join("pki"), &ips)?;
    // 2. TLS.
    let tls = tls::server_config(&pki)?;
    // 3. State, with the client identity the API server shows node agents.
    let kubelet_client = pki.issue_client(kubelet::CLIENT_USER, &["system:masters"])?;
    let objects = objects::Objects::new(store);
    let app = Arc::new(state::App {
        caches: watchcache::WatchCaches::new(objects.clone(), config.watch_cache_history),
        kubelet_tls: kubelet::client_config(&kubelet_client)?,
        summaries: Default::default(),
        objects,
        allocator: alloc::Allocator::new(&config),
        metrics: system::Metrics::default(),
        config: config.clone(),
    });
    // 4. Objects that exist from the start.
    bootstrap::ensure(&app).await.map_err(|e| StartError::Bootstrap(e.message))?;
    // Fill every watch cache now, as upstream does at start: a cache made
    // later would begin after revisions clients have already seen, and their
    // watches from those revisions would get 410.
    for r in waggle_api::registry::RESOURCES.iter().filter(|r| r.has_verb("watch")) {
        app.caches.get(r).await.map_err(|e| StartError::Bootstrap(e.message))?;
    }
    // 5. Listen and serve; compact the store's history meanwhile.
    let compactor = compact_periodically(app.objects.store().clone(), config.compaction_interval);
    let addr = SocketAddr::new(config.bind_address, config.secure_port);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Listen { addr, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen { addr, source })?;
    let router = Router::new().fallback(handlers::dispatch).with_state(app);
    // One task: aborting it (dropping the server) stops both.
    let task = tokio::spawn(async move {
        tokio::select! {
            () = serve::serve_tls(listener, tls, router) => {}
            () = compactor => {}
        }
    });
    let server = match addr.ip() {
        IpAddr::V6(ip) => format!("https://[{ip}]:{}", addr.port()),
        IpAddr::V4(ip) => format!("https://{ip}:{}", addr.port()),
    };
    let admin_kubeconfig = pki::kubeconfig(&server, &pki.ca.cert_pem, &pki.admin, "kubernetes-admin");
    tracing::info!(%addr, "API server listening");
    Ok(RunningApiServer { addr, admin_kubeconfig, pki, task: Some(task) })
}
