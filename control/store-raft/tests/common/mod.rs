//! In-process clusters on loopback: each member has its own free port and
//! its own data dir under one temporary directory.

#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use waggle_store::MemStoreConfig;
use waggle_store_raft::{Member, NodeId, RaftConfig, RaftStore};

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub configs: BTreeMap<NodeId, RaftConfig>,
    pub stores: BTreeMap<NodeId, Arc<RaftStore>>,
    tweak: fn(&mut RaftConfig),
}

pub fn store_config() -> MemStoreConfig {
    MemStoreConfig {
        min_lease_ttl: 1,
        progress_notify_interval: Duration::from_millis(300),
        lease_check_interval: Duration::from_millis(50),
        watch_channel_capacity: 64,
        ..MemStoreConfig::default()
    }
}

/// Timings for tests: short enough for quick elections, long enough that a
/// busy 2-core machine running tests in parallel does not elect spuriously.
pub fn default_tweak(c: &mut RaftConfig) {
    c.heartbeat_interval = Duration::from_millis(100);
    c.election_timeout_min = Duration::from_millis(500);
    c.election_timeout_max = Duration::from_millis(700);
}

impl Cluster {
    /// Starts `n` members (IDs 1..=n), initializes the cluster on member 1
    /// and waits for a leader.
    pub async fn start(n: u64, tweak: fn(&mut RaftConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster = Self { dir, configs: BTreeMap::new(), stores: BTreeMap::new(), tweak };
        for id in 1..=n {
            cluster.start_new(id).await;
        }
        let members = cluster.configs.iter().map(|(id, c)| (*id, c.member.clone())).collect();
        cluster.stores[&1].initialize(members).await.expect("initialize");
        cluster.wait_leader(Duration::from_secs(10), None).await;
        cluster
    }

    /// Starts a member that is not in any membership yet.
    pub async fn start_new(&mut self, id: NodeId) -> Arc<RaftStore> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a peer port");
        let addr = listener.local_addr().expect("local addr");
        let member = Member { name: format!("n{id}"), peer_url: format!("http://{addr}"), client_urls: vec![] };
        let mut config = RaftConfig::new(id, member, self.dir.path().join(format!("n{id}")));
        config.store = store_config();
        (self.tweak)(&mut config);
        let store = Arc::new(RaftStore::start(config.clone(), listener).await.expect("start a member"));
        self.configs.insert(id, config);
        self.stores.insert(id, Arc::clone(&store));
        store
    }

    /// Waits until the live members (all but `except`) agree on a leader.
    pub async fn wait_leader(&self, timeout: Duration, except: Option<NodeId>) -> NodeId {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders: Vec<Option<NodeId>> =
                self.stores.iter().filter(|(id, _)| Some(**id) != except).map(|(_, s)| s.leader()).collect();
            if let Some(Some(l)) = leaders.first()
                && Some(*l) != except
                && leaders.iter().all(|x| *x == Some(*l))
                && self.stores.contains_key(l)
            {
                return *l;
            }
            assert!(Instant::now() < deadline, "no agreed leader within {timeout:?}: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops a member at once (its data dir stays); other holders of its
    /// handle see every request fail.
    pub async fn kill(&mut self, id: NodeId) {
        let store = self.stores.remove(&id).expect("a running member");
        store.shutdown().await;
    }

    /// Starts a killed member again on its old port and data dir (retrying
    /// while the old instance still holds the database lock).
    pub async fn restart(&mut self, id: NodeId) -> Arc<RaftStore> {
        let config = self.configs[&id].clone();
        let addr = config.member.peer_url.trim_start_matches("http://").to_owned();
        let mut last_err = None;
        for _ in 0..50 {
            let listener = TcpListener::bind(&addr).await.expect("rebind the peer port");
            match RaftStore::start(config.clone(), listener).await {
                Ok(store) => {
                    let store = Arc::new(store);
                    self.stores.insert(id, Arc::clone(&store));
                    return store;
                }
                Err(e) => last_err = Some(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("restarting member {id}: {last_err:?}");
    }

    pub fn store(&self, id: NodeId) -> Arc<RaftStore> {
        Arc::clone(&self.stores[&id])
    }
}
