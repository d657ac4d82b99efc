//! Hollow nodes (`waggle agent --hollow`) against an in-process API server.

mod support;

use std::time::Duration;

use support::{TestServer, eventually};

const BOUND_POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: bound}
spec:
  nodeName: hn-1
  containers: [{name: c, image: busybox}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hollow_nodes_register_heartbeat_and_run_pods_bound_to_them() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let _nodes = server.hollow_nodes(3, "hn-").await?;
    let k = server.kubectl(33);
    let nodes = k.ok(&["get", "nodes", "-l", "type=hollow", "-o", "jsonpath={.items[*].metadata.name}"])?;
    anyhow::ensure!(nodes == "hn-0 hn-1 hn-2", "nodes: {nodes}");
    let ready = k.ok(&["get", "node", "hn-0", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.allocatable.cpu} {.status.allocatable.pods}"])?;
    anyhow::ensure!(ready == "True 4 110", "node: {ready}");
    eventually(Duration::from_secs(10), || async {
        let holders =
            k.ok(&["get", "leases", "-n", "kube-node-lease", "-o", "jsonpath={.items[*].spec.holderIdentity}"])?;
        anyhow::ensure!(holders == "hn-0 hn-1 hn-2", "leases: {holders}");
        Ok(())
    })
    .await?;

    k.ok_stdin(&["apply", "-f", "-"], BOUND_POD)?;
    eventually(Duration::from_secs(10), || async {
        let s = k.ok(&[
            "get",
            "pod",
            "bound",
            "-o",
            "jsonpath={.status.phase} {.status.podIP} {.status.containerStatuses[0].ready}",
        ])?;
        anyhow::ensure!(s.starts_with("Running 10.64.1.") && s.ends_with(" true"), "pod: {s}");
        Ok(())
    })
    .await?;
    // Graceful deletion is finished by the hollow kubelet.
    k.ok(&["delete", "pod", "bound", "--timeout=20s"])?;
    let left = k.ok(&["get", "pods", "-o", "name"])?;
    anyhow::ensure!(left.trim().is_empty(), "pods left: {left}");
    Ok(())
}
