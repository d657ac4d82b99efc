//! Heartbeats: every `lease_period` each live node renews its Lease in
//! `kube-node-lease`, as a kubelet does. A live node whose Ready condition
//! is not True (the node lifecycle controller marked it Unknown while it was
//! stopped) posts Ready=True again; the node watch is a reflector so this
//! costs no request per node.

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::json;

use crate::node::ready_condition;
use crate::{Error, HOLLOW_LABEL, HollowConfig, Liveness, is_status, now};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
const CONCURRENCY: usize = 32;

pub(crate) async fn run(client: Client, config: HollowConfig, names: Vec<String>, live: Liveness) -> Result<(), Error> {
    let nodes_api: Api<Node> = Api::all(client.clone());
    let writer = reflector::store::Writer::<Node>::default();
    let nodes = writer.as_reader();
    let watch = watcher(nodes_api.clone(), watcher::Config::default().labels(&format!("{HOLLOW_LABEL}=true")));
    tokio::spawn(reflector::reflector(writer, watch).default_backoff().for_each(|_| async {}));

    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let mut tick = tokio::time::interval(config.lease_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let beats: Vec<_> = names
            .iter()
            .filter(|n| live.is_alive(n))
            .map(|name| beat(&leases, &nodes_api, &nodes, &config, name))
            .collect();
        let mut work = futures::stream::iter(beats).buffer_unordered(CONCURRENCY);
        while let Some(r) = work.next().await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "hollow node heartbeat");
            }
        }
    }
}

#[tracing::instrument(skip_all, fields(node = %name))]
async fn beat(
    leases: &Api<Lease>,
    nodes_api: &Api<Node>,
    nodes: &Store<Node>,
    config: &HollowConfig,
    name: &str,
) -> Result<(), Error> {
    renew(leases, nodes, config, name).await?;
    let Some(node) = nodes.get(&ObjectRef::new(name)) else { return Ok(()) };
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    if !ready {
        let cond = ready_condition("True", "KubeletReady", "hollow kubelet is posting ready status");
        // A strategic merge patch merges conditions by type.
        let patch = json!({"status": {"conditions": [cond]}});
        nodes_api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map_err(Error::kube(format!("posting Ready for node {name}")))?;
        tracing::info!("node is ready again");
    }
    Ok(())
}

async fn renew(leases: &Api<Lease>, nodes: &Store<Node>, config: &HollowConfig, name: &str) -> Result<(), Error> {
    let renew = MicroTime(now());
    let patch = json!({"spec": {"renewTime": renew, "holderIdentity": name}});
    match leases.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => return Ok(()),
        Err(e) if is_status(&e, 404) => {}
        Err(e) => return Err(Error::kube(format!("renewing the lease of node {name}"))(e)),
    }
    // The kubelet makes the Node the Lease's owner, so the Lease goes with it.
    let owner = nodes.get(&ObjectRef::new(name)).map(|n| OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.to_owned(),
        uid: n.uid().unwrap_or_default(),
        ..Default::default()
    });
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.to_owned()),
            lease_duration_seconds: Some(config.lease_duration_seconds),
            renew_time: Some(renew),
            ..Default::default()
        }),
    };
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) => Ok(()),
        Err(e) => Err(Error::kube(format!("creating the lease of node {name}"))(e)),
    }
}
