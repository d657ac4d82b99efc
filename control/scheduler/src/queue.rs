//! The scheduling queue: pods waiting for a cycle (active, in arrival
//! order) and pods that fit nowhere (unschedulable), which go back to active
//! when the cluster changes or after a while.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Inner {
    active: VecDeque<String>,
    queued: HashSet<String>,
    unschedulable: HashMap<String, Instant>,
}

#[derive(Debug, Default)]
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl SchedulingQueue {
    /// A new or changed pod that needs a node. Pods parked as unschedulable
    /// stay parked: their own status updates must not retry them.
    pub fn add(&self, key: &str) {
        let Ok(mut q) = self.inner.lock() else { return };
        if q.unschedulable.contains_key(key) || q.queued.contains(key) {
            return;
        }
        q.queued.insert(key.to_owned());
        q.active.push_back(key.to_owned());
        drop(q);
        self.notify.notify_one();
    }

    /// Back to the active queue regardless (a failed bind).
    pub fn requeue(&self, key: &str) {
        if let Ok(mut q) = self.inner.lock() {
            q.unschedulable.remove(key);
        }
        self.add(key);
    }

    pub fn forget(&self, key: &str) {
        if let Ok(mut q) = self.inner.lock() {
            q.unschedulable.remove(key);
            if q.queued.remove(key) {
                q.active.retain(|k| k != key);
            }
        }
    }

    pub fn park(&self, key: &str) {
        if let Ok(mut q) = self.inner.lock() {
            q.unschedulable.insert(key.to_owned(), Instant::now());
        }
    }

    /// The cluster changed (node added or updated, pod deleted): every
    /// parked pod gets another try.
    pub fn move_all_to_active(&self) {
        let Ok(mut q) = self.inner.lock() else { return };
        if q.unschedulable.is_empty() {
            return;
        }
        let parked: Vec<String> = q.unschedulable.drain().map(|(k, _)| k).collect();
        for k in parked {
            if q.queued.insert(k.clone()) {
                q.active.push_back(k);
            }
        }
        drop(q);
        self.notify.notify_one();
    }

    /// Parked pods older than `age` get another try (upstream's flush).
    pub fn flush_older_than(&self, age: Duration) {
        let Ok(mut q) = self.inner.lock() else { return };
        let old: Vec<String> =
            q.unschedulable.iter().filter(|(_, t)| t.elapsed() >= age).map(|(k, _)| k.clone()).collect();
        if old.is_empty() {
            return;
        }
        for k in old {
            q.unschedulable.remove(&k);
            if q.queued.insert(k.clone()) {
                q.active.push_back(k);
            }
        }
        drop(q);
        self.notify.notify_one();
    }

    /// Takes every active pod, if any.
    pub fn try_pop_all(&self) -> Vec<String> {
        let Ok(mut q) = self.inner.lock() else { return Vec::new() };
        q.queued.clear();
        q.active.drain(..).collect()
    }

    /// Waits for work, then takes every active pod.
    pub async fn pop_all(&self) -> Vec<String> {
        loop {
            let notified = self.notify.notified();
            let popped = self.try_pop_all();
            if !popped.is_empty() {
                return popped;
            }
            notified.await;
        }
    }

    /// (active, unschedulable) pods, for the scheduler's progress log.
    pub fn lengths(&self) -> (usize, usize) {
        self.inner.lock().map(|q| (q.active.len(), q.unschedulable.len())).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parked_pods_come_back_only_when_the_cluster_changes() {
        let q = SchedulingQueue::default();
        q.add("ns/a");
        q.add("ns/a");
        assert_eq!(q.pop_all().await, vec!["ns/a".to_owned()]);
        q.park("ns/a");
        q.add("ns/a");
        q.add("ns/b");
        assert_eq!(q.pop_all().await, vec!["ns/b".to_owned()]);
        q.move_all_to_active();
        assert_eq!(q.pop_all().await, vec!["ns/a".to_owned()]);
    }
}
