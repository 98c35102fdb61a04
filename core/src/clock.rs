//! A VM's own time: monotonic, built from the host's wall clock.
//!
//! proxy-wasm 0.2 offers the host's wall clock only, and a wall clock
//! steps: NTP corrects it, an operator sets it, a VM is suspended and
//! resumed. Every timing decision of the filter (discovery rounds, probes,
//! hold timeouts, least request's retry after a silence) compares times,
//! so a step back would stop them for as long as the step, and a step
//! forward would make everything due at once. A [`Clock`] turns the host's
//! readings into a time that never goes back and never jumps: a step back
//! costs nothing, and a jump forward counts as one tick period.
//!
//! A VM reads its clock at least once per tick (and at each request that
//! times its answer), so between two readings about a tick passes, a
//! little more when Envoy's timer fires late. A gap of more than two tick
//! periods is a jump, and counts as one period; shorter gaps count in
//! full, so that late ticks do not slow the VM's time down. The price: when
//! Envoy holds up a VM's tick for more than two periods, the clock counts
//! only one of them.
//!
//! The VMs of one Envoy process share times through the discovery record,
//! so their clocks must agree. They see the same steps within a tick, and
//! so stay within a tick or two of each other; a VM started after a step
//! (a reconfiguration, a reload after a trap) must not start from the
//! host's clock, or its times would be the step away from theirs. So the
//! VMs keep their offset from the host's clock ([`Clock::offset_ms`]) in
//! shared data, and a new VM starts from the host's clock plus the offset
//! it finds there ([`Clock::new`]).
//!
//! One VM alone can also lose time: Envoy held up its ticks (a busy
//! worker), and it counted the gap as one tick, while the other VMs saw
//! that time pass. Left alone it would stay behind them for good, and a
//! VM behind the others finds their due times later than they meant (a
//! whole interval behind, every round looks due). So on each tick a VM
//! compares its offset with the shared one ([`Clock::agree`]): the largest
//! offset wins, except that a VM that has just seen a jump itself reports
//! it rather than undo it, since every VM sees a real jump of the host's
//! clock within a tick. Then a VM that lost time to a stall catches up
//! within two ticks, a real jump still counts as one tick everywhere, and
//! no clock ever goes back.
//!
//! State is in `Cell`s: one clock per VM, shared by its poller and its
//! requests (one thread), read without a `RefCell` borrow.

use crate::host::{Host, HostError};
use std::cell::Cell;

/// The process's clock offset in shared data under `key` (milliseconds,
/// decimal), or 0 when there is none or it cannot be read.
pub fn read_offset(host: &impl Host, key: &str) -> i64 {
    let Ok(Some((bytes, _))) = host.shared_get(key) else {
        return 0;
    };
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Leaves `offset_ms` in shared data under `key`, whatever was there: the
/// VMs agree within a tick or two, and the latest to see a step knows it.
pub fn write_offset(host: &impl Host, key: &str, offset_ms: i64) -> Result<(), HostError> {
    host.shared_set(key, offset_ms.to_string().as_bytes(), None)
}

#[derive(Debug)]
pub struct Clock {
    /// The host's reading at the last read.
    host_ns: Cell<u64>,
    /// This VM's time at the last read.
    now_ns: Cell<u64>,
    /// The tick period: what a jump counts as.
    tick_ns: u64,
    /// Whether a reading since the last [`Clock::agree`] found a step (the
    /// host back, or a gap of more than two ticks).
    stepped: Cell<bool>,
}

impl Clock {
    /// A clock that starts `offset_ms` ahead of the host's time `host_ns`
    /// (the process's offset, 0 when none is known), for a VM that ticks
    /// every `tick_ms`.
    pub fn new(host_ns: u64, offset_ms: i64, tick_ms: u64) -> Clock {
        let start = i128::from(host_ns) + i128::from(offset_ms) * 1_000_000;
        Clock {
            host_ns: Cell::new(host_ns),
            now_ns: Cell::new(u64::try_from(start.max(0)).unwrap_or(u64::MAX)),
            tick_ns: tick_ms.saturating_mul(1_000_000),
            stepped: Cell::new(false),
        }
    }

    /// This VM's time, given the host's clock reads `host_ns` now.
    #[inline]
    pub fn read(&self, host_ns: u64) -> u64 {
        let last = self.host_ns.replace(host_ns);
        let gap = host_ns.saturating_sub(last);
        let step = if gap > self.tick_ns.saturating_mul(2) {
            self.stepped.set(true);
            self.tick_ns
        } else {
            if host_ns < last {
                self.stepped.set(true);
            }
            gap
        };
        let now = self.now_ns.get().saturating_add(step);
        self.now_ns.set(now);
        now
    }

    /// [`Clock::read`] in milliseconds.
    pub fn read_ms(&self, host_ns: u64) -> u64 {
        self.read(host_ns) / 1_000_000
    }

    /// How far this VM's time is ahead of the host's clock, in
    /// milliseconds (negative: behind), as of the last reading: what the
    /// VM leaves in the record for VMs started later.
    pub fn offset_ms(&self) -> i64 {
        let ahead = i128::from(self.now_ns.get()) - i128::from(self.host_ns.get());
        i64::try_from(ahead / 1_000_000).unwrap_or(if ahead < 0 { i64::MIN } else { i64::MAX })
    }

    /// Brings this clock in line with the process's offset `shared_ms`
    /// (what the VMs last left in shared data), once per tick. Offsets
    /// within `tolerance_ms` agree. Returns the offset to leave in shared
    /// data instead, when this VM knows better: it is ahead of the shared
    /// offset (it saw a step back, or did not lose the time another VM
    /// reported losing), or it is behind because it saw a jump itself. A
    /// VM behind without having seen a jump lost time the others did not:
    /// it moves forward to their time.
    pub fn agree(&self, shared_ms: i64, tolerance_ms: u64) -> Option<i64> {
        let stepped = self.stepped.replace(false);
        let own = self.offset_ms();
        if own.abs_diff(shared_ms) <= tolerance_ms {
            return None;
        }
        if own > shared_ms || stepped {
            return Some(own);
        }
        let behind_ns = shared_ms.abs_diff(own).saturating_mul(1_000_000);
        self.now_ns.set(self.now_ns.get().saturating_add(behind_ns));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const MS: u64 = 1_000_000;
    const HOUR: u64 = 3_600_000 * MS;

    #[test]
    fn follows_the_host_through_late_ticks() {
        let clock = Clock::new(1_000 * MS, 0, 100);
        assert_eq!(clock.read(1_000 * MS), 1_000 * MS);
        assert_eq!(clock.read(1_050 * MS), 1_050 * MS);
        assert_eq!(clock.read(1_150 * MS), 1_150 * MS);
        // A tick 90% late counts in full.
        assert_eq!(clock.read(1_340 * MS), 1_340 * MS);
        assert_eq!(clock.offset_ms(), 0);
    }

    #[test]
    fn a_step_back_costs_nothing_and_time_goes_on_from_there() {
        let clock = Clock::new(10 * HOUR, 0, 1_000);
        clock.read(10 * HOUR + 500 * MS);
        // The host steps back an hour: the VM's time stands still once...
        assert_eq!(clock.read(9 * HOUR + 500 * MS), 10 * HOUR + 500 * MS);
        // ...and then moves as the host does.
        assert_eq!(clock.read(9 * HOUR + 560 * MS), 10 * HOUR + 560 * MS);
        assert_eq!(clock.offset_ms(), 3_600_000);
    }

    #[test]
    fn a_jump_forward_counts_as_one_tick() {
        let clock = Clock::new(10 * HOUR, 0, 100);
        assert_eq!(clock.read(11 * HOUR), 10 * HOUR + 100 * MS);
        assert_eq!(clock.read(11 * HOUR + 20 * MS), 10 * HOUR + 120 * MS);
        assert_eq!(clock.offset_ms(), -(3_600_000 - 100));
        // So does any gap over two ticks.
        assert_eq!(clock.read(11 * HOUR + 221 * MS), 10 * HOUR + 220 * MS);
    }

    #[test]
    fn never_goes_back_whatever_the_host_reads() {
        let clock = Clock::new(5 * HOUR, 0, 1_000);
        let mut host = 5 * HOUR;
        let mut last = clock.read(host);
        for i in 0..1_000u64 {
            // Forward, back, big jumps, small steps.
            host = match i % 7 {
                0 => host.saturating_sub(HOUR),
                3 => host + 2 * HOUR,
                _ => host + (i % 13) * MS,
            };
            let now = clock.read(host);
            assert!(now >= last, "{now} < {last}");
            assert!(now - last <= 2_000 * MS);
            last = now;
        }
    }

    /// Two VMs of one process ticking every 100 ms on one host clock, with
    /// the offset they share.
    struct Pair {
        a: Clock,
        b: Clock,
        shared: i64,
        host: u64,
    }

    impl Pair {
        fn new() -> Pair {
            let mut pair = Pair {
                a: Clock::new(HOUR, 0, 100),
                b: Clock::new(HOUR, 0, 100),
                shared: 0,
                host: HOUR,
            };
            pair.ticks(10, false);
            pair
        }

        /// `n` ticks of A, and of B unless it is held up.
        fn ticks(&mut self, n: usize, b_held_up: bool) {
            for _ in 0..n {
                self.host += 100 * MS;
                let clocks = [Some(&self.a), (!b_held_up).then_some(&self.b)];
                for clock in clocks.into_iter().flatten() {
                    clock.read(self.host);
                    if let Some(offset) = clock.agree(self.shared, 200) {
                        self.shared = offset;
                    }
                }
            }
        }
    }

    #[test]
    fn a_vm_whose_ticks_were_held_up_catches_up_with_the_others() {
        let mut pair = Pair::new();
        pair.ticks(50, true);
        // B counts the 5 s gap as one tick and reports it; A, which saw the
        // time pass, answers with its own offset; B takes it.
        pair.ticks(3, false);
        assert_eq!(pair.a.read(pair.host), pair.host);
        assert_eq!(pair.b.read(pair.host), pair.host);
        assert_eq!(pair.shared, 0);
    }

    #[test]
    fn a_jump_every_vm_sees_counts_as_one_tick_in_each() {
        let mut pair = Pair::new();
        pair.host += HOUR;
        pair.ticks(5, false);
        // Each counted the jump as one tick, and they agree.
        let (ta, tb) = (pair.a.read(pair.host), pair.b.read(pair.host));
        assert_eq!(ta, tb);
        assert!(ta < HOUR + 3_000 * MS, "{ta}");
        assert!(
            (-3_600_000..=-3_599_000).contains(&pair.shared),
            "{}",
            pair.shared
        );
    }

    #[test]
    fn a_vm_started_after_a_step_starts_at_the_others_time() {
        let old = Clock::new(10 * HOUR, 0, 100);
        old.read(9 * HOUR); // the host stepped back an hour
        let new = Clock::new(9 * HOUR, old.offset_ms(), 100);
        assert_eq!(new.read(9 * HOUR + 10 * MS), old.read(9 * HOUR + 10 * MS));
        // And after a jump forward, behind the host as they are.
        let old = Clock::new(10 * HOUR, 0, 100);
        old.read(11 * HOUR);
        let new = Clock::new(11 * HOUR, old.offset_ms(), 100);
        assert_eq!(new.read(11 * HOUR + 10 * MS), old.read(11 * HOUR + 10 * MS));
    }
}
