//! Go's `math/rand` source (`rand.NewSource(seed)`, the additive lagged
//! Fibonacci generator) and its `Intn`, as far as the affinity plan needs it.
//!
//! ScyllaDB's client libraries order nodes for a key by seeding this exact
//! generator with the key's hash and drawing pick-and-remove indices, so a
//! proxy must reproduce it bit for bit to pick the node they pick. Only the
//! first [`MAX_DRAWS`] draws are supported (see `go_rand_cooked`): that is
//! the preferred node and well over a hundred fallbacks.

use super::go_rand_cooked::{FEED, TAP};

const LEN: usize = 607;
const FEED_START: usize = LEN - 273;
const INT32_MAX: i64 = (1 << 31) - 1;
pub const MAX_DRAWS: usize = FEED.len();

pub struct GoRand {
    /// The state at the indices the first draws read: `feed[k]` is index
    /// `FEED_START - MAX_DRAWS + k`, `tap[k]` index `LEN - MAX_DRAWS + k`.
    feed: [u64; MAX_DRAWS],
    tap: [u64; MAX_DRAWS],
    draws: usize,
}

fn seed_step(x: i32) -> i32 {
    const A: i32 = 48271;
    const Q: i32 = 44488;
    const R: i32 = 3399;
    let hi = x / Q;
    let lo = x % Q;
    let x = A.wrapping_mul(lo).wrapping_sub(R.wrapping_mul(hi));
    if x < 0 {
        x.wrapping_add(i32::MAX)
    } else {
        x
    }
}

impl GoRand {
    pub fn new(seed: i64) -> GoRand {
        let mut s = seed % INT32_MAX;
        if s < 0 {
            s += INT32_MAX;
        }
        if s == 0 {
            s = 89_482_311;
        }
        let mut x = s as i32;
        let mut rng = GoRand {
            feed: [0; MAX_DRAWS],
            tap: [0; MAX_DRAWS],
            draws: 0,
        };
        let feed_from = FEED_START - MAX_DRAWS;
        let tap_from = LEN - MAX_DRAWS;
        for i in -20..LEN as i32 {
            x = seed_step(x);
            let Ok(i) = usize::try_from(i) else {
                continue;
            };
            let mut u = (x as i64) << 40;
            x = seed_step(x);
            u ^= (x as i64) << 20;
            x = seed_step(x);
            u ^= x as i64;
            if let Some(k) = i.checked_sub(feed_from).filter(|k| *k < MAX_DRAWS) {
                if let (Some(slot), Some(c)) = (rng.feed.get_mut(k), FEED.get(k)) {
                    *slot = (u ^ c) as u64;
                }
            } else if let Some(k) = i.checked_sub(tap_from) {
                if let (Some(slot), Some(c)) = (rng.tap.get_mut(k), TAP.get(k)) {
                    *slot = (u ^ c) as u64;
                }
            }
        }
        rng
    }

    /// Go's `Uint64` (which `Int63` masks); `None` past [`MAX_DRAWS`].
    fn next(&mut self) -> Option<u64> {
        if self.draws >= MAX_DRAWS {
            return None;
        }
        self.draws += 1;
        // Draw j reads indices LEN - j (tap) and FEED_START - j (feed).
        let k = MAX_DRAWS - self.draws;
        let x = self.feed.get(k)?.wrapping_add(*self.tap.get(k)?);
        if let Some(slot) = self.feed.get_mut(k) {
            *slot = x;
        }
        Some(x)
    }

    fn int31(&mut self) -> Option<i32> {
        Some(((self.next()? & (u64::MAX >> 1)) >> 32) as i32)
    }

    /// Go's `Intn(n)` for `1 <= n < 2^31` (its `Int31n` branch).
    pub fn intn(&mut self, n: usize) -> Option<usize> {
        let n = i32::try_from(n).ok().filter(|n| *n > 0)?;
        if n & (n - 1) == 0 {
            return usize::try_from(self.int31()? & (n - 1)).ok();
        }
        let max = (i32::MAX as u32 - (1u32 << 31) % n as u32) as i32;
        let mut v = self.int31()?;
        while v > max {
            v = self.int31()?;
        }
        usize::try_from(v % n).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn matches_go_for_seed_1() {
        // rand.NewSource(1).Int63() == 5577006791947779410 in Go.
        let mut r = GoRand::new(1);
        assert_eq!(
            r.next().map(|x| x & (u64::MAX >> 1)),
            Some(5577006791947779410)
        );
    }

    /// Pick-and-remove over nodes 1..=10 in the given order: Go's
    /// shared/query_plan_unit_test.go TestLazyQueryPlanCrossLanguageVectors.
    fn plan(seed: i64, n: usize) -> Vec<usize> {
        let mut rest: Vec<usize> = (1..=n).collect();
        let mut r = GoRand::new(seed);
        let mut out = Vec::new();
        while !rest.is_empty() {
            let i = r.intn(rest.len()).unwrap();
            out.push(rest.swap_remove(i));
        }
        out
    }

    #[test]
    fn published_generator_vectors() {
        for (seed, first6) in [
            (42, [6, 9, 5, 2, 7, 1]),
            (123, [6, 1, 4, 3, 10, 5]),
            (999, [5, 10, 4, 1, 2, 3]),
            (0, [5, 1, 2, 10, 6, 8]),
            (-1, [2, 5, 1, 3, 6, 10]),
            (12345, [4, 5, 1, 7, 6, 8]),
            (i64::MAX, [2, 7, 8, 1, 10, 4]),
        ] {
            assert_eq!(plan(seed, 10)[..6], first6, "seed {seed}");
        }
    }

    #[test]
    fn draws_stop_at_the_limit() {
        let mut r = GoRand::new(7);
        for _ in 0..MAX_DRAWS {
            assert!(r.next().is_some());
        }
        assert_eq!(r.next(), None);
        assert_eq!(r.intn(3), None);
    }
}
