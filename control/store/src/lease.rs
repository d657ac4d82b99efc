//! Leases: TTLs, deadlines and the keys attached to each lease.
//!
//! Pure bookkeeping; the store decides when to delete the keys of an
//! expired lease (as one write, so watchers see one revision).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::types::LeaseId;

/// etcd's largest TTL (`MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

#[derive(Debug)]
struct Lease {
    granted_ttl: i64,
    deadline: Instant,
    keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) struct Leases {
    leases: HashMap<LeaseId, Lease>,
    min_ttl: i64,
    next_id: LeaseId,
}

impl Leases {
    /// `seed` spreads IDs of different stores apart, like etcd derives them from the member ID.
    pub(crate) fn new(min_ttl: i64, seed: u64) -> Self {
        let next_id = i64::try_from((seed & 0x7fff_ffff_ffff) << 15).unwrap_or(1).max(1);
        Self { leases: HashMap::new(), min_ttl, next_id }
    }

    pub(crate) fn contains(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    /// Picks an unused ID.
    pub(crate) fn fresh_id(&mut self) -> LeaseId {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if id > 0 && !self.leases.contains_key(&id) {
                return id;
            }
        }
    }

    /// Adds a lease; the TTL is raised to the minimum. Returns the granted TTL.
    pub(crate) fn grant(&mut self, id: LeaseId, ttl: i64, now: Instant) -> i64 {
        let ttl = ttl.max(self.min_ttl);
        self.leases.insert(id, Lease { granted_ttl: ttl, deadline: now + secs(ttl), keys: BTreeSet::new() });
        ttl
    }

    /// Removes a lease; returns its keys, or `None` if it did not exist.
    pub(crate) fn remove(&mut self, id: LeaseId) -> Option<BTreeSet<Vec<u8>>> {
        self.leases.remove(&id).map(|l| l.keys)
    }

    /// Pushes the deadline out by the granted TTL; returns that TTL.
    pub(crate) fn renew(&mut self, id: LeaseId, now: Instant) -> Option<i64> {
        let lease = self.leases.get_mut(&id)?;
        lease.deadline = now + secs(lease.granted_ttl);
        Some(lease.granted_ttl)
    }

    /// Remaining whole seconds, granted TTL and attached keys.
    pub(crate) fn time_to_live(&self, id: LeaseId, now: Instant) -> Option<(i64, i64, Vec<Vec<u8>>)> {
        let lease = self.leases.get(&id)?;
        let remaining = i64::try_from(lease.deadline.saturating_duration_since(now).as_secs()).unwrap_or(i64::MAX);
        Some((remaining, lease.granted_ttl, lease.keys.iter().cloned().collect()))
    }

    pub(crate) fn ids(&self) -> Vec<LeaseId> {
        let mut ids: Vec<_> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub(crate) fn attach(&mut self, id: LeaseId, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key.to_vec());
        }
    }

    pub(crate) fn detach(&mut self, id: LeaseId, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// Leases whose deadline has passed.
    pub(crate) fn expired(&self, now: Instant) -> Vec<LeaseId> {
        self.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect()
    }

    /// (id, granted TTL, remaining seconds) of every lease, for snapshots.
    pub(crate) fn export(&self, now: Instant) -> Vec<(LeaseId, i64, i64)> {
        self.leases
            .iter()
            .map(|(id, l)| {
                let remaining = i64::try_from(l.deadline.saturating_duration_since(now).as_secs()).unwrap_or(0);
                (*id, l.granted_ttl, remaining)
            })
            .collect()
    }
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_after_its_ttl_unless_renewed() {
        let mut leases = Leases::new(1, 7);
        let t0 = Instant::now();
        leases.grant(5, 10, t0);
        assert!(leases.expired(t0 + Duration::from_secs(9)).is_empty());
        leases.renew(5, t0 + Duration::from_secs(9));
        assert!(leases.expired(t0 + Duration::from_secs(11)).is_empty());
        assert_eq!(leases.expired(t0 + Duration::from_secs(20)), vec![5]);
    }

    #[test]
    fn a_ttl_below_the_minimum_is_raised_to_it() {
        let mut leases = Leases::new(2, 7);
        assert_eq!(leases.grant(1, 0, Instant::now()), 2);
    }

    #[test]
    fn fresh_ids_are_positive_and_unused() {
        let mut leases = Leases::new(1, u64::MAX);
        let a = leases.fresh_id();
        leases.grant(a, 5, Instant::now());
        let b = leases.fresh_id();
        assert!(a > 0 && b > 0 && a != b);
    }
}
