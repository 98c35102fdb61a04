//! The order in which a keyed request tries the nodes of a ring: the
//! key's seeded plan for a single-item write, the vote order for a batch.
//!
//! The order is fixed by the key and the ring alone, never by health, so
//! that a node going down does not remap keys; [`super::choose()`] applies
//! health to it.

use super::go_rand;
use super::key::KeyHashes;

/// Indices into a canonical ring of `ring_len` nodes ([`super::ring()`]), the
/// preferred node first; `None` for an empty ring (or a batch without a
/// vote, which cannot happen for a [`KeyHashes::Batch`] from [`super::key()`]).
pub fn order(key: &KeyHashes, ring_len: usize) -> Option<Vec<usize>> {
    if ring_len == 0 {
        return None;
    }
    match key {
        KeyHashes::Single(hash) => Some(plan(ring_len, *hash)),
        KeyHashes::Batch(hashes) => vote_order(hashes, ring_len),
    }
}

/// BatchWriteItem (the libraries' `AFF-REQ-005`): each target votes for its
/// key's node over the full ring; voted nodes by votes, most first, ties by
/// canonical name (which is ring order), then the unvoted nodes in ring
/// order. Not seeded, so it depends on neither the order of the writes nor
/// anything but their keys.
fn vote_order(hashes: &[i64], ring_len: usize) -> Option<Vec<usize>> {
    let mut votes = vec![0usize; ring_len];
    let mut any = false;
    for &hash in hashes {
        if let Some(slot) = preferred(ring_len, hash).and_then(|i| votes.get_mut(i)) {
            *slot += 1;
            any = true;
        }
    }
    if !any {
        return None;
    }
    let mut order: Vec<usize> = (0..ring_len).collect();
    // Stable, and `order` starts in ring order, so ties stay in ring order.
    let votes_of = |i: &usize| votes.get(*i).copied().unwrap_or(0);
    order.sort_by_key(|i| std::cmp::Reverse(votes_of(i)));
    Some(order)
}

/// The order in which a key's requests try the ring's nodes (indices into
/// `ring_len` nodes); the first is the key's node. Past the generator's
/// supported draws the rest follow in ring order.
pub fn plan(ring_len: usize, hash: i64) -> Vec<usize> {
    let mut rest: Vec<usize> = (0..ring_len).collect();
    let mut rng = go_rand::GoRand::new(hash);
    let mut out = Vec::with_capacity(ring_len);
    while !rest.is_empty() {
        let Some(i) = rng.intn(rest.len()) else {
            rest.sort_unstable();
            out.extend(rest);
            break;
        };
        out.push(rest.swap_remove(i));
    }
    out
}

/// The key's node alone: the first pick of [`plan`], without building the
/// rest of the order (what BatchWriteItem votes need per item).
pub fn preferred(ring_len: usize, hash: i64) -> Option<usize> {
    go_rand::GoRand::new(hash).intn(ring_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_single_key_follows_its_plan() {
        for (hash, n) in [(42i64, 10usize), (-1, 3), (i64::MIN, 1), (0, 256)] {
            assert_eq!(order(&KeyHashes::Single(hash), n), Some(plan(n, hash)));
        }
        assert_eq!(order(&KeyHashes::Single(42), 0), None);
        assert_eq!(order(&KeyHashes::Batch(vec![42]), 0), None);
        assert_eq!(order(&KeyHashes::Batch(vec![]), 3), None);
    }

    #[test]
    fn votes_then_ring_order() {
        // Seeds 42, 123 and 0 prefer nodes 5, 5 and 4 of 10
        // (feature-specs/vectors/query-plan.tsv).
        let got = order(&KeyHashes::Batch(vec![0, 42, 123]), 10).unwrap();
        assert_eq!(got, [5, 4, 0, 1, 2, 3, 6, 7, 8, 9]);
        // The writes' order does not matter.
        assert_eq!(order(&KeyHashes::Batch(vec![123, 0, 42]), 10).unwrap(), got);
        // A tie goes to the earlier node in the ring: 999 prefers 4, 42 prefers 5.
        let tie = order(&KeyHashes::Batch(vec![42, 999]), 10).unwrap();
        assert_eq!(tie, [4, 5, 0, 1, 2, 3, 6, 7, 8, 9]);
        // One vote is the voted node, then the ring in order.
        assert_eq!(
            order(&KeyHashes::Batch(vec![-1]), 10).unwrap(),
            [1, 0, 2, 3, 4, 5, 6, 7, 8, 9]
        );
    }
}
