//! One typed wrapper per eBPF map.

mod counters;

pub use counters::CounterTable;
