//! The Service proxy's Prometheus metrics, served at `/metrics` by the agent
//! API and, for `waggle proxy`, by a plain HTTP listener of its own (as
//! kube-proxy's `--metrics-bind-address`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Every metric of the proxy, registered once.
#[derive(Debug)]
pub struct ProxyMetrics {
    registry: Registry,
    /// Syncs that stopped at a full map, by map name.
    pub map_full: Family<Labels, Counter>,
    /// Services with at least one frontend not in the maps.
    pub unprogrammed_services: Gauge,
    /// Frontends in the kernel map.
    pub frontends: Gauge,
    /// Map syncs and how long each took.
    pub syncs: Counter,
    pub sync_seconds: Histogram,
    /// Services whose desired state was recomputed (one per changed Service).
    pub services_recomputed: Counter,
    /// Frontends claimed by two Services.
    pub frontend_conflicts: Gauge,
    /// Entries written to or deleted from the LB maps (a Maglev row counts one).
    pub map_writes: Counter,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("waggle_proxy");
        let map_full = Family::<Labels, Counter>::default();
        registry.register("map_full", "Map syncs that stopped because an eBPF map was full", map_full.clone());
        let unprogrammed_services = Gauge::default();
        registry.register(
            "unprogrammed_services",
            "Services with a frontend that is not in the eBPF maps",
            unprogrammed_services.clone(),
        );
        let frontends = Gauge::default();
        registry.register("frontends", "Service frontends in the eBPF service map", frontends.clone());
        let syncs = Counter::default();
        registry.register("syncs", "Syncs of the eBPF maps with the API", syncs.clone());
        let sync_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register("sync_duration_seconds", "Time one sync of the eBPF maps took", sync_seconds.clone());
        let services_recomputed = Counter::default();
        registry.register(
            "services_recomputed",
            "Services whose desired load-balancing state was recomputed",
            services_recomputed.clone(),
        );
        let frontend_conflicts = Gauge::default();
        registry.register(
            "frontend_conflicts",
            "Frontends claimed by more than one Service",
            frontend_conflicts.clone(),
        );
        let map_writes = Counter::default();
        registry.register("map_writes", "Entries written to or deleted from the LB maps", map_writes.clone());
        Self {
            map_writes,
            registry,
            map_full,
            unprogrammed_services,
            frontends,
            syncs,
            sync_seconds,
            services_recomputed,
            frontend_conflicts,
        }
    }

    pub fn map_full_inc(&self, map: &str) {
        self.map_full.get_or_create(&vec![("map".to_owned(), map.to_owned())]).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding the proxy metrics failed");
        }
        out
    }
}

/// The content type of [`ProxyMetrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` over plain HTTP until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<ProxyMetrics>) -> Result<(), crate::Error> {
    let addr = listener.local_addr().map_err(crate::Error::io("reading the metrics address"))?;
    tracing::info!(%addr, "proxy metrics listening");
    loop {
        let (stream, _) = listener.accept().await.map_err(crate::Error::io("accepting a metrics connection"))?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let mut resp = if req.uri().path() == "/metrics" {
                        let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
                        if let Ok(v) = hyper::header::HeaderValue::from_str(CONTENT_TYPE) {
                            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                        }
                        r
                    } else {
                        Response::new(Full::new(Bytes::from_static(b"only /metrics is served here\n")))
                    };
                    if req.uri().path() != "/metrics" {
                        *resp.status_mut() = StatusCode::NOT_FOUND;
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}
