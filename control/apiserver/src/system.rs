//! `/version`, health endpoints and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use crate::response::json;

/// The Kubernetes version waggle reports. The minor picks the kubectl the
/// machine's dispatcher runs, so it must be one that is installed (1.33).
pub const MAJOR: &str = "1";
pub const MINOR: &str = "33";
pub const GIT_VERSION: &str = "v1.33.0-waggle";

pub fn version() -> Response {
    json(
        StatusCode::OK,
        &json!({
            "major": MAJOR,
            "minor": MINOR,
            "gitVersion": GIT_VERSION,
            "gitCommit": env!("CARGO_PKG_VERSION"),
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "rust",
            "compiler": "rustc",
            "platform": "linux/amd64",
        }),
    )
}

pub fn ok_text(body: &'static str) -> Response {
    let mut resp = Response::new(axum::body::Body::from(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// Request counters, rendered in Prometheus text format.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub watches: AtomicU64,
}

impl Metrics {
    pub fn render(&self, store_watches: u64) -> Response {
        let body = format!(
            "# HELP apiserver_request_total Requests served.\n# TYPE apiserver_request_total counter\napiserver_request_total {}\n\
             # HELP apiserver_request_errors_total Requests answered with an error Status.\n# TYPE apiserver_request_errors_total counter\napiserver_request_errors_total {}\n\
             # HELP apiserver_registered_watchers Watches currently open.\n# TYPE apiserver_registered_watchers gauge\napiserver_registered_watchers {}\n\
             # HELP apiserver_watch_cache_store_watches_total Store watches the watch cache opened.\n# TYPE apiserver_watch_cache_store_watches_total counter\napiserver_watch_cache_store_watches_total {}\n",
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.watches.load(Ordering::Relaxed),
            store_watches,
        );
        let mut resp = Response::new(axum::body::Body::from(body));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
        resp
    }
}
