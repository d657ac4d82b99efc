//! Service load balancing, eBPF side only so far (scaffolding for issue 5's
//! benchmark):
//!
//! - per-packet cost of `tc_lb` through BPF_PROG_TEST_RUN with 10 and with
//!   100,000 Services, for a new flow (SYN: Maglev + two conntrack inserts)
//!   and an established one (ACK: one conntrack hit);
//! - time to program 100, 1,000 and 10,000 Services (one backend each) from
//!   `desired_state` through `apply_diff` into the kernel maps.
//!
//! Not yet here: the kube-proxy-shaped iptables peer (KUBE-SERVICES →
//! KUBE-SVC-* → KUBE-SEP-* with statistic random) and the connection-rate and
//! latency runs through a VIP in the namespace topology of `lb_traffic.rs`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::json;
use waggle_dataplane::lb::{
    self, Current, Endpoint, EndpointPort, EndpointSlice, Node, Protocol, Service, ServicePort,
};
use waggle_dataplane::lb_abi::ReasonV1;
use waggle_dataplane::{Dataplane, LbCapacity, LoadConfig};
use waggle_tests::packet::{self, ACK, SYN};

const REPEAT: u32 = 1_000_000;

fn service(i: u32) -> Service {
    Service {
        namespace: "bench".into(),
        name: format!("svc-{i}"),
        cluster_ips: vec![vip(i)],
        ports: vec![ServicePort { name: "http".into(), protocol: Protocol::Tcp, port: 80, node_port: None }],
        ..Default::default()
    }
}

fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a60_0000 + i)
}

fn slice(i: u32, backends: u32) -> EndpointSlice {
    EndpointSlice {
        namespace: "bench".into(),
        service_name: format!("svc-{i}"),
        ports: vec![EndpointPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 }],
        endpoints: (0..backends).map(|b| Endpoint::ready(Ipv4Addr::from(0x0af4_0000 + i * 4 + b), "n1")).collect(),
    }
}

fn node() -> Node {
    Node { name: "n1".into(), addresses: vec![] }
}

fn capacity(services: u32) -> LbCapacity {
    LbCapacity {
        services: services.max(1024),
        backends: (services * 3).max(1024),
        maglev_rows: services.max(16),
        ..LbCapacity::default()
    }
}

/// ns per packet of `tc_lb` with `services` Services; only Service 0 has a
/// backend, the others are frontends with no endpoints: the lookups the
/// packet makes do not depend on what the other entries hold.
///
/// BPF_PROG_TEST_RUN runs every repeat on the same skb, so a DNAT done by
/// the first run would turn the later ones into misses. Service 0's one
/// backend is therefore the VIP:80 itself: the full lookup path runs every
/// time (service, conntrack, Maglev + two conntrack inserts for the SYN) but
/// the rewrite finds nothing to change. The checksum helpers are not in
/// these figures.
fn per_packet(services: u32) -> anyhow::Result<(f64, f64)> {
    let mut dp = Dataplane::load_with(&LoadConfig { pin_dir: None, capacity: capacity(services) })?;
    let svcs: Vec<Service> = (0..services).map(service).collect();
    let mut itself = slice(0, 0);
    itself.ports[0].port = 80;
    itself.endpoints = vec![Endpoint::ready(vip(0), "n1")];
    let desired = lb::desired_state(&node(), &svcs, &[itself]);
    lb::apply_diff(&mut Current::default(), &desired, &mut dp.lb_maps().writers())?;
    let client = SocketAddrV4::new(Ipv4Addr::new(10, 244, 9, 9), 40000);
    let to = SocketAddrV4::new(vip(0), 80);
    let syn = packet::tcp(client, to, SYN, 1, b"");
    let ack = packet::tcp(client, to, ACK, 2, b"");
    let new_flow = dp.bench_tc_lb(&syn, REPEAT)?.duration.as_nanos() as f64;
    let established = dp.bench_tc_lb(&ack, REPEAT)?.duration.as_nanos() as f64;
    let reasons = &dp.lb_maps().reasons;
    let (new, hits) = (reasons.read(ReasonV1::NewFlow)?.packets, reasons.read(ReasonV1::CtHit)?.packets);
    anyhow::ensure!(
        new >= u64::from(REPEAT) && hits >= u64::from(REPEAT),
        "every repeat must take the path it measures: {new} new flows, {hits} conntrack hits"
    );
    Ok((new_flow, established))
}

/// Seconds to program `services` Services with one backend each.
fn programming_time(services: u32) -> anyhow::Result<f64> {
    let mut dp = Dataplane::load_with(&LoadConfig { pin_dir: None, capacity: capacity(services) })?;
    let svcs: Vec<Service> = (0..services).map(service).collect();
    let slices: Vec<EndpointSlice> = (0..services).map(|i| slice(i, 1)).collect();
    let start = Instant::now();
    let desired = lb::desired_state(&node(), &svcs, &slices);
    lb::apply_diff(&mut Current::default(), &desired, &mut dp.lb_maps().writers())?;
    Ok(start.elapsed().as_secs_f64())
}

pub fn run(out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(waggle_tests::is_root(), "the LB benchmark loads eBPF programs: run it as root");
    let mut per_packet_rows = Vec::new();
    println!("{:<34} {:>12} {:>14}", "tc_lb per packet (PROG_TEST_RUN)", "SYN ns/pkt", "ACK ns/pkt");
    let mut first = None;
    for services in [10u32, 100_000] {
        // BPF_PROG_TEST_RUN's duration is already per run (total / repeat).
        let (syn, ack) = per_packet(services)?;
        println!("{:<34} {syn:>12.1} {ack:>14.1}", format!("{services} Services"));
        per_packet_rows.push(json!({ "services": services, "syn_ns": syn, "ack_ns": ack }));
        match first {
            None => first = Some((syn, ack)),
            Some((s0, a0)) => println!("{:<34} {:>12.2} {:>14.2}", "ratio 100k / 10", syn / s0, ack / a0),
        }
    }
    let mut programming = Vec::new();
    println!("{:<34} {:>12}", "programming Services (1 backend)", "seconds");
    for services in [100u32, 1_000, 10_000] {
        let secs = programming_time(services)?;
        println!("{:<34} {secs:>12.3}", format!("{services} Services"));
        programming.push(json!({ "services": services, "seconds": secs }));
    }
    let report = json!({
        "benchmark": "lb",
        "per_packet": per_packet_rows,
        "programming": programming,
        "not_yet_measured": ["iptables (kube-proxy shaped) peer", "connection rate through a VIP", "request latency p50/p99"],
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {}", out.display()))?;
    println!("figures written to {}", out.display());
    Ok(())
}
