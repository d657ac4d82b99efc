//! StatefulSets and CronJobs, driven by the real kubectl against an
//! in-process API server with the controllers, the scheduler and hollow
//! nodes.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use support::{TestServer, ensure_contains, eventually, is_ready};
use waggle_controllers::ControllerConfig;

fn statefulset(replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  serviceName: nginx
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: {image}
        resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Gi}}}}
"
    )
}

/// What a watcher saw happen to the set's pods, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Created(String),
    Ready(String),
    Deleted(String),
}

/// The watcher's log, a flag set once its first list is done, and its task.
type Watch = (Arc<Mutex<Vec<Seen>>>, Arc<AtomicBool>, tokio::task::JoinHandle<()>);

fn watch_pods(client: kube::Client) -> Watch {
    let log = Arc::new(Mutex::new(Vec::new()));
    let synced = Arc::new(AtomicBool::new(false));
    let (l, s) = (log.clone(), synced.clone());
    let api: Api<Pod> = Api::namespaced(client, "default");
    let task = tokio::spawn(async move {
        let mut live: std::collections::BTreeMap<String, bool> = Default::default();
        let mut stream = watcher(api, watcher::Config::default().labels("app=web")).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            let mut seen = Vec::new();
            match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    let name = p.name_any();
                    let ready = is_ready(&p);
                    match live.insert(name.clone(), ready) {
                        None => {
                            seen.push(Seen::Created(name.clone()));
                            if ready {
                                seen.push(Seen::Ready(name));
                            }
                        }
                        Some(false) if ready => seen.push(Seen::Ready(name)),
                        Some(_) => {}
                    }
                }
                Ok(watcher::Event::Delete(p)) => {
                    live.remove(&p.name_any());
                    seen.push(Seen::Deleted(p.name_any()));
                }
                Ok(watcher::Event::InitDone) => s.store(true, Ordering::SeqCst),
                _ => {}
            }
            if let Ok(mut log) = l.lock() {
                log.extend(seen);
            }
        }
    });
    (log, synced, task)
}

fn seen(log: &Arc<Mutex<Vec<Seen>>>) -> anyhow::Result<Vec<Seen>> {
    Ok(log.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone())
}

fn deleted(log: &[Seen]) -> Vec<&str> {
    log.iter()
        .filter_map(|s| match s {
            Seen::Deleted(n) => Some(n.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statefulset_comes_up_in_order_updates_and_scales_down_in_reverse_and_keeps_its_claims() -> anyhow::Result<()>
{
    let server = TestServer::with_control_plane(ControllerConfig::default()).await?;
    let _nodes = server.hollow_nodes(2, "st-").await?;
    let k = server.kubectl(33);
    let (log, synced, watch) = watch_pods(server.client_as("test-watcher").await?);
    // The watcher must be listening before the first pod exists.
    eventually(Duration::from_secs(10), || async {
        anyhow::ensure!(synced.load(Ordering::SeqCst), "the pod watcher has not listed yet");
        Ok(())
    })
    .await?;

    // OrderedReady: web-1 is created only once web-0 is Ready, and so on.
    k.ok_stdin(&["apply", "-f", "-"], &statefulset(3, "nginx:1.25"))?;
    ensure_contains(&k.ok(&["rollout", "status", "statefulset/web", "--timeout=90s"])?, "roll")?;
    eventually(Duration::from_secs(30), || async {
        let s = seen(&log)?;
        let want: Vec<Seen> = ["web-0", "web-1", "web-2"]
            .iter()
            .flat_map(|n| [Seen::Created((*n).into()), Seen::Ready((*n).into())])
            .collect();
        anyhow::ensure!(s == want, "pods came up as {s:?}");
        Ok(())
    })
    .await?;

    // Identity: labels, hostname, subdomain, claims.
    let id = k.ok(&[
        "get",
        "pod",
        "web-1",
        "-o",
        "jsonpath={.metadata.labels.statefulset\\.kubernetes\\.io/pod-name} {.metadata.labels.apps\\.kubernetes\\.io/pod-index} {.spec.hostname} {.spec.subdomain} {.spec.volumes[?(@.name==\"data\")].persistentVolumeClaim.claimName}",
    ])?;
    anyhow::ensure!(id == "web-1 1 web-1 nginx data-web-1", "identity of web-1: {id}");
    let pvcs = k.ok(&["get", "pvc", "-o", "jsonpath={.items[*].metadata.name}"])?;
    anyhow::ensure!(pvcs == "data-web-0 data-web-1 data-web-2", "claims: {pvcs}");
    let table = k.ok(&["get", "statefulset", "web"])?;
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    anyhow::ensure!(header == ["NAME", "READY", "AGE"], "columns: {table}");
    ensure_contains(&table, "web    3/3")?;
    let status = k.ok(&[
        "get",
        "sts",
        "web",
        "-o",
        "jsonpath={.status.replicas} {.status.readyReplicas} {.status.currentReplicas} {.status.updatedReplicas} {.status.availableReplicas}",
    ])?;
    anyhow::ensure!(status == "3 3 3 3 3", "status: {status}");

    // RollingUpdate: pods are replaced from the highest ordinal down.
    let first_revision = k.ok(&["get", "sts", "web", "-o", "jsonpath={.status.updateRevision}"])?;
    let before = seen(&log)?.len();
    k.ok(&["set", "image", "statefulset/web", "web=nginx:1.26"])?;
    ensure_contains(&k.ok(&["rollout", "status", "statefulset/web", "--timeout=90s"])?, "roll")?;
    let revs = k.ok(&["get", "sts", "web", "-o", "jsonpath={.status.currentRevision} {.status.updateRevision}"])?;
    let (current, update) = revs.split_once(' ').unwrap_or_default();
    anyhow::ensure!(current == update && update != first_revision, "revisions after the update: {revs}");
    let labels =
        k.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.labels.controller-revision-hash}"])?;
    anyhow::ensure!(labels.split_whitespace().all(|l| l == update), "pod revisions {labels}, want {update}");
    let images = k.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].spec.containers[0].image}"])?;
    anyhow::ensure!(images == "nginx:1.26 nginx:1.26 nginx:1.26", "images after the update: {images}");
    let during = seen(&log)?;
    anyhow::ensure!(deleted(&during[before..]) == ["web-2", "web-1", "web-0"], "update order: {:?}", &during[before..]);
    let history = k.ok(&["rollout", "history", "statefulset/web"])?;
    ensure_contains(&history, "1 ")?;
    ensure_contains(&history, "2 ")?;
    let crs = k.ok(&["get", "controllerrevisions", "-o", "jsonpath={.items[*].revision}"])?;
    anyhow::ensure!(crs == "1 2" || crs == "2 1", "controllerrevisions: {crs}");
    let cr_table = k.ok(&["get", "controllerrevisions", update])?;
    ensure_contains(&cr_table, "statefulset.apps/web")?;

    // rollout undo applies the first ControllerRevision's template again;
    // that revision becomes the newest (3) and the pods go back to it.
    ensure_contains(&k.ok(&["rollout", "undo", "statefulset/web"])?, "rolled back")?;
    ensure_contains(&k.ok(&["rollout", "status", "statefulset/web", "--timeout=90s"])?, "roll")?;
    let images = k.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].spec.containers[0].image}"])?;
    anyhow::ensure!(images == "nginx:1.25 nginx:1.25 nginx:1.25", "images after undo: {images}");
    let back = k.ok(&["get", "sts", "web", "-o", "jsonpath={.status.updateRevision}"])?;
    anyhow::ensure!(back == first_revision, "after undo the update revision is {back}, not {first_revision}");
    let number = k.ok(&["get", "controllerrevision", &back, "-o", "jsonpath={.revision}"])?;
    anyhow::ensure!(number == "3", "the revision rolled back to is number {number}");

    // Scale down: web-2 goes first, then web-1; the claims stay (Retain).
    let before = seen(&log)?.len();
    k.ok(&["scale", "statefulset/web", "--replicas=1"])?;
    eventually(Duration::from_secs(60), || async {
        let pods = k.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"])?;
        anyhow::ensure!(pods == "web-0", "pods: {pods}");
        Ok(())
    })
    .await?;
    let after = seen(&log)?;
    anyhow::ensure!(deleted(&after[before..]) == ["web-2", "web-1"], "scale-down order: {:?}", &after[before..]);
    let pvcs = k.ok(&["get", "pvc", "-o", "jsonpath={.items[*].metadata.name}"])?;
    anyhow::ensure!(pvcs == "data-web-0 data-web-1 data-web-2", "claims after scale-down: {pvcs}");
    watch.abort();

    // Deleting the set removes its pods (garbage collector), not its claims.
    k.ok(&["delete", "statefulset", "web"])?;
    eventually(Duration::from_secs(60), || async {
        let left = k.ok(&["get", "pods,controllerrevisions", "-o", "name"])?;
        anyhow::ensure!(left.trim().is_empty(), "left behind: {left}");
        Ok(())
    })
    .await?;
    let pvcs = k.ok(&["get", "pvc", "-o", "name"])?;
    anyhow::ensure!(pvcs.lines().count() == 3, "claims after deletion: {pvcs}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_statefulset_pods_are_created_without_waiting_and_claims_go_with_scaled_down_pods()
-> anyhow::Result<()> {
    let server = TestServer::with_control_plane(ControllerConfig::default()).await?;
    // No nodes yet: pods stay Pending, so OrderedReady would stop at web-0.
    let k = server.kubectl(33);
    let manifest = statefulset(3, "nginx").replace(
        "  serviceName: nginx\n",
        "  podManagementPolicy: Parallel\n  persistentVolumeClaimRetentionPolicy: {whenScaled: Delete}\n",
    );
    k.ok_stdin(&["apply", "-f", "-"], &manifest)?;
    eventually(Duration::from_secs(30), || async {
        let pods = k.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"])?;
        anyhow::ensure!(pods == "web-0 web-1 web-2", "pods: {pods}");
        Ok(())
    })
    .await?;
    let ready = k.ok(&["get", "sts", "web", "-o", "jsonpath={.status.replicas} {.status.readyReplicas}"])?;
    anyhow::ensure!(ready == "3 0", "status: {ready}");

    // With a node the pods run; scaled to one, the two others and their
    // claims go (whenScaled: Delete), web-0's claim stays.
    let _nodes = server.hollow_nodes(1, "par-").await?;
    ensure_contains(&k.ok(&["rollout", "status", "statefulset/web", "--timeout=60s"])?, "roll")?;
    k.ok(&["scale", "statefulset/web", "--replicas=1"])?;
    eventually(Duration::from_secs(60), || async {
        let left = k.ok(&["get", "pods,pvc", "-o", "name"])?;
        let mut left: Vec<&str> = left.lines().collect();
        left.sort();
        anyhow::ensure!(left == ["persistentvolumeclaim/data-web-0", "pod/web-0"], "left: {left:?}");
        Ok(())
    })
    .await?;
    Ok(())
}

const CRONJOB: &str = "apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: \"* * * * *\"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {hollow.waggle.dev/run-seconds: \"1\"}
        spec:
          restartPolicy: Never
          containers: [{name: work, image: busybox}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cronjob_starts_a_job_each_minute_that_completes_and_old_jobs_are_pruned() -> anyhow::Result<()> {
    let server = TestServer::with_control_plane(ControllerConfig::default()).await?;
    let _nodes = server.hollow_nodes(1, "cj-").await?;
    let k = server.kubectl(33);
    k.ok_stdin(&["apply", "-f", "-"], CRONJOB)?;
    let table = k.ok(&["get", "cronjob", "tick"])?;
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    anyhow::ensure!(
        header == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"],
        "columns: {table}"
    );
    // Two Jobs made by hand from the template (as upstream's kubectl does,
    // owned by the CronJob) complete; with a history of one the older goes.
    k.ok(&["create", "job", "manual-1", "--from=cronjob/tick"])?;
    k.ok(&["wait", "--for=condition=Complete", "job/manual-1", "--timeout=30s"])?;
    k.ok(&["create", "job", "manual-2", "--from=cronjob/tick"])?;
    eventually(Duration::from_secs(30), || async {
        let jobs = k.ok(&["get", "jobs", "-o", "jsonpath={.items[*].metadata.name}"])?;
        anyhow::ensure!(jobs == "manual-2" || jobs.starts_with("tick-"), "jobs: {jobs}");
        Ok(())
    })
    .await?;

    // The scheduled Job comes within a minute, is named after its minute,
    // completes, and becomes the only one kept.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(75);
    let scheduled = loop {
        let jobs = k.ok(&["get", "jobs", "-o", "jsonpath={.items[*].metadata.name}"])?;
        if let Some(name) = jobs.split_whitespace().find(|j| j.starts_with("tick-")) {
            break name.to_owned();
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no scheduled job after a minute: {jobs}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let minutes: i64 = scheduled.trim_start_matches("tick-").parse()?;
    let last = k.ok(&["get", "cronjob", "tick", "-o", "jsonpath={.status.lastScheduleTime}"])?;
    let last: k8s_openapi::jiff::Timestamp = last.parse()?;
    anyhow::ensure!(last.as_second() == minutes * 60, "job {scheduled} for lastScheduleTime {last}");
    k.ok(&["wait", "--for=condition=Complete", &format!("job/{scheduled}"), "--timeout=30s"])?;
    eventually(Duration::from_secs(30), || async {
        let jobs = k.ok(&["get", "jobs", "-o", "jsonpath={.items[*].metadata.name}"])?;
        anyhow::ensure!(jobs == scheduled, "jobs: {jobs}");
        let s = k.ok(&["get", "cronjob", "tick", "-o", "jsonpath={.status.active} {.status.lastSuccessfulTime}"])?;
        anyhow::ensure!(s.starts_with(' ') && s.len() > 1, "status: {s:?}");
        Ok(())
    })
    .await?;
    let row = k.ok(&["get", "cronjob", "tick", "--no-headers"])?;
    let cells: Vec<&str> = row.split_whitespace().collect();
    anyhow::ensure!(
        cells[..6] == ["tick", "*", "*", "*", "*", "*"] && cells[6..9] == ["<none>", "False", "0"],
        "row: {row}"
    );
    Ok(())
}
