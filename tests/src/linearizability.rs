//! A linearizability checker for one register with read, write and
//! compare-and-swap, after Wing & Gong with Lowe's memoization (the
//! algorithm of Knossos and Porcupine): search for an order of the
//! operations that respects real time (an operation that returned before
//! another was called comes first) and the register's sequential semantics.
//! Visited (linearized set, value) pairs are remembered, so the search stays
//! small for the few concurrent clients of a test; its cost is bounded
//! ([`check_within`]): a history too ambiguous to decide within the budget
//! fails with a message saying so, instead of running for minutes.
//!
//! An operation whose outcome is unknown (the client timed out or the
//! connection broke) has no return time: it may take effect at any point
//! after its call, or never.

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

/// Most search states [`check`] visits before it gives up: about 50 MB of
/// memo. A history that needs more is too ambiguous to decide (typically
/// many operations of unknown outcome overlapping) and fails as such.
pub const DEFAULT_MAX_STATES: usize = 1_000_000;

/// Sentinel of the list of pending operations.
const HEAD: usize = usize::MAX;

/// The search of [`check_within`]: a depth-first search over which pending
/// operation takes effect next, as Porcupine does it. Pending operations
/// form a doubly linked list in call order, so taking one out and putting
/// it back are O(1) and the candidates are a prefix of the list (those
/// called before the earliest pending return). The memo holds a 128-bit
/// Zobrist hash of the linearized operations of known outcome with the
/// register value, and for each the sets of linearized operations of
/// unknown outcome seen with them: a state whose unknown set contains one
/// already seen is skipped, since it can do nothing the other could not
/// (an operation of unknown outcome may stay pending forever). Operations
/// of known outcome are tried before those of unknown outcome, so the
/// smaller sets come first.
struct Search<'a> {
    ops: &'a [Op],
    /// Positions in call order.
    order: Vec<usize>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Pending operations with a known return, by return time.
    returns: std::collections::BTreeSet<(u64, usize)>,
    /// Per position: its key in the known-set hash, or its bit in the unknown set.
    keys: Vec<(u128, u128)>,
}

/// One level of the search: the register value, where the next candidate
/// is looked for (among operations of known outcome first, then of
/// unknown), and the operation linearized to get here.
struct Frame {
    state: Value,
    cursor: usize,
    unknown_phase: bool,
    chosen: Option<usize>,
}

/// Operations of unknown outcome tracked as sets (beyond this many, the
/// rest count as if their outcome were known: exact, without subsumption).
const MAX_UNKNOWN_BITS: usize = 128;

/// Visited states: (known set hash, value) → minimal unknown sets seen.
#[derive(Default)]
struct Memo {
    seen: std::collections::HashMap<(u128, Value), Vec<u128>>,
    states: usize,
}

impl Memo {
    /// Records a state; `false` if a state with a subset of its unknown
    /// operations (and the same known ones and value) was seen.
    fn insert(&mut self, known: u128, value: Value, unknown: u128) -> bool {
        let sets = self.seen.entry((known, value)).or_default();
        if sets.iter().any(|&seen| seen & !unknown == 0) {
            return false;
        }
        sets.retain(|&seen| unknown & !seen != 0);
        sets.push(unknown);
        self.states += 1;
        true
    }
}

impl Search<'_> {
    fn op(&self, p: usize) -> &Op {
        &self.ops[self.order[p]]
    }

    fn first(&self) -> usize {
        if self.order.is_empty() { HEAD } else { self.next_of(HEAD) }
    }

    fn next_of(&self, p: usize) -> usize {
        if p == HEAD { self.next[self.order.len()] } else { self.next[p] }
    }

    fn slot(&self, p: usize) -> usize {
        if p == HEAD { self.order.len() } else { p }
    }

    fn lift(&mut self, p: usize) {
        let (prev, next) = (self.prev[p], self.next[p]);
        let (sp, sn) = (self.slot(prev), self.slot(next));
        self.next[sp] = next;
        self.prev[sn] = prev;
        if let Some(r) = self.op(p).ret {
            self.returns.remove(&(r, p));
        }
    }

    fn unlift(&mut self, p: usize) {
        let (prev, next) = (self.prev[p], self.next[p]);
        let (sp, sn) = (self.slot(prev), self.slot(next));
        self.next[sp] = p;
        self.prev[sn] = p;
        if let Some(r) = self.op(p).ret {
            self.returns.insert((r, p));
        }
    }
}

/// Checks a history starting from `initial` within [`DEFAULT_MAX_STATES`].
pub fn check(initial: Value, ops: &[Op]) -> Result<(), String> {
    check_within(initial, ops, DEFAULT_MAX_STATES)
}

/// Checks a history starting from `initial`, visiting at most `max_states`
/// search states; the error says whether the history is not linearizable
/// or the search gave up, with how many operations (and of unknown
/// outcome) it holds and how many states were visited.
pub fn check_within(initial: Value, ops: &[Op], max_states: usize) -> Result<(), String> {
    let n = ops.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| ops[i].call);
    // Slot n is the list head.
    let next: Vec<usize> = (0..=n)
        .map(|p| {
            if p + 1 < n {
                p + 1
            } else if p == n && n > 0 {
                0
            } else {
                HEAD
            }
        })
        .collect();
    let prev: Vec<usize> =
        (0..=n).map(|p| if p == n && n > 0 { n - 1 } else { p.checked_sub(1).unwrap_or(HEAD) }).collect();
    let returns = order.iter().enumerate().filter_map(|(p, &i)| ops[i].ret.map(|r| (r, p))).collect();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut splitmix = || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut unknown_bits = 0usize;
    let keys = order
        .iter()
        .map(|&i| {
            if ops[i].ret.is_none() && unknown_bits < MAX_UNKNOWN_BITS {
                unknown_bits += 1;
                (0, 1u128 << (unknown_bits - 1))
            } else {
                ((u128::from(splitmix()) << 64) | u128::from(splitmix()), 0)
            }
        })
        .collect();
    let mut search = Search { ops, order, next, prev, returns, keys };
    let unknown = ops.iter().filter(|o| o.ret.is_none()).count();
    let mut memo = Memo::default();
    let (mut known_hash, mut unknown_set) = (0u128, 0u128);
    let mut stack = vec![Frame { state: initial, cursor: search.first(), unknown_phase: false, chosen: None }];
    while let Some(top) = stack.last() {
        // Only operations of unknown outcome left: they may never have happened.
        let Some(&(first_return, _)) = search.returns.first() else { return Ok(()) };
        let (state, mut p, mut unknown_phase) = (top.state, top.cursor, top.unknown_phase);
        let mut step = None;
        'scan: loop {
            // Something returned before an operation was called: that must come first.
            while p != HEAD && search.op(p).call <= first_return {
                let op = search.op(p);
                if op.ret.is_none() == unknown_phase
                    && let Some(next_state) = op.step(state)
                {
                    let (key, bit) = search.keys[p];
                    if memo.insert(known_hash ^ key, next_state, unknown_set | bit) {
                        step = Some((p, next_state));
                        break 'scan;
                    }
                }
                p = search.next_of(p);
            }
            if unknown_phase {
                break;
            }
            unknown_phase = true;
            p = search.first();
        }
        match step {
            Some((p, next_state)) => {
                if memo.states > max_states {
                    return Err(format!(
                        "gave up after {} search states: the history of {n} operations ({unknown} of unknown \
                         outcome) is too ambiguous to decide; make it shorter or with fewer unknown outcomes",
                        memo.states
                    ));
                }
                let cursor = search.next_of(p);
                if let Some(top) = stack.last_mut() {
                    top.cursor = cursor;
                    top.unknown_phase = unknown_phase;
                }
                search.lift(p);
                let (key, bit) = search.keys[p];
                known_hash ^= key;
                unknown_set |= bit;
                stack.push(Frame { state: next_state, cursor: search.first(), unknown_phase: false, chosen: Some(p) });
            }
            None => {
                if let Some(Frame { chosen: Some(p), .. }) = stack.pop() {
                    search.unlift(p);
                    let (key, bit) = search.keys[p];
                    known_hash ^= key;
                    unknown_set &= !bit;
                }
            }
        }
    }
    Err(format!(
        "the history of {n} operations ({unknown} of unknown outcome) is not linearizable ({} search states tried)",
        memo.states
    ))
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

    #[test]
    fn a_long_sequential_history_is_checked_in_one_pass() {
        let mut h = Vec::new();
        for i in 0..50_000u64 {
            let t = i * 10;
            h.push(if i % 2 == 0 { op(0, t, t + 1, Kind::Write(i)) } else { op(1, t, t + 1, Kind::Read(Some(i - 1))) });
        }
        check_within(None, &h, h.len()).expect("linearizable, one state per operation");
        h.push(op(2, 600_000, 600_001, Kind::Read(Some(3))));
        let err = check(None, &h).expect_err("a stale read at the end");
        assert!(err.contains("not linearizable"), "{err}");
    }

    #[test]
    fn a_history_too_ambiguous_for_the_budget_fails_saying_so() {
        // Many overlapping writes of unknown outcome, then a read no order explains:
        // every subset of the writes is a state to rule out.
        let mut h: Vec<Op> =
            (0..30).map(|i| Op { client: i, call: i as u64, ret: None, kind: Kind::Write(i as u64) }).collect();
        h.push(op(99, 100, 101, Kind::Read(Some(1000))));
        let err = check_within(None, &h, 10_000).expect_err("cannot be decided within 10,000 states");
        assert!(err.contains("gave up after") && err.contains("30 of unknown outcome"), "{err}");
    }
}
