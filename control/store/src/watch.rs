//! The watch hub: which watchers exist, and the fan-out of each write to them.
//!
//! As in etcd, a watcher is either *synced* (it has seen everything up to
//! the current revision and receives new writes directly) or *unsynced* (it
//! needs history: it started in the past, or its channel was full). Writers
//! only ever `try_send` to synced watchers, so a slow reader never blocks a
//! write: a full channel turns its watcher unsynced, and a catch-up task
//! (run by the store) feeds it from the MVCC history until it is synced again.

use std::collections::HashMap;

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::mvcc::Index;
use crate::types::{Event, EventKind, Revision, WatchId, WatchMessage, WatchRequest};

/// How many revisions one catch-up step reads from the history at most.
const CATCH_UP_REVISIONS: Revision = 512;

#[derive(Debug)]
enum Sync {
    /// Receives writes at `min_revision` and later directly.
    Synced { min_revision: Revision },
    /// Needs history from `next_revision` on; a catch-up task is running.
    Unsynced { next_revision: Revision },
}

#[derive(Debug)]
struct Slot {
    req: WatchRequest,
    tx: mpsc::Sender<WatchMessage>,
    sync: Sync,
    /// An event went out since the last progress tick.
    active_since_tick: bool,
    /// A progress message was requested while the watcher was unsynced.
    progress_wanted: bool,
}

impl Slot {
    fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|e| self.req.range.contains(&e.kv.key))
            .filter(|e| match e.kind {
                EventKind::Put => !self.req.filter_puts,
                EventKind::Delete => !self.req.filter_deletes,
            })
            .map(|e| {
                let mut e = e.clone();
                if !self.req.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }
}

/// What one catch-up step found for a watcher.
#[derive(Debug)]
pub(crate) enum CatchUp {
    /// The watcher is gone (cancelled or its receiver dropped).
    Gone,
    /// The watcher is synced again; the task ends.
    Synced,
    /// Send these, then step again.
    Send(mpsc::Sender<WatchMessage>, Vec<WatchMessage>),
    /// The history it needs is compacted; the watcher was removed.
    Compacted(mpsc::Sender<WatchMessage>, Revision),
}

#[derive(Debug)]
pub(crate) struct Hub {
    next_id: WatchId,
    watchers: HashMap<WatchId, Slot>,
    capacity: usize,
}

impl Hub {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { next_id: 1, watchers: HashMap::new(), capacity: capacity.max(1) }
    }

    /// Registers a watcher. Returns its ID, its receiver, and whether it
    /// needs a catch-up task (it starts at or before `current`).
    pub(crate) fn add(
        &mut self,
        req: WatchRequest,
        current: Revision,
    ) -> (WatchId, mpsc::Receiver<WatchMessage>, bool) {
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = mpsc::channel(self.capacity);
        let start = if req.start_revision > 0 { req.start_revision } else { current + 1 };
        let (sync, needs_catch_up) = if start <= current {
            (Sync::Unsynced { next_revision: start }, true)
        } else {
            (Sync::Synced { min_revision: start }, false)
        };
        self.watchers.insert(id, Slot { req, tx, sync, active_since_tick: false, progress_wanted: false });
        (id, rx, needs_catch_up)
    }

    pub(crate) fn remove(&mut self, id: WatchId) {
        self.watchers.remove(&id);
    }

    pub(crate) fn contains(&self, id: WatchId) -> bool {
        self.watchers.contains_key(&id)
    }

    /// Hands the events of one committed revision to the synced watchers.
    /// Returns the watchers that fell behind and need a catch-up task.
    pub(crate) fn notify(&mut self, revision: Revision, events: &[Event]) -> Vec<WatchId> {
        let mut behind = Vec::new();
        let mut closed = Vec::new();
        for (id, slot) in &mut self.watchers {
            let Sync::Synced { min_revision } = slot.sync else { continue };
            if revision < min_revision {
                continue;
            }
            let selected = slot.select(events);
            if selected.is_empty() {
                continue;
            }
            match slot.tx.try_send(WatchMessage::Events { revision, events: selected }) {
                Ok(()) => slot.active_since_tick = true,
                Err(TrySendError::Full(_)) => {
                    slot.sync = Sync::Unsynced { next_revision: revision };
                    behind.push(*id);
                }
                Err(TrySendError::Closed(_)) => closed.push(*id),
            }
        }
        for id in closed {
            self.watchers.remove(&id);
        }
        behind
    }

    /// Queues a progress message for the watcher. Returns true when the
    /// watcher had to turn unsynced to get it (its channel was full).
    pub(crate) fn request_progress(&mut self, id: WatchId, current: Revision) -> bool {
        let Some(slot) = self.watchers.get_mut(&id) else { return false };
        match slot.sync {
            Sync::Unsynced { .. } => {
                slot.progress_wanted = true;
                false
            }
            Sync::Synced { .. } => match slot.tx.try_send(WatchMessage::Progress { revision: current }) {
                Ok(()) => false,
                Err(TrySendError::Full(_)) => {
                    slot.sync = Sync::Unsynced { next_revision: current + 1 };
                    slot.progress_wanted = true;
                    true
                }
                Err(TrySendError::Closed(_)) => {
                    self.watchers.remove(&id);
                    false
                }
            },
        }
    }

    /// The periodic progress notification: every synced watcher that asked
    /// for them and saw no event since the last tick hears the revision.
    pub(crate) fn progress_tick(&mut self, current: Revision) {
        for slot in self.watchers.values_mut() {
            if !slot.req.progress_notify {
                continue;
            }
            if matches!(slot.sync, Sync::Synced { .. }) && !slot.active_since_tick {
                // A full channel means events are queued, which tells progress anyway.
                let _ = slot.tx.try_send(WatchMessage::Progress { revision: current });
            }
            slot.active_since_tick = false;
        }
    }

    /// One step of an unsynced watcher's catch-up, under the store's lock.
    pub(crate) fn catch_up_step(
        &mut self,
        id: WatchId,
        index: &Index,
        current: Revision,
        compacted: Revision,
    ) -> CatchUp {
        let Some(slot) = self.watchers.get_mut(&id) else { return CatchUp::Gone };
        if slot.tx.is_closed() {
            self.watchers.remove(&id);
            return CatchUp::Gone;
        }
        let Sync::Unsynced { next_revision } = slot.sync else { return CatchUp::Synced };
        if next_revision < compacted {
            let tx = slot.tx.clone();
            self.watchers.remove(&id);
            return CatchUp::Compacted(tx, compacted);
        }
        if next_revision > current {
            if slot.progress_wanted {
                slot.progress_wanted = false;
                return CatchUp::Send(slot.tx.clone(), vec![WatchMessage::Progress { revision: current }]);
            }
            slot.sync = Sync::Synced { min_revision: next_revision };
            return CatchUp::Synced;
        }
        let to = current.min(next_revision + CATCH_UP_REVISIONS - 1);
        let messages: Vec<WatchMessage> = index
            .events(&slot.req.range, next_revision, to, slot.req.prev_kv)
            .into_iter()
            .filter_map(|(revision, events)| {
                let events = slot.select(&events);
                (!events.is_empty()).then_some(WatchMessage::Events { revision, events })
            })
            .collect();
        slot.sync = Sync::Unsynced { next_revision: to + 1 };
        if !messages.is_empty() {
            slot.active_since_tick = true;
        }
        CatchUp::Send(slot.tx.clone(), messages)
    }
}
