//! What one VM routes over: per routing scope a round robin of nodes (and,
//! with key route affinity, the scope's ring), each node with the exact
//! bytes handed to Envoy, prepared in advance.
//!
//! The VM's poller rebuilds it on its tick from the shared record
//! ([`Router::rebuild`]); the VM's requests only pick from it and report
//! what they saw ([`Router::observe`]), which the poller takes up and
//! publishes on its next tick. Nothing here calls the host, parses, formats
//! or allocates on the per-request methods ([`Router::pick`],
//! [`Router::observe`], the counters).

use crate::affinity::{self, Key, Mode, NodeHealth, Tables};
use crate::clock::Clock;
use crate::discovery;
use crate::filter_state;
use crate::health;
use crate::hold::{HoldRule, Holds, Timeout};
use crate::load::NodeLoad;
use crate::metrics::RequestCounts;
use crate::model::authority::HostPattern;
use crate::model::config::Balancing;
use crate::model::health::{HealthState, Outcome};
use crate::model::record::SharedState;
use crate::model::NodeAddr;
use crate::picker::RoundRobin;
use crate::rng::Rng;
use crate::topology::Topology;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// One node, with the exact bytes handed to Envoy to route there.
#[derive(Debug)]
pub struct Route {
    pub node: NodeAddr,
    /// `set_envoy_filter_state` arguments naming the node.
    pub args: Vec<u8>,
    /// With `verify_node_san`: the certificate check for this node.
    pub verify: Option<Vec<u8>>,
    /// This VM's requests in flight to the node and its answer latency,
    /// for least-request picking.
    pub load: NodeLoad,
    /// The node's generation as this VM knows it (the shared record's, or
    /// a newer one of its own since it took the node out): a request
    /// carries it, and its outcome counts only if it is still current.
    pub generation: Cell<u32>,
}

impl Route {
    pub fn new(node: NodeAddr, verify_san: bool) -> Route {
        Route {
            args: filter_state::route_to(&node),
            verify: verify_san.then(|| filter_state::verify_san(&node)),
            node,
            load: NodeLoad::default(),
            generation: Cell::new(0),
        }
    }
}

/// A request handed to a node: where, when (0 when the VM does not time
/// requests), and in which of the node's generations.
#[derive(Debug)]
pub struct Sent {
    pub route: Rc<Route>,
    pub at_ns: u64,
    pub generation: u32,
}

/// One scope's discovered nodes in the client libraries' canonical order,
/// healthy or not, for key route affinity: health only decides at the pick.
struct Ring {
    routes: Vec<Rc<Route>>,
    health: Vec<NodeHealth>,
}

/// How the VM's requests are routed, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    pub verify_node_san: bool,
    /// Whether the client libraries spell nodes `https://` (ring order).
    pub https: bool,
    /// Failed connects in a row, seen by this VM, that take a node out.
    pub down_after_failures: u32,
    /// Resets before a response in a row, seen by this VM, that take a
    /// node out.
    pub down_after_resets: u32,
    /// How a node is picked within a scope.
    pub balancing: Balancing,
}

/// A node this VM took out: why, and in which generation of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreachable {
    pub node: NodeAddr,
    pub why: Outcome,
    pub generation: u32,
}

/// One node's failures in a row, seen by this VM since its last answer.
/// Counted apart: a failed connect is a strong sign, a reset a weak one.
#[derive(Debug, Default)]
struct Streak {
    connect_failures: u32,
    resets: u32,
}

pub struct Router {
    settings: Settings,
    /// One round robin per routing scope; a request takes the first that
    /// has a node.
    tiers: Vec<RoundRobin<Rc<Route>>>,
    /// Per scope, for key route affinity (empty when it is off).
    rings: Vec<Ring>,
    /// Every known node, least recently failed first: what requests go to
    /// when no scope has a node ([`discovery::panic_order`]).
    panic: RoundRobin<Rc<Route>>,
    /// Whether the last request was routed in panic: the next panic
    /// episode starts at the head of `panic`, the least recently failed.
    panicking: bool,
    /// The node lists `tiers` was last built from.
    built_from: Vec<Vec<NodeAddr>>,
    /// Every node's route, kept from one rebuild to the next so that its
    /// load (requests in flight, latency) carries over.
    routes: BTreeMap<NodeAddr, Rc<Route>>,
    /// Draws the two candidates of a least-request pick.
    rng: Rng,
    /// The VM's time, which its requests are timed by (shared with the
    /// VM's poller).
    clock: Rc<Clock>,
    /// Where this VM's round robins start: workers start apart.
    start: usize,
    tables: Tables,
    /// What requests did since the VM started; the poller turns the growth
    /// into stats deltas.
    counts: RequestCounts,
    /// Whether this VM holds writes for their body ([`HoldRule`]).
    hold_rule: HoldRule,
    /// Requests paused at their headers whose body has not come yet, and
    /// those the poller sent on without it (and where), by context id.
    holds: Holds<Sent>,
    /// Failures in a row per node, seen by this VM; a node that answers
    /// has none.
    failures: HashMap<NodeAddr, Streak>,
    /// Nodes this VM found unreachable, for the poller to publish as Down:
    /// what ended their streak (a failed connect, or a reset), and the
    /// generation the failed requests were sent in.
    unreachable: Vec<Unreachable>,
    /// Partition keys this VM learned, for the poller to share.
    learned: Vec<(String, String)>,
    refusal_logged: bool,
    /// `hosts`: the authorities whose requests are routed; `None`, every
    /// request.
    hosts: Option<Vec<HostPattern>>,
}

impl Router {
    pub fn new(
        settings: Settings,
        partition_keys: &[(String, String)],
        start: usize,
        clock: Rc<Clock>,
    ) -> Router {
        Router {
            clock,
            settings,
            tiers: Vec::new(),
            rings: Vec::new(),
            panic: RoundRobin::new(Vec::new(), 0),
            panicking: false,
            built_from: Vec::new(),
            routes: BTreeMap::new(),
            // Workers start apart (`start` comes from the VM's seed).
            rng: Rng::new(start as u64 ^ 0x6c62_2e72_6f75_7465),
            start,
            tables: Tables::new(partition_keys),
            counts: RequestCounts::default(),
            hold_rule: HoldRule::default(),
            holds: Holds::default(),
            failures: HashMap::new(),
            unreachable: Vec::new(),
            learned: Vec::new(),
            refusal_logged: false,
            hosts: None,
        }
    }

    /// Routes only requests whose `:authority` one of `hosts` matches
    /// (`None`: every request).
    pub fn with_hosts(mut self, hosts: Option<Vec<HostPattern>>) -> Router {
        self.hosts = hosts;
        self
    }

    /// The `hosts` patterns, when only some requests are routed.
    #[inline]
    pub fn hosts(&self) -> Option<&[HostPattern]> {
        self.hosts.as_deref()
    }

    /// The VM's time in nanoseconds, given the host's clock reads
    /// `host_ns` (see [`Clock`]).
    #[inline]
    pub fn now_ns(&self, host_ns: u64) -> u64 {
        self.clock.read(host_ns)
    }

    #[inline]
    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    /// The next node of the first scope that has one, and `false`; when
    /// none has, the next known node in panic order, and `true`. `None`
    /// only when no node is known at all.
    #[inline]
    pub fn pick(&mut self, now_ns: u64) -> Option<(Rc<Route>, bool)> {
        let Some(tier) = self.tiers.iter_mut().find(|t| !t.is_empty()) else {
            if !self.panicking {
                self.panicking = true;
                self.panic.restart();
            }
            return self.panic.pick().map(|r| (Rc::clone(r), true));
        };
        self.panicking = false;
        let route = match self.settings.balancing {
            Balancing::RoundRobin => tier.pick(),
            Balancing::LeastRequest => {
                let draw = self.rng.next_u64();
                tier.pick_cheaper(draw, |r| r.load.cost(now_ns))
            }
        };
        route.map(|r| (Rc::clone(r), false))
    }

    /// Whether requests are picked by cost, which needs the time they were
    /// sent and answered.
    #[inline]
    pub fn timed(&self) -> bool {
        self.settings.balancing == Balancing::LeastRequest
    }

    /// The key's node: in the first scope whose ring has a usable node, the
    /// first Active node of the key's order, else the first Quarantined one.
    /// `None` leaves the request to [`Router::pick`].
    pub fn pick_for_key(&self, key: &Key) -> Option<Rc<Route>> {
        self.rings.iter().find_map(|ring| {
            let order = affinity::order(key, ring.routes.len())?;
            let i = affinity::choose(&order, |i| {
                ring.health.get(i).copied().unwrap_or(NodeHealth::Down)
            })?;
            ring.routes.get(i).cloned()
        })
    }

    /// This VM's requests in flight to `node`, if the node has a route.
    pub fn in_flight(&self, node: &NodeAddr) -> Option<u32> {
        self.routes.get(node).map(|r| r.load.in_flight())
    }

    /// Every known node in panic order (least recently failed first).
    pub fn panic_nodes(&self) -> Vec<NodeAddr> {
        self.panic.entries().iter().map(|r| r.node).collect()
    }

    /// Every node some scope routes to now, in scope order.
    pub fn nodes(&self) -> Vec<Vec<NodeAddr>> {
        self.tiers
            .iter()
            .map(|t| t.entries().iter().map(|r| r.node).collect())
            .collect()
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Replaces what this VM knows of learned partition keys with the
    /// shared entry every VM writes to.
    pub fn set_learned(&mut self, encoded: Option<&[u8]>) {
        self.tables.set_learned(encoded);
        // Keys learned here and not yet shared stay known until shared.
        for (table, attr) in &self.learned {
            self.tables.remember(table, attr);
        }
    }

    /// Records a partition key a table description named; when it is news
    /// to this VM, it is queued for the poller to share.
    pub fn remember(&mut self, table: &str, attr: &str) {
        if self.tables.remember(table, attr) {
            self.learned.push((table.to_owned(), attr.to_owned()));
        }
    }

    /// The partition keys learned since the last call.
    pub fn take_learned(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.learned)
    }

    /// Keys [`Router::take_learned`] gave that could not be shared yet.
    pub fn retry_learned(&mut self, unshared: Vec<(String, String)>) {
        self.learned.extend(unshared);
    }

    /// The request counters, to count on.
    #[inline]
    pub fn count(&mut self) -> &mut RequestCounts {
        &mut self.counts
    }

    /// What requests did since the VM started.
    pub fn counts(&self) -> RequestCounts {
        self.counts
    }

    /// Whether a write may be held for its body now.
    #[inline]
    pub fn may_hold(&self) -> bool {
        self.hold_rule.holding() && self.settings.mode != Mode::None
    }

    /// Records that request `id` is paused at its headers for its body,
    /// from `now_ms` (the request's own clock); false when the VM holds as
    /// many requests as it may ([`crate::hold::MAX_HELD`]): the request is
    /// then sent on without being held.
    pub fn hold(&mut self, id: u32, now_ms: u64) -> bool {
        if !self.holds.hold(id, now_ms) {
            return false;
        }
        self.counts.affinity_held = self.counts.affinity_held.wrapping_add(1);
        true
    }

    /// Request `id`'s body is coming (or it is gone): no longer waiting.
    pub fn unhold(&mut self, id: u32) {
        self.holds.unhold(id);
    }

    /// A held request's body (or its trailers) came while it was held:
    /// Envoy hands bodies over after a headers pause. True when the VM had
    /// stopped holding writes and holds them again.
    pub fn body_came(&mut self) -> bool {
        self.hold_rule.body_came()
    }

    /// The held requests that have waited `timeout_ms` or longer for their
    /// body, taken off the waiting list.
    pub fn take_overdue(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<u32> {
        self.holds.take_overdue(now_ms, timeout_ms)
    }

    /// Counts a held request sent on because its body did not come in
    /// time, and applies [`HoldRule`].
    pub fn hold_timed_out(&mut self, now_ms: u64) -> Timeout {
        self.counts.hold_timeouts = self.counts.hold_timeouts.wrapping_add(1);
        self.hold_rule.timed_out(now_ms)
    }

    /// Holds writes again if the VM stopped a while ago ([`HoldRule::retry`]).
    pub fn retry_holding(&mut self, now_ms: u64) -> bool {
        self.hold_rule.retry(now_ms)
    }

    /// Records that the poller sent request `id` on.
    pub fn released(&mut self, id: u32, sent: Sent) {
        self.holds.released(id, sent);
    }

    /// Where the poller sent request `id`, if it did (asked once).
    pub fn take_released(&mut self, id: u32) -> Option<Sent> {
        self.holds.take_released(id)
    }

    /// Requests held now: waiting for their body, and sent on but not told.
    pub fn held(&self) -> (usize, usize) {
        self.holds.counts()
    }

    /// Folds the outcome of a request this VM sent into the failure
    /// streaks, unless the request was sent in an older generation of its
    /// node: it went Down since (here or in the record), and what happened
    /// to a request sent before says nothing about it now.
    #[inline]
    pub fn observe_sent(&mut self, sent: &Sent, outcome: Outcome) {
        if sent.generation == sent.route.generation.get() {
            self.observe(&sent.route.node, outcome);
        }
    }

    /// Folds one response from `node` into the failure streaks. A node
    /// whose connects failed `down_after_failures` times in a row, or whose
    /// connections were reset `down_after_resets` times in a row, stops
    /// getting this VM's requests at once, before the other VMs hear of it.
    /// An answer ends both streaks.
    #[inline]
    pub fn observe(&mut self, node: &NodeAddr, outcome: Outcome) {
        let (threshold, streak) = match outcome {
            Outcome::Answered => {
                if !self.failures.is_empty() {
                    self.failures.remove(node);
                }
                return;
            }
            Outcome::ConnectFailed => {
                let streak = self.failures.entry(*node).or_default();
                (
                    self.settings.down_after_failures,
                    &mut streak.connect_failures,
                )
            }
            Outcome::Reset => {
                let streak = self.failures.entry(*node).or_default();
                (self.settings.down_after_resets, &mut streak.resets)
            }
        };
        *streak = streak.saturating_add(1);
        if *streak >= threshold {
            self.failures.remove(node);
            self.withdraw(node, outcome);
        }
    }

    /// Takes `node` out of this VM's routing now: out of every tier, and
    /// Down in every ring. Its requests still in flight belong to the
    /// generation before: their outcomes no longer count.
    fn withdraw(&mut self, node: &NodeAddr, why: Outcome) {
        for tier in &mut self.tiers {
            tier.retain(|r| r.node != *node);
        }
        for ring in &mut self.rings {
            let at = ring.routes.iter().position(|r| r.node == *node);
            if let Some(h) = at.and_then(|i| ring.health.get_mut(i)) {
                *h = NodeHealth::Down;
            }
        }
        let Some(route) = self.routes.get(node) else {
            return;
        };
        let generation = route.generation.get();
        route.generation.set(generation.wrapping_add(1));
        if !self.unreachable.iter().any(|u| u.node == *node) {
            self.unreachable.push(Unreachable {
                node: *node,
                why,
                generation,
            });
        }
    }

    /// The nodes found unreachable since the last call.
    pub fn take_unreachable(&mut self) -> Vec<Unreachable> {
        std::mem::take(&mut self.unreachable)
    }

    /// Whether Envoy's refusal of a hand-off is the first one (worth a log
    /// line; the next ones are not).
    pub fn first_refusal(&mut self) -> bool {
        !std::mem::replace(&mut self.refusal_logged, true)
    }

    /// Rebuilds the routes from the shared record (`None`: none yet, the
    /// seeds) when what they would route over changed. Nodes in `withheld`
    /// (this VM saw them fail; the record does not say so yet) stay out.
    pub fn rebuild(
        &mut self,
        state: Option<&SharedState>,
        topology: &Topology,
        withheld: &[NodeAddr],
    ) {
        let mut tiers = discovery::routing_tiers(state, topology);
        for tier in &mut tiers {
            tier.retain(|n| !withheld.contains(n));
        }
        let panic = discovery::panic_order(state, topology, withheld);
        // Each route takes its node's generation from the record, except
        // that of a node this VM has taken out and the record does not yet
        // say so: its own newer one stands until then. (A route made below
        // is new: it takes it there.)
        if let Some(state) = state {
            for (node, route) in &self.routes {
                if !withheld.contains(node) {
                    route.generation.set(health::generation(state, node));
                }
            }
        }
        let affinity_on = self.settings.mode != Mode::None;
        // Unchanged, and no node withdrawn since: nothing to rebuild.
        // Affinity rings carry health, so they are rebuilt every time.
        let unchanged =
            tiers == self.built_from && tiers == self.nodes() && panic == self.panic_nodes();
        if !affinity_on && !self.tiers.is_empty() && unchanged {
            return;
        }
        // One route per node, shared by every scope and ring naming it,
        // and kept across rebuilds: it carries the node's load.
        let verify = self.settings.verify_node_san;
        let mut kept = std::mem::take(&mut self.routes);
        let mut made: BTreeMap<NodeAddr, Rc<Route>> = BTreeMap::new();
        let generation = |n: &NodeAddr| state.map_or(0, |s| health::generation(s, n));
        let mut route = |n: &NodeAddr| {
            Rc::clone(made.entry(*n).or_insert_with(|| {
                kept.remove(n).unwrap_or_else(|| {
                    let route = Route::new(*n, verify);
                    route.generation.set(generation(n));
                    Rc::new(route)
                })
            }))
        };
        let mut pickers = std::mem::take(&mut self.tiers);
        pickers.resize_with(tiers.len(), || RoundRobin::new(Vec::new(), self.start));
        for (picker, nodes) in pickers.iter_mut().zip(&tiers) {
            picker.replace(nodes.iter().map(&mut route).collect());
        }
        self.tiers = pickers;
        self.panic.replace(panic.iter().map(&mut route).collect());
        self.rings = match state {
            Some(state) if affinity_on => discovery::rings(state, topology)
                .iter()
                .map(|nodes| {
                    let ring = affinity::ring(nodes, self.settings.https);
                    Ring {
                        health: ring
                            .iter()
                            .map(|n| ring_health(state, withheld, n))
                            .collect(),
                        routes: ring.iter().map(&mut route).collect(),
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        // A route nothing names any more (no scope, ring or panic order) is
        // one whose node left the lists: its requests still in flight
        // belong to the past, and a later route to the node starts afresh.
        for orphan in kept.values() {
            orphan
                .generation
                .set(orphan.generation.get().wrapping_add(1));
        }
        // Failure streaks go with their node: one that comes back starts
        // afresh, and streaks of nodes that come and go do not pile up.
        self.failures.retain(|n, _| made.contains_key(n));
        self.routes = made;
        self.built_from = tiers;
    }
}

fn ring_health(state: &SharedState, withheld: &[NodeAddr], node: &NodeAddr) -> NodeHealth {
    if withheld.contains(node) {
        return NodeHealth::Down;
    }
    match state.health.get(node).map(|h| h.state) {
        None | Some(HealthState::Active) => NodeHealth::Active,
        Some(HealthState::Quarantined) => NodeHealth::Quarantined,
        Some(HealthState::Down) => NodeHealth::Down,
    }
}
