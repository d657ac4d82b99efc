//! `core/v1`: Namespace, ConfigMap, Secret, Service, ServiceAccount, Pod, ResourceQuota.

use k8s_pb::api::core::v1::{
    ClientIpConfig, ConfigMap, Namespace, NamespaceSpec, ObjectReference, Pod, ResourceQuota, ResourceQuotaSpec,
    ScopeSelector, ScopedResourceSelectorRequirement, Secret, Service, ServiceAccount, ServicePort, ServiceSpec,
    SessionAffinityConfig,
};
use serde_json::{Map, Value, json};

use super::json::{Obj, Result, each};
use super::message;
use super::meta::{int_or_string, object_meta, quantities};
use super::pod::{local_object_reference, pod_spec};

pub(super) fn namespace(raw: &[u8]) -> Result<Map<String, Value>> {
    // Status is the server's to write; requests carry the zero value.
    let Namespace { metadata, spec, status: _ } = message(raw)?;
    let NamespaceSpec { finalizers } = spec.unwrap_or_default();
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .object("spec", Obj::new().strings("finalizers", finalizers).build())
        .object("status", json!({}))
        .into_map())
}

pub(super) fn config_map(raw: &[u8]) -> Result<Map<String, Value>> {
    let ConfigMap { metadata, immutable, data, binary_data } = message(raw)?;
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .bool_ptr("immutable", immutable)
        .map("data", data)
        .bytes_map("binaryData", binary_data)
        .into_map())
}

pub(super) fn secret(raw: &[u8]) -> Result<Map<String, Value>> {
    let Secret { metadata, immutable, data, string_data, r#type } = message(raw)?;
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .bool_ptr("immutable", immutable)
        .bytes_map("data", data)
        .map("stringData", string_data)
        .string("type", r#type)
        .into_map())
}

pub(super) fn service_account(raw: &[u8]) -> Result<Map<String, Value>> {
    let ServiceAccount { metadata, secrets, image_pull_secrets, automount_service_account_token } = message(raw)?;
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .list("secrets", secrets.into_iter().map(object_reference).collect())
        .list("imagePullSecrets", image_pull_secrets.into_iter().map(local_object_reference).collect())
        .bool_ptr("automountServiceAccountToken", automount_service_account_token)
        .into_map())
}

fn object_reference(r: ObjectReference) -> Value {
    let ObjectReference { kind, namespace, name, uid, api_version, resource_version, field_path } = r;
    Obj::new()
        .string("kind", kind)
        .string("namespace", namespace)
        .string("name", name)
        .string("uid", uid)
        .string("apiVersion", api_version)
        .string("resourceVersion", resource_version)
        .string("fieldPath", field_path)
        .build()
}

pub(super) fn service(raw: &[u8]) -> Result<Map<String, Value>> {
    let Service { metadata, spec, status: _ } = message(raw)?;
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .object("spec", service_spec(spec.unwrap_or_default())?)
        // ServiceStatus.loadBalancer is a non-pointer struct.
        .object("status", json!({"loadBalancer": {}}))
        .into_map())
}

fn service_spec(s: ServiceSpec) -> Result<Value> {
    let ServiceSpec {
        ports,
        selector,
        cluster_ip,
        cluster_ips,
        r#type,
        external_ips,
        session_affinity,
        load_balancer_ip,
        load_balancer_source_ranges,
        external_name,
        external_traffic_policy,
        health_check_node_port,
        publish_not_ready_addresses,
        session_affinity_config,
        ip_families,
        ip_family_policy,
        allocate_load_balancer_node_ports,
        load_balancer_class,
        internal_traffic_policy,
        traffic_distribution,
    } = s;
    Ok(Obj::new()
        .list("ports", each(ports, service_port)?)
        .map("selector", selector)
        .string("clusterIP", cluster_ip)
        .strings("clusterIPs", cluster_ips)
        .string("type", r#type)
        .strings("externalIPs", external_ips)
        .string("sessionAffinity", session_affinity)
        .string("loadBalancerIP", load_balancer_ip)
        .strings("loadBalancerSourceRanges", load_balancer_source_ranges)
        .string("externalName", external_name)
        .string("externalTrafficPolicy", external_traffic_policy)
        .int("healthCheckNodePort", health_check_node_port)
        .bool("publishNotReadyAddresses", publish_not_ready_addresses)
        .object_ptr(
            "sessionAffinityConfig",
            session_affinity_config.map(|SessionAffinityConfig { client_ip }| {
                Obj::new()
                    .object_ptr(
                        "clientIP",
                        client_ip.map(|ClientIpConfig { timeout_seconds }| {
                            Obj::new().int_ptr("timeoutSeconds", timeout_seconds).build()
                        }),
                    )
                    .build()
            }),
        )
        .strings("ipFamilies", ip_families)
        .string_ptr("ipFamilyPolicy", ip_family_policy)
        .bool_ptr("allocateLoadBalancerNodePorts", allocate_load_balancer_node_ports)
        .string_ptr("loadBalancerClass", load_balancer_class)
        .string_ptr("internalTrafficPolicy", internal_traffic_policy)
        .string_ptr("trafficDistribution", traffic_distribution)
        .build())
}

fn service_port(p: ServicePort) -> Result<Value> {
    let ServicePort { name, protocol, app_protocol, port, target_port, node_port } = p;
    Ok(Obj::new()
        .string("name", name)
        .string("protocol", protocol)
        .string_ptr("appProtocol", app_protocol)
        .int_always("port", port)
        // A non-pointer IntOrString: written even when zero.
        .object("targetPort", int_or_string(target_port.unwrap_or_default())?)
        .int("nodePort", node_port)
        .build())
}

pub(super) fn pod(raw: &[u8]) -> Result<Map<String, Value>> {
    let Pod { metadata, spec, status: _ } = message(raw)?;
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .object("spec", pod_spec(spec.unwrap_or_default())?)
        .object("status", json!({}))
        .into_map())
}

pub(super) fn resource_quota(raw: &[u8]) -> Result<Map<String, Value>> {
    let ResourceQuota { metadata, spec, status: _ } = message(raw)?;
    let ResourceQuotaSpec { hard, scopes, scope_selector } = spec.unwrap_or_default();
    let requirement = |ScopedResourceSelectorRequirement { scope_name, operator, values }| {
        Obj::new()
            .string_always("scopeName", scope_name)
            .string_always("operator", operator)
            .strings("values", values)
            .build()
    };
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .object(
            "spec",
            Obj::new()
                .object_map("hard", quantities(hard))
                .strings("scopes", scopes)
                .object_ptr(
                    "scopeSelector",
                    scope_selector.map(|ScopeSelector { match_expressions }| {
                        Obj::new()
                            .list("matchExpressions", match_expressions.into_iter().map(requirement).collect())
                            .build()
                    }),
                )
                .build(),
        )
        .object("status", json!({}))
        .into_map())
}
