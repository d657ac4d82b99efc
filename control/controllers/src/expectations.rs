//! Upstream's ControllerExpectations: after a controller creates or deletes
//! pods it waits until its cache has seen those changes before deciding
//! again, so a stale cache never makes it create (or delete) twice.
//! Expectations expire, as upstream's do, so a lost event cannot wedge a key.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Pending {
    adds: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// Keyed by owner (`namespace/name`); values are pod names.
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    pub fn expect_adds(&self, key: &str, names: impl IntoIterator<Item = String>) {
        if let Ok(mut m) = self.inner.lock() {
            let p = m.entry(key.to_owned()).or_default();
            p.adds.extend(names);
            p.since = Some(Instant::now());
        }
    }

    pub fn expect_deletes(&self, key: &str, names: impl IntoIterator<Item = String>) {
        if let Ok(mut m) = self.inner.lock() {
            let p = m.entry(key.to_owned()).or_default();
            p.deletes.extend(names);
            p.since = Some(Instant::now());
        }
    }

    /// True when every expected change is visible: `present(name)` tells
    /// whether the cache holds that pod as active.
    pub fn satisfied(&self, key: &str, present: impl Fn(&str) -> bool) -> bool {
        let Ok(mut m) = self.inner.lock() else { return true };
        let Some(p) = m.get_mut(key) else { return true };
        p.adds.retain(|n| !present(n));
        p.deletes.retain(|n| present(n));
        let expired = p.since.is_some_and(|s| s.elapsed() > TTL);
        if (p.adds.is_empty() && p.deletes.is_empty()) || expired {
            m.remove(key);
            return true;
        }
        false
    }

    pub fn forget(&self, key: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_are_satisfied_once_the_cache_shows_every_change() {
        let e = Expectations::default();
        e.expect_adds("ns/rs", ["a".to_owned(), "b".to_owned()]);
        e.expect_deletes("ns/rs", ["c".to_owned()]);
        assert!(!e.satisfied("ns/rs", |n| n == "a" || n == "c"));
        assert!(!e.satisfied("ns/rs", |n| n == "b" || n == "c"));
        assert!(e.satisfied("ns/rs", |n| n == "b"));
        assert!(e.satisfied("other", |_| false));
    }
}
