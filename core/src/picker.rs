//! Which node of a routing scope the next request goes to: round robin
//! over the scope's list, or least request ("power of two choices": the
//! round robin's next node against one drawn at random, the clearly
//! cheaper of the two). The per-request decision.
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
        let i = self.advance()?;
        self.entries.get(i)
    }

    /// Least request: the round robin's next entry, unless an entry drawn
    /// at random (with `draw`, any random u64) from the others is clearly
    /// cheaper (see [`two_choices`]).
    #[inline]
    pub fn pick_cheaper(&mut self, draw: u64, cost: impl Fn(&T) -> f64) -> Option<&T> {
        let first = self.advance()?;
        two_choices(&self.entries, first, draw, cost)
    }

    /// The index of the next entry, moving past it.
    #[inline]
    fn advance(&mut self) -> Option<usize> {
        let i = self.next;
        if i >= self.entries.len() {
            return None;
        }
        self.next = if i + 1 >= self.entries.len() {
            0
        } else {
            i + 1
        };
        Some(i)
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

    /// The next pick is the first entry again.
    pub fn restart(&mut self) {
        self.next = 0;
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

/// Costs closer than this factor are a tie: the first keeps its turn.
/// Estimates of equal nodes differ a little even when robust (one host is
/// busier, one connection newer); without a margin the one that happens to
/// look a little dearer would lose every pair it is drawn into, and equal
/// nodes would not get equal shares.
pub const TIE_MARGIN: f64 = 1.2;

/// Costs this far apart, or more, are no contest: the cheaper always wins.
/// Between [`TIE_MARGIN`] and this, the cheaper wins with a probability
/// that grows linearly with the ratio, so that a modest difference shifts
/// load modestly instead of all at once.
pub const CLEAR_MARGIN: f64 = 2.0;

/// Of `entries[first]` and an entry drawn uniformly from the others with
/// `draw` (any random u64: its low half draws the entry, its high half
/// decides a contest), which one gets the request. The first keeps its
/// turn unless the other is cheaper by more than [`TIE_MARGIN`]; beyond
/// that the other wins with probability
/// `(ratio − TIE_MARGIN) / (CLEAR_MARGIN − TIE_MARGIN)`, and always from
/// [`CLEAR_MARGIN`] on. The only entry of a list of one; `None` when
/// `first` is out of range.
///
/// The caller passes the round robin's next entry as `first`, so ties
/// resolve into round robin: equal nodes get exactly equal shares, not just
/// equal in expectation, and a node only loses its turn to one that is
/// measurably less loaded. The second entry is random, not the cheapest of
/// all, so that a node that just became cheap does not get every worker's
/// every request at once.
#[inline]
pub fn two_choices<T>(
    entries: &[T],
    first: usize,
    draw: u64,
    cost: impl Fn(&T) -> f64,
) -> Option<&T> {
    let a = entries.get(first)?;
    let others = entries.len() as u64 - 1;
    if others == 0 {
        return Some(a);
    }
    let mut second = ((draw & 0xFFFF_FFFF) % others) as usize;
    if second >= first {
        second += 1;
    }
    let b = entries.get(second)?;
    let (cost_a, cost_b) = (cost(a), cost(b));
    if cost_a <= cost_b * TIE_MARGIN {
        return Some(a);
    }
    let odds = (cost_a / cost_b - TIE_MARGIN) / (CLEAR_MARGIN - TIE_MARGIN);
    let toss = (draw >> 32) as f64 / 4_294_967_296.0;
    Some(if toss < odds { b } else { a })
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

    /// The LCG the tests draw with (any spread of u64 values will do).
    fn draws(seed: u64) -> impl FnMut() -> u64 {
        let mut draw = seed;
        move || {
            draw = draw
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            draw
        }
    }

    #[test]
    fn two_choices_keeps_the_first_unless_the_other_is_clearly_cheaper() {
        assert_eq!(two_choices::<u32>(&[], 0, 7, |_| 0.0), None);
        assert_eq!(two_choices(&[9], 0, 7, |_| 0.0), Some(&9));
        assert_eq!(two_choices(&[9], 1, 7, |_| 0.0), None);
        let costs = [7.0, 1.0, 3.0];
        assert!(costs[2] >= costs[1] * CLEAR_MARGIN && costs[0] >= costs[2] * CLEAR_MARGIN);
        let mut next = draws(0x9E37_79B9_7F4A_7C15);
        let mut seen = [[0usize; 3]; 3];
        for (first, counts) in seen.iter_mut().enumerate() {
            for _ in 0..3000 {
                let i = *two_choices(&[0usize, 1, 2], first, next(), |&i| costs[i]).unwrap();
                counts[i] += 1;
            }
        }
        // The dearest loses its turn to either other (drawn evenly)...
        assert_eq!(seen[0][0], 0, "{seen:?}");
        assert!((1_350..1_650).contains(&seen[0][1]), "{seen:?}");
        // ...the middle one only to the cheapest, when that is drawn...
        assert!((1_350..1_650).contains(&seen[2][1]), "{seen:?}");
        assert_eq!(seen[2][0], 0, "{seen:?}");
        // ...and the cheapest never.
        assert_eq!(seen[1], [0, 3000, 0], "{seen:?}");
    }

    #[test]
    fn costs_within_the_margin_are_a_tie_and_keep_the_first() {
        let mut next = draws(3);
        for first in 0..2 {
            for _ in 0..100 {
                let got = two_choices(&[0usize, 1], first, next(), |&i| [1.0, 1.15][i]);
                assert_eq!(got, Some(&first));
            }
        }
        for _ in 0..100 {
            let draw = next();
            let got = two_choices(&[0usize, 1], 1, draw, |&i| [1.0, 2.1][i]);
            assert_eq!(got, Some(&0), "clearly cheaper");
            let got = two_choices(&[0usize, 1], 0, draw, |&i| [1.0, 2.1][i]);
            assert_eq!(got, Some(&0));
        }
    }

    #[test]
    fn between_the_margins_the_cheaper_wins_in_proportion() {
        let mut next = draws(17);
        for (ratio, expected) in [(1.4, 0.25), (1.6, 0.5), (1.8, 0.75)] {
            let won = (0..4000)
                .filter(|_| two_choices(&[0usize, 1], 1, next(), |&i| [1.0, ratio][i]) == Some(&0))
                .count() as f64
                / 4000.0;
            assert!((won - expected).abs() < 0.03, "{ratio}: {won}");
        }
    }

    #[test]
    fn ties_are_round_robin_so_equal_entries_get_exactly_equal_shares() {
        let mut rr = RoundRobin::new(vec![0usize, 1, 2, 3], 2);
        let mut next = draws(1);
        let got: Vec<usize> = (0..8)
            .filter_map(|_| rr.pick_cheaper(next(), |_| 1.0).copied())
            .collect();
        assert_eq!(got, [2, 3, 0, 1, 2, 3, 0, 1]);
        let mut empty: RoundRobin<usize> = RoundRobin::new(vec![], 0);
        assert_eq!(empty.pick_cheaper(next(), |_| 1.0), None);
    }

    #[test]
    fn a_clearly_dearer_entry_loses_its_turn_to_the_others_evenly() {
        let mut rr = RoundRobin::new(vec![0usize, 1, 2], 0);
        let mut next = draws(11);
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            seen[*rr.pick_cheaper(next(), |&i| [1.0, 1.0, 30.0][i]).unwrap()] += 1;
        }
        assert_eq!(seen[2], 0, "{seen:?}");
        assert!((1_400..1_600).contains(&seen[0]), "{seen:?}");
    }
}
