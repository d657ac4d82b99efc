//! The garbage collector: dependents whose owners are gone are deleted;
//! owners deleted with `Foreground` wait for their dependents; owners deleted
//! with `Orphan` release their dependents first.
//!
//! As upstream's, it keeps a dependency graph (objects by uid, dependents by
//! owner uid) fed by one watch per resource type, and looks only at what an
//! event touched: the object itself, its owners (a foreground deletion may be
//! waiting for it) and, when it goes away, its dependents. Nothing is swept
//! periodically; the work per event does not grow with the cluster. Until
//! every type has been listed once nothing is judged (an owner not listed yet
//! is not absent); then every object is looked at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::api::{ObjectMeta, PartialObjectMeta};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::json;

use crate::resources::Resource;
use crate::{Error, is_not_found};

/// Objects whose handling failed are looked at again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);
const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// One object, as the collector needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    resource: usize,
    namespace: Option<String>,
    name: String,
    uid: String,
    deleting: bool,
    finalizers: Vec<String>,
    owners: Vec<(String, String, String)>, // (uid, apiVersion, kind/name for messages)
}

impl Node {
    fn of(resource: usize, meta: &ObjectMeta) -> Option<Self> {
        let uid = meta.uid.clone()?;
        let owners = meta
            .owner_references
            .iter()
            .flatten()
            .map(|o| (o.uid.clone(), o.api_version.clone(), format!("{}/{}", o.kind, o.name)))
            .collect();
        Some(Self {
            resource,
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            uid,
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            owners,
        })
    }
}

/// Objects by uid and the dependents of each owner uid.
#[derive(Debug, Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn link(&mut self, n: &Node) {
        for (owner, _, _) in &n.owners {
            self.dependents.entry(owner.clone()).or_default().insert(n.uid.clone());
        }
    }

    fn unlink(&mut self, n: &Node) {
        for (owner, _, _) in &n.owners {
            if let Some(deps) = self.dependents.get_mut(owner) {
                deps.remove(&n.uid);
                if deps.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
    }

    /// Adds or updates an object; returns the uids to look at.
    fn upsert(&mut self, n: Node) -> Vec<String> {
        let mut dirty = vec![n.uid.clone()];
        dirty.extend(n.owners.iter().map(|(o, _, _)| o.clone()));
        if let Some(old) = self.nodes.remove(&n.uid) {
            if old == n {
                self.nodes.insert(n.uid.clone(), n);
                return Vec::new();
            }
            dirty.extend(old.owners.iter().map(|(o, _, _)| o.clone()));
            self.unlink(&old);
        }
        self.link(&n);
        self.nodes.insert(n.uid.clone(), n);
        dirty
    }

    /// Forgets an object; its dependents (their owner is gone) and its owners
    /// (one may wait for it in a foreground deletion) are to be looked at.
    fn remove(&mut self, uid: &str) -> Vec<String> {
        let Some(old) = self.nodes.remove(uid) else { return Vec::new() };
        self.unlink(&old);
        let mut dirty: Vec<String> = old.owners.iter().map(|(o, _, _)| o.clone()).collect();
        dirty.extend(self.dependents.get(uid).into_iter().flatten().cloned());
        dirty
    }

    fn dependents_of(&self, uid: &str) -> Vec<Node> {
        self.dependents.get(uid).into_iter().flatten().filter_map(|d| self.nodes.get(d)).cloned().collect()
    }
}

/// The metadata-only watch events of every resource type, tagged with its
/// index.
type Meta = PartialObjectMeta<DynamicObject>;
type Events = futures::stream::SelectAll<
    std::pin::Pin<Box<dyn futures::Stream<Item = (usize, Result<watcher::Event<Meta>, watcher::Error>)> + Send>>,
>;

pub async fn run(client: Client, resources: Arc<Vec<Resource>>) -> Result<(), Error> {
    let mut events: Events = futures::stream::SelectAll::new();
    for (i, r) in resources.iter().enumerate() {
        // Metadata only (`as=PartialObjectMetadata`): owners, finalizers and
        // deletion are all the collector reads.
        let api: Api<Meta> = Api::all_with(client.clone(), &r.ar);
        let stream = watcher(api, watcher::Config::default()).default_backoff().map(move |e| (i, e));
        events.push(Box::pin(stream));
    }
    let mut graph = Graph::default();
    // Per type: listed once yet, and the uids its current (re)list has shown.
    let mut synced = vec![false; resources.len()];
    let mut listing: Vec<Option<HashSet<String>>> = vec![None; resources.len()];
    let mut dirty: HashSet<String> = HashSet::new();
    let mut retry: HashSet<String> = HashSet::new();
    let mut all_synced = false;
    loop {
        // One event (or a retry tick), then whatever else is ready.
        let first = tokio::select! {
            e = events.next() => e,
            () = tokio::time::sleep(RETRY_AFTER), if !retry.is_empty() => {
                dirty.extend(retry.drain());
                None
            }
        };
        let mut batch: Vec<_> = first.into_iter().collect();
        while let Some(Some(e)) = events.next().now_or_never() {
            batch.push(e);
        }
        for (i, event) in batch {
            match event {
                Ok(watcher::Event::Apply(obj)) => {
                    dirty.extend(Node::of(i, &obj.metadata).map(|n| graph.upsert(n)).unwrap_or_default());
                }
                Ok(watcher::Event::Delete(obj)) => {
                    dirty.extend(obj.metadata.uid.as_deref().map(|u| graph.remove(u)).unwrap_or_default());
                }
                Ok(watcher::Event::Init) => listing[i] = Some(HashSet::new()),
                Ok(watcher::Event::InitApply(obj)) => {
                    if let Some(n) = Node::of(i, &obj.metadata) {
                        if let Some(seen) = listing[i].as_mut() {
                            seen.insert(n.uid.clone());
                        }
                        dirty.extend(graph.upsert(n));
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    // What the relist no longer shows was deleted meanwhile.
                    let seen = listing[i].take().unwrap_or_default();
                    let gone: Vec<String> = graph
                        .nodes
                        .values()
                        .filter(|n| n.resource == i && !seen.contains(&n.uid))
                        .map(|n| n.uid.clone())
                        .collect();
                    for uid in gone {
                        dirty.extend(graph.remove(&uid));
                    }
                    synced[i] = true;
                }
                Err(e) => tracing::debug!(kind = %resources[i].ar.kind, error = %e, "garbage collector watch"),
            }
        }
        if !all_synced {
            if !synced.iter().all(|s| *s) {
                continue;
            }
            all_synced = true;
            dirty.extend(graph.nodes.keys().cloned());
            tracing::info!(objects = graph.nodes.len(), "garbage collector synced");
        }
        for uid in std::mem::take(&mut dirty) {
            if let Err(e) = attend(&client, &resources, &graph, &uid).await {
                tracing::warn!(error = %e, "garbage collection");
                retry.insert(uid);
            }
        }
    }
}

/// Looks at one object: deletes it when all its owners are gone, and carries
/// out an orphan or foreground deletion of it.
async fn attend(client: &Client, resources: &[Resource], graph: &Graph, uid: &str) -> Result<(), Error> {
    let Some(n) = graph.nodes.get(uid) else { return Ok(()) };
    if !n.owners.is_empty()
        && !n.deleting
        && !n.owners.iter().any(|(o, _, _)| graph.nodes.contains_key(o))
        && owners_really_gone(client, resources, n).await?
    {
        delete(client, resources, n, DeleteParams::background()).await?;
        tracing::info!(kind = %resources[n.resource].ar.kind, name = %n.name, "deleted a dependent whose owners are gone");
        return Ok(());
    }
    if !n.deleting {
        return Ok(());
    }
    let deps = graph.dependents_of(uid);
    if n.finalizers.iter().any(|f| f == ORPHAN) {
        for dep in &deps {
            release(client, resources, dep, uid).await?;
        }
        remove_finalizer(client, resources, n, ORPHAN).await?;
    } else if n.finalizers.iter().any(|f| f == FOREGROUND) {
        if deps.is_empty() {
            remove_finalizer(client, resources, n, FOREGROUND).await?;
        } else {
            for dep in deps.iter().filter(|d| !d.deleting) {
                delete(client, resources, dep, DeleteParams::foreground()).await?;
            }
        }
    }
    Ok(())
}

fn api_for(client: &Client, resources: &[Resource], n: &Node) -> Api<DynamicObject> {
    let r = &resources[n.resource];
    match (&n.namespace, r.namespaced) {
        (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &r.ar),
        _ => Api::all_with(client.clone(), &r.ar),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(uid: &str, owners: &[&str]) -> Node {
        Node {
            resource: 0,
            namespace: Some("default".into()),
            name: uid.into(),
            uid: uid.into(),
            deleting: false,
            finalizers: Vec::new(),
            owners: owners.iter().map(|o| ((*o).to_owned(), "apps/v1".to_owned(), format!("ReplicaSet/{o}"))).collect(),
        }
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn events_touch_the_object_its_owners_and_when_it_goes_its_dependents() {
        let mut g = Graph::default();
        assert_eq!(sorted(g.upsert(node("rs", &[]))), ["rs"]);
        assert_eq!(sorted(g.upsert(node("pod1", &["rs"]))), ["pod1", "rs"]);
        assert_eq!(sorted(g.upsert(node("pod2", &["rs"]))), ["pod2", "rs"]);
        assert!(g.upsert(node("pod2", &["rs"])).is_empty(), "an unchanged object touches nothing");
        assert_eq!(g.dependents_of("rs").len(), 2);
        assert_eq!(sorted(g.remove("rs")), ["pod1", "pod2"], "the owner gone: its dependents");
        assert_eq!(sorted(g.remove("pod1")), ["rs"], "a dependent gone: its owner (a foreground wait)");
        // A dependent that changes owners leaves the old owner's list.
        g.upsert(node("pod2", &["rs2"]));
        assert!(g.dependents_of("rs").is_empty());
        assert_eq!(g.dependents_of("rs2").len(), 1);
        assert!(g.remove("nothing").is_empty());
    }
}
