//! The real `waggle proxy` process against a test API server: it watches a
//! Service and its EndpointSlice, programs the ClusterIP into pinned maps
//! (a pin dir of the test's own), and puts `tc_lb` on the pod veths of a
//! node namespace the test created.
//!
//! ```text
//!  client 10.244.0.100 ─┐
//!  backend 10.244.0.11 ─┤ br0 10.244.0.1 (node namespace; waggle proxy --node-netns)
//!  backend 10.244.0.12 ─┤
//!  backend 10.244.0.13 ─┘  ClusterIP:80 → :8080
//! ```
//!
//! Needs the `waggle` binary: `cargo build -p waggle` first.

mod support;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::{TestServer, eventually};
use waggle_tests::bpffs::PinDir;
use waggle_tests::echo::{Conn, NameServers, ask_once};
use waggle_tests::{NetNs, is_root, names};

const TIMEOUT: Duration = Duration::from_secs(3);
const BACKENDS: [&str; 3] = ["10.244.0.11", "10.244.0.12", "10.244.0.13"];

fn waggle_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|d| d.parent()).context("test binary has no target dir")?;
    let bin = dir.join("waggle");
    anyhow::ensure!(bin.exists(), "{} is missing: build it first (cargo build -p waggle)", bin.display());
    Ok(bin)
}

/// A free loopback port for the proxy's metrics.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One `waggle proxy` process; SIGKILLed on drop, its log printed (nextest
/// shows it when the test fails).
struct Proxy {
    child: Child,
    log: PathBuf,
    metrics: u16,
}

impl Proxy {
    fn start(args: &[String], log: &Path) -> anyhow::Result<Self> {
        let metrics = free_port()?;
        let child = Command::new(waggle_bin()?)
            .arg("proxy")
            .args(args)
            .arg("--metrics-bind-address")
            .arg(format!("127.0.0.1:{metrics}"))
            .env("RUST_LOG", "info,waggle_agent=debug,waggle_dataplane=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(log)?))
            .spawn()?;
        Ok(Self { child, log: log.to_path_buf(), metrics })
    }

    /// kill -9: no destructor runs, every fd it held is closed by the kernel.
    fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// The value of one sample of /metrics (`name` with its labels, if any).
    fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.metrics))?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        conn.read_to_string(&mut text)?;
        let line = text
            .lines()
            .find(|l| l.split_once(' ').is_some_and(|(n, _)| n == name))
            .with_context(|| format!("no sample {name} in\n{text}"))?;
        let value = line.rsplit(' ').next().context("empty sample")?;
        Ok(value.parse()?)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("--- waggle proxy log ---\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }
}

/// Every rule `iptables-save` and `nft list ruleset` print in `ns`.
fn firewall_rules(ns: &NetNs) -> anyhow::Result<String> {
    let ipt = ns.exec("iptables-save", &[])?;
    let nft = ns.exec("nft", &["list", "ruleset"])?;
    Ok(format!("{}{}", String::from_utf8_lossy(&ipt.stdout), String::from_utf8_lossy(&nft.stdout)))
}

/// The same, in this process's own namespace.
fn host_firewall_rules() -> anyhow::Result<String> {
    let ipt = Command::new("iptables-save").output()?;
    let nft = Command::new("nft").args(["list", "ruleset"]).output()?;
    Ok(format!("{}{}", String::from_utf8_lossy(&ipt.stdout), String::from_utf8_lossy(&nft.stdout)))
}

/// The node namespace: a bridge with the client and backend pods on veths.
struct Node {
    node: NetNs,
    client: NetNs,
    backends: Vec<NetNs>,
}

impl Node {
    fn new() -> anyhow::Result<Self> {
        let node = NetNs::new("pxnode")?;
        let client = NetNs::new("pxcli")?;
        let backends = (1..=3).map(|i| NetNs::new(&format!("pxbe{i}"))).collect::<anyhow::Result<Vec<_>>>()?;
        node.ip(&["link", "add", "br0", "type", "bridge"])?;
        node.ip(&["addr", "add", "10.244.0.1/24", "dev", "br0"])?;
        node.ip(&["link", "set", "br0", "up"])?;
        let pods = std::iter::once((&client, "hcli", "10.244.0.100"))
            .chain(backends.iter().enumerate().map(|(i, ns)| (ns, ["hbe1", "hbe2", "hbe3"][i], BACKENDS[i])));
        for (pod, host, addr) in pods {
            node.ip(&["link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pod.name()])?;
            node.ip(&["link", "set", host, "master", "br0", "up"])?;
            pod.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            pod.ip(&["link", "set", "eth0", "up"])?;
            pod.ip(&["route", "add", "default", "via", "10.244.0.1"])?;
        }
        for s in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.br0.send_redirects=0",
        ] {
            node.exec("sysctl", &["-qw", s])?;
        }
        Ok(Self { node, client, backends })
    }

    fn all(&self) -> impl Iterator<Item = &NetNs> {
        [&self.node, &self.client].into_iter().chain(&self.backends)
    }
}

async fn create_service(client: &kube::Client, name: &str) -> anyhow::Result<Ipv4Addr> {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    }))?;
    let created = Api::<Service>::namespaced(client.clone(), "default").create(&PostParams::default(), &svc).await?;
    let ip = created.spec.and_then(|s| s.cluster_ip).context("no ClusterIP allocated")?;
    Ok(ip.parse()?)
}

fn endpoints(addrs: &[&str], node: &str) -> serde_json::Value {
    addrs.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}, "nodeName": node})).collect()
}

async fn create_slice(client: &kube::Client, service: &str, addrs: &[&str], node: &str) -> anyhow::Result<()> {
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {
            "name": format!("{service}-1"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": service}
        },
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints(addrs, node),
    }))?;
    Api::<EndpointSlice>::namespaced(client.clone(), "default").create(&PostParams::default(), &slice).await?;
    Ok(())
}

/// Names the backends that `n` new connections reached.
fn spread(client: &NetNs, vip: SocketAddrV4, n: usize) -> anyhow::Result<BTreeSet<String>> {
    (0..n).map(|_| ask_once(client, vip, TIMEOUT)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_process_programs_a_cluster_ip_and_a_kill_9_and_restart_keeps_connections() -> anyhow::Result<()> {
    assert!(is_root(), "this test loads eBPF programs and creates namespaces: run it as root");
    let server = TestServer::start().await?;
    let client = server.kube_client().await?;
    let net = Node::new()?;
    let node_name = names::unique("wgt-pxnode");
    let pins = PinDir::new("px")?;
    let rules_before: Vec<String> = net.all().map(firewall_rules).collect::<anyhow::Result<_>>()?;
    let names: Vec<(&NetNs, String)> =
        net.backends.iter().enumerate().map(|(i, ns)| (ns, format!("backend-{}", i + 1))).collect();
    let _servers = NameServers::start(&names, 8080)?;

    let vip_ip = create_service(&client, "web").await?;
    create_slice(&client, "web", &BACKENDS, &node_name).await?;
    let vip = SocketAddrV4::new(vip_ip, 80);

    let args: Vec<String> = [
        "--kubeconfig",
        &server.kubeconfig.to_string_lossy(),
        "--node-name",
        &node_name,
        "--bridge",
        "br0",
        "--node-netns",
        &net.node.path().to_string_lossy(),
        "--bpf-pin-dir",
        &pins.path().to_string_lossy(),
        // The host's processes stay out of this test's socket LB.
        "--sock-lb-cgroup",
        "none",
        "--lb-maglev-rows",
        "64",
        "--lb-conntrack-capacity",
        "4096",
        "--lb-services-capacity",
        "256",
        "--lb-backends-capacity",
        "256",
        "--lb-affinity-capacity",
        "256",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = server.dir.path().join("proxy.log");
    let mut proxy = Proxy::start(&args, &log)?;

    // The ClusterIP answers once the proxy has listed, synced and attached.
    eventually(Duration::from_secs(30), || async { ask_once(&net.client, vip, TIMEOUT).map(|_| ()) }).await?;
    let seen = spread(&net.client, vip, 30)?;
    assert!(seen.len() >= 2, "30 connections through the ClusterIP reached {seen:?}");
    let mut open = Conn::open(&net.client, vip, TIMEOUT)?;
    let backend = open.who()?;

    // kill -9: the maps and links are pinned, so the kernel keeps balancing.
    proxy.kill9()?;
    assert_eq!(open.who()?, backend, "the open connection survived kill -9");
    let fresh = ask_once(&net.client, vip, TIMEOUT)?;
    assert!(fresh.starts_with("backend-"), "the VIP answers new connections without a proxy: {fresh}");

    // A new process reconciles the pinned maps: nothing to rewrite, nothing flushed.
    let proxy = Proxy::start(&args, &log)?;
    eventually(Duration::from_secs(30), || async {
        anyhow::ensure!(proxy.metric("waggle_proxy_syncs_total")? >= 1.0, "no sync yet");
        Ok(())
    })
    .await?;
    assert_eq!(proxy.metric("waggle_proxy_map_writes_total")?, 0.0, "the restart rewrote map entries");
    assert!(proxy.metric("waggle_proxy_frontends")? >= 1.0);
    assert_eq!(open.who()?, backend, "the open connection survived the restart");
    let seen = spread(&net.client, vip, 30)?;
    assert!(seen.len() >= 2, "after the restart, 30 connections reached {seen:?}");

    // And it keeps following the API: the open connection's backend leaves
    // the slice; the flow keeps its backend, new flows avoid it.
    let rest: Vec<&str> =
        BACKENDS.iter().enumerate().filter(|(i, _)| format!("backend-{}", i + 1) != backend).map(|(_, a)| *a).collect();
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .patch("web-1", &PatchParams::default(), &Patch::Merge(json!({"endpoints": endpoints(&rest, &node_name)})))
        .await?;
    eventually(Duration::from_secs(10), || async {
        let seen = spread(&net.client, vip, 20)?;
        anyhow::ensure!(!seen.contains(&backend), "new connections still reach {backend}: {seen:?}");
        Ok(())
    })
    .await?;
    assert_eq!(open.who()?, backend, "the open connection outlives its endpoint");

    // No iptables or nftables rule anywhere: not in the test's namespaces,
    // and none of ours in the namespace the proxy process runs in.
    let rules_after: Vec<String> = net.all().map(firewall_rules).collect::<anyhow::Result<_>>()?;
    assert_eq!(rules_before, rules_after, "no firewall rule was added in the node's namespaces");
    let host = host_firewall_rules()?;
    let vip_text = vip_ip.to_string();
    assert!(
        !host.lines().any(|l| l.contains(&vip_text) || l.contains("KUBE-") || l.contains("waggle")),
        "a firewall rule for the Service appeared:\n{host}"
    );
    drop(proxy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_service_map_is_logged_counted_and_reported_as_an_event_on_the_service() -> anyhow::Result<()> {
    assert!(is_root(), "this test loads eBPF programs: run it as root");
    let server = TestServer::start().await?;
    let client = server.kube_client().await?;
    let node_name = names::unique("wgt-pxfull");
    let pins = PinDir::new("pxfull")?;
    // Room for two frontends: the `kubernetes` Service's and one more.
    for name in ["full-a", "full-b", "full-c"] {
        create_service(&client, name).await?;
        create_slice(&client, name, &["10.244.7.1"], &node_name).await?;
    }
    let args: Vec<String> = [
        "--kubeconfig",
        &server.kubeconfig.to_string_lossy(),
        "--node-name",
        &node_name,
        "--bpf-pin-dir",
        &pins.path().to_string_lossy(),
        // The host's processes stay out of this test's socket LB.
        "--sock-lb-cgroup",
        "none",
        "--lb-services-capacity",
        "2",
        "--lb-maglev-rows",
        "16",
        "--lb-conntrack-capacity",
        "1024",
        "--lb-backends-capacity",
        "64",
        "--lb-affinity-capacity",
        "64",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = server.dir.path().join("proxy.log");
    let proxy = Proxy::start(&args, &log)?;

    eventually(Duration::from_secs(30), || async {
        let full = proxy
            .metric("waggle_proxy_map_full_total{map=\"LB4_REVNAT_V1\"}")
            .or_else(|_| proxy.metric("waggle_proxy_map_full_total{map=\"LB4_SVC_V1\"}"))?;
        anyhow::ensure!(full >= 1.0, "no full map counted yet");
        anyhow::ensure!(proxy.metric("waggle_proxy_unprogrammed_services")? >= 2.0, "two Services do not fit");
        Ok(())
    })
    .await?;

    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), "default");
    eventually(Duration::from_secs(15), || async {
        let list = events.list(&Default::default()).await?;
        let failed: BTreeSet<String> = list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("FailedToProgram"))
            .filter(|e| e.note.as_deref().is_some_and(|n| n.contains("is full")))
            .filter_map(|e| e.regarding.as_ref()?.name.clone())
            .collect();
        anyhow::ensure!(failed.len() >= 2, "FailedToProgram events so far name {failed:?}");
        anyhow::ensure!(failed.iter().all(|n| n.starts_with("full-")), "{failed:?}");
        Ok(())
    })
    .await?;
    let log_text = std::fs::read_to_string(&log)?;
    assert!(log_text.contains("could not be programmed"), "the log says which Service was not programmed");
    drop(proxy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_services_is_synced_in_batches_that_recompute_each_service_once() -> anyhow::Result<()> {
    assert!(is_root(), "this test loads eBPF programs: run it as root");
    let server = TestServer::start().await?;
    let client = server.kube_client().await?;
    let node_name = names::unique("wgt-pxburst");
    let pins = PinDir::new("pxburst")?;
    let args: Vec<String> = [
        "--kubeconfig",
        &server.kubeconfig.to_string_lossy(),
        "--node-name",
        &node_name,
        "--bpf-pin-dir",
        &pins.path().to_string_lossy(),
        // The host's processes stay out of this test's socket LB.
        "--sock-lb-cgroup",
        "none",
        "--lb-maglev-rows",
        "512",
        "--lb-conntrack-capacity",
        "1024",
        "--lb-services-capacity",
        "1024",
        "--lb-backends-capacity",
        "1024",
        "--lb-affinity-capacity",
        "64",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proxy = Proxy::start(&args, &server.dir.path().join("proxy.log"))?;
    eventually(Duration::from_secs(30), || async {
        anyhow::ensure!(proxy.metric("waggle_proxy_syncs_total")? >= 1.0, "no sync yet");
        Ok(())
    })
    .await?;
    let (syncs0, recomputed0) =
        (proxy.metric("waggle_proxy_syncs_total")?, proxy.metric("waggle_proxy_services_recomputed_total")?);

    const BURST: usize = 300;
    let api = Api::<Service>::namespaced(client.clone(), "default");
    let creates = (0..BURST).map(|i| {
        let api = api.clone();
        async move {
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": format!("burst-{i}"), "namespace": "default"},
                "spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}
            }))?;
            api.create(&PostParams::default(), &svc).await?;
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(creates).await?;
    eventually(Duration::from_secs(30), || async {
        let frontends = proxy.metric("waggle_proxy_frontends")?;
        anyhow::ensure!(frontends >= (BURST + 1) as f64, "{frontends} frontends programmed so far");
        Ok(())
    })
    .await?;
    let syncs = proxy.metric("waggle_proxy_syncs_total")? - syncs0;
    let recomputed = proxy.metric("waggle_proxy_services_recomputed_total")? - recomputed0;
    assert_eq!(recomputed, BURST as f64, "each new Service was computed once, no other Service again");
    // Debounced: the events came faster than the 100 ms quiet time, so
    // they were synced in batches, not one by one.
    eprintln!("{BURST} Service events took {syncs} syncs");
    assert!(syncs < BURST as f64, "{BURST} Service events took {syncs} syncs");
    drop(proxy);
    Ok(())
}

/// One short connection from a new `bash` process in `ns`, placed in the
/// cgroup `cgroup` first when given: the backend's answer, or why not.
fn ask_from_process(ns: &NetNs, cgroup: Option<&Path>, to: SocketAddrV4) -> anyhow::Result<String> {
    let enter = match cgroup {
        Some(cg) => format!("echo $$ > {}/cgroup.procs && ", cg.display()),
        None => String::new(),
    };
    let script = format!("{enter}exec 3<>/dev/tcp/{}/{} && echo who >&3 && head -n1 <&3", to.ip(), to.port());
    let out = ns.command("timeout").args(["5", "bash", "-c", &script]).output()?;
    anyhow::ensure!(
        out.status.success(),
        "connecting to {to} from a process {}: {}",
        if cgroup.is_some() { "in the cgroup" } else { "outside the cgroup" },
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Programs attached to a cgroup v2 directory (any attach type).
fn cgroup_programs(cgroup: &Path) -> anyhow::Result<usize> {
    let out = Command::new("bpftool").args(["-j", "cgroup", "show"]).arg(cgroup).output()?;
    anyhow::ensure!(out.status.success(), "bpftool cgroup show: {}", String::from_utf8_lossy(&out.stderr));
    // Nothing attached: bpftool prints nothing at all.
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(0);
    }
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    Ok(list.len())
}

/// Pins in `dir` whose names start with `prefix`.
fn pins(dir: &Path, prefix: &str) -> anyhow::Result<BTreeSet<String>> {
    Ok(std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with(prefix))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_process_attaches_the_socket_lb_to_its_cgroup_and_xdp_to_the_default_route_uplink()
-> anyhow::Result<()> {
    use waggle_tests::cgroup::Cgroup2;
    use waggle_tests::lbnet::{self, NODE_IP};
    assert!(is_root(), "this test loads eBPF programs, creates namespaces and a cgroup: run it as root");
    let server = TestServer::start().await?;
    let client = server.kube_client().await?;
    let node_name = names::unique("wgt-pxattach");
    let pins_dir = PinDir::new("pxattach")?;

    // node: pods on br0, an uplink to an external namespace that carries
    // the default route (what `--xdp-uplink auto` finds).
    let node = lbnet::node()?;
    let external = lbnet::external(&node)?;
    node.ip(&["route", "add", "default", "via", &lbnet::EXTERNAL_IP.to_string()])?;
    let pod = NetNs::new("pxpod")?;
    lbnet::attach_pod(&node, &pod, "hcli", "10.244.0.100/24")?;
    let backends = (1..=3).map(|i| NetNs::new(&format!("pxbe{i}"))).collect::<anyhow::Result<Vec<_>>>()?;
    for (i, ns) in backends.iter().enumerate() {
        lbnet::attach_pod(&node, ns, &format!("hbe{}", i + 1), &format!("{}/24", BACKENDS[i]))?;
    }
    let names: Vec<(&NetNs, String)> =
        backends.iter().enumerate().map(|(i, ns)| (ns, format!("backend-{}", i + 1))).collect();
    let _servers = NameServers::start(&names, 8080)?;

    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    }))?;
    let created = Api::<Service>::namespaced(client.clone(), "default").create(&PostParams::default(), &svc).await?;
    let spec = created.spec.context("no spec")?;
    let vip = SocketAddrV4::new(spec.cluster_ip.context("no ClusterIP")?.parse()?, 80);
    let node_port_no = spec.ports.and_then(|p| p.first()?.node_port).context("no nodePort allocated")?;
    let node_port = SocketAddrV4::new(NODE_IP, u16::try_from(node_port_no)?);
    create_slice(&client, "web", &BACKENDS, &node_name).await?;
    // Only the socket LB can reach the ClusterIP from the pod: its veth gets
    // no tc program (only the backends' do, for NodePort replies), and the
    // node refuses to route the VIP.
    node.ip(&["route", "add", "unreachable", &format!("{}/32", vip.ip())])?;

    let root = waggle_dataplane::cgroup::cgroup2_mount()?.context("this kernel mounts a cgroup2 hierarchy")?;
    let cgroup = Cgroup2::new(&root, "pxsock")?;
    let args = |sock: &str, uplink: &str| -> Vec<String> {
        [
            "--kubeconfig",
            &server.kubeconfig.to_string_lossy(),
            "--node-name",
            &node_name,
            "--node-netns",
            &node.path().to_string_lossy(),
            "--nodeport-addresses",
            &NODE_IP.to_string(),
            "--proxy-interfaces",
            "hbe1,hbe2,hbe3",
            "--sock-lb-cgroup",
            sock,
            "--xdp-uplink",
            uplink,
            "--bpf-pin-dir",
            &pins_dir.path().to_string_lossy(),
            "--lb-maglev-rows",
            "64",
            "--lb-conntrack-capacity",
            "4096",
            "--lb-services-capacity",
            "256",
            "--lb-backends-capacity",
            "256",
            "--lb-affinity-capacity",
            "256",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let on = args(&cgroup.path().to_string_lossy(), "auto");
    let log = server.dir.path().join("proxy.log");
    let mut proxy = Proxy::start(&on, &log)?;

    // A process in the cgroup reaches the ClusterIP: its connect() went to
    // a backend directly. One outside the cgroup cannot.
    eventually(Duration::from_secs(30), || async { ask_from_process(&pod, Some(cgroup.path()), vip).map(|_| ()) })
        .await?;
    let seen: BTreeSet<String> =
        (0..15).map(|_| ask_from_process(&pod, Some(cgroup.path()), vip)).collect::<anyhow::Result<_>>()?;
    assert!(seen.len() >= 2, "15 processes in the cgroup reached {seen:?}");
    assert!(ask_from_process(&pod, None, vip).is_err(), "a process outside the cgroup is not socket-balanced");
    // NodePort from outside: no tc program on the uplink, so XDP balanced it.
    eventually(Duration::from_secs(30), || async { ask_once(&external, node_port, TIMEOUT).map(|_| ()) }).await?;
    let seen = spread(&external, node_port, 15)?;
    assert!(seen.len() >= 2, "15 NodePort connections reached {seen:?}");
    let on_uplink =
        node.run(|| waggle_dataplane::tcx_ingress_programs(lbnet::UPLINK).map_err(anyhow::Error::from))??;
    assert_eq!(on_uplink, 0, "no tc program on the uplink");
    assert_eq!(pins(pins_dir.path(), "link_xdp_lb_")?, BTreeSet::from(["link_xdp_lb_uplink".to_string()]));
    assert_eq!(pins(pins_dir.path(), "link_cgroup_")?.len(), 4, "connect4, sendmsg4, recvmsg4, getpeername4");
    assert_eq!(cgroup_programs(cgroup.path())?, 4);

    // kill -9 and restart: the pinned links keep balancing meanwhile, and
    // the new process replaces them instead of stacking more.
    proxy.kill9()?;
    assert!(ask_from_process(&pod, Some(cgroup.path()), vip)?.starts_with("backend-"));
    assert!(ask_once(&external, node_port, TIMEOUT)?.starts_with("backend-"));
    let proxy = Proxy::start(&on, &log)?;
    eventually(Duration::from_secs(30), || async {
        anyhow::ensure!(proxy.metric("waggle_proxy_syncs_total")? >= 1.0, "no sync yet");
        Ok(())
    })
    .await?;
    assert_eq!(cgroup_programs(cgroup.path())?, 4, "the restart did not stack a second set of socket programs");
    assert!(ask_from_process(&pod, Some(cgroup.path()), vip)?.starts_with("backend-"));
    assert!(ask_once(&external, node_port, TIMEOUT)?.starts_with("backend-"));
    drop(proxy);

    // Turned off: the next run detaches both and removes their pins.
    let proxy = Proxy::start(&args("none", "none"), &log)?;
    eventually(Duration::from_secs(30), || async {
        anyhow::ensure!(pins(pins_dir.path(), "link_xdp_lb_")?.is_empty(), "the XDP link is still pinned");
        anyhow::ensure!(pins(pins_dir.path(), "link_cgroup_")?.is_empty(), "socket LB links are still pinned");
        Ok(())
    })
    .await?;
    assert_eq!(cgroup_programs(cgroup.path())?, 0, "the socket programs left the cgroup");
    assert!(ask_from_process(&pod, Some(cgroup.path()), vip).is_err(), "no socket LB any more");
    assert!(ask_once(&external, node_port, TIMEOUT).is_err(), "no XDP on the uplink any more");
    drop(proxy);
    Ok(())
}
