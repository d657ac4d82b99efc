//! WATCH: newline-delimited JSON events over a chunked response, from a
//! resourceVersion, with selectors, bookmarks, timeouts and Tables.
//!
//! Not yet: a watch cache — each watch opens its own store watch.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use waggle_api::{ResourceInfo, StatusError};
use waggle_store::{EventKind, KeyRange, WatchMessage, WatchRequest};

use super::read::{Selectors, list_objects};
use super::table::{Include, table};
use crate::objects::{decode, parse_rv, prefix};
use crate::request::{Query, table_version};
use crate::response::ApiResult;
use crate::routes::Target;
use crate::state::AppRef;

/// How long a watch without `timeoutSeconds` stays open (upstream's
/// --min-request-timeout is 1800 s).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Rendering {
    resource: &'static ResourceInfo,
    table: Option<&'static str>,
    include: Include,
    sent_columns: bool,
}

impl Rendering {
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
            _ => obj.clone(),
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
    let mut initial = Vec::new();
    let start = if rv.is_empty() || rv == "0" {
        let listed = list_objects(&app, &target, &Query::default(), &selectors).await?;
        for obj in &listed.items {
            initial.push(render.event("ADDED", obj));
        }
        listed.revision + 1
    } else {
        parse_rv(&rv)? + 1
    };
    let range = KeyRange::prefix(prefix(t.resource, target.namespace.as_deref()));
    let watcher = app
        .objects
        .store()
        .watch(WatchRequest {
            range,
            start_revision: start,
            prev_kv: true,
            progress_notify: bookmarks,
            ..Default::default()
        })
        .await
        .map_err(crate::objects::store_error)?;

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let resource = t.resource;
    app.metrics.watches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let app_for_task = app.clone();
    tokio::spawn(async move {
        let mut watcher = watcher;
        for line in initial {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let msg = tokio::select! {
                _ = &mut deadline => break,
                _ = tx.closed() => break,
                msg = watcher.next() => msg,
            };
            let Some(msg) = msg else { break };
            let lines = match msg {
                WatchMessage::Events { events, .. } => {
                    let mut lines = Vec::new();
                    for ev in events {
                        if let Some((ty, obj)) = convert(resource, &selectors, &ev) {
                            lines.push(render.event(ty, &obj));
                        }
                    }
                    lines
                }
                WatchMessage::Progress { revision } if bookmarks => {
                    let obj = json!({"kind": resource.kind, "apiVersion": resource.api_version(), "metadata": {"resourceVersion": revision.to_string()}});
                    vec![render.event("BOOKMARK", &obj)]
                }
                WatchMessage::Progress { .. } => Vec::new(),
                WatchMessage::Compacted { compact_revision } => {
                    let err =
                        StatusError::expired(format!("too old resource version: {} ({compact_revision})", start - 1));
                    let _ = tx.send(Ok(render.event("ERROR", &err.to_status()))).await;
                    break;
                }
            };
            for line in lines {
                if tx.send(Ok(line)).await.is_err() {
                    break;
                }
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

/// One store event as a watch event, with upstream's selector semantics: an
/// object that starts matching is ADDED, one that stops matching is DELETED.
fn convert(resource: &ResourceInfo, selectors: &Selectors, ev: &waggle_store::Event) -> Option<(&'static str, Value)> {
    let _ = resource;
    let prev = ev.prev_kv.as_ref().and_then(|kv| decode(kv).ok());
    let prev_matched = prev.as_ref().is_some_and(|p| selectors.matches(p));
    match ev.kind {
        EventKind::Put => {
            let obj = decode(&ev.kv).ok()?;
            let matches = selectors.matches(&obj);
            match (prev.is_some() && prev_matched, matches) {
                (false, true) => Some(("ADDED", obj)),
                (true, true) => Some(("MODIFIED", obj)),
                (true, false) => Some(("DELETED", obj)),
                (false, false) => None,
            }
        }
        EventKind::Delete => {
            let mut obj = prev?;
            if !prev_matched {
                return None;
            }
            waggle_api::meta::set_meta(&mut obj, "resourceVersion", Some(json!(ev.kv.mod_revision.to_string())));
            Some(("DELETED", obj))
        }
    }
}
