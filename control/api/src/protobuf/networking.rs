//! `networking.k8s.io/v1`: Ingress.

use k8s_pb::api::core::v1::TypedLocalObjectReference;
use k8s_pb::api::networking::v1::{
    HttpIngressPath, HttpIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressRuleValue,
    IngressServiceBackend, IngressSpec, IngressTls, ServiceBackendPort,
};
use serde_json::{Map, Value, json};

use super::json::{Obj, Result};
use super::message;
use super::meta::object_meta;

pub(super) fn ingress(raw: &[u8]) -> Result<Map<String, Value>> {
    let Ingress { metadata, spec, status: _ } = message(raw)?;
    let IngressSpec { ingress_class_name, default_backend, tls, rules } = spec.unwrap_or_default();
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .object(
            "spec",
            Obj::new()
                .string_ptr("ingressClassName", ingress_class_name)
                .object_ptr("defaultBackend", default_backend.map(ingress_backend))
                .list("tls", tls.into_iter().map(ingress_tls).collect())
                .list("rules", rules.into_iter().map(ingress_rule).collect())
                .build(),
        )
        // IngressStatus.loadBalancer is a non-pointer struct.
        .object("status", json!({"loadBalancer": {}}))
        .into_map())
}

fn ingress_tls(t: IngressTls) -> Value {
    let IngressTls { hosts, secret_name } = t;
    Obj::new().strings("hosts", hosts).string("secretName", secret_name).build()
}

fn ingress_rule(r: IngressRule) -> Value {
    let IngressRule { host, ingress_rule_value } = r;
    // IngressRuleValue is embedded: its `http` sits beside `host`.
    let http = ingress_rule_value.and_then(|IngressRuleValue { http }| http);
    Obj::new()
        .string("host", host)
        .object_ptr(
            "http",
            http.map(|HttpIngressRuleValue { paths }| {
                Obj::new().list_always("paths", paths.into_iter().map(http_ingress_path).collect()).build()
            }),
        )
        .build()
}

fn http_ingress_path(p: HttpIngressPath) -> Value {
    let HttpIngressPath { path, path_type, backend } = p;
    Obj::new()
        .string("path", path)
        // `*PathType` without omitempty: `null` when unset.
        .object("pathType", path_type.map_or(Value::Null, Value::String))
        .object("backend", ingress_backend(backend.unwrap_or_default()))
        .build()
}

fn ingress_backend(b: IngressBackend) -> Value {
    let IngressBackend { service, resource } = b;
    Obj::new()
        .object_ptr(
            "service",
            service.map(|IngressServiceBackend { name, port }| {
                let ServiceBackendPort { name: port_name, number } = port.unwrap_or_default();
                Obj::new()
                    .string_always("name", name)
                    .object("port", Obj::new().string("name", port_name).int("number", number).build())
                    .build()
            }),
        )
        .object_ptr(
            "resource",
            resource.map(|TypedLocalObjectReference { api_group, kind, name }| {
                Obj::new()
                    .string_ptr("apiGroup", api_group)
                    .string_always("kind", kind)
                    .string_always("name", name)
                    .build()
            }),
        )
        .build()
}
