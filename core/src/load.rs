//! What one worker knows of a node's load, for least-request picking: the
//! requests it has in flight there, and a robust estimate of how long the
//! node takes to answer.
//!
//! The cost of sending the next request to a node is
//!
//! ```text
//! cost = (latency_estimate + BASE_US) × (in_flight + 1)
//! ```
//!
//! - `in_flight` counts this worker's requests routed to the node whose
//!   answer headers have not arrived: Envoy's own least-request signal. A
//!   node that answers slowly under load accumulates them.
//! - `latency_estimate` is the [`RANK`]-th smallest of the node's last
//!   [`SAMPLES`] answer latencies: a low quantile, not a mean. Latency noise
//!   only ever adds (a stall of the node, of the host or of Envoy's worker,
//!   a new connection's handshake, the seed answering a `/localnodes`
//!   poll), so a mean moves with every outlier and the slower-looking of
//!   two equal nodes loses requests it should have had. A low quantile
//!   moves only when most recent answers were slow: a node counts as slow
//!   once [`SAMPLES`] − [`RANK`] + 1 (5) of its last 6 answers were, which
//!   transient noise (even 1 answer in 20 delayed) practically never does,
//!   and a lastingly slow node does within a few answers.
//! - A node without requests for [`RETRY_MS`] (none in flight, none sent
//!   or answered in that time) has no estimate: its latency counts as 0, so
//!   it gets its turn again. This is the "occasional request" by which a
//!   node avoided for being slow is seen again: once per [`RETRY_MS`] per
//!   worker while it stays slow (its answer keeps the estimate high), and
//!   back in rotation after [`RANK`] fast answers once it is fast.
//! - [`BASE_US`] sets the scale below which latency differences do not
//!   count. With the picker's margins (see [`crate::picker::two_choices`]),
//!   a node whose estimate is a few milliseconds above another's keeps all
//!   its turns, one 10 ms above loses some of them, and one 150 ms above
//!   loses all but the occasional one. It also keeps a node without an
//!   estimate from costing nothing whatever its in-flight count, which
//!   would send it every request until its first answer. Under load the
//!   in-flight factor, not latency, separates equal nodes.
//!
//! All state is in `Cell`s of the node's route, owned by one worker: no
//! shared data, no allocation, no host call. Picking reads two numbers per
//! candidate; the quantile is computed once per answer.

use std::cell::Cell;

/// How many recent answer latencies a node's estimate is taken from.
pub const SAMPLES: usize = 6;

/// Which of them (1 = the smallest) is the estimate.
pub const RANK: usize = 2;

/// Added to every latency estimate, in microseconds (15 ms).
pub const BASE_US: f64 = 15_000.0;

/// After how long without requests a node's estimate is set aside, so that
/// it is tried again (milliseconds).
pub const RETRY_MS: u64 = 1_000;

const RETRY_NS: u64 = RETRY_MS * 1_000_000;

#[derive(Debug, Default)]
pub struct NodeLoad {
    in_flight: Cell<u32>,
    /// The last answers' latencies in microseconds; `next` is where the
    /// next one goes (overwriting the oldest once all are filled).
    samples: [Cell<u32>; SAMPLES],
    filled: Cell<u8>,
    next: Cell<u8>,
    /// The estimate from `samples`, kept up to date on each answer.
    estimate_us: Cell<u32>,
    /// When a request was last sent to the node or answered by it.
    active_ns: Cell<u64>,
}

impl NodeLoad {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }

    /// The latency estimate at `now_ns` in microseconds: 0 when the node
    /// has none (never answered), or has been without requests for
    /// [`RETRY_MS`].
    #[inline]
    pub fn latency_us(&self, now_ns: u64) -> f64 {
        let idle = now_ns.saturating_sub(self.active_ns.get());
        if self.in_flight.get() == 0 && idle > RETRY_NS {
            return 0.0;
        }
        f64::from(self.estimate_us.get())
    }

    /// What sending one more request to this node costs at `now_ns`.
    #[inline]
    pub fn cost(&self, now_ns: u64) -> f64 {
        (self.latency_us(now_ns) + BASE_US) * f64::from(self.in_flight.get().saturating_add(1))
    }

    /// A request was routed to the node at `now_ns`.
    #[inline]
    pub fn sent(&self, now_ns: u64) {
        self.in_flight.set(self.in_flight.get().saturating_add(1));
        self.active_ns.set(now_ns);
    }

    /// A request routed to the node ended without a usable latency (its
    /// stream ended before an answer, or the node did not answer at all).
    #[inline]
    pub fn released(&self) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
    }

    /// A request's answer headers came `took_ns` after it was routed.
    pub fn answered(&self, took_ns: u64, now_ns: u64) {
        self.released();
        self.active_ns.set(now_ns);
        let sample = u32::try_from(took_ns / 1_000).unwrap_or(u32::MAX);
        let next = usize::from(self.next.get());
        if let Some(slot) = self.samples.get(next) {
            slot.set(sample);
        }
        self.next.set(((next + 1) % SAMPLES) as u8);
        let filled = (usize::from(self.filled.get()) + 1).min(SAMPLES);
        self.filled.set(filled as u8);
        self.estimate_us.set(self.quantile(filled));
    }

    /// The [`RANK`]-th smallest of the first `filled` samples; while
    /// there are few, no higher than their lower median (of two answers,
    /// the quicker: the first may carry a new connection's handshake).
    fn quantile(&self, filled: usize) -> u32 {
        let mut all = [0u32; SAMPLES];
        let Some(sorted) = all.get_mut(..filled) else {
            return 0;
        };
        for (out, sample) in sorted.iter_mut().zip(&self.samples) {
            *out = sample.get();
        }
        sorted.sort_unstable();
        let rank = RANK.min(filled.div_ceil(2)).saturating_sub(1);
        sorted.get(rank).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const MS: u64 = 1_000_000;

    /// One answer taking `took_ms`, `at_ms` after the start.
    fn answer(load: &NodeLoad, took_ms: u64, at_ms: u64) {
        load.sent((at_ms - took_ms) * MS);
        load.answered(took_ms * MS, at_ms * MS);
    }

    #[test]
    fn in_flight_never_goes_below_zero() {
        let load = NodeLoad::default();
        load.released();
        assert_eq!(load.in_flight(), 0);
        load.sent(0);
        load.sent(0);
        load.answered(MS, 10 * MS);
        load.released();
        load.released();
        assert_eq!(load.in_flight(), 0);
    }

    #[test]
    fn outliers_do_not_move_the_estimate() {
        let load = NodeLoad::default();
        let mut now = 10_000;
        for took in [3, 3, 4, 3, 2, 3] {
            now += 5;
            answer(&load, took, now);
        }
        assert_eq!(load.latency_us(now * MS), 3_000.0);
        // A stall, a handshake, a poll: up to 4 slow answers of the last 6
        // leave the estimate where the node's quick answers put it.
        for took in [25, 80, 20, 150] {
            now += 5;
            answer(&load, took, now);
            assert!(load.latency_us(now * MS) <= 3_000.0);
        }
        // A fifth makes the node slow.
        now += 5;
        answer(&load, 40, now);
        assert_eq!(load.latency_us(now * MS), 20_000.0);
    }

    #[test]
    fn a_lasting_difference_shows_in_full() {
        let (fast, slow) = (NodeLoad::default(), NodeLoad::default());
        for (i, took) in [1u64, 3, 2, 1, 2, 3, 1, 2, 3, 2].into_iter().enumerate() {
            let at = 1_000 + 10 * i as u64;
            answer(&fast, took, at);
            answer(&slow, took + 3, at);
        }
        let now = 1_100 * MS;
        let difference = slow.latency_us(now) - fast.latency_us(now);
        assert_eq!(difference, 3_000.0);
        // Modest against the base: costs within 20% of each other.
        assert!(slow.cost(now) < 1.2 * fast.cost(now));
    }

    #[test]
    fn a_slow_node_is_slow_after_five_answers_and_fast_after_two() {
        let load = NodeLoad::default();
        let mut now = 1_000;
        for _ in 0..6 {
            now += 10;
            answer(&load, 3, now);
        }
        for i in 1..=5 {
            now += 200;
            answer(&load, 150, now);
            let slow = load.latency_us(now * MS) >= 150_000.0;
            assert_eq!(slow, i == 5, "after {i} slow answers");
        }
        now += 10;
        answer(&load, 3, now);
        assert_eq!(load.latency_us(now * MS), 150_000.0, "one fast answer");
        now += 10;
        answer(&load, 3, now);
        assert_eq!(load.latency_us(now * MS), 3_000.0, "two");
    }

    #[test]
    fn a_node_without_requests_for_a_while_gets_a_try() {
        let load = NodeLoad::default();
        for i in 0..6 {
            answer(&load, 150, 1_000 + 200 * i);
        }
        let last = 2_000;
        assert_eq!(load.latency_us((last + RETRY_MS) * MS), 150_000.0);
        assert_eq!(load.latency_us((last + RETRY_MS + 1) * MS), 0.0);
        // While the try is in flight, the estimate counts again: one try
        // at a time.
        load.sent((last + RETRY_MS + 1) * MS);
        assert_eq!(load.latency_us((last + RETRY_MS + 100) * MS), 150_000.0);
        // Its answer, still slow, keeps it out for another while.
        load.answered(150 * MS, (last + RETRY_MS + 151) * MS);
        assert_eq!(load.latency_us((last + RETRY_MS + 900) * MS), 150_000.0);
    }

    #[test]
    fn a_node_without_an_estimate_still_costs_its_requests_in_flight() {
        let fresh = NodeLoad::default();
        assert_eq!(fresh.cost(0), BASE_US);
        fresh.sent(0);
        fresh.sent(0);
        assert_eq!(fresh.cost(0), 3.0 * BASE_US);
    }

    #[test]
    fn the_first_answers_set_the_estimate_from_what_there_is() {
        let load = NodeLoad::default();
        answer(&load, 9, 100);
        assert_eq!(load.latency_us(100 * MS), 9_000.0);
        answer(&load, 4, 110);
        assert_eq!(load.latency_us(110 * MS), 4_000.0);
        answer(&load, 2, 120);
        assert_eq!(load.latency_us(120 * MS), 4_000.0);
    }
}
