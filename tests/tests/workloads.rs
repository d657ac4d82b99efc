//! Deployments, ReplicaSets, the scheduler and node lifecycle, driven by
//! the real kubectl against an in-process API server with the controllers,
//! the scheduler and hollow nodes.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use support::{Kubectl, TestServer, ensure_contains, eventually, is_ready};
use waggle_controllers::{ControllerConfig, NodeLifecycleConfig};

fn deployment(replicas: u32, image: &str) -> String {
    deployment_with_cpu(replicas, image, "10m")
}

fn deployment_with_cpu(replicas: u32, image: &str, cpu: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, labels: {{app: web}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 25%, maxUnavailable: 25%}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: {image}
        ports: [{{containerPort: 80, name: http}}]
        resources: {{requests: {{cpu: {cpu}, memory: 16Mi}}}}
"
    )
}

/// Live (not terminating) pods of the deployment: (total, running and ready).
fn live_pods(k: &Kubectl) -> anyhow::Result<(usize, usize, Vec<String>)> {
    let out = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp} {.status.phase} {.spec.nodeName}{\"\\n\"}{end}",
    ])?;
    let mut total = 0;
    let mut running = 0;
    let mut nodes = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // A terminating pod has a deletionTimestamp (4 fields + 1).
        if f.len() == 3 {
            total += 1;
            if f[1] == "Running" {
                running += 1;
                nodes.push(f[2].to_owned());
            }
        }
    }
    Ok((total, running, nodes))
}

/// Watches the deployment's pods and records the worst counts seen: most
/// live pods, fewest live ready pods (once the first rollout is done).
#[derive(Debug, Default)]
struct Extremes {
    max_live: usize,
    min_ready: usize,
}

fn watch_extremes(client: kube::Client) -> (Arc<Mutex<Extremes>>, tokio::task::JoinHandle<()>) {
    let extremes = Arc::new(Mutex::new(Extremes { max_live: 0, min_ready: usize::MAX }));
    let e = extremes.clone();
    let api: Api<Pod> = Api::namespaced(client, "default");
    let task = tokio::spawn(async move {
        let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
        let mut init: BTreeMap<String, Pod> = BTreeMap::new();
        let mut synced = false;
        let mut stream = watcher(api, watcher::Config::default().labels("app=web")).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(p)) => {
                    pods.insert(p.name_any(), p);
                }
                Ok(watcher::Event::Delete(p)) => {
                    pods.remove(&p.name_any());
                }
                Ok(watcher::Event::Init) => init.clear(),
                Ok(watcher::Event::InitApply(p)) => {
                    init.insert(p.name_any(), p);
                }
                Ok(watcher::Event::InitDone) => {
                    pods = std::mem::take(&mut init);
                    synced = true;
                }
                Err(_) => continue,
            }
            if !synced {
                continue;
            }
            let live: Vec<&Pod> = pods.values().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
            let ready = live.iter().filter(|p| is_ready(p)).count();
            if let Ok(mut x) = e.lock() {
                x.max_live = x.max_live.max(live.len());
                x.min_ready = x.min_ready.min(ready);
            }
        }
    });
    (extremes, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fifty_replica_deployment_rolls_out_updates_rolls_back_scales_heals_and_is_deleted() -> anyhow::Result<()> {
    let server = TestServer::with_control_plane(ControllerConfig::default()).await?;
    let _nodes = server.hollow_nodes(5, "hollow-").await?;
    let k = server.kubectl(33);

    // 50 replicas become Running and rollout status completes.
    k.ok_stdin(&["apply", "-f", "-"], &deployment(50, "nginx:1.25"))?;
    let status = k.ok(&["rollout", "status", "deployment/web", "--timeout=180s"])?;
    ensure_contains(&status, "successfully rolled out")?;
    let (live, running, nodes) = live_pods(&k)?;
    anyhow::ensure!(live == 50 && running == 50, "after the rollout: {live} live, {running} running");
    let distinct: std::collections::BTreeSet<_> = nodes.iter().collect();
    anyhow::ensure!(distinct.len() == 5, "pods should spread over the 5 nodes: {distinct:?}");
    let fields = k.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.status.availableReplicas} {.status.updatedReplicas} {.metadata.annotations.deployment\\.kubernetes\\.io/revision} {.status.conditions[?(@.type==\"Progressing\")].reason}",
    ])?;
    anyhow::ensure!(fields == "50 50 1 NewReplicaSetAvailable", "deployment status: {fields}");
    let rs = k.ok(&["get", "rs", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"])?;
    let hash = k.ok(&["get", "rs", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.labels.pod-template-hash}"])?;
    anyhow::ensure!(rs == format!("web-{hash}"), "replicaset {rs} is not named after hash {hash}");

    // set image: a watcher checks maxSurge (13) and maxUnavailable (12) are never violated.
    let (extremes, watch) = watch_extremes(server.client_as("test-watcher").await?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    k.ok(&["set", "image", "deployment/web", "web=nginx:1.26"])?;
    ensure_contains(&k.ok(&["rollout", "status", "deployment/web", "--timeout=180s"])?, "successfully rolled out")?;
    watch.abort();
    let (max_live, min_ready) = {
        let x = extremes.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        (x.max_live, x.min_ready)
    };
    anyhow::ensure!(max_live <= 50 + 13, "maxSurge violated: {max_live} live pods");
    anyhow::ensure!(min_ready >= 50 - 12, "maxUnavailable violated: only {min_ready} ready pods");
    let images = k.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].spec.containers[0].image}"])?;
    anyhow::ensure!(images.split_whitespace().all(|i| i == "nginx:1.26"), "old pods remain: {images}");

    // rollout history and undo.
    let history = k.ok(&["rollout", "history", "deployment/web"])?;
    ensure_contains(&history, "1 ")?;
    ensure_contains(&history, "2 ")?;
    ensure_contains(&k.ok(&["rollout", "undo", "deployment/web"])?, "rolled back")?;
    ensure_contains(&k.ok(&["rollout", "status", "deployment/web", "--timeout=180s"])?, "successfully rolled out")?;
    let image = k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"])?;
    anyhow::ensure!(image == "nginx:1.25", "after undo: {image}");
    let history = k.ok(&["rollout", "history", "deployment/web"])?;
    ensure_contains(&history, "3 ")?;
    anyhow::ensure!(!history.lines().any(|l| l.starts_with("1 ")), "revision 1 became 3:\n{history}");

    // Scale to 0 and back.
    k.ok(&["scale", "deployment/web", "--replicas=0"])?;
    eventually(Duration::from_secs(60), || async {
        let pods = k.ok(&["get", "pods", "-l", "app=web", "-o", "name"])?;
        anyhow::ensure!(pods.trim().is_empty(), "pods left: {pods}");
        Ok(())
    })
    .await?;
    k.ok(&["scale", "deployment/web", "--replicas=5"])?;
    ensure_contains(&k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"])?, "successfully rolled out")?;
    anyhow::ensure!(live_pods(&k)?.1 == 5, "after scaling back: {:?}", live_pods(&k)?);

    // A Service gets the ready pods as endpoints.
    k.ok(&["expose", "deployment/web", "--port=80", "--target-port=http"])?;
    eventually(Duration::from_secs(30), || async {
        let ips = k.ok(&["get", "endpoints", "web", "-o", "jsonpath={.subsets[*].addresses[*].ip}"])?;
        anyhow::ensure!(ips.split_whitespace().count() == 5, "endpoints: {ips}");
        let slice = k.ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[0].endpoints[*].conditions.ready} {.items[0].ports[0].port}",
        ])?;
        anyhow::ensure!(slice == "true true true true true 80", "endpointslice: {slice}");
        Ok(())
    })
    .await?;

    // A deleted pod is replaced.
    let victim = k.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"])?;
    k.ok(&["delete", "pod", &victim, "--timeout=30s"])?;
    eventually(Duration::from_secs(30), || async {
        let (live, running, _) = live_pods(&k)?;
        let names = k.ok(&["get", "pods", "-l", "app=web", "-o", "name"])?;
        anyhow::ensure!(
            live == 5 && running == 5 && !names.contains(&victim),
            "{live} live, {running} running: {names}"
        );
        Ok(())
    })
    .await?;

    // Deleting the deployment removes its ReplicaSets and pods.
    k.ok(&["delete", "deployment", "web"])?;
    eventually(Duration::from_secs(60), || async {
        let left = k.ok(&["get", "rs,pods", "-l", "app=web", "-o", "name"])?;
        anyhow::ensure!(left.trim().is_empty(), "left behind: {left}");
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hollow_node_that_stops_heartbeating_becomes_not_ready_and_its_pods_move() -> anyhow::Result<()> {
    let config = ControllerConfig {
        node_lifecycle: NodeLifecycleConfig {
            monitor_period: Duration::from_millis(500),
            grace_period: Duration::from_secs(4),
            default_toleration_seconds: 2,
        },
    };
    let server = TestServer::with_control_plane(config).await?;
    let nodes = server
        .hollow_nodes_with(waggle_hollow::HollowConfig {
            count: 3,
            name_prefix: "hn-".into(),
            lease_period: Duration::from_secs(1),
            ..Default::default()
        })
        .await?;
    let k = server.kubectl(33);
    // Half a CPU each: LeastAllocated spreads them two per node (without
    // PodTopologySpread, tiny pods would land at random). The API server
    // adds 300 s tolerations of unreachable nodes; these pods say 2 s.
    let manifest = deployment_with_cpu(6, "nginx:1.25", "500m").replace(
        "      containers:",
        "      tolerations:\n      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}\n      containers:",
    );
    k.ok_stdin(&["apply", "-f", "-"], &manifest)?;
    ensure_contains(&k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"])?, "successfully rolled out")?;
    let (_, _, placed) = live_pods(&k)?;
    anyhow::ensure!(placed.iter().any(|n| n == "hn-0"), "no pod on hn-0: {placed:?}");

    nodes.stop_node("hn-0");
    eventually(Duration::from_secs(30), || async {
        let node = k.ok(&[
            "get",
            "node",
            "hn-0",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints[*].key}",
        ])?;
        anyhow::ensure!(node.starts_with("Unknown node.kubernetes.io/unreachable"), "hn-0: {node}");
        Ok(())
    })
    .await?;
    ensure_contains(&k.ok(&["get", "nodes"])?, "NotReady")?;
    // After the (2 s) toleration the pods are evicted and recreated elsewhere.
    eventually(Duration::from_secs(60), || async {
        let (live, running, placed) = live_pods(&k)?;
        anyhow::ensure!(live == 6 && running == 6, "{live} live, {running} running");
        anyhow::ensure!(!placed.iter().any(|n| n == "hn-0"), "pods still on hn-0: {placed:?}");
        Ok(())
    })
    .await?;

    // The node comes back: Ready again, untainted.
    nodes.restart_node("hn-0");
    eventually(Duration::from_secs(30), || async {
        let node = k.ok(&[
            "get",
            "node",
            "hn-0",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}|{.spec.taints}",
        ])?;
        anyhow::ensure!(node == "True|", "hn-0: {node}");
        Ok(())
    })
    .await?;
    Ok(())
}

const PICKY_POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: picky}
spec:
  containers: [{name: c, image: busybox}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_that_tolerates_no_taint_stays_pending_with_the_upstream_message_until_a_node_is_untainted()
-> anyhow::Result<()> {
    let server = TestServer::with_control_plane(ControllerConfig::default()).await?;
    let _nodes = server.hollow_nodes(2, "tn-").await?;
    let k = server.kubectl(33);
    k.ok(&["taint", "nodes", "tn-0", "tn-1", "dedicated=db:NoSchedule"])?;
    k.ok_stdin(&["apply", "-f", "-"], PICKY_POD)?;
    eventually(Duration::from_secs(20), || async {
        let s = k.ok(&[
            "get",
            "pod",
            "picky",
            "-o",
            "jsonpath={.status.phase}|{.status.conditions[?(@.type==\"PodScheduled\")].reason}|{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ])?;
        anyhow::ensure!(
            s == "Pending|Unschedulable|0/2 nodes are available: 2 node(s) had untolerated taint {dedicated: db}. \
                  preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.",
            "pod: {s}"
        );
        Ok(())
    })
    .await?;
    let events = k.ok(&["get", "events", "--field-selector", "involvedObject.name=picky"])?;
    ensure_contains(&events, "FailedScheduling")?;

    // Untainting a node is a cluster change: the pod is retried and runs.
    k.ok(&["taint", "nodes", "tn-1", "dedicated-"])?;
    eventually(Duration::from_secs(20), || async {
        let s = k.ok(&["get", "pod", "picky", "-o", "jsonpath={.spec.nodeName} {.status.phase}"])?;
        anyhow::ensure!(s == "tn-1 Running", "pod: {s}");
        Ok(())
    })
    .await?;

    // The ServiceAccount controller gives new namespaces a default account.
    k.ok(&["create", "namespace", "sa-demo"])?;
    eventually(Duration::from_secs(20), || async {
        k.ok(&["get", "serviceaccount", "default", "-n", "sa-demo"])?;
        Ok(())
    })
    .await?;
    Ok(())
}

const DAEMONSET: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: busybox}]
";

const JOB: &str = "apiVersion: batch/v1
kind: Job
metadata: {name: batch}
spec:
  completions: 4
  parallelism: 2
  template:
    metadata:
      annotations: {hollow.waggle.dev/run-seconds: \"1\"}
    spec:
      restartPolicy: Never
      containers: [{name: work, image: busybox}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemonset_puts_one_pod_on_every_node_and_a_job_completes() -> anyhow::Result<()> {
    let server = TestServer::with_control_plane(ControllerConfig::default()).await?;
    let _nodes = server.hollow_nodes(3, "dn-").await?;
    let k = server.kubectl(33);
    // A tainted node still gets its daemon pod only if tolerated: this one is not.
    k.ok(&["taint", "nodes", "dn-2", "dedicated=db:NoSchedule"])?;
    k.ok_stdin(&["apply", "-f", "-"], DAEMONSET)?;
    ensure_contains(&k.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"])?, "successfully rolled out")?;
    let placed = k.ok(&["get", "pods", "-l", "app=agent", "-o", "jsonpath={.items[*].spec.nodeName}"])?;
    let mut placed: Vec<&str> = placed.split_whitespace().collect();
    placed.sort();
    anyhow::ensure!(placed == ["dn-0", "dn-1"], "daemon pods on {placed:?}");
    // Untainted, dn-2 gets one too.
    k.ok(&["taint", "nodes", "dn-2", "dedicated-"])?;
    eventually(Duration::from_secs(30), || async {
        let s =
            k.ok(&["get", "ds", "agent", "-o", "jsonpath={.status.desiredNumberScheduled} {.status.numberReady}"])?;
        anyhow::ensure!(s == "3 3", "daemonset status: {s}");
        Ok(())
    })
    .await?;

    k.ok_stdin(&["apply", "-f", "-"], JOB)?;
    k.ok(&["wait", "--for=condition=Complete", "job/batch", "--timeout=60s"])?;
    let s = k.ok(&["get", "job", "batch", "-o", "jsonpath={.status.succeeded} {.status.active}"])?;
    anyhow::ensure!(s == "4 0", "job status: {s}");
    Ok(())
}
