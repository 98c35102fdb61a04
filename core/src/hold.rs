//! Holding writes for their body (key route affinity): which requests of a
//! VM wait, since when, and whether the VM holds writes at all.
//!
//! A write is held from its headers until its body has come, so that its
//! key can be read. Envoy hands the filter that body only when its Wasm
//! filter config sets `allow_on_headers_stop_iteration`; without it a held
//! write would wait until the client gives up. So a held write whose body
//! has not started within the hold timeout is sent on without affinity
//! (the poller does that on its tick), and a VM that sees nothing but such
//! timeouts stops holding writes, by [`HoldRule`]: per VM, on this VM's
//! own evidence, and never for good.
//!
//! Bounded: at most [`MAX_HELD`] requests wait (or were sent on and not
//! yet told so) per VM; a write past that is sent on unheld, and counted.

use std::collections::HashMap;

/// Held writes in a row whose body did not come in time, on a VM that never
/// saw a held write's body, that stop the VM holding writes.
pub const TIMEOUTS_TO_STOP: u32 = 3;

/// How long a VM that stopped holding writes waits before it holds one
/// again, to see whether a body now comes.
pub const RETRY_AFTER_MS: u64 = 60_000;

/// Most requests a VM holds at once (waiting for their body, or sent on by
/// the poller and not yet told so). Each holds a body in Envoy's buffers
/// (up to 16 MiB); a VM with more writes in flight at once than this sends
/// the next ones on without affinity.
pub const MAX_HELD: usize = 1024;

/// Whether a VM holds writes: yes, unless it has never seen a held write
/// receive its body and its last [`TIMEOUTS_TO_STOP`] held writes all
/// timed out. Then it stops, and tries again after [`RETRY_AFTER_MS`]
/// (one more timeout stops it again). A held write's body (or its
/// trailers) that comes while the write is held shows that Envoy hands
/// bodies over: from then on the VM holds writes for good. A body that
/// comes after its write was sent on shows nothing (Envoy hands it over
/// then even without `allow_on_headers_stop_iteration`), and a held write
/// that ends before either (the client gave up) counts neither way.
#[derive(Debug, Default)]
pub struct HoldRule {
    body_seen: bool,
    timeouts_in_a_row: u32,
    /// When the VM stopped holding writes.
    stopped_at_ms: Option<u64>,
    /// Whether the stop was announced: once, until a body comes.
    announced: bool,
}

/// What a hold timeout did to the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// The VM holds writes still.
    Holding,
    /// The VM stopped holding writes, for the first time since a body was
    /// last seen (worth saying).
    Stopped,
    /// The VM stopped again, after a retry (already said).
    StoppedAgain,
}

impl HoldRule {
    #[inline]
    pub fn holding(&self) -> bool {
        self.stopped_at_ms.is_none()
    }

    /// A held write's body (or its trailers) came while it was held: true
    /// when the VM had stopped holding writes and now holds them again.
    pub fn body_came(&mut self) -> bool {
        self.body_seen = true;
        self.timeouts_in_a_row = 0;
        self.announced = false;
        self.stopped_at_ms.take().is_some()
    }

    /// A held write's body did not come in time, at `now_ms`.
    pub fn timed_out(&mut self, now_ms: u64) -> Timeout {
        self.timeouts_in_a_row = self.timeouts_in_a_row.saturating_add(1);
        if self.body_seen || self.timeouts_in_a_row < TIMEOUTS_TO_STOP || !self.holding() {
            return Timeout::Holding;
        }
        self.stopped_at_ms = Some(now_ms);
        if std::mem::replace(&mut self.announced, true) {
            Timeout::StoppedAgain
        } else {
            Timeout::Stopped
        }
    }

    /// Holds writes again once [`RETRY_AFTER_MS`] have passed since the
    /// stop; true when it does so now.
    pub fn retry(&mut self, now_ms: u64) -> bool {
        match self.stopped_at_ms {
            Some(at) if now_ms.saturating_sub(at) >= RETRY_AFTER_MS => {
                self.stopped_at_ms = None;
                true
            }
            _ => false,
        }
    }
}

/// The requests a VM holds, by Envoy's context id: those waiting for their
/// body, with when they were held (the request's own clock), and those the
/// poller sent on without it (`T`: where to), until the request hears of it.
#[derive(Debug)]
pub struct Holds<T> {
    waiting: HashMap<u32, u64>,
    sent_on: HashMap<u32, T>,
}

impl<T> Default for Holds<T> {
    fn default() -> Self {
        Holds {
            waiting: HashMap::new(),
            sent_on: HashMap::new(),
        }
    }
}

impl<T> Holds<T> {
    /// Starts holding request `id` at `now_ms`; false when [`MAX_HELD`]
    /// requests are held already (the request is not held).
    pub fn hold(&mut self, id: u32, now_ms: u64) -> bool {
        if self.waiting.len() + self.sent_on.len() >= MAX_HELD {
            return false;
        }
        self.waiting.insert(id, now_ms);
        true
    }

    /// Request `id`'s body is coming, or it is gone: no longer waiting.
    pub fn unhold(&mut self, id: u32) {
        self.waiting.remove(&id);
    }

    /// The requests that have waited `timeout_ms` or longer, taken off the
    /// waiting list.
    pub fn take_overdue(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<u32> {
        let mut overdue = Vec::new();
        self.waiting.retain(|id, since| {
            let late = now_ms.saturating_sub(*since) >= timeout_ms;
            if late {
                overdue.push(*id);
            }
            !late
        });
        overdue
    }

    /// Records that request `id`, taken off the waiting list, was sent on.
    pub fn sent_on(&mut self, id: u32, to: T) {
        self.sent_on.insert(id, to);
    }

    /// Where request `id` was sent on, if it was (asked once).
    pub fn take_sent_on(&mut self, id: u32) -> Option<T> {
        self.sent_on.remove(&id)
    }

    /// Requests held now: how many wait, and how many were sent on but
    /// not told.
    pub fn sizes(&self) -> (usize, usize) {
        (self.waiting.len(), self.sent_on.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn three_timeouts_with_no_body_ever_seen_stop_holding() {
        let mut rule = HoldRule::default();
        assert!(rule.holding());
        assert_eq!(rule.timed_out(1_000), Timeout::Holding);
        assert_eq!(rule.timed_out(2_000), Timeout::Holding);
        assert!(rule.holding());
        assert_eq!(rule.timed_out(3_000), Timeout::Stopped);
        assert!(!rule.holding());
    }

    #[test]
    fn a_body_seen_means_never_stopping() {
        let mut rule = HoldRule::default();
        rule.timed_out(1_000);
        rule.timed_out(2_000);
        assert!(!rule.body_came(), "it had not stopped");
        for t in 0..100 {
            assert_eq!(rule.timed_out(3_000 + t), Timeout::Holding);
        }
        assert!(rule.holding());
    }

    #[test]
    fn a_stopped_vm_tries_again_after_a_minute() {
        let mut rule = HoldRule::default();
        for t in 1..=3 {
            rule.timed_out(t);
        }
        assert!(!rule.holding());
        assert!(!rule.retry(3 + RETRY_AFTER_MS - 1));
        assert!(!rule.holding());
        assert!(rule.retry(3 + RETRY_AFTER_MS));
        assert!(rule.holding());
        // One more timeout: the last three all timed out still.
        assert_eq!(rule.timed_out(RETRY_AFTER_MS + 500), Timeout::StoppedAgain);
        assert!(!rule.holding());
        // A body that comes while its write is held (after a retry) resumes
        // holding for good.
        assert!(rule.body_came());
        assert!(rule.holding());
        for t in 0..10 {
            assert_eq!(rule.timed_out(2 * RETRY_AFTER_MS + t), Timeout::Holding);
        }
    }

    #[test]
    fn holds_are_kept_by_id_and_bounded() {
        let mut holds: Holds<&str> = Holds::default();
        for id in 0..MAX_HELD as u32 {
            assert!(holds.hold(id, 1_000 + u64::from(id)));
        }
        assert!(!holds.hold(9_999, 5_000), "full");
        holds.unhold(7);
        assert!(holds.hold(9_999, 5_000), "room again");
        holds.unhold(12_345); // not held: nothing happens
                              // Overdue: held at least 300 ms before 1_310 (ids 0..=10, not 7).
        let mut late = holds.take_overdue(1_310, 300);
        late.sort_unstable();
        assert_eq!(late, [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]);
        assert!(holds.take_overdue(1_310, 300).is_empty(), "taken once");
        for id in late {
            holds.sent_on(id, "node a");
        }
        // Sent on and not told: still counted against the bound.
        assert_eq!(holds.sizes(), (MAX_HELD - 10, 10));
        assert!(!holds.hold(20_000, 5_000));
        assert_eq!(holds.take_sent_on(3), Some("node a"));
        assert_eq!(holds.take_sent_on(3), None);
        assert!(holds.hold(20_000, 5_000));
    }
}
