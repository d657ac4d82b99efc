//! IPAM: host-local's allocation rules over a pluggable store.
//!
//! The allocator is pure logic over the [`IpamStore`] trait; [`FileStore`] is
//! the real, host-local compatible store (one file per address, `lock` file
//! flocked for the whole operation) and [`MemStore`] the fake for unit tests.

pub mod delegate;
pub mod file_store;
pub mod mem_store;
pub mod range;

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::Attachment;
use crate::error::Code;
use crate::spec::IpConfig;
pub use file_store::FileStore;
pub use mem_store::MemStore;
use range::RangeSet;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid IPAM range: {0}")]
    InvalidRange(String),
    #[error("no free IP address left in range set {ranges}")]
    Exhausted { ranges: String },
    #[error("requested IP address {ip} is not available: {why}")]
    Unavailable { ip: IpAddr, why: String },
    #[error("IPAM store: {what}: {source}")]
    Store { what: String, source: std::io::Error },
}

impl IpamError {
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidRange(_) => Code::InvalidConfig,
            Self::Exhausted { .. } => Code::RangeExhausted,
            Self::Unavailable { .. } => Code::AddressUnavailable,
            Self::Store { .. } => Code::Io,
        }
    }

    pub(crate) fn store(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Store { what: what.into(), source }
    }
}

/// Who holds an address: host-local records the container ID and interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    pub fn new(container_id: &str, ifname: &str) -> Self {
        Self { container_id: container_id.to_string(), ifname: ifname.to_string() }
    }

    /// Files written by host-local before it recorded interfaces hold only the ID.
    fn matches(&self, other: &Owner) -> bool {
        self.container_id == other.container_id && (self.ifname == other.ifname || other.ifname.is_empty())
    }
}

/// The allocation state. Implementations are used while they hold whatever
/// lock makes a read-modify-write sequence atomic.
pub trait IpamStore {
    /// Records `ip` for `owner`; `Ok(false)` when it is already taken.
    fn reserve(&mut self, owner: &Owner, ip: IpAddr, range_set: usize) -> Result<bool, IpamError>;
    /// The address most recently reserved from `range_set`, where allocation resumes.
    fn last_reserved(&self, range_set: usize) -> Result<Option<IpAddr>, IpamError>;
    /// Forgets `ip`; releasing a free address is not an error.
    fn release(&mut self, ip: IpAddr) -> Result<(), IpamError>;
    /// Every reserved address and its owner.
    fn list(&self) -> Result<Vec<(IpAddr, Owner)>, IpamError>;
}

/// Gives `owner` one address from each range set, honouring requested
/// addresses; on any failure, whatever this call reserved is released.
pub fn allocate(
    store: &mut impl IpamStore,
    sets: &[RangeSet],
    owner: &Owner,
    requested: &[IpAddr],
) -> Result<Vec<IpConfig>, IpamError> {
    for ip in requested {
        if !sets.iter().any(|set| set.range_of(*ip).is_some()) {
            return Err(IpamError::Unavailable { ip: *ip, why: "it is outside every configured range".into() });
        }
    }
    let mut done = Vec::new();
    let result = allocate_each(store, sets, owner, requested, &mut done);
    if result.is_err() {
        for ip in done {
            // Best effort: the error being returned matters more.
            let _ = store.release(ip);
        }
    }
    result
}

fn allocate_each(
    store: &mut impl IpamStore,
    sets: &[RangeSet],
    owner: &Owner,
    requested: &[IpAddr],
    done: &mut Vec<IpAddr>,
) -> Result<Vec<IpConfig>, IpamError> {
    let held = addresses_of(store, owner)?;
    let mut out = Vec::new();
    for (index, set) in sets.iter().enumerate() {
        if let Some(ip) = held.iter().find(|ip| set.range_of(**ip).is_some()) {
            return Err(IpamError::Unavailable {
                ip: *ip,
                why: format!(
                    "{}/{} already holds it; duplicate allocation is not allowed",
                    owner.container_id, owner.ifname
                ),
            });
        }
        let wanted = requested.iter().find(|ip| set.range_of(**ip).is_some());
        let (ip, range) = match wanted {
            Some(ip) => {
                let range = set.range_of(*ip).ok_or_else(|| IpamError::InvalidRange(ip.to_string()))?;
                if Some(*ip) == range.gateway {
                    return Err(IpamError::Unavailable { ip: *ip, why: "it is the gateway".into() });
                }
                if !store.reserve(owner, *ip, index)? {
                    return Err(IpamError::Unavailable { ip: *ip, why: "it is already allocated".into() });
                }
                (*ip, range)
            }
            None => {
                let last = store.last_reserved(index)?;
                let mut found = None;
                for (ip, range) in set.candidates(last) {
                    if store.reserve(owner, ip, index)? {
                        found = Some((ip, range));
                        break;
                    }
                }
                found.ok_or_else(|| IpamError::Exhausted { ranges: set.describe() })?
            }
        };
        done.push(ip);
        let address =
            IpNet::new(ip, range.subnet.prefix_len()).map_err(|err| IpamError::InvalidRange(format!("{ip}: {err}")))?;
        out.push(IpConfig { version: None, interface: None, address, gateway: range.gateway });
    }
    Ok(out)
}

pub fn addresses_of(store: &impl IpamStore, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
    Ok(store.list()?.into_iter().filter(|(_, o)| owner.matches(o)).map(|(ip, _)| ip).collect())
}

/// DEL: frees every address of the attachment; freeing nothing is success.
pub fn release_owner(store: &mut impl IpamStore, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
    let ips = addresses_of(store, owner)?;
    for ip in &ips {
        store.release(*ip)?;
    }
    Ok(ips)
}

/// GC: frees every address whose owner is not a valid attachment.
pub fn collect_garbage(store: &mut impl IpamStore, valid: &[Attachment]) -> Result<Vec<IpAddr>, IpamError> {
    let keep: HashSet<(&str, &str)> = valid.iter().map(|a| (a.container_id.as_str(), a.ifname.as_str())).collect();
    let mut freed = Vec::new();
    for (ip, owner) in store.list()? {
        let kept = keep.contains(&(owner.container_id.as_str(), owner.ifname.as_str()))
            || (owner.ifname.is_empty() && valid.iter().any(|a| a.container_id == owner.container_id));
        if !kept {
            store.release(ip)?;
            freed.push(ip);
        }
    }
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::range::RangeConf;
    use super::*;

    fn sets(subnets: &[&str]) -> Vec<RangeSet> {
        subnets
            .iter()
            .map(|s| {
                RangeSet::new(&[RangeConf {
                    subnet: s.parse().expect("subnet"),
                    range_start: None,
                    range_end: None,
                    gateway: None,
                }])
                .expect("valid")
            })
            .collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn consecutive_allocations_hand_out_consecutive_addresses() {
        let mut store = MemStore::default();
        let sets = sets(&["10.1.0.0/24"]);
        let a = allocate(&mut store, &sets, &Owner::new("a", "eth0"), &[]).expect("a");
        let b = allocate(&mut store, &sets, &Owner::new("b", "eth0"), &[]).expect("b");
        assert_eq!(a[0].address.to_string(), "10.1.0.2/24");
        assert_eq!(a[0].gateway, Some(ip("10.1.0.1")));
        assert_eq!(b[0].address.to_string(), "10.1.0.3/24");
    }

    #[test]
    fn a_dual_stack_configuration_gives_one_address_per_family() {
        let mut store = MemStore::default();
        let got = allocate(&mut store, &sets(&["10.1.0.0/24", "fd00:1::/64"]), &Owner::new("a", "eth0"), &[])
            .expect("allocates");
        assert_eq!(got.len(), 2);
        assert!(got[1].address.addr().is_ipv6());
    }

    #[test]
    fn an_exhausted_range_fails_with_code_100_and_keeps_nothing_of_the_call() {
        let mut store = MemStore::default();
        let sets = sets(&["fd00:1::/126", "10.1.0.0/30"]);
        allocate(&mut store, &sets[1..], &Owner::new("a", "eth0"), &[]).expect("the /30 has one free address");
        let err = allocate(&mut store, &sets, &Owner::new("b", "eth0"), &[]).expect_err("exhausted");
        assert_eq!(err.code() as u32, 100);
        assert_eq!(store.list().expect("list").len(), 1, "b's IPv6 address was released again");
    }

    #[test]
    fn a_requested_address_is_honoured_and_refused_when_taken_or_outside() {
        let mut store = MemStore::default();
        let sets = sets(&["10.1.0.0/24"]);
        let got = allocate(&mut store, &sets, &Owner::new("a", "eth0"), &[ip("10.1.0.77")]).expect("free");
        assert_eq!(got[0].address.addr(), ip("10.1.0.77"));
        let taken = allocate(&mut store, &sets, &Owner::new("b", "eth0"), &[ip("10.1.0.77")]);
        assert!(matches!(taken, Err(IpamError::Unavailable { .. })));
        let outside = allocate(&mut store, &sets, &Owner::new("c", "eth0"), &[ip("10.2.0.1")]);
        assert!(matches!(outside, Err(IpamError::Unavailable { .. })));
    }

    #[test]
    fn allocating_twice_for_one_attachment_is_refused() {
        let mut store = MemStore::default();
        let sets = sets(&["10.1.0.0/24"]);
        allocate(&mut store, &sets, &Owner::new("a", "eth0"), &[]).expect("first");
        assert!(allocate(&mut store, &sets, &Owner::new("a", "eth0"), &[]).is_err());
    }

    #[test]
    fn release_frees_only_the_owners_addresses_and_is_idempotent() {
        let mut store = MemStore::default();
        let sets = sets(&["10.1.0.0/24"]);
        allocate(&mut store, &sets, &Owner::new("a", "eth0"), &[]).expect("a");
        allocate(&mut store, &sets, &Owner::new("b", "eth0"), &[]).expect("b");
        assert_eq!(release_owner(&mut store, &Owner::new("a", "eth0")).expect("release").len(), 1);
        assert!(release_owner(&mut store, &Owner::new("a", "eth0")).expect("again").is_empty());
        assert_eq!(store.list().expect("list").len(), 1);
    }

    #[test]
    fn gc_frees_exactly_the_addresses_of_attachments_not_listed() {
        let mut store = MemStore::default();
        let sets = sets(&["10.1.0.0/24"]);
        for id in ["a", "b", "c"] {
            allocate(&mut store, &sets, &Owner::new(id, "eth0"), &[]).expect("allocates");
        }
        let valid = vec![Attachment { container_id: "b".into(), ifname: "eth0".into() }];
        let freed = collect_garbage(&mut store, &valid).expect("gc");
        assert_eq!(freed.len(), 2);
        let left = store.list().expect("list");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.container_id, "b");
    }
}
