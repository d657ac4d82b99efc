//! The watch cache: per resource type, one store watch feeds an in-memory
//! copy of every object and a window of recent events. Watches and
//! unpaginated lists are served from it, so N watchers cost one store watch
//! and a list does not read the store.
//!
//! Consistency: a consistent read (resourceVersion "") first asks the store
//! for its current revision and waits until the cache has caught up (a
//! progress request makes the store confirm revisions that had no events for
//! this type), as upstream's consistent reads from cache do.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock, broadcast, watch};
use waggle_api::{ResourceInfo, StatusError};
use waggle_store::{EventKind, KeyRange, Revision, WatchMessage, WatchRequest};

use crate::objects::{Objects, decode, prefix, store_error};

/// Buffered events per watcher before it is cut off (it then re-watches).
const FANOUT_BUFFER: usize = 4096;
/// How long a consistent read waits for the cache before reading the store.
const CATCH_UP: Duration = Duration::from_secs(3);

/// An object as lists and watches serve it: decoded (for selectors and
/// Tables) and its JSON, written once when the cache takes the object, so
/// that lists and watch events are the bytes concatenated, never
/// re-serialized per request or per watcher.
#[derive(Debug)]
pub struct CachedObject {
    value: Value,
    json: OnceLock<Bytes>,
}

impl CachedObject {
    /// An object whose JSON is written on first use.
    pub fn new(value: Value) -> Self {
        Self { value, json: OnceLock::new() }
    }

    /// An object with its JSON written now (what the cache keeps).
    fn serialized(value: Value) -> Self {
        let obj = Self::new(value);
        obj.json();
        obj
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The object's JSON.
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| Bytes::from(serde_json::to_vec(&self.value).unwrap_or_default()))
    }
}

impl std::ops::Deref for CachedObject {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

/// One change, decoded once and shared by every watcher.
#[derive(Debug)]
pub struct CachedEvent {
    pub revision: Revision,
    pub kind: EventKind,
    /// The object after a put; the last state (with the delete's revision) after a delete.
    pub obj: Arc<CachedObject>,
    pub prev: Option<Arc<CachedObject>>,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<Vec<u8>, Arc<CachedObject>>,
    history: VecDeque<Arc<CachedEvent>>,
    /// Revision the cache reflects.
    revision: Revision,
    /// Oldest revision a watch may resume after.
    oldest: Revision,
}

/// The cache of one resource type.
#[derive(Debug)]
pub struct Cache {
    state: RwLock<State>,
    events: broadcast::Sender<Arc<CachedEvent>>,
    revision: watch::Sender<Revision>,
    watch_id: Mutex<Option<i64>>,
}

/// What a watch starts with, read atomically with its subscription.
pub struct WatchStart {
    pub initial: Vec<Arc<CachedEvent>>,
    pub live: broadcast::Receiver<Arc<CachedEvent>>,
    pub revision: Revision,
}

impl Cache {
    /// The revision the cache has reached.
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// The objects whose key starts with `prefix`, in key order, at the
    /// cache's revision.
    pub async fn list_prefix(&self, prefix: &[u8]) -> (Vec<Arc<CachedObject>>, Revision) {
        let state = self.state.read().await;
        let items = state
            .objects
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (items, state.revision)
    }

    /// Subscribes and returns what happened after `after` (`None`: the
    /// current state as synthetic ADDED events). Err(Expired) when `after`
    /// is older than the kept window.
    pub async fn watch_from(&self, after: Option<Revision>) -> Result<WatchStart, StatusError> {
        let state = self.state.read().await;
        let live = self.events.subscribe();
        let initial = match after {
            None => state
                .objects
                .values()
                .map(|o| {
                    Arc::new(CachedEvent { revision: state.revision, kind: EventKind::Put, obj: o.clone(), prev: None })
                })
                .collect(),
            Some(rv) if rv < state.oldest => {
                return Err(StatusError::expired(format!("too old resource version: {rv} ({})", state.oldest)));
            }
            Some(rv) => state.history.iter().filter(|e| e.revision > rv).cloned().collect(),
        };
        Ok(WatchStart { initial, live, revision: state.revision })
    }

    /// Waits until the cache has reached `revision` (or the timeout).
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok())
    }
}

/// All caches, made on first use.
#[derive(Debug)]
pub struct WatchCaches {
    objects: Objects,
    history: usize,
    caches: Mutex<HashMap<(&'static str, &'static str), Arc<Cache>>>,
    /// Store watches opened (one per type, plus re-opens after a loss).
    pub store_watches: Arc<std::sync::atomic::AtomicU64>,
}

impl WatchCaches {
    pub fn new(objects: Objects, history: usize) -> Self {
        Self { objects, history: history.max(1), caches: Mutex::new(HashMap::new()), store_watches: Arc::default() }
    }

    /// The cache of `r`, filled and watching.
    pub async fn get(&self, r: &'static ResourceInfo) -> Result<Arc<Cache>, StatusError> {
        let mut caches = self.caches.lock().await;
        if let Some(c) = caches.get(&(r.group, r.plural)) {
            return Ok(c.clone());
        }
        let cache = start(self.objects.clone(), r, self.history, self.store_watches.clone()).await?;
        caches.insert((r.group, r.plural), cache.clone());
        Ok(cache)
    }

    /// The cache of `r`, caught up with the store's current revision: what a
    /// consistent read is served from. `None` if it could not catch up in time.
    pub async fn consistent(&self, r: &'static ResourceInfo) -> Result<Option<Arc<Cache>>, StatusError> {
        let current = self.objects.current_revision().await?;
        self.reaching(r, current).await
    }

    /// The cache of `r` once it reflects `revision`. Writes to other types
    /// move the store's revision without events for this one, so the store
    /// is asked to confirm progress rather than waiting for the next event.
    pub async fn reaching(
        &self,
        r: &'static ResourceInfo,
        revision: Revision,
    ) -> Result<Option<Arc<Cache>>, StatusError> {
        let cache = self.get(r).await?;
        if cache.revision() >= revision {
            return Ok(Some(cache));
        }
        if let Some(id) = *cache.watch_id.lock().await {
            let _ = self.objects.store().request_progress(id).await;
        }
        Ok(cache.wait_for(revision, CATCH_UP).await.then_some(cache))
    }
}

/// Lists the type, then follows it with one store watch.
async fn start(
    objects: Objects,
    r: &'static ResourceInfo,
    history: usize,
    store_watches: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Arc<Cache>, StatusError> {
    let (events, _) = broadcast::channel(FANOUT_BUFFER);
    let (revision_tx, _) = watch::channel(0);
    let cache = Arc::new(Cache {
        state: RwLock::new(State::default()),
        events,
        revision: revision_tx,
        watch_id: Mutex::new(None),
    });
    fill(&objects, r, &cache).await?;
    let task_cache = cache.clone();
    tokio::spawn(async move {
        loop {
            store_watches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = follow(&objects, r, &task_cache, history).await {
                tracing::warn!(resource = r.plural, error = %e.message, "watch cache lost its store watch; refilling");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Err(e) = fill(&objects, r, &task_cache).await {
                tracing::warn!(resource = r.plural, error = %e.message, "refilling the watch cache");
            }
        }
    });
    Ok(cache)
}

async fn fill(objects: &Objects, r: &'static ResourceInfo, cache: &Cache) -> Result<(), StatusError> {
    let page = objects.list(r, None, 0, 0, None).await?;
    let mut state = cache.state.write().await;
    state.objects = page
        .items
        .into_iter()
        .map(|o| {
            let key =
                crate::objects::key(r, waggle_api::meta::namespace(&o), waggle_api::meta::name(&o).unwrap_or_default());
            (key, Arc::new(CachedObject::serialized(o)))
        })
        .collect();
    state.history.clear();
    state.revision = page.revision;
    state.oldest = page.revision;
    cache.revision.send_replace(page.revision);
    Ok(())
}

/// Applies the store's events until the watch ends.
async fn follow(objects: &Objects, r: &'static ResourceInfo, cache: &Cache, history: usize) -> Result<(), StatusError> {
    let start = cache.revision() + 1;
    let mut watcher = objects
        .store()
        .watch(WatchRequest {
            range: KeyRange::prefix(prefix(r, None)),
            start_revision: start,
            prev_kv: true,
            progress_notify: true,
            ..Default::default()
        })
        .await
        .map_err(store_error)?;
    *cache.watch_id.lock().await = Some(watcher.id);
    while let Some(msg) = watcher.next().await {
        match msg {
            WatchMessage::Events { revision, events } => {
                let mut state = cache.state.write().await;
                for ev in events {
                    let key = ev.kv.key.clone();
                    let prev = state.objects.get(&key).cloned();
                    let cached = match ev.kind {
                        EventKind::Put => {
                            let obj = Arc::new(CachedObject::serialized(decode(&ev.kv)?));
                            state.objects.insert(key, obj.clone());
                            CachedEvent { revision, kind: EventKind::Put, obj, prev }
                        }
                        EventKind::Delete => {
                            state.objects.remove(&key);
                            let Some(last) = prev.clone().or_else(|| {
                                ev.prev_kv
                                    .as_ref()
                                    .and_then(|kv| decode(kv).ok())
                                    .map(|o| Arc::new(CachedObject::new(o)))
                            }) else {
                                continue;
                            };
                            let mut obj = last.value().clone();
                            waggle_api::meta::set_meta(
                                &mut obj,
                                "resourceVersion",
                                Some(Value::String(revision.to_string())),
                            );
                            CachedEvent {
                                revision,
                                kind: EventKind::Delete,
                                obj: Arc::new(CachedObject::serialized(obj)),
                                prev: Some(last),
                            }
                        }
                    };
                    let cached = Arc::new(cached);
                    state.history.push_back(cached.clone());
                    if state.history.len() > history
                        && let Some(old) = state.history.pop_front()
                    {
                        state.oldest = old.revision;
                    }
                    // No receivers is fine: nobody is watching right now.
                    let _ = cache.events.send(cached);
                }
                state.revision = revision;
                drop(state);
                cache.revision.send_replace(revision);
            }
            WatchMessage::Progress { revision } => {
                let mut state = cache.state.write().await;
                if revision > state.revision {
                    state.revision = revision;
                    drop(state);
                    cache.revision.send_replace(revision);
                }
            }
            WatchMessage::Compacted { compact_revision } => {
                return Err(StatusError::expired(format!("the store compacted past the cache ({compact_revision})")));
            }
        }
    }
    Err(StatusError::internal("the store ended the watch"))
}
