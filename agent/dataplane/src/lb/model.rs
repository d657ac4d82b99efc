//! What the LB reconciler consumes: Services and EndpointSlices reduced to
//! the fields the datapath needs, plus this node's identity.
//!
//! These are plain structs for now; the kube-rs watcher that fills them from
//! `v1.Service` and `discovery.k8s.io/v1.EndpointSlice` objects comes later,
//! and converts into them at that boundary.

use std::net::Ipv4Addr;

/// Transport protocol of a Service port. SCTP is not load balanced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;

/// A `v1.Service`, as far as load balancing goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// `spec.clusterIPs` (IPv4 only); empty for headless Services.
    pub cluster_ips: Vec<Ipv4Addr>,
    /// `spec.externalIPs` and `status.loadBalancer.ingress[].ip`.
    pub external_ips: Vec<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
    /// `Some(timeout)` for `sessionAffinity: ClientIP`.
    pub affinity_timeout_s: Option<u32>,
    /// `externalTrafficPolicy: Local` (NodePort, externalIPs, LB IPs).
    pub external_traffic_local: bool,
    /// `internalTrafficPolicy: Local` (ClusterIPs).
    pub internal_traffic_local: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name; matches `EndpointPort::name` (empty when unnamed).
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
}

/// A `discovery.k8s.io/v1.EndpointSlice`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSlice {
    pub namespace: String,
    /// The `kubernetes.io/service-name` label.
    pub service_name: String,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Vec<Ipv4Addr>,
    /// `conditions.ready` (unset counts as ready, as upstream says).
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    pub node_name: Option<String>,
}

impl Endpoint {
    /// A ready endpoint on `node`.
    pub fn ready(addr: Ipv4Addr, node: &str) -> Self {
        Self { addresses: vec![addr], ready: true, serving: true, terminating: false, node_name: Some(node.into()) }
    }

    /// A terminating endpoint that still serves (during its grace period).
    pub fn terminating(addr: Ipv4Addr, node: &str) -> Self {
        Self { addresses: vec![addr], ready: false, serving: true, terminating: true, node_name: Some(node.into()) }
    }
}

/// The node this agent runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// Addresses NodePorts are served on.
    pub addresses: Vec<Ipv4Addr>,
}
