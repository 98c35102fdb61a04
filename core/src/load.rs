//! What one worker knows of a node's load, for least-request picking: the
//! requests it has in flight there, and a decaying estimate of how long
//! the node takes to answer.
//!
//! The cost of sending the next request to a node is
//!
//! ```text
//! cost = (latency_estimate + BASE_US) × (in_flight + 1)
//! ```
//!
//! - `in_flight` counts this worker's requests routed to the node whose
//!   answer headers have not arrived (the classic least-request signal: a
//!   node that answers slowly accumulates them).
//! - `latency_estimate` is a time-weighted average of answer latencies:
//!   an answer counts for the time it covers, which is the time since the
//!   node's previous answer but no more than the answer itself took
//!   (weight `1 - exp(-covered / SMOOTHING_MS)`). A node answering often
//!   averages over about [`SMOOTHING_MS`] of answers, so one outlier moves
//!   it little. After a silence, a slow answer moves it most of the way
//!   (150 ms: 78%), so one client sending one request at a time, which
//!   never has two in flight, still sees a slow node as slow; a quick one
//!   barely moves it (3 ms: 3%), so the first answer on a new connection,
//!   which carries the connection's handshake, does not make an equal
//!   node look slow.
//! - Once a node has been without answers for longer than
//!   [`SMOOTHING_MS`], its estimate decays toward zero (time constant
//!   [`DECAY_MS`]); nodes in use keep theirs fresh. A node avoided for
//!   being slow therefore gets a request again about a second later (a
//!   150 ms estimate falls to within the tie margin of a busy 1 ms node's,
//!   about 3 ms, in 100 ms + ln(50) ≈ 3.9 × [`DECAY_MS`]); if it is fast by then,
//!   its answers keep it in: this is the "occasional request" that lets a
//!   recovered node be seen. The constant is short because the slow answer
//!   that got a node avoided need not be the node's fault: a stall of
//!   Envoy's worker, or of the host, lands on whichever node had the
//!   request, and should sideline it for a second, not for several.
//! - [`BASE_US`] keeps a node without any estimate (new, or idle long
//!   enough) from costing nothing whatever its in-flight count, which
//!   would send it every request until its first answer. It also sets the
//!   scale below which latency does not count: with the picker's 1.2 tie
//!   margin, two idle nodes whose estimates differ by less than about
//!   2 ms + 20% are a tie, and ties are round robin. The estimates of equal
//!   nodes jitter by a millisecond or two (a GC pause, a new connection's
//!   handshake); under light load that noise would otherwise decide who
//!   gets the next request, and equal nodes would not get equal shares.
//!   Under load the in-flight factor, not latency, separates nodes.
//!
//! All state is in `Cell`s of the node's route, owned by one worker: no
//! shared data, no allocation, no host call.

use std::cell::Cell;

/// How long the latency estimate decays toward zero without answers
/// (time constant, in milliseconds).
pub const DECAY_MS: f64 = 300.0;

/// Over how much time of answers the latency estimate averages (time
/// constant, in milliseconds).
pub const SMOOTHING_MS: f64 = 100.0;

const SMOOTHING_NS: u64 = SMOOTHING_MS as u64 * 1_000_000;

/// Added to every latency estimate, in microseconds (10 ms).
pub const BASE_US: f64 = 10_000.0;

#[derive(Debug, Default)]
pub struct NodeLoad {
    in_flight: Cell<u32>,
    /// The latency estimate in microseconds, as of `stamp_ns`.
    latency_us: Cell<f64>,
    stamp_ns: Cell<u64>,
}

/// exp(-elapsed / time constant).
fn fading(elapsed_ns: u64, constant_ms: f64) -> f64 {
    let elapsed_ms = elapsed_ns as f64 / 1e6;
    (-elapsed_ms / constant_ms).exp()
}

impl NodeLoad {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }

    /// The latency estimate at `now_ns`: decayed for the time the node
    /// has been without answers beyond [`SMOOTHING_MS`]. (A node answering
    /// at a steady pace is not silent; decaying between its answers would
    /// bias its estimate below its latency.)
    pub fn latency_us(&self, now_ns: u64) -> f64 {
        let silent = now_ns
            .saturating_sub(self.stamp_ns.get())
            .saturating_sub(SMOOTHING_NS);
        self.latency_us.get() * fading(silent, DECAY_MS)
    }

    /// What sending one more request to this node costs at `now_ns`.
    #[inline]
    pub fn cost(&self, now_ns: u64) -> f64 {
        (self.latency_us(now_ns) + BASE_US) * f64::from(self.in_flight.get().saturating_add(1))
    }

    /// A request was routed to the node.
    #[inline]
    pub fn sent(&self) {
        self.in_flight.set(self.in_flight.get().saturating_add(1));
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
        let sample = took_ns as f64 / 1e3;
        let covered = now_ns.saturating_sub(self.stamp_ns.get()).min(took_ns);
        let current = self.latency_us(now_ns);
        let weight = 1.0 - fading(covered, SMOOTHING_MS);
        self.latency_us.set(current + (sample - current) * weight);
        self.stamp_ns.set(now_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const MS: u64 = 1_000_000;

    #[test]
    fn in_flight_never_goes_below_zero() {
        let load = NodeLoad::default();
        load.released();
        assert_eq!(load.in_flight(), 0);
        load.sent();
        load.sent();
        load.answered(MS, 10 * MS);
        load.released();
        load.released();
        assert_eq!(load.in_flight(), 0);
    }

    #[test]
    fn the_estimate_follows_answers_over_the_smoothing_time() {
        let load = NodeLoad::default();
        // A slow answer after a silence moves it most of the way.
        load.sent();
        load.answered(150 * MS, 10_000 * MS);
        let weight = 1.0 - (-1.5f64).exp();
        assert!((load.latency_us(10_000 * MS) - 150_000.0 * weight).abs() < 1.0);
        // Answers every 5 ms pull it toward 5 ms: the gap shrinks by e
        // every smoothing time, so 1 s of them leaves nothing of it...
        let mut now = 10_000 * MS;
        for _ in 0..200 {
            load.sent();
            now += 5 * MS;
            load.answered(5 * MS, now);
        }
        let settled = load.latency_us(now);
        assert!((settled - 5_000.0).abs() < 50.0, "{settled}");
        // ...and one outlier among them moves it little.
        load.sent();
        now += 5 * MS;
        load.answered(80 * MS, now);
        let bumped = load.latency_us(now);
        assert!(bumped < 10_000.0, "{bumped}");
    }

    #[test]
    fn a_quick_answer_after_a_silence_barely_moves_the_estimate() {
        // A new connection's first answer: 3 ms, handshake included.
        let load = NodeLoad::default();
        load.sent();
        load.answered(3 * MS, 10_000 * MS);
        let got = load.latency_us(10_000 * MS);
        assert!(got < 100.0, "{got}");
        assert!(load.cost(10_000 * MS) < BASE_US * 1.01);
    }

    #[test]
    fn an_unused_estimate_decays_so_an_avoided_node_is_tried_again() {
        // The fast node answers in 5 ms every 10 ms throughout...
        let fast = NodeLoad::default();
        let mut now = 0;
        let tick = |now: u64| {
            fast.sent();
            fast.answered(5 * MS, now);
        };
        while now < 10_000 * MS {
            now += 10 * MS;
            tick(now);
        }
        // ...the slow one answers once in 150 ms, and is avoided after.
        let slow = NodeLoad::default();
        slow.sent();
        slow.answered(150 * MS, now);
        let start = now;
        let ratio = slow.latency_us(start) / fast.latency_us(start);
        assert!(ratio > 20.0, "{ratio}");
        let mut tried_at = None;
        while now < start + 10_000 * MS {
            now += 10 * MS;
            tick(now);
            if tried_at.is_none() && slow.cost(now) < fast.cost(now) {
                tried_at = Some(now - start);
            }
        }
        // Once its estimate has decayed to the fast one's: after the
        // smoothing time, ln(ratio) time constants.
        let tried_at = tried_at.expect("the slow node becomes worth a try") as f64 / 1e6;
        let expected = SMOOTHING_MS + DECAY_MS * ratio.ln();
        assert!(
            (tried_at - expected).abs() < 100.0,
            "{tried_at} ms, {expected}"
        );
        // A fast answer then keeps it there.
        slow.sent();
        slow.answered(5 * MS, now);
        assert!(slow.latency_us(now) < 6_000.0, "{}", slow.latency_us(now));
    }

    #[test]
    fn a_node_without_an_estimate_still_costs_its_requests_in_flight() {
        let fresh = NodeLoad::default();
        assert_eq!(fresh.cost(0), BASE_US);
        fresh.sent();
        fresh.sent();
        assert_eq!(fresh.cost(0), 3.0 * BASE_US);
    }
}
