//! Round robin over the current node list: the per-request decision.
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
}
