//! `v1.Service` and `discovery.k8s.io/v1.EndpointSlice` → the LB model, at
//! the boundary, so the dataplane crate never sees Kubernetes types.
//!
//! Only what kube-proxy programs: IPv4 addresses, TCP and UDP ports. Headless
//! Services (`clusterIP: None`) and ExternalName Services get no frontends.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use waggle_dataplane::lb::{self, Protocol};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service with this label belongs to another proxy (upstream kube-proxy
/// skips it too).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

fn protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

fn ipv4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

/// The Service as the LB sees it.
pub fn service(svc: &Service) -> lb::Service {
    let meta = &svc.metadata;
    let mut out = lb::Service {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        ..lb::Service::default()
    };
    let Some(spec) = &svc.spec else { return out };
    let other_proxy = meta.labels.as_ref().is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL));
    if spec.type_.as_deref() == Some("ExternalName") || other_proxy {
        return out;
    }
    let cluster_ips: Vec<&String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    out.cluster_ips = cluster_ips.into_iter().filter_map(|s| ipv4(s)).collect();
    out.external_ips = spec.external_ips.iter().flatten().filter_map(|s| ipv4(s)).collect();
    let lb_ips = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
    out.external_ips.extend(lb_ips.into_iter().flatten().filter_map(|i| i.ip.as_deref().and_then(ipv4)));
    let node_ports = matches!(spec.type_.as_deref(), Some("NodePort") | Some("LoadBalancer"));
    out.ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(lb::ServicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol: protocol(p.protocol.as_deref())?,
                port: u16::try_from(p.port).ok()?,
                node_port: if node_ports {
                    p.node_port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0)
                } else {
                    None
                },
            })
        })
        .collect();
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(lb::model::DEFAULT_AFFINITY_TIMEOUT_S);
        out.affinity_timeout_s = Some(timeout);
    }
    out.external_traffic_local = spec.external_traffic_policy.as_deref() == Some("Local");
    out.internal_traffic_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    out
}

/// The EndpointSlice as the LB sees it; `None` for slices that are not IPv4
/// or belong to no Service.
pub fn endpoint_slice(slice: &EndpointSlice) -> Option<lb::EndpointSlice> {
    if slice.address_type != "IPv4" {
        return None;
    }
    let service_name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(lb::EndpointPort {
                name: p.name.clone().unwrap_or_default(),
                protocol: protocol(p.protocol.as_deref())?,
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.as_ref();
            // Unset `ready` and `serving` count as true, as upstream says.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            lb::Endpoint {
                addresses: e.addresses.iter().filter_map(|a| ipv4(a)).collect(),
                ready,
                serving: c.and_then(|c| c.serving).unwrap_or(ready),
                terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                node_name: e.node_name.clone(),
            }
        })
        .collect();
    Some(lb::EndpointSlice {
        namespace: slice.metadata.namespace.clone().unwrap_or_default(),
        service_name,
        ports,
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("test object")
    }

    #[test]
    fn a_node_port_service_with_affinity_and_local_policy_converts_field_by_field() {
        let svc: Service = from_json(serde_json::json!({
            "metadata": {"namespace": "ns", "name": "web"},
            "spec": {
                "type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "externalIPs": ["192.0.2.1"], "externalTrafficPolicy": "Local",
                "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                    {"name": "sctp", "port": 90, "protocol": "SCTP"}
                ]
            }
        }));
        let s = service(&svc);
        assert_eq!(s.cluster_ips, vec![Ipv4Addr::new(10, 96, 0, 10)]);
        assert_eq!(s.external_ips, vec![Ipv4Addr::new(192, 0, 2, 1)]);
        assert_eq!(s.ports.len(), 1, "SCTP is not load balanced");
        assert_eq!(s.ports[0].node_port, Some(30080));
        assert_eq!(s.affinity_timeout_s, Some(60));
        assert!(s.external_traffic_local && !s.internal_traffic_local);
    }

    #[test]
    fn a_service_of_another_proxy_gets_no_frontends() {
        let svc: Service = from_json(serde_json::json!({
            "metadata": {"namespace": "ns", "name": "x", "labels": {SERVICE_PROXY_NAME_LABEL: "other"}},
            "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}
        }));
        assert!(service(&svc).ports.is_empty());
    }

    #[test]
    fn headless_and_external_name_services_get_no_frontends() {
        let headless: Service = from_json(serde_json::json!({
            "metadata": {"namespace": "ns", "name": "h"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }));
        assert!(service(&headless).cluster_ips.is_empty());
        let ext: Service = from_json(serde_json::json!({
            "metadata": {"namespace": "ns", "name": "e"},
            "spec": {"type": "ExternalName", "externalName": "example.org"}
        }));
        assert!(service(&ext).ports.is_empty());
    }

    #[test]
    fn slice_conditions_default_as_upstream_says() {
        let slice: EndpointSlice = from_json(serde_json::json!({
            "metadata": {"namespace": "ns", "name": "web-abc", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.0.5"], "nodeName": "n1"},
                {"addresses": ["10.244.0.6"], "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]
        }));
        let s = endpoint_slice(&slice).expect("an IPv4 slice of a Service");
        assert_eq!(s.service_name, "web");
        assert!(s.endpoints[0].ready && s.endpoints[0].serving && !s.endpoints[0].terminating);
        assert!(!s.endpoints[1].ready && s.endpoints[1].serving && s.endpoints[1].terminating);
        let v6: EndpointSlice = from_json(serde_json::json!({
            "metadata": {"namespace": "ns", "name": "web-v6", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv6", "endpoints": []
        }));
        assert!(endpoint_slice(&v6).is_none());
    }
}
