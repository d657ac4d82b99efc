//! WATCH: newline-delimited JSON events over a chunked response, from a
//! resourceVersion, with selectors, bookmarks, timeouts and Tables.
//!
//! Served from the watch cache: N watches of a type share one store watch.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use waggle_api::{ResourceInfo, StatusError};
use waggle_store::EventKind;

use super::read::Selectors;
use super::table::{Include, table};
use crate::objects::parse_rv;
use crate::request::{Query, metadata_version, table_version};
use crate::response::ApiResult;
use crate::routes::Target;
use crate::state::AppRef;
use crate::watchcache::{CachedEvent, CachedObject};

/// How long a watch without `timeoutSeconds` stays open (upstream's
/// --min-request-timeout is 1800 s).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);

struct Rendering {
    resource: &'static ResourceInfo,
    table: Option<&'static str>,
    /// PartialObjectMetadata events, in this `meta.k8s.io` version.
    metadata: Option<&'static str>,
    include: Include,
    sent_columns: bool,
}

impl Rendering {
    /// An object's event: its cached JSON spliced in, or a Table row.
    fn object_event(&mut self, ty: &str, obj: &CachedObject) -> Bytes {
        if self.table.is_some() || self.metadata.is_some() {
            return self.event(ty, &obj.value());
        }
        let json = obj.json();
        let mut line = Vec::with_capacity(json.len() + 32);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(ty.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        line.extend_from_slice(json);
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    }

    fn event(&mut self, ty: &str, obj: &Value) -> Bytes {
        let object = match self.table {
            Some(version) if ty != "BOOKMARK" && ty != "ERROR" => {
                let with_columns = !self.sent_columns;
                self.sent_columns = true;
                let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
                table(
                    self.resource,
                    std::slice::from_ref(obj),
                    json!({"resourceVersion": rv}),
                    self.include,
                    version,
                    with_columns,
                )
            }
            _ => match self.metadata {
                Some(version) if ty != "BOOKMARK" && ty != "ERROR" => {
                    super::table::partial_object_metadata(obj, version)
                }
                _ => obj.clone(),
            },
        };
        let mut line = serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

pub async fn watch(app: AppRef, t: &Target, q: &Query, headers: &HeaderMap) -> ApiResult {
    let selectors = Selectors::parse(t.resource, q)?;
    let rv = q.get("resourceVersion").unwrap_or_default().to_owned();
    let bookmarks = q.flag("allowWatchBookmarks");
    let timeout = q.int("timeoutSeconds")?.map(|s| Duration::from_secs(s.max(0) as u64)).unwrap_or(DEFAULT_TIMEOUT);
    let mut render = Rendering {
        resource: t.resource,
        table: table_version(headers),
        metadata: metadata_version(headers),
        include: Include::parse(q.get("includeObject")),
        sent_columns: false,
    };
    // A watch of one named object (`.../pods/p?watch=true`) is a field selector.
    let mut selectors = selectors;
    if let Some(name) = &t.name {
        selectors.field.terms.push(waggle_api::selector::FieldTerm {
            field: "metadata.name".into(),
            value: name.clone(),
            negated: false,
        });
    }
    let mut target = t.clone();
    target.name = None;

    // "" and "0": start with the current state as ADDED events.
    let after = if rv.is_empty() || rv == "0" { None } else { Some(parse_rv(&rv)?) };
    let cache = match after {
        None => app.caches.get(t.resource).await?,
        Some(after) => match app.caches.reaching(t.resource, after).await? {
            Some(cache) => cache,
            None => {
                let current = app.caches.get(t.resource).await?.revision();
                return Err(StatusError::new(
                    waggle_api::Reason::Timeout,
                    format!("Too large resource version: {after}, current: {current}"),
                )
                .into());
            }
        },
    };
    let namespace = target.namespace.clone();
    let in_scope = move |obj: &CachedObject| namespace.as_deref().is_none_or(|ns| obj.namespace() == Some(ns));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let resource = t.resource;
    app.metrics.watches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let app_for_task = app.clone();
    let started = cache.watch_from(after).await;
    tokio::spawn(async move {
        let start = match started {
            Ok(s) => s,
            Err(e) => {
                // Upstream sends a too-old resourceVersion as an ERROR event in a 200.
                let _ = tx.send(Ok(render.event("ERROR", &e.to_status()))).await;
                app_for_task.metrics.watches.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        };
        // What the watch starts with: the current state as ADDED, or the
        // kept events after the requested resourceVersion.
        for ev in &start.initial {
            if in_scope(&ev.obj)
                && let Some((ty, obj)) = convert(&selectors, ev)
                && tx.send(Ok(render.object_event(ty, obj))).await.is_err()
            {
                app_for_task.metrics.watches.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
        // The subscription was taken atomically with the snapshot above, so
        // every live event is newer than it; `passed` is the revision up to
        // which this watch has sent (or filtered out) every event.
        let mut passed = start.revision.max(after.unwrap_or(0));
        let mut live = start.live;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            let ev = tokio::select! {
                _ = &mut deadline => break,
                _ = tx.closed() => break,
                _ = ticker.tick() => {
                    if bookmarks {
                        let rv = bookmark_revision(cache.revision(), passed, &live);
                        let obj = json!({"kind": resource.kind, "apiVersion": resource.api_version(), "metadata": {"resourceVersion": rv.to_string()}});
                        if tx.send(Ok(render.event("BOOKMARK", &obj))).await.is_err() {
                            break;
                        }
                    }
                    continue;
                }
                ev = live.recv() => match ev {
                    Ok(ev) => ev,
                    // Too slow (or the cache refilled): end the watch; the
                    // client re-watches from its last resourceVersion.
                    Err(e) => {
                        tracing::info!(resource = resource.plural, passed, error = %e, "watch fell behind the cache or the cache refilled; closed");
                        break;
                    }
                },
            };
            passed = passed.max(ev.revision);
            if !in_scope(&ev.obj) {
                continue;
            }
            if let Some((ty, obj)) = convert(&selectors, &ev)
                && tx.send(Ok(render.object_event(ty, obj))).await.is_err()
            {
                break;
            }
        }
        app_for_task.metrics.watches.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    Ok(resp)
}

/// The resourceVersion a bookmark may carry: one this watch has passed.
/// The cache's revision only when nothing is still queued for this watch
/// (`cache_revision` read first: the cache publishes a revision after
/// queueing its events), otherwise a client resuming from the bookmark
/// after the watch ends (a slow watcher is cut off) would skip the events
/// still queued. A closed queue (the cache refilled) may have missed events.
fn bookmark_revision<T: Clone>(cache_revision: i64, passed: i64, queue: &tokio::sync::broadcast::Receiver<T>) -> i64 {
    if queue.is_empty() && !queue.is_closed() { cache_revision.max(passed) } else { passed }
}

/// One cached event as a watch event, with upstream's selector semantics:
/// an object that starts matching is ADDED, one that stops matching is DELETED.
fn convert<'a>(selectors: &Selectors, ev: &'a CachedEvent) -> Option<(&'static str, &'a CachedObject)> {
    let prev_matched = ev.prev.as_deref().is_some_and(|p| selectors.matches_cached(p));
    match ev.kind {
        EventKind::Put => match (prev_matched, selectors.matches_cached(&ev.obj)) {
            (false, true) => Some(("ADDED", &ev.obj)),
            (true, true) => Some(("MODIFIED", &ev.obj)),
            (true, false) => Some(("DELETED", &ev.obj)),
            (false, false) => None,
        },
        EventKind::Delete => prev_matched.then_some(("DELETED", &ev.obj)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bookmark_never_passes_events_still_queued_for_the_watch() {
        let (tx, rx) = tokio::sync::broadcast::channel::<i64>(8);
        assert_eq!(bookmark_revision(10, 5, &rx), 10, "nothing queued: the cache's revision");
        assert_eq!(bookmark_revision(3, 5, &rx), 5, "never behind what the watch sent");
        tx.send(7).expect("send");
        assert_eq!(bookmark_revision(10, 5, &rx), 5, "an event is queued: only what the watch passed");
        drop(tx);
        let (tx, rx) = tokio::sync::broadcast::channel::<i64>(8);
        drop(tx);
        assert_eq!(bookmark_revision(10, 5, &rx), 5, "a closed queue may have missed events");
    }
}
