//! The controllers share one watch per kind (shared informers): however
//! many controllers read pods, they cost the API server one pod watch.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{TestServer, eventually};

type Counts = Arc<Mutex<BTreeMap<String, usize>>>;

fn counts(c: &Counts) -> BTreeMap<String, usize> {
    c.lock().map(|m| m.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_controller_reads_pods_nodes_jobs_replicasets_and_services_through_one_watch_each() -> anyhow::Result<()>
{
    let server = TestServer::start().await?;
    let kubeconfig = server.server.kubeconfig_for("system:kube-controller-manager", &["system:masters"])?;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    // Every watch request the controllers make, by path.
    let watches: Counts = Arc::default();
    let w = watches.clone();
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        if req.uri().query().is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
            && let Ok(mut m) = w.lock()
        {
            *m.entry(req.uri().path().to_owned()).or_default() += 1;
        }
        req
    });
    let client = kube::client::ClientBuilder::try_from(config)?.with_layer(&count).build();
    let controllers = tokio::spawn(waggle_controllers::run(client));

    // The owners' own watches open once the shared caches are filled.
    eventually(Duration::from_secs(30), || async {
        let m = counts(&watches);
        for path in [
            "/apis/apps/v1/statefulsets",
            "/apis/batch/v1/cronjobs",
            "/apis/apps/v1/daemonsets",
            "/apis/apps/v1/deployments",
        ] {
            anyhow::ensure!(m.contains_key(path), "no watch of {path} yet: {m:?}");
        }
        Ok(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = counts(&watches);
    controllers.abort();
    // Two each: the shared informer, and the garbage collector's graph of
    // every resource (it keeps its own). Without sharing, pods were watched
    // by nine controllers.
    for path in
        ["/api/v1/pods", "/api/v1/nodes", "/apis/batch/v1/jobs", "/apis/apps/v1/replicasets", "/api/v1/services"]
    {
        anyhow::ensure!(m.get(path) == Some(&2), "{path} watched {:?} times: {m:?}", m.get(path));
    }
    Ok(())
}
