//! Service load balancing: waggle's eBPF path against kube-proxy's
//! iptables mode, in the same namespaces, in the same run.
//!
//! - connections per second (connect, request, response, close; several
//!   client workers against real TCP servers in backend namespaces) and the
//!   latency of one such connection (p50/p99), through ClusterIPs, with 100,
//!   1,000 and 10,000 Services: waggle as a node runs it (socket-level LB on
//!   the cgroup the client process is in, `tc_lb` on the veths for what
//!   sockets cannot see), waggle's packet path alone (`tc_lb` only: a client
//!   outside that cgroup, e.g. traffic from another node), and iptables
//!   rules built as kube-proxy builds them ([`kube_proxy`]);
//! - time to program those Services: `desired_state` + `apply_diff` into the
//!   maps against `iptables-restore` of the ruleset;
//! - per-packet cost of `tc_lb` and `xdp_lb` through BPF_PROG_TEST_RUN with
//!   10 and with 100,000 Services, for a new flow (SYN: Maglev + two
//!   conntrack inserts) and an established one (ACK: one conntrack hit).
//!
//! Every namespace the benchmark creates (and so every iptables rule, which
//! lives only in the node namespace) is deleted when its run ends; the
//! report lists any that were not.

mod kube_proxy;
mod traffic;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use waggle_dataplane::lb::{
    self, Current, Endpoint, EndpointPort, EndpointSlice, Node, Protocol, Service, ServicePort,
};
use waggle_dataplane::lb_abi::ReasonV1;
use waggle_dataplane::{Dataplane, LbCapacity, LoadConfig};
use waggle_tests::NetNs;
use waggle_tests::cgroup::Cgroup2;
use waggle_tests::packet::{self, ACK, SYN};

use crate::report;

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

/// ns per packet of `tc_lb` and `xdp_lb` with `services` Services; only
/// Service 0 has a backend, the others are frontends with no endpoints: the
/// lookups the packet makes do not depend on what the other entries hold.
///
/// BPF_PROG_TEST_RUN runs every repeat on the same packet, so a DNAT done by
/// the first run would turn the later ones into misses. Service 0's one
/// backend is therefore the VIP:80 itself: the full lookup path runs every
/// time (service, conntrack, Maglev + two conntrack inserts for the SYN) but
/// the rewrite finds nothing to change. The checksum updates are not in
/// these figures.
fn per_packet(services: u32) -> anyhow::Result<PerPacket> {
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
    // BPF_PROG_TEST_RUN's duration is already per run (total / repeat).
    let ns = |d: Duration| d.as_nanos() as f64;
    let figures = PerPacket {
        tc_syn: ns(dp.bench_tc_lb(&syn, REPEAT)?.duration),
        tc_ack: ns(dp.bench_tc_lb(&ack, REPEAT)?.duration),
        xdp_syn: ns(dp.bench_xdp_lb(&syn, REPEAT)?.duration),
        xdp_ack: ns(dp.bench_xdp_lb(&ack, REPEAT)?.duration),
    };
    let reasons = &dp.lb_maps().reasons;
    let (new, hits) = (reasons.read(ReasonV1::NewFlow)?.packets, reasons.read(ReasonV1::CtHit)?.packets);
    anyhow::ensure!(
        new >= 2 * u64::from(REPEAT) && hits >= 2 * u64::from(REPEAT),
        "every repeat must take the path it measures: {new} new flows, {hits} conntrack hits"
    );
    Ok(figures)
}

struct PerPacket {
    tc_syn: f64,
    tc_ack: f64,
    xdp_syn: f64,
    xdp_ack: f64,
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

/// `cargo xtask bench lb [-- --workers N --seconds S --services 100,1000]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the JSON report goes.
    pub out: PathBuf,
    /// Client threads (event loops) in the connection-rate runs.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Connections each client thread keeps going at once.
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,
    /// Seconds of connection-rate runs per peer (latency runs last half that).
    #[arg(long, default_value_t = 4.0)]
    pub seconds: f64,
    /// Rounds those seconds are split into, the peers taking turns.
    #[arg(long, default_value_t = 4)]
    pub rounds: u32,
    /// Service counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub services: Vec<u32>,
    /// Backend pods (every Service has all of them as endpoints).
    #[arg(long, default_value_t = 4)]
    pub backends: usize,
    /// The peer's loader: `iptables-restore` (this host's default backend,
    /// as kube-proxy picks it) or e.g. `iptables-legacy-restore`.
    #[arg(long, default_value = "iptables-restore")]
    pub iptables_restore: String,
}

/// Which load balancer a traffic run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    /// Socket-level LB (the client's cgroup) plus `tc_lb` on the veths.
    Waggle,
    /// `tc_lb` on the veths only: per-packet DNAT and reverse NAT.
    WaggleTc,
    Iptables,
}

impl Peer {
    const ALL: [Peer; 3] = [Peer::Waggle, Peer::WaggleTc, Peer::Iptables];

    fn name(self) -> &'static str {
        match self {
            Peer::Waggle => "waggle eBPF (socket+tc)",
            Peer::WaggleTc => "waggle eBPF (tc only)",
            Peer::Iptables => "iptables (kube-proxy)",
        }
    }
}

struct TrafficFigures {
    program_s: f64,
    rate: traffic::Rate,
    latency: Value,
}

/// `services` ClusterIPs (10.96.0.0 + i, port 80) whose endpoints are every
/// backend pod, as waggle's model and as kube-proxy's rules.
fn traffic_services(services: u32, backends: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    let svcs = (0..services).map(service).collect();
    let slices = (0..services)
        .map(|i| {
            let mut s = slice(i, 0);
            s.endpoints = (0..backends).map(|b| Endpoint::ready(traffic::backend_ip(b), "n1")).collect();
            s
        })
        .collect();
    (svcs, slices)
}

/// One peer's topology, programmed with `services` Services.
struct Prepared {
    peer: Peer,
    topo: traffic::Topology,
    /// Held until the runs end: dropping it detaches the programs.
    dataplane: Option<Dataplane>,
    program_s: f64,
}

impl Prepared {
    fn new(peer: Peer, services: u32, args: &Args) -> anyhow::Result<Self> {
        let topo = traffic::Topology::new(args.backends)?;
        let (svcs, slices) = traffic_services(services, args.backends);
        let (dataplane, program_s) = match peer {
            Peer::Waggle | Peer::WaggleTc => {
                let ifaces = traffic::lb_interfaces(args.backends);
                let mut dp = topo.node.run(|| -> anyhow::Result<Dataplane> {
                    let mut dp =
                        Dataplane::load_with(&LoadConfig { pin_dir: None, capacity: capacity(services.max(1024)) })?;
                    for iface in &ifaces {
                        dp.attach_tc_lb(iface)?;
                    }
                    Ok(dp)
                })??;
                let start = Instant::now();
                let desired = lb::desired_state(&node(), &svcs, &slices);
                lb::apply_diff(&mut Current::default(), &desired, &mut dp.lb_maps().writers())?;
                (Some(dp), start.elapsed().as_secs_f64())
            }
            Peer::Iptables => {
                let endpoints: Vec<(Ipv4Addr, u16)> =
                    (0..args.backends).map(|b| (traffic::backend_ip(b), traffic::BACKEND_PORT)).collect();
                let names: Vec<String> = (0..services).map(|i| format!("svc-{i}")).collect();
                let ports: Vec<kube_proxy::SvcPort<'_>> = (0..services)
                    .map(|i| kube_proxy::SvcPort {
                        namespace: "bench",
                        name: &names[i as usize],
                        port_name: "http",
                        vip: vip(i),
                        port: 80,
                        endpoints: &endpoints,
                    })
                    .collect();
                let rules = kube_proxy::ruleset(&ports);
                let start = Instant::now();
                iptables_restore(&topo.node, &args.iptables_restore, &rules)?;
                (None, start.elapsed().as_secs_f64())
            }
        };
        Ok(Self { peer, topo, dataplane, program_s })
    }

    /// Runs `f` with this peer's socket programs attached to `cgroup` (the
    /// one the clients are in) if it has any: only one peer's may be
    /// attached at a time, since every peer uses the same VIPs.
    fn with_clients<T>(&mut self, cgroup: &Cgroup2, f: impl FnOnce(&NetNs) -> T) -> anyhow::Result<T> {
        let sock = self.peer == Peer::Waggle;
        if sock && let Some(dp) = &mut self.dataplane {
            dp.attach_sock_lb(cgroup.path())?;
        }
        let out = f(&self.topo.client);
        if sock && let Some(dp) = &mut self.dataplane {
            dp.detach_sock_lb()?;
        }
        Ok(out)
    }
}

/// Every peer's traffic figures with `services` Services. The peers' runs
/// are interleaved in rounds (each round gives every peer an equal slice of
/// time) so that a change in the shared machine's load hits all of them
/// alike instead of the one that happened to run then.
fn traffic_runs(services: u32, args: &Args, cgroup: &Cgroup2) -> anyhow::Result<Vec<TrafficFigures>> {
    let mut prepared: Vec<Prepared> = Peer::ALL
        .into_iter()
        .map(|peer| {
            Prepared::new(peer, services, args).with_context(|| format!("{} with {services} Services", peer.name()))
        })
        .collect::<anyhow::Result<_>>()?;
    let vips: Vec<SocketAddrV4> = (0..services).map(|i| SocketAddrV4::new(vip(i), 80)).collect();
    let rate_run =
        |client: &NetNs, d: Duration| traffic::connection_rate(client, &vips, args.workers, args.in_flight, d);
    // Warm-up: ARP, listen queues, page cache of the code paths.
    for p in &mut prepared {
        p.with_clients(cgroup, |c| rate_run(c, Duration::from_millis(300)))??;
    }
    let slice = Duration::from_secs_f64(args.seconds / f64::from(args.rounds.max(1)));
    let mut rates: Vec<traffic::Rate> = prepared.iter().map(|_| traffic::Rate::default()).collect();
    let mut samples: Vec<Vec<Duration>> = prepared.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.rounds.max(1) {
        for (i, p) in prepared.iter_mut().enumerate() {
            let r = p.with_clients(cgroup, |c| rate_run(c, slice))??;
            rates[i].add(r);
        }
        for (i, p) in prepared.iter_mut().enumerate() {
            let s = p.with_clients(cgroup, |c| traffic::latencies(c, &vips, slice / 2))??;
            samples[i].extend(s);
        }
    }
    Ok(prepared
        .iter()
        .zip(rates)
        .zip(samples.iter_mut())
        .map(|((p, rate), s)| TrafficFigures { program_s: p.program_s, rate, latency: report::percentiles(s) })
        .collect())
}

/// The first three fields of /proc/loadavg: the machine is shared, and
/// figures mean little without it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// `iptables-restore` inside `ns` (the node namespace the benchmark made).
fn iptables_restore(ns: &NetNs, restore: &str, rules: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), restore])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {restore}"))?;
    child.stdin.take().context("iptables-restore stdin")?.write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "{restore} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// `<restore> -V`: which backend (nf_tables or legacy) the peer ran on.
fn iptables_variant(restore: &str) -> String {
    std::process::Command::new(restore)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Network namespaces of ours (`wgt…`) that still exist.
fn leftover_namespaces(before: &[String]) -> anyhow::Result<Vec<String>> {
    let out = std::process::Command::new("ip").args(["netns", "list"]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("wgt") && !before.iter().any(|b| b == n))
        .map(str::to_string)
        .collect())
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(waggle_tests::is_root(), "the LB benchmark loads eBPF programs: run it as root");
    let namespaces_before = leftover_namespaces(&[])?;
    // The clients run in this process: a cgroup of its own, so the socket
    // programs never see another process's sockets.
    let root = waggle_dataplane::cgroup::cgroup2_mount()?.context("no cgroup2 hierarchy is mounted")?;
    let mut cgroup = Cgroup2::new(&root, "bench-lb")?;
    cgroup.enter()?;
    let load_before = load_average();
    let variant = iptables_variant(&args.iptables_restore);
    println!(
        "peer: kube-proxy-shaped rules through {variant}; {} client thread(s) × {} connections in flight, {} backends, {} rounds",
        args.workers, args.in_flight, args.backends, args.rounds
    );
    println!(
        "{:<9} {:<23} {:>8} {:>10} {:>7} {:>8} {:>8} {:>10}",
        "Services", "load balancer", "conn/s", "conn/CPU s", "errors", "p50 ms", "p99 ms", "program s"
    );
    let mut traffic_rows = Vec::new();
    let mut ratio_rows = Vec::new();
    for &services in &args.services {
        let by_peer = traffic_runs(services, args, &cgroup)?;
        for (peer, f) in Peer::ALL.into_iter().zip(&by_peer) {
            println!(
                "{services:<9} {:<23} {:>8.0} {:>10.0} {:>7} {:>8.3} {:>8.3} {:>10.3}",
                peer.name(),
                f.rate.per_second(),
                f.rate.per_cpu_second(),
                f.rate.errors,
                f.latency["p50_ms"].as_f64().unwrap_or(f64::NAN),
                f.latency["p99_ms"].as_f64().unwrap_or(f64::NAN),
                f.program_s
            );
            if let Some(e) = &f.rate.first_error {
                println!("          first error: {e}");
            }
            traffic_rows.push(json!({
                "services": services,
                "load_balancer": peer.name(),
                "connections_per_s": f.rate.per_second(),
                "connections_per_cpu_s": f.rate.per_cpu_second(),
                "cpu_seconds": f.rate.cpu_seconds,
                "connections": f.rate.ok,
                "errors": f.rate.errors,
                "first_error": f.rate.first_error,
                "seconds": f.rate.seconds,
                "latency": f.latency,
                "program_s": f.program_s,
            }));
        }
        let i = &by_peer[2];
        let p99 = |f: &TrafficFigures| f.latency["p99_ms"].as_f64().unwrap_or(f64::NAN);
        let p50 = |f: &TrafficFigures| f.latency["p50_ms"].as_f64().unwrap_or(f64::NAN);
        let mut ratios = serde_json::Map::new();
        ratios.insert("services".into(), json!(services));
        for (w, key, label) in
            [(&by_peer[0], "waggle", "ratio waggle/iptables"), (&by_peer[1], "waggle_tc", "ratio tc only/iptables")]
        {
            let rate_ratio = w.rate.per_second() / i.rate.per_second();
            let cpu_ratio = w.rate.per_cpu_second() / i.rate.per_cpu_second();
            println!(
                "{services:<9} {label:<23} {:>7.2}x {:>9.2}x {:>7} {:>7.2}x {:>7.2}x {:>9.2}x",
                rate_ratio,
                cpu_ratio,
                "",
                p50(w) / p50(i),
                p99(w) / p99(i),
                w.program_s / i.program_s
            );
            ratios.insert(format!("connection_rate_{key}_over_iptables"), json!(rate_ratio));
            ratios.insert(format!("connections_per_cpu_s_{key}_over_iptables"), json!(cpu_ratio));
            ratios.insert(format!("p50_{key}_over_iptables"), json!(p50(w) / p50(i)));
            ratios.insert(format!("p99_{key}_over_iptables"), json!(p99(w) / p99(i)));
            ratios.insert(format!("program_time_{key}_over_iptables"), json!(w.program_s / i.program_s));
        }
        ratio_rows.push(Value::Object(ratios));
    }
    let load_after_traffic = load_average();
    cgroup.leave()?;
    drop(cgroup);

    let mut per_packet_rows = Vec::new();
    println!(
        "{:<30} {:>11} {:>11} {:>11} {:>11}",
        "per packet (PROG_TEST_RUN)", "tc SYN ns", "tc ACK ns", "xdp SYN ns", "xdp ACK ns"
    );
    for services in [10u32, 100_000] {
        let f = per_packet(services)?;
        println!(
            "{:<30} {:>11.1} {:>11.1} {:>11.1} {:>11.1}",
            format!("{services} Services"),
            f.tc_syn,
            f.tc_ack,
            f.xdp_syn,
            f.xdp_ack
        );
        per_packet_rows.push(json!({
            "services": services,
            "tc_syn_ns": f.tc_syn, "tc_ack_ns": f.tc_ack, "xdp_syn_ns": f.xdp_syn, "xdp_ack_ns": f.xdp_ack,
        }));
    }
    let mut programming = Vec::new();
    println!("{:<30} {:>11}", "programming (1 backend each)", "seconds");
    for services in [100u32, 1_000, 10_000] {
        let secs = programming_time(services)?;
        println!("{:<30} {secs:>11.3}", format!("{services} Services"));
        programming.push(json!({ "services": services, "seconds": secs }));
    }
    let leftovers = leftover_namespaces(&namespaces_before)?;
    anyhow::ensure!(leftovers.is_empty(), "namespaces left behind: {leftovers:?}");
    let report = json!({
        "benchmark": "lb",
        "iptables": variant,
        "workers": args.workers,
        "in_flight_per_worker": args.in_flight,
        "rounds": args.rounds,
        "backends": args.backends,
        "seconds_per_rate_run": args.seconds,
        "load_average_before": load_before,
        "load_average_after_traffic": load_after_traffic,
        "traffic": traffic_rows,
        "ratios": ratio_rows,
        "per_packet": per_packet_rows,
        "programming": programming,
        "namespaces_left_behind": leftovers,
    });
    report::write(&args.out, &report).with_context(|| format!("writing {}", args.out.display()))?;
    println!("load average (1/5/15 min): {load_before} before, {load_after_traffic} after the traffic runs");
    println!("figures written to {}", args.out.display());
    Ok(())
}
