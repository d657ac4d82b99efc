//! Objects of one kind by the uid of their controller (upstream's
//! controller-uid indexer), kept by a shared informer from the watch events,
//! so a controller finds its pods without scanning every pod in the cluster.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::pod_state;

#[derive(Debug)]
struct Inner<K: Resource<DynamicType = ()> + 'static> {
    by_owner: HashMap<String, HashSet<ObjectRef<K>>>,
    owner_of: HashMap<ObjectRef<K>, String>,
    /// During a relist: what it has listed so far.
    relisted: Option<HashSet<ObjectRef<K>>>,
}

#[derive(Debug)]
pub struct OwnerIndex<K: Resource<DynamicType = ()> + 'static> {
    inner: RwLock<Inner<K>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Default for OwnerIndex<K> {
    fn default() -> Self {
        Self { inner: RwLock::new(Inner { by_owner: HashMap::new(), owner_of: HashMap::new(), relisted: None }) }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> OwnerIndex<K> {
    /// Takes in one watch event (after the store has).
    pub fn apply(&self, event: &watcher::Event<K>) {
        let Ok(mut inner) = self.inner.write() else { return };
        match event {
            watcher::Event::Apply(o) => inner.upsert(o),
            watcher::Event::Delete(o) => inner.remove(&ObjectRef::from_obj(o)),
            watcher::Event::Init => inner.relisted = Some(HashSet::new()),
            watcher::Event::InitApply(o) => {
                inner.upsert(o);
                if let Some(seen) = inner.relisted.as_mut() {
                    seen.insert(ObjectRef::from_obj(o));
                }
            }
            // What the relist did not return is gone, as in the store.
            watcher::Event::InitDone => {
                if let Some(seen) = inner.relisted.take() {
                    let gone: Vec<ObjectRef<K>> =
                        inner.owner_of.keys().filter(|r| !seen.contains(r)).cloned().collect();
                    for r in &gone {
                        inner.remove(r);
                    }
                }
            }
        }
    }

    /// The objects in `store` whose controller is `owner` (in its namespace).
    pub fn controlled_by(&self, store: &Store<K>, owner: &impl Resource) -> Vec<Arc<K>> {
        let (ns, uid) = (owner.meta().namespace.clone(), owner.meta().uid.clone().unwrap_or_default());
        let Ok(inner) = self.inner.read() else { return Vec::new() };
        let Some(refs) = inner.by_owner.get(&uid) else { return Vec::new() };
        refs.iter()
            .filter_map(|r| store.get(r))
            // The store is the truth: the index may run a moment ahead of it.
            .filter(|o| o.meta().namespace == ns && pod_state::is_controlled_by(o.as_ref(), &uid))
            .collect()
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Inner<K> {
    fn upsert(&mut self, obj: &K) {
        let r = ObjectRef::from_obj(obj);
        let owner = pod_state::controller_of(obj).map(|o| o.uid.clone());
        if self.owner_of.get(&r) == owner.as_ref() {
            return;
        }
        self.remove(&r);
        if let Some(uid) = owner {
            self.by_owner.entry(uid.clone()).or_default().insert(r.clone());
            self.owner_of.insert(r, uid);
        }
    }

    fn remove(&mut self, r: &ObjectRef<K>) {
        if let Some(uid) = self.owner_of.remove(r)
            && let Some(set) = self.by_owner.get_mut(&uid)
        {
            set.remove(r);
            if set.is_empty() {
                self.by_owner.remove(&uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use kube::runtime::reflector;

    fn pod(name: &str, owner: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                owner_references: owner
                    .map(|uid| vec![OwnerReference { uid: uid.into(), controller: Some(true), ..Default::default() }]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn owner(uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta { namespace: Some("ns".into()), uid: Some(uid.into()), ..Default::default() },
            ..Default::default()
        }
    }

    fn names(v: Vec<Arc<Pod>>) -> Vec<String> {
        let mut n: Vec<String> = v.iter().filter_map(|p| p.metadata.name.clone()).collect();
        n.sort();
        n
    }

    #[test]
    fn the_index_follows_applies_deletes_owner_changes_and_relists() {
        let (store, mut writer) = reflector::store::<Pod>();
        let index = OwnerIndex::default();
        let mut feed = |e: watcher::Event<Pod>| {
            writer.apply_watcher_event(&e);
            index.apply(&e);
        };
        feed(watcher::Event::Init);
        feed(watcher::Event::InitApply(pod("a", Some("rs1"))));
        feed(watcher::Event::InitApply(pod("b", Some("rs1"))));
        feed(watcher::Event::InitApply(pod("c", Some("rs2"))));
        feed(watcher::Event::InitApply(pod("d", None)));
        feed(watcher::Event::InitDone);
        assert_eq!(names(index.controlled_by(&store, &owner("rs1"))), ["a", "b"]);

        // Released by rs1, adopted by rs2; then one deleted.
        feed(watcher::Event::Apply(pod("b", Some("rs2"))));
        feed(watcher::Event::Delete(pod("c", Some("rs2"))));
        assert_eq!(names(index.controlled_by(&store, &owner("rs1"))), ["a"]);
        assert_eq!(names(index.controlled_by(&store, &owner("rs2"))), ["b"]);

        // A relist that no longer has "a" (deleted while the watch was down).
        feed(watcher::Event::Init);
        feed(watcher::Event::InitApply(pod("b", Some("rs2"))));
        feed(watcher::Event::InitDone);
        assert!(index.controlled_by(&store, &owner("rs1")).is_empty());
        assert_eq!(names(index.controlled_by(&store, &owner("rs2"))), ["b"]);
        let inner = index.inner.read().expect("lock");
        assert_eq!(inner.owner_of.len(), 1, "nothing stale is kept");
    }

    #[test]
    fn owners_in_other_namespaces_get_nothing() {
        let (store, mut writer) = reflector::store::<Pod>();
        let index = OwnerIndex::default();
        let e = watcher::Event::Apply(pod("a", Some("u")));
        writer.apply_watcher_event(&e);
        index.apply(&e);
        let mut elsewhere = owner("u");
        elsewhere.metadata.namespace = Some("other".into());
        assert!(index.controlled_by(&store, &elsewhere).is_empty());
    }
}
