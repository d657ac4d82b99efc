//! The conformance suite against `MemStore` on a RocksDB disk, plus what only
//! a disk can show: everything acknowledged is there after a restart.

use std::time::Duration;

use waggle_store::{
    DeleteRequest, KeyRange, MemStore, MemStoreConfig, PutRequest, RangeRequest, Store, TxnOp, TxnRequest,
    WatchMessage, WatchRequest,
};
use waggle_store_rocks::RocksDisk;

fn config() -> MemStoreConfig {
    MemStoreConfig {
        min_lease_ttl: 1,
        progress_notify_interval: Duration::from_millis(300),
        lease_check_interval: Duration::from_millis(50),
        watch_channel_capacity: 64,
        ..MemStoreConfig::default()
    }
}

fn open(dir: &std::path::Path) -> MemStore {
    let (disk, recovered) = RocksDisk::open(dir).expect("open the database");
    MemStore::durable(config(), disk, recovered).expect("a store inside a tokio runtime")
}

waggle_store::conformance_tests!(|| async {
    let dir = tempfile::tempdir().expect("tempdir");
    (open(dir.path()), dir)
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lease_id;
    {
        let store = open(dir.path());
        store.put(PutRequest::new("a", "1")).await.expect("put");
        store.put(PutRequest::new("a", "2")).await.expect("put");
        let txn = TxnRequest {
            compare: vec![],
            success: vec![TxnOp::Put(PutRequest::new("b", "x")), TxnOp::Put(PutRequest::new("c", "y"))],
            failure: vec![],
        };
        store.txn(txn).await.expect("txn");
        store.delete(DeleteRequest { range: KeyRange::key("c"), prev_kv: false }).await.expect("delete");
        lease_id = store.lease_grant(0, 600).await.expect("grant").id;
        store.put(PutRequest { lease: lease_id, ..PutRequest::new("leased", "z") }).await.expect("put");
        store.compact(3).await.expect("compact");
    }
    // The first store's background tasks hold the database until they notice it is gone.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let store = open(dir.path());
    assert_eq!(store.current_revision().await.expect("revision"), 6);
    let all = store.range(RangeRequest::new(KeyRange::all())).await.expect("range");
    let got: Vec<_> = all.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone(), kv.version)).collect();
    assert_eq!(
        got,
        [(b"a".to_vec(), b"2".to_vec(), 2), (b"b".to_vec(), b"x".to_vec(), 1), (b"leased".to_vec(), b"z".to_vec(), 1)]
    );
    let old =
        store.range(RangeRequest { revision: 4, ..RangeRequest::new(KeyRange::key("c")) }).await.expect("history");
    assert_eq!(old.kvs[0].value, b"y", "history above the compaction survives too");
    assert!(store.range(RangeRequest { revision: 2, ..RangeRequest::new(KeyRange::key("a")) }).await.is_err());
    let ttl = store.lease_time_to_live(lease_id, true).await.expect("the lease survived");
    assert_eq!(ttl.keys, [b"leased".to_vec()]);
    store.lease_revoke(lease_id).await.expect("revoke");
    assert_eq!(store.put(PutRequest::new("next", "1")).await.expect("put").revision, 8, "revisions continue");
}

/// Concurrent writers share synced writes (group commit): every write is
/// acknowledged with its own revision, a watcher sees each revision once and
/// in order, a read never sees past what was acknowledged or watched, and
/// everything acknowledged is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_fsyncs_in_revision_order_and_survive_a_restart() {
    const WRITERS: usize = 16;
    const PUTS: usize = 40;
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        let start = store.current_revision().await.expect("revision");
        let mut watcher = store
            .watch(WatchRequest { range: KeyRange::prefix("w/"), ..WatchRequest::default() })
            .await
            .expect("watch");
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut revisions = Vec::new();
                    for i in 0..PUTS {
                        let put = store.put(PutRequest::new(format!("w/{w}/{i}"), "v")).await.expect("put");
                        // What was acknowledged is readable at once.
                        let read = store.range(RangeRequest::new(KeyRange::key(format!("w/{w}/{i}")))).await;
                        let read = read.expect("range");
                        assert_eq!(read.kvs.len(), 1, "an acknowledged put is visible");
                        assert!(read.revision >= put.revision);
                        revisions.push(put.revision);
                    }
                    revisions
                })
            })
            .collect();
        let mut acknowledged = Vec::new();
        for w in writers {
            acknowledged.extend(w.await.expect("writer"));
        }
        acknowledged.sort_unstable();
        let total = i64::try_from(WRITERS * PUTS).expect("small");
        assert_eq!(acknowledged, ((start + 1)..=(start + total)).collect::<Vec<_>>(), "distinct consecutive revisions");
        let mut watched = Vec::new();
        while watched.len() < WRITERS * PUTS {
            match tokio::time::timeout(Duration::from_secs(30), watcher.next()).await.expect("events") {
                Some(WatchMessage::Events { revision, events }) => {
                    assert_eq!(events.len(), 1);
                    assert_eq!(events[0].kv.mod_revision, revision);
                    watched.push(revision);
                }
                Some(WatchMessage::Progress { .. }) => {}
                other => panic!("unexpected watch message {other:?}"),
            }
        }
        assert_eq!(watched, acknowledged, "the watcher saw every revision once, in order");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let store = open(dir.path());
    let all = store.range(RangeRequest::new(KeyRange::prefix("w/"))).await.expect("range");
    assert_eq!(all.count, i64::try_from(WRITERS * PUTS).expect("small"), "every acknowledged put survived");
}

#[tokio::test]
async fn a_database_of_something_else_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = rocksdb::DB::open_default(dir.path()).expect("plain rocksdb");
        db.put(b"hello", b"world").expect("put");
    }
    let err = RocksDisk::open(dir.path()).expect_err("refused");
    assert!(err.to_string().contains("is not a waggle store"), "{err}");
}
