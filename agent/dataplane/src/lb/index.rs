//! The desired LB state kept up to date one Service at a time.
//!
//! [`desired_state`] over every Service costs time proportional to the
//! cluster; a watcher that called it on every event would do 10,000 full
//! recomputations for a burst of 10,000 Service events. [`ServiceIndex`]
//! keeps each Service's own fragment (the pure function run on that Service
//! and its EndpointSlices alone) and merges fragments into one
//! [`DesiredMaps`]: an event marks its Service dirty (O(1)), and
//! [`ServiceIndex::refresh`] recomputes only the dirty Services, each in time
//! proportional to that Service (plus a log factor for the merged maps).
//!
//! The merge keeps [`desired_state`]'s rule for a frontend claimed by two
//! Services: the first by namespace/name wins, and the loser takes over when
//! the winner goes away.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::apply::Changes;
use super::desired::{Backend, DesiredMaps, Frontend, FrontendSpec, GroupKey, desired_state};
use super::model::{EndpointSlice, Node, Service};

/// A namespaced object's (namespace, name).
pub type ObjectKey = (String, String);

/// Services and EndpointSlices by key, and the desired maps they make.
#[derive(Debug, Default)]
pub struct ServiceIndex {
    node: Node,
    services: HashMap<ObjectKey, Service>,
    /// By the slice's own (namespace, name).
    slices: HashMap<ObjectKey, EndpointSlice>,
    /// Slice names of each Service (namespace, service name).
    slices_of: HashMap<ObjectKey, BTreeSet<String>>,
    fragments: HashMap<ObjectKey, DesiredMaps>,
    /// Services claiming each frontend, first (the winner) first.
    claims: BTreeMap<Frontend, BTreeSet<ObjectKey>>,
    /// How many merged frontends use each group.
    group_refs: HashMap<GroupKey, usize>,
    merged: DesiredMaps,
    /// Frontends claimed by more than one Service.
    conflicted: BTreeSet<Frontend>,
    dirty: BTreeSet<ObjectKey>,
    /// Merged frontends and groups the refreshes since the last
    /// [`Self::take_changes`] touched.
    changes: Changes,
}

/// What one [`ServiceIndex::refresh`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefreshStats {
    /// Services whose fragment was recomputed.
    pub recomputed: usize,
}

impl ServiceIndex {
    pub fn new(node: Node) -> Self {
        Self { node, ..Self::default() }
    }

    /// Replaces this node's identity (its NodePort addresses); every Service
    /// is recomputed at the next refresh.
    pub fn set_node(&mut self, node: Node) {
        if node != self.node {
            self.node = node;
            self.dirty.extend(self.services.keys().cloned());
        }
    }

    /// Adds or replaces a Service.
    pub fn upsert_service(&mut self, svc: Service) {
        let key = (svc.namespace.clone(), svc.name.clone());
        if self.services.get(&key) != Some(&svc) {
            self.services.insert(key.clone(), svc);
            self.dirty.insert(key);
        }
    }

    pub fn remove_service(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        if self.services.remove(&key).is_some() {
            self.dirty.insert(key);
        }
    }

    /// Adds or replaces the EndpointSlice `name` (its own name; the Service
    /// it belongs to is `slice.service_name`).
    pub fn upsert_slice(&mut self, name: &str, slice: EndpointSlice) {
        let key = (slice.namespace.clone(), name.to_owned());
        if self.slices.get(&key) == Some(&slice) {
            return;
        }
        self.remove_slice(&slice.namespace, name);
        let svc = (slice.namespace.clone(), slice.service_name.clone());
        self.slices_of.entry(svc.clone()).or_default().insert(name.to_owned());
        self.slices.insert(key, slice);
        self.dirty.insert(svc);
    }

    pub fn remove_slice(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        let Some(old) = self.slices.remove(&key) else { return };
        let svc = (old.namespace, old.service_name);
        if let Some(names) = self.slices_of.get_mut(&svc) {
            names.remove(name);
            if names.is_empty() {
                self.slices_of.remove(&svc);
            }
        }
        self.dirty.insert(svc);
    }

    /// Keys of the Services currently known.
    pub fn service_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.services.keys()
    }

    /// Keys of the EndpointSlices currently known.
    pub fn slice_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.slices.keys()
    }

    /// Services changed since the last refresh.
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    /// Recomputes the dirty Services and merges them into [`Self::desired`].
    pub fn refresh(&mut self) -> RefreshStats {
        let dirty = std::mem::take(&mut self.dirty);
        let recomputed = dirty.len();
        for key in dirty {
            self.recompute(&key);
        }
        self.merged.conflicts = self.conflicted.iter().copied().collect();
        RefreshStats { recomputed }
    }

    /// What the refreshes since the last call changed in [`Self::desired`]:
    /// the frontends and groups an [`super::apply_changes`] has to look at.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// The desired LB maps as of the last refresh.
    pub fn desired(&self) -> &DesiredMaps {
        &self.merged
    }

    /// Services that lost a frontend to another Service: (frontend, loser).
    pub fn conflict_losers(&self) -> Vec<(Frontend, ObjectKey)> {
        self.merged
            .conflicts
            .iter()
            .filter_map(|fe| self.claims.get(fe).map(|c| (fe, c)))
            .flat_map(|(fe, c)| c.iter().skip(1).map(move |k| (*fe, k.clone())))
            .collect()
    }

    fn recompute(&mut self, key: &ObjectKey) {
        let old = self.fragments.remove(key).unwrap_or_default();
        let new = match self.services.get(key) {
            Some(svc) => {
                let slices: Vec<EndpointSlice> = self
                    .slices_of
                    .get(key)
                    .into_iter()
                    .flatten()
                    .filter_map(|name| self.slices.get(&(key.0.clone(), name.clone())).cloned())
                    .collect();
                desired_state(&self.node, std::slice::from_ref(svc), &slices)
            }
            None => DesiredMaps::default(),
        };
        let touched: BTreeSet<Frontend> = old.frontends.keys().chain(new.frontends.keys()).copied().collect();
        // Every frontend and group of this Service, before and after: a
        // group's new backend count is written into its frontends.
        self.changes.frontends.extend(touched.iter().copied());
        self.changes.groups.extend(old.groups.keys().chain(new.groups.keys()).cloned());
        for fe in old.frontends.keys().filter(|fe| !new.frontends.contains_key(*fe)) {
            if let Some(c) = self.claims.get_mut(fe) {
                c.remove(key);
                match c.len() {
                    0 => {
                        self.claims.remove(fe);
                    }
                    1 => {
                        self.conflicted.remove(fe);
                    }
                    _ => {}
                }
            }
        }
        for fe in new.frontends.keys() {
            let c = self.claims.entry(*fe).or_default();
            c.insert(key.clone());
            if c.len() > 1 {
                self.conflicted.insert(*fe);
            }
        }
        let groups: Vec<(GroupKey, Vec<Backend>)> = new.groups.iter().map(|(g, b)| (g.clone(), b.clone())).collect();
        if self.services.contains_key(key) {
            self.fragments.insert(key.clone(), new);
        }
        for fe in touched {
            let spec = self
                .claims
                .get(&fe)
                .and_then(|c| c.first())
                .and_then(|winner| self.fragments.get(winner))
                .and_then(|f| f.frontends.get(&fe))
                .cloned();
            self.set_frontend(fe, spec);
        }
        // Backends of this Service's groups that merged frontends use.
        for (g, backends) in groups {
            if self.group_refs.contains_key(&g) {
                self.merged.groups.insert(g, backends);
            }
        }
    }

    fn set_frontend(&mut self, fe: Frontend, spec: Option<FrontendSpec>) {
        if self.merged.frontends.get(&fe) == spec.as_ref() {
            return;
        }
        if let Some(old) = self.merged.frontends.remove(&fe) {
            self.changes.groups.insert(old.group.clone());
            self.release_group(&old.group);
        }
        if let Some(spec) = spec {
            self.changes.groups.insert(spec.group.clone());
            self.use_group(&spec.group);
            self.merged.frontends.insert(fe, spec);
        }
    }

    fn use_group(&mut self, g: &GroupKey) {
        let n = self.group_refs.entry(g.clone()).or_default();
        *n += 1;
        if *n == 1 {
            let key = (g.namespace.clone(), g.service.clone());
            let backends = self.fragments.get(&key).and_then(|f| f.groups.get(g)).cloned().unwrap_or_default();
            self.merged.groups.insert(g.clone(), backends);
        }
    }

    fn release_group(&mut self, g: &GroupKey) {
        if let Some(n) = self.group_refs.get_mut(g) {
            *n -= 1;
            if *n == 0 {
                self.group_refs.remove(g);
                self.merged.groups.remove(g);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::lb::model::{Endpoint, EndpointPort, Protocol, ServicePort};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test address")
    }

    fn node() -> Node {
        Node { name: "n1".into(), addresses: vec![ip("10.9.0.1")] }
    }

    fn svc(name: &str, vip: &str, node_port: Option<u16>) -> Service {
        Service {
            namespace: "default".into(),
            name: name.into(),
            cluster_ips: vec![ip(vip)],
            ports: vec![ServicePort { name: "http".into(), protocol: Protocol::Tcp, port: 80, node_port }],
            ..Default::default()
        }
    }

    fn slice(svc: &str, addrs: &[&str]) -> EndpointSlice {
        EndpointSlice {
            namespace: "default".into(),
            service_name: svc.into(),
            ports: vec![EndpointPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 }],
            endpoints: addrs.iter().map(|a| Endpoint::ready(ip(a), "n1")).collect(),
        }
    }

    /// The index must always agree with the pure function over everything.
    fn check(index: &ServiceIndex, services: &[Service], slices: &[EndpointSlice]) {
        let full = desired_state(&node(), services, slices);
        let got = index.desired();
        assert_eq!(got.frontends, full.frontends);
        assert_eq!(got.groups, full.groups);
        let want: BTreeSet<Frontend> = full.conflicts.iter().copied().collect();
        assert_eq!(got.conflicts.iter().copied().collect::<BTreeSet<_>>(), want);
    }

    #[test]
    fn services_and_slices_in_any_order_give_what_the_pure_function_gives() {
        let mut index = ServiceIndex::new(node());
        index.upsert_slice("a-1", slice("a", &["10.244.0.2"]));
        index.upsert_service(svc("a", "10.96.0.1", Some(30080)));
        index.upsert_service(svc("b", "10.96.0.2", None));
        index.refresh();
        check(
            &index,
            &[svc("a", "10.96.0.1", Some(30080)), svc("b", "10.96.0.2", None)],
            &[slice("a", &["10.244.0.2"])],
        );
        index.upsert_slice("a-2", slice("a", &["10.244.0.3"]));
        index.upsert_slice("b-1", slice("b", &["10.244.0.4"]));
        index.refresh();
        check(
            &index,
            &[svc("a", "10.96.0.1", Some(30080)), svc("b", "10.96.0.2", None)],
            &[slice("a", &["10.244.0.2"]), slice("a", &["10.244.0.3"]), slice("b", &["10.244.0.4"])],
        );
        index.remove_slice("default", "a-1");
        index.remove_service("default", "b");
        index.refresh();
        check(&index, &[svc("a", "10.96.0.1", Some(30080))], &[slice("a", &["10.244.0.3"])]);
    }

    #[test]
    fn a_burst_of_events_recomputes_each_changed_service_once() {
        let mut index = ServiceIndex::new(node());
        for i in 0..1000u32 {
            let vip = Ipv4Addr::from(0x0a60_0000 + i).to_string();
            index.upsert_service(svc(&format!("s{i}"), &vip, None));
            index.upsert_service(svc(&format!("s{i}"), &vip, Some(30000 + (i % 2000) as u16)));
        }
        assert_eq!(index.refresh().recomputed, 1000);
        assert_eq!(index.desired().frontends.len(), 2000 - index.desired().conflicts.len());
        // One Service changes: one recomputation, not a thousand.
        index.upsert_slice("s7-x", slice("s7", &["10.244.0.7"]));
        assert_eq!(index.refresh().recomputed, 1);
        // An unchanged object marks nothing.
        index.upsert_slice("s7-x", slice("s7", &["10.244.0.7"]));
        assert_eq!(index.refresh().recomputed, 0);
    }

    #[test]
    fn the_loser_of_a_frontend_conflict_takes_over_when_the_winner_goes() {
        let mut index = ServiceIndex::new(node());
        index.upsert_service(svc("zzz", "10.96.0.1", None));
        index.upsert_slice("zzz-1", slice("zzz", &["10.244.0.9"]));
        index.upsert_service(svc("aaa", "10.96.0.1", None));
        index.refresh();
        let all = [svc("aaa", "10.96.0.1", None), svc("zzz", "10.96.0.1", None)];
        check(&index, &all, &[slice("zzz", &["10.244.0.9"])]);
        assert_eq!(index.conflict_losers().len(), 1);
        assert_eq!(index.conflict_losers()[0].1.1, "zzz");
        index.remove_service("default", "aaa");
        index.refresh();
        check(&index, &all[1..], &[slice("zzz", &["10.244.0.9"])]);
        assert!(index.conflict_losers().is_empty());
        assert_eq!(index.desired().groups.values().next().map(Vec::len), Some(1), "zzz's backend is used now");
    }

    #[test]
    fn a_slice_moving_to_another_service_leaves_the_first_one() {
        let mut index = ServiceIndex::new(node());
        index.upsert_service(svc("a", "10.96.0.1", None));
        index.upsert_service(svc("b", "10.96.0.2", None));
        index.upsert_slice("x", slice("a", &["10.244.0.2"]));
        index.refresh();
        index.upsert_slice("x", slice("b", &["10.244.0.2"]));
        assert_eq!(index.refresh().recomputed, 2);
        check(&index, &[svc("a", "10.96.0.1", None), svc("b", "10.96.0.2", None)], &[slice("b", &["10.244.0.2"])]);
    }
}
