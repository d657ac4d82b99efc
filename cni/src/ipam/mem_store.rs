//! The in-memory fake of [`IpamStore`] for unit tests of the allocator.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{IpamError, IpamStore, Owner};

#[derive(Debug, Default)]
pub struct MemStore {
    reserved: BTreeMap<IpAddr, Owner>,
    last: BTreeMap<usize, IpAddr>,
}

impl IpamStore for MemStore {
    fn reserve(&mut self, owner: &Owner, ip: IpAddr, range_set: usize) -> Result<bool, IpamError> {
        if self.reserved.contains_key(&ip) {
            return Ok(false);
        }
        self.reserved.insert(ip, owner.clone());
        self.last.insert(range_set, ip);
        Ok(true)
    }

    fn last_reserved(&self, range_set: usize) -> Result<Option<IpAddr>, IpamError> {
        Ok(self.last.get(&range_set).copied())
    }

    fn release(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        self.reserved.remove(&ip);
        Ok(())
    }

    fn list(&self) -> Result<Vec<(IpAddr, Owner)>, IpamError> {
        Ok(self.reserved.iter().map(|(ip, owner)| (*ip, owner.clone())).collect())
    }
}
