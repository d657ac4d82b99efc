//! The pure half of the LB reconciler: Services + EndpointSlices + this node
//! → what the LB maps should hold, in terms of addresses and names (no map
//! ids; those are the applier's business, so this stays a pure function).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use waggle_ebpf_common::lb::{SVC_F_AFFINITY, SVC_F_EXTERNAL, SVC_F_LOCAL, SVC_F_NODEPORT};

use super::model::{DEFAULT_AFFINITY_TIMEOUT_S, EndpointSlice, Node, Protocol, Service};

/// Where a client sends: an address, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

/// One endpoint of one Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

impl Backend {
    /// The identity Maglev hashes: the same string on every node.
    pub fn identity(&self) -> String {
        format!("{}:{}/{:?}", self.addr, self.port, self.protocol)
    }
}

/// A set of backends sharing one Maglev row: a Service port, all of its
/// endpoints or only this node's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub namespace: String,
    pub service: String,
    pub port_name: String,
    pub protocol: Protocol,
    pub local_only: bool,
}

/// What a frontend leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendSpec {
    pub group: GroupKey,
    /// `SVC_F_*`.
    pub flags: u8,
    pub affinity_timeout_s: u32,
}

/// The LB maps' desired contents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredMaps {
    pub frontends: BTreeMap<Frontend, FrontendSpec>,
    /// Backends of each group, sorted (the Maglev order).
    pub groups: BTreeMap<GroupKey, Vec<Backend>>,
    /// Frontends claimed by two Services; the first (by namespace/name) won.
    pub conflicts: Vec<Frontend>,
}

impl DesiredMaps {
    /// Every backend some group uses.
    pub fn backends(&self) -> BTreeSet<Backend> {
        self.groups.values().flatten().copied().collect()
    }
}

/// Computes the desired LB state. Endpoints that may take new flows are the
/// ready ones; when a Service port has none, its serving-and-terminating ones
/// (as kube-proxy does since ProxyTerminatingEndpoints). Endpoints that are
/// neither get no new flows; flows they already have keep going, because
/// conntrack remembers the backend itself.
pub fn desired_state(node: &Node, services: &[Service], slices: &[EndpointSlice]) -> DesiredMaps {
    let mut out = DesiredMaps::default();
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut slices_of: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        slices_of.entry((&s.namespace, &s.service_name)).or_default().push(s);
    }
    for svc in sorted {
        let svc_slices =
            slices_of.get(&(svc.namespace.as_str(), svc.name.as_str())).map(Vec::as_slice).unwrap_or_default();
        for port in &svc.ports {
            let (all, local) = endpoints_of(node, svc_slices, &port.name, port.protocol);
            let group = |local_only: bool| GroupKey {
                namespace: svc.namespace.clone(),
                service: svc.name.clone(),
                port_name: port.name.clone(),
                protocol: port.protocol,
                local_only,
            };
            let affinity_flag = if svc.affinity_timeout_s.is_some() { SVC_F_AFFINITY } else { 0 };
            let timeout = svc.affinity_timeout_s.unwrap_or(DEFAULT_AFFINITY_TIMEOUT_S);
            let add = |out: &mut DesiredMaps, addr: Ipv4Addr, port_no: u16, local_only: bool, flags: u8| {
                let fe = Frontend { addr, port: port_no, protocol: port.protocol };
                if out.frontends.contains_key(&fe) {
                    out.conflicts.push(fe);
                    return;
                }
                let key = group(local_only);
                let backends = if local_only { &local } else { &all };
                out.groups.entry(key.clone()).or_insert_with(|| backends.clone());
                let local_flag = if local_only { SVC_F_LOCAL } else { 0 };
                let spec =
                    FrontendSpec { group: key, flags: flags | affinity_flag | local_flag, affinity_timeout_s: timeout };
                out.frontends.insert(fe, spec);
            };
            for &ip in &svc.cluster_ips {
                add(&mut out, ip, port.port, svc.internal_traffic_local, 0);
            }
            for &ip in &svc.external_ips {
                add(&mut out, ip, port.port, svc.external_traffic_local, SVC_F_EXTERNAL);
            }
            if let Some(node_port) = port.node_port {
                for &ip in &node.addresses {
                    add(&mut out, ip, node_port, svc.external_traffic_local, SVC_F_NODEPORT);
                }
            }
        }
    }
    out
}

/// The endpoints of one Service port that may take new flows: (all, on this
/// node), each sorted and without duplicates.
fn endpoints_of(
    node: &Node,
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
) -> (Vec<Backend>, Vec<Backend>) {
    let mut ready = BTreeMap::<Backend, bool>::new();
    let mut fallback = BTreeMap::<Backend, bool>::new();
    for slice in slices {
        let Some(ep_port) = slice.ports.iter().find(|p| p.name == port_name && p.protocol == protocol) else {
            continue;
        };
        for ep in &slice.endpoints {
            let is_local = ep.node_name.as_deref() == Some(node.name.as_str());
            let target = if ep.ready {
                &mut ready
            } else if ep.serving && ep.terminating {
                &mut fallback
            } else {
                continue;
            };
            for &addr in &ep.addresses {
                target.insert(Backend { addr, port: ep_port.port, protocol }, is_local);
            }
        }
    }
    let chosen = if ready.is_empty() { fallback } else { ready };
    let all = chosen.keys().copied().collect();
    let local = chosen.iter().filter(|(_, local)| **local).map(|(b, _)| *b).collect();
    (all, local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::model::{Endpoint, EndpointPort, ServicePort};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test address")
    }

    fn node() -> Node {
        Node { name: "n1".into(), addresses: vec![ip("10.9.0.1")] }
    }

    fn web(node_port: Option<u16>) -> Service {
        Service {
            namespace: "default".into(),
            name: "web".into(),
            cluster_ips: vec![ip("10.96.0.10")],
            ports: vec![ServicePort { name: "http".into(), protocol: Protocol::Tcp, port: 80, node_port }],
            ..Default::default()
        }
    }

    fn slice(endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            namespace: "default".into(),
            service_name: "web".into(),
            ports: vec![EndpointPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 }],
            endpoints,
        }
    }

    fn be(addr: &str) -> Backend {
        Backend { addr: ip(addr), port: 8080, protocol: Protocol::Tcp }
    }

    #[test]
    fn a_cluster_ip_leads_to_its_ready_endpoints_on_the_target_port() {
        let d = desired_state(
            &node(),
            &[web(None)],
            &[slice(vec![
                Endpoint::ready(ip("10.244.0.12"), "n1"),
                Endpoint::ready(ip("10.244.0.11"), "n2"),
                Endpoint {
                    ready: false,
                    serving: false,
                    terminating: false,
                    ..Endpoint::ready(ip("10.244.0.13"), "n1")
                },
            ])],
        );
        let fe = Frontend { addr: ip("10.96.0.10"), port: 80, protocol: Protocol::Tcp };
        let spec = &d.frontends[&fe];
        assert_eq!(spec.flags, 0);
        assert_eq!(d.groups[&spec.group], vec![be("10.244.0.11"), be("10.244.0.12")]);
    }

    #[test]
    fn terminating_endpoints_take_no_new_flows_unless_nothing_is_ready() {
        let d = desired_state(
            &node(),
            &[web(None)],
            &[slice(vec![Endpoint::ready(ip("10.244.0.11"), "n1"), Endpoint::terminating(ip("10.244.0.12"), "n1")])],
        );
        assert_eq!(d.backends().into_iter().collect::<Vec<_>>(), vec![be("10.244.0.11")]);
        let d = desired_state(&node(), &[web(None)], &[slice(vec![Endpoint::terminating(ip("10.244.0.12"), "n1")])]);
        assert_eq!(d.backends().into_iter().collect::<Vec<_>>(), vec![be("10.244.0.12")]);
    }

    #[test]
    fn a_service_without_endpoints_keeps_its_frontend_with_an_empty_group() {
        let d = desired_state(&node(), &[web(None)], &[]);
        assert_eq!(d.frontends.len(), 1);
        assert!(d.groups.values().all(Vec::is_empty));
    }

    #[test]
    fn node_ports_with_local_policy_use_only_this_nodes_endpoints() {
        let mut svc = web(Some(30080));
        svc.external_traffic_local = true;
        svc.affinity_timeout_s = Some(60);
        let d = desired_state(
            &node(),
            &[svc],
            &[slice(vec![Endpoint::ready(ip("10.244.0.11"), "n1"), Endpoint::ready(ip("10.244.1.11"), "n2")])],
        );
        let np = &d.frontends[&Frontend { addr: ip("10.9.0.1"), port: 30080, protocol: Protocol::Tcp }];
        assert_eq!(np.flags, SVC_F_NODEPORT | SVC_F_LOCAL | SVC_F_AFFINITY);
        assert_eq!(np.affinity_timeout_s, 60);
        assert_eq!(d.groups[&np.group], vec![be("10.244.0.11")]);
        let cip = &d.frontends[&Frontend { addr: ip("10.96.0.10"), port: 80, protocol: Protocol::Tcp }];
        assert_eq!(d.groups[&cip.group].len(), 2, "the ClusterIP is not subject to externalTrafficPolicy");
    }

    #[test]
    fn two_services_claiming_one_frontend_are_reported_and_the_first_wins() {
        let mut other = web(None);
        other.name = "aaa".into();
        let d = desired_state(&node(), &[web(None), other], &[]);
        assert_eq!(d.conflicts.len(), 1);
        assert_eq!(d.frontends.values().next().map(|s| s.group.service.as_str()), Some("aaa"));
    }
}
