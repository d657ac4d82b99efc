//! `LB4_MAGLEV_V2`: one Maglev row per Service port, the whole `MAGLEV_M`
//! slots in one value, so a row is written with one syscall.

use aya::maps::{Array, MapData};
use waggle_ebpf_common::lb::{BACKEND_ID_NONE, MAGLEV_M, MaglevRowV2, names};

use super::kv::{is_full, map_capacity};
use crate::Error;

/// Reads and writes Maglev rows; the kernel map or [`FakeMaglevMap`].
pub trait MaglevMapWriter {
    /// How many rows fit.
    fn rows(&self) -> u32;
    /// The `MAGLEV_M` backend ids of `row`.
    fn read_row(&self, row: u32) -> Result<Vec<u32>, Error>;
    /// Replaces the whole of `row` (`MAGLEV_M` backend ids) at once.
    fn write_row(&mut self, row: u32, backend_ids: &[u32]) -> Result<(), Error>;
}

fn check_row(rows: u32, row: u32) -> Result<(), Error> {
    if row >= rows { Err(Error::MapFull { name: names::MAGLEV, capacity: rows }) } else { Ok(()) }
}

fn row_value(backend_ids: &[u32]) -> Result<MaglevRowV2, Error> {
    let backend_ids: [u32; MAGLEV_M as usize] = backend_ids.try_into().map_err(|_| Error::RowSize {
        name: names::MAGLEV,
        got: backend_ids.len(),
        want: MAGLEV_M as usize,
    })?;
    Ok(MaglevRowV2 { backend_ids })
}

/// The pinned kernel array.
pub struct MaglevMap {
    rows: u32,
    map: Array<MapData, MaglevRowV2>,
}

impl std::fmt::Debug for MaglevMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaglevMap").field("rows", &self.rows).finish_non_exhaustive()
    }
}

impl MaglevMap {
    pub(crate) fn new(map: aya::maps::Map) -> Result<Self, Error> {
        let name = names::MAGLEV;
        let map: Array<MapData, MaglevRowV2> =
            Array::try_from(map).map_err(|source| Error::Map { name, action: "opening as an array".into(), source })?;
        let rows = map_capacity(name, aya::maps::IterableMap::map(&map))?;
        Ok(Self { rows, map })
    }
}

impl MaglevMapWriter for MaglevMap {
    fn rows(&self) -> u32 {
        self.rows
    }

    fn read_row(&self, row: u32) -> Result<Vec<u32>, Error> {
        check_row(self.rows, row)?;
        let value = self.map.get(&row, 0).map_err(|source| Error::Map {
            name: names::MAGLEV,
            action: format!("reading row {row}"),
            source,
        })?;
        Ok(value.backend_ids.to_vec())
    }

    fn write_row(&mut self, row: u32, backend_ids: &[u32]) -> Result<(), Error> {
        check_row(self.rows, row)?;
        let value = row_value(backend_ids)?;
        self.map.set(row, value, 0).map_err(|source| {
            if is_full(&source) {
                Error::MapFull { name: names::MAGLEV, capacity: self.rows }
            } else {
                Error::Map { name: names::MAGLEV, action: format!("writing row {row}"), source }
            }
        })
    }
}

/// In-memory twin of [`MaglevMap`].
#[derive(Debug, Clone)]
pub struct FakeMaglevMap {
    rows: u32,
    /// Every row's slots, flattened (`row * MAGLEV_M + slot`).
    pub slots: Vec<u32>,
    /// Rows written so far.
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

    fn write_row(&mut self, row: u32, backend_ids: &[u32]) -> Result<(), Error> {
        check_row(self.rows, row)?;
        let value = row_value(backend_ids)?;
        let start = (row * MAGLEV_M) as usize;
        self.slots[start..start + MAGLEV_M as usize].copy_from_slice(&value.backend_ids);
        self.writes += 1;
        Ok(())
    }
}
