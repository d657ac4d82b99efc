//! The conformance suite against a 3-member cluster, talking to the leader.

mod common;

use std::time::Duration;

use common::{Cluster, default_tweak};

waggle_store::conformance_tests!(|| async {
    let mut cluster = Cluster::start(3, default_tweak).await;
    let leader = cluster.wait_leader(Duration::from_secs(10), None).await;
    let store = cluster.stores.remove(&leader).expect("the leader");
    let store = std::sync::Arc::into_inner(store).expect("the only handle of the leader");
    (store, cluster)
});
