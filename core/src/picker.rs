//! Which node of a routing scope the next request goes to: round robin
//! over the scope's list, or the lower-cost node of two drawn at random
//! (least request, "power of two choices"). The per-request decision.
//!
//! Each Envoy worker owns one picker. Workers start at different offsets so
//! that, with several workers each taking a few requests, the first node is
//! not everyone's first choice. Entries are whatever the caller wants handed
//! to Envoy (pre-encoded bytes in the filter), so picking never formats or
//! allocates.

#[derive(Clone, Debug)]
pub struct RoundRobin<T> {
    entries: Vec<T>,
    next: usize,
}

impl<T> RoundRobin<T> {
    /// `start` is the worker's offset; any value is fine, it is reduced
    /// modulo the list length.
    pub fn new(entries: Vec<T>, start: usize) -> Self {
        let next = if entries.is_empty() {
            0
        } else {
            start % entries.len()
        };
        RoundRobin { entries, next }
    }

    /// The next entry, or `None` when there is no node at all.
    #[inline]
    pub fn pick(&mut self) -> Option<&T> {
        let i = self.next;
        let entry = self.entries.get(i)?;
        self.next = if i + 1 >= self.entries.len() {
            0
        } else {
            i + 1
        };
        Some(entry)
    }

    /// Swaps in a new list, keeping the position so that a list change does
    /// not restart every worker at the same node.
    pub fn replace(&mut self, entries: Vec<T>) {
        self.next = if entries.is_empty() {
            0
        } else {
            self.next % entries.len()
        };
        self.entries = entries;
    }

    /// Drops entries at once (a node this worker just saw fail), keeping
    /// the position valid.
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.entries.retain(keep);
        self.next = if self.entries.is_empty() {
            0
        } else {
            self.next % self.entries.len()
        };
    }

    pub fn entries(&self) -> &[T] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Costs closer than this factor are a tie. Latency estimates of equal
/// nodes jitter; without a margin the one that happens to be estimated a
/// little slower would lose every pair it is drawn into until its estimate
/// moved, and equal nodes would not get equal shares.
pub const TIE_MARGIN: f64 = 1.2;

/// Of two distinct entries drawn with `draw` (any random u64), the one
/// with the clearly lower cost (by more than [`TIE_MARGIN`]); on a tie the
/// first drawn, which is drawn uniformly, so that equal entries get equal
/// shares. The only entry of a list of one; `None` for an empty list. Two
/// draws rather than the cheapest of all keep a node that just became
/// cheap from getting every worker's every request at once.
#[inline]
pub fn two_choices<T>(entries: &[T], draw: u64, cost: impl Fn(&T) -> f64) -> Option<&T> {
    let n = entries.len() as u64;
    if n < 2 {
        return entries.first();
    }
    let first = draw % n;
    let mut second = (draw >> 32) % (n - 1);
    if second >= first {
        second += 1;
    }
    let a = entries.get(first as usize)?;
    let b = entries.get(second as usize)?;
    Some(if cost(b) * TIE_MARGIN < cost(a) { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn cycles_through_every_entry_in_order() {
        let mut rr = RoundRobin::new(vec!['a', 'b', 'c'], 1);
        let got: String = (0..7).filter_map(|_| rr.pick().copied()).collect();
        assert_eq!(got, "bcabcab");
    }

    #[test]
    fn empty_list_yields_nothing() {
        let mut rr: RoundRobin<u8> = RoundRobin::new(vec![], 5);
        assert!(rr.pick().is_none());
        assert!(rr.is_empty());
    }

    #[test]
    fn replace_keeps_position_within_bounds() {
        let mut rr = RoundRobin::new(vec![1, 2, 3, 4], 3);
        rr.replace(vec![10, 20]);
        assert_eq!(rr.pick(), Some(&20));
        rr.replace(vec![]);
        assert_eq!(rr.pick(), None);
        rr.replace(vec![7]);
        assert_eq!(rr.pick(), Some(&7));
        assert_eq!(rr.len(), 1);
    }

    #[test]
    fn retain_drops_entries_and_keeps_cycling() {
        let mut rr = RoundRobin::new(vec![1, 2, 3], 2);
        rr.retain(|&n| n != 2);
        let got: Vec<i32> = (0..4).filter_map(|_| rr.pick().copied()).collect();
        assert_eq!(got, [1, 3, 1, 3]);
        rr.retain(|_| false);
        assert!(rr.pick().is_none());
    }

    #[test]
    fn workers_with_different_offsets_spread_evenly() {
        // 4 workers, each serving an arbitrary share of 3000 requests.
        let shares = [1000usize, 700, 800, 500];
        let mut counts = [0usize; 3];
        for (w, share) in shares.iter().enumerate() {
            let mut rr = RoundRobin::new(vec![0usize, 1, 2], w * 7919);
            for _ in 0..*share {
                counts[*rr.pick().unwrap()] += 1;
            }
        }
        let max = counts.iter().max().unwrap();
        let min = counts.iter().min().unwrap();
        assert!(max - min <= shares.len(), "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 3000);
    }

    #[test]
    fn two_choices_takes_the_cheaper_of_two_distinct_entries() {
        assert_eq!(two_choices::<u32>(&[], 7, |_| 0.0), None);
        assert_eq!(two_choices(&[9], 7, |_| 0.0), Some(&9));
        let costs = [5.0, 1.0, 3.0];
        assert!(costs[2] > costs[1] * TIE_MARGIN && costs[0] > costs[2] * TIE_MARGIN);
        let mut seen = [0usize; 3];
        let mut draw = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..3000 {
            draw = draw
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = *two_choices(&[0usize, 1, 2], draw, |&i| costs[i]).unwrap();
            seen[i] += 1;
        }
        // The dearest is never taken (it always loses its pair); the
        // cheapest wins every pair it is in (2 of 3).
        assert_eq!(seen[0], 0, "{seen:?}");
        assert!(seen[1] > 1800 && seen[1] < 2200, "{seen:?}");
    }

    #[test]
    fn costs_within_the_margin_are_a_tie() {
        let mut seen = [0usize; 2];
        let mut draw = 3u64;
        for _ in 0..10_000 {
            draw = draw
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seen[*two_choices(&[0usize, 1], draw, |&i| [1.0, 1.15][i]).unwrap()] += 1;
        }
        assert!(
            seen.iter().all(|&n| (4_700..5_300).contains(&n)),
            "{seen:?}"
        );
        assert_eq!(two_choices(&[0usize, 1], 0, |&i| [1.0, 1.3][i]), Some(&0));
        assert_eq!(two_choices(&[0usize, 1], 1, |&i| [1.0, 1.3][i]), Some(&0));
    }

    #[test]
    fn ties_give_equal_entries_equal_shares() {
        let mut seen = [0usize; 4];
        let mut draw = 1u64;
        for _ in 0..40_000 {
            draw = draw
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seen[*two_choices(&[0usize, 1, 2, 3], draw, |_| 1.0).unwrap()] += 1;
        }
        assert!(
            seen.iter().all(|&n| (9_500..10_500).contains(&n)),
            "{seen:?}"
        );
    }
}
