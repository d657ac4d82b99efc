//! A node's network for Service load-balancing tests and benchmarks: a
//! "node" namespace with a pod bridge, pod namespaces on veths, an uplink to
//! an "external" namespace, echo servers that say who they are, and clients.
//!
//! ```text
//!  pod 10.244.0.x ─┐                               ┌─ external 10.9.0.2
//!  pod 10.244.0.y ─┤ br0 10.244.0.1 (node) ────────┤  uplink 10.9.0.1
//! ```
//!
//! Every namespace is a [`NetNs`]: unique name, deleted on drop with every
//! link inside it.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

use crate::NetNs;

/// The pod bridge's address: every pod's default gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The node's address on its uplink.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// The external namespace's address behind the uplink.
pub const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
/// Name of the node's uplink interface.
pub const UPLINK: &str = "uplink";
/// How long clients wait for a connection or an answer.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Sets sysctls inside a namespace.
pub fn sysctl(ns: &NetNs, settings: &[&str]) -> anyhow::Result<()> {
    for s in settings {
        ns.exec("sysctl", &["-qw", s])?;
    }
    Ok(())
}

/// The node namespace: bridge `br0` with [`GATEWAY`], forwarding on,
/// redirects off, no reverse-path filter. accept_local: NodePort replies
/// leave with the node's own address as source.
pub fn node() -> anyhow::Result<NetNs> {
    let node = NetNs::new("node")?;
    node.ip(&["link", "add", "br0", "type", "bridge"])?;
    node.ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", "br0"])?;
    node.ip(&["link", "set", "br0", "up"])?;
    sysctl(
        &node,
        &[
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.conf.br0.rp_filter=0",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.br0.send_redirects=0",
            "net.ipv4.conf.all.accept_local=1",
            "net.ipv4.conf.br0.accept_local=1",
        ],
    )?;
    Ok(node)
}

/// An "external" namespace behind the node's uplink ([`UPLINK`], holding
/// [`NODE_IP`]); its default route is the node.
///
/// Its end of the link computes full TCP/UDP checksums, as frames arriving
/// from a real wire carry them: a veth peer would otherwise hand over
/// `CHECKSUM_PARTIAL` frames, which an XDP program cannot tell apart.
pub fn external(node: &NetNs) -> anyhow::Result<NetNs> {
    let external = NetNs::new("ext")?;
    node.ip(&["link", "add", UPLINK, "type", "veth", "peer", "name", "eth0", "netns", external.name()])?;
    node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", UPLINK])?;
    node.ip(&["link", "set", UPLINK, "up"])?;
    external.ip(&["addr", "add", &format!("{EXTERNAL_IP}/24"), "dev", "eth0"])?;
    external.ip(&["link", "set", "eth0", "up"])?;
    external.ip(&["route", "add", "default", "via", &NODE_IP.to_string()])?;
    external.run(|| disable_tx_checksum_offload("eth0"))??;
    Ok(external)
}

/// A pod namespace whose `eth0` is a veth to `br0` in `node`, with address
/// `addr` (CIDR); the host side is named `host`.
pub fn attach_pod(node: &NetNs, pod: &NetNs, host: &str, addr: &str) -> anyhow::Result<()> {
    node.ip(&["link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pod.name()])?;
    node.ip(&["link", "set", host, "master", "br0", "up"])?;
    pod.ip(&["addr", "add", addr, "dev", "eth0"])?;
    pod.ip(&["link", "set", "eth0", "up"])?;
    pod.ip(&["route", "add", "default", "via", &GATEWAY.to_string()])?;
    Ok(())
}

/// `ethtool -K <iface> tx off` in the calling thread's namespace, through
/// the ethtool ioctl (the ethtool tool is not installed everywhere).
pub fn disable_tx_checksum_offload(iface: &str) -> anyhow::Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_STXCSUM: u32 = 0x17;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    anyhow::ensure!(iface.len() < libc::IFNAMSIZ, "interface name {iface} too long");
    let mut value = EthtoolValue { cmd: ETHTOOL_STXCSUM, data: 0 };
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], data: &mut value, _pad: [0; 16] };
    req.name[..iface.len()].copy_from_slice(iface.as_bytes());
    let socket = UdpSocket::bind("0.0.0.0:0").context("opening a socket for the ethtool ioctl")?;
    // SAFETY: a valid socket fd and a properly laid out `ifreq` whose data
    // pointer outlives the call.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&socket), SIOCETHTOOL, &mut req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("turning off tx checksum offload on {iface}"));
    }
    Ok(())
}

/// TCP and UDP servers (ports 8080 and 5353) that answer every line /
/// datagram with `<name> <peer address>`: tests see which backend answered
/// and from which address it saw the client.
#[derive(Debug)]
pub struct Servers {
    /// The TCP side: [`crate::echo`]'s servers, telling the peer too.
    _tcp: crate::echo::NameServers,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn start(backends: &[(NetNs, String)]) -> anyhow::Result<Self> {
        let named: Vec<(&NetNs, String)> = backends.iter().map(|(ns, name)| (ns, name.clone())).collect();
        let tcp = crate::echo::NameServers::start_telling_peer(&named, 8080)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (ns, name) in backends {
            let udp = ns.run(|| UdpSocket::bind("0.0.0.0:5353"))??;
            udp.set_read_timeout(Some(Duration::from_millis(50)))?;
            let (stop_udp, name_udp) = (stop.clone(), name.clone());
            threads.push(std::thread::spawn(move || serve_udp(&udp, &name_udp, &stop_udp)));
        }
        Ok(Self { _tcp: tcp, stop, threads })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_udp(socket: &UdpSocket, name: &str, stop: &Arc<AtomicBool>) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(format!("{name} {from}").as_bytes(), from);
        }
    }
}

/// Who answered, and the client address it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    pub peer: SocketAddrV4,
}

impl Answer {
    fn parse(line: &str) -> anyhow::Result<Self> {
        let (name, peer) = line.trim().split_once(' ').with_context(|| format!("unexpected answer {line:?}"))?;
        Ok(Self { name: name.to_string(), peer: peer.parse().with_context(|| format!("peer in {line:?}"))? })
    }
}

/// An open connection to a Service that asks "who are you?" on demand.
#[derive(Debug)]
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    pub fn open(ns: &NetNs, to: SocketAddrV4) -> anyhow::Result<Self> {
        let stream = ns
            .run(|| TcpStream::connect_timeout(&SocketAddr::V4(to), TIMEOUT))?
            .with_context(|| format!("connecting to {to}"))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        Ok(Self { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// The peer address the socket reports (`getpeername()`).
    pub fn peer(&self) -> std::io::Result<SocketAddr> {
        self.writer.peer_addr()
    }

    /// The answering backend's name.
    pub fn who(&mut self) -> anyhow::Result<String> {
        Ok(self.ask()?.name)
    }

    pub fn ask(&mut self) -> anyhow::Result<Answer> {
        self.writer.write_all(b"who\n")?;
        let mut line = String::new();
        self.reader.read_line(&mut line).context("reading the backend's answer")?;
        anyhow::ensure!(!line.is_empty(), "connection closed");
        Answer::parse(&line)
    }
}

/// One short connection: connect, ask, close; the backend's name.
pub fn ask_once(ns: &NetNs, to: SocketAddrV4) -> anyhow::Result<String> {
    Conn::open(ns, to)?.who()
}

/// One UDP question to `to` from a connected socket: the kernel only
/// delivers datagrams from `to`, so an answer proves the reverse NAT.
pub fn ask_udp(ns: &NetNs, to: SocketAddrV4) -> anyhow::Result<String> {
    ns.run(|| -> anyhow::Result<String> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(to)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.send(b"who")?;
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf).context("waiting for the UDP answer")?;
        Ok(Answer::parse(&String::from_utf8_lossy(&buf[..n]))?.name)
    })?
}

/// Every rule line `iptables-save` and `nft list ruleset` print in `ns`.
pub fn firewall_rules(ns: &NetNs) -> anyhow::Result<String> {
    let ipt = ns.exec("iptables-save", &[])?;
    let nft = ns.exec("nft", &["list", "ruleset"])?;
    Ok(format!("{}{}", String::from_utf8_lossy(&ipt.stdout), String::from_utf8_lossy(&nft.stdout)))
}
