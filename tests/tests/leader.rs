//! Leader election through a Lease: of two candidates only one acts; when
//! it stops renewing, the other takes over.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{TestServer, eventually};
use waggle_controllers::leader::{LeaderElectionConfig, run_as_leader};

fn candidate(
    client: kube::Client,
    identity: &str,
    acting: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<Result<(), std::convert::Infallible>, waggle_controllers::Error>> {
    let config = LeaderElectionConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
        ..LeaderElectionConfig::new("test-component", identity)
    };
    tokio::spawn(run_as_leader(client, config, move || async move {
        acting.store(true, Ordering::SeqCst);
        std::future::pending::<Result<(), std::convert::Infallible>>().await
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_one_candidate_acts_and_the_other_takes_over_when_the_leader_stops() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (a_acting, b_acting) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let a = candidate(server.client_as("candidate-a").await?, "a", a_acting.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = candidate(server.client_as("candidate-b").await?, "b", b_acting.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    anyhow::ensure!(a_acting.load(Ordering::SeqCst), "the first candidate should lead");
    anyhow::ensure!(!b_acting.load(Ordering::SeqCst), "two leaders at once");
    let k = server.kubectl(33);
    let holder =
        k.ok(&["get", "lease", "test-component", "-n", "kube-system", "-o", "jsonpath={.spec.holderIdentity}"])?;
    anyhow::ensure!(holder == "a", "holder: {holder}");

    a.abort();
    eventually(Duration::from_secs(10), || async {
        anyhow::ensure!(b_acting.load(Ordering::SeqCst), "b has not taken over");
        Ok(())
    })
    .await?;
    let fields = k.ok(&[
        "get",
        "lease",
        "test-component",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.holderIdentity} {.spec.leaseTransitions}",
    ])?;
    anyhow::ensure!(fields == "b 1", "lease: {fields}");
    b.abort();
    Ok(())
}
