//! The machinery shared by the hash-map wrappers: a key/value trait, its
//! kernel implementation over an owned aya map, and an in-memory fake with
//! the same capacity rule (a full map refuses new keys, never drops them).

use std::collections::BTreeMap;

use aya::{
    Pod,
    maps::{HashMap, MapData, MapError},
};

use crate::Error;

/// A typed key/value map: the kernel map, or its fake.
pub trait KvMap<K, V> {
    /// The map's name in the eBPF object (and its pin file).
    fn name(&self) -> &'static str;
    /// Most entries the map holds.
    fn capacity(&self) -> u32;
    fn get(&self, key: &K) -> Result<Option<V>, Error>;
    /// Every entry, in no particular order.
    fn entries(&self) -> Result<Vec<(K, V)>, Error>;
    /// Inserts or replaces. A new key in a full map is [`Error::MapFull`].
    fn upsert(&mut self, key: K, value: V) -> Result<(), Error>;
    /// Removes; a missing key is not an error.
    fn remove(&mut self, key: &K) -> Result<(), Error>;
}

/// A kernel hash (or LRU hash) map owned by its wrapper.
pub struct KernelKv<K, V> {
    name: &'static str,
    capacity: u32,
    map: HashMap<MapData, K, V>,
}

impl<K, V> std::fmt::Debug for KernelKv<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelKv").field("name", &self.name).field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl<K: Pod, V: Pod> KernelKv<K, V> {
    pub(crate) fn new(name: &'static str, map: aya::maps::Map) -> Result<Self, Error> {
        let map: HashMap<MapData, K, V> = HashMap::try_from(map).map_err(|source| Error::Map {
            name,
            action: "opening as a hash map".into(),
            source,
        })?;
        let capacity = map_capacity(name, aya::maps::IterableMap::map(&map))?;
        Ok(Self { name, capacity, map })
    }
}

pub(crate) fn map_capacity(name: &'static str, data: &MapData) -> Result<u32, Error> {
    let info = data.info().map_err(|source| Error::Map { name, action: "reading its info".into(), source })?;
    Ok(info.max_entries())
}

/// True when a map update failed because the map is full (E2BIG).
pub(crate) fn is_full(err: &MapError) -> bool {
    matches!(err, MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::E2BIG))
}

/// True when a lookup or delete found no such key (ENOENT).
pub(crate) fn is_missing(err: &MapError) -> bool {
    matches!(err, MapError::KeyNotFound)
        || matches!(err, MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::ENOENT))
}

impl<K: Pod + std::fmt::Debug, V: Pod> KvMap<K, V> for KernelKv<K, V> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn capacity(&self) -> u32 {
        self.capacity
    }

    fn get(&self, key: &K) -> Result<Option<V>, Error> {
        match self.map.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(source) => Err(Error::Map { name: self.name, action: format!("looking up {key:?}"), source }),
        }
    }

    fn entries(&self) -> Result<Vec<(K, V)>, Error> {
        let mut out = Vec::new();
        for entry in self.map.iter() {
            match entry {
                Ok(kv) => out.push(kv),
                // An entry deleted between "next key" and "lookup" (LRU eviction).
                Err(e) if is_missing(&e) => {}
                Err(source) => return Err(Error::Map { name: self.name, action: "iterating".into(), source }),
            }
        }
        Ok(out)
    }

    fn upsert(&mut self, key: K, value: V) -> Result<(), Error> {
        match self.map.insert(key, value, 0) {
            Ok(()) => Ok(()),
            Err(e) if is_full(&e) => Err(Error::MapFull { name: self.name, capacity: self.capacity }),
            Err(source) => Err(Error::Map { name: self.name, action: format!("writing {key:?}"), source }),
        }
    }

    fn remove(&mut self, key: &K) -> Result<(), Error> {
        match self.map.remove(key) {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(source) => Err(Error::Map { name: self.name, action: format!("deleting {key:?}"), source }),
        }
    }
}

/// The in-memory twin of a [`KernelKv`], for tests without root.
#[derive(Debug, Clone)]
pub struct FakeKv<K, V> {
    name: &'static str,
    capacity: u32,
    /// What the map holds; public so tests can inspect and seed it.
    pub entries: BTreeMap<K, V>,
    /// Writes (upserts and removes) so far, to prove that a diff is small.
    pub writes: usize,
}

impl<K, V> FakeKv<K, V> {
    pub fn new(name: &'static str, capacity: u32) -> Self {
        Self { name, capacity, entries: BTreeMap::new(), writes: 0 }
    }
}

impl<K: Ord + Copy, V: Copy> KvMap<K, V> for FakeKv<K, V> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn capacity(&self) -> u32 {
        self.capacity
    }

    fn get(&self, key: &K) -> Result<Option<V>, Error> {
        Ok(self.entries.get(key).copied())
    }

    fn entries(&self) -> Result<Vec<(K, V)>, Error> {
        Ok(self.entries.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn upsert(&mut self, key: K, value: V) -> Result<(), Error> {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity as usize {
            return Err(Error::MapFull { name: self.name, capacity: self.capacity });
        }
        self.writes += 1;
        self.entries.insert(key, value);
        Ok(())
    }

    fn remove(&mut self, key: &K) -> Result<(), Error> {
        self.writes += 1;
        self.entries.remove(key);
        Ok(())
    }
}
