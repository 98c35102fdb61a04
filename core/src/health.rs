//! Node health: which known nodes may take requests, shared by every worker.
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
//! - **Quarantined**: an answer added it to the known nodes (the first
//!   answer too, except the seeds it lists, which were serving), or listed
//!   it again after it dropped out. Alternator lists a node some seconds
//!   before it serves, and an answer may list addresses where nothing
//!   answers at all, so it gets requests only once a probe (at once, then
//!   every `quarantine_probe_interval_ms`) succeeds. Make before break:
//!   meanwhile the nodes its list dropped keep serving ([`settle`]).
//!
//! Down and Quarantined nodes get requests only when no node of any scope
//! can take them: then every known node does, least recently failed first
//! ([`crate::discovery::panic_order`]).
//!
//! Health is damped: a node that goes Down again soon after it came back
//! resumes its backoff where the last spell left it (doubled, up to
//! `down_probe_interval_ms`) instead of at 1 s, so a node whose probe passes
//! but whose requests fail is tried less and less often, not every second.
//! That memory halves for every [`FADE_MS`] the node stays up, and is
//! forgotten once it is below the first wait. Each entry into Down also
//! takes a new generation from the record's count; a request carries the
//! generation of its node when it was sent, and the outcome of one sent in
//! an older generation is ignored: it says nothing about the node since.
//!
//! Health is kept for the known nodes: the union of every query's list (see
//! [`crate::topology`]); a node in several lists has one health. A node the
//! lists drop keeps its history (its Down state and backoff, or the memory
//! of it) for when it is listed again, for at most [`MAX_UNLISTED`] such
//! nodes; one without history is forgotten.
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

/// How long a node must stay up for its memory of the last backoff to
/// halve. A node that fails again within it resumes where it left off; one
/// that stays up a minute after a 30 s backoff starts at 1 s again.
pub const FADE_MS: u64 = 10_000;

/// How many nodes the lists no longer name keep their history; the ones
/// that left longest ago are forgotten first.
pub const MAX_UNLISTED: usize = 64;

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

/// What is left, at `now_ms`, of the backoff a node remembers: a Down
/// node's current wait; otherwise the wait its last spell would have taken
/// next (the one its last, successful, probe was leased with), halved for
/// every [`FADE_MS`] since it came back.
fn remembered_wait(health: &Health, now_ms: u64) -> u64 {
    if health.state == HealthState::Down {
        return health.wait_ms;
    }
    let halvings = now_ms.saturating_sub(health.since_ms) / FADE_MS;
    u32::try_from(halvings)
        .ok()
        .and_then(|h| health.wait_ms.checked_shr(h))
        .unwrap_or(0)
}

/// The first wait of a Down spell starting at `now_ms`: 1 s, or, for a node
/// that still remembers a backoff of at least that, what it remembers (the
/// step its last spell would have taken next), up to the Down period.
fn resumed_wait(health: Option<&Health>, now_ms: u64, periods: ProbePeriods) -> u64 {
    let first = first_down_wait(periods);
    match health.map(|h| remembered_wait(h, now_ms)) {
        Some(w) if w >= first => w.min(periods.down_ms),
        _ => first,
    }
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
        HealthState::Quarantined | HealthState::Active => periods.quarantine_ms,
    }
}

/// Whether `node` is one the state routes or probes: listed, or, before
/// anything is discovered, any node (the seeds).
pub fn is_known(state: &SharedState, node: &NodeAddr) -> bool {
    !state.discovered() || state.nodes.binary_search(node).is_ok()
}

/// The generation requests to `node` are sent in now.
pub fn generation(state: &SharedState, node: &NodeAddr) -> u32 {
    state.health.get(node).map_or(0, |h| h.generation)
}

/// Marks `node` Down on the evidence of requests sent to it in
/// `generation`. Returns the new state, or `None` if there is nothing to
/// change (already Down, a node the state does not route to, or evidence
/// from before the node last went Down), so that only the VM that made the
/// transition logs and counts it.
pub fn mark_down(
    state: &SharedState,
    node: NodeAddr,
    generation: u32,
    now_ms: u64,
    periods: ProbePeriods,
) -> Option<SharedState> {
    if !is_known(state, &node) {
        return None;
    }
    let health = state.health.get(&node);
    if health.map(|h| h.state) == Some(HealthState::Down)
        || health.map_or(0, |h| h.generation) != generation
    {
        return None;
    }
    let wait = resumed_wait(health, now_ms, periods);
    let mut next = state.clone();
    // Never 0: that is the generation of a node that never went Down.
    next.downs = state.downs.wrapping_add(1).max(1);
    next.health.insert(
        node,
        Health {
            state: HealthState::Down,
            next_probe_ms: now_ms.saturating_add(wait),
            wait_ms: wait,
            since_ms: now_ms,
            generation: next.downs,
        },
    );
    Some(next)
}

/// Brings health in line with a new union of the lists (`state.nodes`;
/// `known_before` is what was known before the answer: the union before,
/// and for a query's first answer its seeds, which were serving; sorted):
/// make before break, every node that joined is Quarantined, probed at
/// once, and takes requests only once a probe passes. A node listed again
/// keeps its history: a Down node stays Down, on its backoff; one that
/// remembers a backoff is Quarantined with that memory. Nodes no list has
/// any more keep their history as [`tidy`] allows. Returns the nodes it
/// quarantined and how many dropped nodes' histories the cap forgot.
pub fn on_new_list(
    state: &mut SharedState,
    known_before: &[NodeAddr],
    now_ms: u64,
) -> (Vec<NodeAddr>, usize) {
    let mut quarantined = Vec::new();
    // Both node lists are sorted (unions of sorted lists): searched, not
    // scanned, so a list of a thousand nodes costs no million comparisons.
    let joined: Vec<NodeAddr> = state
        .nodes
        .iter()
        .filter(|n| known_before.binary_search(n).is_err())
        .copied()
        .collect();
    for n in joined {
        match state.health.get_mut(&n) {
            Some(h) if h.state == HealthState::Down => {}
            Some(h) => {
                h.state = HealthState::Quarantined;
                h.next_probe_ms = now_ms;
                quarantined.push(n);
            }
            None => {
                state.health.insert(n, Health::newcomer(now_ms));
                quarantined.push(n);
            }
        }
    }
    let forgotten = tidy(state, now_ms);
    (quarantined, forgotten)
}

/// Whether any node of `nodes` may take requests.
pub fn any_routable(state: &SharedState, nodes: &[NodeAddr]) -> bool {
    nodes.iter().any(|n| is_routable(state, n))
}

/// Make before break, the break: a list whose own nodes have a routable one
/// no longer keeps the nodes it dropped. Returns how many dropped nodes'
/// histories the cap then forgot.
pub fn settle(state: &mut SharedState, now_ms: u64) -> usize {
    let verified: Vec<bool> = state
        .lists
        .iter()
        .map(|l| !l.retiring.is_empty() && any_routable(state, &l.nodes))
        .collect();
    if !verified.contains(&true) {
        return 0;
    }
    for (list, verified) in state.lists.iter_mut().zip(verified) {
        if verified {
            list.retiring.clear();
        }
    }
    state.refresh_nodes();
    tidy(state, now_ms)
}

/// Forgets what is no longer worth remembering: an Active node's faded
/// memory, a node the lists dropped that has no history (or whose memory
/// faded), and beyond [`MAX_UNLISTED`] dropped nodes, those that changed
/// state longest ago. A time ahead of `now_ms` (a clock that stepped back)
/// is taken as now, so that memory fades from here. Returns how many
/// dropped nodes' histories the cap forgot.
pub fn tidy(state: &mut SharedState, now_ms: u64) -> usize {
    let discovered = state.discovered();
    let nodes = &state.nodes;
    let first = FIRST_DOWN_WAIT_MS;
    state.health.retain(|n, h| {
        h.since_ms = h.since_ms.min(now_ms);
        let listed = !discovered || nodes.binary_search(n).is_ok();
        let faded = h.state != HealthState::Down && remembered_wait(h, now_ms) < first;
        match h.state {
            HealthState::Active => !faded,
            HealthState::Quarantined => listed || !faded,
            HealthState::Down => true,
        }
    });
    let mut unlisted: Vec<(u64, NodeAddr)> = state
        .health
        .iter()
        .filter(|(n, _)| discovered && state.nodes.binary_search(n).is_err())
        .map(|(n, h)| (h.since_ms, *n))
        .collect();
    let excess = unlisted.len().saturating_sub(MAX_UNLISTED);
    if excess > 0 {
        unlisted.sort_unstable();
        for (_, n) in unlisted.iter().take(excess) {
            state.health.remove(n);
        }
    }
    excess
}

/// A probe this VM has leased: `GET /` to `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub node: NodeAddr,
    pub state: HealthState,
}

/// Leases the probes of up to `max` nodes that are due, Down nodes first
/// (recovery before admission, as in the client libraries' node-health
/// spec), the longest overdue first. The returned state moves each one's
/// next probe one wait ahead (the Down backoff's next step, or the
/// quarantine period); writing it by compare-and-swap makes this VM the
/// only prober of those nodes until then. Only known nodes are probed: a
/// dropped node's history waits for it to be listed again.
pub fn try_start_probes(
    state: &SharedState,
    now_ms: u64,
    periods: ProbePeriods,
    max: usize,
) -> Option<(SharedState, Vec<Probe>)> {
    // A probe time further ahead than the longest wait was written by a
    // clock ahead of this one: due now (see `effective_ms`).
    let horizon = periods.down_ms.max(periods.quarantine_ms);
    let mut due: Vec<(bool, u64, NodeAddr)> = state
        .health
        .iter()
        .filter(|(n, h)| {
            h.state != HealthState::Active
                && effective_ms(h.next_probe_ms, now_ms, horizon) <= now_ms
                && is_known(state, n)
        })
        .map(|(n, h)| (h.state != HealthState::Down, h.next_probe_ms, *n))
        .collect();
    if due.is_empty() || max == 0 {
        return None;
    }
    due.sort_unstable();
    due.truncate(max);
    let mut next = state.clone();
    let mut probes = Vec::with_capacity(due.len());
    for (_, _, node) in due {
        let Some(health) = next.health.get_mut(&node) else {
            continue;
        };
        let wait = next_wait(health, periods);
        health.next_probe_ms = now_ms.saturating_add(wait);
        // A Quarantined node's wait is its memory of a backoff.
        if health.state == HealthState::Down {
            health.wait_ms = wait;
        }
        probes.push(Probe {
            node,
            state: health.state,
        });
    }
    Some((next, probes))
}

/// [`try_start_probes`] for one probe.
pub fn try_start_probe(
    state: &SharedState,
    now_ms: u64,
    periods: ProbePeriods,
) -> Option<(SharedState, Probe)> {
    let (next, probes) = try_start_probes(state, now_ms, periods, 1)?;
    Some((next, *probes.first()?))
}

/// Folds a probe result in. Returns the new state and whether the node came
/// back (became Active). A node no longer listed, or no longer in the state
/// the probe was leased for, is left alone. A node back from Down keeps the
/// memory of its backoff, fading from now.
pub fn apply_probe(
    state: &SharedState,
    probe: &Probe,
    ok: bool,
    now_ms: u64,
) -> (SharedState, bool) {
    let mut next = state.clone();
    let Some(health) = state.health.get(&probe.node) else {
        return (next, false);
    };
    if !ok || health.state != probe.state || !is_known(state, &probe.node) {
        return (next, false);
    }
    let back = Health {
        state: HealthState::Active,
        next_probe_ms: 0,
        since_ms: if health.state == HealthState::Down {
            now_ms
        } else {
            health.since_ms
        },
        ..*health
    };
    if back.has_history() {
        next.health.insert(probe.node, back);
    } else {
        next.health.remove(&probe.node);
    }
    settle(&mut next, now_ms);
    (next, true)
}

/// Counts of listed nodes per state: (down, quarantined).
pub fn counts(state: &SharedState) -> (usize, usize) {
    let mut down = 0;
    let mut quarantined = 0;
    for (n, h) in &state.health {
        if !is_known(state, n) {
            continue;
        }
        match h.state {
            HealthState::Down => down += 1,
            HealthState::Quarantined => quarantined += 1,
            HealthState::Active => {}
        }
    }
    (down, quarantined)
}

/// Whether `node` may take requests.
pub fn is_routable(state: &SharedState, node: &NodeAddr) -> bool {
    state
        .health
        .get(node)
        .map_or(true, |h| h.state == HealthState::Active)
}

/// [`mark_down`] on evidence of the node's current generation, for tests.
#[cfg(test)]
pub fn mark_down_now(
    state: &SharedState,
    node: NodeAddr,
    now_ms: u64,
    periods: ProbePeriods,
) -> Option<SharedState> {
    mark_down(state, node, generation(state, &node), now_ms, periods)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::QueryList;
    use crate::testing::addr;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const P: ProbePeriods = ProbePeriods {
        down_ms: 30_000,
        quarantine_ms: 1_000,
    };

    fn listed(nodes: &[&str]) -> SharedState {
        let mut s = SharedState {
            lists: vec![QueryList {
                round: 1,
                nodes: nodes.iter().map(|n| addr(n)).collect(),
                ..QueryList::default()
            }],
            ..SharedState::default()
        };
        s.refresh_nodes();
        s
    }

    fn with(mut s: SharedState, node: &str, state: HealthState, next_probe_ms: u64) -> SharedState {
        s.health.insert(
            addr(node),
            Health {
                state,
                next_probe_ms,
                wait_ms: 0,
                since_ms: 0,
                generation: 0,
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
        let down = mark_down_now(&s, addr("10.0.0.1:8000"), 100, P).unwrap();
        assert_eq!(
            down.health[&addr("10.0.0.1:8000")],
            Health {
                state: HealthState::Down,
                next_probe_ms: 1_100,
                wait_ms: 1_000,
                since_ms: 100,
                generation: 1,
            },
            "first probed 1 s after it went Down"
        );
        assert!(!is_routable(&down, &addr("10.0.0.1:8000")));
        assert!(is_routable(&down, &addr("10.0.0.2:8000")));
        assert!(
            mark_down_now(&down, addr("10.0.0.1:8000"), 200, P).is_none(),
            "already down"
        );
        assert!(
            mark_down_now(&s, addr("10.9.9.9:8000"), 100, P).is_none(),
            "not listed"
        );
        assert_eq!(counts(&down), (1, 0));
        assert_eq!(down.downs, 1);
        assert_eq!(generation(&down, &addr("10.0.0.1:8000")), 1);
        assert_eq!(generation(&down, &addr("10.0.0.2:8000")), 0);
        // Evidence from another generation is no evidence.
        assert!(mark_down(&s, addr("10.0.0.2:8000"), 7, 100, P).is_none());
        let both = mark_down(&down, addr("10.0.0.2:8000"), 0, 150, P).unwrap();
        assert_eq!(generation(&both, &addr("10.0.0.2:8000")), 2);
    }

    #[test]
    fn a_quarantined_node_that_fails_goes_down() {
        let s = with(
            listed(&["10.0.0.1:8000"]),
            "10.0.0.1:8000",
            HealthState::Quarantined,
            0,
        );
        let down = mark_down_now(&s, addr("10.0.0.1:8000"), 5, P).unwrap();
        assert_eq!(down.health[&addr("10.0.0.1:8000")].state, HealthState::Down);
        assert_eq!(down.health[&addr("10.0.0.1:8000")].next_probe_ms, 1_005);
    }

    #[test]
    fn nodes_not_known_before_are_quarantined() {
        // The first list: what was known (the seeds) serves, the rest waits.
        let mut first = listed(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        assert_eq!(
            on_new_list(&mut first, &[addr("10.0.0.1:8000")], 10),
            (vec![addr("10.0.0.2:8000")], 0)
        );
        assert!(is_routable(&first, &addr("10.0.0.1:8000")));
        assert!(!is_routable(&first, &addr("10.0.0.2:8000")));
        first.health.clear();

        let old = first.nodes.clone();
        let mut s = with(
            listed(&["10.0.0.2:8000", "10.0.0.3:8000"]),
            "10.0.0.1:8000",
            HealthState::Down,
            0,
        );
        assert_eq!(
            on_new_list(&mut s, &old, 10),
            (vec![addr("10.0.0.3:8000")], 0)
        );
        // The removed node was Down: it keeps that history, unlisted, and
        // counts no more.
        assert_eq!(s.health.len(), 2, "{:?}", s.health);
        assert_eq!(s.health[&addr("10.0.0.1:8000")].state, HealthState::Down);
        assert_eq!(counts(&s), (0, 1));
        assert_eq!(
            s.health[&addr("10.0.0.3:8000")],
            Health {
                state: HealthState::Quarantined,
                next_probe_ms: 10,
                wait_ms: 0,
                since_ms: 0,
                generation: 0,
            }
        );
    }

    /// A Down node that `/localnodes` drops keeps its history, unprobed
    /// while it is not listed; listed again, it is still Down on its
    /// backoff: probed at once (its probe is long due), then every 30 s,
    /// not every second as a newcomer.
    #[test]
    fn a_node_listed_again_after_dropping_out_keeps_its_history() {
        let full = listed(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let mut s = mark_down_now(&full, addr("10.0.0.2:8000"), 0, P).unwrap();
        for due in [1_000, 3_000, 7_000, 15_000, 31_000, 61_000] {
            s = try_start_probe(&s, due, P).unwrap().0;
        }
        assert_eq!(
            s.health[&addr("10.0.0.2:8000")].wait_ms,
            30_000,
            "backed off to the period"
        );

        let mut dropped = listed(&["10.0.0.1:8000"]);
        dropped.health = s.health.clone();
        dropped.downs = s.downs;
        assert_eq!(on_new_list(&mut dropped, &full.nodes, 300_000), (vec![], 0));
        assert_eq!(dropped.health.len(), 1, "kept");
        assert!(
            try_start_probe(&dropped, 300_000, P).is_none(),
            "not probed while not listed"
        );
        assert_eq!(counts(&dropped), (0, 0));

        let mut back = full.clone();
        back.health = dropped.health.clone();
        back.downs = dropped.downs;
        assert_eq!(on_new_list(&mut back, &dropped.nodes, 310_000), (vec![], 0));
        let h = back.health[&addr("10.0.0.2:8000")];
        assert_eq!(
            (h.state, h.wait_ms, h.generation),
            (HealthState::Down, 30_000, 1)
        );
        assert!(!is_routable(&back, &addr("10.0.0.2:8000")));
        let (after, probe) = try_start_probe(&back, 310_000, P).unwrap();
        assert_eq!(probe.state, HealthState::Down);
        assert_eq!(after.health[&probe.node].next_probe_ms, 340_000);
    }

    /// A node that passed its probes but went Down again soon after keeps
    /// backing off where it left off, up to the period: one whose probe
    /// passes but whose requests fail is tried every 2, 4, 8 ... s, not
    /// every second.
    #[test]
    fn a_node_going_down_again_soon_resumes_its_backoff() {
        let node = addr("10.0.0.1:8000");
        let mut s = listed(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            s = mark_down_now(&s, node, now, P).unwrap();
            let h = s.health[&node];
            waits.push(h.wait_ms);
            now = h.next_probe_ms;
            let (leased, probe) = try_start_probe(&s, now, P).unwrap();
            let (up, back) = apply_probe(&leased, &probe, true, now);
            assert!(back && is_routable(&up, &node));
            s = up;
            // Requests fail again 100 ms after it came back.
            now += 100;
        }
        assert_eq!(waits, [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
        assert_eq!(s.downs, 7, "one generation per spell");
        assert_eq!(generation(&s, &node), 7);
    }

    /// The memory halves for every 10 s the node stays up: a node back from
    /// a backoff that had reached 16 s resumes at 16 s if it fails at once,
    /// at 8 s after 10 s up, and at 1 s after 40 s; an Active node's faded
    /// memory is then forgotten.
    #[test]
    fn the_backoff_memory_fades_while_the_node_stays_up() {
        let node = addr("10.0.0.1:8000");
        let start = listed(&["10.0.0.1:8000"]);
        let mut s = mark_down_now(&start, node, 0, P).unwrap();
        for due in [1_000, 3_000, 7_000] {
            s = try_start_probe(&s, due, P).unwrap().0;
        }
        // The probe at 15 s is leased with the next wait, 16 s, and passes.
        let (s, probe) = try_start_probe(&s, 15_000, P).unwrap();
        let (up, back) = apply_probe(&s, &probe, true, 15_010);
        assert!(back);
        assert_eq!(
            up.health[&node],
            Health {
                state: HealthState::Active,
                next_probe_ms: 0,
                wait_ms: 16_000,
                since_ms: 15_010,
                generation: 1,
            }
        );
        let wait_after = |up_ms: u64| {
            let down = mark_down_now(&up, node, 15_010 + up_ms, P).unwrap();
            down.health[&node].wait_ms
        };
        assert_eq!(wait_after(0), 16_000);
        assert_eq!(wait_after(9_999), 16_000);
        assert_eq!(wait_after(10_000), 8_000);
        assert_eq!(wait_after(20_000), 4_000);
        assert_eq!(wait_after(40_000), 1_000);
        assert_eq!(wait_after(50_000), 1_000);
        assert_eq!(wait_after(3_600_000), 1_000);
        // Tidied while it fades: kept, then forgotten once below 1 s.
        let mut kept = up.clone();
        assert_eq!(tidy(&mut kept, 15_010 + 49_999), 0);
        assert!(kept.health.contains_key(&node));
        let mut faded = up.clone();
        tidy(&mut faded, 15_010 + 50_000);
        assert!(faded.health.is_empty(), "{:?}", faded.health);
        // A clock that stepped back reads the memory as fresh.
        assert_eq!(
            mark_down_now(&up, node, 1_000, P).unwrap().health[&node].wait_ms,
            16_000
        );
    }

    /// At most MAX_UNLISTED dropped nodes keep their history: the ones that
    /// changed state longest ago go first, and the count is returned.
    #[test]
    fn the_history_of_dropped_nodes_is_capped() {
        let many: Vec<String> = (0..MAX_UNLISTED + 5)
            .map(|i| format!("10.1.{}.{}:8000", i / 250, i % 250 + 1))
            .collect();
        let names: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut s = listed(&names);
        for (i, n) in names.iter().enumerate() {
            s = mark_down_now(&s, addr(n), i as u64, P).unwrap();
        }
        let old = s.nodes.clone();
        let mut rest = listed(&["10.0.0.1:8000"]);
        rest.health = s.health.clone();
        assert_eq!(on_new_list(&mut rest, &old, 1_000).1, 5, "counted");
        // (and the one node listed now, a newcomer)
        assert_eq!(rest.health.len(), MAX_UNLISTED + 1);
        assert!(
            !rest.health.contains_key(&addr(names[4])),
            "oldest forgotten"
        );
        assert!(rest.health.contains_key(&addr(names[5])));
        let mut again = rest.clone();
        again.health.insert(
            addr("10.2.0.1:8000"),
            Health {
                since_ms: 2_000,
                ..rest.health[&addr(names[5])]
            },
        );
        assert_eq!(tidy(&mut again, 2_000), 1);
    }

    #[test]
    fn down_probes_back_off_from_one_second_to_the_period() {
        let s = mark_down_now(&listed(&["10.0.0.1:8000"]), addr("10.0.0.1:8000"), 0, P).unwrap();
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
        let s =
            mark_down_now(&listed(&["10.0.0.1:8000"]), addr("10.0.0.1:8000"), 0, short).unwrap();
        assert_eq!(probe_times(s, short, 1_500), [300, 600, 900, 1_200, 1_500]);
        // A period between the first wait and its double caps the second.
        let odd = ProbePeriods {
            down_ms: 1_500,
            quarantine_ms: 200,
        };
        let s = mark_down_now(&listed(&["10.0.0.1:8000"]), addr("10.0.0.1:8000"), 0, odd).unwrap();
        assert_eq!(probe_times(s, odd, 6_000), [1_000, 2_500, 4_000, 5_500]);
    }

    /// The record is writable by anything in the proxy: a wait of 0 must
    /// not make a node probed on every tick, nor a huge one overflow.
    #[test]
    fn a_nonsense_wait_in_the_record_stays_within_bounds() {
        for (wait, expected) in [(0, 1_000), (1, 1_000), (u64::MAX, 30_000)] {
            let mut s = listed(&["10.0.0.1:8000"]);
            s.health.insert(
                addr("10.0.0.1:8000"),
                Health {
                    state: HealthState::Down,
                    next_probe_ms: 0,
                    wait_ms: wait,
                    since_ms: 0,
                    generation: 0,
                },
            );
            let (next, _) = try_start_probe(&s, 10, P).unwrap();
            assert_eq!(
                next.health[&addr("10.0.0.1:8000")].wait_ms,
                expected,
                "{wait}"
            );
            assert_eq!(
                next.health[&addr("10.0.0.1:8000")].next_probe_ms,
                10 + expected
            );
        }
    }

    #[test]
    fn probes_are_leased_one_per_node_per_wait() {
        let s = listed(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let s = mark_down_now(&s, addr("10.0.0.1:8000"), 0, P).unwrap();
        let s = with(s, "10.0.0.2:8000", HealthState::Quarantined, 5_000);
        assert!(try_start_probe(&s, 999, P).is_none());
        let (s, probe) = try_start_probe(&s, 1_000, P).unwrap();
        assert_eq!(
            probe,
            Probe {
                node: addr("10.0.0.1:8000"),
                state: HealthState::Down
            }
        );
        assert_eq!(s.health[&probe.node].next_probe_ms, 3_000);
        assert!(
            try_start_probe(&s, 2_999, P).is_none(),
            "the Down node is leased for 2 s"
        );
        let (s, probe) = try_start_probe(&s, 3_000, P).unwrap();
        assert_eq!(probe.node, addr("10.0.0.1:8000"));
        assert_eq!(s.health[&probe.node].next_probe_ms, 7_000);
        let (s, probe) = try_start_probe(&s, 5_000, P).unwrap();
        assert_eq!(probe.state, HealthState::Quarantined);
        assert_eq!(s.health[&probe.node].next_probe_ms, 6_000);
        assert!(try_start_probe(&s, 5_999, P).is_none());
    }

    #[test]
    fn a_successful_probe_restores_the_node_and_the_next_outage_starts_over() {
        let s = mark_down_now(&listed(&["10.0.0.1:8000"]), addr("10.0.0.1:8000"), 0, P).unwrap();
        let (s, probe) = try_start_probe(&s, 1_000, P).unwrap();
        let (s, _) = try_start_probe(&s, 3_000, P).unwrap();
        let (same, back) = apply_probe(&s, &probe, false, 0);
        assert!(!back);
        assert_eq!(same.health.len(), 1);
        let (up, back) = apply_probe(&s, &probe, true, 0);
        assert!(back);
        assert!(is_routable(&up, &probe.node));
        // A probe answer for a node that is no longer tracked changes nothing.
        let (_, back) = apply_probe(&up, &probe, true, 0);
        assert!(!back);
        // Down again later: 1 s to the first probe, not where the last
        // outage's backoff had got to.
        let again = mark_down_now(&up, probe.node, 50_000, P).unwrap();
        assert_eq!(again.health[&probe.node].next_probe_ms, 51_000);
    }
}
