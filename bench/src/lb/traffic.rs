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
/// How long a client or server waits for its peer before giving up.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The node, the client and the backends with their servers. Dropping it
/// stops the servers and deletes every namespace (and with them every link,
/// route and rule inside).
pub struct Topology {
    servers: Option<Servers>,
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
        let mut listeners = Vec::new();
        for i in 0..backends {
            let ns = NetNs::new(&format!("bbe{i}"))?;
            attach_pod(&node, &ns, &format!("hbe{}", i + 1), &format!("{}/24", backend_ip(i)))?;
            sysctl(&ns, &["net.core.somaxconn=4096", "net.ipv4.tcp_max_syn_backlog=4096"])?;
            listeners.push(ns.run(|| TcpListener::bind(("0.0.0.0", BACKEND_PORT)))??);
            pods.push(ns);
        }
        let servers = Servers::start(listeners)?;
        Ok(Self { servers: Some(servers), client, _backends: pods, node })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(s) = self.servers.take() {
            s.stop();
        }
    }
}

/// Every backend's TCP server on one event-loop thread (a single-threaded
/// tokio runtime): one request per connection, answered, then closed after
/// the client closed. One thread for all backends keeps the servers' thread
/// wake-ups out of what the benchmark measures, on both sides alike.
///
/// The client closes first, keeping TIME_WAIT on the client per (client
/// port, VIP): a client port is then never reused towards a backend that
/// still holds the previous connection in TIME_WAIT. (A server-closes-first
/// run makes clients reuse ports across VIPs at once; the backend then sees a
/// new SYN on a TIME_WAIT tuple, which netfilter's NAT hides by remapping the
/// source port and waggle's DNAT does not.)
struct Servers {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: JoinHandle<()>,
}

impl Servers {
    fn start(listeners: Vec<TcpListener>) -> anyhow::Result<Self> {
        for l in &listeners {
            l.set_nonblocking(true)?;
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let mut accepting = tokio::task::JoinSet::new();
                for l in listeners {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(listener) => {
                            accepting.spawn(serve(listener));
                        }
                        Err(e) => eprintln!("a backend server could not start: {e}"),
                    }
                }
                let _ = stopped.await;
                accepting.abort_all();
            });
        });
        Ok(Self { stop: Some(stop), thread })
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.thread.join();
    }
}

async fn serve(listener: tokio::net::TcpListener) {
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(IO_TIMEOUT, answer(stream)).await;
            });
        }
    }
}

async fn answer(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = [0u8; 512];
    let mut got = 0;
    while !buf[..got].ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut buf[got..]).await?;
        if n == 0 || got + n == buf.len() {
            return Ok(());
        }
        got += n;
    }
    stream.write_all(RESPONSE).await?;
    // Wait for the client's FIN, then close.
    while stream.read(&mut buf).await? != 0 {}
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
#[derive(Default)]
pub struct Rate {
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    /// CPU time (user + system) this process used meanwhile: clients,
    /// servers, and the kernel's packet path run in their context (veth
    /// delivery runs in the sender's softirq), load balancing included.
    pub cpu_seconds: f64,
    pub first_error: Option<String>,
}

impl Rate {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.seconds
    }

    /// Connections per CPU second of this process: what a connection costs,
    /// whatever share of the shared machine the run got.
    pub fn per_cpu_second(&self) -> f64 {
        self.ok as f64 / self.cpu_seconds
    }

    /// Adds another run's figures (one more round of the same peer).
    pub fn add(&mut self, other: Rate) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.seconds += other.seconds;
        self.cpu_seconds += other.cpu_seconds;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// The async twin of [`transaction`], for the rate runs.
async fn transaction_async(to: SocketAddrV4) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let work = async {
        let mut s = tokio::net::TcpStream::connect(to).await?;
        s.write_all(REQUEST).await?;
        let mut resp = [0u8; RESPONSE.len()];
        s.read_exact(&mut resp).await?;
        anyhow::ensure!(resp == RESPONSE, "unexpected response {resp:?}");
        anyhow::Ok(())
    };
    tokio::time::timeout(IO_TIMEOUT, work).await.context("timed out")?
}

/// `workers` client threads in the client namespace (each a single-threaded
/// event loop), each keeping `in_flight` short connections going at once,
/// back to back, for `duration`, spread over `vips` (every Service gets
/// traffic, as on a busy node). An event loop per thread, not a thread per
/// connection: the clients' own scheduling cost stays small next to the
/// connections', on both sides alike.
pub fn connection_rate(
    client: &NetNs,
    vips: &[SocketAddrV4],
    workers: usize,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<Rate> {
    anyhow::ensure!(!vips.is_empty(), "no VIP to connect to");
    let start = Instant::now();
    let cpu_start = process_cpu_seconds();
    let results: Vec<(u64, u64, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    client.run(|| -> anyhow::Result<(u64, u64, Option<String>)> {
                        // Sockets are created by this thread, in the client namespace.
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                        Ok(rt.block_on(async {
                            let begin = Instant::now();
                            // Polled together by this thread's one task: no spawn,
                            // so the futures may borrow `vips`.
                            let conns = (0..in_flight).map(|c| async move {
                                let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
                                let stride = workers * in_flight;
                                let mut i = (w * in_flight + c) * 7919;
                                while begin.elapsed() < duration {
                                    match transaction_async(vips[i % vips.len()]).await {
                                        Ok(()) => ok += 1,
                                        Err(e) => {
                                            errors += 1;
                                            first_error.get_or_insert_with(|| format!("{e:#}"));
                                        }
                                    }
                                    i += stride;
                                }
                                (ok, errors, first_error)
                            });
                            let (mut ok, mut errors, mut first_error) = (0, 0, None);
                            for (o, e, f) in futures::future::join_all(conns).await {
                                ok += o;
                                errors += e;
                                first_error = first_error.or(f);
                            }
                            (ok, errors, first_error)
                        }))
                    })?
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a client worker panicked"))?)
            .collect::<anyhow::Result<_>>()
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds() - cpu_start;
    let mut rate = Rate { ok: 0, errors: 0, seconds, cpu_seconds, first_error: None };
    for (ok, errors, first) in results {
        rate.ok += ok;
        rate.errors += errors;
        if rate.first_error.is_none() {
            rate.first_error = first;
        }
    }
    Ok(rate)
}

/// User + system CPU seconds this process used so far.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
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
