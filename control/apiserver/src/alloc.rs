//! ClusterIP and NodePort allocation. The sets of used addresses and ports are
//! loaded from the stored Services on first use and kept in memory, so an
//! allocation costs O(1) amortised, not a scan of every Service.
//!
//! One API server allocates; several API servers would need the allocation
//! state in the store (as upstream keeps its bitmaps) — not done yet.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};
use tokio::sync::Mutex;
use waggle_api::status::Cause;

use crate::config::ApiServerConfig;

#[derive(Debug, Default)]
struct Used {
    loaded: bool,
    ips: HashSet<u32>,
    ports: HashSet<u16>,
    next_ip: u32,
    next_port: u16,
}

/// Allocates ClusterIPs and NodePorts for Services.
#[derive(Debug)]
pub struct Allocator {
    first: u32,
    last: u32,
    ports: (u16, u16),
    used: Mutex<Used>,
}

/// What a Service holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Held {
    pub ip: Option<u32>,
    pub ports: Vec<u16>,
}

pub fn held_by(svc: &Value) -> Held {
    let ip =
        svc.pointer("/spec/clusterIP").and_then(Value::as_str).and_then(|s| s.parse::<Ipv4Addr>().ok()).map(u32::from);
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().filter_map(|p| p.get("nodePort")?.as_u64()).filter_map(|p| u16::try_from(p).ok()).collect())
        .unwrap_or_default();
    Held { ip, ports }
}

impl Allocator {
    pub fn new(config: &ApiServerConfig) -> Self {
        let net = config.service_cidr;
        let first = u32::from(net.network()) + 1;
        let last = u32::from(net.broadcast()).saturating_sub(1);
        Self { first, last, ports: config.node_port_range, used: Mutex::new(Used::default()) }
    }

    /// Loads what existing Services hold (once).
    pub async fn load_once<F, Fut>(&self, existing: F) -> Result<(), waggle_api::StatusError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Value>, waggle_api::StatusError>>,
    {
        let mut used = self.used.lock().await;
        if used.loaded {
            return Ok(());
        }
        for svc in existing().await? {
            let held = held_by(&svc);
            if let Some(ip) = held.ip {
                used.ips.insert(ip);
            }
            used.ports.extend(held.ports);
        }
        used.loaded = true;
        Ok(())
    }

    /// Fills in `spec.clusterIP(s)` and NodePorts of a new Service, or
    /// reports the requested ones that are taken or out of range.
    pub async fn allocate(&self, svc: &mut Value, reserved_ip: Option<u32>) -> Result<Held, Vec<Cause>> {
        let mut used = self.used.lock().await;
        let ty = svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_owned();
        if ty == "ExternalName" {
            return Ok(Held::default());
        }
        let mut held = Held::default();
        let mut causes = Vec::new();
        let requested = svc.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or_default().to_owned();
        if requested != "None" {
            let ip = if requested.is_empty() {
                self.next_free_ip(&mut used)
            } else {
                match requested.parse::<Ipv4Addr>().map(u32::from) {
                    Ok(ip) if ip < self.first || ip > self.last => {
                        causes.push(invalid_ip(&requested, "the provided IP is not in the valid range"));
                        None
                    }
                    Ok(ip) if used.ips.contains(&ip) && Some(ip) != reserved_ip => {
                        causes.push(invalid_ip(&requested, "provided IP is already allocated"));
                        None
                    }
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        causes.push(invalid_ip(&requested, "must be a valid IP address"));
                        None
                    }
                }
            };
            match ip {
                Some(ip) => {
                    held.ip = Some(ip);
                    let text = Ipv4Addr::from(ip).to_string();
                    svc["spec"]["clusterIP"] = json!(text);
                    svc["spec"]["clusterIPs"] = json!([text]);
                }
                None if causes.is_empty() => causes.push(invalid_ip("", "range is full")),
                None => {}
            }
        } else {
            svc["spec"]["clusterIPs"] = json!(["None"]);
        }
        svc["spec"]["ipFamilies"] = json!(["IPv4"]);
        if svc.pointer("/spec/ipFamilyPolicy").is_none() {
            svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            let count = svc.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
            for i in 0..count {
                let port = &mut svc["spec"]["ports"][i];
                match port.get("nodePort").and_then(Value::as_u64) {
                    Some(p) => {
                        let ok = u16::try_from(p).ok().filter(|p| (self.ports.0..=self.ports.1).contains(p));
                        match ok {
                            Some(p) if used.ports.contains(&p) || held.ports.contains(&p) => {
                                causes.push(invalid_port(i, u64::from(p), "provided port is already allocated"))
                            }
                            Some(p) => held.ports.push(p),
                            None => causes.push(invalid_port(
                                i,
                                p,
                                &format!(
                                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                                    self.ports.0, self.ports.1
                                ),
                            )),
                        }
                    }
                    None => match self.next_free_port(&used, &held.ports) {
                        Some(p) => {
                            port["nodePort"] = json!(p);
                            held.ports.push(p);
                        }
                        None => causes.push(invalid_port(i, 0, "range is full")),
                    },
                }
            }
        }
        if !causes.is_empty() {
            return Err(causes);
        }
        if let Some(ip) = held.ip {
            used.ips.insert(ip);
        }
        used.ports.extend(held.ports.iter().copied());
        Ok(held)
    }

    /// Returns what a deleted (or failed) Service held.
    pub async fn release(&self, held: &Held) {
        let mut used = self.used.lock().await;
        if let Some(ip) = held.ip {
            used.ips.remove(&ip);
        }
        for p in &held.ports {
            used.ports.remove(p);
        }
    }

    fn next_free_ip(&self, used: &mut Used) -> Option<u32> {
        // The first address belongs to the `kubernetes` Service; hand out the
        // rest round-robin so a released address is not reused at once.
        let size = self.last.checked_sub(self.first)?;
        for i in 0..size {
            let candidate = self.first + 1 + (used.next_ip + i) % size;
            if !used.ips.contains(&candidate) {
                used.next_ip = (candidate - self.first) % size;
                return Some(candidate);
            }
        }
        None
    }

    fn next_free_port(&self, used: &Used, also: &[u16]) -> Option<u16> {
        let span = u32::from(self.ports.1 - self.ports.0) + 1;
        (0..span)
            .map(|i| self.ports.0 + ((u32::from(used.next_port) + i) % span) as u16)
            .find(|p| !used.ports.contains(p) && !also.contains(p))
    }
}

fn invalid_ip(ip: &str, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: \"{ip}\": {why}"),
        field: "spec.clusterIPs".into(),
    }
}

fn invalid_port(i: usize, p: u64, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {p}: {why}"),
        field: format!("spec.ports[{i}].nodePort"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc() -> Allocator {
        let cfg = ApiServerConfig {
            service_cidr: "10.96.0.0/29".parse().expect("cidr"),
            node_port_range: (30000, 30001),
            ..Default::default()
        };
        Allocator::new(&cfg)
    }

    #[tokio::test]
    async fn allocates_distinct_ips_and_rejects_a_taken_one() {
        let a = alloc();
        let mut s1 = json!({"spec": {"ports": [{"port": 80}]}});
        let mut s2 = json!({"spec": {"ports": [{"port": 80}]}});
        a.allocate(&mut s1, None).await.expect("first");
        a.allocate(&mut s2, None).await.expect("second");
        assert_ne!(s1["spec"]["clusterIP"], s2["spec"]["clusterIP"]);
        assert_ne!(s1["spec"]["clusterIP"], "10.96.0.1", "the first address is reserved");
        let mut dup = json!({"spec": {"clusterIP": s1["spec"]["clusterIP"].clone(), "ports": [{"port": 80}]}});
        let err = a.allocate(&mut dup, None).await.expect_err("taken");
        assert!(err[0].message.contains("already allocated"));
    }

    #[tokio::test]
    async fn node_ports_come_from_the_range_and_run_out_cleanly() {
        let a = alloc();
        let mut s = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}});
        let held = a.allocate(&mut s, None).await.expect("fits");
        assert_eq!(held.ports.len(), 2);
        let mut more = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        assert!(a.allocate(&mut more, None).await.is_err());
        a.release(&held).await;
        assert!(a.allocate(&mut more, None).await.is_ok());
        let mut bad = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
        assert!(a.allocate(&mut bad, None).await.is_err());
    }
}
