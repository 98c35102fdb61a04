//! Sorting for the small lists the filter keeps (node lists, seeds, learned
//! tables, vote orders).
//!
//! Why not the standard library's sorts: every element type and every
//! comparison gets its own copy of them, and their copies were about a tenth
//! of the `.wasm` (BENCHMARKS.md, "Size"). These lists hold at most a few
//! thousand entries and are sorted on a discovery round, at configuration, or
//! (affinity votes) over a few dozen nodes, so an insertion sort is fast
//! enough and costs a few hundred bytes per use instead of several kilobytes.

/// Sorts `v` so that no element is `less` than one before it. Stable: equal
/// elements keep their order. Quadratic moves in the worst case, which is
/// why it is only for the short lists above.
pub fn sort_by<T>(v: &mut [T], mut less: impl FnMut(&T, &T) -> bool) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && matches!((v.get(j - 1), v.get(j)), (Some(a), Some(b)) if less(b, a)) {
            v.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Sorts `v` ascending, stably.
pub fn sort<T: Ord>(v: &mut [T]) {
    sort_by(v, |a, b| a < b);
}

/// Sorts `v` ascending and drops repeated elements: the canonical form of
/// every node and seed list.
pub fn sort_dedup<T: Ord>(v: &mut Vec<T>) {
    sort(v);
    v.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Inputs of every length up to 9 from a small generator, with many
    /// repeats, checked against the standard library's stable sort.
    #[test]
    fn agrees_with_the_standard_sort() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..10 {
            for _ in 0..200 {
                let v: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed % 5) as u8
                    })
                    .collect();
                let mut ours = v.clone();
                sort(&mut ours);
                let mut theirs = v.clone();
                theirs.sort();
                assert_eq!(ours, theirs, "input {v:?}");

                let mut ours = v.clone();
                sort_dedup(&mut ours);
                theirs.dedup();
                assert_eq!(ours, theirs, "input {v:?}");
            }
        }
    }

    #[test]
    fn equal_keys_keep_their_order() {
        let mut v = vec![(2, 'a'), (1, 'b'), (2, 'c'), (1, 'd'), (0, 'e'), (2, 'f')];
        sort_by(&mut v, |a, b| a.0 < b.0);
        assert_eq!(
            v,
            [(0, 'e'), (1, 'b'), (1, 'd'), (2, 'a'), (2, 'c'), (2, 'f')]
        );
    }

    #[test]
    fn a_descending_order_is_reversed() {
        let mut v: Vec<u32> = (0..1000).rev().collect();
        sort(&mut v);
        assert!(v.iter().copied().eq(0..1000));
    }
}
