//! Who polls `/localnodes`, when, which nodes it asks, and what the answers
//! do to the shared state.
//!
//! Every VM in an Envoy process calls [`try_start_round`] on each tick; the
//! shared state acts as a lease, so whichever VM wins the compare-and-swap
//! for a due round is the only one that polls in that interval. A round asks
//! every [`Query`](crate::topology::Query) of the topology once, each of its
//! own target; each result is folded back on its own with [`apply_answer`]
//! or [`apply_failure`], and every VM derives what it routes over with
//! [`routing_tiers`] (and, for key route affinity, [`rings`]).

use crate::health;
use crate::log_throttle::should_log_failure;
use crate::model::health::HealthState;
use crate::model::record::{effective_ms, QueryList, SharedState, MAX_FAILED};
use crate::model::sorted;
use crate::model::NodeAddr;
use crate::rng::Rng;
use crate::topology::Topology;

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
    /// and by the idle interval), so a dead cluster is not hammered. The
    /// streak is [`failure_streak`]: one dead datacenter does not slow down
    /// the updates of the others.
    pub fn next_interval(&self, state: &SharedState, now_ms: u64) -> u64 {
        if self.is_idle(state, now_ms) {
            return self.idle_interval_ms;
        }
        let doublings = failure_streak(state).saturating_sub(1).min(3);
        let factor = (1u64 << doublings).min(MAX_BACKOFF_FACTOR);
        let backed_off = self.interval_ms.saturating_mul(factor);
        backed_off.min(self.idle_interval_ms.max(self.interval_ms))
    }

    /// The longest a round's due time is ever set ahead: the next
    /// interval never exceeds the idle one or the active one.
    pub fn horizon_ms(&self) -> u64 {
        self.idle_interval_ms.max(self.interval_ms)
    }

    /// Whether nothing was routed for `idle_after_ms`. An activity time
    /// ahead of this VM's clock is an age of 0: active.
    fn is_idle(&self, state: &SharedState, now_ms: u64) -> bool {
        now_ms.saturating_sub(state.last_activity_ms) >= self.idle_after_ms
    }

    /// Records that requests were routed. Returns the state to write, or
    /// `None` when the last report is recent enough. The first request after
    /// an idle spell makes a round due at once, so the list is fresh again
    /// quickly. A last report further ahead than the resolution is not
    /// recent but written by a clock ahead of this one (see
    /// [`effective_ms`]): it is replaced, or idleness would go unnoticed
    /// for as long as the gap.
    pub fn note_activity(&self, state: &SharedState, now_ms: u64) -> Option<SharedState> {
        let last = state.last_activity_ms;
        let ahead = effective_ms(last, now_ms, ACTIVITY_RESOLUTION_MS) != last;
        if !ahead && now_ms < last.saturating_add(ACTIVITY_RESOLUTION_MS) {
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

/// Failures in a row of the query that fails least: the pace backs off only
/// while every question fails (a dead cluster, or a dead network path).
pub fn failure_streak(state: &SharedState) -> u32 {
    state
        .lists
        .iter()
        .map(|l| l.consecutive_failures)
        .min()
        .unwrap_or(0)
}

/// A fresh shared state, created by the first VM to tick. Start-up counts as
/// activity, so discovery runs at the active pace for the first minute.
pub fn initial_state(now_ms: u64) -> SharedState {
    SharedState {
        last_activity_ms: now_ms,
        ..SharedState::default()
    }
}

/// A discovery round this VM has won: ask each query of `targets` (query
/// index, node) and fold each result back with this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    pub number: u64,
    pub targets: Vec<(usize, NodeAddr)>,
}

impl Round {
    /// The node this round asks query `query`, if it asks it.
    pub fn target(&self, query: usize) -> Option<NodeAddr> {
        self.targets
            .iter()
            .find(|(q, _)| *q == query)
            .map(|(_, t)| *t)
    }
}

/// Starts a round if one is due. Returns the state to write back (with
/// compare-and-swap: losing the swap means another VM started it) and the
/// round to run: one target per query, so still one lease per interval.
///
/// Rounds keep a steady rhythm: the next one is due one interval after the
/// previous due time, not after whenever a tick noticed it, so tick jitter
/// does not stretch the period.
pub fn try_start_round(
    state: &SharedState,
    now_ms: u64,
    timing: Timing,
    topology: &Topology,
    rng: &mut Rng,
) -> Option<(SharedState, Round)> {
    // A due time further ahead than any interval was written by a clock
    // ahead of this one: due now, not after the gap.
    let due_ms = effective_ms(state.next_due_ms, now_ms, timing.horizon_ms());
    if now_ms < due_ms {
        return None;
    }
    let state = fitted(state, topology.queries.len());
    let targets: Vec<(usize, NodeAddr)> = (0..topology.queries.len())
        .filter_map(|q| choose_target(&state, topology, q, rng).map(|t| (q, t)))
        .collect();
    if targets.is_empty() {
        return None;
    }
    let interval_ms = timing.next_interval(&state, now_ms);
    let on_rhythm = due_ms.saturating_add(interval_ms);
    let next_due_ms = if due_ms != 0 && on_rhythm > now_ms {
        on_rhythm
    } else {
        now_ms.saturating_add(interval_ms)
    };
    let number = state.round.saturating_add(1);
    let mut next = SharedState {
        round: number,
        next_due_ms,
        ..state
    };
    // Each round's lease also forgets faded health memories: no other write
    // need come for them to go.
    health::tidy(&mut next, now_ms);
    Some((next, Round { number, targets }))
}

/// The state with exactly one list per query. Filters share a state only
/// when their discovery identities (hence topologies) match, so this only
/// creates the lists of a fresh state; trimming guards against a foreign
/// record.
fn fitted(state: &SharedState, queries: usize) -> SharedState {
    let mut next = state.clone();
    if next.lists.len() != queries {
        next.lists.resize_with(queries, QueryList::default);
        next.refresh_nodes();
    }
    next
}

/// The node to ask `query`, at random within the first non-empty pool:
/// healthy nodes of the query's own list, then of the lists of queries about
/// the same datacenter (they can answer for it and are near), then the
/// query's seeds, then any known node; then the same pools regardless of
/// health (a Down node may be back). Never a node that failed this query
/// since its last answer; when every candidate has, the one that failed
/// longest ago, so that each gets its turn.
///
/// A query without `dc` asks "the asked node's datacenter", so only its own
/// and same-kind lists and its seeds qualify: a node of another datacenter
/// would answer for the wrong one.
pub fn choose_target(
    state: &SharedState,
    topology: &Topology,
    query: usize,
    rng: &mut Rng,
) -> Option<NodeAddr> {
    let failed: &[NodeAddr] = state.list(query).map_or(&[], |l| l.failed.as_slice());
    let own = union(state, [query]);
    let same_dc = union(
        state,
        topology.same_dc(query).into_iter().filter(|&q| q != query),
    );
    let seeds = topology.seeds_of(query).to_vec();
    let named = topology.queries.get(query).is_some_and(|q| q.dc.is_some());
    let known = if named {
        state.nodes.clone()
    } else {
        Vec::new()
    };
    let pools = [own, same_dc, seeds, known];
    for healthy_only in [true, false] {
        for pool in &pools {
            let fresh: Vec<&NodeAddr> = pool
                .iter()
                .filter(|n| !failed.contains(n) && (!healthy_only || health::is_routable(state, n)))
                .collect();
            if let Some(pick) = fresh.get(rng.below(fresh.len())) {
                return Some(**pick);
            }
        }
    }
    failed
        .iter()
        .find(|f| pools.iter().any(|p| p.contains(f)))
        .copied()
        .or_else(|| topology.seeds_of(query).first().copied())
}

/// The nodes a list stands for now: its own, and while none of them is
/// routable yet, the ones it dropped and keeps serving (make before break).
pub fn members<'s>(state: &SharedState, list: &'s QueryList) -> [&'s [NodeAddr]; 2] {
    if list.retiring.is_empty() || health::any_routable(state, &list.nodes) {
        [&list.nodes, &[]]
    } else {
        [&list.nodes, &list.retiring]
    }
}

/// The sorted union of the members of the lists of `queries` (missing
/// lists are empty).
fn union(state: &SharedState, queries: impl IntoIterator<Item = usize>) -> Vec<NodeAddr> {
    sorted::union(
        queries
            .into_iter()
            .filter_map(|q| state.list(q))
            .flat_map(|l| members(state, l)),
    )
}

/// What one query's result did, for the log. Every event names its query
/// (an index into [`Topology::queries`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The query's list changed (`first`: its first answer). `total` counts
    /// the query's list; `quarantined` are the nodes that joined the union
    /// and wait for a probe; `kept` the nodes it dropped (for a first
    /// answer, its seeds) that keep serving until one of its own passes;
    /// `forgotten` how many dropped nodes' histories the cap forgot.
    ListChanged {
        query: usize,
        added: Vec<NodeAddr>,
        removed: Vec<NodeAddr>,
        total: usize,
        first: bool,
        recovered_after: u32,
        quarantined: Vec<NodeAddr>,
        kept: Vec<NodeAddr>,
        forgotten: usize,
    },
    ListUnchanged {
        query: usize,
        recovered_after: u32,
    },
    /// A newer round already stored this query's list; this result is older.
    Stale {
        query: usize,
    },
    /// `log`: whether this failure of the query's streak deserves a log line.
    Failed {
        query: usize,
        consecutive: u32,
        log: bool,
    },
    /// The answer listed no node while no other query lists any either. An
    /// empty answer never wipes the last good list, so it counts as a
    /// failure (and the next round asks another node).
    EmptyRefused {
        query: usize,
        consecutive: u32,
        log: bool,
    },
}

impl Event {
    pub fn query(&self) -> usize {
        match self {
            Event::ListChanged { query, .. }
            | Event::ListUnchanged { query, .. }
            | Event::Stale { query }
            | Event::Failed { query, .. }
            | Event::EmptyRefused { query, .. } => *query,
        }
    }
}

/// Whether `round`'s result for `query` is to be ignored: a newer round
/// already stored that query's list, or the state has no list for it (it
/// was reset since the round started; the next round asks again).
fn is_stale(state: &SharedState, round: &Round, query: usize) -> bool {
    state.list(query).map_or(true, |l| round.number < l.round)
}

/// Folds a parsed `/localnodes` answer to `query` into the state; `seeds`
/// are the query's seeds, what served its part before its first answer.
///
/// An empty answer is stored (an empty rack or datacenter: its scope yields
/// no node and routing passes to the next one), unless every list would
/// then be empty: then it counts as a failure and nothing else changes.
///
/// Make before break: the nodes the answer adds are Quarantined and probed
/// at once (see [`health::on_new_list`]); the first answer's too, except
/// the seeds it lists, which were serving. The nodes it drops that were
/// serving (the last list with a routable node, or the seeds) keep serving
/// as the list's `retiring` nodes while none of the new list is routable,
/// and go as soon as one is ([`health::settle`]). So an answer that lists
/// only addresses where nothing answers leaves a working proxy working.
pub fn apply_answer(
    state: &SharedState,
    round: &Round,
    query: usize,
    nodes: Vec<NodeAddr>,
    seeds: &[NodeAddr],
    now_ms: u64,
) -> (SharedState, Event) {
    if is_stale(state, round, query) {
        return (state.clone(), Event::Stale { query });
    }
    let mut nodes = nodes;
    sorted::sort_dedup(&mut nodes);
    let others_empty = state
        .lists
        .iter()
        .enumerate()
        .all(|(i, l)| i == query || l.nodes.is_empty());
    if nodes.is_empty() && others_empty {
        let (next, consecutive) = record_failure(state, round, query);
        let log = should_log_failure(consecutive);
        return (
            next,
            Event::EmptyRefused {
                query,
                consecutive,
                log,
            },
        );
    }
    let mut next = state.clone();
    let Some(list) = next.lists.get_mut(query) else {
        return (next, Event::Stale { query });
    };
    let recovered_after = list.consecutive_failures;
    let first = list.round == 0;
    list.round = round.number;
    list.consecutive_failures = 0;
    list.failed.clear();
    next.last_success_ms = now_ms;
    if !first && nodes == list.nodes {
        return (
            next,
            Event::ListUnchanged {
                query,
                recovered_after,
            },
        );
    }
    let mut seeds = seeds.to_vec();
    sorted::sort_dedup(&mut seeds);
    // What was known before: the union, and for a first answer the seeds,
    // which were serving its part.
    let known_before = if first {
        sorted::union([state.nodes.as_slice(), seeds.as_slice()])
    } else {
        state.nodes.clone()
    };
    let served = if first { seeds } else { list.nodes.clone() };
    // What served until now: the previous list if any of it was routable,
    // else what that list kept serving.
    let serving = if health::any_routable(state, &served) {
        served
    } else {
        std::mem::take(&mut list.retiring)
    };
    let old = std::mem::replace(&mut list.nodes, nodes);
    // A node of the new list that was known and routable serves at once;
    // newcomers must pass a probe first. An empty answer is an empty scope,
    // nothing to make before breaking.
    let verified = list.nodes.is_empty()
        || list
            .nodes
            .iter()
            .any(|n| known_before.binary_search(n).is_ok() && health::is_routable(state, n));
    list.retiring = if verified {
        Vec::new()
    } else {
        serving
            .into_iter()
            .filter(|n| list.nodes.binary_search(n).is_err())
            .collect()
    };
    // Both lists are sorted: a search each, not a scan (1024 nodes each
    // would be a million comparisons).
    let added = list
        .nodes
        .iter()
        .filter(|n| old.binary_search(n).is_err())
        .copied()
        .collect();
    let removed = old
        .iter()
        .filter(|n| list.nodes.binary_search(n).is_err())
        .copied()
        .collect();
    let total = list.nodes.len();
    let kept = list.retiring.clone();
    next.refresh_nodes();
    let (quarantined, forgotten) = health::on_new_list(&mut next, &known_before, now_ms);
    (
        next,
        Event::ListChanged {
            query,
            added,
            removed,
            total,
            first,
            recovered_after,
            quarantined,
            kept,
            forgotten,
        },
    )
}

/// Records that `round`'s target for `query` gave no usable answer. Every
/// list is left exactly as it was.
pub fn apply_failure(state: &SharedState, round: &Round, query: usize) -> (SharedState, Event) {
    if is_stale(state, round, query) || round.target(query).is_none() {
        return (state.clone(), Event::Stale { query });
    }
    let (next, consecutive) = record_failure(state, round, query);
    (
        next,
        Event::Failed {
            query,
            consecutive,
            log: should_log_failure(consecutive),
        },
    )
}

/// Counts a failure of `query` and remembers its target as failed (the
/// caller has checked that the state has the query's list).
fn record_failure(state: &SharedState, round: &Round, query: usize) -> (SharedState, u32) {
    let mut next = state.clone();
    let Some(list) = next.lists.get_mut(query) else {
        return (next, 0);
    };
    list.consecutive_failures = list.consecutive_failures.saturating_add(1);
    if let Some(target) = round.target(query) {
        list.failed.retain(|f| *f != target);
        list.failed.push(target);
        let excess = list.failed.len().saturating_sub(MAX_FAILED);
        list.failed.drain(..excess);
    }
    let consecutive = list.consecutive_failures;
    (next, consecutive)
}

/// What requests may go to, per scope in routing order: the routable nodes
/// of the union of the scope's lists' members (a list's nodes, and while
/// none of them is routable yet, the nodes it keeps serving; see
/// [`members`]). The picker uses the first non-empty tier; an empty tier
/// (empty rack, or every node Down or Quarantined) passes requests on to
/// the next scope, and they come back as soon as the tier has a healthy
/// node again. With every tier empty, requests go to [`panic_order`].
///
/// Before anything is discovered there is a single tier: the healthy seeds
/// of the first scope's datacenter when it has any, else of all seeds. A
/// seed that failed a `/localnodes` call stays: a discovery failure is not a
/// traffic failure (a typo in `discovery_cluster`, or a node that answers
/// requests but not `/localnodes`, must not take a serving seed out); only
/// requests that fail to reach it do.
pub fn routing_tiers(state: Option<&SharedState>, topology: &Topology) -> Vec<Vec<NodeAddr>> {
    let Some(state) = state else {
        return vec![topology.start_seeds.clone()];
    };
    if state.discovered() {
        return topology
            .scopes
            .iter()
            .map(|queries| {
                let mut nodes = union(state, queries.iter().copied());
                nodes.retain(|n| health::is_routable(state, n));
                nodes
            })
            .collect();
    }
    let usable = |seeds: &[NodeAddr]| -> Vec<NodeAddr> {
        seeds
            .iter()
            .filter(|n| health::is_routable(state, n))
            .copied()
            .collect()
    };
    let start = usable(&topology.start_seeds);
    if start.is_empty() {
        vec![usable(&topology.seeds)]
    } else {
        vec![start]
    }
}

/// Whether no node of any scope may take requests while some node is
/// known: requests then go to the known nodes anyway ([`panic_order`]).
pub fn panicking(state: Option<&SharedState>, topology: &Topology) -> bool {
    routing_tiers(state, topology).iter().all(Vec::is_empty)
        && !panic_order(state, topology, &[]).is_empty()
}

/// Every known node, least recently failed first: what requests go to when
/// no node of any scope may take them, as Envoy's load balancers route to
/// every host in panic. A request that would be refused while some node is
/// known is worse than a request sent to a node that may answer again:
/// the nodes may all have failed for a moment (a network blip, a rolling
/// restart gone too fast), and their probes back off.
///
/// The known nodes are the lists' nodes and the ones they keep serving, or
/// before anything is discovered, the seeds. The order: nodes that never
/// failed (Quarantined newcomers) first, then by the last failure known: a
/// Quarantined node's return from Down, a Down node's going Down or last
/// probe, whichever is later; nodes this VM itself just saw fail
/// (`withheld`) last. Ties by address.
pub fn panic_order(
    state: Option<&SharedState>,
    topology: &Topology,
    withheld: &[NodeAddr],
) -> Vec<NodeAddr> {
    let known = match state {
        Some(state) if state.discovered() => state.nodes.as_slice(),
        _ => topology.seeds.as_slice(),
    };
    let last_failed = |n: &NodeAddr| -> u64 {
        if withheld.contains(n) {
            return u64::MAX;
        }
        let Some(h) = state.and_then(|s| s.health.get(n)) else {
            return 0;
        };
        match h.state {
            HealthState::Down => h.since_ms.max(h.next_probe_ms.saturating_sub(h.wait_ms)),
            HealthState::Quarantined | HealthState::Active => h.since_ms,
        }
    };
    let mut order: Vec<(u64, NodeAddr)> = known.iter().map(|n| (last_failed(n), *n)).collect();
    order.sort_unstable();
    order.into_iter().map(|(_, n)| n).collect()
}

/// Per scope in routing order, every listed node of its lists, healthy or
/// not: the affinity ring must not move when a node's health changes, since
/// health only applies when a node is picked from the ring. Empty before
/// anything is discovered.
pub fn rings(state: &SharedState, topology: &Topology) -> Vec<Vec<NodeAddr>> {
    topology
        .scopes
        .iter()
        .map(|queries| union(state, queries.iter().copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where requests go: the first non-empty tier of [`routing_tiers`], as
    /// [`crate::routes::Routes::pick`] takes it.
    fn routing_nodes(state: Option<&SharedState>, topology: &Topology) -> Vec<NodeAddr> {
        routing_tiers(state, topology)
            .into_iter()
            .find(|tier| !tier.is_empty())
            .unwrap_or_default()
    }
    use crate::model::config::Config;
    use crate::model::health::{HealthState, ProbePeriods};
    use crate::testing::{addr, addrs};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const T: Timing = Timing {
        interval_ms: 1000,
        idle_interval_ms: 60_000,
        idle_after_ms: 60_000,
    };

    const P: ProbePeriods = ProbePeriods {
        down_ms: 1,
        quarantine_ms: 1,
    };

    fn topology(doc: &str) -> Topology {
        Topology::from_config(&Config::parse(doc.as_bytes()).unwrap())
    }

    /// One unnamed seed group, the cluster scope: the original setup.
    fn plain(seeds: &[&str]) -> Topology {
        let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
        topology(&format!(r#"{{"seeds": [{}]}}"#, seeds.join(",")))
    }

    /// A state whose only query (0) was answered with `nodes` in round 1.
    fn discovered(nodes: &[&str]) -> SharedState {
        let mut s = SharedState {
            round: 1,
            next_due_ms: 1000,
            lists: vec![QueryList {
                round: 1,
                nodes: addrs(nodes),
                ..QueryList::default()
            }],
            ..SharedState::default()
        };
        s.refresh_nodes();
        s
    }

    /// A fresh state with lists for `queries` queries, as a first round
    /// leaves it.
    fn fresh(queries: usize) -> SharedState {
        SharedState {
            lists: vec![QueryList::default(); queries],
            ..SharedState::default()
        }
    }

    fn round(number: u64, targets: &[(usize, &str)]) -> Round {
        Round {
            number,
            targets: targets.iter().map(|(q, t)| (*q, addr(t))).collect(),
        }
    }

    /// Queries: 0 = dc1/rack1, 1 = dc1, 2 = dc2. Scopes: rack1, dc1, cluster.
    const TWO_DCS: &str = r#"{"seeds": {"dc1": ["10.1.9.9"], "dc2": ["10.2.9.9"]},
        "routing": [{"dc": "dc1", "rack": "rack1"}, {"dc": "dc1"}, "cluster"]}"#;
    const DC1_RACK1: [&str; 2] = ["10.1.1.1:8000", "10.1.1.2:8000"];
    const DC1_RACK2: [&str; 2] = ["10.1.2.1:8000", "10.1.2.2:8000"];
    const DC2: [&str; 4] = [
        "10.2.1.1:8000",
        "10.2.1.2:8000",
        "10.2.2.1:8000",
        "10.2.2.2:8000",
    ];

    fn dc1() -> Vec<NodeAddr> {
        let mut v = addrs(&DC1_RACK1);
        v.extend(addrs(&DC1_RACK2));
        v
    }

    /// The two-datacenter cluster after one round answered every query.
    /// The two-datacenter cluster after one round answered every query and
    /// every node it listed passed its probe.
    fn two_dcs_discovered(t: &Topology) -> SharedState {
        let mut rng = Rng::new(1);
        let (mut s, r) = try_start_round(&initial_state(0), 0, T, t, &mut rng).unwrap();
        assert_eq!(r.targets.len(), 3);
        for (q, nodes) in [(0, addrs(&DC1_RACK1)), (1, dc1()), (2, addrs(&DC2))] {
            s = apply_answer(&s, &r, q, nodes, &t.query_seeds[q], 5).0;
        }
        probed(s)
    }

    /// Every Quarantined node's probe passes.
    fn probed(mut s: SharedState) -> SharedState {
        let waiting: Vec<NodeAddr> = s
            .health
            .iter()
            .filter(|(_, h)| h.state == HealthState::Quarantined)
            .map(|(n, _)| *n)
            .collect();
        for node in waiting {
            let probe = health::Probe {
                node,
                state: HealthState::Quarantined,
            };
            s = health::apply_probe(&s, &probe, true, 6).0;
        }
        s
    }

    #[test]
    fn a_round_starts_only_when_due() {
        let mut rng = Rng::new(1);
        let t = plain(&["10.0.0.1"]);
        let s = SharedState {
            next_due_ms: 5000,
            ..SharedState::default()
        };
        assert!(try_start_round(&s, 4999, T, &t, &mut rng).is_none());
        let (next, round) = try_start_round(&s, 5000, T, &t, &mut rng).unwrap();
        assert_eq!(round.number, 1);
        assert_eq!(round.targets, [(0, addr("10.0.0.1:8000"))]);
        assert_eq!(next.round, 1);
        assert_eq!(next.next_due_ms, 6000);
        assert_eq!(next.lists.len(), 1, "the round sizes the lists");
        // The new state is not due again within the interval.
        assert!(try_start_round(&next, 5999, T, &t, &mut rng).is_none());
    }

    #[test]
    fn one_round_per_interval_asks_every_query() {
        let t = topology(TWO_DCS);
        let mut rng = Rng::new(3);
        let shared = SharedState {
            next_due_ms: 100,
            ..SharedState::default()
        };
        let (after_first, r) = try_start_round(&shared, 100, T, &t, &mut rng).unwrap();
        let queries: Vec<usize> = r.targets.iter().map(|(q, _)| *q).collect();
        assert_eq!(queries, [0, 1, 2]);
        // Before discovery, each datacenter is asked of its own seeds.
        assert_eq!(r.target(0), Some(addr("10.1.9.9:8000")));
        assert_eq!(r.target(1), Some(addr("10.1.9.9:8000")));
        assert_eq!(r.target(2), Some(addr("10.2.9.9:8000")));
        assert_eq!(r.target(3), None);
        // The other VMs, re-reading, find the round not due.
        for now in [100, 150, 1099] {
            assert!(try_start_round(&after_first, now, T, &t, &mut rng).is_none());
        }
        let (_, next) = try_start_round(&after_first, 1100, T, &t, &mut rng).unwrap();
        assert_eq!(next.number, 2);
    }

    #[test]
    fn rounds_keep_their_rhythm_despite_tick_jitter() {
        let mut rng = Rng::new(1);
        let t = plain(&["10.0.0.1"]);
        let mut s = SharedState::default();
        let mut now = 10_000;
        let mut rounds = 0;
        // Ticks every 90 ms for 10 s: a late tick must not delay later rounds.
        while now < 20_000 {
            if let Some((next, _)) = try_start_round(&s, now, T, &t, &mut rng) {
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
        let t = plain(&["10.0.0.1"]);
        let s = SharedState {
            next_due_ms: 1000,
            ..SharedState::default()
        };
        let (next, _) = try_start_round(&s, 60_000, T, &t, &mut rng).unwrap();
        assert_eq!(next.next_due_ms, 61_000);
    }

    #[test]
    fn target_is_a_known_node_when_there_is_one() {
        let mut rng = Rng::new(9);
        let s = discovered(&["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]);
        let t = plain(&["10.9.9.9"]);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            let target = choose_target(&s, &t, 0, &mut rng).unwrap();
            assert!(s.nodes.contains(&target));
            seen.insert(target);
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
        let t = plain(&["10.9.9.9"]);
        let mut s = discovered(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        s = apply_failure(&s, &round(2, &[(0, "10.0.0.1:8000")]), 0).0;
        for _ in 0..20 {
            assert_eq!(
                choose_target(&s, &t, 0, &mut rng),
                Some(addr("10.0.0.2:8000"))
            );
        }
        s = apply_failure(&s, &round(3, &[(0, "10.0.0.2:8000")]), 0).0;
        assert_eq!(
            choose_target(&s, &t, 0, &mut rng),
            Some(addr("10.9.9.9:8000"))
        );
        s = apply_failure(&s, &round(4, &[(0, "10.9.9.9:8000")]), 0).0;
        // Everything failed: the oldest failure goes first, then the next.
        let target = choose_target(&s, &t, 0, &mut rng).unwrap();
        assert_eq!(target, addr("10.0.0.1:8000"));
        s = apply_failure(
            &s,
            &Round {
                number: 5,
                targets: vec![(0, target)],
            },
            0,
        )
        .0;
        assert_eq!(
            choose_target(&s, &t, 0, &mut rng),
            Some(addr("10.0.0.2:8000"))
        );
        // The list itself never changed.
        assert_eq!(s.nodes, addrs(&["10.0.0.1:8000", "10.0.0.2:8000"]));
        assert_eq!(s.lists[0].consecutive_failures, 4);
    }

    #[test]
    fn down_nodes_are_asked_only_when_no_healthy_node_is_left() {
        let mut rng = Rng::new(5);
        let t = plain(&["10.0.0.1"]);
        let s = discovered(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let s = health::mark_down_now(&s, addr("10.0.0.1:8000"), 0, P).unwrap();
        for _ in 0..20 {
            assert_eq!(
                choose_target(&s, &t, 0, &mut rng),
                Some(addr("10.0.0.2:8000"))
            );
        }
        let s = health::mark_down_now(&s, addr("10.0.0.2:8000"), 0, P).unwrap();
        assert!(
            choose_target(&s, &t, 0, &mut rng).is_some(),
            "all down: still try someone"
        );
    }

    #[test]
    fn per_query_targets_prefer_the_same_datacenter() {
        let t = topology(TWO_DCS);
        let mut rng = Rng::new(11);
        // Only the rack query has answered so far.
        let (s, r) = try_start_round(&initial_state(0), 0, T, &t, &mut rng).unwrap();
        let (s, _) = apply_answer(&s, &r, 0, addrs(&DC1_RACK1), &t.query_seeds[0], 1);
        let s = probed(apply_failure(&s, &r, 1).0);
        let s = apply_failure(&s, &r, 2).0;
        let rack1 = addrs(&DC1_RACK1);
        for _ in 0..50 {
            // The dc1 query asks a dc1 node it knows of (the seed failed it).
            let target = choose_target(&s, &t, 1, &mut rng).unwrap();
            assert!(rack1.contains(&target), "{target}");
            // The rack query asks its own nodes.
            assert!(rack1.contains(&choose_target(&s, &t, 0, &mut rng).unwrap()));
        }
        // dc2's seed failed, and dc2 has no list: a known node answers for
        // dc2 rather than asking the failed seed again.
        assert!(rack1.contains(&choose_target(&s, &t, 2, &mut rng).unwrap()));
        // Once dc2 is known, its own nodes are asked, never dc1's.
        let (s, r) = try_start_round(&s, 1000, T, &t, &mut rng).unwrap();
        let (mut s, _) = apply_answer(&s, &r, 2, addrs(&DC2), &[], 1001);
        // (They joined after the first discovery; their probes pass.)
        assert_eq!(s.health.len(), 4);
        s.health.clear();
        let dc2 = addrs(&DC2);
        for _ in 0..50 {
            assert!(dc2.contains(&choose_target(&s, &t, 2, &mut rng).unwrap()));
        }
        // With its own list all Down, dc2 is asked of its seed before dc1's
        // nodes.
        let mut down = s.clone();
        for n in &dc2 {
            down = health::mark_down_now(&down, *n, 0, P).unwrap();
        }
        assert_eq!(
            choose_target(&down, &t, 2, &mut rng),
            Some(addr("10.2.9.9:8000"))
        );
    }

    #[test]
    fn a_query_without_dc_never_asks_another_datacenter() {
        // Unnamed seeds: "cluster" is "the asked node's dc"; a dc2 node would
        // answer with dc2.
        let t = topology(r#"{"seeds": ["10.1.9.9"], "routing": [{"dc": "dc2"}, "cluster"]}"#);
        let mut rng = Rng::new(2);
        let (s, r) = try_start_round(&initial_state(0), 0, T, &t, &mut rng).unwrap();
        let (s, _) = apply_answer(&s, &r, 0, addrs(&DC2), &[], 1);
        let s = apply_failure(&s, &r, 1).0;
        // Its only seed failed: it asks that seed again, not a dc2 node.
        for _ in 0..20 {
            assert_eq!(
                choose_target(&s, &t, 1, &mut rng),
                Some(addr("10.1.9.9:8000"))
            );
        }
    }

    #[test]
    fn before_discovery_the_seeds_are_targets() {
        let mut rng = Rng::new(1);
        let t = plain(&["10.0.0.1", "10.0.0.2"]);
        let target = choose_target(&SharedState::default(), &t, 0, &mut rng).unwrap();
        assert!(t.seeds.contains(&target));
    }

    #[test]
    fn answer_replaces_list_and_reports_the_change() {
        let s = discovered(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let r = round(2, &[(0, "10.0.0.1:8000")]);
        let (next, ev) = apply_answer(
            &s,
            &r,
            0,
            addrs(&["10.0.0.3:8000", "10.0.0.2:8000"]),
            &[],
            0,
        );
        assert_eq!(next.nodes, addrs(&["10.0.0.2:8000", "10.0.0.3:8000"]));
        assert_eq!(next.lists[0].round, 2);
        assert_eq!(
            ev,
            Event::ListChanged {
                query: 0,
                added: addrs(&["10.0.0.3:8000"]),
                removed: addrs(&["10.0.0.1:8000"]),
                total: 2,
                first: false,
                recovered_after: 0,
                quarantined: addrs(&["10.0.0.3:8000"]),
                kept: vec![],
                forgotten: 0,
            }
        );
        assert_eq!(ev.query(), 0);
    }

    #[test]
    fn first_answer_is_marked_first_and_clears_failures() {
        let t = plain(&["10.0.0.1", "10.0.0.2"]);
        let s = apply_failure(&fresh(1), &round(1, &[(0, "10.0.0.1:8000")]), 0).0;
        assert_eq!(routing_nodes(Some(&s), &t), t.seeds);
        let (next, ev) = apply_answer(
            &s,
            &round(2, &[(0, "10.0.0.2:8000")]),
            0,
            t.seeds.clone(),
            &t.seeds,
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
        assert!(next.lists[0].failed.is_empty());
        // (The answer listed the seeds: they were serving, nothing waits.)
        assert_eq!(next.lists[0].consecutive_failures, 0);
        assert!(next.health.is_empty(), "the seeds it lists serve on");
    }

    #[test]
    fn same_answer_is_unchanged() {
        let s = discovered(&["10.0.0.1:8000"]);
        let (next, ev) = apply_answer(
            &s,
            &round(3, &[(0, "10.0.0.1:8000")]),
            0,
            s.nodes.clone(),
            &[],
            9,
        );
        assert_eq!(
            ev,
            Event::ListUnchanged {
                query: 0,
                recovered_after: 0
            }
        );
        assert_eq!(next.lists[0].round, 3);
        assert_eq!(next.last_success_ms, 9);
    }

    #[test]
    fn an_older_round_never_overwrites_a_newer_list_of_its_query() {
        let t = topology(TWO_DCS);
        let s = two_dcs_discovered(&t);
        let (s, _) = apply_answer(
            &s,
            &round(5, &[(2, "10.2.1.1:8000")]),
            2,
            addrs(&DC2),
            &[],
            6,
        );
        // Round 4's answers: stale for query 2, still news for query 0.
        let r4 = round(4, &[(0, "10.1.1.1:8000"), (2, "10.2.1.1:8000")]);
        let (same, ev) = apply_answer(&s, &r4, 2, addrs(&["10.2.7.7:8000"]), &[], 7);
        assert_eq!(ev, Event::Stale { query: 2 });
        assert_eq!(same, s);
        let (same, ev) = apply_failure(&s, &r4, 2);
        assert_eq!(ev, Event::Stale { query: 2 });
        assert_eq!(same, s);
        let (next, ev) = apply_answer(&s, &r4, 0, addrs(&["10.1.1.1:8000"]), &[], 7);
        assert!(matches!(ev, Event::ListChanged { query: 0, .. }), "{ev:?}");
        assert_eq!(next.lists[0].round, 4);
        assert_eq!(next.lists[2].round, 5);
    }

    #[test]
    fn an_empty_answer_empties_its_scope_but_never_everything() {
        let t = topology(TWO_DCS);
        let s = two_dcs_discovered(&t);
        let r = round(
            2,
            &[
                (0, "10.1.1.1:8000"),
                (1, "10.1.1.1:8000"),
                (2, "10.2.1.1:8000"),
            ],
        );
        // The rack has no live node: stored; requests go to the dc scope.
        let (s, ev) = apply_answer(&s, &r, 0, vec![], &[], 10);
        assert!(
            matches!(
                ev,
                Event::ListChanged {
                    query: 0,
                    total: 0,
                    ..
                }
            ),
            "{ev:?}"
        );
        assert_eq!(routing_tiers(Some(&s), &t)[0], []);
        assert_eq!(routing_nodes(Some(&s), &t), dc1());
        // dc1 and dc2 empty too, one after the other: the last one would
        // leave no node at all, so it is refused and counted as a failure.
        let (s, _) = apply_answer(&s, &r, 1, vec![], &[], 10);
        assert_eq!(routing_nodes(Some(&s), &t), addrs(&DC2));
        let (s2, ev) = apply_answer(&s, &r, 2, vec![], &[], 10);
        assert_eq!(
            ev,
            Event::EmptyRefused {
                query: 2,
                consecutive: 1,
                log: true
            }
        );
        assert_eq!(s2.lists[2].nodes, addrs(&DC2));
        assert_eq!(s2.lists[2].failed, addrs(&["10.2.1.1:8000"]));
        assert_eq!(routing_nodes(Some(&s2), &t), addrs(&DC2));
    }

    #[test]
    fn an_empty_first_answer_is_a_failure() {
        // `/localnodes?dc=typo` answers []: nothing to route over yet.
        let t = topology(r#"{"seeds": ["10.0.0.1", "10.0.0.2"], "routing": [{"dc": "dc9"}]}"#);
        let mut rng = Rng::new(4);
        let (s, r) = try_start_round(&initial_state(0), 0, T, &t, &mut rng).unwrap();
        let asked = r.target(0).unwrap();
        let (s, ev) = apply_answer(&s, &r, 0, vec![], &[], 1);
        assert!(
            matches!(ev, Event::EmptyRefused { consecutive: 1, .. }),
            "{ev:?}"
        );
        assert!(!s.discovered());
        // The next round asks the other seed.
        let (_, r2) = try_start_round(&s, 1000, T, &t, &mut rng).unwrap();
        assert_ne!(r2.target(0), Some(asked));
    }

    #[test]
    fn routing_falls_back_rack_dc_cluster_and_returns() {
        let t = topology(TWO_DCS);
        let s = two_dcs_discovered(&t);
        let tiers = routing_tiers(Some(&s), &t);
        let mut all = dc1();
        all.extend(addrs(&DC2));
        assert_eq!(tiers, [addrs(&DC1_RACK1), dc1(), all.clone()]);
        assert!(s.health.is_empty(), "a whole first round is trusted");
        assert_eq!(routing_nodes(Some(&s), &t), addrs(&DC1_RACK1));

        // Rack 1 goes Down: its tier empties, routing falls to dc1 (rack 2).
        let mut down = s.clone();
        for n in DC1_RACK1 {
            down = health::mark_down_now(&down, addr(n), 0, P).unwrap();
        }
        let tiers = routing_tiers(Some(&down), &t);
        assert!(tiers[0].is_empty());
        assert_eq!(tiers[1], addrs(&DC1_RACK2));
        assert_eq!(routing_nodes(Some(&down), &t), addrs(&DC1_RACK2));

        // All of dc1 Down: the cluster tier, i.e. dc2.
        for n in DC1_RACK2 {
            down = health::mark_down_now(&down, addr(n), 0, P).unwrap();
        }
        let tiers = routing_tiers(Some(&down), &t);
        assert!(tiers[0].is_empty() && tiers[1].is_empty());
        assert_eq!(tiers[2], addrs(&DC2));
        assert_eq!(routing_nodes(Some(&down), &t), addrs(&DC2));
        // Rings still hold every listed node: affinity positions do not move.
        assert_eq!(rings(&down, &t), [addrs(&DC1_RACK1), dc1(), all]);

        // Probes pass: dc1 rack 2 first, then rack 1; routing comes back.
        let mut up = down;
        let back = |state: &SharedState, node: &str| {
            let probe = health::Probe {
                node: addr(node),
                state: HealthState::Down,
            };
            let (next, restored) = health::apply_probe(state, &probe, true, 0);
            assert!(restored);
            next
        };
        up = back(&up, DC1_RACK2[0]);
        assert_eq!(routing_nodes(Some(&up), &t), addrs(&DC1_RACK2[..1]));
        for n in DC1_RACK1 {
            up = back(&up, n);
        }
        assert_eq!(routing_nodes(Some(&up), &t), addrs(&DC1_RACK1));
    }

    /// Make before break, at start-up too: the first answers' nodes are
    /// probed before they take requests, and until one of a list's does,
    /// the seeds that were serving keep serving its scope. A datacenter
    /// first answered in a later round is quarantined the same way.
    #[test]
    fn first_answers_are_quarantined_while_the_seeds_serve() {
        let t = topology(TWO_DCS);
        let mut rng = Rng::new(7);
        let (s, r1) = try_start_round(&initial_state(0), 0, T, &t, &mut rng).unwrap();
        let dc1_seed = addr("10.1.9.9:8000");
        let (s, ev) = apply_answer(&s, &r1, 0, addrs(&DC1_RACK1), &t.query_seeds[0], 1);
        let Event::ListChanged {
            first,
            quarantined,
            kept,
            ..
        } = ev
        else {
            panic!("{ev:?}");
        };
        assert!(first);
        assert_eq!(quarantined, addrs(&DC1_RACK1));
        assert_eq!(kept, [dc1_seed]);
        // The rack's scope: the seed until a rack node passes its probe.
        assert_eq!(routing_nodes(Some(&s), &t), [dc1_seed]);
        assert_eq!(
            rings(&s, &t)[0],
            [addrs(&DC1_RACK1), vec![dc1_seed]].concat()
        );
        let (s, _) = apply_answer(&s, &r1, 1, dc1(), &t.query_seeds[1], 1);
        let (s, ev) = apply_failure(&s, &r1, 2);
        assert_eq!(
            ev,
            Event::Failed {
                query: 2,
                consecutive: 1,
                log: true
            }
        );
        assert_eq!(health::counts(&s), (0, 4));
        // One rack node passes: the seed's part is over in the rack and in
        // dc1 (it lists that node too); the other nodes still wait.
        let probe = health::Probe {
            node: addr(DC1_RACK1[1]),
            state: HealthState::Quarantined,
        };
        let (s, back) = health::apply_probe(&s, &probe, true, 2);
        assert!(back);
        assert_eq!(routing_nodes(Some(&s), &t), addrs(&DC1_RACK1[1..]));
        assert!(s.lists.iter().all(|l| l.retiring.is_empty()));
        assert!(!s.nodes.contains(&dc1_seed));
        let s = probed(s);
        assert_eq!(routing_nodes(Some(&s), &t), addrs(&DC1_RACK1));

        let (s, r2) = try_start_round(&s, 1000, T, &t, &mut rng).unwrap();
        let (s, ev) = apply_answer(&s, &r2, 2, addrs(&DC2), &t.query_seeds[2], 1001);
        let Event::ListChanged {
            first,
            recovered_after,
            quarantined,
            ..
        } = ev
        else {
            panic!("{ev:?}");
        };
        assert!(first);
        assert_eq!(recovered_after, 1);
        assert_eq!(quarantined, addrs(&DC2));
        // dc2's seed serves the cluster scope's dc2 part meanwhile.
        assert_eq!(
            routing_tiers(Some(&s), &t)[2],
            [dc1(), vec![addr("10.2.9.9:8000")]].concat()
        );
    }

    /// A first answer that lists the seed it was asked of: the seed is not
    /// new, it serves on; only the others wait for their probe.
    #[test]
    fn a_first_answer_listing_the_seed_keeps_it_serving() {
        let t = plain(&["10.0.0.1"]);
        let (s, ev) = apply_answer(
            &fresh(1),
            &round(1, &[(0, "10.0.0.1:8000")]),
            0,
            addrs(&["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]),
            &t.seeds,
            0,
        );
        assert!(
            matches!(ev, Event::ListChanged { ref quarantined, ref kept, .. }
                if *quarantined == addrs(&["10.0.0.2:8000", "10.0.0.3:8000"]) && kept.is_empty()),
            "{ev:?}"
        );
        assert_eq!(routing_nodes(Some(&s), &t), addrs(&["10.0.0.1:8000"]));
        assert_eq!(
            routing_nodes(Some(&probed(s)), &t),
            addrs(&["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"])
        );
    }

    /// An answer listing only addresses where nothing answers: the nodes it
    /// drops keep serving while the new ones fail their probes, answer
    /// after answer; a later answer listing the old nodes again finds them
    /// serving, and the dead ones are forgotten.
    #[test]
    fn an_answer_of_dead_addresses_leaves_the_old_nodes_serving() {
        let t = plain(&["10.0.0.1"]);
        let old = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"];
        let dead = ["10.9.0.1:8000", "10.9.0.2:8000"];
        let s = discovered(&old);
        let (s, ev) = apply_answer(&s, &round(2, &[(0, old[0])]), 0, addrs(&dead), &[], 10);
        let Event::ListChanged {
            quarantined, kept, ..
        } = &ev
        else {
            panic!("{ev:?}");
        };
        assert_eq!(*quarantined, addrs(&dead));
        assert_eq!(*kept, addrs(&old));
        assert_eq!(routing_nodes(Some(&s), &t), addrs(&old));
        // The same answer again, and failed probes: nothing changes.
        let (s, ev) = apply_answer(&s, &round(3, &[(0, old[1])]), 0, addrs(&dead), &[], 20);
        assert!(matches!(ev, Event::ListUnchanged { .. }), "{ev:?}");
        let (s, probe) = health::try_start_probe(&s, 20, P).unwrap();
        let (s, back) = health::apply_probe(&s, &probe, false, 25);
        assert!(!back);
        assert_eq!(routing_nodes(Some(&s), &t), addrs(&old));
        // Other dead addresses: still the old nodes, not the last answer's.
        let (s, _) = apply_answer(
            &s,
            &round(4, &[(0, old[1])]),
            0,
            addrs(&["10.9.0.3:8000"]),
            &[],
            30,
        );
        assert_eq!(routing_nodes(Some(&s), &t), addrs(&old));
        assert_eq!(s.lists[0].retiring, addrs(&old));
        // The old nodes listed again: they serve, never quarantined, and
        // the dead ones are forgotten.
        let (s, ev) = apply_answer(&s, &round(5, &[(0, old[1])]), 0, addrs(&old), &[], 40);
        assert!(
            matches!(ev, Event::ListChanged { ref quarantined, .. } if quarantined.is_empty()),
            "{ev:?}"
        );
        assert_eq!(routing_nodes(Some(&s), &t), addrs(&old));
        assert!(s.lists[0].retiring.is_empty());
        assert!(s.health.is_empty(), "{:?}", s.health);
    }

    /// An ordinary change: the answer keeps a serving node, so the ones it
    /// drops go at once, and the one it adds waits for its probe.
    #[test]
    fn an_answer_keeping_a_serving_node_drops_the_others_at_once() {
        let t = plain(&["10.0.0.1"]);
        let s = discovered(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let (s, ev) = apply_answer(
            &s,
            &round(2, &[(0, "10.0.0.1:8000")]),
            0,
            addrs(&["10.0.0.2:8000", "10.0.0.3:8000"]),
            &[],
            10,
        );
        assert!(
            matches!(ev, Event::ListChanged { ref kept, .. } if kept.is_empty()),
            "{ev:?}"
        );
        assert_eq!(routing_nodes(Some(&s), &t), addrs(&["10.0.0.2:8000"]));
        assert_eq!(s.nodes, addrs(&["10.0.0.2:8000", "10.0.0.3:8000"]));
    }

    /// The old nodes going Down meanwhile changes nothing about whom the
    /// list keeps: the new nodes are still unverified.
    #[test]
    fn a_list_whose_nodes_never_served_keeps_what_served_before() {
        let t = plain(&["10.0.0.1"]);
        let s = discovered(&["10.0.0.1:8000"]);
        let (s, _) = apply_answer(
            &s,
            &round(2, &[(0, "10.0.0.1:8000")]),
            0,
            addrs(&["10.9.0.1:8000"]),
            &[],
            1,
        );
        let s = health::mark_down_now(&s, addr("10.0.0.1:8000"), 2, P).unwrap();
        assert!(routing_nodes(Some(&s), &t).is_empty());
        let (s, _) = apply_answer(
            &s,
            &round(3, &[(0, "10.0.0.1:8000")]),
            0,
            addrs(&["10.9.0.2:8000"]),
            &[],
            3,
        );
        assert_eq!(s.lists[0].retiring, addrs(&["10.0.0.1:8000"]));
    }

    #[test]
    fn nodes_leave_health_only_when_no_list_has_them() {
        let t = topology(TWO_DCS);
        let s = two_dcs_discovered(&t);
        let node = addr(DC1_RACK1[0]);
        let s = health::mark_down_now(&s, node, 0, P).unwrap();
        let r = round(2, &[(0, DC1_RACK1[1])]);
        // The rack list drops it; the dc1 list still has it.
        let (s, _) = apply_answer(&s, &r, 0, addrs(&DC1_RACK1[1..]), &[], 1);
        assert!(s.health.contains_key(&node));
        assert!(s.nodes.contains(&node));
        // Gone from dc1 as well: no longer known, its history kept aside.
        let mut rest = dc1();
        rest.retain(|n| *n != node);
        let (s, _) = apply_answer(&s, &r, 1, rest, &[], 1);
        assert!(!s.nodes.contains(&node));
        assert!(!health::is_known(&s, &node));
        assert_eq!(health::counts(&s), (0, 0));
        // A node moving from one list to another is not new to the union.
        let (s, ev) = apply_answer(
            &s,
            &round(3, &[(0, DC1_RACK1[1])]),
            0,
            addrs(&DC1_RACK2),
            &[],
            2,
        );
        assert!(
            matches!(ev, Event::ListChanged { ref quarantined, .. } if quarantined.is_empty()),
            "{ev:?}"
        );
        assert_eq!(health::counts(&s), (0, 0));
    }

    #[test]
    fn failures_are_per_query_and_logged_sparsely() {
        let t = topology(TWO_DCS);
        let mut s = two_dcs_discovered(&t);
        let mut logged = 0;
        for i in 0..200u32 {
            let target = NodeAddr::new(
                std::net::IpAddr::from([10, 3, (i / 250) as u8, (i % 250) as u8 + 1]),
                8000,
            );
            let r = Round {
                number: u64::from(i) + 2,
                targets: vec![(2, target), (1, addr(DC1_RACK1[0]))],
            };
            let (next, ev) = apply_failure(&s, &r, 2);
            if let Event::Failed { log: true, .. } = ev {
                logged += 1;
            }
            // dc1 keeps answering: its successes neither hide nor reset dc2's streak.
            let (next, ev) = apply_answer(&next, &r, 1, dc1(), &[], 0);
            assert_eq!(
                ev,
                Event::ListUnchanged {
                    query: 1,
                    recovered_after: 0
                }
            );
            s = next;
        }
        assert_eq!(logged, 4);
        assert_eq!(s.lists[2].failed.len(), MAX_FAILED);
        assert_eq!(s.lists[2].consecutive_failures, 200);
        assert_eq!(s.lists[2].nodes, addrs(&DC2), "failures never touch a list");
        // dc1 answering means no backoff.
        assert_eq!(failure_streak(&s), 0);
        assert_eq!(T.next_interval(&s, 1), 1000);
    }

    #[test]
    fn a_failure_for_a_query_the_round_did_not_ask_changes_nothing() {
        let s = discovered(&["10.0.0.1:8000"]);
        let (next, ev) = apply_failure(&s, &round(2, &[(0, "10.0.0.1:8000")]), 5);
        assert_eq!(ev, Event::Stale { query: 5 });
        assert_eq!(next, s);
        // Nor does any result for a query the state has no list for (it
        // was reset meanwhile), however large the index.
        let r = round(2, &[(usize::MAX, "10.0.0.1:8000")]);
        for (next, ev) in [
            apply_failure(&s, &r, usize::MAX),
            apply_answer(&s, &r, usize::MAX, addrs(&["10.0.0.2:8000"]), &[], 0),
            apply_answer(&SharedState::default(), &r, 0, vec![], &[], 0),
        ] {
            assert!(matches!(ev, Event::Stale { .. }), "{ev:?}");
            assert!(next == s || next == SharedState::default());
        }
    }

    #[test]
    fn routing_uses_seeds_until_discovery_then_the_lists() {
        let t = plain(&["10.0.0.1", "10.0.0.2"]);
        assert_eq!(routing_tiers(None, &t), [t.seeds.as_slice()]);
        // Seeds that failed discovery still take requests: a discovery
        // failure is not a traffic failure.
        let s = apply_failure(&fresh(1), &round(1, &[(0, "10.0.0.1:8000")]), 0).0;
        assert_eq!(routing_tiers(Some(&s), &t), [t.seeds.as_slice()]);
        let s = apply_failure(&s, &round(2, &[(0, "10.0.0.2:8000")]), 0).0;
        assert_eq!(routing_tiers(Some(&s), &t), [t.seeds.as_slice()]);
        // A seed a request could not reach is out.
        let down = health::mark_down_now(&s, addr("10.0.0.1:8000"), 0, P).unwrap();
        assert_eq!(routing_nodes(Some(&down), &t), addrs(&["10.0.0.2:8000"]));
        let (s, _) = apply_answer(
            &s,
            &round(3, &[(0, "10.0.0.2:8000")]),
            0,
            addrs(&["10.0.0.5:8000"]),
            &t.seeds,
            0,
        );
        // Make before break: the seeds serve until the new node passes.
        assert_eq!(routing_nodes(Some(&s), &t), t.seeds);
        let s = probed(s);
        assert_eq!(routing_nodes(Some(&s), &t), addrs(&["10.0.0.5:8000"]));
        // Later failures never empty a discovered list.
        let s = apply_failure(&s, &round(4, &[(0, "10.0.0.5:8000")]), 0).0;
        assert_eq!(routing_nodes(Some(&s), &t), addrs(&["10.0.0.5:8000"]));
    }

    #[test]
    fn before_discovery_the_first_scopes_seeds_are_routed() {
        let t = topology(TWO_DCS);
        assert_eq!(routing_tiers(None, &t), [addrs(&["10.1.9.9:8000"])]);
        let s = fresh(3);
        assert_eq!(routing_tiers(Some(&s), &t), [addrs(&["10.1.9.9:8000"])]);
        assert_eq!(rings(&s, &t), [vec![], vec![], vec![]]);
        // dc1's seed failed discovery: it still takes the requests.
        let s = apply_failure(&s, &round(1, &[(1, "10.1.9.9:8000")]), 1).0;
        assert_eq!(routing_tiers(Some(&s), &t), [addrs(&["10.1.9.9:8000"])]);
        // Its requests failed: every seed left may take them.
        let s = health::mark_down_now(&s, addr("10.1.9.9:8000"), 0, P).unwrap();
        assert_eq!(routing_tiers(Some(&s), &t), [addrs(&["10.2.9.9:8000"])]);
        let s = health::mark_down_now(&s, addr("10.2.9.9:8000"), 0, P).unwrap();
        assert_eq!(routing_tiers(Some(&s), &t), [vec![]]);
    }

    #[test]
    fn unhealthy_nodes_are_not_routed() {
        let t = plain(&["10.0.0.1"]);
        let s = discovered(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        let s = health::mark_down_now(&s, addr("10.0.0.1:8000"), 0, P).unwrap();
        assert_eq!(routing_nodes(Some(&s), &t), addrs(&["10.0.0.2:8000"]));
        let s = health::mark_down_now(&s, addr("10.0.0.2:8000"), 0, P).unwrap();
        assert!(routing_nodes(Some(&s), &t).is_empty());
        assert_eq!(rings(&s, &t), [addrs(&["10.0.0.1:8000", "10.0.0.2:8000"])]);
    }

    #[test]
    fn nodes_joining_later_are_quarantined() {
        let t = plain(&["10.0.0.1"]);
        let s = discovered(&["10.0.0.1:8000"]);
        let r = round(2, &[(0, "10.0.0.1:8000")]);
        let (next, _) = apply_answer(
            &s,
            &r,
            0,
            addrs(&["10.0.0.1:8000", "10.0.0.2:8000"]),
            &[],
            7,
        );
        assert_eq!(routing_nodes(Some(&next), &t), addrs(&["10.0.0.1:8000"]));
        assert_eq!(
            next.health.get(&addr("10.0.0.2:8000")).map(|h| h.state),
            Some(HealthState::Quarantined)
        );
        assert_eq!(next.last_success_ms, 7);
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
    fn failures_back_off_boundedly_when_every_query_fails() {
        let mut s = SharedState {
            last_activity_ms: 0,
            lists: vec![QueryList::default(), QueryList::default()],
            ..SharedState::default()
        };
        let intervals: Vec<u64> = (0..7)
            .map(|k| {
                for l in &mut s.lists {
                    l.consecutive_failures = k;
                }
                T.next_interval(&s, 1)
            })
            .collect();
        assert_eq!(intervals, [1000, 1000, 2000, 4000, 8000, 8000, 8000]);
        let short_idle = Timing {
            interval_ms: 1000,
            idle_interval_ms: 3000,
            idle_after_ms: 60_000,
        };
        assert_eq!(
            short_idle.next_interval(&s, 1),
            3000,
            "never slower than idle"
        );
        s.lists[1].consecutive_failures = 0;
        assert_eq!(T.next_interval(&s, 1), 1000, "one query still answers");
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
    fn unsorted_answers_are_stored_sorted() {
        let s = discovered(&["10.0.0.1:8000"]);
        let (next, _) = apply_answer(
            &s,
            &round(2, &[(0, "10.0.0.1:8000")]),
            0,
            addrs(&["10.0.0.3:8000", "10.0.0.1:8000", "10.0.0.3:8000"]),
            &[],
            0,
        );
        assert_eq!(
            next.lists[0].nodes,
            addrs(&["10.0.0.1:8000", "10.0.0.3:8000"])
        );
    }

    #[test]
    fn a_foreign_state_with_more_lists_is_trimmed_to_the_topology() {
        let t = plain(&["10.0.0.1"]);
        let mut s = discovered(&["10.0.0.1:8000"]);
        s.lists.push(QueryList {
            round: 1,
            nodes: addrs(&["10.0.0.9:8000"]),
            ..QueryList::default()
        });
        s.refresh_nodes();
        s.next_due_ms = 0;
        let (next, _) = try_start_round(&s, 0, T, &t, &mut Rng::new(1)).unwrap();
        assert_eq!(next.lists.len(), 1);
        assert_eq!(next.nodes, addrs(&["10.0.0.1:8000"]));
    }
}
