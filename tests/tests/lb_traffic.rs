//! The Service load balancer with real traffic: a "node" namespace with a
//! bridge, a client and three backend namespaces on veths (real TCP and UDP
//! servers), an "external" namespace behind the node's uplink for NodePort,
//! and `tc_lb` on the ingress of every host-side veth and of the uplink.
//!
//! ```text
//!  client 10.244.0.100 ─┐                          ┌─ external 10.9.0.2
//!  backend 10.244.0.11 ─┤ br0 10.244.0.1 (node) ───┤  uplink 10.9.0.1
//!  backend 10.244.0.12 ─┤                          │
//!  backend 10.244.0.13 ─┘  VIP 10.96.0.10:80/TCP → :8080, :53/UDP → :5353, NodePort 30080
//! ```
//!
//! Privileged: CI runs as root. Every namespace has a unique name and is
//! deleted on drop, also when the test fails.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};

use anyhow::Context as _;
use waggle_dataplane::lb::{
    self, Current, Endpoint, EndpointPort, EndpointSlice, Node, Protocol, Service, ServicePort,
};
use waggle_dataplane::lb_abi::ReasonV1;
use waggle_dataplane::{Dataplane, LoadConfig};
use waggle_tests::cgroup::Cgroup2;
use waggle_tests::lbnet::{self, Conn, NODE_IP, Servers, TIMEOUT, ask_once, ask_udp, attach_pod, firewall_rules};
use waggle_tests::{NetNs, is_root};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const BACKEND_IPS: [Ipv4Addr; 3] =
    [Ipv4Addr::new(10, 244, 0, 11), Ipv4Addr::new(10, 244, 0, 12), Ipv4Addr::new(10, 244, 0, 13)];
struct Cluster {
    services: Vec<Service>,
    slice: EndpointSlice,
}

impl Cluster {
    fn new() -> Self {
        let web = Service {
            namespace: "default".into(),
            name: "web".into(),
            cluster_ips: vec![VIP],
            ports: vec![
                ServicePort { name: "http".into(), protocol: Protocol::Tcp, port: 80, node_port: Some(30080) },
                ServicePort { name: "dns".into(), protocol: Protocol::Udp, port: 53, node_port: None },
            ],
            ..Default::default()
        };
        let empty = Service {
            namespace: "default".into(),
            name: "empty".into(),
            cluster_ips: vec![EMPTY_VIP],
            ports: vec![
                ServicePort { name: "http".into(), protocol: Protocol::Tcp, port: 80, node_port: None },
                ServicePort { name: "dns".into(), protocol: Protocol::Udp, port: 53, node_port: None },
            ],
            ..Default::default()
        };
        let slice = EndpointSlice {
            namespace: "default".into(),
            service_name: "web".into(),
            ports: vec![
                EndpointPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 },
                EndpointPort { name: "dns".into(), protocol: Protocol::Udp, port: 5353 },
            ],
            endpoints: BACKEND_IPS.iter().map(|&ip| Endpoint::ready(ip, "node")).collect(),
        };
        Self { services: vec![web, empty], slice }
    }

    fn apply(&self, dp: &mut Dataplane, current: &mut Current) -> anyhow::Result<()> {
        let node = Node { name: "node".into(), addresses: vec![NODE_IP] };
        let desired = lb::desired_state(&node, &self.services, std::slice::from_ref(&self.slice));
        lb::apply_diff(current, &desired, &mut dp.lb_maps().writers())?;
        Ok(())
    }
}

#[test]
fn cluster_ip_and_node_port_balance_real_tcp_and_udp_traffic_without_iptables() -> anyhow::Result<()> {
    assert!(is_root(), "this test loads eBPF programs and creates namespaces: run it as root");
    let node = lbnet::node()?;
    let external = lbnet::external(&node)?;
    let client = NetNs::new("cli")?;
    let backends: Vec<(NetNs, String)> =
        (1..=3).map(|i| Ok((NetNs::new(&format!("be{i}"))?, format!("backend-{i}")))).collect::<anyhow::Result<_>>()?;
    attach_pod(&node, &client, "hcli", "10.244.0.100/24")?;
    for (i, (ns, _)) in backends.iter().enumerate() {
        attach_pod(&node, ns, &format!("hbe{}", i + 1), &format!("{}/24", BACKEND_IPS[i]))?;
    }
    let rules_before: Vec<String> = [&node, &client, &external]
        .into_iter()
        .chain(backends.iter().map(|(ns, _)| ns))
        .map(firewall_rules)
        .collect::<anyhow::Result<_>>()?;

    let _servers = Servers::start(&backends)?;
    let mut dp = node.run(|| -> anyhow::Result<Dataplane> {
        let mut dp = Dataplane::load()?;
        for iface in ["hcli", "hbe1", "hbe2", "hbe3", "uplink"] {
            dp.attach_tc_lb(iface)?;
        }
        Ok(dp)
    })??;
    let mut cluster = Cluster::new();
    let mut current = Current::default();
    cluster.apply(&mut dp, &mut current)?;

    let web = SocketAddrV4::new(VIP, 80);
    // Short connections spread over every backend.
    let mut hits = BTreeMap::<String, usize>::new();
    for _ in 0..30 {
        *hits.entry(ask_once(&client, web)?).or_default() += 1;
    }
    assert_eq!(hits.len(), 3, "30 connections reached {hits:?}");

    // UDP too, and the answers come from the VIP.
    let udp_seen: BTreeSet<String> =
        (0..20).map(|_| ask_udp(&client, SocketAddrV4::new(VIP, 53))).collect::<anyhow::Result<_>>()?;
    assert!(udp_seen.len() >= 2, "20 datagrams reached {udp_seen:?}");

    // A Service with no endpoints refuses at once instead of timing out.
    let refused =
        client.run(|| TcpStream::connect_timeout(&SocketAddr::V4(SocketAddrV4::new(EMPTY_VIP, 80)), TIMEOUT))?;
    assert_eq!(refused.err().map(|e| e.kind()), Some(ErrorKind::ConnectionRefused), "answered with a RST");
    let udp_refused = ask_udp(&client, SocketAddrV4::new(EMPTY_VIP, 53)).expect_err("nobody answers");
    let kind = udp_refused.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
    assert_eq!(kind, Some(ErrorKind::ConnectionRefused), "answered with ICMP port unreachable: {udp_refused:#}");

    // NodePort from outside the node.
    let np_seen: BTreeSet<String> =
        (0..10).map(|_| ask_once(&external, SocketAddrV4::new(NODE_IP, 30080))).collect::<anyhow::Result<_>>()?;
    assert!(!np_seen.is_empty() && np_seen.iter().all(|n| n.starts_with("backend-")), "{np_seen:?}");

    // A backend starts terminating: its open connection carries on, new ones avoid it.
    let mut open = Conn::open(&client, web)?;
    let leaving = open.who()?;
    let idx: usize = leaving.trim_start_matches("backend-").parse::<usize>()? - 1;
    cluster.slice.endpoints[idx] = Endpoint::terminating(BACKEND_IPS[idx], "node");
    cluster.apply(&mut dp, &mut current)?;
    for _ in 0..20 {
        let got = ask_once(&client, web)?;
        assert_ne!(got, leaving, "a new connection went to the terminating backend");
    }
    assert_eq!(open.who()?, leaving, "the open connection still reaches its backend");
    // Gone from the slice altogether: conntrack still knows where the flow goes.
    cluster.slice.endpoints.remove(idx);
    cluster.apply(&mut dp, &mut current)?;
    assert_eq!(open.who()?, leaving, "the open connection outlives the endpoint");
    drop(open);

    // sessionAffinity ClientIP: every connection of this client to one backend.
    cluster.services[0].affinity_timeout_s = Some(60);
    cluster.apply(&mut dp, &mut current)?;
    let sticky: BTreeSet<String> = (0..10).map(|_| ask_once(&client, web)).collect::<anyhow::Result<_>>()?;
    assert_eq!(sticky.len(), 1, "affinity held: {sticky:?}");

    // The eBPF program did the work (and said so).
    let reasons = &dp.lb_maps().reasons;
    for (reason, at_least) in [
        (ReasonV1::NewFlow, 60),
        (ReasonV1::CtHit, 60),
        (ReasonV1::RevNat, 100),
        (ReasonV1::NoBackendsRst, 1),
        (ReasonV1::NoBackendsIcmp, 1),
    ] {
        let n = reasons.read(reason)?.packets;
        assert!(n >= at_least, "{reason:?} counted {n} packets, expected at least {at_least}");
    }

    // Nothing of this went through iptables or nftables.
    let rules_after: Vec<String> = [&node, &client, &external]
        .into_iter()
        .chain(backends.iter().map(|(ns, _)| ns))
        .map(firewall_rules)
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(rules_before, rules_after, "no firewall rule was added");
    for rules in &rules_after {
        assert!(!rules.lines().any(|l| l.starts_with("-A ") || l.contains("rule")), "unexpected rules:\n{rules}");
    }
    Ok(())
}

#[test]
fn an_open_connection_survives_the_agent_dying_and_restarting() -> anyhow::Result<()> {
    assert!(is_root(), "this test loads eBPF programs and creates namespaces: run it as root");
    let node = lbnet::node()?;
    let client = NetNs::new("cli")?;
    let backends: Vec<(NetNs, String)> =
        (1..=3).map(|i| Ok((NetNs::new(&format!("be{i}"))?, format!("backend-{i}")))).collect::<anyhow::Result<_>>()?;
    attach_pod(&node, &client, "hcli", "10.244.0.100/24")?;
    for (i, (ns, _)) in backends.iter().enumerate() {
        attach_pod(&node, ns, &format!("hbe{}", i + 1), &format!("{}/24", BACKEND_IPS[i]))?;
    }
    let _servers = Servers::start(&backends)?;
    let pins = waggle_tests::bpffs::PinDir::new("lbrs")?;
    let config = LoadConfig { pin_dir: Some(pins.path().to_path_buf()), ..LoadConfig::default() };
    let agent = |config: &LoadConfig| {
        node.run(|| -> anyhow::Result<Dataplane> {
            let mut dp = Dataplane::load_with(config)?;
            for iface in ["hcli", "hbe1", "hbe2", "hbe3"] {
                dp.attach_tc_lb_pinned(iface)?;
            }
            Ok(dp)
        })?
    };
    let cluster = Cluster::new();
    let web = SocketAddrV4::new(VIP, 80);

    let mut dp = agent(&config)?;
    cluster.apply(&mut dp, &mut Current::default())?;
    let mut open = Conn::open(&client, web)?;
    let backend = open.who()?;

    // The agent dies: every fd it held is closed.
    drop(dp);
    assert_eq!(open.who()?, backend, "the open connection survived the agent");
    let fresh = ask_once(&client, web)?;
    assert!(fresh.starts_with("backend-"), "the VIP still answers new connections without an agent: {fresh}");

    // A new agent adopts the pinned maps and links without flushing them.
    let mut dp = agent(&config)?;
    let mut current = Current::read(&dp.lb_maps().writers())?;
    let node_info = Node { name: "node".into(), addresses: vec![NODE_IP] };
    let desired = lb::desired_state(&node_info, &cluster.services, std::slice::from_ref(&cluster.slice));
    let stats = lb::apply_diff(&mut current, &desired, &mut dp.lb_maps().writers())?;
    assert_eq!(stats.total(), 0, "nothing rewritten after the restart: {stats:?}");
    assert_eq!(open.who()?, backend, "the open connection survived the restart");
    let fresh = ask_once(&client, web)?;
    assert!(fresh.starts_with("backend-"), "{fresh}");
    let ct_hits = dp.lb_maps().reasons.read(ReasonV1::CtHit)?.packets;
    assert!(ct_hits >= 1, "the new program instance served the open flow from the pinned conntrack");
    let hooked = node.run(|| waggle_dataplane::tcx_ingress_programs("hcli").map_err(anyhow::Error::from))??;
    assert_eq!(hooked, 1, "the restart replaced the program in place instead of stacking a second one");
    Ok(())
}

#[test]
fn a_process_in_the_socket_lb_cgroup_connects_straight_to_backends_and_sees_the_vip_as_its_peer() -> anyhow::Result<()>
{
    assert!(is_root(), "this test loads eBPF programs and creates namespaces: run it as root");
    let node = lbnet::node()?;
    let client = NetNs::new("cli")?;
    let backends: Vec<(NetNs, String)> =
        (1..=3).map(|i| Ok((NetNs::new(&format!("be{i}"))?, format!("backend-{i}")))).collect::<anyhow::Result<_>>()?;
    attach_pod(&node, &client, "hcli", "10.244.0.100/24")?;
    for (i, (ns, _)) in backends.iter().enumerate() {
        attach_pod(&node, ns, &format!("hbe{}", i + 1), &format!("{}/24", BACKEND_IPS[i]))?;
    }
    let _servers = Servers::start(&backends)?;
    let root = waggle_dataplane::cgroup::cgroup2_mount()?.context("this kernel mounts a cgroup2 hierarchy")?;
    let mut cgroup = Cgroup2::new(&root, "socklb")?;
    let mut dp = node.run(|| -> anyhow::Result<Dataplane> {
        let mut dp = Dataplane::load()?;
        for iface in ["hcli", "hbe1", "hbe2", "hbe3"] {
            dp.attach_tc_lb(iface)?;
        }
        Ok(dp)
    })??;
    dp.attach_sock_lb(cgroup.path())?;
    let cluster = Cluster::new();
    cluster.apply(&mut dp, &mut Current::default())?;
    let web = SocketAddrV4::new(VIP, 80);
    let count = |dp: &mut Dataplane, r: ReasonV1| -> anyhow::Result<u64> { Ok(dp.lb_maps().reasons.read(r)?.packets) };

    cgroup.enter()?;
    // TCP: connections spread over the backends, and each one reports the
    // VIP as its peer although it is connected to a backend.
    let mut hits = BTreeMap::<String, usize>::new();
    for _ in 0..30 {
        let mut conn = Conn::open(&client, web)?;
        assert_eq!(conn.peer()?, SocketAddr::V4(web), "getpeername() reports the VIP");
        *hits.entry(conn.who()?).or_default() += 1;
    }
    assert_eq!(hits.len(), 3, "30 connections reached {hits:?}");
    // Connected UDP, and unconnected UDP whose answers come from the VIP.
    let udp_seen: BTreeSet<String> =
        (0..20).map(|_| ask_udp(&client, SocketAddrV4::new(VIP, 53))).collect::<anyhow::Result<_>>()?;
    assert!(udp_seen.len() >= 2, "20 datagrams reached {udp_seen:?}");
    let from = client.run(|| -> anyhow::Result<SocketAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.send_to(b"who", SocketAddrV4::new(VIP, 53))?;
        let mut buf = [0u8; 64];
        Ok(s.recv_from(&mut buf).context("waiting for the UDP answer")?.1)
    })??;
    assert_eq!(from, SocketAddr::V4(SocketAddrV4::new(VIP, 53)), "recvfrom() reports the VIP as the sender");
    // Not one packet needed NAT.
    assert!(count(&mut dp, ReasonV1::SockToBackend)? >= 51, "every connect/sendmsg was translated");
    assert_eq!(count(&mut dp, ReasonV1::NewFlow)?, 0, "no flow reached the packet path's DNAT");
    assert_eq!(count(&mut dp, ReasonV1::RevNat)?, 0, "no reply needed reverse NAT");

    // What the socket programs leave alone, tc still answers: a Service with
    // no endpoints refuses at once.
    let refused =
        client.run(|| TcpStream::connect_timeout(&SocketAddr::V4(SocketAddrV4::new(EMPTY_VIP, 80)), TIMEOUT))?;
    assert_eq!(refused.err().map(|e| e.kind()), Some(ErrorKind::ConnectionRefused), "answered with a RST");
    assert!(count(&mut dp, ReasonV1::SockLeftToPackets)? >= 1);

    // A process outside the cgroup is balanced by tc, per packet.
    cgroup.leave()?;
    let outside = ask_once(&client, web)?;
    assert!(outside.starts_with("backend-"), "{outside}");
    assert!(count(&mut dp, ReasonV1::NewFlow)? >= 1, "tc balanced the connection from outside the cgroup");
    Ok(())
}

#[test]
fn loading_over_a_pin_dir_removes_the_pins_of_retired_map_layouts() -> anyhow::Result<()> {
    assert!(is_root(), "this test creates pinned eBPF maps: run it as root");
    let pins = waggle_tests::bpffs::PinDir::new("lbretired")?;
    // What an agent of an older layout left: its conntrack map, pinned.
    let old = pins.path().join("LB4_CT_V1");
    let made = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&old)
        .args(["type", "lru_hash", "key", "16", "value", "16", "entries", "16", "name", "LB4_CT_V1"])
        .output()?;
    anyhow::ensure!(made.status.success(), "bpftool map create: {}", String::from_utf8_lossy(&made.stderr));
    assert!(old.exists());
    let dp = Dataplane::load_with(&LoadConfig { pin_dir: Some(pins.path().to_owned()), ..LoadConfig::default() })?;
    assert!(!old.exists(), "the retired LB4_CT_V1 pin is gone");
    assert!(pins.path().join(waggle_dataplane::lb_abi::names::CONNTRACK).exists(), "the current one is pinned");
    drop(dp);
    Ok(())
}
