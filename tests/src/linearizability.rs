//! A linearizability checker for one register with read, write and
//! compare-and-swap, after Wing & Gong with Lowe's memoization (the
//! algorithm of Knossos and Porcupine): search for an order of the
//! operations that respects real time (an operation that returned before
//! another was called comes first) and the register's sequential semantics.
//! Visited (linearized set, value) pairs are remembered, so the search stays
//! small for the few concurrent clients of a test.
//!
//! An operation whose outcome is unknown (the client timed out or the
//! connection broke) has no return time: it may take effect at any point
//! after its call, or never.

use std::collections::HashSet;

/// A register value; `None` is "the key does not exist".
pub type Value = Option<u64>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A read that returned this value.
    Read(Value),
    Write(u64),
    /// Sets `to` if the register holds `from`; `ok` is the answer, `None` when unknown.
    Cas {
        from: Value,
        to: u64,
        ok: Option<bool>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: usize,
    /// When the call was made (any monotonic unit, e.g. nanoseconds since the start).
    pub call: u64,
    /// When it returned; `None` if its outcome is unknown.
    pub ret: Option<u64>,
    pub kind: Kind,
}

impl Op {
    /// The register after this operation applied to `state`, or `None` if
    /// the operation's answer is impossible from `state`.
    fn step(&self, state: Value) -> Option<Value> {
        match &self.kind {
            Kind::Read(v) => (*v == state).then_some(state),
            Kind::Write(v) => Some(Some(*v)),
            Kind::Cas { from, to, ok: None } => Some(if state == *from { Some(*to) } else { state }),
            Kind::Cas { from, to, ok: Some(true) } => (state == *from).then_some(Some(*to)),
            Kind::Cas { from, ok: Some(false), .. } => (state != *from).then_some(state),
        }
    }
}

struct Search<'a> {
    ops: &'a [Op],
    visited: HashSet<(Vec<u64>, Value)>,
}

impl Search<'_> {
    fn done(bits: &[u64], i: usize) -> bool {
        bits[i / 64] & (1 << (i % 64)) != 0
    }

    fn dfs(&mut self, bits: &mut Vec<u64>, state: Value) -> bool {
        let pending: Vec<usize> = (0..self.ops.len()).filter(|&i| !Self::done(bits, i)).collect();
        // Only operations of unknown outcome left: they may never have happened.
        if pending.iter().all(|&i| self.ops[i].ret.is_none()) {
            return true;
        }
        let first_return = pending.iter().filter_map(|&i| self.ops[i].ret).min().unwrap_or(u64::MAX);
        for &i in &pending {
            let op = &self.ops[i];
            // Something returned before this was called: that must come first.
            if op.call > first_return {
                continue;
            }
            let Some(next) = op.step(state) else { continue };
            bits[i / 64] |= 1 << (i % 64);
            if self.visited.insert((bits.clone(), next)) && self.dfs(bits, next) {
                return true;
            }
            bits[i / 64] &= !(1 << (i % 64));
        }
        false
    }
}

/// Checks a history starting from `initial`; the error says how many
/// operations it holds and how many orders were tried.
pub fn check(initial: Value, ops: &[Op]) -> Result<(), String> {
    let mut search = Search { ops, visited: HashSet::new() };
    let mut bits = vec![0u64; ops.len().div_ceil(64).max(1)];
    if search.dfs(&mut bits, initial) {
        Ok(())
    } else {
        Err(format!(
            "the history of {} operations is not linearizable ({} partial orders tried)",
            ops.len(),
            search.visited.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, call: u64, ret: u64, kind: Kind) -> Op {
        Op { client, call, ret: Some(ret), kind }
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        let h = [
            op(0, 0, 10, Kind::Write(1)),
            op(1, 1, 9, Kind::Write(2)),
            op(2, 11, 12, Kind::Read(Some(1))),
            op(3, 13, 14, Kind::Cas { from: Some(1), to: 3, ok: Some(true) }),
            op(2, 15, 16, Kind::Read(Some(3))),
        ];
        check(None, &h).expect("linearizable: write 2 then write 1");
    }

    #[test]
    fn a_stale_read_is_caught() {
        let h = [op(0, 0, 1, Kind::Write(1)), op(1, 2, 3, Kind::Write(2)), op(2, 4, 5, Kind::Read(Some(1)))];
        assert!(check(None, &h).is_err());
    }

    #[test]
    fn two_successful_cas_from_one_value_are_caught() {
        let h = [
            op(0, 0, 1, Kind::Write(1)),
            op(1, 2, 10, Kind::Cas { from: Some(1), to: 2, ok: Some(true) }),
            op(2, 3, 11, Kind::Cas { from: Some(1), to: 3, ok: Some(true) }),
        ];
        assert!(check(None, &h).is_err());
    }

    #[test]
    fn an_unknown_write_may_or_may_not_have_happened() {
        let lost = [Op { client: 0, call: 0, ret: None, kind: Kind::Write(1) }, op(1, 5, 6, Kind::Read(None))];
        check(None, &lost).expect("the write never happened");
        let happened = [
            Op { client: 0, call: 0, ret: None, kind: Kind::Write(1) },
            op(1, 5, 6, Kind::Read(Some(1))),
            op(1, 7, 8, Kind::Read(Some(1))),
        ];
        check(None, &happened).expect("the write happened before the reads");
        let flicker = [
            Op { client: 0, call: 0, ret: None, kind: Kind::Write(1) },
            op(1, 5, 6, Kind::Read(Some(1))),
            op(1, 7, 8, Kind::Read(None)),
        ];
        assert!(check(None, &flicker).is_err(), "a value cannot vanish without a write");
    }
}
