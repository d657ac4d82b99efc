//! The Service load balancer's uplink and hairpin paths with real traffic.
//!
//! ```text
//!  backend 10.244.0.11 ─┐                           ┌─ external 10.9.0.2
//!  backend 10.244.0.12 ─┤ br0 10.244.0.1 (node) ────┤  uplink 10.9.0.1: xdp_lb
//!  backend 10.244.0.13 ─┘  tc_lb on every pod veth  │
//! ```
//!
//! NodePort and externalIP traffic from the external namespace is balanced by
//! `xdp_lb` alone (no tc program on the uplink); the backends' replies are
//! translated by `tc_lb` on their veths. A pod reaches itself through its
//! Service's ClusterIP (hairpin). Nothing goes through iptables or nftables.
//!
//! Privileged: CI runs as root. Every namespace has a unique name and is
//! deleted on drop, also when the test fails.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use waggle_dataplane::lb::{
    self, Current, Endpoint, EndpointPort, EndpointSlice, Node, Protocol, Service, ServicePort,
};
use waggle_dataplane::lb_abi::ReasonV1;
use waggle_dataplane::{Dataplane, LoadConfig};
use waggle_tests::lbnet::{self, Conn, EXTERNAL_IP, NODE_IP, Servers, ask_udp, attach_pod, firewall_rules};
use waggle_tests::{NetNs, is_root};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// An externalIP of the Service, routed to the node by the external side.
const SERVICE_EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const HAIRPIN_SNAT: Ipv4Addr = Ipv4Addr::new(169, 254, 42, 1);
const BACKEND_IPS: [Ipv4Addr; 3] =
    [Ipv4Addr::new(10, 244, 0, 11), Ipv4Addr::new(10, 244, 0, 12), Ipv4Addr::new(10, 244, 0, 13)];

/// `default/web`: ClusterIP VIP, NodePort 30080/TCP and 30053/UDP, an
/// externalIP; its endpoints run on the nodes given.
struct Cluster {
    service: Service,
    slice: EndpointSlice,
}

impl Cluster {
    fn web(backends: &[Ipv4Addr], nodes: &[&str]) -> Self {
        let service = Service {
            namespace: "default".into(),
            name: "web".into(),
            cluster_ips: vec![VIP],
            external_ips: vec![SERVICE_EXTERNAL_IP],
            ports: vec![
                ServicePort { name: "http".into(), protocol: Protocol::Tcp, port: 80, node_port: Some(30080) },
                ServicePort { name: "dns".into(), protocol: Protocol::Udp, port: 53, node_port: Some(30053) },
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
            endpoints: backends.iter().zip(nodes).map(|(&ip, node)| Endpoint::ready(ip, node)).collect(),
        };
        Self { service, slice }
    }

    fn apply(&self, dp: &mut Dataplane, current: &mut Current) -> anyhow::Result<()> {
        let node = Node { name: "node".into(), addresses: vec![NODE_IP] };
        let desired = lb::desired_state(&node, std::slice::from_ref(&self.service), std::slice::from_ref(&self.slice));
        lb::apply_diff(current, &desired, &mut dp.lb_maps().writers())?;
        Ok(())
    }
}

fn backends(n: usize) -> anyhow::Result<Vec<(NetNs, String)>> {
    (1..=n).map(|i| Ok((NetNs::new(&format!("be{i}"))?, format!("backend-{i}")))).collect()
}

/// `n` short connections to `to` from `ns`: which backend answered how
/// often, and every client address the backends saw.
fn connections(
    ns: &NetNs,
    to: SocketAddrV4,
    n: usize,
) -> anyhow::Result<(BTreeMap<String, usize>, BTreeSet<Ipv4Addr>)> {
    let mut hits = BTreeMap::new();
    let mut peers = BTreeSet::new();
    for _ in 0..n {
        let answer = Conn::open(ns, to)?.ask()?;
        *hits.entry(answer.name).or_default() += 1;
        peers.insert(*answer.peer.ip());
    }
    Ok((hits, peers))
}

#[test]
fn node_ports_and_external_ips_from_outside_are_balanced_by_xdp_keeping_the_client_address() -> anyhow::Result<()> {
    assert!(is_root(), "this test loads eBPF programs and creates namespaces: run it as root");
    let node = lbnet::node()?;
    let external = lbnet::external(&node)?;
    let backends = backends(3)?;
    for (i, (ns, _)) in backends.iter().enumerate() {
        attach_pod(&node, ns, &format!("hbe{}", i + 1), &format!("{}/24", BACKEND_IPS[i]))?;
    }
    let all_ns: Vec<&NetNs> = [&node, &external].into_iter().chain(backends.iter().map(|(ns, _)| ns)).collect();
    let rules_before: Vec<String> = all_ns.iter().map(|ns| firewall_rules(ns)).collect::<anyhow::Result<_>>()?;

    let _servers = Servers::start(&backends)?;
    let mut dp = node.run(|| -> anyhow::Result<Dataplane> {
        let mut dp = Dataplane::load_with(&LoadConfig::default())?;
        for iface in ["hbe1", "hbe2", "hbe3"] {
            dp.attach_tc_lb(iface)?;
        }
        dp.attach_xdp_lb(lbnet::UPLINK)?;
        Ok(dp)
    })??;

    // externalTrafficPolicy Cluster: every endpoint (here all on this node,
    // so no SNAT is needed and the client address stays).
    let mut cluster = Cluster::web(&BACKEND_IPS, &["node", "node", "node"]);
    let mut current = Current::default();
    cluster.apply(&mut dp, &mut current)?;
    let node_port = SocketAddrV4::new(NODE_IP, 30080);
    let (hits, peers) = connections(&external, node_port, 30)?;
    assert_eq!(hits.len(), 3, "30 NodePort connections reached {hits:?}");
    assert_eq!(peers, BTreeSet::from([EXTERNAL_IP]), "the backends saw the client's own address");
    let (hits, peers) = connections(&external, SocketAddrV4::new(SERVICE_EXTERNAL_IP, 80), 30)?;
    assert_eq!((hits.len(), peers), (3, BTreeSet::from([EXTERNAL_IP])), "externalIP: {hits:?}");
    let udp: BTreeSet<String> =
        (0..20).map(|_| ask_udp(&external, SocketAddrV4::new(NODE_IP, 30053))).collect::<anyhow::Result<_>>()?;
    assert!(udp.len() >= 2, "20 NodePort datagrams reached {udp:?}");

    // A long connection keeps its backend across many requests.
    let mut open = Conn::open(&external, node_port)?;
    let first = open.ask()?;
    for _ in 0..10 {
        assert_eq!(open.ask()?, first);
    }
    drop(open);

    // externalTrafficPolicy Local: only this node's endpoint, client address kept.
    cluster.service.external_traffic_local = true;
    cluster.slice.endpoints =
        BACKEND_IPS.iter().zip(["node", "other", "other"]).map(|(&ip, node)| Endpoint::ready(ip, node)).collect();
    cluster.apply(&mut dp, &mut current)?;
    for to in [node_port, SocketAddrV4::new(SERVICE_EXTERNAL_IP, 80)] {
        let (hits, peers) = connections(&external, to, 15)?;
        assert_eq!(hits.keys().collect::<Vec<_>>(), vec!["backend-1"], "{to}: only the local endpoint");
        assert_eq!(peers, BTreeSet::from([EXTERNAL_IP]));
    }

    // XDP did the balancing: the uplink has no tc program, and the reasons say so.
    let on_uplink =
        node.run(|| waggle_dataplane::tcx_ingress_programs(lbnet::UPLINK).map_err(anyhow::Error::from))??;
    assert_eq!(on_uplink, 0, "no tc program on the uplink");
    let reasons = &dp.lb_maps().reasons;
    for (reason, at_least) in [(ReasonV1::NewFlow, 110), (ReasonV1::CtHit, 100), (ReasonV1::RevNat, 100)] {
        let n = reasons.read(reason)?.packets;
        assert!(n >= at_least, "{reason:?} counted {n} packets, expected at least {at_least}");
    }

    let rules_after: Vec<String> = all_ns.iter().map(|ns| firewall_rules(ns)).collect::<anyhow::Result<_>>()?;
    assert_eq!(rules_before, rules_after, "no firewall rule was added");
    for rules in &rules_after {
        assert!(!rules.lines().any(|l| l.starts_with("-A ") || l.contains("rule")), "unexpected rules:\n{rules}");
    }
    Ok(())
}

#[test]
fn a_pod_reaches_itself_through_its_cluster_ip_and_internal_traffic_policy_local_keeps_flows_on_the_node()
-> anyhow::Result<()> {
    assert!(is_root(), "this test loads eBPF programs and creates namespaces: run it as root");
    let node = lbnet::node()?;
    let backends = backends(2)?;
    for (i, (ns, _)) in backends.iter().enumerate() {
        attach_pod(&node, ns, &format!("hbe{}", i + 1), &format!("{}/24", BACKEND_IPS[i]))?;
    }
    let _servers = Servers::start(&backends)?;
    let mut dp = node.run(|| -> anyhow::Result<Dataplane> {
        let mut dp = Dataplane::load()?;
        for iface in ["hbe1", "hbe2"] {
            dp.attach_tc_lb(iface)?;
        }
        Ok(dp)
    })??;
    let (pod, _) = &backends[0];
    let web = SocketAddrV4::new(VIP, 80);

    // The pod is the Service's only endpoint: every connection hairpins.
    let mut cluster = Cluster::web(&BACKEND_IPS[..1], &["node"]);
    let mut current = Current::default();
    cluster.apply(&mut dp, &mut current)?;
    for _ in 0..10 {
        let answer = Conn::open(pod, web)?.ask()?;
        assert_eq!(answer.name, "backend-1", "the pod answered itself");
        assert_eq!(*answer.peer.ip(), HAIRPIN_SNAT, "seen from the hairpin address, not from itself");
    }
    let mut open = Conn::open(pod, web)?;
    for _ in 0..5 {
        assert_eq!(open.ask()?.name, "backend-1", "a long hairpin connection keeps working");
    }
    drop(open);
    assert_eq!(ask_udp(pod, SocketAddrV4::new(VIP, 53))?, "backend-1", "UDP hairpins too");

    // Two endpoints: the pod reaches both, itself through the hairpin
    // address and the other pod with its own address.
    cluster = Cluster::web(&BACKEND_IPS[..2], &["node", "other"]);
    cluster.apply(&mut dp, &mut current)?;
    let mut seen = BTreeMap::new();
    for _ in 0..30 {
        let answer = Conn::open(pod, web)?.ask()?;
        seen.insert(answer.name, *answer.peer.ip());
    }
    assert_eq!(
        seen,
        BTreeMap::from([("backend-1".to_string(), HAIRPIN_SNAT), ("backend-2".to_string(), BACKEND_IPS[0])]),
        "only a pod reaching itself is source-NATed"
    );

    // internalTrafficPolicy Local: ClusterIP flows stay on this node's endpoint.
    cluster.service.internal_traffic_local = true;
    cluster.apply(&mut dp, &mut current)?;
    let (hits, _) = connections(pod, web, 15)?;
    assert_eq!(hits.keys().collect::<Vec<_>>(), vec!["backend-1"], "{hits:?}");
    Ok(())
}
