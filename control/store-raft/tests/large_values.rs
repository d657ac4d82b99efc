//! Values of 1 MiB in a 3-member cluster: written through the leader and a
//! follower, concurrently, and replicated to a member that was down while
//! more of them were written than one peer message can carry.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Cluster, default_tweak};
use waggle_store::{KeyRange, PutRequest, RangeRequest, Store};
use waggle_store_raft::RaftStore;
use waggle_store_raft::network::MAX_MESSAGE_BYTES;

const MIB: usize = 1024 * 1024;

/// 1 MiB that differs from one value to the next.
fn value(seed: u8) -> Vec<u8> {
    (0..MIB).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn read(store: &RaftStore, key: &str) -> Option<Vec<u8>> {
    let resp = store.range(RangeRequest::new(KeyRange::key(key))).await.expect("range");
    resp.kvs.into_iter().next().map(|kv| kv.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_mib_values_are_written_replicated_and_caught_up_with() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let mut cluster = Cluster::start(3, default_tweak).await;
    let leader_id = cluster.wait_leader(Duration::from_secs(10), None).await;
    let leader = cluster.store(leader_id);
    let follower_id = *cluster.stores.keys().find(|id| **id != leader_id).expect("a follower");
    let follower = cluster.store(follower_id);

    leader.put(PutRequest::new("big/leader", value(1))).await.expect("a 1 MiB put on the leader");
    follower.put(PutRequest::new("big/follower", value(2))).await.expect("a 1 MiB put through a follower");
    let writes: Vec<_> = (0..8u8)
        .map(|i| {
            let via = if i % 2 == 0 { Arc::clone(&leader) } else { Arc::clone(&follower) };
            tokio::spawn(async move { via.put(PutRequest::new(format!("big/c{i}"), value(10 + i))).await })
        })
        .collect();
    for w in writes {
        w.await.expect("writer").expect("a concurrent 1 MiB put");
    }
    for (id, store) in &cluster.stores {
        assert!(read(store, "big/leader").await == Some(value(1)), "n{id} has the leader's value");
        assert!(read(store, "big/follower").await == Some(value(2)), "n{id} has the follower's value");
        for i in 0..8u8 {
            assert!(read(store, &format!("big/c{i}")).await == Some(value(10 + i)), "n{id} has big/c{i}");
        }
    }

    // More than one peer message of entries behind: the leader must split them.
    let lagging = *cluster.stores.keys().find(|id| **id != leader_id && **id != follower_id).expect("another");
    cluster.kill(lagging).await;
    let rounds = MAX_MESSAGE_BYTES / MIB + 8;
    let mut last = 0;
    for r in 0..rounds {
        last = leader.put(PutRequest::new("big/overwritten", value(r as u8))).await.expect("put").revision;
        if r % 16 == 15 {
            // Keeps the history (held in memory) small; the log keeps every entry.
            leader.compact(last).await.expect("compact");
        }
    }
    let restarted = cluster.restart(lagging).await;
    let target = leader.raft().metrics().borrow().last_applied.map(|l| l.index);
    restarted
        .raft()
        .wait(Some(Duration::from_secs(60)))
        .applied_index_at_least(target, "catch up on 1 MiB entries")
        .await
        .expect("the restarted member catches up");
    assert!(read(&restarted, "big/overwritten").await == Some(value((rounds - 1) as u8)));
    assert_eq!(restarted.current_revision().await.expect("revision"), last);
}
