//! The API server's configuration, parsed once by the binary and passed down.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnet::Ipv4Net;

#[derive(Clone, Debug)]
pub struct ApiServerConfig {
    pub bind_address: IpAddr,
    pub secure_port: u16,
    pub data_dir: PathBuf,
    /// ClusterIPs come from here; the first address is the `kubernetes` Service's.
    pub service_cidr: Ipv4Net,
    /// Inclusive range NodePorts are allocated from.
    pub node_port_range: (u16, u16),
    /// Request bodies larger than this get 413.
    pub max_body_bytes: usize,
    /// Events the watch cache keeps per resource type for watches that
    /// resume from an older resourceVersion (older ones get 410 Expired).
    pub watch_cache_history: usize,
    /// The store's history older than this is compacted away, as upstream's
    /// API server compacts etcd (every 5 minutes, keeping the last interval).
    pub compaction_interval: std::time::Duration,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        Self {
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            secure_port: 6443,
            data_dir: PathBuf::from("/var/lib/waggle"),
            service_cidr: Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap_or_default(),
            node_port_range: (30000, 32767),
            max_body_bytes: 3 * 1024 * 1024,
            watch_cache_history: 10_000,
            compaction_interval: std::time::Duration::from_secs(300),
        }
    }
}

impl ApiServerConfig {
    /// The first usable address of the service CIDR (the `kubernetes` Service).
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        let base = u32::from(self.service_cidr.network());
        Ipv4Addr::from(base + 1)
    }
}
