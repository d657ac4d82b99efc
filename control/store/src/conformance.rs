//! The conformance suite: etcd's semantics as one async function per
//! property. Every [`Store`] implementation runs all of them through
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! waggle_store::conformance_tests!(|| async { (make_my_store().await, ()) });
//! ```
//!
//! The store handed to each function must be empty, grant leases of 1 s
//! (minimum TTL at most 1 s), and send periodic progress notifications at
//! least every second. The functions panic on a violation, like tests.

use std::time::Duration;

use crate::error::StoreError;
use crate::store::{Store, Watcher};
use crate::types::{
    Compare, CompareResult, CompareTarget, DeleteRequest, EventKind, KeyRange, KeyValue, PutRequest, RangeRequest,
    Revision, SortOrder, SortTarget, TxnOp, TxnOpResponse, TxnRequest, WatchMessage, WatchRequest,
};

/// Runs every conformance property as its own `#[tokio::test]`. The argument
/// is a closure returning a future that yields a fresh, empty store and a
/// guard kept alive for the test (e.g. its data dir; `()` if none).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            revisions_start_at_one_and_each_write_adds_one,
            put_returns_the_previous_value_only_when_asked,
            versions_count_puts_and_restart_after_a_delete,
            ranges_follow_etcd_range_end_conventions,
            a_range_at_a_past_revision_sees_the_values_of_that_time,
            a_range_with_a_limit_reports_more_and_the_full_count,
            a_range_can_return_only_keys_or_only_the_count,
            a_range_sorts_and_filters_on_request,
            deleting_a_range_returns_the_previous_values_in_one_revision,
            deleting_nothing_leaves_the_revision_unchanged,
            a_txn_with_a_mod_revision_compare_is_optimistic_concurrency,
            txn_compares_support_every_target_and_operator,
            a_txn_on_a_missing_key_fails_value_compares_and_sees_version_zero,
            txn_operations_see_earlier_writes_and_share_one_revision,
            a_read_only_txn_leaves_the_revision_unchanged,
            a_txn_may_not_write_one_key_twice,
            a_failed_txn_writes_nothing,
            a_watch_from_now_sees_puts_and_deletes_with_prev_kv,
            a_watch_from_a_past_revision_replays_the_history,
            a_prefix_watch_ignores_other_keys,
            a_watch_can_filter_out_puts_or_deletes,
            a_watch_from_a_compacted_revision_reports_the_compaction,
            a_progress_request_reports_the_current_revision,
            progress_notifications_arrive_while_no_events_flow,
            a_slow_watcher_neither_blocks_writers_nor_loses_events,
            a_cancelled_watch_receives_nothing_more,
            compaction_fails_reads_below_it_and_the_future_is_rejected,
            a_lease_lists_its_keys_and_revoking_it_deletes_them,
            an_expired_lease_deletes_its_keys,
            keep_alive_renews_a_lease,
            lease_errors_name_the_missing_or_duplicate_lease,
            empty_keys_are_rejected,
            concurrent_writes_get_distinct_consecutive_revisions,
            a_snapshot_holds_the_live_keys_and_leases,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                // The second value lives as long as the test (e.g. a temporary data dir).
                let (store, _guard) = ($make)().await;
                $crate::conformance::$name(&store).await;
            }
        )*
    };
}

const WAIT: Duration = Duration::from_secs(5);

async fn put(store: &dyn Store, key: &str, value: &str) -> Revision {
    store.put(PutRequest::new(key, value)).await.expect("put").revision
}

async fn get(store: &dyn Store, key: &str) -> Option<KeyValue> {
    store.range(RangeRequest::new(KeyRange::key(key))).await.expect("range").kvs.into_iter().next()
}

async fn keys(store: &dyn Store, range: KeyRange) -> Vec<String> {
    let resp = store.range(RangeRequest::new(range)).await.expect("range");
    resp.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
}

async fn next(w: &mut Watcher) -> WatchMessage {
    tokio::time::timeout(WAIT, w.next()).await.expect("a watch message within 5 s").expect("the watch is open")
}

async fn next_events(w: &mut Watcher) -> (Revision, Vec<(EventKind, String, String)>) {
    loop {
        match next(w).await {
            WatchMessage::Events { revision, events } => {
                let events = events
                    .iter()
                    .map(|e| {
                        (
                            e.kind,
                            String::from_utf8_lossy(&e.kv.key).into_owned(),
                            String::from_utf8_lossy(&e.kv.value).into_owned(),
                        )
                    })
                    .collect();
                return (revision, events);
            }
            WatchMessage::Progress { .. } => continue,
            other => panic!("expected events, got {other:?}"),
        }
    }
}

fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare { range: KeyRange::key(key), result, target }
}

async fn txn_ok(store: &dyn Store, compare: Vec<Compare>) -> bool {
    store.txn(TxnRequest { compare, success: vec![], failure: vec![] }).await.expect("txn").succeeded
}

pub async fn revisions_start_at_one_and_each_write_adds_one(store: &dyn Store) {
    assert_eq!(store.current_revision().await.expect("revision"), 1);
    assert_eq!(put(store, "a", "1").await, 2);
    assert_eq!(put(store, "b", "1").await, 3);
    assert_eq!(put(store, "a", "2").await, 4);
    assert_eq!(store.current_revision().await.expect("revision"), 4);
    let resp = store.range(RangeRequest::new(KeyRange::key("zzz"))).await.expect("range");
    assert_eq!(resp.revision, 4, "a range reports the current revision");
}

pub async fn put_returns_the_previous_value_only_when_asked(store: &dyn Store) {
    let first = store.put(PutRequest { prev_kv: true, ..PutRequest::new("k", "v1") }).await.expect("put");
    assert_eq!(first.prev_kv, None, "a new key has no previous value");
    let quiet = store.put(PutRequest::new("k", "v2")).await.expect("put");
    assert_eq!(quiet.prev_kv, None);
    let second = store.put(PutRequest { prev_kv: true, ..PutRequest::new("k", "v3") }).await.expect("put");
    let prev = second.prev_kv.expect("previous value");
    assert_eq!(prev.value, b"v2");
    assert_eq!(prev.mod_revision, quiet.revision);
}

pub async fn versions_count_puts_and_restart_after_a_delete(store: &dyn Store) {
    let r1 = put(store, "k", "1").await;
    let r2 = put(store, "k", "2").await;
    let kv = get(store, "k").await.expect("k exists");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (r1, r2, 2));
    store.delete(DeleteRequest { range: KeyRange::key("k"), prev_kv: false }).await.expect("delete");
    assert_eq!(get(store, "k").await, None);
    let r4 = put(store, "k", "3").await;
    let kv = get(store, "k").await.expect("k exists again");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (r4, r4, 1));
}

pub async fn ranges_follow_etcd_range_end_conventions(store: &dyn Store) {
    for k in ["a", "b/1", "b/2", "b0", "c", "\u{ff}x"] {
        put(store, k, "v").await;
    }
    assert_eq!(keys(store, KeyRange::key("b/1")).await, ["b/1"]);
    assert_eq!(keys(store, KeyRange::prefix("b/")).await, ["b/1", "b/2"]);
    assert_eq!(keys(store, KeyRange { key: b"a".to_vec(), range_end: b"b0".to_vec() }).await, ["a", "b/1", "b/2"]);
    assert_eq!(keys(store, KeyRange::from_key("b0")).await, ["b0", "c", "\u{ff}x"]);
    assert_eq!(keys(store, KeyRange::all()).await.len(), 6);
    assert_eq!(keys(store, KeyRange::prefix("zz")).await, Vec::<String>::new());
}

pub async fn a_range_at_a_past_revision_sees_the_values_of_that_time(store: &dyn Store) {
    let r1 = put(store, "k", "old").await;
    put(store, "k", "new").await;
    let r3 = put(store, "other", "x").await;
    store.delete(DeleteRequest { range: KeyRange::key("k"), prev_kv: false }).await.expect("delete");
    let at = |revision| RangeRequest { revision, ..RangeRequest::new(KeyRange::key("k")) };
    let old = store.range(at(r1)).await.expect("range at r1");
    assert_eq!(old.kvs[0].value, b"old");
    let later = store.range(at(r3)).await.expect("range at r3");
    assert_eq!(later.kvs[0].value, b"new");
    assert!(store.range(at(0)).await.expect("range now").kvs.is_empty());
    let before = store.range(at(1)).await.expect("range at 1");
    assert!(before.kvs.is_empty(), "nothing existed at revision 1");
}

pub async fn a_range_with_a_limit_reports_more_and_the_full_count(store: &dyn Store) {
    for i in 0..5 {
        put(store, &format!("p/{i}"), "v").await;
    }
    let resp =
        store.range(RangeRequest { limit: 2, ..RangeRequest::new(KeyRange::prefix("p/")) }).await.expect("range");
    assert_eq!(resp.kvs.len(), 2);
    assert_eq!(resp.kvs[0].key, b"p/0");
    assert!(resp.more);
    assert_eq!(resp.count, 5);
    let all = store.range(RangeRequest { limit: 5, ..RangeRequest::new(KeyRange::prefix("p/")) }).await.expect("range");
    assert!(!all.more);
}

pub async fn a_range_can_return_only_keys_or_only_the_count(store: &dyn Store) {
    put(store, "x/1", "value").await;
    put(store, "x/2", "value").await;
    let only_keys = store
        .range(RangeRequest { keys_only: true, ..RangeRequest::new(KeyRange::prefix("x/")) })
        .await
        .expect("range");
    assert_eq!(only_keys.kvs.len(), 2);
    assert!(only_keys.kvs.iter().all(|kv| kv.value.is_empty() && kv.version == 1));
    let only_count = store
        .range(RangeRequest { count_only: true, ..RangeRequest::new(KeyRange::prefix("x/")) })
        .await
        .expect("range");
    assert!(only_count.kvs.is_empty());
    assert_eq!(only_count.count, 2);
}

pub async fn a_range_sorts_and_filters_on_request(store: &dyn Store) {
    put(store, "s/b", "1").await;
    let r = put(store, "s/a", "2").await;
    put(store, "s/c", "0").await;
    let sorted =
        |sort_order, sort_target| RangeRequest { sort_order, sort_target, ..RangeRequest::new(KeyRange::prefix("s/")) };
    let names = |kvs: Vec<KeyValue>| {
        kvs.into_iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect::<Vec<_>>()
    };
    let desc = store.range(sorted(SortOrder::Descend, SortTarget::Key)).await.expect("range");
    assert_eq!(names(desc.kvs), ["s/c", "s/b", "s/a"]);
    let by_mod = store.range(sorted(SortOrder::Descend, SortTarget::Mod)).await.expect("range");
    assert_eq!(names(by_mod.kvs), ["s/c", "s/a", "s/b"]);
    let by_value = store.range(sorted(SortOrder::Ascend, SortTarget::Value)).await.expect("range");
    assert_eq!(names(by_value.kvs), ["s/c", "s/b", "s/a"]);
    let newest_first_limited = RangeRequest { limit: 1, ..sorted(SortOrder::Descend, SortTarget::Create) };
    assert_eq!(names(store.range(newest_first_limited).await.expect("range").kvs), ["s/c"]);
    let filtered =
        RangeRequest { min_mod_revision: r, max_mod_revision: r, ..RangeRequest::new(KeyRange::prefix("s/")) };
    assert_eq!(names(store.range(filtered).await.expect("range").kvs), ["s/a"]);
}

pub async fn deleting_a_range_returns_the_previous_values_in_one_revision(store: &dyn Store) {
    put(store, "d/1", "a").await;
    put(store, "d/2", "b").await;
    put(store, "e", "c").await;
    let before = store.current_revision().await.expect("revision");
    let resp = store.delete(DeleteRequest { range: KeyRange::prefix("d/"), prev_kv: true }).await.expect("delete");
    assert_eq!(resp.deleted, 2);
    assert_eq!(resp.revision, before + 1, "one revision for the whole range");
    let values: Vec<_> = resp.prev_kvs.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(values, [b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(keys(store, KeyRange::all()).await, ["e"]);
}

pub async fn deleting_nothing_leaves_the_revision_unchanged(store: &dyn Store) {
    put(store, "a", "1").await;
    let resp = store.delete(DeleteRequest { range: KeyRange::key("missing"), prev_kv: true }).await.expect("delete");
    assert_eq!(resp.deleted, 0);
    assert_eq!(resp.revision, 2);
    assert_eq!(store.current_revision().await.expect("revision"), 2);
}

pub async fn a_txn_with_a_mod_revision_compare_is_optimistic_concurrency(store: &dyn Store) {
    let seen = put(store, "obj", "v1").await;
    let update = |value: &str| TxnRequest {
        compare: vec![cmp("obj", CompareResult::Equal, CompareTarget::ModRevision(seen))],
        success: vec![TxnOp::Put(PutRequest::new("obj", value))],
        failure: vec![TxnOp::Range(RangeRequest::new(KeyRange::key("obj")))],
    };
    let won = store.txn(update("v2")).await.expect("txn");
    assert!(won.succeeded);
    assert_eq!(won.revision, seen + 1);
    let lost = store.txn(update("v3")).await.expect("txn");
    assert!(!lost.succeeded, "the second writer saw a stale mod_revision");
    match &lost.responses[..] {
        [TxnOpResponse::Range(r)] => assert_eq!(r.kvs[0].value, b"v2", "the failure branch reads the winner"),
        other => panic!("expected one range response, got {other:?}"),
    }
    assert_eq!(get(store, "obj").await.expect("obj").value, b"v2");
}

pub async fn txn_compares_support_every_target_and_operator(store: &dyn Store) {
    let created = put(store, "t", "m").await;
    let modified = put(store, "t", "m").await;
    use CompareResult::*;
    use CompareTarget::*;
    let cases = [
        (Equal, Version(2), true),
        (Greater, Version(1), true),
        (Less, Version(2), false),
        (NotEqual, Version(2), false),
        (Equal, CreateRevision(created), true),
        (Less, CreateRevision(created + 1), true),
        (Equal, ModRevision(modified), true),
        (Greater, ModRevision(modified), false),
        (Equal, Value(b"m".to_vec()), true),
        (Greater, Value(b"a".to_vec()), true),
        (Less, Value(b"z".to_vec()), true),
        (NotEqual, Value(b"m".to_vec()), false),
        (Equal, Lease(0), true),
    ];
    for (result, target, expected) in cases {
        let c = cmp("t", result, target.clone());
        assert_eq!(txn_ok(store, vec![c]).await, expected, "{result:?} {target:?}");
    }
    let both = vec![cmp("t", Equal, Version(2)), cmp("t", Equal, Value(b"other".to_vec()))];
    assert!(!txn_ok(store, both).await, "compares are a conjunction");
    put(store, "t2", "m").await;
    let over_range = Compare { range: KeyRange::prefix("t"), result: Equal, target: Value(b"m".to_vec()) };
    assert!(txn_ok(store, vec![over_range]).await, "a compare over a range holds for every key in it");
}

pub async fn a_txn_on_a_missing_key_fails_value_compares_and_sees_version_zero(store: &dyn Store) {
    assert!(txn_ok(store, vec![cmp("nope", CompareResult::Equal, CompareTarget::Version(0))]).await);
    assert!(txn_ok(store, vec![cmp("nope", CompareResult::Equal, CompareTarget::CreateRevision(0))]).await);
    assert!(!txn_ok(store, vec![cmp("nope", CompareResult::Equal, CompareTarget::Value(Vec::new()))]).await);
    // create-if-absent, the apiserver's create
    let create = TxnRequest {
        compare: vec![cmp("new", CompareResult::Equal, CompareTarget::ModRevision(0))],
        success: vec![TxnOp::Put(PutRequest::new("new", "x"))],
        failure: vec![],
    };
    assert!(store.txn(create.clone()).await.expect("txn").succeeded);
    assert!(!store.txn(create).await.expect("txn").succeeded);
}

pub async fn txn_operations_see_earlier_writes_and_share_one_revision(store: &dyn Store) {
    put(store, "a", "0").await;
    let before = store.current_revision().await.expect("revision");
    let req = TxnRequest {
        compare: vec![],
        success: vec![
            TxnOp::Put(PutRequest::new("a", "1")),
            TxnOp::Put(PutRequest { prev_kv: true, ..PutRequest::new("b", "2") }),
            TxnOp::Range(RangeRequest::new(KeyRange::all())),
            TxnOp::Delete(DeleteRequest { range: KeyRange::key("zzz"), prev_kv: false }),
        ],
        failure: vec![],
    };
    let resp = store.txn(req).await.expect("txn");
    assert!(resp.succeeded);
    assert_eq!(resp.revision, before + 1);
    match &resp.responses[2] {
        TxnOpResponse::Range(r) => {
            let values: Vec<_> = r.kvs.iter().map(|kv| (kv.value.clone(), kv.mod_revision)).collect();
            assert_eq!(values, [(b"1".to_vec(), before + 1), (b"2".to_vec(), before + 1)]);
        }
        other => panic!("expected a range response, got {other:?}"),
    }
    assert_eq!(store.current_revision().await.expect("revision"), before + 1);
}

pub async fn a_read_only_txn_leaves_the_revision_unchanged(store: &dyn Store) {
    put(store, "a", "1").await;
    let req = TxnRequest {
        compare: vec![],
        success: vec![TxnOp::Range(RangeRequest::new(KeyRange::key("a")))],
        failure: vec![],
    };
    let resp = store.txn(req).await.expect("txn");
    assert_eq!(resp.revision, 2);
    assert_eq!(store.current_revision().await.expect("revision"), 2);
}

pub async fn a_txn_may_not_write_one_key_twice(store: &dyn Store) {
    let twice = TxnRequest {
        compare: vec![],
        success: vec![TxnOp::Put(PutRequest::new("k", "1")), TxnOp::Put(PutRequest::new("k", "2"))],
        failure: vec![],
    };
    assert!(matches!(store.txn(twice).await, Err(StoreError::DuplicateKey { .. })));
    let put_and_delete = TxnRequest {
        compare: vec![],
        success: vec![
            TxnOp::Put(PutRequest::new("p/k", "1")),
            TxnOp::Delete(DeleteRequest { range: KeyRange::prefix("p/"), prev_kv: false }),
        ],
        failure: vec![],
    };
    assert!(matches!(store.txn(put_and_delete).await, Err(StoreError::DuplicateKey { .. })));
    assert_eq!(store.current_revision().await.expect("revision"), 1);
}

pub async fn a_failed_txn_writes_nothing(store: &dyn Store) {
    let req = TxnRequest {
        compare: vec![],
        success: vec![
            TxnOp::Put(PutRequest::new("a", "1")),
            TxnOp::Put(PutRequest { lease: 0x7777, ..PutRequest::new("b", "1") }),
        ],
        failure: vec![],
    };
    assert!(matches!(store.txn(req).await, Err(StoreError::LeaseNotFound { .. })));
    assert_eq!(get(store, "a").await, None, "the valid first put was not applied");
    assert_eq!(store.current_revision().await.expect("revision"), 1);
}

pub async fn a_watch_from_now_sees_puts_and_deletes_with_prev_kv(store: &dyn Store) {
    put(store, "w", "0").await;
    let mut w = store
        .watch(WatchRequest { range: KeyRange::key("w"), prev_kv: true, ..WatchRequest::default() })
        .await
        .expect("watch");
    let r1 = put(store, "w", "1").await;
    put(store, "unrelated", "x").await;
    let del = store.delete(DeleteRequest { range: KeyRange::key("w"), prev_kv: false }).await.expect("delete");
    match next(&mut w).await {
        WatchMessage::Events { revision, events } => {
            assert_eq!(revision, r1);
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].kind, EventKind::Put);
            assert_eq!(events[0].kv.value, b"1");
            assert_eq!(events[0].prev_kv.as_ref().map(|kv| kv.value.clone()), Some(b"0".to_vec()));
        }
        other => panic!("expected the put, got {other:?}"),
    }
    match next(&mut w).await {
        WatchMessage::Events { revision, events } => {
            assert_eq!(revision, del.revision);
            assert_eq!(events[0].kind, EventKind::Delete);
            assert_eq!(events[0].kv.key, b"w");
            assert_eq!(events[0].kv.mod_revision, del.revision);
            assert_eq!(events[0].prev_kv.as_ref().map(|kv| kv.value.clone()), Some(b"1".to_vec()));
        }
        other => panic!("expected the delete, got {other:?}"),
    }
}

pub async fn a_watch_from_a_past_revision_replays_the_history(store: &dyn Store) {
    let r1 = put(store, "h/a", "1").await;
    let r2 = put(store, "h/b", "2").await;
    let txn = TxnRequest {
        compare: vec![],
        success: vec![TxnOp::Put(PutRequest::new("h/a", "3")), TxnOp::Put(PutRequest::new("h/c", "4"))],
        failure: vec![],
    };
    let r3 = store.txn(txn).await.expect("txn").revision;
    let mut w = store
        .watch(WatchRequest { range: KeyRange::prefix("h/"), start_revision: r2, ..WatchRequest::default() })
        .await
        .expect("watch");
    let r4 = put(store, "h/a", "5").await;
    assert!(r1 < r2);
    assert_eq!(next_events(&mut w).await, (r2, vec![(EventKind::Put, "h/b".into(), "2".into())]));
    assert_eq!(
        next_events(&mut w).await,
        (r3, vec![(EventKind::Put, "h/a".into(), "3".into()), (EventKind::Put, "h/c".into(), "4".into())]),
        "one message per revision, in write order"
    );
    assert_eq!(next_events(&mut w).await, (r4, vec![(EventKind::Put, "h/a".into(), "5".into())]));
}

pub async fn a_prefix_watch_ignores_other_keys(store: &dyn Store) {
    let mut w =
        store.watch(WatchRequest { range: KeyRange::prefix("in/"), ..WatchRequest::default() }).await.expect("watch");
    put(store, "out", "x").await;
    put(store, "in", "x").await;
    let r = put(store, "in/1", "y").await;
    assert_eq!(next_events(&mut w).await, (r, vec![(EventKind::Put, "in/1".into(), "y".into())]));
}

pub async fn a_watch_can_filter_out_puts_or_deletes(store: &dyn Store) {
    let mut w = store
        .watch(WatchRequest { range: KeyRange::key("f"), filter_puts: true, ..WatchRequest::default() })
        .await
        .expect("watch");
    put(store, "f", "1").await;
    let del = store.delete(DeleteRequest { range: KeyRange::key("f"), prev_kv: false }).await.expect("delete");
    assert_eq!(next_events(&mut w).await, (del.revision, vec![(EventKind::Delete, "f".into(), String::new())]));
}

pub async fn a_watch_from_a_compacted_revision_reports_the_compaction(store: &dyn Store) {
    put(store, "c", "1").await;
    put(store, "c", "2").await;
    let r3 = put(store, "c", "3").await;
    store.compact(r3).await.expect("compact");
    let mut w = store
        .watch(WatchRequest { range: KeyRange::key("c"), start_revision: 2, ..WatchRequest::default() })
        .await
        .expect("watch");
    assert_eq!(next(&mut w).await, WatchMessage::Compacted { compact_revision: r3 });
    let mut at = store
        .watch(WatchRequest { range: KeyRange::key("c"), start_revision: r3, ..WatchRequest::default() })
        .await
        .expect("watch");
    assert_eq!(
        next_events(&mut at).await,
        (r3, vec![(EventKind::Put, "c".into(), "3".into())]),
        "the compaction revision itself is kept"
    );
}

pub async fn a_progress_request_reports_the_current_revision(store: &dyn Store) {
    let r = put(store, "p", "1").await;
    let mut w =
        store.watch(WatchRequest { range: KeyRange::key("q"), ..WatchRequest::default() }).await.expect("watch");
    store.request_progress(w.id).await.expect("progress");
    assert_eq!(next(&mut w).await, WatchMessage::Progress { revision: r });
}

pub async fn progress_notifications_arrive_while_no_events_flow(store: &dyn Store) {
    let r = put(store, "p", "1").await;
    let mut w = store
        .watch(WatchRequest { range: KeyRange::key("q"), progress_notify: true, ..WatchRequest::default() })
        .await
        .expect("watch");
    assert_eq!(next(&mut w).await, WatchMessage::Progress { revision: r });
}

pub async fn a_slow_watcher_neither_blocks_writers_nor_loses_events(store: &dyn Store) {
    let mut w =
        store.watch(WatchRequest { range: KeyRange::prefix("s/"), ..WatchRequest::default() }).await.expect("watch");
    // More events than a watcher's buffer holds, from several writers at
    // once (each writes its own key, values counting up), so that the
    // writes do not take one store round trip each.
    const WRITERS: i64 = 7;
    const EACH: i64 = 429;
    let writer = |k: i64| async move {
        for i in 0..EACH {
            put(store, &format!("s/{k}"), &i.to_string()).await;
        }
    };
    let writes = futures_util::future::join_all((0..WRITERS).map(writer));
    tokio::time::timeout(Duration::from_secs(30), writes).await.expect("writes finish while nobody reads the watch");
    let mut seen = [0i64; WRITERS as usize];
    for expected in 2..WRITERS * EACH + 2 {
        let (revision, events) = next_events(&mut w).await;
        assert_eq!(revision, expected, "events arrive in order, none missing");
        let k: usize = events[0].1.trim_start_matches("s/").parse().expect("a writer's key");
        assert_eq!(events[0].2, seen[k].to_string(), "each key's values arrive in the order written");
        seen[k] += 1;
    }
}

pub async fn a_cancelled_watch_receives_nothing_more(store: &dyn Store) {
    let w = store.watch(WatchRequest { range: KeyRange::key("x"), ..WatchRequest::default() }).await.expect("watch");
    drop(w);
    put(store, "x", "1").await;
    let mut w2 = store
        .watch(WatchRequest { range: KeyRange::key("x"), start_revision: 1, ..WatchRequest::default() })
        .await
        .expect("watch");
    assert_eq!(next_events(&mut w2).await.0, 2, "other watchers are unaffected");
}

pub async fn compaction_fails_reads_below_it_and_the_future_is_rejected(store: &dyn Store) {
    put(store, "k", "1").await;
    let r2 = put(store, "k", "2").await;
    put(store, "k", "3").await;
    store.compact(r2).await.expect("compact");
    let at = |revision| RangeRequest { revision, ..RangeRequest::new(KeyRange::key("k")) };
    assert!(
        matches!(store.range(at(r2 - 1)).await, Err(StoreError::Compacted { compact_revision, .. }) if compact_revision == r2)
    );
    assert_eq!(store.range(at(r2)).await.expect("range at the compaction revision").kvs[0].value, b"2");
    assert!(matches!(store.range(at(100)).await, Err(StoreError::FutureRevision { .. })));
    assert!(matches!(store.compact(r2).await, Err(StoreError::Compacted { .. })), "compacting twice");
    assert!(matches!(store.compact(100).await, Err(StoreError::FutureRevision { .. })));
    assert_eq!(store.status().await.expect("status").compact_revision, r2);
}

pub async fn a_lease_lists_its_keys_and_revoking_it_deletes_them(store: &dyn Store) {
    let lease = store.lease_grant(0, 60).await.expect("grant");
    assert!(lease.id > 0);
    assert_eq!(lease.ttl, 60);
    for k in ["l/1", "l/2"] {
        store.put(PutRequest { lease: lease.id, ..PutRequest::new(k, "v") }).await.expect("put with lease");
    }
    put(store, "l/3", "no lease").await;
    let ttl = store.lease_time_to_live(lease.id, true).await.expect("ttl");
    assert_eq!(ttl.granted_ttl, 60);
    assert!(ttl.ttl > 50 && ttl.ttl <= 60);
    assert_eq!(ttl.keys, [b"l/1".to_vec(), b"l/2".to_vec()]);
    assert_eq!(store.lease_list().await.expect("leases"), [lease.id]);
    let mut w =
        store.watch(WatchRequest { range: KeyRange::prefix("l/"), ..WatchRequest::default() }).await.expect("watch");
    let revision = store.lease_revoke(lease.id).await.expect("revoke");
    assert_eq!(keys(store, KeyRange::prefix("l/")).await, ["l/3"]);
    assert_eq!(
        next_events(&mut w).await,
        (
            revision,
            vec![(EventKind::Delete, "l/1".into(), String::new()), (EventKind::Delete, "l/2".into(), String::new())]
        ),
        "a revoke deletes all its keys in one revision"
    );
    assert!(matches!(store.lease_time_to_live(lease.id, false).await, Err(StoreError::LeaseNotFound { .. })));
}

pub async fn an_expired_lease_deletes_its_keys(store: &dyn Store) {
    let lease = store.lease_grant(0, 1).await.expect("grant");
    store.put(PutRequest { lease: lease.id, ..PutRequest::new("ephemeral", "v") }).await.expect("put with lease");
    let mut w = store
        .watch(WatchRequest { range: KeyRange::key("ephemeral"), ..WatchRequest::default() })
        .await
        .expect("watch");
    let (_, events) = next_events(&mut w).await;
    assert_eq!(events, vec![(EventKind::Delete, "ephemeral".into(), String::new())]);
    assert_eq!(get(store, "ephemeral").await, None);
    assert!(store.lease_list().await.expect("leases").is_empty());
}

pub async fn keep_alive_renews_a_lease(store: &dyn Store) {
    let lease = store.lease_grant(0, 2).await.expect("grant");
    store.put(PutRequest { lease: lease.id, ..PutRequest::new("kept", "v") }).await.expect("put with lease");
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(store.lease_keep_alive(lease.id).await.expect("keep alive"), 2);
    }
    assert!(get(store, "kept").await.is_some(), "renewed for 3.2 s past a 2 s TTL");
}

pub async fn lease_errors_name_the_missing_or_duplicate_lease(store: &dyn Store) {
    let missing = store.put(PutRequest { lease: 0x1234, ..PutRequest::new("k", "v") }).await;
    assert!(matches!(missing, Err(StoreError::LeaseNotFound { id: 0x1234, .. })));
    assert!(matches!(store.lease_revoke(0x1234).await, Err(StoreError::LeaseNotFound { .. })));
    assert!(matches!(store.lease_keep_alive(0x1234).await, Err(StoreError::LeaseNotFound { .. })));
    store.lease_grant(0x99, 30).await.expect("grant with a chosen id");
    assert!(matches!(store.lease_grant(0x99, 30).await, Err(StoreError::LeaseExists { id: 0x99 })));
}

pub async fn empty_keys_are_rejected(store: &dyn Store) {
    assert!(matches!(store.put(PutRequest::new("", "v")).await, Err(StoreError::EmptyKey { .. })));
    assert!(matches!(store.range(RangeRequest::new(KeyRange::key(""))).await, Err(StoreError::EmptyKey { .. })));
    let del = store.delete(DeleteRequest { range: KeyRange::key(""), prev_kv: false }).await;
    assert!(matches!(del, Err(StoreError::EmptyKey { .. })));
}

pub async fn concurrent_writes_get_distinct_consecutive_revisions(store: &dyn Store) {
    let writers = (0..8).map(|w| async move {
        let mut revisions = Vec::new();
        for i in 0..50 {
            revisions.push(put(store, &format!("c/{w}"), &i.to_string()).await);
        }
        revisions
    });
    let mut all: Vec<Revision> = futures_util::future::join_all(writers).await.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (2..402).collect::<Vec<_>>());
}

pub async fn a_snapshot_holds_the_live_keys_and_leases(store: &dyn Store) {
    let lease = store.lease_grant(0, 60).await.expect("grant");
    put(store, "a", "1").await;
    store.put(PutRequest { lease: lease.id, ..PutRequest::new("b", "2") }).await.expect("put");
    store.delete(DeleteRequest { range: KeyRange::key("a"), prev_kv: false }).await.expect("delete");
    let bytes = store.snapshot().await.expect("snapshot");
    let image = crate::snapshot::decode(&bytes).expect("a readable snapshot");
    assert_eq!(image.revision, store.current_revision().await.expect("revision"));
    assert_eq!(image.kvs.len(), 1);
    assert_eq!((image.kvs[0].key.as_slice(), image.kvs[0].lease), (b"b".as_slice(), lease.id));
    assert_eq!(image.leases.len(), 1);
}
