//! Maglev lookup tables (Eisenbud et al., NSDI 2016, §3.4), a pure function.
//!
//! Every node computes the same table from the same backends: backends are
//! sorted by identity, and offsets/skips come from a hash with a fixed seed
//! that is spelled out here (not `std`'s, whose algorithm may change between
//! Rust releases, and nodes may run different builds).

/// Seeds of the two hashes that place a backend (offset, skip).
const SEED_OFFSET: u64 = 0x7761_6767_6c65_0001;
const SEED_SKIP: u64 = 0x7761_6767_6c65_0002;

/// FNV-1a over the bytes, then a SplitMix64 finaliser with the seed mixed in.
fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Fills a table of `m` slots (`m` prime) with indices into `backends`,
/// which name each backend by a stable identity (e.g. "10.0.0.5:8080/TCP").
/// The caller passes them sorted, so every node sees the same order. Returns
/// an empty table when there are no backends.
pub fn maglev_table<S: AsRef<[u8]>>(backends: &[S], m: u32) -> Vec<u32> {
    let n = backends.len();
    if n == 0 {
        return Vec::new();
    }
    let m64 = u64::from(m);
    let offset: Vec<u64> = backends.iter().map(|b| hash64(b.as_ref(), SEED_OFFSET) % m64).collect();
    let skip: Vec<u64> = backends.iter().map(|b| hash64(b.as_ref(), SEED_SKIP) % (m64 - 1) + 1).collect();
    let mut next = vec![0u64; n];
    let mut table = vec![u32::MAX; m as usize];
    let mut filled = 0usize;
    loop {
        for i in 0..n {
            // Next preferred slot of backend i that is still free; the
            // permutation visits every slot because m is prime.
            let mut slot = (offset[i] + next[i] * skip[i]) % m64;
            while table[slot as usize] != u32::MAX {
                next[i] += 1;
                slot = (offset[i] + next[i] * skip[i]) % m64;
            }
            table[slot as usize] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == m as usize {
                return table;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u32 = waggle_ebpf_common::lb::MAGLEV_M;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.1.{}.{}:8080/TCP", i / 200, i % 200 + 1)).collect()
    }

    fn counts(table: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &i in table {
            c[i as usize] += 1;
        }
        c
    }

    #[test]
    fn every_slot_is_filled_and_backends_share_them_evenly() {
        for n in [1, 2, 3, 5, 10] {
            let table = maglev_table(&names(n), M);
            assert_eq!(table.len(), M as usize);
            let c = counts(&table, n);
            let ideal = M as f64 / n as f64;
            for (i, &k) in c.iter().enumerate() {
                // Maglev's fill is round-robin, so shares differ by at most a
                // handful of slots at this M.
                assert!(
                    (k as f64 - ideal).abs() <= ideal * 0.02 + 2.0,
                    "n={n} backend {i} got {k} of {M}, ideal {ideal:.1}"
                );
            }
        }
    }

    #[test]
    fn no_backends_gives_an_empty_table() {
        assert!(maglev_table::<&str>(&[], M).is_empty());
    }

    #[test]
    fn the_same_backends_give_the_same_table_every_time() {
        let a = maglev_table(&names(7), M);
        let b = maglev_table(&names(7), M);
        assert_eq!(a, b);
        // Pinned values: a change of hash or fill order would silently make
        // nodes of different versions disagree.
        let one = maglev_table(&["10.0.0.1:80/TCP", "10.0.0.2:80/TCP"], M);
        assert_eq!(counts(&one, 2), vec![511, 510]);
        assert_eq!(one[..12].to_vec(), vec![1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1], "first slots of the pinned table");
    }

    #[test]
    fn removing_a_backend_moves_few_flows_of_the_others() {
        let before_names = names(10);
        let before = maglev_table(&before_names, M);
        let removed = 3usize;
        let after_names: Vec<String> =
            before_names.iter().enumerate().filter(|(i, _)| *i != removed).map(|(_, s)| s.clone()).collect();
        let after = maglev_table(&after_names, M);
        let name_before = |i: u32| &before_names[i as usize];
        let name_after = |i: u32| &after_names[i as usize];
        let mut kept_moved = 0;
        let mut survivors = 0;
        for slot in 0..M as usize {
            if before[slot] as usize == removed {
                continue;
            }
            survivors += 1;
            if name_before(before[slot]) != name_after(after[slot]) {
                kept_moved += 1;
            }
        }
        // Slots of the removed backend must move; of the rest, Maglev moves
        // only a few percent (the paper measures a small constant fraction).
        assert!(
            (kept_moved as f64) < survivors as f64 * 0.1,
            "{kept_moved} of {survivors} slots of surviving backends changed backend"
        );
        assert!(after.iter().all(|&i| (i as usize) < after_names.len()));
    }

    #[test]
    fn adding_a_backend_takes_its_share_mostly_from_the_others_evenly() {
        let before_names = names(4);
        let before = maglev_table(&before_names, M);
        let after_names = names(5);
        let after = maglev_table(&after_names, M);
        let moved_to_other = (0..M as usize)
            .filter(|&s| after[s] != 4 && before_names[before[s] as usize] != after_names[after[s] as usize])
            .count();
        assert!(moved_to_other < (M as usize) / 10, "{moved_to_other} slots moved between old backends");
    }
}
