//! The EndpointSlice controller: for every Service with a selector, one
//! EndpointSlice per distinct port mapping, owned by the Service, labelled
//! `kubernetes.io/service-name` and managed-by upstream's controller name.
//! Every endpoint carries ready/serving/terminating; terminating pods stay
//! listed (serving while still ready) so proxies can drain them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt as _};

use crate::backends::{self, Port};
use crate::deployment::hash::{fnv32a, safe_encode};
use crate::{Error, is_not_found, pod_state};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const RESYNC: Duration = Duration::from_secs(30);

type Ctx = backends::ServiceCtx;

pub async fn run(client: Client, informers: &crate::informer::Informers) -> Result<(), Error> {
    backends::run_for_services::<EndpointSlice, _, _>(client, informers, "endpointslice", reconcile).await
}

/// A stable name per Service and port mapping.
fn slice_name(svc: &str, ports: &[Port]) -> String {
    let key = serde_json::to_vec(&ports.iter().map(|p| (&p.name, p.port, &p.protocol)).collect::<Vec<_>>())
        .unwrap_or_default();
    let suffix = safe_encode(&fnv32a(&key).to_string());
    let mut base: String = svc.chars().take(63 - suffix.len() - 1).collect();
    base.push('-');
    base + &suffix
}

#[tracing::instrument(skip_all, fields(kind = "Service", namespace = %svc.namespace().unwrap_or_default(), name = %svc.name_any()))]
async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if backends::selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let mut labels: BTreeMap<String, String> = svc.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());

    let mut wanted = HashSet::new();
    let groups = backends::backends(&svc, &ctx.pods);
    // A Service without backends still gets one empty slice, as upstream's.
    let groups = if groups.is_empty() { BTreeMap::from([(Vec::new(), Vec::new())]) } else { groups };
    for (ports, group) in groups {
        let slice_name = slice_name(&name, &ports);
        wanted.insert(slice_name.clone());
        let endpoints: Vec<Endpoint> = group
            .iter()
            .map(|b| Endpoint {
                addresses: vec![b.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(b.ready && !b.terminating),
                    serving: Some(b.ready),
                    terminating: Some(b.terminating),
                }),
                node_name: b.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    namespace: b.pod.namespace(),
                    name: Some(b.pod.name_any()),
                    uid: b.pod.uid(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let ports: Vec<EndpointPort> = ports
            .iter()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone()),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let desired = EndpointSlice {
            metadata: ObjectMeta {
                name: Some(slice_name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels.clone()),
                owner_references: Some(vec![pod_state::owner_ref("v1", "Service", svc.as_ref())]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(ports),
        };
        match api.get(&slice_name).await {
            Ok(cur)
                if cur.endpoints == desired.endpoints
                    && cur.ports == desired.ports
                    && cur.metadata.labels == desired.metadata.labels => {}
            Ok(cur) => {
                let mut next = desired;
                next.metadata.resource_version = cur.metadata.resource_version;
                api.replace(&slice_name, &PostParams::default(), &next)
                    .await
                    .map_err(Error::kube(format!("updating endpointslice {ns}/{slice_name}")))?;
            }
            Err(e) if is_not_found(&e) => {
                api.create(&PostParams::default(), &desired)
                    .await
                    .map_err(Error::kube(format!("creating endpointslice {ns}/{slice_name}")))?;
            }
            Err(e) => return Err(Error::kube(format!("reading endpointslice {ns}/{slice_name}"))(e)),
        }
    }
    let selector = format!("{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}");
    let existing = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!("listing endpointslices of {ns}/{name}")))?;
    for stale in existing.items.iter().filter(|s| !wanted.contains(&s.name_any())) {
        match api.delete(&stale.name_any(), &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(Error::kube(format!("deleting endpointslice {ns}/{}", stale.name_any()))(e)),
        }
    }
    Ok(Action::requeue(RESYNC))
}
