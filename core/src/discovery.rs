//! Who polls `/localnodes`, when, which node it asks, and what the answer
//! does to the shared state.
//!
//! Every VM in an Envoy process calls [`try_start_round`] on each tick; the
//! shared state acts as a lease, so whichever VM wins the compare-and-swap
//! for a due round is the only one that polls in that interval. The result is
//! folded back with [`apply_answer`] or [`apply_failure`], and every VM
//! derives the list it routes over with [`routing_nodes`].

use crate::address::NodeAddr;
use crate::health;
use crate::log_throttle::should_log_failure;
use crate::rng::Rng;
use crate::shared_state::SharedState;

/// How many failed targets are remembered; enough to walk a large seed list,
/// small enough to keep the shared record short.
pub const MAX_FAILED: usize = 64;

/// Workers report activity at most this often (each report is a write).
pub const ACTIVITY_RESOLUTION_MS: u64 = 1_000;
/// Failed rounds double the interval up to this factor.
pub const MAX_BACKOFF_FACTOR: u64 = 8;

/// The discovery rhythm, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// While requests flow.
    pub interval_ms: u64,
    /// After `idle_after_ms` without requests.
    pub idle_interval_ms: u64,
    pub idle_after_ms: u64,
}

impl Timing {
    /// The interval before the round after this one: the idle interval when
    /// nothing was routed for a minute; otherwise the active one, doubled per
    /// failure in a row after the first (bounded by [`MAX_BACKOFF_FACTOR`]
    /// and by the idle interval), so a dead cluster is not hammered.
    pub fn next_interval(&self, state: &SharedState, now_ms: u64) -> u64 {
        if self.is_idle(state, now_ms) {
            return self.idle_interval_ms;
        }
        let doublings = state.consecutive_failures.saturating_sub(1).min(3);
        let factor = (1u64 << doublings).min(MAX_BACKOFF_FACTOR);
        let backed_off = self.interval_ms.saturating_mul(factor);
        backed_off.min(self.idle_interval_ms.max(self.interval_ms))
    }

    fn is_idle(&self, state: &SharedState, now_ms: u64) -> bool {
        state.last_activity_ms.saturating_add(self.idle_after_ms) <= now_ms
    }

    /// Records that requests were routed. Returns the state to write, or
    /// `None` when the last report is recent enough. The first request after
    /// an idle spell makes a round due at once, so the list is fresh again
    /// quickly.
    pub fn note_activity(&self, state: &SharedState, now_ms: u64) -> Option<SharedState> {
        if now_ms
            < state
                .last_activity_ms
                .saturating_add(ACTIVITY_RESOLUTION_MS)
        {
            return None;
        }
        let mut next = state.clone();
        next.last_activity_ms = now_ms;
        if self.is_idle(state, now_ms) {
            next.next_due_ms = next.next_due_ms.min(now_ms);
        }
        Some(next)
    }
}

/// A fresh shared state, created by the first VM to tick. Start-up counts as
/// activity, so discovery runs at the active pace for the first minute.
pub fn initial_state(now_ms: u64) -> SharedState {
    SharedState {
        last_activity_ms: now_ms,
        ..SharedState::default()
    }
}

/// A discovery round this VM has won: ask `target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    pub number: u64,
    pub target: NodeAddr,
}

/// Starts a round if one is due. Returns the state to write back (with
/// compare-and-swap: losing the swap means another VM started it) and the
/// round to run.
///
/// Rounds keep a steady rhythm: the next one is due one interval after the
/// previous due time, not after whenever a tick noticed it, so tick jitter
/// does not stretch the period.
pub fn try_start_round(
    state: &SharedState,
    now_ms: u64,
    timing: Timing,
    seeds: &[NodeAddr],
    rng: &mut Rng,
) -> Option<(SharedState, Round)> {
    if now_ms < state.next_due_ms {
        return None;
    }
    let target = choose_target(state, seeds, rng)?;
    let interval_ms = timing.next_interval(state, now_ms);
    let on_rhythm = state.next_due_ms.saturating_add(interval_ms);
    let next_due_ms = if state.next_due_ms != 0 && on_rhythm > now_ms {
        on_rhythm
    } else {
        now_ms.saturating_add(interval_ms)
    };
    let number = state.round + 1;
    let next = SharedState {
        round: number,
        next_due_ms,
        ..state.clone()
    };
    Some((next, Round { number, target }))
}

/// A known node at random, avoiding those that failed since the last
/// success; then a seed; when everything has failed, the target that failed
/// longest ago, so that every candidate gets its turn.
pub fn choose_target(state: &SharedState, seeds: &[NodeAddr], rng: &mut Rng) -> Option<NodeAddr> {
    let known = known_nodes(state);
    // Healthy known nodes first (a Down node would most likely fail too),
    // then any known node, then the seeds; never one that failed since the
    // last success.
    let stages = [(known, true), (known, false), (seeds, false)];
    for (pool, healthy_only) in stages {
        let fresh: Vec<&NodeAddr> = pool
            .iter()
            .filter(|n| {
                !state.failed.contains(n) && (!healthy_only || health::is_routable(state, n))
            })
            .collect();
        if let Some(pick) = fresh.get(rng.below(fresh.len())) {
            return Some(**pick);
        }
    }
    state
        .failed
        .iter()
        .find(|f| known.contains(f) || seeds.contains(f))
        .copied()
        .or_else(|| seeds.first().copied())
}

fn known_nodes(state: &SharedState) -> &[NodeAddr] {
    if state.list_round > 0 {
        &state.nodes
    } else {
        &[]
    }
}

/// What a round's result did, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The list changed (`first`: it is the first list ever discovered).
    ListChanged {
        added: Vec<NodeAddr>,
        removed: Vec<NodeAddr>,
        total: usize,
        first: bool,
        recovered_after: u32,
    },
    ListUnchanged {
        recovered_after: u32,
    },
    /// A newer round already published its list; this answer is older.
    Stale,
    /// `log`: whether this failure of the streak deserves a log line.
    Failed {
        consecutive: u32,
        log: bool,
    },
}

/// Folds a usable `/localnodes` answer (already parsed, non-empty) into the
/// state.
pub fn apply_answer(
    state: &SharedState,
    round: &Round,
    nodes: Vec<NodeAddr>,
    now_ms: u64,
) -> (SharedState, Event) {
    let recovered_after = state.consecutive_failures;
    let mut next = SharedState {
        consecutive_failures: 0,
        failed: Vec::new(),
        last_success_ms: now_ms,
        ..state.clone()
    };
    if round.number < state.list_round {
        return (next, Event::Stale);
    }
    next.list_round = round.number;
    if state.list_round > 0 && state.nodes == nodes {
        return (next, Event::ListUnchanged { recovered_after });
    }
    let old = known_nodes(state);
    let added = nodes.iter().filter(|n| !old.contains(n)).copied().collect();
    let removed = old.iter().filter(|n| !nodes.contains(n)).copied().collect();
    let first = state.list_round == 0;
    let event = Event::ListChanged {
        added,
        removed,
        total: nodes.len(),
        first,
        recovered_after,
    };
    next.nodes = nodes;
    health::on_new_list(&mut next, old, first, now_ms);
    (next, event)
}

/// Records that `round.target` did not give a usable answer. The list is
/// left exactly as it was.
pub fn apply_failure(state: &SharedState, round: &Round) -> (SharedState, Event) {
    let mut next = state.clone();
    next.consecutive_failures = state.consecutive_failures.saturating_add(1);
    next.failed.retain(|f| *f != round.target);
    next.failed.push(round.target);
    if next.failed.len() > MAX_FAILED {
        let excess = next.failed.len() - MAX_FAILED;
        next.failed.drain(..excess);
    }
    let consecutive = next.consecutive_failures;
    (
        next,
        Event::Failed {
            consecutive,
            log: should_log_failure(consecutive),
        },
    )
}

/// The nodes requests are routed over: the healthy nodes of the last
/// discovered list; before the first discovery, the healthy seeds that have
/// not failed it. When none is left, requests get an immediate error instead
/// of a connection attempt to an address that is known not to answer.
pub fn routing_nodes(state: Option<&SharedState>, seeds: &[NodeAddr]) -> Vec<NodeAddr> {
    match state {
        Some(s) if s.list_round > 0 => s
            .nodes
            .iter()
            .filter(|n| health::is_routable(s, n))
            .copied()
            .collect(),
        Some(s) => seeds
            .iter()
            .filter(|n| !s.failed.contains(n) && health::is_routable(s, n))
            .copied()
            .collect(),
        None => seeds.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const T: Timing = Timing {
        interval_ms: 1000,
        idle_interval_ms: 60_000,
        idle_after_ms: 60_000,
    };

    fn a(s: &str) -> NodeAddr {
        s.parse().unwrap()
    }

    fn addrs(list: &[&str]) -> Vec<NodeAddr> {
        list.iter().map(|s| a(s)).collect()
    }

    fn discovered(nodes: &[&str]) -> SharedState {
        SharedState {
            round: 1,
            next_due_ms: 1000,
            list_round: 1,
            nodes: addrs(nodes),
            ..SharedState::default()
        }
    }

    #[test]
    fn a_round_starts_only_when_due() {
        let mut rng = Rng::new(1);
        let seeds = addrs(&["10.0.0.1:8000"]);
        let s = SharedState {
            next_due_ms: 5000,
            ..SharedState::default()
        };
        assert!(try_start_round(&s, 4999, T, &seeds, &mut rng).is_none());
        let (next, round) = try_start_round(&s, 5000, T, &seeds, &mut rng).unwrap();
        assert_eq!(round.number, 1);
        assert_eq!(next.round, 1);
        assert_eq!(next.next_due_ms, 6000);
        // The new state is not due again within the interval.
        assert!(try_start_round(&next, 5999, T, &seeds, &mut rng).is_none());
    }

    #[test]
    fn rounds_keep_their_rhythm_despite_tick_jitter() {
        let mut rng = Rng::new(1);
        let seeds = addrs(&["10.0.0.1:8000"]);
        let mut s = SharedState::default();
        let mut now = 10_000;
        let mut rounds = 0;
        // Ticks every 90 ms for 10 s: a late tick must not delay later rounds.
        while now < 20_000 {
            if let Some((next, _)) = try_start_round(&s, now, T, &seeds, &mut rng) {
                s = next;
                rounds += 1;
            }
            now += 90;
        }
        assert_eq!(rounds, 10);
    }

    #[test]
    fn a_long_stall_restarts_the_rhythm_from_now() {
        let mut rng = Rng::new(1);
        let seeds = addrs(&["10.0.0.1:8000"]);
        let s = SharedState {
            next_due_ms: 1000,
            ..SharedState::default()
        };
        let (next, _) = try_start_round(&s, 60_000, T, &seeds, &mut rng).unwrap();
        assert_eq!(next.next_due_ms, 61_000);
    }

    #[test]
    fn only_one_of_many_vms_wins_a_round() {
        // Every VM sees the same state; after the first writes its lease, the
        // others, re-reading, find the round not due.
        let mut rng = Rng::new(3);
        let seeds = addrs(&["10.0.0.1:8000"]);
        let shared = SharedState {
            next_due_ms: 100,
            ..SharedState::default()
        };
        let (after_first, _) = try_start_round(&shared, 100, T, &seeds, &mut rng).unwrap();
        for _ in 0..4 {
            assert!(try_start_round(&after_first, 150, T, &seeds, &mut rng).is_none());
        }
    }

    #[test]
    fn target_is_a_known_node_when_there_is_one() {
        let mut rng = Rng::new(9);
        let s = discovered(&["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]);
        let seeds = addrs(&["10.9.9.9:8000"]);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            let t = choose_target(&s, &seeds, &mut rng).unwrap();
            assert!(s.nodes.contains(&t));
            seen.insert(t);
        }
        assert_eq!(
            seen.len(),
            3,
            "the choice should be random over known nodes"
        );
    }

    #[test]
    fn failed_targets_are_avoided_then_seeds_then_oldest_failure() {
        let mut rng = Rng::new(9);
        let seeds = addrs(&["10.9.9.9:8000"]);
        let mut s = discovered(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let r1 = Round {
            number: 2,
            target: a("10.0.0.1:8000"),
        };
        s = apply_failure(&s, &r1).0;
        for _ in 0..20 {
            assert_eq!(
                choose_target(&s, &seeds, &mut rng),
                Some(a("10.0.0.2:8000"))
            );
        }
        s = apply_failure(
            &s,
            &Round {
                number: 3,
                target: a("10.0.0.2:8000"),
            },
        )
        .0;
        assert_eq!(
            choose_target(&s, &seeds, &mut rng),
            Some(a("10.9.9.9:8000"))
        );
        s = apply_failure(
            &s,
            &Round {
                number: 4,
                target: a("10.9.9.9:8000"),
            },
        )
        .0;
        // Everything failed: the oldest failure goes first, then the next.
        let t = choose_target(&s, &seeds, &mut rng).unwrap();
        assert_eq!(t, a("10.0.0.1:8000"));
        s = apply_failure(
            &s,
            &Round {
                number: 5,
                target: t,
            },
        )
        .0;
        assert_eq!(
            choose_target(&s, &seeds, &mut rng),
            Some(a("10.0.0.2:8000"))
        );
        // The list itself never changed.
        assert_eq!(s.nodes, addrs(&["10.0.0.1:8000", "10.0.0.2:8000"]));
        assert_eq!(s.consecutive_failures, 4);
    }

    #[test]
    fn down_nodes_are_asked_only_when_no_healthy_node_is_left() {
        let mut rng = Rng::new(5);
        let periods = health::ProbePeriods {
            down_ms: 1,
            quarantine_ms: 1,
        };
        let s = discovered(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let s = health::mark_down(&s, a("10.0.0.1:8000"), 0, periods).unwrap();
        for _ in 0..20 {
            assert_eq!(choose_target(&s, &[], &mut rng), Some(a("10.0.0.2:8000")));
        }
        let s = health::mark_down(&s, a("10.0.0.2:8000"), 0, periods).unwrap();
        assert!(
            choose_target(&s, &[], &mut rng).is_some(),
            "all down: still try someone"
        );
    }

    #[test]
    fn before_discovery_the_seeds_are_targets() {
        let mut rng = Rng::new(1);
        let seeds = addrs(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let t = choose_target(&SharedState::default(), &seeds, &mut rng).unwrap();
        assert!(seeds.contains(&t));
    }

    #[test]
    fn answer_replaces_list_and_reports_the_change() {
        let s = discovered(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let r = Round {
            number: 2,
            target: a("10.0.0.1:8000"),
        };
        let (next, ev) = apply_answer(&s, &r, addrs(&["10.0.0.2:8000", "10.0.0.3:8000"]), 0);
        assert_eq!(next.nodes, addrs(&["10.0.0.2:8000", "10.0.0.3:8000"]));
        assert_eq!(next.list_round, 2);
        assert_eq!(
            ev,
            Event::ListChanged {
                added: addrs(&["10.0.0.3:8000"]),
                removed: addrs(&["10.0.0.1:8000"]),
                total: 2,
                first: false,
                recovered_after: 0
            }
        );
    }

    #[test]
    fn first_answer_is_marked_first_and_clears_failures() {
        let seeds = addrs(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let s = apply_failure(
            &SharedState::default(),
            &Round {
                number: 1,
                target: seeds[0],
            },
        )
        .0;
        let (next, ev) = apply_answer(
            &s,
            &Round {
                number: 2,
                target: seeds[1],
            },
            seeds.clone(),
            0,
        );
        assert!(
            matches!(
                ev,
                Event::ListChanged {
                    first: true,
                    recovered_after: 1,
                    ..
                }
            ),
            "{ev:?}"
        );
        assert!(next.failed.is_empty());
        assert_eq!(next.consecutive_failures, 0);
    }

    #[test]
    fn same_answer_is_unchanged() {
        let s = discovered(&["10.0.0.1:8000"]);
        let (next, ev) = apply_answer(
            &s,
            &Round {
                number: 3,
                target: s.nodes[0],
            },
            s.nodes.clone(),
            0,
        );
        assert_eq!(ev, Event::ListUnchanged { recovered_after: 0 });
        assert_eq!(next.list_round, 3);
    }

    #[test]
    fn an_older_round_never_overwrites_a_newer_list() {
        let mut s = discovered(&["10.0.0.1:8000"]);
        s.list_round = 5;
        let (next, ev) = apply_answer(
            &s,
            &Round {
                number: 4,
                target: s.nodes[0],
            },
            addrs(&["10.0.0.7:8000"]),
            0,
        );
        assert_eq!(ev, Event::Stale);
        assert_eq!(next.nodes, s.nodes);
        assert_eq!(next.list_round, 5);
    }

    #[test]
    fn failures_are_logged_sparsely_and_bounded() {
        let mut s = SharedState::default();
        let mut logged = 0;
        for i in 0..200u32 {
            let target = NodeAddr::new(
                std::net::IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8 + 1]),
                8000,
            );
            let (next, ev) = apply_failure(
                &s,
                &Round {
                    number: u64::from(i) + 1,
                    target,
                },
            );
            if let Event::Failed { log: true, .. } = ev {
                logged += 1;
            }
            s = next;
        }
        assert_eq!(logged, 4);
        assert_eq!(s.failed.len(), MAX_FAILED);
        assert_eq!(s.consecutive_failures, 200);
    }

    #[test]
    fn routing_uses_seeds_until_discovery_then_the_list() {
        let seeds = addrs(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        assert_eq!(routing_nodes(None, &seeds), seeds);
        let s = apply_failure(
            &SharedState::default(),
            &Round {
                number: 1,
                target: seeds[0],
            },
        )
        .0;
        assert_eq!(routing_nodes(Some(&s), &seeds), addrs(&["10.0.0.2:8000"]));
        let s = apply_failure(
            &s,
            &Round {
                number: 2,
                target: seeds[1],
            },
        )
        .0;
        assert!(
            routing_nodes(Some(&s), &seeds).is_empty(),
            "all seeds failed: no node"
        );
        let (s, _) = apply_answer(
            &s,
            &Round {
                number: 3,
                target: seeds[1],
            },
            addrs(&["10.0.0.5:8000"]),
            0,
        );
        assert_eq!(routing_nodes(Some(&s), &seeds), addrs(&["10.0.0.5:8000"]));
        // Later failures never empty a discovered list.
        let s = apply_failure(
            &s,
            &Round {
                number: 4,
                target: a("10.0.0.5:8000"),
            },
        )
        .0;
        assert_eq!(routing_nodes(Some(&s), &seeds), addrs(&["10.0.0.5:8000"]));
    }

    #[test]
    fn idle_pace_after_a_minute_without_requests() {
        let active = SharedState {
            last_activity_ms: 100_000,
            ..SharedState::default()
        };
        assert_eq!(T.next_interval(&active, 159_999), 1000);
        assert_eq!(T.next_interval(&active, 160_000), 60_000);
    }

    #[test]
    fn failures_back_off_boundedly() {
        let mut s = SharedState {
            last_activity_ms: 0,
            ..SharedState::default()
        };
        let intervals: Vec<u64> = (0..7)
            .map(|k| {
                s.consecutive_failures = k;
                T.next_interval(&s, 1)
            })
            .collect();
        assert_eq!(intervals, [1000, 1000, 2000, 4000, 8000, 8000, 8000]);
        let short_idle = Timing {
            interval_ms: 1000,
            idle_interval_ms: 3000,
            idle_after_ms: 60_000,
        };
        s.consecutive_failures = 6;
        assert_eq!(
            short_idle.next_interval(&s, 1),
            3000,
            "never slower than idle"
        );
    }

    #[test]
    fn first_request_after_idle_makes_a_round_due() {
        let idle = SharedState {
            last_activity_ms: 1_000,
            next_due_ms: 120_000,
            ..SharedState::default()
        };
        let next = T.note_activity(&idle, 70_000).unwrap();
        assert_eq!(next.last_activity_ms, 70_000);
        assert_eq!(next.next_due_ms, 70_000);
        // While active, reports are rate-limited and leave the rhythm alone.
        assert!(T.note_activity(&next, 70_500).is_none());
        let later = T.note_activity(&next, 71_000).unwrap();
        assert_eq!(later.next_due_ms, 70_000);
        assert_eq!(initial_state(5).last_activity_ms, 5);
    }

    #[test]
    fn unhealthy_nodes_are_not_routed() {
        let s = discovered(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let periods = health::ProbePeriods {
            down_ms: 1,
            quarantine_ms: 1,
        };
        let s = health::mark_down(&s, a("10.0.0.1:8000"), 0, periods).unwrap();
        assert_eq!(routing_nodes(Some(&s), &[]), addrs(&["10.0.0.2:8000"]));
        let s = health::mark_down(&s, a("10.0.0.2:8000"), 0, periods).unwrap();
        assert!(routing_nodes(Some(&s), &[]).is_empty());
    }

    #[test]
    fn nodes_joining_later_are_quarantined() {
        let s = discovered(&["10.0.0.1:8000"]);
        let r = Round {
            number: 2,
            target: s.nodes[0],
        };
        let (next, _) = apply_answer(&s, &r, addrs(&["10.0.0.1:8000", "10.0.0.2:8000"]), 7);
        assert_eq!(routing_nodes(Some(&next), &[]), addrs(&["10.0.0.1:8000"]));
        assert_eq!(next.last_success_ms, 7);
    }
}
