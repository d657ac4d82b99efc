//! The ServiceAccount controller: every active namespace has a `default`
//! ServiceAccount; deleting it brings it back.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};

use crate::{Error, is_not_found};

pub const DEFAULT: &str = "default";

struct Ctx {
    client: Client,
}

pub async fn run(client: Client) -> Result<(), Error> {
    let ctx = Arc::new(Ctx { client: client.clone() });
    Controller::new(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .watches(Api::<ServiceAccount>::all(client), watcher::Config::default(), |sa: ServiceAccount| {
            sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns))
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "serviceaccount reconcile");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_ns: Arc<Namespace>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %err, "serviceaccount controller");
    Action::requeue(Duration::from_secs(2))
}

#[tracing::instrument(skip_all, fields(kind = "Namespace", name = %ns.name_any()))]
async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    match api.get(DEFAULT).await {
        Ok(_) => return Ok(Action::await_change()),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(Error::kube(format!("reading serviceaccount {name}/default"))(e)),
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta { name: Some(DEFAULT.into()), namespace: Some(name.clone()), ..Default::default() },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => tracing::info!("created the default serviceaccount"),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => {}
        Err(e) => return Err(Error::kube(format!("creating serviceaccount {name}/default"))(e)),
    }
    Ok(Action::await_change())
}
