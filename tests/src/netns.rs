//! Named network namespaces and veth pairs, deleted on drop.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};

use crate::names;

/// A named network namespace (`/var/run/netns/<name>`), deleted on drop
/// together with every interface inside it.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `wgt-<prefix>-<unique>` with its loopback up.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let name = names::unique(&format!("wgt{prefix}"));
        run(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, as an OCI spec or a CNI runtime names it.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `ip -n <ns> <args…>`; fails with the command's stderr.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs a program inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        run(Command::new("ip").args(["netns", "exec", &self.name, program]).args(args))
    }

    /// A command that runs `program` inside the namespace (`nsenter --net`),
    /// for long-running processes the caller spawns and supervises.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display())).arg(program);
        cmd
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets opened and
    /// interfaces named inside `f` belong to the namespace.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> anyhow::Result<R> {
        let file = File::open(self.path()).with_context(|| format!("opening {}", self.path().display()))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(&file, CloneFlags::CLONE_NEWNET).context("entering the network namespace")?;
                    Ok(f())
                })
                .join()
                .map_err(|panic| anyhow::anyhow!("thread inside {} panicked: {panic:?}", self.name))?
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(err) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("cleanup: deleting network namespace {}: {err:#}", self.name);
        }
    }
}

/// A veth pair whose ends live in two namespaces, each with an IPv4 address.
/// It disappears with its namespaces.
#[derive(Debug)]
pub struct VethPair {
    pub a: String,
    pub b: String,
}

impl VethPair {
    /// Creates the pair with end `a` in `ns_a` holding `addr_a` (CIDR) and end
    /// `b` in `ns_b` holding `addr_b`, both up.
    pub fn new(ns_a: &NetNs, addr_a: &str, ns_b: &NetNs, addr_b: &str) -> anyhow::Result<Self> {
        let a = names::unique_ifname("wgva");
        let b = names::unique_ifname("wgvb");
        ns_a.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b, "netns", ns_b.name()])
            .with_context(|| format!("creating veth pair {a}/{b}"))?;
        ns_a.ip(&["addr", "add", addr_a, "dev", &a])?;
        ns_b.ip(&["addr", "add", addr_b, "dev", &b])?;
        ns_a.ip(&["link", "set", &a, "up"])?;
        ns_b.ip(&["link", "set", &b, "up"])?;
        Ok(Self { a, b })
    }
}

/// Runs a command, turning a non-zero exit into an error carrying its stderr.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// A veth pair in the test process's own (host) namespace (this kernel has no
/// dummy links), one end holding an address of 198.18.0.0/15 (set aside for
/// tests), for a service that must be reached on an address other than
/// loopback; deleted on drop.
#[derive(Debug)]
pub struct HostLink {
    pub name: String,
    pub ip: std::net::Ipv4Addr,
}

impl HostLink {
    pub fn new() -> anyhow::Result<Self> {
        let name = names::unique_ifname("wgh");
        let n = u32::from_str_radix(&names::unique_suffix(), 16)?;
        let ip = std::net::Ipv4Addr::new(198, 18 + (n >> 16 & 1) as u8, (n >> 8) as u8, (n as u8).clamp(1, 254));
        let peer = format!("{name}p");
        run(Command::new("ip").args(["link", "add", &name, "type", "veth", "peer", "name", &peer]))?;
        let link = Self { name, ip };
        run(Command::new("ip").args(["addr", "add", &format!("{ip}/32"), "dev", &link.name]))?;
        run(Command::new("ip").args(["link", "set", &link.name, "up"]))?;
        Ok(link)
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        if let Err(err) = run(Command::new("ip").args(["link", "del", &self.name])) {
            eprintln!("cleanup: deleting veth {}: {err:#}", self.name);
        }
    }
}
