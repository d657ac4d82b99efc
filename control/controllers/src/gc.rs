//! The garbage collector: dependents whose owners are gone are deleted;
//! owners deleted with `Foreground` wait for their dependents; owners deleted
//! with `Orphan` release their dependents first.
//!
//! Every resource type is watched into a reflector (one watch per type); a
//! sweep over the cached objects runs periodically. The sweep is O(objects):
//! upstream keeps an incremental dependency graph instead — to do when the
//! cluster sizes in DESIGN.md are benchmarked.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::json;

use crate::resources::Resource;
use crate::{Error, is_not_found};

const SWEEP_EVERY: Duration = Duration::from_millis(500);
const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// One cached object, as the sweep needs it.
#[derive(Clone, Debug)]
struct Node {
    resource: usize,
    namespace: Option<String>,
    name: String,
    uid: String,
    deleting: bool,
    finalizers: Vec<String>,
    owners: Vec<(String, String, String)>, // (uid, apiVersion, kind/name for messages)
}

pub async fn run(client: Client, resources: Arc<Vec<Resource>>) -> Result<(), Error> {
    let mut stores: Vec<Store<DynamicObject>> = Vec::new();
    // The watches stop with this controller (its future dropped).
    let mut watches = tokio::task::JoinSet::new();
    for r in resources.iter() {
        let writer = reflector::store::Writer::<DynamicObject>::new(r.ar.clone());
        stores.push(writer.as_reader());
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &r.ar);
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()));
        watches.spawn(stream.default_backoff().for_each(|_| async {}));
    }
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        if let Err(e) = sweep(&client, &resources, &stores).await {
            tracing::warn!(error = %e, "garbage collection sweep");
        }
    }
}

fn snapshot(stores: &[Store<DynamicObject>]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        for obj in store.state() {
            let owners = obj
                .owner_references()
                .iter()
                .map(|o| (o.uid.clone(), o.api_version.clone(), format!("{}/{}", o.kind, o.name)))
                .collect();
            nodes.push(Node {
                resource: i,
                namespace: obj.namespace(),
                name: obj.name_any(),
                uid: obj.uid().unwrap_or_default(),
                deleting: obj.metadata.deletion_timestamp.is_some(),
                finalizers: obj.finalizers().to_vec(),
                owners,
            });
        }
    }
    nodes
}

fn api_for(client: &Client, resources: &[Resource], n: &Node) -> Api<DynamicObject> {
    let r = &resources[n.resource];
    match (&n.namespace, r.namespaced) {
        (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &r.ar),
        _ => Api::all_with(client.clone(), &r.ar),
    }
}

async fn sweep(client: &Client, resources: &[Resource], stores: &[Store<DynamicObject>]) -> Result<(), Error> {
    let nodes = snapshot(stores);
    let present: HashSet<&str> = nodes.iter().map(|n| n.uid.as_str()).collect();
    let mut dependents: HashMap<&str, Vec<&Node>> = HashMap::new();
    for n in &nodes {
        for (owner, _, _) in &n.owners {
            dependents.entry(owner.as_str()).or_default().push(n);
        }
    }
    // Dependents whose owners are all gone.
    for n in nodes.iter().filter(|n| !n.owners.is_empty() && !n.deleting) {
        if n.owners.iter().any(|(uid, _, _)| present.contains(uid.as_str())) {
            continue;
        }
        if !owners_really_gone(client, resources, n).await? {
            continue;
        }
        delete(client, resources, n, DeleteParams::background()).await?;
        tracing::info!(kind = %resources[n.resource].ar.kind, name = %n.name, "deleted a dependent whose owners are gone");
    }
    // Owners being deleted with a propagation finalizer.
    for owner in nodes.iter().filter(|n| n.deleting) {
        let deps = dependents.get(owner.uid.as_str()).cloned().unwrap_or_default();
        if owner.finalizers.iter().any(|f| f == ORPHAN) {
            for dep in &deps {
                release(client, resources, dep, &owner.uid).await?;
            }
            remove_finalizer(client, resources, owner, ORPHAN).await?;
        } else if owner.finalizers.iter().any(|f| f == FOREGROUND) {
            if deps.is_empty() {
                remove_finalizer(client, resources, owner, FOREGROUND).await?;
            } else {
                for dep in deps.iter().filter(|d| !d.deleting) {
                    delete(client, resources, dep, DeleteParams::foreground()).await?;
                }
            }
        }
    }
    Ok(())
}

/// The cache can lag behind: before deleting, ask the API whether each owner
/// is really absent (or replaced by an object with another uid).
async fn owners_really_gone(client: &Client, resources: &[Resource], n: &Node) -> Result<bool, Error> {
    let dependent = &resources[n.resource];
    for (uid, api_version, kind_name) in &n.owners {
        let Some((kind, name)) = kind_name.split_once('/') else { continue };
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version.as_str()));
        let Some(owner_res) =
            resources.iter().find(|r| r.ar.group == group && r.ar.version == version && r.ar.kind == kind)
        else {
            // An owner kind nobody serves is as good as gone.
            continue;
        };
        let api: Api<DynamicObject> = match (&n.namespace, owner_res.namespaced, dependent.namespaced) {
            (Some(ns), true, true) => Api::namespaced_with(client.clone(), ns, &owner_res.ar),
            _ => Api::all_with(client.clone(), &owner_res.ar),
        };
        match api.get(name).await {
            Ok(o) if o.uid().as_deref() == Some(uid.as_str()) => return Ok(false),
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("reading owner {kind_name}"))(e)),
        }
    }
    Ok(true)
}

async fn delete(client: &Client, resources: &[Resource], n: &Node, dp: DeleteParams) -> Result<(), Error> {
    match api_for(client, resources, n).delete(&n.name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(Error::kube(format!("deleting {} {}", resources[n.resource].ar.kind, n.name))(e)),
    }
}

/// Drops the owner reference to `owner_uid` from a dependent (Orphan).
async fn release(client: &Client, resources: &[Resource], dep: &Node, owner_uid: &str) -> Result<(), Error> {
    let api = api_for(client, resources, dep);
    let current = match api.get(&dep.name).await {
        Ok(o) => o,
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(Error::kube(format!("reading {}", dep.name))(e)),
    };
    let refs: Vec<_> = current.owner_references().iter().filter(|o| o.uid != owner_uid).cloned().collect();
    // An empty list is dropped altogether, as upstream leaves it.
    let refs = if refs.is_empty() { serde_json::Value::Null } else { json!(refs) };
    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": current.resource_version()}});
    match api.patch(&dep.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(Error::kube(format!("orphaning {}", dep.name))(e)),
    }
}

async fn remove_finalizer(client: &Client, resources: &[Resource], n: &Node, finalizer: &str) -> Result<(), Error> {
    let api = api_for(client, resources, n);
    let current = match api.get(&n.name).await {
        Ok(o) => o,
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(Error::kube(format!("reading {}", n.name))(e)),
    };
    let rest: Vec<String> = current.finalizers().iter().filter(|f| *f != finalizer).cloned().collect();
    let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": current.resource_version()}});
    match api.patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(Error::kube(format!("removing finalizer {finalizer} from {}", n.name))(e)),
    }
}
