//! Store members as real processes on loopback: `waggle store` or etcd,
//! which take the same flags. Ports are picked free, every member has its
//! own data dir under one temporary dir, and every process is killed when
//! the harness is dropped, even when the test fails.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Ports below the kernel's ephemeral range (32768 and up by default), so
/// the members' own outgoing connections never take a port a member is
/// about to listen on.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port nobody listens on, held until the listener is dropped.
fn reserve_port() -> anyhow::Result<std::net::TcpListener> {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
    let mut x = u64::from(seed) ^ (u64::from(std::process::id()) << 20);
    for _ in 0..1000 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let port = PORTS.start + u16::try_from((x >> 33) % u64::from(PORTS.end - PORTS.start))?;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return Ok(l);
        }
    }
    bail!("no free port in {PORTS:?}")
}

/// One member's name and ports.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
}

impl MemberSpec {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// A cluster of store processes (not started until asked).
#[derive(Debug)]
pub struct StoreProcs {
    bin: PathBuf,
    extra: Vec<String>,
    pub dir: tempfile::TempDir,
    pub members: Vec<MemberSpec>,
    children: Vec<Option<Child>>,
}

impl StoreProcs {
    /// `size` members of `bin` (`waggle` runs as `waggle store`; any other
    /// binary, e.g. `etcd`, gets the flags directly), each also given `extra` flags.
    pub fn new(bin: &Path, size: usize, extra: &[&str]) -> anyhow::Result<Self> {
        // Every port stays reserved until all are chosen, so none repeats.
        let mut held = Vec::new();
        let mut port = || -> anyhow::Result<u16> {
            let l = reserve_port()?;
            let p = l.local_addr()?.port();
            held.push(l);
            Ok(p)
        };
        let members = (0..size)
            .map(|i| Ok(MemberSpec { name: format!("m{i}"), client_port: port()?, peer_port: port()? }))
            .collect::<anyhow::Result<Vec<_>>>()?;
        drop(held);
        Ok(Self {
            bin: bin.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            dir: tempfile::Builder::new().prefix("store-procs-").tempdir()?,
            children: members.iter().map(|_| None).collect(),
            members,
        })
    }

    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.members[i].name))
    }

    /// The member's output so far (every run of it, appended).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// The command line of member `i`, for `--initial-cluster-state new`.
    fn command(&self, i: usize) -> Command {
        let m = &self.members[i];
        let cluster: Vec<String> = self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect();
        let mut cmd = Command::new(&self.bin);
        if self.bin.file_name().is_some_and(|n| n == "waggle") {
            cmd.arg("store");
        }
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(["--listen-client-urls", &m.client_url(), "--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url(), "--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(&self.extra);
        cmd
    }

    /// Adds a member (not started) with fresh ports; returns its index.
    /// Start it with [`StoreProcs::start_with`] and `--initial-cluster-state existing`
    /// once the cluster knows it (`etcdctl member add`).
    pub fn push_member(&mut self) -> anyhow::Result<usize> {
        let i = self.members.len();
        let (client, peer) = (reserve_port()?, reserve_port()?);
        self.members.push(MemberSpec {
            name: format!("m{i}"),
            client_port: client.local_addr()?.port(),
            peer_port: peer.local_addr()?.port(),
        });
        self.children.push(None);
        Ok(i)
    }

    /// Starts (or restarts) member `i` and waits until its client port accepts connections.
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_with(i, &[])
    }

    /// Starts member `i` with more flags.
    pub fn start_with(&mut self, i: usize, more: &[&str]) -> anyhow::Result<()> {
        if self.children[i].is_some() {
            bail!("member {} is already running", self.members[i].name);
        }
        self.spawn(i, more)?;
        self.wait_listening(i, Duration::from_secs(20))
    }

    /// Spawns member `i` (logging to its log file) without waiting for it.
    fn spawn(&mut self, i: usize, more: &[&str]) -> anyhow::Result<()> {
        let log = OpenOptions::new().create(true).append(true).open(self.log_path(i))?;
        let child = self
            .command(i)
            .args(more)
            .env("RUST_LOG", std::env::var("STORE_LOG").unwrap_or_else(|_| "info".to_owned()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.children[i] = Some(child);
        Ok(())
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        // Spawn every member before waiting, so they find each other.
        for i in 0..self.members.len() {
            self.spawn(i, &[])?;
        }
        for i in 0..self.members.len() {
            self.wait_listening(i, Duration::from_secs(20))?;
        }
        Ok(())
    }

    fn wait_listening(&mut self, i: usize, within: Duration) -> anyhow::Result<()> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.members[i].client_port).into();
        let deadline = Instant::now() + within;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.children[i].as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.children[i] = None;
                bail!("member {} exited with {status}:\n{}", self.members[i].name, self.log(i));
            }
            if Instant::now() > deadline {
                bail!("member {} does not listen on {addr} after {within:?}:\n{}", self.members[i].name, self.log(i));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` member `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How member `i` exited, if it has (it is then reaped).
    pub fn exit_status(&mut self, i: usize) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let Some(child) = self.children[i].as_mut() else { return Ok(None) };
        let status = child.try_wait()?;
        if status.is_some() {
            self.children[i] = None;
        }
        Ok(status)
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }
}

impl Drop for StoreProcs {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}
