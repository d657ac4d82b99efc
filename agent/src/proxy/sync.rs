//! The proxy's loop: watch events update the [`ServiceIndex`] (cheap: the
//! object is stored and its Service marked dirty), and a debounced sync
//! recomputes the dirty Services and writes the map diff.
//!
//! Debounce: a sync runs once events have paused for `debounce`, or
//! `max_delay` after the first unsynced event, whichever is first; so a
//! burst of 10,000 Service events costs a handful of syncs, each one
//! recomputing only the Services that changed. Nothing is written before both
//! initial lists are complete: a half-listed cluster would delete the
//! frontends of the Services not listed yet.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Resource as _, ResourceExt as _};
use tokio::time::Instant;
use waggle_dataplane::lb::{Changes, Current, ObjectKey, ServiceIndex, apply_changes, apply_diff};
use waggle_dataplane::{Dataplane, Error as DpError};

use super::convert;
use super::metrics::ProxyMetrics;

/// Timing of the sync loop.
#[derive(Clone, Copy, Debug)]
pub struct SyncTiming {
    /// Quiet time after the last event before a sync.
    pub debounce: Duration,
    /// Longest a change waits for a sync while events keep coming.
    pub max_delay: Duration,
    /// Retry interval after a sync that failed (a full map, a syscall error).
    pub retry: Duration,
}

impl Default for SyncTiming {
    fn default() -> Self {
        Self { debounce: Duration::from_millis(100), max_delay: Duration::from_secs(1), retry: Duration::from_secs(10) }
    }
}

pub(crate) enum Change {
    Service(Box<Event<Service>>),
    Slice(Box<Event<EndpointSlice>>),
}

/// Which list of which kind is being (re)received, and what it held.
#[derive(Default)]
struct Relist {
    services: Option<HashSet<ObjectKey>>,
    slices: Option<HashSet<ObjectKey>>,
    services_synced: bool,
    slices_synced: bool,
}

pub(crate) struct Syncer {
    pub index: ServiceIndex,
    pub current: Current,
    pub dp: Arc<Mutex<Dataplane>>,
    pub metrics: Arc<ProxyMetrics>,
    pub recorder: Recorder,
    pub services: Store<Service>,
    pub timing: SyncTiming,
    /// Services told (by an Event) that they could not be programmed.
    reported: BTreeSet<ObjectKey>,
    failed: bool,
    relist: Relist,
    /// Changes not applied yet (kept across a failed sync); `None` until
    /// the first sync, which compares everything with what the maps hold.
    pending: Option<Changes>,
}

fn key_of<K: kube::Resource>(obj: &K) -> ObjectKey {
    (obj.meta().namespace.clone().unwrap_or_default(), obj.meta().name.clone().unwrap_or_default())
}

impl Syncer {
    pub fn new(
        index: ServiceIndex,
        current: Current,
        dp: Arc<Mutex<Dataplane>>,
        metrics: Arc<ProxyMetrics>,
        recorder: Recorder,
        services: Store<Service>,
        timing: SyncTiming,
    ) -> Self {
        Self {
            index,
            current,
            dp,
            metrics,
            recorder,
            services,
            timing,
            reported: BTreeSet::new(),
            failed: false,
            relist: Relist::default(),
            pending: None,
        }
    }

    /// Runs until the event stream ends.
    pub async fn run(
        mut self,
        events: impl futures::Stream<Item = Result<Change, watcher::Error>> + Unpin,
    ) -> Result<(), crate::Error> {
        let mut events = events;
        let mut first_pending: Option<Instant> = None;
        let mut last_event = Instant::now();
        let mut retry_at: Option<Instant> = None;
        loop {
            let synced = self.relist.services_synced && self.relist.slices_synced;
            let due = match first_pending {
                Some(first) if synced => Some((last_event + self.timing.debounce).min(first + self.timing.max_delay)),
                _ => None,
            };
            let wake = match (due, retry_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                ev = events.next() => match ev {
                    None => return Err(crate::Error::Config("the Service and EndpointSlice watches ended".into())),
                    Some(Err(e)) => tracing::warn!(error = %e, "watching Services or EndpointSlices"),
                    Some(Ok(change)) => {
                        let relisted = self.handle(change);
                        if relisted || self.index.pending() > 0 {
                            first_pending.get_or_insert_with(Instant::now);
                            last_event = Instant::now();
                        }
                    }
                },
                () = sleep_until(wake) => {
                    first_pending = None;
                    self.sync().await;
                    retry_at = self.failed.then(|| Instant::now() + self.timing.retry);
                }
            }
        }
    }

    /// Applies one watch event to the index. True when a (re)list finished:
    /// a sync follows even if nothing changed, so the first one runs in an
    /// empty cluster too (and clears what a previous agent left).
    fn handle(&mut self, change: Change) -> bool {
        let mut relisted = false;
        match change {
            Change::Service(ev) => match *ev {
                Event::Init => self.relist.services = Some(HashSet::new()),
                Event::InitApply(svc) | Event::Apply(svc) => {
                    if let Some(seen) = &mut self.relist.services {
                        seen.insert(key_of(&svc));
                    }
                    self.index.upsert_service(convert::service(&svc));
                }
                Event::Delete(svc) => {
                    let (ns, name) = key_of(&svc);
                    self.index.remove_service(&ns, &name);
                }
                Event::InitDone => {
                    let seen = self.relist.services.take().unwrap_or_default();
                    let gone: Vec<ObjectKey> =
                        self.index.service_keys().filter(|k| !seen.contains(*k)).cloned().collect();
                    for (ns, name) in gone {
                        self.index.remove_service(&ns, &name);
                    }
                    self.relist.services_synced = true;
                    relisted = true;
                }
            },
            Change::Slice(ev) => match *ev {
                Event::Init => self.relist.slices = Some(HashSet::new()),
                Event::InitApply(slice) | Event::Apply(slice) => {
                    let (ns, name) = key_of(&slice);
                    if let Some(seen) = &mut self.relist.slices {
                        seen.insert((ns.clone(), name.clone()));
                    }
                    match convert::endpoint_slice(&slice) {
                        Some(s) => self.index.upsert_slice(&name, s),
                        None => self.index.remove_slice(&ns, &name),
                    }
                }
                Event::Delete(slice) => {
                    let (ns, name) = key_of(&slice);
                    self.index.remove_slice(&ns, &name);
                }
                Event::InitDone => {
                    let seen = self.relist.slices.take().unwrap_or_default();
                    let gone: Vec<ObjectKey> =
                        self.index.slice_keys().filter(|k| !seen.contains(*k)).cloned().collect();
                    for (ns, name) in gone {
                        self.index.remove_slice(&ns, &name);
                    }
                    self.relist.slices_synced = true;
                    relisted = true;
                }
            },
        }
        relisted
    }

    /// Recomputes what changed and writes the diff; reports what could not be
    /// written.
    async fn sync(&mut self) {
        let started = std::time::Instant::now();
        let refreshed = self.index.refresh();
        self.metrics.services_recomputed.inc_by(refreshed.recomputed as u64);
        let changes = self.index.take_changes();
        let result = {
            let Ok(mut dp) = self.dp.lock() else {
                tracing::error!("the dataplane lock is poisoned; Service maps are not updated");
                return;
            };
            // The first sync adopts what a previous agent left and removes
            // what nobody wants: a full comparison. Later ones look only at
            // the frontends and groups whose Services changed.
            match &mut self.pending {
                None => apply_diff(&mut self.current, self.index.desired(), &mut dp.lb_maps().writers()),
                Some(pending) => {
                    pending.extend(changes);
                    apply_changes(&mut self.current, self.index.desired(), pending, &mut dp.lb_maps().writers())
                }
            }
        };
        if result.is_ok() {
            self.pending = Some(Changes::default());
        }
        let elapsed = started.elapsed();
        self.metrics.syncs.inc();
        self.metrics.sync_seconds.observe(elapsed.as_secs_f64());
        self.metrics.frontends.set(self.current.frontend_count() as i64);
        self.metrics.frontend_conflicts.set(self.index.desired().conflicts.len() as i64);
        let error = match result {
            Ok(stats) => {
                self.failed = false;
                self.metrics.map_writes.inc_by(stats.total() as u64);
                tracing::debug!(?stats, recomputed = refreshed.recomputed, ?elapsed, "synced the Service maps");
                None
            }
            Err(e) => {
                self.failed = true;
                if let DpError::MapFull { name, .. } = &e {
                    self.metrics.map_full_inc(name);
                }
                // apply_diff logged the error itself.
                Some(e.to_string())
            }
        };
        self.report(error.as_deref()).await;
    }

    /// Events for Services that could not be programmed (once per Service
    /// until it is), and the gauge of how many there are.
    async fn report(&mut self, error: Option<&str>) {
        if error.is_none() && self.reported.is_empty() {
            self.metrics.unprogrammed_services.set(0);
            return;
        }
        // Only after a failure, or while some Service is still reported:
        // a walk over the desired frontends.
        let mut unprogrammed: BTreeMap<ObjectKey, usize> = BTreeMap::new();
        for (fe, spec) in &self.index.desired().frontends {
            if !self.current.is_programmed(fe, spec) {
                *unprogrammed.entry((spec.group.namespace.clone(), spec.group.service.clone())).or_default() += 1;
            }
        }
        self.metrics.unprogrammed_services.set(unprogrammed.len() as i64);
        for key in self.reported.iter().filter(|k| !unprogrammed.contains_key(*k)) {
            tracing::info!(namespace = %key.0, service = %key.1, "Service is programmed now");
        }
        self.reported.retain(|k| unprogrammed.contains_key(k));
        let Some(error) = error else { return };
        for (key, missing) in unprogrammed {
            if self.reported.contains(&key) {
                continue;
            }
            tracing::error!(namespace = %key.0, service = %key.1, frontends = missing, %error,
                "Service could not be programmed into the eBPF maps");
            let Some(svc) = self.services.get(&ObjectRef::new(&key.1).within(&key.0)) else { continue };
            let event = KubeEvent {
                type_: EventType::Warning,
                reason: "FailedToProgram".into(),
                note: Some(format!("{missing} frontend(s) not load balanced on this node: {error}")),
                action: "Programming".into(),
                secondary: None,
            };
            match self.recorder.publish(&event, &svc.object_ref(&())).await {
                Ok(()) => {
                    self.reported.insert(key);
                }
                Err(e) => tracing::warn!(service = %svc.name_any(), error = %e, "publishing an Event failed"),
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
