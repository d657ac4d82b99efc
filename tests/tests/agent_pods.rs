//! The node agent end to end: `waggle agent` as a process against an
//! in-process API server, a private containerd, waggle-cni with its bridge in
//! a test-created "node" namespace, and the busybox image built locally.
//!
//! Privileged: CI runs as root. Every name is unique; the agent is killed,
//! and containerd, namespaces, netns files and directories are removed on
//! drop, also when a test fails.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use support::TestServer;
use waggle_runtime::Runtime;
use waggle_tests::cgroup::Cgroup2;
use waggle_tests::{Containerd, NetNs, image, is_root, names};

/// The binaries next to this test's directory (built by `cargo build`).
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|d| d.parent()).context("test binary has no target dir")?.to_path_buf();
    for bin in ["waggle", "waggle-cni"] {
        anyhow::ensure!(dir.join(bin).exists(), "{} is missing: cargo build -p waggle -p waggle-cni", bin);
    }
    Ok(dir)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One node: its containerd, "host" namespace, directories and agent process.
struct Node {
    name: String,
    namespace: String,
    containerd: Containerd,
    host: NetNs,
    dir: tempfile::TempDir,
    bridge: String,
    pod_cidr: String,
    port: u16,
    kubeconfig: PathBuf,
    /// The agent's socket LB attaches here, not to the host's cgroup root.
    sock_cgroup: Cgroup2,
    /// The Service proxy's pinned maps and links; removed with the node (a
    /// left pin dir keeps its maps' kernel memory).
    pins: waggle_tests::bpffs::PinDir,
    agent: Option<Child>,
    /// More `waggle agent` flags.
    extra_args: Vec<String>,
}

impl Node {
    /// A node whose image GC is off: a full shared disk must not take a
    /// test's image away between two of its pods.
    async fn start(server: &TestServer, third_octet: u8) -> anyhow::Result<Self> {
        Self::start_with(server, third_octet, &["--image-gc-high-threshold=100"]).await
    }

    async fn start_with(server: &TestServer, third_octet: u8, extra_args: &[&str]) -> anyhow::Result<Self> {
        assert!(is_root(), "this test runs containerd and creates namespaces: run it as root");
        let containerd = Containerd::start()?;
        let dir = tempfile::Builder::new().prefix("wgt-agent-").tempdir_in("/var/tmp")?;
        let kubeconfig = dir.path().join("agent.kubeconfig");
        std::fs::write(&kubeconfig, &server.server.admin_kubeconfig)?;
        let mut node = Self {
            name: names::unique("wgt-node"),
            namespace: names::unique("wgt"),
            containerd,
            host: NetNs::new("node")?,
            dir,
            bridge: names::unique_ifname("wgab"),
            pod_cidr: format!("10.231.{third_octet}.0/24"),
            port: free_port()?,
            kubeconfig,
            sock_cgroup: Cgroup2::new(
                &waggle_dataplane::cgroup::cgroup2_mount()?.context("this kernel mounts a cgroup2 hierarchy")?,
                "agent",
            )?,
            pins: waggle_tests::bpffs::PinDir::new("agent")?,
            agent: None,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        let tarball = node.dir.path().join("busybox.tar");
        image::build_busybox(&tarball)?;
        node.runtime().await?.import_archive(&tarball).await.with_context(|| node.containerd.log())?;
        node.spawn_agent()?;
        Ok(node)
    }

    async fn runtime(&self) -> anyhow::Result<Runtime> {
        Ok(Runtime::connect(self.containerd.socket(), &self.namespace).await?)
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn netns_dir(&self) -> PathBuf {
        self.dir.path().join("netns")
    }

    fn spawn_agent(&mut self) -> anyhow::Result<()> {
        let bin = target_dir()?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("agent.log"))?;
        let child = Command::new(bin.join("waggle"))
            .arg("agent")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--node-name", &self.name])
            .arg("--container-runtime-endpoint")
            .arg(self.containerd.socket())
            .args(["--containerd-namespace", &self.namespace])
            .arg("--runc-root")
            .arg(self.containerd.dir().join("runc"))
            .arg("--root-dir")
            .arg(self.root())
            .arg("--cni-bin-dir")
            .arg(&bin)
            .arg("--cni-conf-dir")
            .arg(self.dir.path().join("net.d"))
            .args(["--cni-bridge", &self.bridge])
            .arg("--node-netns")
            .arg(self.host.path())
            .arg("--netns-dir")
            .arg(self.netns_dir())
            .args(["--pod-cidr", &self.pod_cidr])
            .args(["--node-ip", "127.0.0.1"])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--backoff-seconds", "1"])
            .args(&self.extra_args)
            .arg("--sock-lb-cgroup")
            .arg(self.sock_cgroup.path())
            .arg("--bpf-pin-dir")
            .arg(self.pins.path())
            .env("RUST_LOG", "info,waggle_agent=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning waggle agent")?;
        self.agent = Some(child);
        Ok(())
    }

    /// SIGKILL, as a crash would.
    fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// GET over plain HTTP from inside the node namespace.
    fn http_get_from_node(&self, ip: &str, port: u16, path: &str) -> anyhow::Result<String> {
        let addr: SocketAddr = format!("{ip}:{port}").parse()?;
        let path = path.to_owned();
        self.host.run(move || -> anyhow::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })?
    }

    /// GET on the agent's HTTPS API with a client certificate for `user`
    /// (curl: status line, headers and body).
    fn agent_api_as(&self, server: &TestServer, user: &str, path: &str) -> anyhow::Result<String> {
        self.agent_api_as_with(server, user, &[], path)
    }

    fn agent_api_with(&self, server: &TestServer, extra: &[&str], path: &str) -> anyhow::Result<String> {
        self.agent_api_as_with(server, "kube-apiserver-kubelet-client", extra, path)
    }

    fn agent_api_as_with(&self, server: &TestServer, user: &str, extra: &[&str], path: &str) -> anyhow::Result<String> {
        let kubeconfig = server.server.kubeconfig_for(user, &[])?;
        let field = |key: &str| -> anyhow::Result<Vec<u8>> {
            let b64 = kubeconfig
                .lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .with_context(|| format!("{key} in the kubeconfig"))?
                .trim()
                .trim_matches('"')
                .to_owned();
            let out = Command::new("base64").arg("-d").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
            out.stdin.as_ref().context("stdin")?.write_all(b64.as_bytes())?;
            Ok(out.wait_with_output()?.stdout)
        };
        let cert = self.dir.path().join(format!("{user}.crt"));
        let key = self.dir.path().join(format!("{user}.key"));
        std::fs::write(&cert, field("client-certificate-data:")?)?;
        std::fs::write(&key, field("client-key-data:")?)?;
        let (cert, key) = (cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned());
        let mut args = vec!["--cert", cert.as_str(), "--key", key.as_str()];
        args.extend_from_slice(extra);
        self.curl(&args, path)
    }

    fn curl(&self, extra: &[&str], path: &str) -> anyhow::Result<String> {
        let out = Command::new("curl")
            .args(["-sS", "-i", "-k", "--max-time", "10"])
            .args(extra)
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()?;
        Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        // (curl's --max-time also ends a WebSocket session that stays open.)
    }

    /// GET as the API server's kubelet client identity.
    fn agent_api(&self, server: &TestServer, path: &str) -> anyhow::Result<String> {
        self.agent_api_as(server, "kube-apiserver-kubelet-client", path)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_agent();
        // The proxy's pinned maps and links (its default pin dir).
        let _ = std::fs::remove_dir_all(waggle_agent::proxy::default_pin_dir(&self.name));
        // Netns files are bind mounts: unmount them before the directory goes.
        if let Ok(entries) = std::fs::read_dir(self.netns_dir()) {
            for e in entries.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn pod_manifest(name: &str, node: &str, container: serde_json::Value, extra: serde_json::Value) -> anyhow::Result<Pod> {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 2,
            "containers": [container],
        },
    });
    if let (Some(spec), Some(extra)) = (pod["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    Ok(serde_json::from_value(pod)?)
}

async fn wait_for(
    pods: &Api<Pod>,
    name: &str,
    node: &Node,
    timeout: Duration,
    what: &str,
    ok: impl Fn(&Pod) -> bool,
) -> anyhow::Result<Pod> {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < timeout {
        if let Some(p) = pods.get_opt(name).await? {
            if ok(&p) {
                return Ok(p);
            }
            last = Some(p);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "pod {name}: {what} not reached within {timeout:?}; last status: {}\nagent log:\n{}",
        serde_json::to_string_pretty(&last.and_then(|p| p.status)).unwrap_or_default(),
        node.agent_log()
    )
}

/// Every test's start: a server, one node on it (its pod CIDR's third octet
/// given) and the default namespace's pods.
async fn start_node(third_octet: u8) -> anyhow::Result<(TestServer, Node, Api<Pod>)> {
    let server = TestServer::start().await?;
    let node = Node::start(&server, third_octet).await?;
    let pods: Api<Pod> = Api::namespaced(server.kube_client().await?, "default");
    Ok((server, node, pods))
}

/// Creates the pod and waits until it runs.
async fn run_pod(
    pods: &Api<Pod>,
    node: &Node,
    name: &str,
    container: serde_json::Value,
    extra: serde_json::Value,
) -> anyhow::Result<Pod> {
    pods.create(&PostParams::default(), &pod_manifest(name, &node.name, container, extra)?).await?;
    wait_for(pods, name, node, Duration::from_secs(60), "Running", |p| phase(p) == "Running").await
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn restart_count(p: &Pod) -> i32 {
    p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first()).map_or(0, |c| c.restart_count)
}

fn httpd(port: u16) -> serde_json::Value {
    json!({
        "name": "web",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", format!("mkdir -p /www && echo hello from $POD_NAME > /www/index.html && echo serving && exec httpd -f -p {port} -h /www")],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "readinessProbe": {"httpGet": {"path": "/", "port": port}, "periodSeconds": 1},
    })
}

/// Files that hold an address in a host-local style IPAM directory.
fn ipam_leases(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(networks) = std::fs::read_dir(root.join("cni").join("networks")) else { return out };
    for net in networks.flatten() {
        for f in std::fs::read_dir(net.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                out.push(name);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busybox_httpd_pod_runs_with_an_address_answers_from_the_node_and_is_released_on_delete() -> anyhow::Result<()>
{
    let server = TestServer::start().await?;
    let node = Node::start(&server, 11).await?;
    let client = server.kube_client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // The node registers, ready, with its podCIDR.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let start = Instant::now();
    let registered = loop {
        if let Some(n) = nodes.get_opt(&node.name).await? {
            break n;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "node never registered:\n{}", node.agent_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(registered.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()), Some(node.pod_cidr.as_str()));
    let ready = registered
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    assert!(ready, "the node reports Ready");
    let images = registered.status.as_ref().and_then(|s| s.images.clone()).unwrap_or_default();
    assert!(
        images.iter().any(|i| i.names.iter().flatten().any(|n| n == image::BUSYBOX_IMAGE) && i.size_bytes > Some(0)),
        "status.images lists the imported image: {images:?}"
    );
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let start = Instant::now();
    while leases.get_opt(&node.name).await?.is_none() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "no lease:\n{}", node.agent_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let name = names::unique("web");
    pods.create(&PostParams::default(), &pod_manifest(&name, &node.name, httpd(8080), json!({}))?).await?;
    let running = wait_for(&pods, &name, &node, Duration::from_secs(60), "Running and Ready", |p| {
        phase(p) == "Running" && is_ready(p)
    })
    .await?;
    let status = running.status.clone().context("status")?;
    let ip = status.pod_ip.clone().context("podIP")?;
    assert!(ip.starts_with("10.231.11."), "pod IP {ip} is from the node's podCIDR");
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    let cs = &status.container_statuses.context("container statuses")?[0];
    assert!(cs.ready && cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
    assert!(cs.container_id.as_deref().is_some_and(|id| id.starts_with("containerd://")));

    // The real kubectl sees it as upstream's kubelet would show it.
    let kubectl = server.kubectl(33);
    let wide = kubectl.ok(&["get", "pod", &name, "-o", "wide"])?;
    assert!(wide.contains("Running") && wide.contains("1/1") && wide.contains(&ip), "kubectl get -o wide:\n{wide}");
    let described = kubectl.ok(&["describe", "pod", &name])?;
    assert!(described.contains("Started container web"), "kubectl describe shows the events:\n{described}");

    let answer = node.http_get_from_node(&ip, 8080, "/")?;
    assert!(answer.contains(&format!("hello from {name}")), "httpd answered: {answer}");

    let logs = node.agent_api(&server, &format!("/containerLogs/default/{name}/web"))?;
    assert!(logs.starts_with("HTTP/1.1 200") && logs.contains("serving"), "logs: {logs}");
    // kubectl logs goes through the API server, which proxies to the agent.
    for minor in [33, 29] {
        let via_api = server.kubectl(minor).ok(&["logs", &name])?;
        assert!(via_api.contains("serving"), "kubectl 1.{minor} logs through the API server: {via_api}");
    }
    let via_api = kubectl.ok(&["logs", &name, "-c", "web", "--tail=1"])?;
    assert!(via_api.ends_with("serving\n"), "kubectl logs --tail=1: {via_api:?}");
    // kubectl exec (WebSocket v5) goes through the API server to the agent.
    let echoed = kubectl.ok(&["exec", &name, "--", "sh", "-c", "echo exec-ok; echo to-stderr >&2"])?;
    assert_eq!(echoed, "exec-ok\n", "kubectl exec through the API server");
    let failed = kubectl.output(&["exec", &name, "--", "sh", "-c", "exit 3"])?;
    assert_eq!(failed.status.code(), Some(3), "kubectl exec passes the exit code on: {failed:?}");
    let tail = node.agent_api(&server, &format!("/containerLogs/default/{name}/web?tailLines=1"))?;
    assert!(tail.ends_with("serving\n"), "tail: {tail}");
    let stranger = node.agent_api_as(&server, "mallory", &format!("/containerLogs/default/{name}/web"))?;
    assert!(stranger.starts_with("HTTP/1.1 403"), "a client not allowed is refused: {stranger}");
    let anonymous = node.curl(&[], &format!("/containerLogs/default/{name}/web"))?;
    assert!(!anonymous.contains("serving"), "a client without a certificate gets nothing: {anonymous}");
    // exec: a WebSocket upgrade with v5.channel.k8s.io; curl prints the raw
    // frames after the 101 (stdout on channel 1, then the Status on channel 3).
    let exec = node.agent_api_with(
        &server,
        &[
            "-N",
            "--http1.1",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "-H",
            "Sec-WebSocket-Protocol: v5.channel.k8s.io",
        ],
        &format!("/exec/default/{name}/web?command=sh&command=-c&command=echo%20exec-works%20%24POD_NAME&stdout=true&stderr=true"),
    )?;
    assert!(exec.starts_with("HTTP/1.1 101"), "exec upgrade: {exec}");
    assert!(exec.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "accept key: {exec}");
    assert!(exec.contains(&format!("exec-works {name}")), "exec output: {exec}");
    assert!(exec.contains(r#""status":"Success""#), "exec status: {exec}");
    let missing = node.agent_api(&server, &format!("/containerLogs/default/{name}/nope"))?;
    assert!(missing.starts_with("HTTP/1.1 400"), "unknown container: {missing}");

    // Deleting the pod stops it, releases its address, netns and containers,
    // and the agent finishes the deletion.
    pods.delete(&name, &DeleteParams::default()).await?;
    let start = Instant::now();
    while pods.get_opt(&name).await?.is_some() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "pod never went away:\n{}", node.agent_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = node.runtime().await?.list_containers(&[]).await?;
    assert!(left.is_empty(), "containers left in containerd: {left:?}");
    assert_eq!(ipam_leases(&node.root()), Vec::<String>::new(), "addresses left in the IPAM dir");
    let netns_left: Vec<_> = std::fs::read_dir(node.netns_dir())?.flatten().map(|e| e.file_name()).collect();
    assert!(netns_left.is_empty(), "netns files left: {netns_left:?}");
    assert!(node.http_get_from_node(&ip, 8080, "/").is_err(), "the address no longer answers");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_liveness_probe_restarts_the_container_and_a_failing_readiness_probe_keeps_it_not_ready()
-> anyhow::Result<()> {
    let (_server, node, pods) = start_node(12).await?;
    let name = names::unique("live");
    let container = json!({
        "name": "c",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 600"],
        "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 1},
        "readinessProbe": {"tcpSocket": {"port": 9999}, "periodSeconds": 1},
    });
    pods.create(&PostParams::default(), &pod_manifest(&name, &node.name, container, json!({}))?).await?;
    let p = wait_for(&pods, &name, &node, Duration::from_secs(60), "a restart", |p| restart_count(p) >= 1).await?;
    assert_eq!(phase(&p), "Running");
    assert!(!is_ready(&p), "nothing listens on 9999: the pod is not ready");
    let last = p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c[0].last_state.clone());
    assert!(last.and_then(|l| l.terminated).is_some(), "the killed attempt is the last state");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_reaches_crash_loop_back_off() -> anyhow::Result<()> {
    let (server, node, pods) = start_node(13).await?;
    let name = names::unique("crash");
    let container = json!({
        "name": "c",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "echo boom; exit 3"],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    // A container that says why it ended in its termination-log file.
    let said = names::unique("said");
    let sayer = json!({
        "name": "c",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "echo not this; echo all done > /dev/termination-log"],
    });
    pods.create(&PostParams::default(), &pod_manifest(&said, &node.name, sayer, json!({"restartPolicy": "Never"}))?)
        .await?;
    pods.create(&PostParams::default(), &pod_manifest(&name, &node.name, container, json!({}))?).await?;
    let p = wait_for(&pods, &name, &node, Duration::from_secs(60), "CrashLoopBackOff", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
    })
    .await?;
    let cs = &p.status.as_ref().and_then(|s| s.container_statuses.clone()).context("statuses")?[0];
    assert!(cs.restart_count >= 1);
    let last = cs.last_state.as_ref().and_then(|l| l.terminated.as_ref()).context("last state")?;
    assert_eq!(last.exit_code, 3);
    assert_eq!(last.message.as_deref(), Some("boom\n"), "FallbackToLogsOnError: the log's end");
    let p = wait_for(&pods, &said, &node, Duration::from_secs(60), "Succeeded", |p| phase(p) == "Succeeded").await?;
    let done = container_status(&p, "c").and_then(|c| c.state?.terminated).context("terminated")?;
    assert_eq!(done.message.as_deref(), Some("all done\n"), "the termination-log file: {done:?}");

    // activeDeadlineSeconds: the pod is stopped and fails with DeadlineExceeded.
    let late = names::unique("deadline");
    let sleeper_c =
        json!({"name": "c", "image": image::BUSYBOX_IMAGE, "imagePullPolicy": "Never", "command": ["sleep", "600"]});
    pods.create(
        &PostParams::default(),
        &pod_manifest(&late, &node.name, sleeper_c, json!({"activeDeadlineSeconds": 2}))?,
    )
    .await?;
    let p = wait_for(&pods, &late, &node, Duration::from_secs(60), "DeadlineExceeded", |p| {
        phase(p) == "Failed" && container_status(p, "c").and_then(|c| c.state?.terminated).is_some()
    })
    .await?;
    assert_eq!(p.status.as_ref().and_then(|s| s.reason.as_deref()), Some("DeadlineExceeded"));
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(server.kube_client().await?, "default");
    let back_off =
        events.list(&Default::default()).await?.items.into_iter().any(|e| {
            e.involved_object.name.as_deref() == Some(name.as_str()) && e.reason.as_deref() == Some("BackOff")
        });
    assert!(back_off, "a BackOff event is recorded");
    // Only the newest two attempts are kept in containerd.
    let ours = node.runtime().await?.list_containers(&[("io.waggle.pod.name", name.as_str())]).await?;
    assert!(ours.len() <= 2, "old attempts are removed: {ours:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_is_not_present_with_pull_policy_never_waits_with_err_image_never_pull() -> anyhow::Result<()> {
    let (_server, node, pods) = start_node(14).await?;
    let name = names::unique("noimg");
    let container = json!({"name": "c", "image": "example.invalid/none:1", "imagePullPolicy": "Never"});
    pods.create(&PostParams::default(), &pod_manifest(&name, &node.name, container, json!({}))?).await?;
    let p = wait_for(&pods, &name, &node, Duration::from_secs(60), "ErrImageNeverPull", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
            .is_some_and(|r| r == "ErrImageNeverPull")
    })
    .await?;
    assert_eq!(phase(&p), "Pending");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_agent_re_adopts_its_pod_without_restarting_or_duplicating_it() -> anyhow::Result<()> {
    let (server, mut node, pods) = start_node(15).await?;
    let name = names::unique("adopt");
    // A second container writes a numbered line every 200 ms, also while
    // no agent reads its output.
    let ticker = json!({
        "name": "ticker",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"],
    });
    let both = json!({"containers": [httpd(8080), ticker]});
    pods.create(&PostParams::default(), &pod_manifest(&name, &node.name, httpd(8080), both)?).await?;
    let before = wait_for(&pods, &name, &node, Duration::from_secs(60), "Running and Ready", |p| {
        phase(p) == "Running" && is_ready(p)
    })
    .await?;
    let mut containers_before = node.runtime().await?.list_containers(&[]).await?;
    assert_eq!(containers_before.len(), 2);

    node.kill_agent();
    node.spawn_agent()?;
    // Give the new agent time to list, sync and resync its pod.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let after = pods.get(&name).await?;
    assert_eq!(phase(&after), "Running");
    assert_eq!(restart_count(&after), 0, "agent log:\n{}", node.agent_log());
    let mut containers_after = node.runtime().await?.list_containers(&[]).await?;
    containers_before.sort_by(|a, b| a.id.cmp(&b.id));
    containers_after.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        containers_after.iter().map(|c| &c.id).collect::<Vec<_>>(),
        containers_before.iter().map(|c| &c.id).collect::<Vec<_>>(),
        "the same containers run"
    );
    let ip = before.status.and_then(|s| s.pod_ip).context("podIP")?;
    assert_eq!(after.status.and_then(|s| s.pod_ip), Some(ip.clone()));
    assert!(node.http_get_from_node(&ip, 8080, "/")?.contains("hello from"));
    // The new agent took over the output: every line is in the log, in order.
    let logs = server.kubectl(33).ok(&["logs", &name, "-c", "ticker"])?;
    let ticks: Vec<u32> = logs.lines().filter_map(|l| l.strip_prefix("tick ")?.parse().ok()).collect();
    assert!(ticks.len() > 30, "ticks before, during and after the restart: {logs}");
    assert!(ticks.iter().enumerate().all(|(i, t)| *t == i as u32), "no line lost or repeated: {ticks:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_volumes_and_env_from_config_maps_and_secrets_reach_the_container() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let server = TestServer::start().await?;
    let node = Node::start(&server, 16).await?;
    let client = server.kube_client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let cm = names::unique("cm");
    let secret = names::unique("sec");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": cm}, "data": {"color": "blue", "app.conf": "mode=fast"}
        }))?,
    )
    .await?;
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": secret}, "stringData": {"password": "hunter2"}
            }))?,
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = names::unique("vols");
    let container = json!({
        "name": "main",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "echo color=$COLOR pw=$PW; cat /etc/app/app.conf; echo; cat /work/from-init; cat /secret/password; echo; cat /info/name; echo; sleep 600"],
        "env": [
            {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": cm, "key": "color"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}},
        ],
        "volumeMounts": [
            {"name": "conf", "mountPath": "/etc/app"},
            {"name": "scratch", "mountPath": "/work"},
            {"name": "sec", "mountPath": "/secret", "readOnly": true},
            {"name": "info", "mountPath": "/info"},
        ],
    });
    let extra = json!({
        "initContainers": [{
            "name": "prepare",
            "image": image::BUSYBOX_IMAGE,
            "imagePullPolicy": "Never",
            "command": ["sh", "-c", "echo written-by-init > /work/from-init"],
            "volumeMounts": [{"name": "scratch", "mountPath": "/work"}],
        }],
        "volumes": [
            {"name": "conf", "configMap": {"name": cm}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "sec", "secret": {"secretName": secret}},
            {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        ],
    });
    let p = run_pod(&pods, &node, &name, container, extra).await?;
    let init = p.status.as_ref().and_then(|s| s.init_container_statuses.clone()).context("init statuses")?;
    let done = init[0].state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code);
    assert_eq!(done, Some(0), "the init container completed");
    let start = Instant::now();
    let logs = loop {
        let logs = node.agent_api(&server, &format!("/containerLogs/default/{name}/main"))?;
        if logs.contains(&name) || start.elapsed() > Duration::from_secs(10) {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for want in ["color=blue pw=hunter2", "mode=fast", "written-by-init", "hunter2", name.as_str()] {
        assert!(logs.contains(want), "{want:?} missing from the logs:\n{logs}\nagent log:\n{}", node.agent_log());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_over_its_memory_limit_is_reported_oom_killed_and_its_cgroups_hold_its_resources()
-> anyhow::Result<()> {
    let (server, node, pods) = start_node(17).await?;
    // CPU request → shares (1024 per core), limit → CFS quota, memory limit;
    // the container sees its own cgroups, read-only, as under containerd's CRI.
    let sized = names::unique("sized");
    let reader = json!({
        "name": "c",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "cat /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/memory/memory.limit_in_bytes; touch /sys/fs/cgroup/cpu/x 2>/dev/null || echo read-only"],
        "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "32Mi"}},
    });
    pods.create(&PostParams::default(), &pod_manifest(&sized, &node.name, reader, json!({"restartPolicy": "Never"}))?)
        .await?;
    wait_for(&pods, &sized, &node, Duration::from_secs(60), "Succeeded", |p| phase(p) == "Succeeded").await?;
    let logs = server.kubectl(33).ok(&["logs", &sized]).with_context(|| node.agent_log())?;
    assert_eq!(logs, "256\n50000\n33554432\nread-only\n", "agent log:\n{}", node.agent_log());

    let name = names::unique("oom");
    let container = json!({
        "name": "hog",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        // A shell variable of 64 MB in a 16 MiB cgroup.
        "command": ["sh", "-c", "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived"],
        "resources": {"limits": {"memory": "16Mi"}, "requests": {"memory": "16Mi"}},
    });
    pods.create(
        &PostParams::default(),
        &pod_manifest(&name, &node.name, container, json!({"restartPolicy": "Never"}))?,
    )
    .await?;
    let p = wait_for(&pods, &name, &node, Duration::from_secs(60), "Failed", |p| phase(p) == "Failed").await?;
    let cs = &p.status.as_ref().and_then(|s| s.container_statuses.clone()).context("statuses")?[0];
    let t = cs.state.as_ref().and_then(|s| s.terminated.as_ref()).context("terminated")?;
    assert_eq!(t.reason.as_deref(), Some("OOMKilled"), "{t:?}");
    assert_eq!(t.exit_code, 137);
    assert_eq!(p.status.as_ref().and_then(|s| s.qos_class.as_deref()), Some("Burstable"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pods_started_together_get_distinct_addresses_that_each_answer_and_are_all_released() -> anyhow::Result<()>
{
    let (_server, node, pods) = start_node(18).await?;
    let names: Vec<String> = (0..3).map(|i| names::unique(&format!("web{i}"))).collect();
    for name in &names {
        pods.create(&PostParams::default(), &pod_manifest(name, &node.name, httpd(8080), json!({}))?).await?;
    }
    let mut ips = Vec::new();
    for name in &names {
        let p = wait_for(&pods, name, &node, Duration::from_secs(60), "Running and Ready", |p| {
            phase(p) == "Running" && is_ready(p)
        })
        .await?;
        let ip = p.status.and_then(|s| s.pod_ip).context("podIP")?;
        let answer = node.http_get_from_node(&ip, 8080, "/")?;
        assert!(answer.contains(&format!("hello from {name}")), "{ip} answered: {answer}");
        ips.push(ip);
    }
    let mut distinct = ips.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "addresses: {ips:?}");
    for name in &names {
        pods.delete(name, &DeleteParams::default()).await?;
    }
    let start = Instant::now();
    while !pods.list(&Default::default()).await?.items.is_empty() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "pods never went away:\n{}", node.agent_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(node.runtime().await?.list_containers(&[]).await?.is_empty(), "no container left");
    assert_eq!(ipam_leases(&node.root()), Vec::<String>::new(), "no address left");
    Ok(())
}

/// Starts `kubectl port-forward` to `target`'s `remote` port on a free local
/// port; returns the process and that port.
fn port_forward(kubectl: &support::Kubectl, target: &str, remote: u16) -> anyhow::Result<(Child, u16)> {
    let mut child = kubectl
        .command(&["port-forward", target, &format!(":{remote}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().context("stdout")?;
    // "Forwarding from 127.0.0.1:<port> -> <remote>"
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    let port = loop {
        if out.read(&mut byte)? == 0 {
            let _ = child.kill();
            let mut err = String::new();
            child.stderr.take().context("stderr")?.read_to_string(&mut err)?;
            bail!("kubectl port-forward ended: {}{err}", String::from_utf8_lossy(&seen));
        }
        seen.push(byte[0]);
        let text = String::from_utf8_lossy(&seen);
        if let Some(line) = text.lines().find(|l| l.starts_with("Forwarding from 127.0.0.1:") && text.ends_with('\n')) {
            let port = line
                .trim_start_matches("Forwarding from 127.0.0.1:")
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .context("local port")?;
            break port;
        }
    };
    // Keep draining stdout ("Handling connection for …") so kubectl never blocks.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Ok((child, port))
}

/// A plain HTTP/1.0 GET to 127.0.0.1:`port`; the whole answer.
fn http_get_local(port: u16, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_port_forward_work_over_websocket_and_spdy_with_kubectl_1_33_and_1_29() -> anyhow::Result<()> {
    let (server, node, pods) = start_node(19).await?;
    let name = names::unique("pf");
    pods.create(&PostParams::default(), &pod_manifest(&name, &node.name, httpd(8080), json!({}))?).await?;
    wait_for(&pods, &name, &node, Duration::from_secs(60), "Running and Ready", |p| {
        phase(p) == "Running" && is_ready(p)
    })
    .await?;

    // 1.33 speaks WebSocket (exec; port-forward tunnels SPDY in it), 1.29 SPDY.
    for minor in [33, 29] {
        let kubectl = server.kubectl(minor);
        let out = kubectl.output(&["exec", &name, "--", "sh", "-c", "echo to-stdout; echo to-stderr >&2"])?;
        assert_eq!(String::from_utf8_lossy(&out.stdout), "to-stdout\n", "1.{minor} exec stdout: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("to-stderr"), "1.{minor} exec stderr: {out:?}");
        assert!(out.status.success(), "1.{minor} exec: {out:?}");
        let failed = kubectl.output(&["exec", &name, "--", "sh", "-c", "exit 7"])?;
        assert_eq!(failed.status.code(), Some(7), "1.{minor} exec passes the exit code on: {failed:?}");
        let piped = kubectl.ok_stdin(&["exec", "-i", &name, "--", "cat"], "through-stdin\n")?;
        assert_eq!(piped, "through-stdin\n", "1.{minor} exec -i");

        let (mut child, port) = port_forward(&kubectl, &format!("pod/{name}"), 8080)?;
        let answers = (0..2).map(|_| http_get_local(port, "/")).collect::<Vec<_>>();
        let _ = child.kill();
        let _ = child.wait();
        for answer in answers {
            let answer = answer.with_context(|| format!("1.{minor} port-forward\nagent log:\n{}", node.agent_log()))?;
            assert!(answer.contains(&format!("hello from {name}")), "1.{minor} port-forward answer: {answer}");
        }
    }
    // Which way each kubectl came (the agent logs the protocol it served).
    let log = node.agent_log();
    for used in [
        "websocket:v5.channel.k8s.io",
        "websocket:SPDY/3.1+portforward.k8s.io",
        "SPDY/3.1:v4.channel.k8s.io",
        "SPDY/3.1:portforward.k8s.io",
    ] {
        assert!(log.contains(used), "{used} was served:\n{log}");
    }
    let (mut child, port) = port_forward(&server.kubectl(33), &format!("pod/{name}"), 9)?;
    let refused = http_get_local(port, "/");
    let _ = child.kill();
    let _ = child.wait();
    assert!(refused.map(|a| a.is_empty()).unwrap_or(true), "a port nobody listens on gives no answer");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_sends_stdin_to_the_container_and_streams_its_output_with_kubectl_1_33_and_1_29() -> anyhow::Result<()> {
    let (server, node, pods) = start_node(20).await?;
    for minor in [33, 29] {
        let name = names::unique("attach");
        let container = json!({
            "name": "echo",
            "image": image::BUSYBOX_IMAGE,
            "imagePullPolicy": "Never",
            "stdin": true,
            "stdinOnce": true,
            "command": ["sh", "-c", "echo ready; while read l; do echo \"got $l\"; done; echo bye"],
        });
        let manifest = pod_manifest(&name, &node.name, container, json!({"restartPolicy": "Never"}))?;
        pods.create(&PostParams::default(), &manifest).await?;
        wait_for(&pods, &name, &node, Duration::from_secs(60), "Running", |p| phase(p) == "Running").await?;
        let kubectl = server.kubectl(minor);
        support::eventually(Duration::from_secs(20), || async {
            let logs = kubectl.ok(&["logs", &name])?;
            anyhow::ensure!(logs.contains("ready"), "not ready yet: {logs:?}");
            Ok(())
        })
        .await?;
        // stdinOnce: the end of kubectl's stdin is the end of the container's,
        // so the loop ends, the container exits and so does kubectl.
        let out = kubectl.output_stdin(&["attach", "-i", &name], "hello\n")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "1.{minor} attach: {out:?}\nagent log:\n{}", node.agent_log());
        assert!(stdout.contains("got hello"), "1.{minor} attach output: {out:?}");
        assert!(!stdout.contains("ready"), "attach streams from now on, not the old log: {stdout:?}");
        wait_for(&pods, &name, &node, Duration::from_secs(30), "Succeeded", |p| phase(p) == "Succeeded").await?;
        pods.delete(&name, &DeleteParams::default()).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_the_time_of_each_line_for_timestamps_since_and_limit_bytes_with_kubectl_1_33_and_1_29()
-> anyhow::Result<()> {
    let (server, node, pods) = start_node(21).await?;
    let name = names::unique("logs");
    let container = json!({
        "name": "talk",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        // stdout and stderr are copied by separate readers (as the kubelet's
        // are): lines written at once on both may land in either order.
        "command": ["sh", "-c", "echo one; sleep 2; echo two; sleep 1; echo three >&2; exec sleep 600"],
    });
    run_pod(&pods, &node, &name, container, json!({})).await?;
    let kubectl = server.kubectl(33);
    support::eventually(Duration::from_secs(20), || async {
        let logs = kubectl.ok(&["logs", &name])?;
        anyhow::ensure!(logs == "one\ntwo\nthree\n", "not all written yet: {logs:?}");
        Ok(())
    })
    .await?;
    for minor in [33, 29] {
        let kubectl = server.kubectl(minor);
        let stamped = kubectl.ok(&["logs", &name, "--timestamps"])?;
        let lines: Vec<(&str, jiff::Timestamp, &str)> = stamped
            .lines()
            .map(|l| {
                let (t, rest) = l.split_once(' ').context("a timestamp and the line")?;
                Ok((t, t.parse::<jiff::Timestamp>().with_context(|| format!("timestamp in {l:?}"))?, rest))
            })
            .collect::<anyhow::Result<_>>()?;
        let texts: Vec<&str> = lines.iter().map(|(_, _, t)| *t).collect();
        assert_eq!(texts, ["one", "two", "three"], "1.{minor} --timestamps: {stamped}");
        assert!(lines[1].1 > lines[0].1, "each line has the time it was written: {stamped}");
        let since = lines[1].0;
        let recent = kubectl.ok(&["logs", &name, &format!("--since-time={since}")])?;
        assert_eq!(recent, "two\nthree\n", "1.{minor} --since-time={since}");
        assert_eq!(kubectl.ok(&["logs", &name, "--since=1h"])?, "one\ntwo\nthree\n", "1.{minor} --since=1h");
        assert_eq!(kubectl.ok(&["logs", &name, "--limit-bytes=5"])?, "one\nt", "1.{minor} --limit-bytes");
        assert_eq!(
            kubectl.ok(&["logs", &name, "--tail=1", "--timestamps"])?,
            format!("{} three\n", lines[2].0),
            "1.{minor} --tail=1 --timestamps"
        );
    }

    // -f streams lines as they are written and ends when the container does.
    let brief = names::unique("brief");
    let container = json!({
        "name": "brief",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "echo early; sleep 3; echo late"],
    });
    let manifest = pod_manifest(&brief, &node.name, container, json!({"restartPolicy": "Never"}))?;
    pods.create(&PostParams::default(), &manifest).await?;
    wait_for(&pods, &brief, &node, Duration::from_secs(60), "Running", |p| phase(p) == "Running").await?;
    let followed = server.kubectl(33).ok(&["logs", "-f", "--timestamps", &brief])?;
    let texts: Vec<&str> = followed.lines().filter_map(|l| l.split_once(' ').map(|(_, t)| t)).collect();
    assert_eq!(texts, ["early", "late"], "logs -f --timestamps until the container ended: {followed}");
    Ok(())
}

fn waiting_reason(p: &Pod) -> Option<String> {
    p.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.waiting.as_ref()?.reason.clone()
}

/// Messages of the events recorded about pod `name`.
async fn events_of(client: &kube::Client, name: &str) -> anyhow::Result<Vec<String>> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    Ok(events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| format!("{} {}", e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect())
}

fn sleeper(image: &str, policy: &str) -> serde_json::Value {
    json!({"name": "c", "image": image, "imagePullPolicy": policy, "command": ["sleep", "3600"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_pulled_from_a_registry_as_their_pull_policy_says_and_failures_back_off() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let node = Node::start(&server, 22).await?;
    let client = server.kube_client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut registry = waggle_tests::registry::Registry::start()?;
    let host = registry.host();
    let busybox_tar = node.dir.path().join("busybox.tar");
    registry.push_oci_archive(&busybox_tar, "waggle", "waggle/busybox", "v1")?;
    let image = format!("{host}/waggle/busybox:v1");
    let runtime = node.runtime().await?;
    assert!(!runtime.has_image(&image).await?, "not pulled yet");

    // IfNotPresent and absent: pulled, then it runs.
    let first = names::unique("pull");
    pods.create(&PostParams::default(), &pod_manifest(&first, &node.name, sleeper(&image, "IfNotPresent"), json!({}))?)
        .await?;
    wait_for(&pods, &first, &node, Duration::from_secs(60), "Running", |p| phase(p) == "Running").await?;
    assert!(runtime.has_image(&image).await?, "the pulled image is in containerd under its name");
    let events = events_of(&client, &first).await?;
    assert!(events.iter().any(|e| e == &format!("Pulling Pulling image \"{image}\"")), "events: {events:?}");
    assert!(
        events.iter().any(|e| e.starts_with(&format!("Pulled Successfully pulled image \"{image}\""))),
        "events: {events:?}"
    );

    // Never: the image pulled once is there now.
    let never = names::unique("never");
    pods.create(&PostParams::default(), &pod_manifest(&never, &node.name, sleeper(&image, "Never"), json!({}))?)
        .await?;
    wait_for(&pods, &never, &node, Duration::from_secs(60), "Running", |p| phase(p) == "Running").await?;

    // An index: the linux/amd64 entry is the one pulled, whatever its place.
    // (An index refers to manifests of its own repository.)
    let pause_tar = node.dir.path().join("pause.tar");
    image::build_pause(&pause_tar)?;
    registry.push_oci_archive(&busybox_tar, "waggle", "waggle/multi", "busybox")?;
    registry.push_oci_archive(&pause_tar, "waggle-pause", "waggle/multi", "pause")?;
    let oci_manifest = "application/vnd.oci.image.manifest.v1+json";
    let busybox_digest = registry.manifest_digest("waggle/multi", "busybox", oci_manifest)?;
    let pause_digest = registry.manifest_digest("waggle/multi", "pause", oci_manifest)?;
    let size = |tag: &str| -> anyhow::Result<usize> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "-H", &format!("Accept: {oci_manifest}")])
            .arg(format!("http://{host}/v2/waggle/multi/manifests/{tag}"))
            .output()?;
        Ok(out.stdout.len())
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": oci_manifest, "digest": pause_digest, "size": size("pause")?,
             "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": oci_manifest, "digest": busybox_digest, "size": size("busybox")?,
             "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    });
    registry.put_manifest(
        "waggle/multi",
        "v1",
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index)?,
    )?;
    let multi_image = format!("{host}/waggle/multi:v1");
    let multi = names::unique("multi");
    pods.create(&PostParams::default(), &pod_manifest(&multi, &node.name, sleeper(&multi_image, "Always"), json!({}))?)
        .await?;
    wait_for(&pods, &multi, &node, Duration::from_secs(60), "Running", |p| phase(p) == "Running").await?;
    assert_eq!(runtime.image_target(&multi_image).await?.digest, busybox_digest, "the amd64 manifest was chosen");
    let p = pods.get(&multi).await?;
    let image_id = p.status.and_then(|s| s.container_statuses).and_then(|c| c.first().map(|c| c.image_id.clone()));
    assert_eq!(image_id, Some(format!("{host}/waggle/multi@{busybox_digest}")), "imageID is repository@digest");

    // A missing image: ErrImagePull, then ImagePullBackOff, and an event.
    let missing_image = format!("{host}/waggle/missing:v1");
    let missing = names::unique("missing");
    pods.create(
        &PostParams::default(),
        &pod_manifest(&missing, &node.name, sleeper(&missing_image, "IfNotPresent"), json!({}))?,
    )
    .await?;
    // (ErrImagePull may last only until the worker's next sync, which finds
    // the back-off running: the events record it.)
    let p = wait_for(&pods, &missing, &node, Duration::from_secs(60), "ImagePullBackOff", |p| {
        waiting_reason(p).as_deref() == Some("ImagePullBackOff")
    })
    .await?;
    assert_eq!(phase(&p), "Pending");
    let events = events_of(&client, &missing).await?;
    assert!(
        events.iter().any(|e| e.starts_with(&format!("Failed Failed to pull image \"{missing_image}\""))),
        "events: {events:?}"
    );
    assert!(events.iter().any(|e| e == "Failed Error: ErrImagePull"), "events: {events:?}");
    assert!(events.iter().any(|e| e.starts_with("BackOff Back-off pulling image")), "events: {events:?}");

    // The registry goes away: a pulled image is reused (IfNotPresent), but
    // Always must reach the registry and fails.
    registry.stop();
    let reuse = names::unique("reuse");
    pods.create(&PostParams::default(), &pod_manifest(&reuse, &node.name, sleeper(&image, "IfNotPresent"), json!({}))?)
        .await?;
    wait_for(&pods, &reuse, &node, Duration::from_secs(60), "Running", |p| phase(p) == "Running").await?;
    let always = names::unique("always");
    pods.create(&PostParams::default(), &pod_manifest(&always, &node.name, sleeper(&image, "Always"), json!({}))?)
        .await?;
    let p = wait_for(&pods, &always, &node, Duration::from_secs(60), "ErrImagePull or ImagePullBackOff", |p| {
        matches!(waiting_reason(p).as_deref(), Some("ErrImagePull" | "ImagePullBackOff"))
    })
    .await?;
    assert_eq!(phase(&p), "Pending");
    let events = events_of(&client, &always).await?;
    assert!(
        events.iter().any(|e| e.starts_with(&format!("Failed Failed to pull image \"{image}\""))),
        "events: {events:?}"
    );
    for name in [&first, &never, &multi, &missing, &reuse, &always] {
        pods.delete(name, &DeleteParams::default()).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_attach_with_a_terminal_get_a_pty_of_the_clients_size_with_kubectl_1_33_and_1_29() -> anyhow::Result<()>
{
    let (server, mut node, pods) = start_node(23).await?;
    let name = names::unique("tty");
    let container = json!({
        "name": "c",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sleep", "3600"],
    });
    run_pod(&pods, &node, &name, container, json!({})).await?;
    // A container on a terminal whose size it keeps printing.
    let on_tty = names::unique("ttyc");
    let container = json!({
        "name": "c",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "stdin": true,
        "tty": true,
        "command": ["sh", "-c", "while true; do echo \"size $(stty size)\"; sleep 0.3; done"],
    });
    run_pod(&pods, &node, &on_tty, container, json!({})).await?;

    for (minor, rows, cols) in [(33u32, 33u16, 111u16), (29, 29, 99)] {
        let kubectl = server.kubectl(minor);
        let out = kubectl.output_in_pty(
            &["exec", "-it", &name, "--", "sh", "-c", "tty; echo \"size $(stty size)\"; exit 3"],
            rows,
            cols,
            "",
            60,
        )?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let context = || format!("1.{minor} exec -it: {out:?}\nagent log:\n{}", node.agent_log());
        assert!(stdout.contains("/dev/pts/"), "the process has a terminal: {}", context());
        assert!(stdout.contains(&format!("size {rows} {cols}")), "the terminal has the client's size: {}", context());
        assert_eq!(out.status.code(), Some(3), "the exit code comes back: {}", context());

        // What is typed reaches an interactive shell through the terminal.
        let out = kubectl.output_in_pty(
            &["exec", "-it", &name, "--", "sh"],
            rows,
            cols,
            "echo typed-$((40+2))\nexit 4\n",
            60,
        )?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("typed-42"), "1.{minor} exec -it sh: {out:?}");
        assert_eq!(out.status.code(), Some(4), "1.{minor} exec -it sh: {out:?}");

        // Attach resizes the container's own terminal to the client's.
        let out = kubectl.output_in_pty(&["attach", "-it", &on_tty], rows, cols, "", 8)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("size {rows} {cols}")),
            "1.{minor} attach -it: {out:?}\nagent log:\n{}",
            node.agent_log()
        );

        // A prompt (no newline) reaches an attached terminal.
        let prompt = names::unique("prompt");
        let container = json!({
            "name": "c",
            "image": image::BUSYBOX_IMAGE,
            "imagePullPolicy": "Never",
            "stdin": true,
            "tty": true,
            "command": ["sh", "-c", "read x; printf \"prompt-$x> \"; sleep 3600"],
        });
        run_pod(&pods, &node, &prompt, container, json!({})).await?;
        let out = kubectl.output_in_pty(&["attach", "-it", &prompt], rows, cols, "abc\n", 8)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("prompt-abc> "), "1.{minor} attach -it, prompt: {out:?}");
        pods.delete(&prompt, &DeleteParams::default()).await?;

        // kubectl run -it: a tty container, attached to once it runs (bound
        // to this node: the test's scheduler may not know it yet).
        let run = names::unique("run");
        let overrides = json!({"apiVersion": "v1", "spec": {"nodeName": node.name}}).to_string();
        let out = kubectl.output_in_pty(
            &[
                "run",
                &run,
                "--overrides",
                &overrides,
                "--image",
                image::BUSYBOX_IMAGE,
                "--image-pull-policy=Never",
                "--restart=Never",
                "-it",
                "--",
                "sh",
                "-c",
                // (kubectl sends the typed line and the size on separate
                // streams: the size may come a moment after the line.)
                "read line; sleep 1; echo \"size $(stty size) got $line\"",
            ],
            rows,
            cols,
            "hello\n",
            60,
        )?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("size {rows} {cols} got hello")),
            "1.{minor} run -it: {out:?}\nagent log:\n{}",
            node.agent_log()
        );
        pods.delete(&run, &DeleteParams::default()).await?;
    }

    // A terminal container the agent re-adopts after a restart still has its
    // prompt (an unfinished line) shown.
    let prompt = names::unique("adopted");
    let container = json!({
        "name": "c",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "stdin": true,
        "tty": true,
        "command": ["sh", "-c", "while read x; do printf \"again-$x> \"; done"],
    });
    run_pod(&pods, &node, &prompt, container, json!({})).await?;
    node.kill_agent();
    node.spawn_agent()?;
    let kubectl = server.kubectl(33);
    let (mut outs, mut shown) = (Vec::new(), false);
    for attempt in 0..5 {
        let out = kubectl.output_in_pty(&["attach", "-it", &prompt], 24, 80, &format!("try{attempt}\n"), 8)?;
        shown = String::from_utf8_lossy(&out.stdout).contains(&format!("again-try{attempt}> "));
        outs.push(out);
        if shown {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(shown, "a re-adopted terminal shows its prompt: {outs:?}\nagent log:\n{}", node.agent_log());
    pods.delete(&prompt, &DeleteParams::default()).await?;
    pods.delete(&name, &DeleteParams::default()).await?;
    pods.delete(&on_tty, &DeleteParams::default()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_wants_basic_auth_is_pulled_from_with_the_pods_image_pull_secret() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let node = Node::start(&server, 24).await?;
    let client = server.kube_client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let registry = waggle_tests::registry::Registry::start_with_auth("puller", "s3cret:pass")?;
    registry.push_oci_archive(&node.dir.path().join("busybox.tar"), "waggle", "private/busybox", "v1")?;
    let image = format!("{}/private/busybox:v1", registry.host());

    // Without credentials the registry says 401: ErrImagePull.
    let anonymous = names::unique("anon");
    pods.create(
        &PostParams::default(),
        &pod_manifest(&anonymous, &node.name, sleeper(&image, "IfNotPresent"), json!({}))?,
    )
    .await?;
    wait_for(&pods, &anonymous, &node, Duration::from_secs(60), "ErrImagePull or ImagePullBackOff", |p| {
        matches!(waiting_reason(p).as_deref(), Some("ErrImagePull" | "ImagePullBackOff"))
    })
    .await?;
    let events = events_of(&client, &anonymous).await?;
    assert!(
        events.iter().any(|e| e.starts_with("Failed Failed to pull image") && e.contains("Not authorized")),
        "events: {events:?}"
    );

    let secret_name = names::unique("regcred");
    let config = json!({"auths": {registry.host(): {"auth": "cHVsbGVyOnMzY3JldDpwYXNz"}}}); // puller:s3cret:pass
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some([(".dockerconfigjson".to_owned(), k8s_openapi::ByteString(config.to_string().into_bytes()))].into()),
        ..Default::default()
    };
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await?;
    let with_secret = names::unique("auth");
    let extra = json!({"imagePullSecrets": [{"name": secret_name}]});
    pods.create(
        &PostParams::default(),
        &pod_manifest(&with_secret, &node.name, sleeper(&image, "IfNotPresent"), extra)?,
    )
    .await?;
    wait_for(&pods, &with_secret, &node, Duration::from_secs(60), "Running", |p| phase(p) == "Running").await?;
    for name in [&anonymous, &with_secret] {
        pods.delete(name, &DeleteParams::default()).await?;
    }
    Ok(())
}

/// The status of one named container.
fn container_status(p: &Pod, name: &str) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == name).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_and_a_startup_probe_run_as_upstream_and_a_container_ignoring_sigterm_is_killed()
-> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let node = Node::start(&server, 25).await?;
    let client = server.kube_client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let hooks_dir = node.dir.path().join("hooks");
    std::fs::create_dir_all(&hooks_dir)?;
    // An HTTP server in the node's namespace answers the httpGet preStop hook
    // (sent to the bridge's gateway address from the pod's namespace).
    let listener = node.host.run(|| std::net::TcpListener::bind("0.0.0.0:0"))??;
    let hook_port = listener.local_addr()?.port();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap_or(0);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = seen_tx.send(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_owned());
        }
    });
    let gateway = node.pod_cidr.replace(".0/24", ".1");
    let mount = json!([{"name": "hooks", "mountPath": "/hooks"}]);
    let polite = json!({
        "name": "polite",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "trap 'echo sigterm >> /hooks/log; exit 0' TERM; while true; do sleep 0.2; done"],
        "lifecycle": {
            "postStart": {"exec": {"command": ["sh", "-c", "echo poststart >> /hooks/log"]}},
            "preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /hooks/log"]}},
        },
        "volumeMounts": mount,
    });
    let stubborn = json!({
        "name": "stubborn",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"],
        "lifecycle": {"preStop": {"httpGet": {"host": gateway, "port": hook_port, "path": "/pre-stop"}}},
    });
    let hooked = names::unique("hooks");
    let extra = json!({
        "containers": [polite, stubborn],
        "terminationGracePeriodSeconds": 3,
        "volumes": [{"name": "hooks", "hostPath": {"path": hooks_dir}}],
    });
    pods.create(&PostParams::default(), &pod_manifest(&hooked, &node.name, json!({}), extra)?).await?;

    // A postStart hook that fails kills its container, which restarts.
    let bad_hook = names::unique("badhook");
    let failing = json!({
        "name": "c",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sleep", "600"],
        "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo no >&2; exit 7"]}}},
    });
    pods.create(&PostParams::default(), &pod_manifest(&bad_hook, &node.name, failing, json!({}))?).await?;

    // A startup probe holds liveness and readiness back until it succeeds.
    let slow = names::unique("startup");
    let starting = json!({
        "name": "c",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sleep", "600"],
        "startupProbe": {"exec": {"command": ["cat", "/tmp/started"]}, "periodSeconds": 1, "failureThreshold": 600},
        "livenessProbe": {"exec": {"command": ["cat", "/tmp/started"]}, "periodSeconds": 1, "failureThreshold": 1},
        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
    });
    pods.create(&PostParams::default(), &pod_manifest(&slow, &node.name, starting, json!({}))?).await?;

    wait_for(&pods, &hooked, &node, Duration::from_secs(60), "Running and Ready", |p| {
        phase(p) == "Running" && is_ready(p)
    })
    .await?;
    let log = || std::fs::read_to_string(hooks_dir.join("log")).unwrap_or_default();
    assert_eq!(log(), "poststart\n", "the postStart hook ran once");

    let p = wait_for(&pods, &bad_hook, &node, Duration::from_secs(60), "a restart", |p| restart_count(p) >= 1).await?;
    let events = events_of(&client, &bad_hook).await?;
    assert!(
        events.iter().any(|e| e.starts_with("FailedPostStartHook") && e.contains("exited with 7")),
        "events: {events:?}\nstatus: {:?}",
        p.status
    );

    let p = wait_for(&pods, &slow, &node, Duration::from_secs(60), "Running", |p| phase(p) == "Running").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = pods.get(&slow).await.map_or(p, |now| now);
    let cs = container_status(&p, "c").context("status of c")?;
    assert_eq!(cs.started, Some(false), "not started before its startup probe succeeds: {cs:?}");
    assert!(!cs.ready && !is_ready(&p), "not ready before it started: {cs:?}");
    assert_eq!(cs.restart_count, 0, "liveness waits for the startup probe: {cs:?}");
    server.kubectl(33).ok(&["exec", &slow, "--", "touch", "/tmp/started"])?;
    let p = wait_for(&pods, &slow, &node, Duration::from_secs(30), "started and Ready", |p| {
        is_ready(p) && container_status(p, "c").is_some_and(|c| c.started == Some(true))
    })
    .await?;
    assert_eq!(restart_count(&p), 0);

    // Deleting: preStop hooks first, then SIGTERM; the container that ignores
    // SIGTERM is killed when the 3 s grace period ends.
    pods.delete(&hooked, &DeleteParams::default()).await?;
    let start = Instant::now();
    while pods.get_opt(&hooked).await?.is_some() {
        assert!(start.elapsed() < Duration::from_secs(60), "the pod is not gone\nagent log:\n{}", node.agent_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(log(), "poststart\nprestop\nsigterm\n", "hooks and signal in upstream's order");
    let seen: Vec<String> = seen_rx.try_iter().collect();
    assert_eq!(seen, ["GET /pre-stop HTTP/1.1"], "the httpGet preStop hook was sent once");
    let agent_log = node.agent_log();
    assert!(
        agent_log.lines().any(|l| l.contains("outlived its grace period") && l.contains("stubborn")),
        "the container ignoring SIGTERM was killed:\n{agent_log}"
    );
    for name in [&bad_hook, &slow] {
        pods.delete(name, &DeleteParams::default()).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_off_loopback_is_pulled_from_over_plain_http_only_when_named_insecure() -> anyhow::Result<()> {
    assert!(is_root(), "this test runs containerd and adds a link: run it as root");
    let containerd = Containerd::start()?;
    let dir = tempfile::Builder::new().prefix("wgt-insecure-").tempdir_in("/var/tmp")?;
    let tarball = dir.path().join("busybox.tar");
    image::build_busybox(&tarball)?;
    let link = waggle_tests::netns::HostLink::new()?;
    let registry = waggle_tests::registry::Registry::start_on(link.ip.into())?;
    registry.push_oci_archive(&tarball, "waggle", "lan/busybox", "v1")?;
    let image = format!("{}/lan/busybox:v1", registry.host());
    let namespace = names::unique("wgt");
    let pull = |extra: &[String]| -> anyhow::Result<std::process::Output> {
        Ok(Command::new(target_dir()?.join("waggle"))
            .args(["images", "pull", "--namespace", &namespace])
            .arg("--address")
            .arg(containerd.socket())
            .args(extra)
            .arg(&image)
            .output()?)
    };

    // Not named: HTTPS, which a plain-HTTP registry does not speak.
    let refused = pull(&[])?;
    assert!(!refused.status.success(), "an address off loopback is spoken to over HTTPS: {refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains(&registry.host()), "the error names it: {refused:?}");

    let pulled = pull(&[format!("--insecure-registry={}", link.ip)])?;
    assert!(pulled.status.success(), "{pulled:?}\nregistry log:\n{}", registry.log());
    assert!(String::from_utf8_lossy(&pulled.stdout).starts_with(&format!("{image}\tsha256:")), "{pulled:?}");
    let runtime = Runtime::connect(containerd.socket(), &namespace).await?;
    runtime.image_target(&image).await.context("the pulled image is present")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_garbage_collection_removes_unused_images_and_keeps_those_in_use() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    // Thresholds any disk is over (1 %, down to 0 %): every unused image older
    // than 20 s goes; the pod below starts well within those 20 s.
    let gc = ["--image-gc-high-threshold=1", "--image-gc-low-threshold=0", "--minimum-image-ttl-duration=20s"];
    let node = Node::start_with(&server, 26, &[&gc[..], &["--image-gc-period=1s"]].concat()).await?;
    let spare = "docker.io/library/busybox:waggle-spare";
    let tarball = node.dir.path().join("spare.tar");
    image::build_busybox_image(&tarball, spare, &["true"])?;
    let runtime = node.runtime().await?;
    runtime.import_archive(&tarball).await?;
    let pods: Api<Pod> = Api::namespaced(server.kube_client().await?, "default");
    let name = names::unique("inuse");
    let container =
        json!({"name": "c", "image": image::BUSYBOX_IMAGE, "imagePullPolicy": "Never", "command": ["sleep", "600"]});
    run_pod(&pods, &node, &name, container, json!({})).await?;

    let gone = |image: &'static str| {
        let runtime = runtime.clone();
        async move {
            let start = Instant::now();
            while runtime.has_image(image).await? {
                anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "{image} is still present");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            anyhow::Ok(())
        }
    };
    gone(spare).await.with_context(|| node.agent_log())?;
    assert!(runtime.has_image(image::BUSYBOX_IMAGE).await?, "the running pod's image is kept");
    assert!(node.agent_log().contains("removed an unused image"), "{}", node.agent_log());

    // Once the pod and its containers are gone, its image is unused too.
    pods.delete(&name, &DeleteParams::default()).await?;
    gone(image::BUSYBOX_IMAGE).await.with_context(|| node.agent_log())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_context_working_dir_and_the_managed_etc_files_reach_the_containers() -> anyhow::Result<()> {
    let (server, node, pods) = start_node(27).await?;
    let name = names::unique("secure");
    let who = json!({
        "name": "who",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "workingDir": "/tmp",
        "command": ["sh", "-c", "pwd; id; touch /not-here 2>/dev/null || echo read-only-root; cat /etc/hostname /etc/hosts /etc/resolv.conf"],
        "securityContext": {"runAsUser": 1234, "runAsGroup": 5678, "readOnlyRootFilesystem": true},
    });
    let caps = json!({
        "name": "caps",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["grep", "CapEff", "/proc/self/status"],
        "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
    });
    let extra = json!({
        "containers": [who, caps],
        "restartPolicy": "Never",
        "hostname": "front",
        "securityContext": {"supplementalGroups": [42]},
        "hostAliases": [{"ip": "10.9.9.9", "hostnames": ["db.internal"]}],
        "dnsConfig": {"options": [{"name": "ndots", "value": "3"}]},
    });
    pods.create(&PostParams::default(), &pod_manifest(&name, &node.name, json!({}), extra)?).await?;
    let p = wait_for(&pods, &name, &node, Duration::from_secs(60), "Succeeded", |p| phase(p) == "Succeeded").await?;
    let ip = p.status.and_then(|s| s.pod_ip).context("podIP")?;
    let kubectl = server.kubectl(33);
    let out = kubectl.ok(&["logs", &name, "-c", "who"])?;
    let context = || format!("{out}\nagent log:\n{}", node.agent_log());
    assert!(out.starts_with("/tmp\nuid=1234 gid=5678 groups=42"), "{}", context());
    assert!(out.contains("read-only-root\n"), "{}", context());
    assert!(out.contains("\nfront\n# Kubernetes-managed hosts file.\n"), "{}", context());
    assert!(out.contains(&format!("{ip}\tfront\n")), "{}", context());
    assert!(out.contains("10.9.9.9\tdb.internal\n"), "{}", context());
    assert!(out.contains("ndots:3"), "{}", context());
    let caps = kubectl.ok(&["logs", &name, "-c", "caps"])?;
    assert_eq!(caps.split_whitespace().collect::<Vec<_>>(), ["CapEff:", "0000000000000400"], "only NET_BIND_SERVICE");

    // runAsNonRoot with an image that runs as root: the container never starts.
    let rooted = names::unique("nonroot");
    let container = json!({
        "name": "c",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sleep", "600"],
        "securityContext": {"runAsNonRoot": true},
    });
    pods.create(&PostParams::default(), &pod_manifest(&rooted, &node.name, container, json!({}))?).await?;
    let p = wait_for(&pods, &rooted, &node, Duration::from_secs(60), "CreateContainerConfigError", |p| {
        waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
    })
    .await?;
    let message = container_status(&p, "c").and_then(|c| c.state?.waiting?.message).unwrap_or_default();
    assert!(message.contains("container has runAsNonRoot and image will run as root"), "{message}");
    assert!(
        node.runtime().await?.list_containers(&[]).await?.iter().all(|c| !c.id.contains("-c-")),
        "no container made"
    );
    pods.delete(&rooted, &DeleteParams::default()).await?;

    // hostNetwork: no CNI, the node's address, its ports on the node.
    let leases_before = ipam_leases(&node.root());
    let on_host = names::unique("hostnet");
    let port = free_port()?;
    let server_c = json!({
        "name": "web",
        "image": image::BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", format!("mkdir -p /www && echo on-the-host > /www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /www")],
        "readinessProbe": {"httpGet": {"path": "/", "port": port, "host": "127.0.0.1"}, "periodSeconds": 1},
    });
    pods.create(&PostParams::default(), &pod_manifest(&on_host, &node.name, server_c, json!({"hostNetwork": true}))?)
        .await?;
    let p = wait_for(&pods, &on_host, &node, Duration::from_secs(60), "Ready", is_ready).await?;
    assert_eq!(p.status.and_then(|s| s.pod_ip).as_deref(), Some("127.0.0.1"), "the node's address");
    assert!(http_get_local(port, "/")?.contains("on-the-host"), "served on the node's own port");
    let leases = ipam_leases(&node.root());
    assert!(
        leases.iter().all(|l| leases_before.contains(l)),
        "no address taken: {leases:?} (before: {leases_before:?})"
    );
    pods.delete(&on_host, &DeleteParams::default()).await?;
    Ok(())
}
