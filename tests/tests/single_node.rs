//! `waggle server` as `cargo xtask up` runs it: control plane plus this
//! machine's node agent. The whole cluster runs inside a network namespace
//! the test creates (server, agent, containerd, bridge, pods), so nothing
//! lands in the machine's own network; a busybox deployment becomes Running
//! and answers from the node.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use waggle_tests::{NetNs, NodeGuard, image, is_root, names, target_bin};

/// `GET /` from inside the network namespace at `netns`; the raw answer.
fn http_get_from(netns: &Path, to: std::net::SocketAddr) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let file = std::fs::File::open(netns)?;
    std::thread::scope(|s| {
        s.spawn(move || -> anyhow::Result<String> {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let mut conn = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            conn.set_read_timeout(Some(Duration::from_secs(3)))?;
            conn.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut buf = String::new();
            conn.read_to_string(&mut buf)?;
            Ok(buf)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waggle_server_with_its_agent_runs_a_deployment_whose_pods_answer() -> anyhow::Result<()> {
    assert!(is_root(), "this test runs containerd and creates namespaces: run it as root");
    let ns = NetNs::new("node")?;
    let dir = tempfile::Builder::new().prefix("wgt-node-").tempdir_in("/var/tmp")?;
    let node = names::unique("wgt-node");
    let port = 16443u16;
    let waggle = target_bin("waggle")?;
    let mut cluster = NodeGuard::new(dir.path(), &waggle_agent::sandbox_netns_prefix(&node));
    // The Service proxy's pinned maps and links (its default pin dir).
    cluster.remove_on_drop(&waggle_agent::proxy::default_pin_dir(&node));
    // Its socket LB attaches to a cgroup of this test's, not the host's root.
    let cgroup2 = waggle_dataplane::cgroup::cgroup2_mount()?.context("this kernel mounts a cgroup2 hierarchy")?;
    let sock_cgroup = waggle_tests::cgroup::Cgroup2::new(&cgroup2, "node")?;
    let child = ns
        .command(&waggle)
        .args(["server", "--secure-port", &port.to_string(), "--node-name", &node, "--pod-cidr", "10.245.0.0/24"])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--cni-bin-dir")
        .arg(target_bin("waggle-cni")?.parent().context("dir")?)
        .arg("--sock-lb-cgroup")
        .arg(sock_cgroup.path())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.path().join("server.log"))?))
        .spawn()?;
    cluster.adopt(child);
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let kubectl = |args: &[&str]| -> anyhow::Result<String> {
        let out = ns
            .command(Path::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.33"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("kube-cache"))
            .args(args)
            .output()?;
        anyhow::ensure!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let log = || std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    let mut ready = false;
    for _ in 0..150 {
        if kubectl(&["get", "node", &node, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"])
            .is_ok_and(|s| s == "True")
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(ready, "the server's own node did not become Ready:\n{}", log());

    let tarball = dir.path().join("busybox.tar");
    let built = image::build_busybox(&tarball)?;
    let socket = dir.path().join("agent").join("containerd").join("containerd.sock");
    let out = Command::new(&waggle).args(["images", "import"]).arg(&tarball).arg("--address").arg(&socket).output()?;
    anyhow::ensure!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));

    kubectl(&[
        "create",
        "deployment",
        "web",
        &format!("--image={}", built.name),
        "--replicas=2",
        "--",
        "httpd",
        "-f",
        "-p",
        "8080",
    ])?;
    kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]).with_context(log)?;
    let ips = kubectl(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].status.podIP}"])?;
    let ips: Vec<&str> = ips.split_whitespace().collect();
    anyhow::ensure!(
        ips.len() == 2 && ips.iter().all(|ip| ip.starts_with("10.245.0.")),
        "pod IPs from the node's podCIDR: {ips:?}"
    );
    for ip in ips {
        let addr: std::net::SocketAddr = format!("{ip}:8080").parse()?;
        let answer = ns.run(|| -> anyhow::Result<String> {
            use std::io::{Read as _, Write as _};
            let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            conn.set_read_timeout(Some(Duration::from_secs(3)))?;
            conn.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut buf = String::new();
            conn.read_to_string(&mut buf)?;
            Ok(buf)
        })??;
        // busybox httpd answers 404 for an empty root: any HTTP answer proves the pod serves.
        anyhow::ensure!(answer.starts_with("HTTP/1."), "pod {ip} answers from the node's network: {answer:?}");
    }
    // A ClusterIP in front of them: the agent's Service proxy programs it,
    // and a pod reaches the deployment through it (tc_lb on its veth).
    kubectl(&["expose", "deployment", "web", "--port=80", "--target-port=8080"])?;
    let vip = kubectl(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])?;
    // The client: a connection from inside one pod's network namespace, so
    // its packets enter the node through that pod's veth.
    let prefix = waggle_agent::sandbox_netns_prefix(&node);
    let pod_netns = std::fs::read_dir("/var/run/netns")?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
        .context("no pod network namespace")?;
    let vip_addr: std::net::SocketAddr = format!("{vip}:80").parse()?;
    let mut answered = Err(anyhow::anyhow!("not tried"));
    for _ in 0..50 {
        // Any HTTP answer proves the ClusterIP led to an httpd: nothing
        // listens on the VIP, nor is it routed. A connection Maglev sends back
        // to the client pod itself (hairpin) may fail; the next one, from
        // another source port, may go to the other pod.
        answered = http_get_from(&pod_netns, vip_addr);
        if answered.as_ref().is_ok_and(|a| a.starts_with("HTTP/1.")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answered = answered.with_context(|| format!("a pod reaching ClusterIP {vip}\n{}", log()))?;
    anyhow::ensure!(answered.starts_with("HTTP/1."), "ClusterIP {vip} answered {answered:?}");
    kubectl(&["delete", "service", "web"])?;

    // Deleting the deployment removes its pods; the agent releases them.
    // `kubectl top`: metrics.k8s.io from the agent's cgroup samples (a CPU
    // rate needs two samples, a few seconds apart).
    let mut top = (String::new(), String::new());
    for _ in 0..60 {
        let either = |r: anyhow::Result<String>| r.unwrap_or_else(|e| format!("{e:#}"));
        top = (either(kubectl(&["top", "node"])), either(kubectl(&["top", "pod", "-l", "app=web"])));
        if top.0.contains(&node) && top.1.lines().filter(|l| l.starts_with("web-")).count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::ensure!(
        top.0.contains("CPU(cores)") && top.0.contains(&node),
        "kubectl top node shows the node:\n{}\n{}",
        top.0,
        log()
    );
    anyhow::ensure!(
        top.1.contains("MEMORY(bytes)") && top.1.lines().filter(|l| l.starts_with("web-")).count() == 2,
        "kubectl top pod shows both pods:\n{}",
        top.1
    );
    let missing = kubectl_error(&kubectl, &["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/no-such-node"]);
    anyhow::ensure!(missing.contains("not found"), "a node without metrics is NotFound: {missing}");
    kubectl(&["delete", "deployment", "web", "--timeout=60s"])?;
    let mut gone = false;
    for _ in 0..150 {
        if kubectl(&["get", "pods", "-o", "name"]).is_ok_and(|s| s.trim().is_empty()) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(gone, "the deployment's pods were not removed:\n{}", log());
    Ok(())
}

/// What a failing kubectl call printed (its error), or "" when it succeeded.
fn kubectl_error(kubectl: &dyn Fn(&[&str]) -> anyhow::Result<String>, args: &[&str]) -> String {
    match kubectl(args) {
        Ok(_) => String::new(),
        Err(e) => format!("{e:#}"),
    }
}
