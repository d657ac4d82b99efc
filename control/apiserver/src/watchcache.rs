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
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock, broadcast, watch};
use waggle_api::{ResourceInfo, StatusError};
use waggle_store::{EventKind, KeyRange, KeyValue, Revision, WatchMessage, WatchRequest};

use crate::handlers::read::supported_fields;
use crate::objects::{Objects, decode, prefix, store_error};

/// Buffered events per watcher before it is cut off (it then re-watches).
const FANOUT_BUFFER: usize = 4096;
/// How long a consistent read waits for the cache before reading the store.
const CATCH_UP: Duration = Duration::from_secs(3);

/// An object as lists and watches serve it: its JSON (with its
/// resourceVersion), written once when the cache takes the object, so that
/// lists and watch events are the bytes concatenated, never re-serialized
/// per request or per watcher; and beside it only what selectors read (its
/// labels and the fields its kind can be selected by). The decoded object
/// is not kept: it costs several times the bytes (every managedFields entry
/// a tree of maps), and only Tables and deletes need it, decoded on demand.
#[derive(Debug)]
pub struct CachedObject {
    json: Bytes,
    labels: BTreeMap<String, String>,
    /// The selectable fields (`metadata.name`, `spec.nodeName`, …) that are not empty.
    fields: Box<[(&'static str, Box<str>)]>,
}

impl CachedObject {
    /// `obj` of type `r` (with its resourceVersion), serialized now.
    pub fn new(r: &ResourceInfo, obj: &Value) -> Self {
        let json = Bytes::from(serde_json::to_vec(obj).unwrap_or_default());
        Self::with_json(r, obj, json)
    }

    fn with_json(r: &ResourceInfo, obj: &Value, json: Bytes) -> Self {
        let fields = supported_fields(r)
            .iter()
            .filter_map(|&f| {
                let v = waggle_api::selector::field_value(obj, f);
                (!v.is_empty()).then(|| (f, v.into_boxed_str()))
            })
            .collect();
        Self { json, labels: waggle_api::selector::labels_of(obj), fields }
    }

    /// A stored object of type `r`, with the key's mod_revision as its resourceVersion.
    pub fn from_stored(r: &ResourceInfo, kv: &KeyValue) -> Result<Self, StatusError> {
        Ok(Self::new(r, &decode(kv)?))
    }

    /// The object's JSON.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// The object decoded (for Tables and the like: lists and watches splice [`Self::json`]).
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// A selectable field's value as a field selector compares it ("" when
    /// absent, or when the kind cannot be selected by it).
    pub fn field(&self, field: &str) -> &str {
        self.fields.iter().find(|(f, _)| *f == field).map_or("", |(_, v)| v)
    }

    pub fn name(&self) -> &str {
        self.field("metadata.name")
    }

    pub fn namespace(&self) -> Option<&str> {
        Some(self.field("metadata.namespace")).filter(|ns| !ns.is_empty())
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

#[derive(Debug)]
struct State {
    objects: BTreeMap<Vec<u8>, Arc<CachedObject>>,
    /// Feeds the live watches. Replaced when the cache refills from a new
    /// list: the old watches end (their receivers close) rather than miss
    /// what changed while the cache had no store watch, as upstream's cacher
    /// terminates its watchers when it re-lists.
    events: broadcast::Sender<Arc<CachedEvent>>,
    history: VecDeque<Arc<CachedEvent>>,
    /// Revision the cache reflects.
    revision: Revision,
    /// Revision of the last change to the objects (an event, or the fill):
    /// the objects are those of every revision from here to `revision`.
    changed: Revision,
    /// Oldest revision a watch may resume after.
    oldest: Revision,
}

/// The cache of one resource type.
#[derive(Debug)]
pub struct Cache {
    state: RwLock<State>,
    revision: watch::Sender<Revision>,
    watch_id: Mutex<Option<i64>>,
}

/// A page of a list served by the cache.
pub struct Page {
    pub items: Vec<Arc<CachedObject>>,
    pub revision: Revision,
    /// The last key returned, when more keys follow.
    pub next_key: Option<Vec<u8>>,
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

    /// One page of a list, as the objects were at revision `at` (0: the
    /// cache's revision): up to `limit` objects of `prefix` after the key
    /// `after` that `matches` accepts, the revision, and the last key when
    /// more keys follow. `None` when the cache cannot show revision `at`
    /// (something of the type changed since, or the cache is not there yet).
    pub async fn page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        at: Revision,
        limit: usize,
        matches: impl Fn(&CachedObject) -> bool,
    ) -> Option<Page> {
        use std::ops::Bound;
        let state = self.state.read().await;
        let at = if at == 0 { state.revision } else { at };
        if at < state.changed || at > state.revision {
            return None;
        }
        let start = match after {
            Some(a) => Bound::Excluded(a.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let mut keys = state.objects.range((start, Bound::Unbounded)).take_while(|(k, _)| k.starts_with(prefix));
        let mut items = Vec::new();
        let mut last = None;
        for (k, o) in keys.by_ref() {
            if matches(o) {
                items.push(o.clone());
                if items.len() >= limit {
                    last = Some(k.clone());
                    break;
                }
            }
        }
        let next_key = last.filter(|_| keys.next().is_some());
        Some(Page { items, revision: at, next_key })
    }

    /// The object at `key` as the cache has it (it may be behind the store).
    pub async fn get_key(&self, key: &[u8]) -> Option<Arc<CachedObject>> {
        self.state.read().await.objects.get(key).cloned()
    }

    /// Subscribes and returns what happened after `after` (`None`: the
    /// current state as synthetic ADDED events). Err(Expired) when `after`
    /// is older than the kept window.
    pub async fn watch_from(&self, after: Option<Revision>) -> Result<WatchStart, StatusError> {
        let state = self.state.read().await;
        let live = state.events.subscribe();
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
            Some(rv) => {
                let first = state.history.partition_point(|e| e.revision <= rv);
                state.history.range(first..).cloned().collect()
            }
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
    let (revision_tx, _) = watch::channel(0);
    let cache = Arc::new(Cache {
        state: RwLock::new(State {
            objects: BTreeMap::new(),
            events: broadcast::channel(FANOUT_BUFFER).0,
            history: VecDeque::new(),
            revision: 0,
            changed: 0,
            oldest: 0,
        }),
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
    let resp = objects
        .store()
        .range(waggle_store::RangeRequest::new(KeyRange::prefix(prefix(r, None))))
        .await
        .map_err(store_error)?;
    let mut filled = BTreeMap::new();
    for kv in resp.kvs {
        let obj = Arc::new(CachedObject::from_stored(r, &kv)?);
        filled.insert(kv.key, obj);
    }
    let mut state = cache.state.write().await;
    state.objects = filled;
    // Watches that followed the old state end here (see `State::events`).
    state.events = broadcast::channel(FANOUT_BUFFER).0;
    state.history.clear();
    state.revision = resp.revision;
    state.changed = resp.revision;
    state.oldest = resp.revision;
    cache.revision.send_replace(resp.revision);
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
                // Decoded before the lock is taken: lists and new watches
                // wait only for the objects to be swapped in.
                let events = events
                    .into_iter()
                    .map(|ev| {
                        let put = match ev.kind {
                            EventKind::Put => Some(Arc::new(CachedObject::from_stored(r, &ev.kv)?)),
                            EventKind::Delete => None,
                        };
                        Ok((ev, put))
                    })
                    .collect::<Result<Vec<_>, StatusError>>()?;
                let mut state = cache.state.write().await;
                for (ev, put) in events {
                    let key = ev.kv.key.clone();
                    let prev = state.objects.get(&key).cloned();
                    let cached = match put {
                        Some(obj) => {
                            state.objects.insert(key, obj.clone());
                            CachedEvent { revision, kind: EventKind::Put, obj, prev }
                        }
                        None => {
                            state.objects.remove(&key);
                            let Some(last) = prev.clone().or_else(|| {
                                ev.prev_kv.as_ref().and_then(|kv| CachedObject::from_stored(r, kv).ok()).map(Arc::new)
                            }) else {
                                continue;
                            };
                            let mut obj = last.value();
                            waggle_api::meta::set_meta(
                                &mut obj,
                                "resourceVersion",
                                Some(Value::String(revision.to_string())),
                            );
                            CachedEvent {
                                revision,
                                kind: EventKind::Delete,
                                obj: Arc::new(CachedObject::new(r, &obj)),
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
                    let _ = state.events.send(cached);
                }
                state.revision = revision;
                state.changed = revision;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use waggle_api::registry::lookup;
    use waggle_api::selector::{FieldSelector, LabelSelector};
    use waggle_store::{MemStore, MemStoreConfig, PutRequest, Store};

    use crate::handlers::read::Selectors;

    fn pods() -> &'static ResourceInfo {
        lookup("", "v1", "pods").expect("pods")
    }

    async fn put_pod(store: &MemStore, name: &str, node: &str) {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}});
        let key = crate::objects::key(pods(), Some("default"), name);
        store.put(PutRequest::new(key, serde_json::to_vec(&pod).expect("json"))).await.expect("put");
    }

    #[test]
    fn a_cached_object_keeps_its_json_and_what_selectors_read() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "resourceVersion": "7", "labels": {"app": "web"},
                "managedFields": [{"manager": "m", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"nodeName": "n1", "hostNetwork": false}, "status": {"phase": "Running"}});
        let cached = CachedObject::new(pods(), &pod);
        assert_eq!(cached.value(), pod, "the JSON decodes back to the object");
        assert_eq!((cached.name(), cached.namespace()), ("p", Some("ns")));
        assert_eq!(cached.field("spec.hostNetwork"), "false");
        let select = |labels: &str, fields: &str| Selectors {
            label: LabelSelector::parse(labels).expect("labels"),
            field: FieldSelector::parse(fields).expect("fields"),
        };
        for (labels, fields, want) in [
            ("app=web", "spec.nodeName=n1,status.phase=Running", true),
            ("app!=web", "", false),
            ("", "spec.nodeName!=n1", false),
            ("", "spec.schedulerName=", true),
            ("", "metadata.namespace=ns,metadata.name=p", true),
        ] {
            let s = select(labels, fields);
            assert_eq!(s.matches_cached(&cached), want, "{labels:?} {fields:?}");
            assert_eq!(s.matches(&pod), want, "the decoded object agrees: {labels:?} {fields:?}");
        }
    }

    #[tokio::test]
    async fn pages_come_from_the_cache_only_while_it_shows_their_revision() {
        let store = MemStore::new(MemStoreConfig::default()).expect("store");
        for name in ["a", "b", "c"] {
            put_pod(&store, name, "n1").await;
        }
        let cache = start(Objects::new(Arc::new(store.clone())), pods(), 100, Arc::default()).await.expect("cache");
        let prefix = prefix(pods(), Some("default"));
        let first = cache.page(&prefix, None, 0, 2, |_| true).await.expect("first page");
        let names = |p: &Page| p.items.iter().map(|o| o.name().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(&first), ["a", "b"]);
        let after = first.next_key.clone().expect("more keys follow");
        let rest = cache.page(&prefix, Some(&after), first.revision, 2, |_| true).await.expect("second page");
        assert_eq!((names(&rest), rest.next_key), (vec!["c".to_owned()], None));
        // A change after the first page: its revision is the store's to serve.
        put_pod(&store, "d", "n1").await;
        assert!(cache.wait_for(store.current_revision().await.expect("rev"), Duration::from_secs(10)).await);
        assert!(cache.page(&prefix, Some(&after), first.revision, 2, |_| true).await.is_none());
        let filtered = cache.page(&prefix, None, 0, 1, |o| o.name() == "d").await.expect("page");
        assert_eq!((names(&filtered), filtered.next_key), (vec!["d".to_owned()], None));
    }

    #[tokio::test]
    async fn refilling_the_cache_ends_the_watches_that_followed_the_old_state() {
        let store = MemStore::new(MemStoreConfig::default()).expect("store");
        put_pod(&store, "a", "n1").await;
        let objects = Objects::new(Arc::new(store.clone()));
        let cache = start(objects.clone(), pods(), 100, Arc::default()).await.expect("cache");
        let mut watch = cache.watch_from(None).await.expect("watch");
        assert_eq!(watch.initial.len(), 1);
        // What a refill after a lost store watch does: the watch must end
        // (its client re-lists) rather than go on without what it missed.
        fill(&objects, pods(), &cache).await.expect("refill");
        put_pod(&store, "b", "n2").await;
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Err(e) = watch.live.recv().await {
                    return e;
                }
            }
        })
        .await
        .expect("the old watch ends");
        assert_eq!(ended, broadcast::error::RecvError::Closed);
        // A new watch follows the refilled cache.
        assert!(cache.wait_for(store.current_revision().await.expect("rev"), Duration::from_secs(10)).await);
        let names: Vec<String> =
            cache.watch_from(None).await.expect("watch").initial.iter().map(|e| e.obj.name().to_owned()).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
