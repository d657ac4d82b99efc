//! `LB4_MAGLEV_V1`: the flat array of Maglev rows, `MAGLEV_M` backend ids per
//! row. Rows are written slot by slot, and only the slots that change.

use aya::maps::{Array, MapData};
use waggle_ebpf_common::lb::{BACKEND_ID_NONE, MAGLEV_M, names};

use super::kv::{is_full, map_capacity};
use crate::Error;

/// Reads and writes Maglev rows; the kernel map or [`FakeMaglevMap`].
pub trait MaglevMapWriter {
    /// How many rows fit.
    fn rows(&self) -> u32;
    /// The `MAGLEV_M` backend ids of `row`.
    fn read_row(&self, row: u32) -> Result<Vec<u32>, Error>;
    /// Sets `(slot, backend id)` pairs inside `row`.
    fn write_slots(&mut self, row: u32, slots: &[(u32, u32)]) -> Result<(), Error>;
}

fn check_row(rows: u32, row: u32) -> Result<(), Error> {
    if row >= rows { Err(Error::MapFull { name: names::MAGLEV, capacity: rows }) } else { Ok(()) }
}

/// The pinned kernel array.
pub struct MaglevMap {
    rows: u32,
    map: Array<MapData, u32>,
}

impl std::fmt::Debug for MaglevMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaglevMap").field("rows", &self.rows).finish_non_exhaustive()
    }
}

impl MaglevMap {
    pub(crate) fn new(map: aya::maps::Map) -> Result<Self, Error> {
        let name = names::MAGLEV;
        let map: Array<MapData, u32> =
            Array::try_from(map).map_err(|source| Error::Map { name, action: "opening as an array".into(), source })?;
        let rows = map_capacity(name, aya::maps::IterableMap::map(&map))? / MAGLEV_M;
        Ok(Self { rows, map })
    }
}

impl MaglevMapWriter for MaglevMap {
    fn rows(&self) -> u32 {
        self.rows
    }

    fn read_row(&self, row: u32) -> Result<Vec<u32>, Error> {
        check_row(self.rows, row)?;
        (0..MAGLEV_M)
            .map(|slot| {
                self.map.get(&(row * MAGLEV_M + slot), 0).map_err(|source| Error::Map {
                    name: names::MAGLEV,
                    action: format!("reading row {row} slot {slot}"),
                    source,
                })
            })
            .collect()
    }

    fn write_slots(&mut self, row: u32, slots: &[(u32, u32)]) -> Result<(), Error> {
        check_row(self.rows, row)?;
        for &(slot, id) in slots {
            self.map.set(row * MAGLEV_M + slot, id, 0).map_err(|source| {
                if is_full(&source) {
                    Error::MapFull { name: names::MAGLEV, capacity: self.rows }
                } else {
                    Error::Map { name: names::MAGLEV, action: format!("writing row {row} slot {slot}"), source }
                }
            })?;
        }
        Ok(())
    }
}

/// In-memory twin of [`MaglevMap`].
#[derive(Debug, Clone)]
pub struct FakeMaglevMap {
    rows: u32,
    pub slots: Vec<u32>,
    /// Slots written so far.
    pub writes: usize,
}

impl FakeMaglevMap {
    pub fn new(rows: u32) -> Self {
        Self { rows, slots: vec![BACKEND_ID_NONE; (rows * MAGLEV_M) as usize], writes: 0 }
    }
}

impl MaglevMapWriter for FakeMaglevMap {
    fn rows(&self) -> u32 {
        self.rows
    }

    fn read_row(&self, row: u32) -> Result<Vec<u32>, Error> {
        check_row(self.rows, row)?;
        let start = (row * MAGLEV_M) as usize;
        Ok(self.slots[start..start + MAGLEV_M as usize].to_vec())
    }

    fn write_slots(&mut self, row: u32, slots: &[(u32, u32)]) -> Result<(), Error> {
        check_row(self.rows, row)?;
        for &(slot, id) in slots {
            self.slots[(row * MAGLEV_M + slot) as usize] = id;
            self.writes += 1;
        }
        Ok(())
    }
}
