//! The namespace controller: a namespace marked for deletion is emptied
//! (every namespaced object deleted), then its `kubernetes` finalizer is
//! removed through `namespaces/<name>/finalize`, which lets it go.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};

use crate::resources::Resource;
use crate::{Error, is_not_found};

/// The finalizer the API server puts on every namespace.
const FINALIZER: &str = "kubernetes";

struct Ctx {
    client: Client,
    resources: Arc<Vec<Resource>>,
}

pub async fn run(client: Client, resources: Arc<Vec<Resource>>) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client, resources });
    Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "namespace reconcile");
            }
        })
        .await;
    Ok(())
}

#[tracing::instrument(skip_all, fields(namespace = %ns.name_any()))]
async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let mut remaining = 0usize;
    for r in ctx.resources.iter().filter(|r| r.namespaced) {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &name, &r.ar);
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(Error::kube(format!("listing {} in {name}", r.ar.plural))(e)),
        };
        for obj in list.items {
            remaining += 1;
            if obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let obj_name = obj.name_any();
            match api.delete(&obj_name, &DeleteParams::background()).await {
                Ok(_) => tracing::debug!(kind = %r.ar.kind, name = %obj_name, "deleted"),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::kube(format!("deleting {} {name}/{obj_name}", r.ar.kind))(e)),
            }
        }
    }
    if remaining > 0 {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let mut finalized = (*ns).clone();
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers =
            Some(spec.finalizers.take().unwrap_or_default().into_iter().filter(|f| f != FINALIZER).collect());
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api.replace_subresource("finalize", &name, &PostParams::default(), &finalized).await {
        Ok(_) => tracing::info!("namespace emptied and finalized"),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(Error::kube(format!("finalizing namespace {name}"))(e)),
    }
    Ok(Action::await_change())
}

fn error_policy(_ns: Arc<Namespace>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %err, "namespace controller");
    Action::requeue(Duration::from_secs(2))
}
