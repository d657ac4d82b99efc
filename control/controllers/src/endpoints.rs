//! The Endpoints controller: for every Service with a selector, an
//! Endpoints object of the same name lists the ready pods in `addresses`
//! and the others in `notReadyAddresses`; terminating pods are left out.
//! Unlike upstream the object has the Service as owner, so the garbage
//! collector removes it with the Service.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt as _};

use crate::backends::{self, Backend};
use crate::{Error, is_not_found, pod_state};

/// Resync, for the pod label changes that no longer match a Service.
const RESYNC: Duration = Duration::from_secs(30);

type Ctx = backends::ServiceCtx;

pub async fn run(client: Client, informers: &crate::informer::Informers) -> Result<(), Error> {
    backends::run_for_services::<Endpoints, _, _>(client, informers, "endpoints", reconcile).await
}

fn address(b: &Backend) -> EndpointAddress {
    EndpointAddress {
        ip: b.ip.clone(),
        node_name: b.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        hostname: None,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: b.pod.namespace(),
            name: Some(b.pod.name_any()),
            uid: b.pod.uid(),
            ..Default::default()
        }),
    }
}

#[tracing::instrument(skip_all, fields(kind = "Service", namespace = %svc.namespace().unwrap_or_default(), name = %svc.name_any()))]
async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if backends::selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let mut subsets = Vec::new();
    for (ports, group) in backends::backends(&svc, &ctx.pods) {
        let live: Vec<&Backend> = group.iter().filter(|b| !b.terminating).collect();
        if live.is_empty() {
            continue;
        }
        let addresses: Vec<EndpointAddress> = live.iter().filter(|b| b.ready).map(|b| address(b)).collect();
        let not_ready: Vec<EndpointAddress> = live.iter().filter(|b| !b.ready).map(|b| address(b)).collect();
        subsets.push(EndpointSubset {
            addresses: (!addresses.is_empty()).then_some(addresses),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: Some(
                ports
                    .iter()
                    .map(|p| EndpointPort {
                        name: p.name.clone(),
                        port: p.port,
                        protocol: Some(p.protocol.clone()),
                        app_protocol: p.app_protocol.clone(),
                    })
                    .collect(),
            ),
        });
    }
    let subsets = (!subsets.is_empty()).then_some(subsets);
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let current = match api.get(&name).await {
        Ok(e) => Some(e),
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(Error::kube(format!("reading endpoints {ns}/{name}"))(e)),
    };
    let labels = svc.metadata.labels.clone();
    match current {
        Some(cur) if cur.subsets == subsets && cur.metadata.labels == labels => {}
        Some(mut cur) => {
            cur.subsets = subsets;
            cur.metadata.labels = labels;
            api.replace(&name, &PostParams::default(), &cur)
                .await
                .map_err(Error::kube(format!("updating endpoints {ns}/{name}")))?;
            tracing::debug!("endpoints updated");
        }
        None => {
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels,
                    owner_references: Some(vec![pod_state::owner_ref("v1", "Service", svc.as_ref())]),
                    ..Default::default()
                },
                subsets,
            };
            api.create(&PostParams::default(), &ep)
                .await
                .map_err(Error::kube(format!("creating endpoints {ns}/{name}")))?;
            tracing::debug!("endpoints created");
        }
    }
    Ok(Action::requeue(RESYNC))
}
