//! Fault tolerance of a 3-member cluster in one process, on loopback ports:
//! leader loss under write load, catch-up by snapshot, an isolated member,
//! and membership changes at runtime.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, default_tweak};
use waggle_store::{KeyRange, PutRequest, RangeRequest, Store};
use waggle_store_raft::removal::MEMBER_REMOVED;
use waggle_store_raft::{RaftConfig, RaftStore};

/// Snapshots every 100 entries, keeping 10 behind: a member down for a few
/// hundred writes can only catch up from a snapshot.
fn snapshot_often(c: &mut RaftConfig) {
    default_tweak(c);
    c.snapshot_after_entries = 100;
    c.keep_entries_after_snapshot = 10;
    c.request_timeout = Duration::from_secs(3);
}

type Acked = Arc<Mutex<Vec<(String, String)>>>;

/// Writers that put unique keys through `via` until stopped, recording
/// each acknowledged write. Failed writes (during the election) are retried
/// with new keys; their outcome is unknown, so they are not checked.
fn start_writers(
    via: Arc<RaftStore>,
    writers: usize,
    stop: Arc<AtomicBool>,
    acked: Acked,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..writers)
        .map(|w| {
            let (via, stop, acked) = (Arc::clone(&via), Arc::clone(&stop), Arc::clone(&acked));
            tokio::spawn(async move {
                let mut failures = 0;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let (key, value) = (format!("w/{w}/{n:06}"), format!("v{n}"));
                    match via.put(PutRequest::new(key.clone(), value.clone())).await {
                        Ok(_) => acked.lock().expect("acked").push((key, value)),
                        Err(_) => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                failures
            })
        })
        .collect()
}

async fn all_keys(store: &RaftStore, prefix: &str) -> BTreeMap<String, String> {
    let resp = store.range(RangeRequest::new(KeyRange::prefix(prefix))).await.expect("range");
    resp.kvs
        .into_iter()
        .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), String::from_utf8_lossy(&kv.value).into_owned()))
        .collect()
}

fn assert_all_present(acked: &[(String, String)], found: &BTreeMap<String, String>, who: &str) {
    let missing: Vec<_> = acked.iter().filter(|(k, v)| found.get(k) != Some(v)).take(5).collect();
    assert!(missing.is_empty(), "{who}: {} acknowledged writes missing, e.g. {missing:?}", missing.len());
}

async fn wait_acked(acked: &Acked, at_least: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while acked.lock().expect("acked").len() < at_least {
        assert!(Instant::now() < deadline, "fewer than {at_least} acknowledged writes within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_leader_is_replaced_without_losing_acknowledged_writes_and_catches_up_after_a_restart() {
    let mut cluster = Cluster::start(3, snapshot_often).await;
    let old_leader = cluster.wait_leader(Duration::from_secs(10), None).await;
    let via_id = *cluster.stores.keys().find(|id| **id != old_leader).expect("a follower");
    let via = cluster.store(via_id);

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let writers = start_writers(Arc::clone(&via), 8, Arc::clone(&stop), Arc::clone(&acked));
    wait_acked(&acked, 200, Duration::from_secs(20)).await;

    let killed_last_index = cluster.store(old_leader).raft().metrics().borrow().last_log_index.unwrap_or(0);
    let killed_at = Instant::now();
    cluster.kill(old_leader).await;
    let stopped = killed_at.elapsed();
    let new_leader = cluster.wait_leader(Duration::from_secs(10), Some(old_leader)).await;
    let election = killed_at.elapsed();
    println!(
        "leader n{old_leader} killed (stopped in {} ms); n{new_leader} elected and known to all survivors {} ms after the kill",
        stopped.as_millis(),
        election.as_millis()
    );
    assert_ne!(new_leader, old_leader);

    // Enough writes after the kill that the log the killed member lacks is purged.
    let before = acked.lock().expect("acked").len();
    wait_acked(&acked, before + 400, Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = 0;
    for w in writers {
        failures += w.await.expect("writer");
    }
    let acked = acked.lock().expect("acked").clone();
    println!("{} writes acknowledged, {failures} failed during the election", acked.len());

    let leader = cluster.store(new_leader);
    assert_all_present(&acked, &all_keys(&leader, "w/").await, "the new leader");
    // openraft 0.9 does not purge entries a replication stream still has in
    // flight, and a stream to a dead member can stay in flight: the leader
    // may keep the log the killed member needs, which then catches up from
    // the log instead of a snapshot. Both are correct; the test reports which.
    // (Catch-up from a snapshot is asserted by `members_are_added_and_removed_at_runtime`.)
    let purged = leader.raft().metrics().borrow().purged.map(|l| l.index).unwrap_or(0);

    let restarted_at = Instant::now();
    let restarted = cluster.restart(old_leader).await;
    let target = leader.raft().metrics().borrow().last_applied.map(|l| l.index).unwrap_or(0);
    restarted
        .raft()
        .wait(Some(Duration::from_secs(30)))
        .applied_index_at_least(Some(target), "catch up")
        .await
        .expect("the restarted member catches up");
    let snapshot = restarted.raft().metrics().borrow().snapshot.map(|l| l.index).unwrap_or(0);
    println!(
        "n{old_leader} (last index {killed_last_index} when killed; leader purged up to {purged}) restarted and caught up to index {target} in {} ms ({})",
        restarted_at.elapsed().as_millis(),
        if snapshot > killed_last_index { "from a snapshot" } else { "from the log" }
    );
    // A read through the restarted follower is linearizable (read index from the leader).
    assert_all_present(&acked, &all_keys(&restarted, "w/").await, "the restarted member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_cut_off_from_the_quorum_refuses_writes_and_reads() {
    let mut cluster = Cluster::start(3, snapshot_often).await;
    let leader = cluster.wait_leader(Duration::from_secs(10), None).await;
    let store = cluster.store(leader);
    store.put(PutRequest::new("before", "1")).await.expect("put with a quorum");
    let followers: Vec<_> = cluster.stores.keys().copied().filter(|id| *id != leader).collect();
    for f in followers {
        cluster.kill(f).await;
    }
    let write = store.put(PutRequest::new("alone", "1")).await;
    assert!(write.is_err(), "a lone member must not acknowledge a write: {write:?}");
    let read = store.range(RangeRequest::new(KeyRange::key("before"))).await;
    assert!(read.is_err(), "a lone member must not serve a linearizable read: {read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_are_added_and_removed_at_runtime() {
    let mut cluster = Cluster::start(3, snapshot_often).await;
    let leader_id = cluster.wait_leader(Duration::from_secs(10), None).await;
    let leader = cluster.store(leader_id);
    for i in 0..150 {
        leader.put(PutRequest::new(format!("m/{i:03}"), "v")).await.expect("put");
    }

    let added = cluster.start_new(4).await;
    let member = cluster.configs[&4].member.clone();
    leader.add_member(4, member).await.expect("add member 4");
    assert!(leader.voters().contains(&4), "member 4 votes: {:?}", leader.voters());
    leader.put(PutRequest::new("m/after-add", "v")).await.expect("put");
    let seen = all_keys(&added, "m/").await;
    assert_eq!(seen.len(), 151, "the new member has every key (via snapshot and log)");
    let purged = leader.raft().metrics().borrow().purged.map(|l| l.index).unwrap_or(0);
    let installed = added.raft().metrics().borrow().snapshot.map(|l| l.index).unwrap_or(0);
    println!("leader purged its log up to {purged}; the new member installed a snapshot at index {installed}");
    assert!(purged > 0 && installed > purged, "the new member, behind the purged log, caught up from a snapshot");

    let removed = *cluster.stores.keys().find(|id| **id != leader_id && **id != 4).expect("a follower");
    leader.remove_member(removed).await.expect("remove a member");
    let voters = leader.voters();
    assert!(!voters.contains(&removed) && voters.len() == 3, "voters after removal: {voters:?}");
    // The removed member learns it from its peers (it campaigns, they answer
    // that it was removed) and stops serving, as etcd's does.
    let gone = cluster.store(removed);
    tokio::time::timeout(Duration::from_secs(30), gone.removed()).await.expect("the removed member learns it");
    let refused = gone.range(RangeRequest::new(KeyRange::key("m/000"))).await.expect_err("a removed member refuses");
    assert!(refused.to_string().contains(MEMBER_REMOVED), "{refused}");
    cluster.kill(removed).await;
    // Still a quorum of the new membership: writes go on.
    leader.put(PutRequest::new("m/after-remove", "v")).await.expect("put after removal");
    assert_eq!(all_keys(&added, "m/").await.len(), 152);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_removes_itself_stops_and_the_others_go_on() {
    let mut cluster = Cluster::start(3, snapshot_often).await;
    let leader_id = cluster.wait_leader(Duration::from_secs(10), None).await;
    let leader = cluster.store(leader_id);
    leader.put(PutRequest::new("before", "1")).await.expect("put");
    leader.remove_member(leader_id).await.expect("the leader removes itself");
    tokio::time::timeout(Duration::from_secs(30), leader.removed()).await.expect("it learns it was removed");
    cluster.kill(leader_id).await;
    let new_leader = cluster.wait_leader(Duration::from_secs(20), Some(leader_id)).await;
    let store = cluster.store(new_leader);
    store.put(PutRequest::new("after", "1")).await.expect("the two left go on");
    assert_eq!(all_keys(&store, "").await.len(), 2);
}
