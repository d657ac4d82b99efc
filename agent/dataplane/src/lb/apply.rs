//! The stateful half of the LB reconciler: turns [`DesiredMaps`] into map
//! writes, writing only what differs from [`Current`], and allocating the
//! ids the kernel maps are keyed by (backend ids, Maglev rows, rev-NAT
//! indexes) so that they stay stable from one reconcile to the next.
//!
//! Order of writes, so a packet never sees a frontend pointing at nothing:
//! stale frontends out (frees capacity) → new backends in → Maglev rows →
//! frontends in → stale rows freed (and their affinity pins forgotten) →
//! stale backends out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use waggle_ebpf_common::lb::{BACKEND_ACTIVE, BackendV1, MAGLEV_M, RevNatV1, ServiceKeyV1, ServiceValueV1, names};

use super::desired::{Backend, DesiredMaps, Frontend, GroupKey};
use super::maglev::maglev_table;
use super::model::Protocol;
use crate::Error;
use crate::maps::{AffinityMapWriter, BackendMapWriter, MaglevMapWriter, RevNatMapWriter, ServiceMapWriter};

/// The maps the reconciler writes (kernel maps or fakes).
pub struct LbWriters<'a> {
    pub services: &'a mut dyn ServiceMapWriter,
    pub backends: &'a mut dyn BackendMapWriter,
    pub maglev: &'a mut dyn MaglevMapWriter,
    pub rev_nat: &'a mut dyn RevNatMapWriter,
    pub affinity: &'a mut dyn AffinityMapWriter,
}

impl std::fmt::Debug for LbWriters<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LbWriters").finish_non_exhaustive()
    }
}

/// How many writes one [`apply_diff`] made, per map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub services: usize,
    pub backends: usize,
    /// Maglev rows written (each one syscall, the whole row).
    pub maglev_rows: usize,
    pub rev_nat: usize,
    pub affinity_forgotten: usize,
}

impl ApplyStats {
    pub fn total(&self) -> usize {
        self.services + self.backends + self.maglev_rows + self.rev_nat + self.affinity_forgotten
    }
}

#[derive(Clone, Debug)]
struct Group {
    row: u32,
    backends: Vec<Backend>,
    /// Backend ids in the row's slots; `None` when the row's content is not
    /// known (freshly allocated), so every slot gets written.
    table: Option<Vec<u32>>,
}

/// Frontends and groups whose desired state may differ from what the maps
/// hold: what [`apply_changes`] looks at, and all it looks at.
/// [`super::ServiceIndex`] collects them as Services change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub frontends: BTreeSet<Frontend>,
    pub groups: BTreeSet<GroupKey>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty() && self.groups.is_empty()
    }

    /// Adds `other`'s keys (a failed apply's changes are retried with the
    /// next ones).
    pub fn extend(&mut self, other: Changes) {
        self.frontends.extend(other.frontends);
        self.groups.extend(other.groups);
    }
}

/// What the LB maps hold, mirrored in memory so a reconcile reads nothing
/// from the kernel. Built once from the (pinned) maps at start-up.
#[derive(Clone, Debug, Default)]
pub struct Current {
    frontends: BTreeMap<ServiceKeyV1, ServiceValueV1>,
    rev_nat: BTreeMap<u32, RevNatV1>,
    backends: BTreeMap<Backend, u32>,
    /// The ids of `backends`.
    backend_ids: BTreeSet<u32>,
    /// How many groups list each backend; at 0 it leaves the map.
    backend_refs: BTreeMap<Backend, u32>,
    groups: BTreeMap<GroupKey, Group>,
    rows_in_use: BTreeSet<u32>,
    /// How many frontends in the map point at each Maglev row: a row stays
    /// reserved while one does.
    row_refs: BTreeMap<u32, u32>,
    next_backend_id: u32,
    next_rev_nat: u32,
    next_row: u32,
}

impl Current {
    /// Reads the maps as a previous agent left them. Maglev rows are read
    /// lazily, when a desired Service port adopts the row its frontend uses.
    pub fn read(writers: &LbWriters<'_>) -> Result<Self, Error> {
        let mut cur = Current { rev_nat: writers.rev_nat.entries()?.into_iter().collect(), ..Current::default() };
        for (key, value) in writers.services.entries()? {
            cur.insert_frontend(key, value);
        }
        for (id, b) in writers.backends.entries()? {
            if let Some(backend) = backend_of(&b) {
                cur.backends.insert(backend, id);
                cur.backend_ids.insert(id);
            }
        }
        tracing::info!(
            frontends = cur.frontends.len(),
            backends = cur.backends.len(),
            "read the LB maps left by the previous agent"
        );
        Ok(cur)
    }

    pub fn frontend_count(&self) -> usize {
        self.frontends.len()
    }

    /// Whether `fe` is in the kernel map with a Maglev row of its own group,
    /// i.e. traffic to it is load balanced as desired.
    pub fn is_programmed(&self, fe: &Frontend, spec: &super::desired::FrontendSpec) -> bool {
        self.frontends.contains_key(&key_of(fe)) && self.groups.contains_key(&spec.group)
    }

    fn insert_frontend(&mut self, key: ServiceKeyV1, value: ServiceValueV1) {
        if let Some(old) = self.frontends.insert(key, value) {
            self.release_row(old.maglev_row);
        }
        *self.row_refs.entry(value.maglev_row).or_default() += 1;
    }

    fn remove_frontend(&mut self, key: &ServiceKeyV1) -> Option<ServiceValueV1> {
        let old = self.frontends.remove(key)?;
        self.release_row(old.maglev_row);
        Some(old)
    }

    fn release_row(&mut self, row: u32) {
        if let Some(n) = self.row_refs.get_mut(&row) {
            *n -= 1;
            if *n == 0 {
                self.row_refs.remove(&row);
            }
        }
    }

    /// Replaces the backends `group` lists, keeping the reference counts;
    /// backends nothing lists any more are pushed to `released`.
    fn set_group_backends(
        group: &mut Group,
        refs: &mut BTreeMap<Backend, u32>,
        new: &[Backend],
        released: &mut Vec<Backend>,
    ) {
        for b in new {
            *refs.entry(*b).or_default() += 1;
        }
        for b in std::mem::replace(&mut group.backends, new.to_vec()) {
            unref_backend(refs, b, released);
        }
    }
}

fn unref_backend(refs: &mut BTreeMap<Backend, u32>, b: Backend, released: &mut Vec<Backend>) {
    if let Some(n) = refs.get_mut(&b) {
        *n -= 1;
        if *n == 0 {
            refs.remove(&b);
            released.push(b);
        }
    }
}

fn backend_of(b: &BackendV1) -> Option<Backend> {
    let protocol = match b.proto {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        _ => return None,
    };
    Some(Backend { addr: Ipv4Addr::from(b.addr_be.to_ne_bytes()), port: u16::from_be(b.port_be), protocol })
}

fn key_of(fe: &Frontend) -> ServiceKeyV1 {
    ServiceKeyV1 {
        addr_be: u32::from_ne_bytes(fe.addr.octets()),
        port_be: fe.port.to_be(),
        proto: fe.protocol.number(),
        _pad: 0,
    }
}

/// Lowest free id at or after `hint` (wrapping within `1..=max`).
fn alloc_id(used: impl Fn(u32) -> bool, hint: &mut u32, max: u32) -> Option<u32> {
    for _ in 0..max {
        let id = if *hint == 0 || *hint > max { 1 } else { *hint };
        *hint = id + 1;
        if !used(id) {
            return Some(id);
        }
    }
    None
}

/// Brings the maps from `current` to `desired`, writing only what changed,
/// and keeps `current` in step with every successful write (so after an
/// error, the next call retries just what is missing). A full map is an
/// error, logged here and returned.
///
/// This compares every frontend and group: for start-up (adopting what a
/// previous agent left, removing what nothing wants) and for callers that
/// hold no [`Changes`]. A proxy that does uses [`apply_changes`], whose
/// cost follows the size of the change, not of the cluster.
pub fn apply_diff(current: &mut Current, desired: &DesiredMaps, w: &mut LbWriters<'_>) -> Result<ApplyStats, Error> {
    let changes = Changes {
        frontends: desired.frontends.keys().copied().collect(),
        groups: desired.groups.keys().chain(current.groups.keys()).cloned().collect(),
    };
    apply(current, desired, &changes, true, w)
}

/// Brings the entries named by `changes` from `current` to `desired`; the
/// rest is taken to be in step already (it was, after the last apply, and
/// nothing changed it). Time and writes grow with `changes` only.
pub fn apply_changes(
    current: &mut Current,
    desired: &DesiredMaps,
    changes: &Changes,
    w: &mut LbWriters<'_>,
) -> Result<ApplyStats, Error> {
    apply(current, desired, changes, false, w)
}

fn apply(
    current: &mut Current,
    desired: &DesiredMaps,
    changes: &Changes,
    full: bool,
    w: &mut LbWriters<'_>,
) -> Result<ApplyStats, Error> {
    let mut stats = ApplyStats::default();
    let result = apply_inner(current, desired, changes, full, w, &mut stats);
    if let Err(err) = &result {
        tracing::error!(error = %err, ?stats, "applying the Service maps stopped");
    } else if stats.total() > 0 {
        tracing::debug!(?stats, "applied the Service maps");
    }
    result.map(|()| stats)
}

fn apply_inner(
    cur: &mut Current,
    desired: &DesiredMaps,
    ch: &Changes,
    full: bool,
    w: &mut LbWriters<'_>,
    stats: &mut ApplyStats,
) -> Result<(), Error> {
    // 1. Stale frontends out, with their reverse NAT.
    let stale: Vec<ServiceKeyV1> = if full {
        let wanted: BTreeSet<ServiceKeyV1> = desired.frontends.keys().map(key_of).collect();
        cur.frontends.keys().filter(|k| !wanted.contains(k)).copied().collect()
    } else {
        ch.frontends.iter().filter(|fe| !desired.frontends.contains_key(fe)).map(key_of).collect()
    };
    for key in stale {
        let Some(value) = cur.frontends.get(&key).copied() else { continue };
        w.services.remove(&key)?;
        cur.remove_frontend(&key);
        stats.services += 1;
        w.rev_nat.remove(&value.rev_nat_index)?;
        cur.rev_nat.remove(&value.rev_nat_index);
        stats.rev_nat += 1;
    }
    if full {
        // Reverse-NAT entries no frontend uses (left by an interrupted agent).
        let used_rev: BTreeSet<u32> = cur.frontends.values().map(|v| v.rev_nat_index).collect();
        let orphans: Vec<u32> = cur.rev_nat.keys().filter(|i| !used_rev.contains(i)).copied().collect();
        for idx in orphans {
            w.rev_nat.remove(&idx)?;
            cur.rev_nat.remove(&idx);
            stats.rev_nat += 1;
        }
    }

    // 2. New backends in.
    for b in ch.groups.iter().filter_map(|g| desired.groups.get(g)).flatten() {
        if cur.backends.contains_key(b) {
            continue;
        }
        let ids = &cur.backend_ids;
        let id = alloc_id(|id| ids.contains(&id), &mut cur.next_backend_id, w.backends.capacity())
            .ok_or(Error::MapFull { name: names::BACKENDS, capacity: w.backends.capacity() })?;
        let value = BackendV1 {
            addr_be: u32::from_ne_bytes(b.addr.octets()),
            port_be: b.port.to_be(),
            proto: b.protocol.number(),
            state: BACKEND_ACTIVE,
        };
        w.backends.upsert(id, value)?;
        cur.backends.insert(*b, id);
        cur.backend_ids.insert(id);
        stats.backends += 1;
    }

    // 3. Maglev rows.
    let mut frontends_of: BTreeMap<&GroupKey, Vec<ServiceKeyV1>> = BTreeMap::new();
    for fe in &ch.frontends {
        if let Some(spec) = desired.frontends.get(fe) {
            frontends_of.entry(&spec.group).or_default().push(key_of(fe));
        }
    }
    let mut released: Vec<Backend> = Vec::new();
    for gk in &ch.groups {
        let Some(backends) = desired.groups.get(gk) else { continue };
        if !cur.groups.contains_key(gk) {
            let keys = frontends_of.get(gk).map(Vec::as_slice).unwrap_or_default();
            let group = adopt_or_allocate_row(cur, keys, w)?;
            cur.groups.insert(gk.clone(), group);
        }
        let Some(group) = cur.groups.get_mut(gk) else { continue };
        if group.table.is_some() && group.backends == *backends {
            continue;
        }
        if !backends.is_empty() {
            let identities: Vec<String> = backends.iter().map(Backend::identity).collect();
            let ids: Vec<u32> = maglev_table(&identities, MAGLEV_M)
                .into_iter()
                .map(|i| cur.backends.get(&backends[i as usize]).copied().unwrap_or(0))
                .collect();
            if group.table.as_ref() != Some(&ids) {
                w.maglev.write_row(group.row, &ids)?;
                stats.maglev_rows += 1;
            }
            group.table = Some(ids);
        }
        // An empty group keeps its row's old slots: with backend_count 0 the
        // kernel never reads them.
        Current::set_group_backends(group, &mut cur.backend_refs, backends, &mut released);
    }

    // 4. Frontends in (new or changed), reverse NAT first.
    for (fe, spec) in ch.frontends.iter().filter_map(|fe| desired.frontends.get_key_value(fe)) {
        let key = key_of(fe);
        let Some(group) = cur.groups.get(&spec.group) else { continue };
        let (row, backend_count) = (group.row, group.backends.len() as u32);
        let rev_nat_index = match cur.frontends.get(&key) {
            Some(v) => v.rev_nat_index,
            None => {
                let used = &cur.rev_nat;
                alloc_id(|i| used.contains_key(&i), &mut cur.next_rev_nat, w.rev_nat.capacity())
                    .ok_or(Error::MapFull { name: names::REV_NAT, capacity: w.rev_nat.capacity() })?
            }
        };
        let rev = RevNatV1 { addr_be: key.addr_be, port_be: key.port_be, _pad: 0 };
        if cur.rev_nat.get(&rev_nat_index) != Some(&rev) {
            w.rev_nat.upsert(rev_nat_index, rev)?;
            cur.rev_nat.insert(rev_nat_index, rev);
            stats.rev_nat += 1;
        }
        let value = ServiceValueV1 {
            maglev_row: row,
            backend_count,
            affinity_timeout_s: spec.affinity_timeout_s,
            rev_nat_index,
            flags: spec.flags,
            _pad: [0; 3],
        };
        if cur.frontends.get(&key) != Some(&value) {
            w.services.upsert(key, value)?;
            cur.insert_frontend(key, value);
            stats.services += 1;
        }
    }

    // 5. Rows no Service port uses any more.
    for gk in ch.groups.iter().filter(|g| !desired.groups.contains_key(*g)) {
        if let Some(group) = cur.groups.remove(gk) {
            stats.affinity_forgotten += w.affinity.forget_service(group.row)?;
            cur.rows_in_use.remove(&group.row);
            for b in group.backends {
                unref_backend(&mut cur.backend_refs, b, &mut released);
            }
        }
    }

    // 6. Backends no row uses any more (at start-up: also those the
    // previous agent left that no group lists).
    if full {
        released.extend(cur.backends.keys().filter(|b| !cur.backend_refs.contains_key(*b)).copied());
    }
    for b in released {
        if cur.backend_refs.contains_key(&b) {
            continue;
        }
        let Some(id) = cur.backends.remove(&b) else { continue };
        w.backends.remove(&id)?;
        cur.backend_ids.remove(&id);
        stats.backends += 1;
    }
    Ok(())
}

/// A Maglev row for a Service port this reconciler has not seen: the row one
/// of its frontends already uses in the (pinned) map, read back so an
/// unchanged row is not rewritten, or else the lowest free row.
fn adopt_or_allocate_row(cur: &mut Current, frontends: &[ServiceKeyV1], w: &LbWriters<'_>) -> Result<Group, Error> {
    let adoptable = frontends
        .iter()
        .filter_map(|key| cur.frontends.get(key))
        .map(|v| v.maglev_row)
        .find(|row| !cur.rows_in_use.contains(row) && *row < w.maglev.rows());
    if let Some(row) = adoptable {
        let table = w.maglev.read_row(row)?;
        cur.rows_in_use.insert(row);
        return Ok(Group { row, backends: Vec::new(), table: Some(table) });
    }
    let rows = w.maglev.rows();
    let (in_use, referenced) = (&cur.rows_in_use, &cur.row_refs);
    // Rows are 0-based; alloc_id hands out 1..=rows, hence the shifts. Rows
    // current frontends point at stay reserved until those are reconciled.
    let row = alloc_id(|r| in_use.contains(&(r - 1)) || referenced.contains_key(&(r - 1)), &mut cur.next_row, rows)
        .map(|r| r - 1)
        .ok_or(Error::MapFull { name: names::MAGLEV, capacity: rows })?;
    cur.rows_in_use.insert(row);
    Ok(Group { row, backends: Vec::new(), table: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::desired::desired_state;
    use crate::lb::model::{Endpoint, EndpointPort, EndpointSlice, Node, Service, ServicePort};
    use crate::maps::{FakeAffinityMap, FakeBackendMap, FakeMaglevMap, FakeRevNatMap, FakeServiceMap, KvMap};
    use waggle_ebpf_common::lb::{AffinityKeyV1, AffinityV1};

    struct Fakes {
        services: FakeServiceMap,
        backends: FakeBackendMap,
        maglev: FakeMaglevMap,
        rev_nat: FakeRevNatMap,
        affinity: FakeAffinityMap,
    }

    impl Fakes {
        fn new(services: u32, rows: u32) -> Self {
            Self {
                services: FakeServiceMap::new(names::SERVICES, services),
                backends: FakeBackendMap::new(names::BACKENDS, 1024),
                maglev: FakeMaglevMap::new(rows),
                rev_nat: FakeRevNatMap::new(names::REV_NAT, services),
                affinity: FakeAffinityMap::new(names::AFFINITY, 1024),
            }
        }
        fn writers(&mut self) -> LbWriters<'_> {
            LbWriters {
                services: &mut self.services,
                backends: &mut self.backends,
                maglev: &mut self.maglev,
                rev_nat: &mut self.rev_nat,
                affinity: &mut self.affinity,
            }
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test address")
    }

    fn svc(name: &str, vip: &str) -> Service {
        Service {
            namespace: "default".into(),
            name: name.into(),
            cluster_ips: vec![ip(vip)],
            ports: vec![ServicePort { name: "http".into(), protocol: Protocol::Tcp, port: 80, node_port: None }],
            ..Default::default()
        }
    }

    fn slice(name: &str, addrs: &[&str]) -> EndpointSlice {
        EndpointSlice {
            namespace: "default".into(),
            service_name: name.into(),
            ports: vec![EndpointPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 }],
            endpoints: addrs.iter().map(|a| Endpoint::ready(ip(a), "n1")).collect(),
        }
    }

    fn node() -> Node {
        Node { name: "n1".into(), addresses: vec![ip("10.9.0.1")] }
    }

    #[test]
    fn a_first_apply_writes_everything_and_a_second_writes_nothing() -> Result<(), Error> {
        let mut f = Fakes::new(16, 4);
        let desired = desired_state(&node(), &[svc("a", "10.96.0.1")], &[slice("a", &["10.244.0.2", "10.244.0.3"])]);
        let mut cur = Current::default();
        let first = apply_diff(&mut cur, &desired, &mut f.writers())?;
        assert_eq!(first.services, 1);
        assert_eq!(first.backends, 2);
        assert_eq!(first.rev_nat, 1);
        assert_eq!(first.maglev_rows, 1);
        let (key, value) = f.services.entries()?[0];
        assert_eq!(key.port_be, 80u16.to_be());
        assert_eq!(value.backend_count, 2);
        let row = f.maglev.read_row(value.maglev_row)?;
        assert!(row.iter().all(|id| f.backends.entries.contains_key(id)), "every slot names a written backend");
        let second = apply_diff(&mut cur, &desired, &mut f.writers())?;
        assert_eq!(second, ApplyStats::default());
        Ok(())
    }

    #[test]
    fn removing_one_backend_rewrites_its_row_once_and_the_count() -> Result<(), Error> {
        let mut f = Fakes::new(16, 4);
        let mut cur = Current::default();
        let three = desired_state(
            &node(),
            &[svc("a", "10.96.0.1")],
            &[slice("a", &["10.244.0.2", "10.244.0.3", "10.244.0.4"])],
        );
        apply_diff(&mut cur, &three, &mut f.writers())?;
        let two = desired_state(&node(), &[svc("a", "10.96.0.1")], &[slice("a", &["10.244.0.2", "10.244.0.3"])]);
        let stats = apply_diff(&mut cur, &two, &mut f.writers())?;
        assert_eq!(stats.services, 1, "backend_count changes");
        assert_eq!(stats.backends, 1, "one backend deleted");
        assert_eq!(stats.rev_nat, 0);
        assert_eq!(stats.maglev_rows, 1, "the row is replaced in one write");
        let row = f.maglev.read_row(f.services.entries()?[0].1.maglev_row)?;
        assert_eq!(f.backends.entries.len(), 2);
        assert!(row.iter().all(|id| f.backends.entries.contains_key(id)), "no slot names the removed backend");
        Ok(())
    }

    #[test]
    fn adding_a_service_leaves_the_others_untouched() -> Result<(), Error> {
        let mut f = Fakes::new(16, 4);
        let mut cur = Current::default();
        let one = desired_state(&node(), &[svc("a", "10.96.0.1")], &[slice("a", &["10.244.0.2"])]);
        apply_diff(&mut cur, &one, &mut f.writers())?;
        let before = f.services.entries()?[0];
        let two = desired_state(
            &node(),
            &[svc("a", "10.96.0.1"), svc("b", "10.96.0.2")],
            &[slice("a", &["10.244.0.2"]), slice("b", &["10.244.0.5"])],
        );
        let stats = apply_diff(&mut cur, &two, &mut f.writers())?;
        assert_eq!((stats.services, stats.backends, stats.rev_nat), (1, 1, 1));
        assert_eq!(stats.maglev_rows, 1);
        assert!(f.services.entries()?.contains(&before));
        Ok(())
    }

    #[test]
    fn deleting_a_service_frees_its_entries_and_forgets_its_affinity() -> Result<(), Error> {
        let mut f = Fakes::new(16, 4);
        let mut cur = Current::default();
        let one = desired_state(&node(), &[svc("a", "10.96.0.1")], &[slice("a", &["10.244.0.2"])]);
        apply_diff(&mut cur, &one, &mut f.writers())?;
        let row = f.services.entries()?[0].1.maglev_row;
        f.affinity.upsert(
            AffinityKeyV1 { client_addr_be: 1, service_id: row },
            AffinityV1 { backend_id: 1, _pad: 0, last_used_ns: 0 },
        )?;
        let stats = apply_diff(&mut cur, &DesiredMaps::default(), &mut f.writers())?;
        assert_eq!(stats.affinity_forgotten, 1);
        assert!(f.services.entries.is_empty() && f.backends.entries.is_empty() && f.rev_nat.entries.is_empty());
        Ok(())
    }

    #[test]
    fn a_full_service_map_is_an_error_and_the_next_apply_finishes_the_job() -> Result<(), Error> {
        let mut f = Fakes::new(1, 4);
        let mut cur = Current::default();
        let two = desired_state(
            &node(),
            &[svc("a", "10.96.0.1"), svc("b", "10.96.0.2")],
            &[slice("a", &["10.244.0.2"]), slice("b", &["10.244.0.5"])],
        );
        let err = apply_diff(&mut cur, &two, &mut f.writers()).expect_err("two frontends do not fit in one slot");
        assert!(
            matches!(err, Error::MapFull { name: names::REV_NAT, .. } | Error::MapFull { name: names::SERVICES, .. }),
            "{err}"
        );
        assert_eq!(f.services.entries.len(), 1, "what fitted was written");
        // Room appears (the operator raised the flag): only the rest is written.
        let mut bigger = Fakes::new(4, 4);
        bigger.services.entries = f.services.entries.clone();
        bigger.rev_nat.entries = f.rev_nat.entries.clone();
        bigger.backends.entries = f.backends.entries.clone();
        bigger.maglev = f.maglev.clone();
        let stats = apply_diff(&mut cur, &two, &mut bigger.writers())?;
        assert_eq!(stats.services, 1);
        assert_eq!(bigger.services.entries.len(), 2);
        Ok(())
    }

    #[test]
    fn maglev_rows_run_out_as_an_error() {
        let mut f = Fakes::new(16, 1);
        let mut cur = Current::default();
        let two = desired_state(&node(), &[svc("a", "10.96.0.1"), svc("b", "10.96.0.2")], &[]);
        let err = apply_diff(&mut cur, &two, &mut f.writers()).expect_err("one row for two Services");
        assert!(matches!(err, Error::MapFull { name: names::MAGLEV, capacity: 1 }), "{err}");
    }

    #[test]
    fn a_restarted_agent_adopts_the_maps_and_writes_nothing_for_an_unchanged_cluster() -> Result<(), Error> {
        let mut f = Fakes::new(16, 4);
        let desired = desired_state(
            &node(),
            &[svc("a", "10.96.0.1"), svc("b", "10.96.0.2")],
            &[slice("a", &["10.244.0.2", "10.244.0.3"]), slice("b", &["10.244.0.5"])],
        );
        apply_diff(&mut Current::default(), &desired, &mut f.writers())?;
        let snapshot = (f.services.entries.clone(), f.backends.entries.clone(), f.maglev.slots.clone());
        let mut restarted = Current::read(&f.writers())?;
        let stats = apply_diff(&mut restarted, &desired, &mut f.writers())?;
        assert_eq!(stats, ApplyStats::default());
        assert_eq!((f.services.entries.clone(), f.backends.entries.clone(), f.maglev.slots.clone()), snapshot);
        // And it goes on diffing from there.
        let changed = desired_state(
            &node(),
            &[svc("a", "10.96.0.1"), svc("b", "10.96.0.2")],
            &[slice("a", &["10.244.0.2"]), slice("b", &["10.244.0.5"])],
        );
        let stats = apply_diff(&mut restarted, &changed, &mut f.writers())?;
        assert_eq!((stats.services, stats.backends, stats.rev_nat), (1, 1, 0));
        Ok(())
    }

    /// Applies the index's changes, then checks that a full comparison
    /// finds nothing left to write: the incremental path reached the same
    /// maps as the whole-state one.
    fn apply_and_check(index: &mut crate::lb::ServiceIndex, cur: &mut Current, f: &mut Fakes) -> ApplyStats {
        index.refresh();
        let changes = index.take_changes();
        let stats = apply_changes(cur, index.desired(), &changes, &mut f.writers()).expect("apply_changes");
        let mut check = cur.clone();
        assert_eq!(
            apply_diff(&mut check, index.desired(), &mut f.writers()).expect("apply_diff"),
            ApplyStats::default()
        );
        stats
    }

    #[test]
    fn applying_only_the_changes_reaches_the_maps_a_full_diff_reaches() {
        let mut f = Fakes::new(64, 16);
        let mut cur = Current::default();
        let mut index = crate::lb::ServiceIndex::new(node());
        index.upsert_service(svc("a", "10.96.0.1"));
        index.upsert_service(svc("b", "10.96.0.2"));
        index.upsert_slice("a-1", slice("a", &["10.244.0.2", "10.244.0.3"]));
        index.upsert_slice("b-1", slice("b", &["10.244.0.3", "10.244.0.4"]));
        let first = apply_and_check(&mut index, &mut cur, &mut f);
        assert_eq!((first.services, first.backends, first.maglev_rows), (2, 3, 2));
        // One endpoint leaves a: its row and count change; the backend both
        // Services share stays.
        index.upsert_slice("a-1", slice("a", &["10.244.0.3"]));
        let stats = apply_and_check(&mut index, &mut cur, &mut f);
        assert_eq!((stats.services, stats.backends, stats.maglev_rows), (1, 1, 1));
        assert_eq!(f.backends.entries.len(), 2);
        // b goes: its frontend, row and the backend only it used.
        index.remove_service("default", "b");
        let stats = apply_and_check(&mut index, &mut cur, &mut f);
        assert_eq!((stats.services, stats.backends, stats.rev_nat), (1, 1, 1));
        assert_eq!(f.backends.entries.len(), 1);
        // a takes b's ClusterIP: the frontend moves (new row, same entry).
        index.upsert_service(svc("a", "10.96.0.2"));
        apply_and_check(&mut index, &mut cur, &mut f);
        assert_eq!(f.services.entries.len(), 1);
        // Two Services claim one frontend; the loser takes over when the winner goes.
        index.upsert_service(svc("c", "10.96.0.2"));
        index.upsert_slice("c-1", slice("c", &["10.244.0.9"]));
        apply_and_check(&mut index, &mut cur, &mut f);
        index.remove_service("default", "a");
        apply_and_check(&mut index, &mut cur, &mut f);
        let (_, value) = f.services.entries().expect("entries")[0];
        assert_eq!(value.backend_count, 1);
        let row = f.maglev.read_row(value.maglev_row).expect("row");
        let id = *f
            .backends
            .entries
            .iter()
            .find(|(_, b)| b.addr_be == u32::from_ne_bytes([10, 244, 0, 9]))
            .expect("c's backend")
            .0;
        assert!(row.iter().all(|slot| *slot == id), "the frontend leads to c's endpoint");
    }

    #[test]
    fn a_change_to_one_service_among_many_writes_only_that_service() {
        let mut f = Fakes::new(2048, 1024);
        let mut cur = Current::default();
        let mut index = crate::lb::ServiceIndex::new(node());
        for i in 0..1000u32 {
            let name = format!("s{i}");
            let [_, _, hi, lo] = (i + 2).to_be_bytes();
            index.upsert_service(svc(&name, &format!("10.96.{hi}.{lo}")));
            index.upsert_slice(&format!("{name}-1"), slice(&name, &[&format!("10.244.{hi}.{lo}")]));
        }
        index.refresh();
        let all = index.take_changes();
        assert_eq!(all.frontends.len(), 1000);
        apply_changes(&mut cur, index.desired(), &all, &mut f.writers()).expect("first apply");
        index.upsert_slice("s500-1", slice("s500", &["10.244.1.246", "10.250.0.1"]));
        index.refresh();
        let changes = index.take_changes();
        assert_eq!(changes.frontends.len(), 1, "one frontend to look at");
        assert_eq!(changes.groups.len(), 1, "one group to look at");
        let stats = apply_changes(&mut cur, index.desired(), &changes, &mut f.writers()).expect("apply");
        assert_eq!((stats.services, stats.backends, stats.maglev_rows, stats.rev_nat), (1, 1, 1, 0));
    }
}
