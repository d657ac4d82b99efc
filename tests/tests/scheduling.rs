//! The scheduler's pod affinity, topology spread and preemption, driven by
//! the real kubectl against an in-process API server with the controllers,
//! the scheduler and hollow nodes.

mod support;

use std::time::Duration;

use support::{Kubectl, TestServer, eventually};
use waggle_controllers::ControllerConfig;

/// `name node phase` for every live pod with `app=<app>`.
fn pods(k: &Kubectl, app: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let out = k.ok(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.name},{.spec.nodeName},{.status.phase},{.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 4 && f[3].is_empty()).then(|| (f[0].to_owned(), f[1].to_owned(), f[2].to_owned()))
        })
        .collect())
}

fn deployment(name: &str, replicas: u32, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
{extra_spec}
      containers:
      - name: c
        image: busybox
        resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn required_anti_affinity_puts_one_replica_per_node_and_leaves_the_extra_one_pending() -> anyhow::Result<()> {
    let server = TestServer::with_control_plane(ControllerConfig::default()).await?;
    let _nodes = server.hollow_nodes(3, "aa-").await?;
    let k = server.kubectl(33);
    let spec = "      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: web}}
            topologyKey: kubernetes.io/hostname";
    k.ok_stdin(&["apply", "-f", "-"], &deployment("web", 4, spec))?;
    eventually(Duration::from_secs(30), || async {
        let p = pods(&k, "web")?;
        let running: Vec<&(String, String, String)> = p.iter().filter(|(_, _, ph)| ph == "Running").collect();
        let mut nodes: Vec<&str> = running.iter().map(|(_, n, _)| n.as_str()).collect();
        nodes.sort();
        anyhow::ensure!(nodes == ["aa-0", "aa-1", "aa-2"], "running on {nodes:?}: {p:?}");
        let waiting: Vec<&(String, String, String)> = p.iter().filter(|(_, n, _)| n.is_empty()).collect();
        anyhow::ensure!(p.len() == 4 && waiting.len() == 1, "pods: {p:?}");
        Ok(())
    })
    .await?;
    let pending = pods(&k, "web")?
        .into_iter()
        .find(|(_, n, _)| n.is_empty())
        .map(|(name, _, _)| name)
        .ok_or_else(|| anyhow::anyhow!("no pending pod"))?;
    let expected = "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
                    preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    eventually(Duration::from_secs(15), || async {
        let cond = k.ok(&[
            "get",
            "pod",
            &pending,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}: {.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ])?;
        anyhow::ensure!(cond == format!("Unschedulable: {expected}"), "condition: {cond}");
        let events = k.ok(&["get", "events", "--field-selector", &format!("involvedObject.name={pending}")])?;
        anyhow::ensure!(events.contains("FailedScheduling"), "events: {events}");
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topology_spread_balances_replicas_across_zones() -> anyhow::Result<()> {
    let server = TestServer::with_control_plane(ControllerConfig::default()).await?;
    let _nodes = server.hollow_nodes(3, "ts-").await?;
    let k = server.kubectl(33);
    // Zone a has two nodes, zone b one: spreading per node would put more in a.
    k.ok(&["label", "node", "ts-0", "ts-1", "topology.kubernetes.io/zone=a"])?;
    k.ok(&["label", "node", "ts-2", "topology.kubernetes.io/zone=b"])?;
    let spec = "      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {matchLabels: {app: spread}}";
    k.ok_stdin(&["apply", "-f", "-"], &deployment("spread", 6, spec))?;
    eventually(Duration::from_secs(30), || async {
        let p = pods(&k, "spread")?;
        anyhow::ensure!(p.len() == 6 && p.iter().all(|(_, _, ph)| ph == "Running"), "pods: {p:?}");
        let in_b = p.iter().filter(|(_, n, _)| n == "ts-2").count();
        anyhow::ensure!(in_b == 3, "zone b has {in_b} of 6: {p:?}");
        Ok(())
    })
    .await?;
    Ok(())
}

const CLASSES: &str = "apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: low}
value: 10
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: polite}
value: 1000
preemptionPolicy: Never
";

fn pod(name: &str, class: &str, cpu: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: prio}}}}
spec:
  priorityClassName: {class}
  containers:
  - name: c
    image: busybox
    resources: {{requests: {{cpu: {cpu}}}}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_high_priority_pod_preempts_a_low_priority_one_on_a_full_cluster() -> anyhow::Result<()> {
    let server = TestServer::with_control_plane(ControllerConfig::default()).await?;
    // One node with 4 CPUs.
    let _nodes = server.hollow_nodes(1, "pe-").await?;
    let k = server.kubectl(33);
    k.ok_stdin(&["apply", "-f", "-"], CLASSES)?;
    // An unknown class is refused at admission.
    let refused =
        k.fails(&["run", "nope", "--image=busybox", "--overrides", r#"{"spec":{"priorityClassName":"nope"}}"#])?;
    anyhow::ensure!(refused.contains("no PriorityClass with name nope was found"), "{refused}");

    k.ok_stdin(&["apply", "-f", "-"], &pod("low", "low", "3"))?;
    let prio = k.ok(&["get", "pod", "low", "-o", "jsonpath={.spec.priority} {.spec.preemptionPolicy}"])?;
    anyhow::ensure!(prio == "10 PreemptLowerPriority", "low: {prio}");
    eventually(Duration::from_secs(20), || async {
        let p = pods(&k, "prio")?;
        anyhow::ensure!(p == [("low".into(), "pe-0".into(), "Running".into())], "pods: {p:?}");
        Ok(())
    })
    .await?;

    // A pod that may not preempt waits, with upstream's reason.
    k.ok_stdin(&["apply", "-f", "-"], &pod("polite", "polite", "2"))?;
    eventually(Duration::from_secs(15), || async {
        let msg = k.ok(&[
            "get",
            "pod",
            "polite",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ])?;
        anyhow::ensure!(
            msg == "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.",
            "polite: {msg}"
        );
        Ok(())
    })
    .await?;
    k.ok(&["delete", "pod", "polite", "--timeout=20s"])?;

    k.ok_stdin(&["apply", "-f", "-"], &pod("high", "high", "2"))?;
    eventually(Duration::from_secs(30), || async {
        let p = pods(&k, "prio")?;
        anyhow::ensure!(p == [("high".into(), "pe-0".into(), "Running".into())], "pods: {p:?}");
        Ok(())
    })
    .await?;
    let events =
        k.ok(&["get", "events", "--field-selector", "involvedObject.name=low", "-o", "jsonpath={.items[*].reason}"])?;
    anyhow::ensure!(events.contains("Preempted"), "events of low: {events}");
    Ok(())
}
