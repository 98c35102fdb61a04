//! What one VM routes over: per routing scope a round robin of nodes (and,
//! with key route affinity, the scope's ring), each node with the exact
//! bytes handed to Envoy, prepared in advance.
//!
//! The VM's poller rebuilds them on its tick from the shared record
//! ([`Routes::rebuild`]); the VM's requests only pick from them
//! ([`Routes::pick`], [`Routes::pick_for_key`]), and a node whose failures
//! this VM saw is taken out at once ([`Routes::withdraw`]). What the
//! requests tell the poller goes through [`crate::mailbox`] instead. Nothing
//! here calls the host, parses, formats or allocates on the per-request
//! methods.

use crate::affinity::{self, KeyHashes, Mode, NodeHealth};
use crate::clock::Clock;
use crate::discovery;
use crate::filter_state;
use crate::health;
use crate::load::NodeLoad;
use crate::model::authority::HostPattern;
use crate::model::config::Balancing;
use crate::model::health::HealthState;
use crate::model::record::SharedState;
use crate::model::NodeAddr;
use crate::picker::RoundRobin;
use crate::rng::Rng;
use crate::topology::Topology;
use std::cell::Cell;
use std::collections::BTreeMap;
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
    /// How a node is picked within a scope.
    pub balancing: Balancing,
}

/// The nodes one VM's requests go to, kept apart from what the requests
/// tell the poller ([`crate::mailbox::Mailbox`]): the poller alone rebuilds
/// them, the requests only pick, so the per-request path reads prepared
/// routes and never the shared record.
pub struct Routes {
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
    /// `hosts`: the authorities whose requests are routed; `None`, every
    /// request.
    hosts: Option<Vec<HostPattern>>,
}

impl Routes {
    pub fn new(settings: Settings, start: usize, clock: Rc<Clock>) -> Routes {
        Routes {
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
            hosts: None,
        }
    }

    /// Routes only requests whose `:authority` one of `hosts` matches
    /// (`None`: every request).
    pub fn with_hosts(mut self, hosts: Option<Vec<HostPattern>>) -> Routes {
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
    /// `None` leaves the request to [`Routes::pick`].
    pub fn pick_for_key(&self, key: &KeyHashes) -> Option<Rc<Route>> {
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

    /// Whether `node` has a route (some scope, ring or the panic order
    /// names it).
    pub fn has_route(&self, node: &NodeAddr) -> bool {
        self.routes.contains_key(node)
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

    /// Takes `node` out of this VM's routing now: out of every tier, and
    /// Down in every ring. Its requests still in flight belong to the
    /// generation before: their outcomes no longer count. Returns that
    /// generation, or `None` when the node has no route.
    pub fn withdraw(&mut self, node: &NodeAddr) -> Option<u32> {
        for tier in &mut self.tiers {
            tier.retain(|r| r.node != *node);
        }
        for ring in &mut self.rings {
            let at = ring.routes.iter().position(|r| r.node == *node);
            if let Some(h) = at.and_then(|i| ring.health.get_mut(i)) {
                *h = NodeHealth::Down;
            }
        }
        let route = self.routes.get(node)?;
        let generation = route.generation.get();
        route.generation.set(generation.wrapping_add(1));
        Some(generation)
    }

    /// Rebuilds the routes from the shared record (`None`: none yet, the
    /// seeds) when what they would route over changed. Nodes in `withheld`
    /// (this VM saw them fail; the record does not say so yet) stay out.
    /// False when nothing changed and nothing was rebuilt.
    pub fn rebuild(
        &mut self,
        state: Option<&SharedState>,
        topology: &Topology,
        withheld: &[NodeAddr],
    ) -> bool {
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
            return false;
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
        self.routes = made;
        self.built_from = tiers;
        true
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
