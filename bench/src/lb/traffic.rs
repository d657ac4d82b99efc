//! Real short connections through a VIP: the namespaces, the backend
//! servers, and the client workers.
//!
//! ```text
//!  client 10.245.0.2 ── hcli 10.245.0.1 ┐ node ┌ br0 10.244.0.1 ── backends 10.244.0.11…
//! ```
//!
//! The client is routed (not bridged) to the node, so that with iptables the
//! backends' replies cross the node's IP layer, where conntrack undoes the
//! DNAT, as on a kube-proxy node; waggle's `tc_lb` translates them on the
//! backends' veths. The same topology serves both.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use waggle_tests::NetNs;
use waggle_tests::lbnet::{self, attach_pod, sysctl};

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 245, 0, 2);
pub const BACKEND_PORT: u16 = 8080;
/// Host-side interfaces that carry Service traffic (waggle attaches `tc_lb`).
pub fn lb_interfaces(backends: usize) -> Vec<String> {
    std::iter::once("hcli".to_string()).chain((1..=backends).map(|i| format!("hbe{i}"))).collect()
}

pub fn backend_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, 11 + i as u8)
}

const REQUEST: &[u8] = b"GET / HTTP/1.0\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
/// Accepting threads per backend.
const ACCEPTORS: usize = 2;

/// The node, the client and the backends with their servers. Dropping it
/// stops the servers and deletes every namespace (and with them every link,
/// route and rule inside).
pub struct Topology {
    servers: Vec<Server>,
    pub client: NetNs,
    /// Held for their lifetime: deleted (with their servers' sockets) on drop.
    _backends: Vec<NetNs>,
    pub node: NetNs,
}

impl Topology {
    pub fn new(backends: usize) -> anyhow::Result<Self> {
        let node = lbnet::node()?;
        let client = NetNs::new("bcli")?;
        node.ip(&["link", "add", "hcli", "type", "veth", "peer", "name", "eth0", "netns", client.name()])?;
        node.ip(&["addr", "add", "10.245.0.1/24", "dev", "hcli"])?;
        node.ip(&["link", "set", "hcli", "up"])?;
        client.ip(&["addr", "add", &format!("{CLIENT_IP}/24"), "dev", "eth0"])?;
        client.ip(&["link", "set", "eth0", "up"])?;
        client.ip(&["route", "add", "default", "via", "10.245.0.1"])?;
        // Many ports, and TIME_WAIT ports reusable towards the same VIP after
        // a second: the client closes first, so its ports sit in TIME_WAIT.
        sysctl(&client, &["net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"])?;
        sysctl(&node, &["net.ipv4.conf.hcli.rp_filter=0"])?;
        let mut pods = Vec::new();
        let mut servers = Vec::new();
        for i in 0..backends {
            let ns = NetNs::new(&format!("bbe{i}"))?;
            attach_pod(&node, &ns, &format!("hbe{}", i + 1), &format!("{}/24", backend_ip(i)))?;
            sysctl(&ns, &["net.core.somaxconn=4096", "net.ipv4.tcp_max_syn_backlog=4096"])?;
            servers.push(Server::start(&ns)?);
            pods.push(ns);
        }
        Ok(Self { servers, client, _backends: pods, node })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.stop();
        }
    }
}

/// A TCP server that answers one request per connection and closes after
/// the client did. The client closing first keeps TIME_WAIT on the client,
/// per (client port, VIP): a client port is then never reused towards a
/// backend that still holds the previous connection in TIME_WAIT. (A
/// server-closes-first run makes clients reuse ports across VIPs at once; the
/// backend then sees a new SYN on a TIME_WAIT tuple, which netfilter's NAT
/// hides by remapping the source port and waggle's DNAT does not.)
struct Server {
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &NetNs) -> anyhow::Result<Self> {
        let listener = Arc::new(ns.run(|| TcpListener::bind(("0.0.0.0", BACKEND_PORT)))??);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..ACCEPTORS)
            .map(|_| {
                let (listener, stop) = (listener.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((stream, _)) = listener.accept() {
                            let _ = answer(stream);
                        }
                    }
                })
            })
            .collect();
        Ok(Self { listener, stop, threads })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // shutdown() on a listening socket wakes every thread blocked in accept().
        // SAFETY: a valid socket fd owned by `self.listener`.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 512];
    let mut got = 0;
    while !buf[..got].ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut buf[got..])?;
        if n == 0 || got + n == buf.len() {
            return Ok(());
        }
        got += n;
    }
    stream.write_all(RESPONSE)?;
    // Wait for the client's FIN, then close.
    while stream.read(&mut buf)? != 0 {}
    Ok(())
}

/// One short connection: connect, request, read the whole response, close.
fn transaction(to: SocketAddrV4) -> anyhow::Result<()> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(to), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(REQUEST)?;
    let mut resp = [0u8; RESPONSE.len()];
    s.read_exact(&mut resp)?;
    anyhow::ensure!(resp == RESPONSE, "unexpected response {resp:?}");
    Ok(())
}

/// What a run of short connections achieved.
pub struct Rate {
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    pub first_error: Option<String>,
}

impl Rate {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
}

/// `workers` clients in the client namespace, each opening short
/// connections back to back for `duration`, spreading them over `vips`
/// (every Service gets traffic, as on a busy node).
pub fn connection_rate(
    client: &NetNs,
    vips: &[SocketAddrV4],
    workers: usize,
    duration: Duration,
) -> anyhow::Result<Rate> {
    anyhow::ensure!(!vips.is_empty(), "no VIP to connect to");
    let start = Instant::now();
    let results: Vec<(u64, u64, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    client.run(|| {
                        let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
                        let mut i = w * 7919;
                        let begin = Instant::now();
                        while begin.elapsed() < duration {
                            match transaction(vips[i % vips.len()]) {
                                Ok(()) => ok += 1,
                                Err(e) => {
                                    errors += 1;
                                    first_error.get_or_insert_with(|| format!("{e:#}"));
                                }
                            }
                            i += workers;
                        }
                        (ok, errors, first_error)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a client worker panicked"))?)
            .collect::<anyhow::Result<_>>()
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let mut rate = Rate { ok: 0, errors: 0, seconds, first_error: None };
    for (ok, errors, first) in results {
        rate.ok += ok;
        rate.errors += errors;
        if rate.first_error.is_none() {
            rate.first_error = first;
        }
    }
    Ok(rate)
}

/// Latency of sequential short connections (one client, nothing queued
/// behind it), spread over `vips`.
pub fn latencies(client: &NetNs, vips: &[SocketAddrV4], duration: Duration) -> anyhow::Result<Vec<Duration>> {
    client.run(|| -> anyhow::Result<Vec<Duration>> {
        let mut samples = Vec::new();
        let begin = Instant::now();
        let mut i = 0;
        while begin.elapsed() < duration {
            let t = Instant::now();
            transaction(vips[i % vips.len()]).with_context(|| format!("connection {i}"))?;
            samples.push(t.elapsed());
            i += 1;
        }
        Ok(samples)
    })?
}
