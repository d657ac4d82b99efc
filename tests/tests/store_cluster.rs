//! The replicated store as real `waggle store` processes on loopback ports:
//! leader loss under write load, catch-up of a restarted member by
//! snapshot, an isolated minority, kill -9 of a single member, and a
//! linearizability check of a concurrent history on one key.
//!
//! Needs the `waggle` binary (`cargo build --bin waggle`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use waggle_store::client::EtcdClient;
use waggle_tests::linearizability::{self, Kind, Op};
use waggle_tests::store_procs::StoreProcs;

/// The `waggle` binary next to this test's directory.
fn waggle_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|d| d.parent()).context("test binary has no target dir")?;
    let bin = dir.join("waggle");
    ensure!(bin.exists(), "{} is missing: build it first (cargo build --bin waggle)", bin.display());
    Ok(bin)
}

/// Fast elections and frequent snapshots (every 200 entries, 20 kept), so a
/// member down for a few hundred writes can only catch up from a snapshot.
const FAST: &[&str] = &["--heartbeat-interval", "50", "--election-timeout", "500", "--snapshot-count", "200"];

fn client(endpoint: &str) -> EtcdClient {
    EtcdClient::connect_lazy(endpoint, Duration::from_secs(3)).expect("valid endpoint")
}

/// The member IDs of the running members, by index.
async fn member_ids(procs: &StoreProcs) -> HashMap<u64, usize> {
    let mut ids = HashMap::new();
    for i in 0..procs.members.len() {
        if procs.is_running(i)
            && let Ok(s) = client(&procs.endpoint(i)).status().await
            && let Some(h) = s.header
        {
            ids.insert(h.member_id, i);
        }
    }
    ids
}

/// Waits until a running member other than `not` is reported leader by
/// every running member; returns its index.
async fn wait_leader(procs: &StoreProcs, not: Option<usize>, within: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + within;
    loop {
        let ids = member_ids(procs).await;
        let mut leaders = Vec::new();
        for i in (0..procs.members.len()).filter(|&i| procs.is_running(i)) {
            leaders.push(client(&procs.endpoint(i)).status().await.ok().and_then(|s| ids.get(&s.leader).copied()));
        }
        if let Some(Some(first)) = leaders.first()
            && leaders.iter().all(|l| *l == Some(*first))
            && Some(*first) != not
        {
            return Ok(*first);
        }
        if Instant::now() > deadline {
            bail!("no agreed leader within {within:?} (members report {leaders:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Acked = Arc<Mutex<Vec<(String, String)>>>;

/// Writers of unique keys spread over the endpoints; a writer moves to the
/// next endpoint after a failure. Only acknowledged writes are recorded.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Acked,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(endpoints: &[String], writers: usize, down: Arc<Mutex<Vec<bool>>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Acked = Arc::default();
        let tasks = (0..writers)
            .map(|w| {
                let clients: Vec<EtcdClient> = endpoints.iter().map(|e| client(e)).collect();
                let (stop, acked, down) = (Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&down));
                tokio::spawn(async move {
                    let mut at = w % clients.len();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if down.lock().expect("down")[at] {
                            at = (at + 1) % clients.len();
                            continue;
                        }
                        n += 1;
                        let (key, value) = (format!("k/{w}/{n:06}"), format!("v{n}"));
                        let mut c = clients[at].clone();
                        match c.put(key.clone(), value.clone()).await {
                            Ok(_) => acked.lock().expect("acked").push((key, value)),
                            Err(_) => {
                                at = (at + 1) % clients.len();
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Self { stop, acked, tasks }
    }

    fn count(&self) -> usize {
        self.acked.lock().expect("acked").len()
    }

    async fn wait_for(&self, more: usize, within: Duration) -> anyhow::Result<()> {
        let target = self.count() + more;
        let deadline = Instant::now() + within;
        while self.count() < target {
            ensure!(
                Instant::now() < deadline,
                "only {} of {target} writes acknowledged within {within:?}",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn stop(self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.acked.lock().expect("acked").clone()
    }
}

/// Every acknowledged write is readable through `endpoint`.
async fn assert_acked_present(endpoint: &str, acked: &[(String, String)], who: &str) -> anyhow::Result<()> {
    let kvs = client(endpoint).get_prefix("k/").await.with_context(|| format!("reading through {who}"))?;
    let found: BTreeMap<String, String> = kvs
        .into_iter()
        .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), String::from_utf8_lossy(&kv.value).into_owned()))
        .collect();
    let missing: Vec<_> = acked.iter().filter(|(k, v)| found.get(k) != Some(v)).collect();
    ensure!(
        missing.is_empty(),
        "{who}: {} of {} acknowledged writes missing, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_under_load_then_restarted_catches_up_by_snapshot() -> anyhow::Result<()> {
    let mut procs = StoreProcs::new(&waggle_bin()?, 3, FAST)?;
    procs.start_all()?;
    let leader = wait_leader(&procs, None, Duration::from_secs(20)).await?;
    let down = Arc::new(Mutex::new(vec![false; 3]));
    let load = Load::start(&procs.endpoints(), 8, Arc::clone(&down));
    load.wait_for(300, Duration::from_secs(30)).await?;

    down.lock().expect("down")[leader] = true;
    let killed_at = Instant::now();
    procs.kill(leader);
    let new_leader = wait_leader(&procs, Some(leader), Duration::from_secs(20)).await?;
    println!("kill -9 of leader {}: member {} elected after {:?}", leader, new_leader, killed_at.elapsed());
    load.wait_for(300, Duration::from_secs(30)).await?;
    let acked = load.stop().await;
    println!("{} writes acknowledged under load", acked.len());
    for i in (0..3).filter(|&i| i != leader) {
        assert_acked_present(&procs.endpoint(i), &acked, &format!("survivor {i}")).await?;
    }

    // Move the log well past what the leader keeps: the restarted member
    // can only catch up from a snapshot.
    let mut c = client(&procs.endpoint(new_leader));
    for n in 0..600 {
        c.put(format!("after/{n}"), "x").await.context("a write after the failover")?;
    }
    procs.start(leader)?;
    let target = c.status().await?.raft_applied_index;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut back = client(&procs.endpoint(leader));
    loop {
        if back.status().await.is_ok_and(|s| s.raft_applied_index >= target) {
            break;
        }
        ensure!(Instant::now() < deadline, "the restarted member did not apply up to {target} within 30s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        procs.log(leader).contains("installed a snapshot from the leader"),
        "the restarted member caught up without a snapshot:\n{}",
        procs.log(leader)
    );
    assert_acked_present(&procs.endpoint(leader), &acked, "the restarted member").await?;
    ensure!(
        back.get("after/599").await?.as_deref() == Some(b"x".as_slice()),
        "the last write reached the restarted member"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_minority_refuses_writes() -> anyhow::Result<()> {
    let mut procs = StoreProcs::new(&waggle_bin()?, 3, FAST)?;
    procs.start_all()?;
    wait_leader(&procs, None, Duration::from_secs(20)).await?;
    let mut survivor = EtcdClient::connect_lazy(&procs.endpoint(2), Duration::from_secs(10))?;
    survivor.put("before", "1").await.context("a write with a quorum")?;
    // Over the 1.5 MiB default of --max-request-bytes: etcd's own error.
    let too_large = survivor.put("big", vec![b'x'; 1800 * 1024]).await.expect_err("a 1.8 MiB value is refused");
    ensure!(too_large.message() == "etcdserver: request is too large", "{too_large:?}");
    // A value under the limit fits (retried: with the short election timeout
    // used here, a busy machine may change leaders while it replicates).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mib: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    while let Err(e) = survivor.put("big", mib.clone()).await {
        ensure!(Instant::now() < deadline, "a 1 MiB value was not accepted: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..3 {
        let mut c = EtcdClient::connect_lazy(&procs.endpoint(i), Duration::from_secs(10))?;
        // Retried too: a read confirms leadership within one (short) heartbeat interval.
        let found = loop {
            match c.get("big").await {
                Ok(v) => break v,
                Err(e) => ensure!(Instant::now() < deadline, "member {i} cannot read the 1 MiB value: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        ensure!(found.as_deref() == Some(mib.as_slice()), "member {i} has the 1 MiB value");
    }
    procs.kill(0);
    procs.kill(1);
    for attempt in 0..3 {
        let started = Instant::now();
        let result = survivor.put(format!("alone/{attempt}"), "1").await;
        println!("a write to the lone member answered after {:?}: {:?}", started.elapsed(), result.as_ref().err());
        ensure!(result.is_err(), "the lone member acknowledged a write without a quorum");
    }
    // With one peer back there is a quorum again.
    procs.start(1)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while survivor.put("after", "1").await.is_err() {
        ensure!(Instant::now() < deadline, "no write succeeded within 30s of the quorum's return");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first reads may come before the new leader has heard from a quorum.
    loop {
        match survivor.get("before").await {
            Ok(v) => {
                ensure!(v.as_deref() == Some(b"1".as_slice()), "the write made before the split is gone: {v:?}");
                return Ok(());
            }
            Err(e) => ensure!(Instant::now() < deadline, "no read succeeded: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_member_killed_under_load_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let mut procs = StoreProcs::new(&waggle_bin()?, 1, &[])?;
    procs.start(0)?;
    let down = Arc::new(Mutex::new(vec![false]));
    let load = Load::start(&procs.endpoints(), 16, Arc::clone(&down));
    load.wait_for(500, Duration::from_secs(30)).await?;
    procs.kill(0);
    let acked = load.stop().await;
    procs.start(0)?;
    println!("{} writes acknowledged before kill -9", acked.len());
    assert_acked_present(&procs.endpoint(0), &acked, "the restarted member").await
}

/// A tiny deterministic generator (xorshift), seeded from the clock and printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn decode(value: Option<Vec<u8>>) -> anyhow::Result<Option<u64>> {
    value.map(|v| String::from_utf8_lossy(&v).parse::<u64>().context("a register value")).transpose()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_read_write_cas_history_with_a_leader_kill_is_linearizable() -> anyhow::Result<()> {
    let mut procs = StoreProcs::new(&waggle_bin()?, 3, FAST)?;
    procs.start_all()?;
    let leader = wait_leader(&procs, None, Duration::from_secs(20)).await?;
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64 | 1;
    println!("seed {seed}");
    let start = Instant::now();
    let history: Arc<Mutex<Vec<Op>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let endpoints = procs.endpoints();
    // Four clients: every operation left without an answer by the kill
    // stays open to the end of the history, and the checker's search grows
    // with (open operations) × (concurrent clients); six clients once left
    // 17 unknown outcomes, more than the default budget could decide.
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (history, stop, endpoints) = (Arc::clone(&history), Arc::clone(&stop), endpoints.clone());
            tokio::spawn(async move {
                let mut rng = Rng(seed.wrapping_add(c as u64 * 0x9E37_79B9));
                let mut at = c % endpoints.len();
                let mut seq = 0u64;
                let mut last_seen: Option<u64> = None;
                let kvs: Vec<EtcdClient> = endpoints.iter().map(|e| client(e)).collect();
                while !stop.load(Ordering::Relaxed) {
                    let mut kv = kvs[at].clone();
                    seq += 1;
                    let fresh = (c as u64 + 1) * 1_000_000 + seq;
                    let call = start.elapsed().as_nanos() as u64;
                    let (kind, ok) = match rng.next() % 3 {
                        0 => match kv.get("lin/key").await.map_err(anyhow::Error::from).and_then(decode) {
                            Ok(v) => {
                                last_seen = v;
                                (Some(Kind::Read(v)), true)
                            }
                            // A failed read changes nothing: leave it out.
                            Err(_) => (None, false),
                        },
                        1 => match kv.put("lin/key", fresh.to_string()).await {
                            Ok(_) => {
                                last_seen = Some(fresh);
                                (Some(Kind::Write(fresh)), true)
                            }
                            // `no leader` comes before anything is proposed:
                            // certainly not applied, so it is left out.
                            Err(e) if not_proposed(&e) => (None, false),
                            Err(_) => (Some(Kind::Write(fresh)), false),
                        },
                        _ => {
                            let from = last_seen.map(|v| v.to_string().into_bytes());
                            match kv.compare_and_swap("lin/key", from.as_deref(), fresh.to_string()).await {
                                Ok(done) => {
                                    let from = last_seen;
                                    if done {
                                        last_seen = Some(fresh);
                                    }
                                    (Some(Kind::Cas { from, to: fresh, ok: Some(done) }), true)
                                }
                                Err(e) if not_proposed(&e) => (None, false),
                                Err(_) => (Some(Kind::Cas { from: last_seen, to: fresh, ok: None }), false),
                            }
                        }
                    };
                    let ret = ok.then(|| start.elapsed().as_nanos() as u64);
                    if let Some(kind) = kind {
                        history.lock().expect("history").push(Op { client: c, call, ret, kind });
                    }
                    if !ok {
                        // Try another member, after a pause: every operation of
                        // unknown outcome widens the checker's search.
                        at = (at + 1) % endpoints.len();
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    procs.kill(leader);
    println!("killed leader {leader} after {:?}", start.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    let history = history.lock().expect("history").clone();
    let unknown = history.iter().filter(|o| o.ret.is_none()).count();
    let cas_ok = history.iter().filter(|o| matches!(o.kind, Kind::Cas { ok: Some(true), .. })).count();
    println!("{} operations ({unknown} of unknown outcome, {cas_ok} successful CAS)", history.len());
    ensure!(history.len() > 100, "too few operations to say anything: {}", history.len());
    // A larger budget than the default (about 50 MB per million states).
    let checked = tokio::task::spawn_blocking(move || {
        linearizability::check_within(None, &history, 4 * linearizability::DEFAULT_MAX_STATES)
    })
    .await?;
    checked.map_err(anyhow::Error::msg)
}

/// An answer etcd (and waggle store) give before proposing anything.
fn not_proposed(e: &tonic::Status) -> bool {
    e.code() == tonic::Code::Unavailable && e.message() == "etcdserver: no leader"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_corrupt_or_borrowed_data_dirs_are_refused_at_start() -> anyhow::Result<()> {
    let mut procs = StoreProcs::new(&waggle_bin()?, 2, FAST)?;
    let data_dir = procs.data_dir(0);
    let refused = |procs: &mut StoreProcs| -> anyhow::Result<String> {
        match procs.start(0) {
            Ok(()) => bail!("member 0 started on a data dir it must refuse"),
            Err(e) => Ok(format!("{e:#}")),
        }
    };

    std::fs::create_dir_all(data_dir.join("member").join("wal"))?;
    let err = refused(&mut procs)?;
    ensure!(err.contains("holds an etcd write-ahead log"), "{err}");
    std::fs::remove_dir_all(&data_dir)?;

    let raft = data_dir.join("member").join("raft");
    std::fs::create_dir_all(&raft)?;
    std::fs::write(raft.join("CURRENT"), b"garbage")?;
    let err = refused(&mut procs)?;
    ensure!(err.contains("opening the raft database in"), "{err}");
    std::fs::remove_dir_all(&data_dir)?;

    // Member 1's data dir, handed to member 0 (other peer URLs).
    std::fs::create_dir_all(data_dir.join("member"))?;
    std::fs::write(data_dir.join("member").join("id"), "123abc\n")?;
    let err = refused(&mut procs)?;
    ensure!(err.contains("belongs to member 123abc"), "{err}");
    Ok(())
}

fn etcdctl(endpoint: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .context("running etcdctl")?;
    ensure!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_adds_and_removes_members_at_runtime() -> anyhow::Result<()> {
    let mut procs = StoreProcs::new(&waggle_bin()?, 3, FAST)?;
    procs.start_all()?;
    wait_leader(&procs, None, Duration::from_secs(20)).await?;
    client(&procs.endpoint(0)).put("before", "1").await?;
    let e1 = procs.endpoint(1);
    let listed = tokio::task::spawn_blocking(move || etcdctl(&e1, &["member", "list"])).await??;
    ensure!(listed.lines().count() == 3, "three members listed:\n{listed}");

    // Added through a follower or the leader alike, then started to join.
    let new = procs.push_member()?;
    let (e1, peer) = (procs.endpoint(1), procs.members[new].peer_url());
    let added =
        tokio::task::spawn_blocking(move || etcdctl(&e1, &["member", "add", "m3", "--peer-urls", &peer])).await??;
    ensure!(added.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""), "{added}");
    procs.start_with(new, &["--initial-cluster-state", "existing"])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_id = loop {
        let e = procs.endpoint(new);
        let listed = tokio::task::spawn_blocking(move || etcdctl(&e, &["member", "list"])).await??;
        // `ID, started, name, peer, client, is-learner`: promoted once it caught up.
        if let Some(line) = listed.lines().find(|l| l.contains(", m3, ") && l.ends_with(", false")) {
            break line.split(',').next().unwrap_or_default().to_owned();
        }
        ensure!(Instant::now() < deadline, "the new member was not promoted within 30s:\n{listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(client(&procs.endpoint(new)).get("before").await?.as_deref() == Some(b"1".as_slice()));

    let e2 = procs.endpoint(2);
    let removed = tokio::task::spawn_blocking(move || etcdctl(&e2, &["member", "remove", &new_id])).await??;
    ensure!(removed.contains("removed"), "{removed}");
    let e0 = procs.endpoint(0);
    let listed = tokio::task::spawn_blocking(move || etcdctl(&e0, &["member", "list"])).await??;
    ensure!(listed.lines().count() == 3 && !listed.contains(", m3, "), "m3 is gone:\n{listed}");
    client(&procs.endpoint(0)).put("after", "1").await.context("a write after the removal")?;
    // The removed member learns it from its peers and stops, as etcd's does.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = procs.exit_status(new)? {
            break status;
        }
        ensure!(Instant::now() < deadline, "the removed member still runs after 30s:\n{}", procs.log(new));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = procs.log(new);
    ensure!(
        status.success() && log.contains("the member has been permanently removed from the cluster"),
        "the removed member exits cleanly saying why ({status}):\n{log}"
    );
    Ok(())
}
