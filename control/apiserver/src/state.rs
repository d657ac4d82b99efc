//! Shared state of the request handlers.

use std::sync::Arc;

use crate::alloc::Allocator;
use crate::config::ApiServerConfig;
use crate::objects::Objects;
use crate::system::Metrics;
use crate::watchcache::WatchCaches;

/// Everything a handler needs, built once at start.
#[derive(Debug)]
pub struct App {
    pub objects: Objects,
    pub config: ApiServerConfig,
    pub metrics: Metrics,
    pub allocator: Allocator,
    pub caches: WatchCaches,
    /// TLS to node agents (logs), with the API server's client identity.
    pub kubelet_tls: Arc<rustls::ClientConfig>,
    /// Agents' recent `/stats/summary`, for metrics.k8s.io.
    pub summaries: crate::handlers::metrics::SummaryCache,
}

pub type AppRef = Arc<App>;
