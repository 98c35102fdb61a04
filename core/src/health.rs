//! Node health: which listed nodes may take requests, shared by every worker.
//!
//! A node is Active unless the shared state says otherwise:
//! - **Down**: a connection to it failed, or was reset before any response.
//!   It gets no requests until `/localnodes` still lists it *and* a direct
//!   probe succeeds; probes come every `down_probe_interval_ms`.
//! - **Quarantined**: it joined the known nodes after the first discovery.
//!   Alternator lists a node some seconds before it serves, so it gets
//!   requests only once a probe (every `quarantine_probe_interval_ms`)
//!   succeeds.
//!
//! Health is kept for the known nodes: the union of every query's list (see
//! [`crate::topology`]). A node in several lists has one health; a node
//! dropped from every list is forgotten.
//!
//! HTTP errors answered by a node (500, 502, 503, 504) say nothing about
//! whether it is reachable, so they are health-neutral; see [`Outcome`].
//! Probes are leased like discovery rounds: at most one probe per node per
//! period per Envoy process.

use crate::model::health::{Health, HealthState, Outcome, ProbePeriods};
use crate::model::record::SharedState;
use crate::model::NodeAddr;

/// Envoy `ResponseFlag` bits (`StreamInfo::CoreResponseFlag`) that mean the
/// node did not answer at all.
pub const FLAG_UPSTREAM_REMOTE_RESET: u64 = 0x10;
pub const FLAG_UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
pub const FLAG_UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;

/// Envoy's `response.flags` property, a little-endian 64-bit integer; 0
/// (nothing went wrong) when the host cannot tell.
pub fn flags_from_property(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Classifies a response from Envoy's `response.flags`.
pub fn outcome_from_flags(flags: u64) -> Outcome {
    let unreachable = FLAG_UPSTREAM_REMOTE_RESET
        | FLAG_UPSTREAM_CONNECTION_FAILURE
        | FLAG_UPSTREAM_CONNECTION_TERMINATION;
    if flags & unreachable != 0 {
        Outcome::Unreachable
    } else {
        Outcome::Answered
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
    let mut next = state.clone();
    next.health.insert(
        node,
        Health {
            state: HealthState::Down,
            next_probe_ms: now_ms.saturating_add(periods.down_ms),
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
/// that node's next probe one period ahead; writing it by compare-and-swap
/// makes this VM the only prober of that node for the period.
pub fn try_start_probe(
    state: &SharedState,
    now_ms: u64,
    periods: ProbePeriods,
) -> Option<(SharedState, Probe)> {
    let (node, health) = state
        .health
        .iter()
        .find(|(_, h)| h.next_probe_ms <= now_ms)?;
    let probe = Probe {
        node: *node,
        state: health.state,
    };
    let mut next = state.clone();
    next.health.insert(
        *node,
        Health {
            state: health.state,
            next_probe_ms: now_ms.saturating_add(periods.of(health.state)),
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

    #[test]
    fn flags_tell_unreachable_from_answered() {
        assert_eq!(outcome_from_flags(0), Outcome::Answered);
        assert_eq!(
            outcome_from_flags(FLAG_UPSTREAM_CONNECTION_FAILURE),
            Outcome::Unreachable
        );
        assert_eq!(
            outcome_from_flags(FLAG_UPSTREAM_REMOTE_RESET),
            Outcome::Unreachable
        );
        assert_eq!(
            outcome_from_flags(FLAG_UPSTREAM_CONNECTION_TERMINATION),
            Outcome::Unreachable
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
                next_probe_ms: 30_100
            }
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
        let mut s = listed(&["10.0.0.1:8000"]);
        s.health.insert(
            a("10.0.0.1:8000"),
            Health {
                state: HealthState::Quarantined,
                next_probe_ms: 0,
            },
        );
        let down = mark_down(&s, a("10.0.0.1:8000"), 5, P).unwrap();
        assert_eq!(down.health[&a("10.0.0.1:8000")].state, HealthState::Down);
    }

    #[test]
    fn new_nodes_are_quarantined_except_in_the_first_list() {
        let mut first = listed(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        assert!(on_new_list(&mut first, &[], true, 10).is_empty());
        assert!(first.health.is_empty());

        let old = first.nodes.clone();
        let mut s = listed(&["10.0.0.2:8000", "10.0.0.3:8000"]);
        s.health.insert(
            a("10.0.0.1:8000"),
            Health {
                state: HealthState::Down,
                next_probe_ms: 0,
            },
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
                next_probe_ms: 10
            }
        );
    }

    #[test]
    fn probes_are_leased_one_per_node_per_period() {
        let mut s = listed(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        s.health.insert(
            a("10.0.0.1:8000"),
            Health {
                state: HealthState::Down,
                next_probe_ms: 1_000,
            },
        );
        s.health.insert(
            a("10.0.0.2:8000"),
            Health {
                state: HealthState::Quarantined,
                next_probe_ms: 5_000,
            },
        );
        assert!(try_start_probe(&s, 999, P).is_none());
        let (s, probe) = try_start_probe(&s, 1_000, P).unwrap();
        assert_eq!(
            probe,
            Probe {
                node: a("10.0.0.1:8000"),
                state: HealthState::Down
            }
        );
        assert_eq!(s.health[&probe.node].next_probe_ms, 31_000);
        assert!(
            try_start_probe(&s, 4_999, P).is_none(),
            "the Down node is leased for 30 s"
        );
        let (s, probe) = try_start_probe(&s, 5_000, P).unwrap();
        assert_eq!(probe.state, HealthState::Quarantined);
        assert_eq!(s.health[&probe.node].next_probe_ms, 6_000);
    }

    #[test]
    fn a_successful_probe_restores_the_node() {
        let mut s = listed(&["10.0.0.1:8000"]);
        s.health.insert(
            a("10.0.0.1:8000"),
            Health {
                state: HealthState::Down,
                next_probe_ms: 0,
            },
        );
        let probe = Probe {
            node: a("10.0.0.1:8000"),
            state: HealthState::Down,
        };
        let (same, back) = apply_probe(&s, &probe, false);
        assert!(!back);
        assert_eq!(same.health.len(), 1);
        let (up, back) = apply_probe(&s, &probe, true);
        assert!(back);
        assert!(is_routable(&up, &probe.node));
        // A probe answer for a node that is no longer tracked changes nothing.
        let (_, back) = apply_probe(&up, &probe, true);
        assert!(!back);
    }
}
