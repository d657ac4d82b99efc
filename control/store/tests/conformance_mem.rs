//! The conformance suite against `MemStore`.

use std::time::Duration;

use waggle_store::{MemStore, MemStoreConfig};

fn config() -> MemStoreConfig {
    MemStoreConfig {
        min_lease_ttl: 1,
        progress_notify_interval: Duration::from_millis(300),
        lease_check_interval: Duration::from_millis(50),
        // Small, so the slow-watcher property exercises the catch-up path.
        watch_channel_capacity: 64,
        ..MemStoreConfig::default()
    }
}

waggle_store::conformance_tests!(|| async { (MemStore::new(config()).expect("a store inside a tokio runtime"), ()) });
