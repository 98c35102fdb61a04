//! Node health: which listed nodes may take requests, shared by every worker.
//!
//! A node is Active unless the shared state says otherwise:
//! - **Down**: a connection to it could not be made (`down_after_failures`
//!   in a row, default 1), or connections to it were reset before any
//!   response `down_after_resets` times in a row (default 3), as seen by one
//!   worker; an answer in between starts both counts over. A single reset is
//!   no sign of a dead node: a node closing an idle keep-alive connection as a
//!   request goes out looks just like it. A Down node gets no requests until
//!   `/localnodes` still lists it *and* a direct probe succeeds. Probes back
//!   off: the first 1 s after the node went Down, then 2 s, 4 s, ... up to
//!   `down_probe_interval_ms`. A node that restarts is back a few seconds
//!   after it serves again; one that stays away costs a probe per period.
//! - **Quarantined**: it joined the known nodes after the first discovery
//!   (or came back into them after dropping out). Alternator lists a node
//!   some seconds before it serves, so it gets requests only once a probe
//!   (every `quarantine_probe_interval_ms`) succeeds.
//!
//! Health is kept for the known nodes: the union of every query's list (see
//! [`crate::topology`]). A node in several lists has one health; a node
//! dropped from every list is forgotten.
//!
//! HTTP errors answered by a node (500, 502, 503, 504) say nothing about
//! whether it is reachable, so they are health-neutral; see [`Outcome`].
//! Probes are leased like discovery rounds: at most one probe per node per
//! wait per Envoy process. The backoff lives in the shared record, since
//! any VM may lease the next probe.

use crate::model::health::{Health, HealthState, Outcome, ProbePeriods};
use crate::model::record::{effective_ms, SharedState};
use crate::model::NodeAddr;

/// Envoy `ResponseFlag` bits (`StreamInfo::CoreResponseFlag`) that mean the
/// node did not answer at all: UR, UF and UC.
pub const FLAG_UPSTREAM_REMOTE_RESET: u64 = 0x10;
pub const FLAG_UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
pub const FLAG_UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;

/// The wait before the first probe of a node that just went Down. Short, so
/// that a restart (seconds) costs seconds; the waits after it double.
pub const FIRST_DOWN_WAIT_MS: u64 = 1_000;

/// Envoy's `response.flags` property, a little-endian 64-bit integer; 0
/// (nothing went wrong) when the host cannot tell.
pub fn flags_from_property(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Classifies a response from Envoy's `response.flags`. A failed connect
/// wins over a reset when both are set: the node refused a connection at
/// least once, which a healthy node does not.
pub fn outcome_from_flags(flags: u64) -> Outcome {
    if flags & FLAG_UPSTREAM_CONNECTION_FAILURE != 0 {
        Outcome::ConnectFailed
    } else if flags & (FLAG_UPSTREAM_REMOTE_RESET | FLAG_UPSTREAM_CONNECTION_TERMINATION) != 0 {
        Outcome::Reset
    } else {
        Outcome::Answered
    }
}

/// The wait between a node going Down and its first probe: 1 s, or the
/// configured period if that is shorter.
fn first_down_wait(periods: ProbePeriods) -> u64 {
    FIRST_DOWN_WAIT_MS.min(periods.down_ms)
}

/// The wait after the probe being leased now, given the record of the node.
/// Down: twice the last wait, from [`FIRST_DOWN_WAIT_MS`] up to the Down
/// period (a record with a nonsense wait, say 0, starts the backoff over
/// rather than probing on every tick). Quarantined: the fixed period.
fn next_wait(health: &Health, periods: ProbePeriods) -> u64 {
    match health.state {
        HealthState::Down => health
            .wait_ms
            .saturating_mul(2)
            .max(first_down_wait(periods))
            .min(periods.down_ms),
        HealthState::Quarantined => periods.quarantine_ms,
    }
}

/// Marks `node` Down. Returns the new state, or `None` if there is nothing
/// to change (already Down, or a node the state does not route to), so that
/// only the VM that made the transition logs and counts it.
pub fn mark_down(
    state: &SharedState,
    node: NodeAddr,
    now_ms: u64,
    periods: ProbePeriods,
) -> Option<SharedState> {
    if state.discovered() && !state.nodes.contains(&node) {
        return None;
    }
    if state.health.get(&node).map(|h| h.state) == Some(HealthState::Down) {
        return None;
    }
    let wait = first_down_wait(periods);
    let mut next = state.clone();
    next.health.insert(
        node,
        Health {
            state: HealthState::Down,
            next_probe_ms: now_ms.saturating_add(wait),
            wait_ms: wait,
        },
    );
    Some(next)
}

/// Brings health in line with a new union of the lists (`state.nodes`;
/// `old_nodes` is the union before, sorted like it): nodes no list has any more are
/// forgotten, and nodes that joined are Quarantined, except during the first
/// discovery, whose nodes are the serving cluster. Returns the nodes it
/// quarantined.
///
/// "First discovery" is decided by the caller
/// ([`crate::discovery::apply_answer`]): answers of the round that first
/// made the union non-empty. A node is thus quarantined when it enters the
/// union after the union was first non-empty, with one refinement: the other
/// queries of that same first round also count as first, so at start-up a
/// datacenter whose answer merely arrives second is not quarantined (its
/// nodes would otherwise be unroutable, and requests would go to a remote
/// scope, until probes pass). A query first answered in a later round (say,
/// its seeds were unreachable at start-up) has its nodes quarantined: the
/// filter cannot tell a datacenter it never saw from nodes that just joined.
pub fn on_new_list(
    state: &mut SharedState,
    old_nodes: &[NodeAddr],
    first: bool,
    now_ms: u64,
) -> Vec<NodeAddr> {
    // Both node lists are sorted (unions of sorted lists): searched, not
    // scanned, so a list of a thousand nodes costs no million comparisons.
    let nodes = &state.nodes;
    state.health.retain(|n, _| nodes.binary_search(n).is_ok());
    if first {
        return Vec::new();
    }
    let mut quarantined = Vec::new();
    for n in state
        .nodes
        .iter()
        .filter(|n| old_nodes.binary_search(n).is_err())
    {
        if !state.health.contains_key(n) {
            state.health.insert(
                *n,
                Health {
                    state: HealthState::Quarantined,
                    next_probe_ms: now_ms,
                    wait_ms: 0,
                },
            );
            quarantined.push(*n);
        }
    }
    quarantined
}

/// A probe this VM has leased: `GET /` to `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub node: NodeAddr,
    pub state: HealthState,
}

/// Leases the probe of the first node that is due. The returned state moves
/// that node's next probe one wait ahead (the Down backoff's next step, or
/// the quarantine period); writing it by compare-and-swap makes this VM the
/// only prober of that node until then.
pub fn try_start_probe(
    state: &SharedState,
    now_ms: u64,
    periods: ProbePeriods,
) -> Option<(SharedState, Probe)> {
    // A probe time further ahead than the longest wait was written by a
    // clock ahead of this one: due now (see `effective_ms`).
    let horizon = periods.down_ms.max(periods.quarantine_ms);
    let (node, health) = state
        .health
        .iter()
        .find(|(_, h)| effective_ms(h.next_probe_ms, now_ms, horizon) <= now_ms)?;
    let probe = Probe {
        node: *node,
        state: health.state,
    };
    let wait = next_wait(health, periods);
    let mut next = state.clone();
    next.health.insert(
        *node,
        Health {
            state: health.state,
            next_probe_ms: now_ms.saturating_add(wait),
            wait_ms: wait,
        },
    );
    Some((next, probe))
}

/// Folds a probe result in. Returns the new state and whether the node came
/// back (became Active). A node no longer listed is left alone: it is gone.
pub fn apply_probe(state: &SharedState, probe: &Probe, ok: bool) -> (SharedState, bool) {
    let mut next = state.clone();
    if ok && next.health.remove(&probe.node).is_some() {
        return (next, true);
    }
    (next, false)
}

/// Counts of nodes per state among the listed ones: (down, quarantined).
pub fn counts(state: &SharedState) -> (usize, usize) {
    let down = state
        .health
        .values()
        .filter(|h| h.state == HealthState::Down)
        .count();
    (down, state.health.len() - down)
}

/// Whether `node` may take requests.
pub fn is_routable(state: &SharedState, node: &NodeAddr) -> bool {
    !state.health.contains_key(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::QueryList;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const P: ProbePeriods = ProbePeriods {
        down_ms: 30_000,
        quarantine_ms: 1_000,
    };

    fn a(s: &str) -> NodeAddr {
        s.parse().unwrap()
    }

    fn listed(nodes: &[&str]) -> SharedState {
        let mut s = SharedState {
            lists: vec![QueryList {
                round: 1,
                nodes: nodes.iter().map(|n| a(n)).collect(),
                ..QueryList::default()
            }],
            ..SharedState::default()
        };
        s.refresh_nodes();
        s
    }

    fn with(mut s: SharedState, node: &str, state: HealthState, next_probe_ms: u64) -> SharedState {
        s.health.insert(
            a(node),
            Health {
                state,
                next_probe_ms,
                wait_ms: 0,
            },
        );
        s
    }

    /// Leases every probe of the state's only tracked node that falls due
    /// up to `until`, each exactly when due, and returns their times.
    fn probe_times(mut s: SharedState, periods: ProbePeriods, until: u64) -> Vec<u64> {
        let mut times = Vec::new();
        while let Some(due) = s.health.values().next().map(|h| h.next_probe_ms) {
            if due > until {
                break;
            }
            assert!(
                try_start_probe(&s, due - 1, periods).is_none(),
                "early at {due}"
            );
            let (next, _) = try_start_probe(&s, due, periods).unwrap();
            times.push(due);
            s = next;
        }
        times
    }

    #[test]
    fn flags_tell_connect_failures_from_resets_from_answers() {
        assert_eq!(outcome_from_flags(0), Outcome::Answered);
        assert_eq!(
            outcome_from_flags(FLAG_UPSTREAM_CONNECTION_FAILURE),
            Outcome::ConnectFailed
        );
        assert_eq!(
            outcome_from_flags(FLAG_UPSTREAM_REMOTE_RESET),
            Outcome::Reset
        );
        assert_eq!(
            outcome_from_flags(FLAG_UPSTREAM_CONNECTION_TERMINATION),
            Outcome::Reset
        );
        // A failed connect is the stronger sign, whatever else is set.
        assert_eq!(
            outcome_from_flags(
                FLAG_UPSTREAM_CONNECTION_FAILURE | FLAG_UPSTREAM_CONNECTION_TERMINATION
            ),
            Outcome::ConnectFailed
        );
        // Upstream request timeout (0x4) and overflow (0x80) are not the node's absence.
        assert_eq!(flags_from_property(Some(&0x20u64.to_le_bytes())), 0x20);
        assert_eq!(
            flags_from_property(Some(&[0x20, 0, 0, 0])),
            0,
            "not 8 bytes"
        );
        assert_eq!(flags_from_property(None), 0);
        assert_eq!(outcome_from_flags(0x4 | 0x80), Outcome::Answered);
    }

    #[test]
    fn mark_down_once_then_no_change() {
        let s = listed(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let down = mark_down(&s, a("10.0.0.1:8000"), 100, P).unwrap();
        assert_eq!(
            down.health[&a("10.0.0.1:8000")],
            Health {
                state: HealthState::Down,
                next_probe_ms: 1_100,
                wait_ms: 1_000,
            },
            "first probed 1 s after it went Down"
        );
        assert!(!is_routable(&down, &a("10.0.0.1:8000")));
        assert!(is_routable(&down, &a("10.0.0.2:8000")));
        assert!(
            mark_down(&down, a("10.0.0.1:8000"), 200, P).is_none(),
            "already down"
        );
        assert!(
            mark_down(&s, a("10.9.9.9:8000"), 100, P).is_none(),
            "not listed"
        );
        assert_eq!(counts(&down), (1, 0));
    }

    #[test]
    fn a_quarantined_node_that_fails_goes_down() {
        let s = with(
            listed(&["10.0.0.1:8000"]),
            "10.0.0.1:8000",
            HealthState::Quarantined,
            0,
        );
        let down = mark_down(&s, a("10.0.0.1:8000"), 5, P).unwrap();
        assert_eq!(down.health[&a("10.0.0.1:8000")].state, HealthState::Down);
        assert_eq!(down.health[&a("10.0.0.1:8000")].next_probe_ms, 1_005);
    }

    #[test]
    fn new_nodes_are_quarantined_except_in_the_first_list() {
        let mut first = listed(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        assert!(on_new_list(&mut first, &[], true, 10).is_empty());
        assert!(first.health.is_empty());

        let old = first.nodes.clone();
        let mut s = with(
            listed(&["10.0.0.2:8000", "10.0.0.3:8000"]),
            "10.0.0.1:8000",
            HealthState::Down,
            0,
        );
        assert_eq!(on_new_list(&mut s, &old, false, 10), [a("10.0.0.3:8000")]);
        assert_eq!(
            s.health.len(),
            1,
            "the removed node is forgotten: {:?}",
            s.health
        );
        assert_eq!(
            s.health[&a("10.0.0.3:8000")],
            Health {
                state: HealthState::Quarantined,
                next_probe_ms: 10,
                wait_ms: 0,
            }
        );
    }

    /// A Down node that `/localnodes` drops is forgotten, backoff and all;
    /// listed again, it is a newcomer: Quarantined, probed at once and then
    /// every quarantine period, not on the Down node's 30 s.
    #[test]
    fn a_node_listed_again_after_dropping_out_is_probed_as_quarantined() {
        let full = listed(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let mut s = mark_down(&full, a("10.0.0.2:8000"), 0, P).unwrap();
        for due in [1_000, 3_000, 7_000, 15_000, 31_000, 61_000] {
            s = try_start_probe(&s, due, P).unwrap().0;
        }
        assert_eq!(
            s.health[&a("10.0.0.2:8000")].wait_ms,
            30_000,
            "backed off to the period"
        );

        let mut dropped = listed(&["10.0.0.1:8000"]);
        dropped.health = s.health.clone();
        assert!(on_new_list(&mut dropped, &full.nodes, false, 300_000).is_empty());
        assert!(dropped.health.is_empty(), "forgotten");

        let mut back = full.clone();
        back.health = dropped.health.clone();
        assert_eq!(
            on_new_list(&mut back, &dropped.nodes, false, 310_000),
            [a("10.0.0.2:8000")]
        );
        assert_eq!(
            back.health[&a("10.0.0.2:8000")].state,
            HealthState::Quarantined
        );
        assert!(!is_routable(&back, &a("10.0.0.2:8000")));
        assert_eq!(
            probe_times(back, P, 315_000),
            [310_000, 311_000, 312_000, 313_000, 314_000, 315_000]
        );
    }

    #[test]
    fn down_probes_back_off_from_one_second_to_the_period() {
        let s = mark_down(&listed(&["10.0.0.1:8000"]), a("10.0.0.1:8000"), 0, P).unwrap();
        assert_eq!(
            probe_times(s, P, 200_000),
            [
                1_000, 3_000, 7_000, 15_000, 31_000, // waits of 1, 2, 4, 8, 16 s
                61_000, 91_000, 121_000, 151_000, 181_000 // then the 30 s period
            ]
        );
    }

    #[test]
    fn a_period_under_one_second_is_the_only_wait() {
        let short = ProbePeriods {
            down_ms: 300,
            quarantine_ms: 200,
        };
        let s = mark_down(&listed(&["10.0.0.1:8000"]), a("10.0.0.1:8000"), 0, short).unwrap();
        assert_eq!(probe_times(s, short, 1_500), [300, 600, 900, 1_200, 1_500]);
        // A period between the first wait and its double caps the second.
        let odd = ProbePeriods {
            down_ms: 1_500,
            quarantine_ms: 200,
        };
        let s = mark_down(&listed(&["10.0.0.1:8000"]), a("10.0.0.1:8000"), 0, odd).unwrap();
        assert_eq!(probe_times(s, odd, 6_000), [1_000, 2_500, 4_000, 5_500]);
    }

    /// The record is writable by anything in the proxy: a wait of 0 must
    /// not make a node probed on every tick, nor a huge one overflow.
    #[test]
    fn a_nonsense_wait_in_the_record_stays_within_bounds() {
        for (wait, expected) in [(0, 1_000), (1, 1_000), (u64::MAX, 30_000)] {
            let mut s = listed(&["10.0.0.1:8000"]);
            s.health.insert(
                a("10.0.0.1:8000"),
                Health {
                    state: HealthState::Down,
                    next_probe_ms: 0,
                    wait_ms: wait,
                },
            );
            let (next, _) = try_start_probe(&s, 10, P).unwrap();
            assert_eq!(next.health[&a("10.0.0.1:8000")].wait_ms, expected, "{wait}");
            assert_eq!(
                next.health[&a("10.0.0.1:8000")].next_probe_ms,
                10 + expected
            );
        }
    }

    #[test]
    fn probes_are_leased_one_per_node_per_wait() {
        let s = listed(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let s = mark_down(&s, a("10.0.0.1:8000"), 0, P).unwrap();
        let s = with(s, "10.0.0.2:8000", HealthState::Quarantined, 5_000);
        assert!(try_start_probe(&s, 999, P).is_none());
        let (s, probe) = try_start_probe(&s, 1_000, P).unwrap();
        assert_eq!(
            probe,
            Probe {
                node: a("10.0.0.1:8000"),
                state: HealthState::Down
            }
        );
        assert_eq!(s.health[&probe.node].next_probe_ms, 3_000);
        assert!(
            try_start_probe(&s, 2_999, P).is_none(),
            "the Down node is leased for 2 s"
        );
        let (s, probe) = try_start_probe(&s, 3_000, P).unwrap();
        assert_eq!(probe.node, a("10.0.0.1:8000"));
        assert_eq!(s.health[&probe.node].next_probe_ms, 7_000);
        let (s, probe) = try_start_probe(&s, 5_000, P).unwrap();
        assert_eq!(probe.state, HealthState::Quarantined);
        assert_eq!(s.health[&probe.node].next_probe_ms, 6_000);
        assert!(try_start_probe(&s, 5_999, P).is_none());
    }

    #[test]
    fn a_successful_probe_restores_the_node_and_the_next_outage_starts_over() {
        let s = mark_down(&listed(&["10.0.0.1:8000"]), a("10.0.0.1:8000"), 0, P).unwrap();
        let (s, probe) = try_start_probe(&s, 1_000, P).unwrap();
        let (s, _) = try_start_probe(&s, 3_000, P).unwrap();
        let (same, back) = apply_probe(&s, &probe, false);
        assert!(!back);
        assert_eq!(same.health.len(), 1);
        let (up, back) = apply_probe(&s, &probe, true);
        assert!(back);
        assert!(is_routable(&up, &probe.node));
        // A probe answer for a node that is no longer tracked changes nothing.
        let (_, back) = apply_probe(&up, &probe, true);
        assert!(!back);
        // Down again later: 1 s to the first probe, not where the last
        // outage's backoff had got to.
        let again = mark_down(&up, probe.node, 50_000, P).unwrap();
        assert_eq!(again.health[&probe.node].next_probe_ms, 51_000);
    }
}
