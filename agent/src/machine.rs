//! What the node is made of, read from /proc and the interfaces.

use std::net::IpAddr;

/// Capacity and identity of this machine.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpus: usize,
    pub memory_kib: u64,
    pub hostname: String,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
}

impl Machine {
    pub fn read() -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0);
        let trimmed = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).unwrap_or_default();
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned()))
            })
            .unwrap_or_else(|| "Linux".into());
        Self {
            cpus,
            memory_kib,
            hostname: trimmed("/proc/sys/kernel/hostname"),
            kernel_version: trimmed("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: trimmed("/etc/machine-id"),
        }
    }
}

/// The first global IPv4 address of an interface that is up, else loopback.
pub fn default_node_ip() -> IpAddr {
    let fallback = IpAddr::from([127, 0, 0, 1]);
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return fallback };
    for a in addrs {
        if !a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)
            || a.flags.contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
        {
            continue;
        }
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            return IpAddr::V4(sin.ip());
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_has_cpus_and_memory() {
        let m = Machine::read();
        assert!(m.cpus >= 1);
        assert!(m.memory_kib > 0);
    }
}
