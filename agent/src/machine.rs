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

/// A Kubernetes quantity as a number (`500m` → 0.5, `64Mi` → 67108864).
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        _ => return None,
    };
    Some(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_with_binary_and_milli_suffixes_parse() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("64Mi"), Some(67108864.0));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1x"), None);
    }

    #[test]
    fn the_machine_has_cpus_and_memory() {
        let m = Machine::read();
        assert!(m.cpus >= 1);
        assert!(m.memory_kib > 0);
    }
}
