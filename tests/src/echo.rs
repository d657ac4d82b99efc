//! TCP servers that answer every line with their name, inside a namespace,
//! and a client connection that asks "who are you?" on demand: how traffic
//! tests tell which backend a connection reached.

use std::io::{BufRead as _, BufReader, ErrorKind, Write as _};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

use crate::NetNs;

/// A name server per namespace on `port`; stopped on drop.
#[derive(Debug)]
pub struct NameServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl NameServers {
    /// Servers that answer `<name>`.
    pub fn start(backends: &[(&NetNs, String)], port: u16) -> anyhow::Result<Self> {
        Self::start_with(backends, port, false)
    }

    /// Servers that answer `<name> <client address as they see it>`.
    pub fn start_telling_peer(backends: &[(&NetNs, String)], port: u16) -> anyhow::Result<Self> {
        Self::start_with(backends, port, true)
    }

    fn start_with(backends: &[(&NetNs, String)], port: u16, tell_peer: bool) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (ns, name) in backends {
            let listener = ns.run(|| TcpListener::bind(("0.0.0.0", port)))??;
            listener.set_nonblocking(true)?;
            let (stop, name) = (stop.clone(), name.clone());
            threads.push(std::thread::spawn(move || serve(&listener, &name, tell_peer, &stop)));
        }
        Ok(Self { stop, threads })
    }
}

impl Drop for NameServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(listener: &TcpListener, name: &str, tell_peer: bool, stop: &Arc<AtomicBool>) {
    let mut conns = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let name = if tell_peer { format!("{name} {peer}") } else { name.to_string() };
                let stop = stop.clone();
                conns.push(std::thread::spawn(move || answer(stream, &name, &stop)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break,
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

fn answer(stream: TcpStream, name: &str, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let Ok(read) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read);
    let mut writer = stream;
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                line.clear();
                if writer.write_all(format!("{name}\n").as_bytes()).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// An open connection that asks its server's name on demand.
#[derive(Debug)]
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    pub fn open(ns: &NetNs, to: SocketAddrV4, timeout: Duration) -> anyhow::Result<Self> {
        let stream = ns
            .run(|| TcpStream::connect_timeout(&SocketAddr::V4(to), timeout))?
            .with_context(|| format!("connecting to {to}"))?;
        stream.set_read_timeout(Some(timeout))?;
        Ok(Self { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    pub fn who(&mut self) -> anyhow::Result<String> {
        self.writer.write_all(b"who\n")?;
        let mut line = String::new();
        self.reader.read_line(&mut line).context("reading the server's answer")?;
        anyhow::ensure!(!line.is_empty(), "connection closed");
        Ok(line.trim().to_string())
    }
}

/// One short connection: connect, ask, close.
pub fn ask_once(ns: &NetNs, to: SocketAddrV4, timeout: Duration) -> anyhow::Result<String> {
    Conn::open(ns, to, timeout)?.who()
}
