//! The Service load balancer's packet logic under BPF_PROG_TEST_RUN: crafted
//! frames through `tc_lb`, one test per branch (hit, miss, reply, conntrack,
//! affinity, no endpoints, NodePort), with every checksum recomputed from
//! scratch. No interface, no namespace: each test loads its own unpinned maps.
//!
//! Privileged (loads eBPF): CI runs as root.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use waggle_dataplane::lb::{
    self, ApplyStats, Current, Endpoint, EndpointPort, EndpointSlice, Node, Protocol, Service, ServicePort,
};
use waggle_dataplane::lb_abi::{CT_DIR_REPLY, CT_DIR_SERVICE, ReasonV1};
use waggle_dataplane::maps::KvMap as _;
use waggle_dataplane::{Dataplane, LbCapacity, LoadConfig, TestRunResult};
use waggle_tests::is_root;
use waggle_tests::packet::{self, ACK, RST, SYN};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const BACKENDS: [Ipv4Addr; 3] =
    [Ipv4Addr::new(10, 244, 0, 11), Ipv4Addr::new(10, 244, 0, 12), Ipv4Addr::new(10, 244, 0, 13)];

fn client(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 5), port)
}

fn vip(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(VIP, port)
}

/// A Service `default/web` on VIP:80/TCP, VIP:53/UDP and NodePort 30080,
/// with the given endpoints (target ports 8080/TCP and 5353/UDP).
struct Cluster {
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
}

impl Cluster {
    fn web(backends: &[Ipv4Addr], affinity: Option<u32>) -> Self {
        let svc = Service {
            namespace: "default".into(),
            name: "web".into(),
            cluster_ips: vec![VIP],
            ports: vec![
                ServicePort { name: "http".into(), protocol: Protocol::Tcp, port: 80, node_port: Some(30080) },
                ServicePort { name: "dns".into(), protocol: Protocol::Udp, port: 53, node_port: None },
            ],
            affinity_timeout_s: affinity,
            ..Default::default()
        };
        let slice = EndpointSlice {
            namespace: "default".into(),
            service_name: "web".into(),
            ports: vec![
                EndpointPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 },
                EndpointPort { name: "dns".into(), protocol: Protocol::Udp, port: 5353 },
            ],
            endpoints: backends.iter().map(|&a| Endpoint::ready(a, "n1")).collect(),
        };
        Self { services: vec![svc], slices: vec![slice] }
    }

    fn apply(&self, dp: &mut Dataplane, current: &mut Current) -> anyhow::Result<()> {
        let node = Node { name: "n1".into(), addresses: vec![NODE_IP] };
        let desired = lb::desired_state(&node, &self.services, &self.slices);
        lb::apply_diff(current, &desired, &mut dp.lb_maps().writers())?;
        Ok(())
    }
}

fn loaded(cluster: &Cluster) -> anyhow::Result<(Dataplane, Current)> {
    assert!(is_root(), "this test loads eBPF programs: run it as root");
    let mut dp = Dataplane::load()?;
    let mut current = Current::default();
    cluster.apply(&mut dp, &mut current)?;
    Ok((dp, current))
}

fn run(dp: &mut Dataplane, frame: &[u8]) -> anyhow::Result<(TestRunResult, Vec<u8>)> {
    Ok(dp.test_run_tc_lb(frame)?)
}

fn reason_count(dp: &mut Dataplane, reason: ReasonV1) -> anyhow::Result<u64> {
    Ok(dp.lb_maps().reasons.read(reason)?.packets)
}

#[test]
fn a_syn_to_a_cluster_ip_is_dnated_to_a_backend_with_valid_checksums() -> anyhow::Result<()> {
    let (mut dp, _) = loaded(&Cluster::web(&BACKENDS, None))?;
    let syn = packet::tcp(client(40000), vip(80), SYN, 1000, b"");
    let (res, out) = run(&mut dp, &syn)?;
    assert_eq!(res.return_value, TC_ACT_OK);
    let p = packet::parse(&out)?;
    assert!(BACKENDS.contains(p.dst.ip()), "DNAT to a backend, got {}", p.dst);
    assert_eq!(p.dst.port(), 8080, "to the target port");
    assert_eq!(p.src, client(40000), "the source is untouched");
    assert_eq!((p.tcp_flags, p.seq), (SYN, 1000));
    assert_eq!(reason_count(&mut dp, ReasonV1::NewFlow)?, 1);

    let ct = dp.lb_maps().conntrack.entries()?;
    assert_eq!(ct.len(), 2, "one entry per direction: {ct:?}");
    assert!(ct.iter().any(|(k, _)| k.dir == CT_DIR_SERVICE) && ct.iter().any(|(k, _)| k.dir == CT_DIR_REPLY));
    Ok(())
}

#[test]
fn packets_to_no_service_pass_unchanged() -> anyhow::Result<()> {
    let (mut dp, _) = loaded(&Cluster::web(&BACKENDS, None))?;
    for frame in [
        packet::tcp(client(40000), SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 99), 80), SYN, 1, b""),
        packet::tcp(client(40000), vip(81), SYN, 1, b""),
        packet::udp(client(40000), vip(80), b"x", true),
    ] {
        let (res, out) = run(&mut dp, &frame)?;
        assert_eq!(res.return_value, TC_ACT_OK);
        assert_eq!(out, frame, "a miss leaves every byte alone");
    }
    assert_eq!(reason_count(&mut dp, ReasonV1::NoService)?, 3);
    Ok(())
}

#[test]
fn replies_are_reverse_nated_back_to_the_vip_and_the_flow_sticks_to_its_backend() -> anyhow::Result<()> {
    let (mut dp, _) = loaded(&Cluster::web(&BACKENDS, None))?;
    let (_, out) = run(&mut dp, &packet::tcp(client(40001), vip(80), SYN, 7, b""))?;
    let backend = packet::parse(&out)?.dst;

    let syn_ack = packet::tcp(backend, client(40001), SYN | ACK, 90, b"");
    let (res, out) = run(&mut dp, &syn_ack)?;
    assert_eq!(res.return_value, TC_ACT_OK);
    let p = packet::parse(&out)?;
    assert_eq!(p.src, vip(80), "the reply comes from the VIP");
    assert_eq!(p.dst, client(40001));
    assert_eq!(reason_count(&mut dp, ReasonV1::RevNat)?, 1);

    for i in 0..5 {
        let data = packet::tcp(client(40001), vip(80), ACK, 8 + i, b"GET / HTTP/1.0\r\n\r\n");
        let (res, out) = run(&mut dp, &data)?;
        assert_eq!(res.return_value, TC_ACT_OK);
        let p = packet::parse(&out)?;
        assert_eq!(p.dst, backend, "every packet of the flow goes to its backend");
        assert_eq!(p.payload, b"GET / HTTP/1.0\r\n\r\n");
    }
    assert_eq!(reason_count(&mut dp, ReasonV1::CtHit)?, 5);
    Ok(())
}

#[test]
fn udp_is_balanced_and_a_zero_checksum_stays_zero() -> anyhow::Result<()> {
    let (mut dp, _) = loaded(&Cluster::web(&BACKENDS, None))?;
    let (res, out) = run(&mut dp, &packet::udp(client(5000), vip(53), b"query", true))?;
    assert_eq!(res.return_value, TC_ACT_OK);
    let p = packet::parse(&out)?;
    assert!(BACKENDS.contains(p.dst.ip()) && p.dst.port() == 5353, "got {}", p.dst);
    assert!(!p.udp_no_checksum);
    let (_, out) = run(&mut dp, &packet::udp(client(5001), vip(53), b"query", false))?;
    let p = packet::parse(&out)?;
    assert!(p.udp_no_checksum, "a datagram without checksum keeps none");
    let (_, reply) = run(&mut dp, &packet::udp(p.dst, client(5001), b"answer", false))?;
    assert_eq!(packet::parse(&reply)?.src, vip(53));
    Ok(())
}

#[test]
fn new_flows_spread_over_every_backend() -> anyhow::Result<()> {
    let (mut dp, _) = loaded(&Cluster::web(&BACKENDS, None))?;
    let mut seen = BTreeSet::new();
    for port in 20000..20060 {
        let (_, out) = run(&mut dp, &packet::tcp(client(port), vip(80), SYN, 1, b""))?;
        seen.insert(*packet::parse(&out)?.dst.ip());
    }
    assert_eq!(seen.len(), BACKENDS.len(), "60 flows reached {seen:?}");
    Ok(())
}

#[test]
fn client_ip_affinity_sends_every_flow_of_a_client_to_one_backend() -> anyhow::Result<()> {
    let (mut dp, _) = loaded(&Cluster::web(&BACKENDS, Some(60)))?;
    let mut seen = BTreeSet::new();
    for port in 20000..20030 {
        let (_, out) = run(&mut dp, &packet::tcp(client(port), vip(80), SYN, 1, b""))?;
        seen.insert(packet::parse(&out)?.dst);
    }
    assert_eq!(seen.len(), 1, "one client, one backend: {seen:?}");
    assert_eq!(reason_count(&mut dp, ReasonV1::AffinityHit)?, 29);
    // Another client may land elsewhere, but sticks too.
    let other = |port| SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 77), port);
    let mut seen_other = BTreeSet::new();
    for port in 20000..20010 {
        let (_, out) = run(&mut dp, &packet::tcp(other(port), vip(80), SYN, 1, b""))?;
        seen_other.insert(packet::parse(&out)?.dst);
    }
    assert_eq!(seen_other.len(), 1);
    Ok(())
}

#[test]
fn a_service_without_endpoints_answers_tcp_with_a_reset_and_udp_with_port_unreachable() -> anyhow::Result<()> {
    let (mut dp, _) = loaded(&Cluster::web(&[], None))?;
    let syn = packet::tcp(client(40002), vip(80), SYN, 5000, b"");
    let (res, out) = run(&mut dp, &syn)?;
    assert_eq!(res.return_value, TC_ACT_REDIRECT, "the RST goes back out of the interface");
    assert_eq!(out.len(), 54, "Ethernet + IPv4 + TCP headers, nothing else");
    let p = packet::parse(&out)?;
    assert_eq!((p.src, p.dst), (vip(80), client(40002)));
    assert_eq!(p.tcp_flags, RST | ACK);
    assert_eq!(p.ack, 5001, "acknowledges the SYN");
    assert_eq!(p.dst_mac, syn[6..12], "addressed to the client's MAC");
    assert_eq!(reason_count(&mut dp, ReasonV1::NoBackendsRst)?, 1);

    let query = packet::udp(client(5000), vip(53), b"query for nobody", true);
    let (res, out) = run(&mut dp, &query)?;
    assert_eq!(res.return_value, TC_ACT_REDIRECT, "the ICMP error goes back out of the interface");
    assert_eq!(out.len(), 14 + 20 + 8 + 28, "Ethernet + IPv4 + ICMP + quoted IPv4 header and 8 bytes");
    let ip = &out[14..34];
    assert_eq!(packet::checksum(ip), 0, "IPv4 header checksum");
    assert_eq!(ip[9], 1, "ICMP");
    assert_eq!((&ip[12..16], &ip[16..20]), (&VIP.octets()[..], &client(5000).ip().octets()[..]));
    let icmp = &out[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 3), "destination unreachable, port unreachable");
    assert_eq!(packet::checksum(icmp), 0, "ICMP checksum");
    assert_eq!(&icmp[8..], &query[14..14 + 28], "quotes the datagram's IPv4 header and UDP header");
    assert_eq!(&out[0..6], &query[6..12], "addressed to the client's MAC");
    assert_eq!(reason_count(&mut dp, ReasonV1::NoBackendsIcmp)?, 1);

    let (res, _) = run(&mut dp, &packet::tcp(client(40003), vip(80), ACK, 1, b"late"))?;
    assert_eq!(res.return_value, TC_ACT_SHOT, "a segment of no known flow is dropped, not answered");
    assert_eq!(reason_count(&mut dp, ReasonV1::NoBackendsDrop)?, 1);
    Ok(())
}

#[test]
fn a_node_port_on_a_node_address_reaches_a_backend() -> anyhow::Result<()> {
    let (mut dp, _) = loaded(&Cluster::web(&BACKENDS, None))?;
    let external = SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 200), 33000);
    let (res, out) = run(&mut dp, &packet::tcp(external, SocketAddrV4::new(NODE_IP, 30080), SYN, 1, b""))?;
    assert_eq!(res.return_value, TC_ACT_OK);
    let p = packet::parse(&out)?;
    assert!(BACKENDS.contains(p.dst.ip()) && p.dst.port() == 8080, "got {}", p.dst);
    assert_eq!(p.src, external, "the client address is preserved");
    let (_, reply) = run(&mut dp, &packet::tcp(p.dst, external, SYN | ACK, 1, b""))?;
    assert_eq!(packet::parse(&reply)?.src, SocketAddrV4::new(NODE_IP, 30080), "replies come from the node port");
    Ok(())
}

#[test]
fn a_removed_backend_keeps_its_flows_and_gets_no_new_ones() -> anyhow::Result<()> {
    let mut cluster = Cluster::web(&BACKENDS, None);
    let (mut dp, mut current) = loaded(&cluster)?;
    // Open flows until one lands on the backend that will leave.
    let leaving = BACKENDS[1];
    let mut open = None;
    for port in 30000..30100 {
        let (_, out) = run(&mut dp, &packet::tcp(client(port), vip(80), SYN, 1, b""))?;
        if *packet::parse(&out)?.dst.ip() == leaving {
            open = Some(port);
            break;
        }
    }
    let open = open.expect("Maglev sends some of 100 flows to each backend");
    cluster.slices[0].endpoints[1] = Endpoint::terminating(leaving, "n1");
    cluster.apply(&mut dp, &mut current)?;

    let (_, out) = run(&mut dp, &packet::tcp(client(open), vip(80), ACK, 2, b"more"))?;
    assert_eq!(*packet::parse(&out)?.dst.ip(), leaving, "the open flow stays on its (terminating) backend");
    for port in 31000..31060 {
        let (_, out) = run(&mut dp, &packet::tcp(client(port), vip(80), SYN, 1, b""))?;
        assert_ne!(*packet::parse(&out)?.dst.ip(), leaving, "a new flow from port {port} avoided it");
    }
    Ok(())
}

#[test]
fn a_client_port_reused_towards_another_service_with_the_same_backend_gets_a_new_source_port() -> anyhow::Result<()> {
    // Two Services, one endpoint: a client port reused from one to the other
    // lands on the same backend tuple, which the backend may still hold in
    // TIME_WAIT.
    let mut cluster = Cluster::web(&BACKENDS[..1], None);
    let mut other = cluster.services[0].clone();
    other.name = "api".into();
    other.cluster_ips = vec![Ipv4Addr::new(10, 96, 0, 20)];
    other.ports.truncate(1);
    other.ports[0].node_port = None;
    let mut other_slice = cluster.slices[0].clone();
    other_slice.service_name = "api".into();
    cluster.services.push(other);
    cluster.slices.push(other_slice);
    let (mut dp, _) = loaded(&cluster)?;
    let api = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 20), 80);

    let (_, out) = run(&mut dp, &packet::tcp(client(40100), vip(80), SYN, 1, b""))?;
    let first = packet::parse(&out)?;
    assert_eq!(first.src, client(40100), "the first flow keeps its port");
    // The same port to the same VIP again (the client's own next connection
    // on that tuple) keeps it too.
    let (_, out) = run(&mut dp, &packet::tcp(client(40100), vip(80), SYN, 5, b""))?;
    assert_eq!(packet::parse(&out)?.src, client(40100));

    // The same port towards the other Service: same backend, new source port.
    let (res, out) = run(&mut dp, &packet::tcp(client(40100), api, SYN, 9, b""))?;
    assert_eq!(res.return_value, TC_ACT_OK);
    let second = packet::parse(&out)?;
    assert_eq!(second.dst, first.dst, "the same backend");
    assert_eq!(*second.src.ip(), *client(40100).ip(), "the client address is kept");
    let remapped = second.src.port();
    assert_ne!(remapped, 40100, "the source port was remapped");
    // A retransmitted SYN keeps the remapped port; later packets use it too.
    let (_, out) = run(&mut dp, &packet::tcp(client(40100), api, SYN, 9, b""))?;
    assert_eq!(packet::parse(&out)?.src.port(), remapped);
    let (_, out) = run(&mut dp, &packet::tcp(client(40100), api, ACK, 10, b"get"))?;
    let p = packet::parse(&out)?;
    assert_eq!((p.src.port(), p.dst), (remapped, first.dst), "the flow keeps its port and backend");

    // Each flow's replies reach the client on its own port, from its own VIP.
    let reply = packet::tcp(second.dst, SocketAddrV4::new(*client(40100).ip(), remapped), SYN | ACK, 70, b"");
    let (_, out) = run(&mut dp, &reply)?;
    let p = packet::parse(&out)?;
    assert_eq!((p.src, p.dst), (api, client(40100)), "the remapped flow's reply");
    let (_, out) = run(&mut dp, &packet::tcp(first.dst, client(40100), SYN | ACK, 80, b""))?;
    let p = packet::parse(&out)?;
    assert_eq!((p.src, p.dst), (vip(80), client(40100)), "the first flow's replies are still its own");
    Ok(())
}

#[test]
fn reloading_with_the_same_pin_dir_keeps_services_and_open_flows_without_rewriting() -> anyhow::Result<()> {
    assert!(is_root(), "this test loads eBPF programs: run it as root");
    let pins = waggle_tests::bpffs::PinDir::new("lb")?;
    let config = LoadConfig { pin_dir: Some(pins.path().to_path_buf()), capacity: LbCapacity::default() };
    let cluster = Cluster::web(&BACKENDS, None);

    let backend = {
        let mut dp = Dataplane::load_with(&config)?;
        cluster.apply(&mut dp, &mut Current::default())?;
        let (_, out) = run(&mut dp, &packet::tcp(client(41000), vip(80), SYN, 1, b""))?;
        packet::parse(&out)?.dst
        // The first "agent" goes away here; its maps stay pinned.
    };

    let mut dp = Dataplane::load_with(&config)?;
    let mut current = Current::read(&dp.lb_maps().writers())?;
    assert_eq!(current.frontend_count(), 3, "VIP:80, VIP:53 and the NodePort survived");
    let node = Node { name: "n1".into(), addresses: vec![NODE_IP] };
    let desired = lb::desired_state(&node, &cluster.services, &cluster.slices);
    let stats = lb::apply_diff(&mut current, &desired, &mut dp.lb_maps().writers())?;
    assert_eq!(stats, ApplyStats::default(), "an unchanged cluster costs no write after a restart");

    let (_, out) = run(&mut dp, &packet::tcp(client(41000), vip(80), ACK, 2, b"still here"))?;
    assert_eq!(packet::parse(&out)?.dst, backend, "the open flow kept its backend across the reload");
    assert_eq!(reason_count(&mut dp, ReasonV1::CtHit)?, 1);

    let other = LoadConfig { capacity: LbCapacity { services: 1024, ..LbCapacity::default() }, ..config };
    drop(dp);
    let err = Dataplane::load_with(&other).expect_err("a pinned map of another size is refused");
    assert!(err.to_string().contains("LB4_SVC_V1"), "{err}");
    Ok(())
}

// ---- xdp_lb: the same stages on the node uplink --------------------------

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn outside(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 200), port)
}

fn node_port() -> SocketAddrV4 {
    SocketAddrV4::new(NODE_IP, 30080)
}

fn run_xdp(dp: &mut Dataplane, frame: &[u8]) -> anyhow::Result<(TestRunResult, Vec<u8>)> {
    Ok(dp.test_run_xdp_lb(frame)?)
}

/// `default/web` with NodePort 30080 and externalIP `EXTERNAL_IP`, endpoints
/// on this node ("n1") and another ("n2"), and the given traffic policies.
fn split_cluster(external_local: bool, internal_local: bool) -> Cluster {
    let mut c = Cluster::web(&BACKENDS, None);
    c.services[0].external_ips = vec![EXTERNAL_IP];
    c.services[0].external_traffic_local = external_local;
    c.services[0].internal_traffic_local = internal_local;
    // BACKENDS[0] is local, the others run on n2.
    c.slices[0].endpoints =
        BACKENDS.iter().enumerate().map(|(i, &a)| Endpoint::ready(a, if i == 0 { "n1" } else { "n2" })).collect();
    c
}

#[test]
fn xdp_dnats_a_node_port_syn_keeping_the_client_address_and_tc_translates_the_reply() -> anyhow::Result<()> {
    let (mut dp, _) = loaded(&Cluster::web(&BACKENDS, None))?;
    let syn = packet::tcp(outside(33000), node_port(), SYN, 1, b"");
    let (res, out) = run_xdp(&mut dp, &syn)?;
    assert_eq!(res.return_value, XDP_PASS, "on to the stack, which routes it to the backend");
    let p = packet::parse(&out)?;
    assert!(BACKENDS.contains(p.dst.ip()) && p.dst.port() == 8080, "got {}", p.dst);
    assert_eq!(p.src, outside(33000), "the client address is preserved (no SNAT)");
    assert_eq!(reason_count(&mut dp, ReasonV1::NewFlow)?, 1);

    // The backend's answer leaves through its veth: tc_lb turns it back.
    let (res, reply) = run(&mut dp, &packet::tcp(p.dst, outside(33000), SYN | ACK, 9, b""))?;
    assert_eq!(res.return_value, TC_ACT_OK);
    let r = packet::parse(&reply)?;
    assert_eq!((r.src, r.dst), (node_port(), outside(33000)), "replies come from the node port");

    // The rest of the flow follows conntrack in XDP.
    let (res, out) = run_xdp(&mut dp, &packet::tcp(outside(33000), node_port(), ACK, 2, b"GET /"))?;
    assert_eq!(res.return_value, XDP_PASS);
    let q = packet::parse(&out)?;
    assert_eq!((q.dst, q.payload.as_slice()), (p.dst, &b"GET /"[..]));
    assert_eq!(reason_count(&mut dp, ReasonV1::CtHit)?, 1);
    Ok(())
}

#[test]
fn xdp_balances_udp_to_a_node_port_with_valid_or_absent_checksums() -> anyhow::Result<()> {
    let mut cluster = Cluster::web(&BACKENDS, None);
    cluster.services[0].ports[1].node_port = Some(30053);
    let (mut dp, _) = loaded(&cluster)?;
    let to = SocketAddrV4::new(NODE_IP, 30053);
    for (port, with_checksum) in [(5001, true), (5002, false)] {
        let (res, out) = run_xdp(&mut dp, &packet::udp(outside(port), to, b"query", with_checksum))?;
        assert_eq!(res.return_value, XDP_PASS);
        let p = packet::parse(&out)?;
        assert!(BACKENDS.contains(p.dst.ip()) && p.dst.port() == 5353, "got {}", p.dst);
        assert_eq!(p.udp_no_checksum, !with_checksum, "a missing checksum stays missing");
        assert_eq!(p.payload, b"query");
    }
    Ok(())
}

#[test]
fn xdp_leaves_traffic_that_is_not_for_a_frontend_alone() -> anyhow::Result<()> {
    let (mut dp, _) = loaded(&Cluster::web(&BACKENDS, None))?;
    for frame in [
        packet::tcp(outside(33000), SocketAddrV4::new(NODE_IP, 22), SYN, 1, b""),
        packet::tcp(outside(33000), SocketAddrV4::new(NODE_IP, 30081), SYN, 1, b""),
        packet::udp(outside(33000), node_port(), b"not udp", true),
    ] {
        let (res, out) = run_xdp(&mut dp, &frame)?;
        assert_eq!(res.return_value, XDP_PASS);
        assert_eq!(out, frame, "a miss leaves every byte alone");
    }
    let mut arp = packet::tcp(outside(1), node_port(), SYN, 1, b"");
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let (res, out) = run_xdp(&mut dp, &arp)?;
    assert_eq!((res.return_value, out), (XDP_PASS, arp), "not IPv4: passed untouched");
    assert_eq!(reason_count(&mut dp, ReasonV1::NoService)?, 3);
    assert_eq!(reason_count(&mut dp, ReasonV1::NotIpv4L4)?, 1);
    Ok(())
}

#[test]
fn external_traffic_policy_local_sends_node_port_and_external_ip_flows_only_to_local_endpoints() -> anyhow::Result<()> {
    let (mut dp, _) = loaded(&split_cluster(true, false))?;
    for (i, to) in [node_port(), SocketAddrV4::new(EXTERNAL_IP, 80)].into_iter().enumerate() {
        for port in 0..40u16 {
            let from = outside(20000 + 100 * i as u16 + port);
            let (res, out) = run_xdp(&mut dp, &packet::tcp(from, to, SYN, 1, b""))?;
            assert_eq!(res.return_value, XDP_PASS);
            let p = packet::parse(&out)?;
            assert_eq!(p.dst, SocketAddrV4::new(BACKENDS[0], 8080), "{to} from {from}: only the local endpoint");
            assert_eq!(p.src, from, "Local keeps the client address");
        }
    }
    // The ClusterIP is not subject to externalTrafficPolicy.
    let seen: BTreeSet<Ipv4Addr> = (0..60)
        .map(|port| {
            Ok(*packet::parse(&run(&mut dp, &packet::tcp(client(21000 + port), vip(80), SYN, 1, b""))?.1)?.dst.ip())
        })
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(seen.len(), 3, "the ClusterIP reaches every endpoint: {seen:?}");
    Ok(())
}

#[test]
fn external_traffic_policy_cluster_spreads_node_port_flows_over_every_endpoint() -> anyhow::Result<()> {
    let (mut dp, _) = loaded(&split_cluster(false, false))?;
    let seen: BTreeSet<Ipv4Addr> = (0..60)
        .map(|port| {
            Ok(*packet::parse(&run_xdp(&mut dp, &packet::tcp(outside(22000 + port), node_port(), SYN, 1, b""))?.1)?
                .dst
                .ip())
        })
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(seen.len(), 3, "{seen:?}");
    Ok(())
}

#[test]
fn internal_traffic_policy_local_sends_cluster_ip_flows_only_to_local_endpoints() -> anyhow::Result<()> {
    let (mut dp, _) = loaded(&split_cluster(false, true))?;
    for port in 0..40u16 {
        let (_, out) = run(&mut dp, &packet::tcp(client(23000 + port), vip(80), SYN, 1, b""))?;
        assert_eq!(*packet::parse(&out)?.dst.ip(), BACKENDS[0], "only the local endpoint");
    }
    // The NodePort follows externalTrafficPolicy (Cluster here).
    let seen: BTreeSet<Ipv4Addr> = (0..60)
        .map(|port| {
            Ok(*packet::parse(&run_xdp(&mut dp, &packet::tcp(outside(24000 + port), node_port(), SYN, 1, b""))?.1)?
                .dst
                .ip())
        })
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(seen.len(), 3, "{seen:?}");
    Ok(())
}

#[test]
fn a_local_policy_node_port_without_local_endpoints_is_refused_by_xdp() -> anyhow::Result<()> {
    let mut cluster = split_cluster(true, false);
    cluster.slices[0].endpoints.remove(0);
    let (mut dp, _) = loaded(&cluster)?;
    let syn = packet::tcp(outside(34000), node_port(), SYN, 777, b"");
    let (res, out) = run_xdp(&mut dp, &syn)?;
    assert_eq!(res.return_value, XDP_TX, "the RST goes back out of the uplink");
    assert_eq!(out.len(), 54, "Ethernet + IPv4 + TCP headers, nothing else");
    let p = packet::parse(&out)?;
    assert_eq!((p.src, p.dst), (node_port(), outside(34000)));
    assert_eq!((p.tcp_flags, p.ack), (RST | ACK, 778));
    assert_eq!((p.dst_mac, p.src_mac), (syn[6..12].try_into()?, syn[0..6].try_into()?), "MACs swapped");

    let mut udp_cluster = split_cluster(true, false);
    udp_cluster.slices[0].endpoints.remove(0);
    udp_cluster.services[0].ports[1].node_port = Some(30053);
    let (mut dp, _) = loaded(&udp_cluster)?;
    let query = packet::udp(outside(5000), SocketAddrV4::new(NODE_IP, 30053), b"anyone?", true);
    let (res, out) = run_xdp(&mut dp, &query)?;
    assert_eq!(res.return_value, XDP_TX);
    assert_eq!(out.len(), 14 + 20 + 8 + 28);
    assert_eq!(out[12..14], [0x08, 0x00], "an IPv4 frame");
    let ip = &out[14..34];
    assert_eq!(packet::checksum(ip), 0, "IPv4 header checksum");
    assert_eq!((&ip[12..16], &ip[16..20]), (&NODE_IP.octets()[..], &outside(5000).ip().octets()[..]));
    let icmp = &out[34..];
    assert_eq!((icmp[0], icmp[1], packet::checksum(icmp)), (3, 3, 0), "port unreachable, valid checksum");
    assert_eq!(&icmp[8..], &query[14..14 + 28], "quotes the datagram's IPv4 and UDP headers");

    let (res, _) = run_xdp(&mut dp, &packet::udp(outside(5000), node_port(), b"", true))?;
    assert_eq!(res.return_value, XDP_PASS, "TCP-only NodePort: UDP to it is not ours");
    let (res, _) = run_xdp(&mut dp, &packet::tcp(outside(5000), SocketAddrV4::new(NODE_IP, 30053), ACK, 1, b""))?;
    assert_eq!(res.return_value, XDP_PASS);
    let mut tcp_late = split_cluster(true, false);
    tcp_late.slices[0].endpoints.remove(0);
    let (mut dp, _) = loaded(&tcp_late)?;
    let (res, _) = run_xdp(&mut dp, &packet::tcp(outside(34001), node_port(), ACK, 1, b"late"))?;
    assert_eq!(res.return_value, XDP_DROP, "a segment of no known flow is dropped");
    Ok(())
}

// ---- hairpin: a pod reaching itself through its Service ------------------

#[test]
fn a_pod_reaching_itself_through_its_cluster_ip_is_hairpinned_through_the_snat_address() -> anyhow::Result<()> {
    let pod = BACKENDS[1];
    let (mut dp, _) = loaded(&Cluster::web(&[pod], None))?;
    let me = SocketAddrV4::new(pod, 45000);
    let hairpin = SocketAddrV4::new(Ipv4Addr::new(169, 254, 42, 1), 45000);
    let backend = SocketAddrV4::new(pod, 8080);

    let (res, out) = run(&mut dp, &packet::tcp(me, vip(80), SYN, 100, b""))?;
    assert_eq!(res.return_value, TC_ACT_OK);
    let p = packet::parse(&out)?;
    assert_eq!((p.src, p.dst), (hairpin, backend), "to itself, from the hairpin address (else a martian)");

    // The pod answers the hairpin address through its gateway.
    let (res, out) = run(&mut dp, &packet::tcp(backend, hairpin, SYN | ACK, 500, b""))?;
    assert_eq!(res.return_value, TC_ACT_OK);
    let r = packet::parse(&out)?;
    assert_eq!((r.src, r.dst), (vip(80), me), "the answer comes from the VIP, to the pod's client socket");
    assert_eq!(reason_count(&mut dp, ReasonV1::RevNat)?, 1);

    // The rest of the flow, both ways.
    for i in 0..3 {
        let (_, out) = run(&mut dp, &packet::tcp(me, vip(80), ACK, 101 + i, b"ping"))?;
        let p = packet::parse(&out)?;
        assert_eq!((p.src, p.dst, p.payload.as_slice()), (hairpin, backend, &b"ping"[..]));
        let (_, out) = run(&mut dp, &packet::tcp(backend, hairpin, ACK, 501 + i, b"pong"))?;
        let r = packet::parse(&out)?;
        assert_eq!((r.src, r.dst, r.payload.as_slice()), (vip(80), me, &b"pong"[..]));
    }
    assert_eq!(reason_count(&mut dp, ReasonV1::CtHit)?, 3);

    // Another pod of the same Service is not hairpinned.
    let other = client(46000);
    let (_, out) = run(&mut dp, &packet::tcp(other, vip(80), SYN, 1, b""))?;
    assert_eq!(packet::parse(&out)?.src, other, "only a pod reaching itself is source-NATed");
    Ok(())
}

#[test]
fn hairpinned_udp_keeps_its_checksum_valid_both_ways() -> anyhow::Result<()> {
    let pod = BACKENDS[0];
    let (mut dp, _) = loaded(&Cluster::web(&[pod], None))?;
    let me = SocketAddrV4::new(pod, 5300);
    let (_, out) = run(&mut dp, &packet::udp(me, vip(53), b"q", true))?;
    let p = packet::parse(&out)?;
    assert_eq!((p.src, p.dst), (SocketAddrV4::new(Ipv4Addr::new(169, 254, 42, 1), 5300), SocketAddrV4::new(pod, 5353)));
    let (_, out) = run(&mut dp, &packet::udp(p.dst, p.src, b"a", true))?;
    let r = packet::parse(&out)?;
    assert_eq!((r.src, r.dst, r.payload.as_slice()), (vip(53), me, &b"a"[..]));
    Ok(())
}

// ---- externalTrafficPolicy Cluster with a backend on another node --------

/// A node namespace whose routes say: 10.244.0.0/24 are this node's pods
/// (`pods`), 10.244.1.0/24 are pods of the node at 10.9.0.3, behind the
/// uplink. Veth pairs inside the namespace stand in for the links. Returns
/// it and the uplink's ifindex.
fn snat_node() -> anyhow::Result<(waggle_tests::NetNs, u32)> {
    let node = waggle_tests::NetNs::new("snat")?;
    for (link, addr) in [("uplink", "10.9.0.1/24"), ("pods", "10.244.0.1/24")] {
        node.ip(&["link", "add", link, "type", "veth", "peer", "name", &format!("{link}-peer")])?;
        node.ip(&["addr", "add", addr, "dev", link])?;
        node.ip(&["link", "set", link, "up"])?;
        node.ip(&["link", "set", &format!("{link}-peer"), "up"])?;
    }
    node.ip(&["route", "add", "10.244.1.0/24", "via", "10.9.0.3", "dev", "uplink"])?;
    node.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    let uplink: u32 = node.run(|| nix::net::if_::if_nametoindex("uplink"))??;
    Ok((node, uplink))
}

#[test]
fn two_clients_on_one_source_port_to_one_remote_backend_get_distinct_snat_ports() -> anyhow::Result<()> {
    let (node, uplink) = snat_node()?;
    let remote = Ipv4Addr::new(10, 244, 1, 11);
    let mut cluster = Cluster::web(&[remote], None);
    cluster.slices[0].endpoints = vec![Endpoint::ready(remote, "n2")];
    let (mut dp, _) = loaded(&cluster)?;
    let mut xdp = |frame: Vec<u8>| -> anyhow::Result<packet::Parsed> {
        let (res, out) = node.run(|| dp.test_run_xdp_lb_from(&frame, uplink).map_err(anyhow::Error::from))??;
        assert_eq!(res.return_value, XDP_PASS);
        packet::parse(&out)
    };
    let a = SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 200), 40000);
    let b = SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 201), 40000);
    let backend = SocketAddrV4::new(remote, 8080);

    let first = xdp(packet::tcp(a, node_port(), SYN, 1, b""))?;
    assert_eq!((first.src, first.dst), (SocketAddrV4::new(NODE_IP, 40000), backend), "the client's port is kept");
    let second = xdp(packet::tcp(b, node_port(), SYN, 1, b""))?;
    assert_eq!(*second.src.ip(), NODE_IP);
    let b_port = second.src.port();
    assert_ne!(b_port, 40000, "(node, 40000) already carries a's replies: b gets another port");

    // Each reply goes back to its own client.
    let to_a = xdp(packet::tcp(backend, SocketAddrV4::new(NODE_IP, 40000), SYN | ACK, 9, b""))?;
    assert_eq!((to_a.src, to_a.dst), (node_port(), a));
    let to_b = xdp(packet::tcp(backend, SocketAddrV4::new(NODE_IP, b_port), SYN | ACK, 9, b""))?;
    assert_eq!((to_b.src, to_b.dst), (node_port(), b));

    // Later packets keep their flow's port; a retransmitted SYN keeps its own.
    let later = xdp(packet::tcp(b, node_port(), ACK, 2, b"GET /"))?;
    assert_eq!((later.src, later.dst), (SocketAddrV4::new(NODE_IP, b_port), backend));
    let again = xdp(packet::tcp(a, node_port(), SYN, 1, b""))?;
    assert_eq!(again.src, SocketAddrV4::new(NODE_IP, 40000), "a retransmitted SYN is not a collision");
    let again = xdp(packet::tcp(b, node_port(), SYN, 1, b""))?;
    assert_eq!(again.src, SocketAddrV4::new(NODE_IP, b_port), "nor does it move a remapped flow to a new port");
    Ok(())
}

#[test]
fn a_cluster_policy_node_port_flow_to_another_nodes_backend_leaves_from_the_node_address() -> anyhow::Result<()> {
    let (node, uplink) = snat_node()?;

    let local = BACKENDS[0];
    let remote = Ipv4Addr::new(10, 244, 1, 11);
    let mut cluster = Cluster::web(&[local, remote], None);
    cluster.slices[0].endpoints = vec![Endpoint::ready(local, "n1"), Endpoint::ready(remote, "n2")];
    let (mut dp, _) = loaded(&cluster)?;
    let mut xdp = |frame: Vec<u8>| node.run(|| dp.test_run_xdp_lb_from(&frame, uplink).map_err(anyhow::Error::from));

    let mut to_remote = None;
    let mut to_local = None;
    for port in 35000..35100u16 {
        let (res, out) = xdp(packet::tcp(outside(port), node_port(), SYN, 1, b""))??;
        assert_eq!(res.return_value, XDP_PASS);
        let p = packet::parse(&out)?;
        if *p.dst.ip() == remote {
            assert_eq!(p.src, SocketAddrV4::new(NODE_IP, port), "to another node: from the node address");
            to_remote.get_or_insert(port);
        } else {
            assert_eq!(p.src, outside(port), "to a local pod: the client address is kept");
            to_local.get_or_insert(port);
        }
    }
    let port = to_remote.expect("Maglev sends some of 100 flows to the remote backend");
    assert!(to_local.is_some(), "and some to the local one");

    // The remote backend answers the node address; XDP turns the answer
    // back into the node port and sends it on to the client.
    let (res, out) =
        xdp(packet::tcp(SocketAddrV4::new(remote, 8080), SocketAddrV4::new(NODE_IP, port), SYN | ACK, 9, b""))??;
    assert_eq!(res.return_value, XDP_PASS);
    let r = packet::parse(&out)?;
    assert_eq!((r.src, r.dst), (node_port(), outside(port)));

    // Later packets of the flow keep both rewrites.
    let (_, out) = xdp(packet::tcp(outside(port), node_port(), ACK, 2, b"GET /"))??;
    let p = packet::parse(&out)?;
    assert_eq!((p.src, p.dst), (SocketAddrV4::new(NODE_IP, port), SocketAddrV4::new(remote, 8080)));

    // externalTrafficPolicy Local never source-NATs (and never picks n2).
    cluster.services[0].external_traffic_local = true;
    let (mut dp, _) = loaded(&cluster)?;
    let (_, out) = node.run(|| {
        dp.test_run_xdp_lb_from(&packet::tcp(outside(36000), node_port(), SYN, 1, b""), uplink)
            .map_err(anyhow::Error::from)
    })??;
    let p = packet::parse(&out)?;
    assert_eq!((p.src, *p.dst.ip()), (outside(36000), local));
    Ok(())
}
