//! One root context per VM: configuration, the tick, the callouts
//! (`/localnodes` and health probes), and the VM's copy of the routes.
//!
//! Every VM ticks. On each tick it reads the shared state once, publishes
//! what its requests saw (unreachable nodes, activity), rebuilds its routes if
//! the state changed, and tries to lease a due discovery round or probe; the
//! VM that wins makes the call and folds the answer back. All decisions are
//! in `alternator_lb_core`; this file only performs them.

use crate::abi::{self, log, Status};
use crate::http::Http;
use crate::learned;
use crate::metrics::{Gauges, Metrics};
use crate::routes::{Ring, Route, Routes};
use alternator_lb_core::affinity::{self, Mode, NodeHealth};
use alternator_lb_core::discovery::{self, Event, Round, Timing};
use alternator_lb_core::health::{self, Probe};
use alternator_lb_core::localnodes;
use alternator_lb_core::log_throttle::REMINDER_EVERY;
use alternator_lb_core::model::config::Config;
use alternator_lb_core::model::health::HealthState;
use alternator_lb_core::model::record::SharedState;
use alternator_lb_core::model::NodeAddr;
use alternator_lb_core::model::Quoted;
use alternator_lb_core::rng::Rng;
use alternator_lb_core::shared_state;
use alternator_lb_core::topology::Topology;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Attempts at a compare-and-swap update before giving up for this tick.
const CAS_ATTEMPTS: usize = 8;

pub struct Root {
    routes: Rc<Routes>,
    active: Option<Active>,
}

/// A call this VM has made and awaits: one question of a discovery round
/// (the round, and which of the topology's queries), or a probe.
#[derive(Clone)]
enum Callout {
    Discovery(Round, usize),
    Probe(Probe),
}

/// State of a configured VM.
struct Active {
    config: Config,
    timing: Timing,
    key: String,
    topology: Topology,
    /// Shared-data key of the learned partition keys, and the CAS last read.
    learned_key: String,
    learned_cas: Option<u32>,
    rng: Rng,
    metrics: Metrics,
    /// The tiers `routes` was last built from, to rebuild only on change.
    routed: Vec<Vec<NodeAddr>>,
    /// CAS of the shared state last seen, to skip unchanged ticks.
    last_cas: Option<u32>,
    in_flight: BTreeMap<u32, Callout>,
    /// Nodes this VM saw fail and has not yet published as Down.
    pending_down: Vec<NodeAddr>,
    /// Requests routed when activity was last checked.
    seen_requests: u64,
    /// Last warning about dropped `/localnodes` entries, to not repeat it.
    last_dropped: Vec<String>,
    corrupt_logged: bool,
}

impl Root {
    pub fn new() -> Self {
        Root {
            routes: Rc::new(Routes::new()),
            active: None,
        }
    }

    /// Wall-clock milliseconds: the one clock every VM of the process
    /// shares, which is what the discovery lease in shared data is written
    /// in.
    fn now_ms() -> u64 {
        abi::now_nanos() / 1_000_000
    }

    fn dispatch(&mut self, active: &mut Active, call: Callout) {
        let (node, path) = match &call {
            Callout::Discovery(round, query) => (
                round.target(*query),
                active.topology.queries.get(*query).map(|q| q.path()),
            ),
            // Alternator's health check: `GET /` answers 200 without auth.
            Callout::Probe(probe) => (Some(probe.node), Some("/".to_string())),
        };
        let (Some(node), Some(path)) = (node, path) else {
            return;
        };
        let auth = node.authority();
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", auth.as_str()),
            // Read by the discovery cluster (ORIGINAL_DST, use_http_header).
            ("x-envoy-original-dst-host", auth.as_str()),
            ("user-agent", "alternator-lb"),
        ];
        let timeout = u32::try_from(active.config.discovery_timeout_ms).unwrap_or(u32::MAX);
        match abi::http_call(&active.config.discovery_cluster, &headers, timeout) {
            Ok(token) => {
                active.in_flight.insert(token, call);
            }
            Err(status) => {
                let why = format!(
                    "could not call cluster {} ({status}); is it defined in Envoy's config?",
                    Quoted(&active.config.discovery_cluster)
                );
                let now = Self::now_ms();
                match call {
                    Callout::Discovery(round, query) => {
                        active.finish_round(&self.routes, &round, query, Err(why), now)
                    }
                    Callout::Probe(probe) => active.finish_probe(&self.routes, probe, Err(why)),
                }
            }
        }
    }
}

/// The answer to a callout (`proxy_on_http_call_response`, from
/// [`crate::entry`]).
impl Root {
    pub fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize) {
        let Some(mut active) = self.active.take() else {
            return;
        };
        if let Some(call) = active.in_flight.remove(&token_id) {
            let now = Self::now_ms();
            match call {
                Callout::Discovery(round, query) => {
                    let answer = read_answer(&active.config, num_headers, body_size);
                    active.finish_round(&self.routes, &round, query, answer, now);
                }
                Callout::Probe(probe) => {
                    let result = match call_status(num_headers) {
                        Ok(200) => Ok(()),
                        Ok(status) => Err(format!("answered HTTP {status}")),
                        Err(e) => Err(e),
                    };
                    active.finish_probe(&self.routes, probe, result);
                }
            }
        }
        self.active = Some(active);
    }
}

/// The HTTP status of the callout's answer, or why there is none.
fn call_status(num_headers: usize) -> Result<u32, String> {
    if num_headers == 0 {
        return Err("no answer (connection failed or reset, or timed out)".to_string());
    }
    let status = abi::header(abi::CALL_RESPONSE_HEADERS, ":status");
    let status = String::from_utf8_lossy(&status);
    status
        .parse()
        .map_err(|_| format!("answered with status {}", Quoted(&status)))
}

/// Reads a `/localnodes` answer: the usable node list, or why there is none.
fn read_answer(
    config: &Config,
    num_headers: usize,
    body_size: usize,
) -> Result<localnodes::Answer, String> {
    match call_status(num_headers)? {
        200 => {}
        status => return Err(format!("answered HTTP {status}")),
    }
    if body_size > localnodes::MAX_BODY_BYTES {
        return Err(localnodes::AnswerError::TooLarge(body_size).to_string());
    }
    let body = abi::buffer(abi::CALL_RESPONSE_BODY, body_size);
    localnodes::parse(&body, config.port, &config.allowed_cidrs).map_err(|e| e.to_string())
}

/// The VM's life: configuration, ticks, and a context per request (the
/// rest of what [`crate::entry`] hands to the root context).
impl Root {
    pub fn on_configure(&mut self) -> bool {
        let bytes = abi::buffer(abi::PLUGIN_CONFIGURATION, usize::MAX);
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log!(Error, "{e}");
                return false;
            }
        };
        // A seed that differs per VM. proxy-wasm offers no randomness and the
        // module imports nothing but the proxy-wasm ABI (no WASI
        // `random_get`), so it is the host clock's nanoseconds now: Envoy
        // configures its worker VMs one after another, so no two read the
        // same instant. The seed only varies starting points (round-robin
        // offset, which node to ask first); nothing depends on it being
        // secret.
        let mut rng = Rng::new(abi::now_nanos());
        let key = shared_state::key_for(&config.discovery_identity());
        let learned_key = learned::key_for(&key);
        self.routes.configure(
            rng.below(usize::MAX),
            config.down_after_failures,
            config.key_route_affinity,
            &config.partition_keys,
            learned_key.clone(),
        );
        let tick = (config.refresh_interval_ms / 10).clamp(20, 1000);
        let tick = u32::try_from(tick).unwrap_or(1000);
        if let Err(status) = abi::set_tick_period(tick) {
            log!(Error, "cannot set the tick period: {status}");
            return false;
        }
        let mut active = Active {
            key,
            topology: Topology::from_config(&config),
            learned_key,
            learned_cas: None,
            timing: Timing {
                interval_ms: config.refresh_interval_ms,
                idle_interval_ms: config.idle_refresh_interval_ms,
                idle_after_ms: config.idle_after_ms,
            },
            config,
            rng,
            metrics: Metrics::define(),
            routed: Vec::new(),
            last_cas: None,
            in_flight: BTreeMap::new(),
            pending_down: Vec::new(),
            seen_requests: 0,
            last_dropped: Vec::new(),
            corrupt_logged: false,
        };
        // Route over the seeds (or the list other VMs already share) at once,
        // not one tick later.
        let shared = active.read_state();
        active.sync_routes(&self.routes, shared.as_ref().map(|(s, _)| s), true);
        self.active = Some(active);
        true
    }

    pub fn on_tick(&mut self) {
        let now = Self::now_ms();
        let Some(mut active) = self.active.take() else {
            return;
        };
        for call in active.tick(&self.routes, now) {
            self.dispatch(&mut active, call);
        }
        self.active = Some(active);
    }

    /// A request's context, routing over this VM's routes.
    pub fn new_http(&self) -> Http {
        Http::new(Rc::clone(&self.routes))
    }
}

impl Active {
    /// Reads and decodes the shared state; `None` when absent or damaged.
    fn read_state(&mut self) -> Option<(SharedState, u32)> {
        let (bytes, cas) = match abi::shared_data(&self.key) {
            Ok(v) => v,
            Err(status) => {
                log!(Warn, "cannot read shared data: {status}");
                return None;
            }
        };
        let (bytes, cas) = (bytes?, cas?);
        match SharedState::decode(&bytes) {
            Ok(state) => Some((state, cas)),
            Err(e) => {
                if !self.corrupt_logged {
                    self.corrupt_logged = true;
                    log!(Warn, "{e}; starting discovery state afresh");
                }
                // Replace it, but only if nobody else already did.
                let _ = set_shared(&self.key, &SharedState::default(), Some(cas));
                None
            }
        }
    }

    /// One tick: publish what this VM's requests saw, refresh its routes,
    /// and lease a due discovery round or probe.
    fn tick(&mut self, routes: &Routes, now_ms: u64) -> Vec<Callout> {
        if routes.mode() != Mode::None {
            self.read_learned(routes);
        }
        let Some((mut state, mut cas)) = self.read_state() else {
            // First VM to tick creates the state. Creation cannot be a
            // compare-and-swap in proxy-wasm; racing creators write nearly
            // identical values, and no VM takes a lease in the tick it
            // created the state in, so the race cannot produce two polls.
            let _ = set_shared(&self.key, &discovery::initial_state(now_ms), None);
            return Vec::new();
        };
        if let Some((published, new_cas)) = self.publish_observations(routes, &state, cas, now_ms) {
            state = published;
            cas = new_cas;
        }
        if self.last_cas != Some(cas) {
            self.last_cas = Some(cas);
            self.sync_routes(routes, Some(&state), false);
        }
        self.update_metrics(routes, &state, now_ms);

        let lease =
            discovery::try_start_round(&state, now_ms, self.timing, &self.topology, &mut self.rng)
                .map(|(next, round)| {
                    let calls = round
                        .targets
                        .iter()
                        .map(|(query, _)| Callout::Discovery(round.clone(), *query))
                        .collect();
                    (next, calls)
                })
                .or_else(|| {
                    health::try_start_probe(&state, now_ms, self.config.probe_periods)
                        .map(|(next, probe)| (next, vec![Callout::Probe(probe)]))
                });
        let Some((next, calls)) = lease else {
            return Vec::new();
        };
        // Losing the swap means another VM took this round or probe.
        match set_shared(&self.key, &next, Some(cas)) {
            Ok(()) => calls,
            Err(_) => Vec::new(),
        }
    }

    /// Takes up the partition keys other VMs learned, when the entry changed.
    fn read_learned(&mut self, routes: &Routes) {
        let Some((bytes, cas)) = learned::read(&self.learned_key) else {
            return;
        };
        if self.learned_cas != Some(cas) {
            self.learned_cas = Some(cas);
            routes.set_learned(bytes.as_deref());
        }
    }

    /// Publishes nodes this VM found unreachable (as Down) and that requests
    /// flow (for the refresh rhythm). Returns the written state and its CAS.
    fn publish_observations(
        &mut self,
        routes: &Routes,
        state: &SharedState,
        cas: u32,
        now_ms: u64,
    ) -> Option<(SharedState, u32)> {
        self.absorb_unreachable(routes);
        let requests = routes.counts().0;
        let mut next = state.clone();
        let mut downs = Vec::new();
        for node in &self.pending_down {
            if let Some(marked) = health::mark_down(&next, *node, now_ms, self.config.probe_periods)
            {
                next = marked;
                downs.push(*node);
            }
        }
        if requests != self.seen_requests {
            if let Some(noted) = self.timing.note_activity(&next, now_ms) {
                next = noted;
            }
        }
        if next == *state {
            self.pending_down.clear();
            self.seen_requests = requests;
            return None;
        }
        set_shared(&self.key, &next, Some(cas)).ok()?;
        self.pending_down.clear();
        self.seen_requests = requests;
        for node in &downs {
            self.metrics.marked_down();
            log!(
                Warn,
                "node {node} marked Down: connection failed or reset before any response; it gets no requests \
                 until /localnodes lists it and a probe succeeds (probed every {} ms)",
                self.config.probe_periods.down_ms
            );
        }
        let (_, new_cas) = self.read_state()?;
        Some((next, new_cas))
    }

    /// Takes over the nodes the requests found unreachable since last time.
    fn absorb_unreachable(&mut self, routes: &Routes) {
        for node in routes.take_unreachable() {
            if !self.pending_down.contains(&node) {
                self.pending_down.push(node);
            }
        }
    }

    fn update_metrics(&mut self, routes: &Routes, state: &SharedState, now_ms: u64) {
        self.metrics.flush_requests(routes.counts());
        let (down, quarantined) = health::counts(state);
        let known = if state.discovered() {
            state.nodes.len()
        } else {
            self.config.seeds.len()
        };
        let list_age_ms = if state.last_success_ms > 0 {
            now_ms.saturating_sub(state.last_success_ms)
        } else {
            0
        };
        self.metrics.set_gauges(&Gauges {
            known: known as u64,
            down: down as u64,
            quarantined: quarantined as u64,
            list_age_ms,
        });
    }

    /// Applies `update` to the shared state by compare-and-swap, retried;
    /// returns the state written, or `None` if it kept changing under us.
    fn update_shared<E>(
        &mut self,
        mut update: impl FnMut(&SharedState) -> (SharedState, E),
    ) -> Option<(SharedState, E)> {
        for _ in 0..CAS_ATTEMPTS {
            let (state, cas) = match self.read_state() {
                Some((state, cas)) => (state, Some(cas)),
                None => (SharedState::default(), None),
            };
            let (next, extra) = update(&state);
            if set_shared(&self.key, &next, cas).is_ok() {
                return Some((next, extra));
            }
        }
        log!(Warn, "shared state kept changing; an update was dropped");
        None
    }

    /// Folds a discovery round's result into the shared state and logs what
    /// changed, once, from the VM that ran the round.
    fn finish_round(
        &mut self,
        routes: &Routes,
        round: &Round,
        query: usize,
        answer: Result<localnodes::Answer, String>,
        now_ms: u64,
    ) {
        let target = round
            .target(query)
            .map_or_else(String::new, |t| t.to_string());
        self.metrics.discovery(answer.is_ok());
        if let Ok(answer) = &answer {
            if !answer.dropped.is_empty() && answer.dropped != self.last_dropped {
                log!(
                    Warn,
                    "/localnodes from {target} had {} unusable entries, ignored: {}",
                    answer.dropped.len(),
                    answer.dropped.join("; ")
                );
                self.last_dropped = answer.dropped.clone();
            }
        }
        let updated = self.update_shared(|state| match &answer {
            Ok(a) => discovery::apply_answer(state, round, query, a.nodes.clone(), now_ms),
            Err(_) => discovery::apply_failure(state, round, query),
        });
        if let Some((state, event)) = updated {
            self.log_event(&target, &state, &event, answer.as_ref().err());
            self.sync_routes(routes, Some(&state), false);
        }
    }

    /// Folds a probe result in; a node that passes takes requests again.
    fn finish_probe(&mut self, routes: &Routes, probe: Probe, result: Result<(), String>) {
        self.metrics.probe(result.is_ok());
        let ok = result.is_ok();
        let Some((state, back)) =
            self.update_shared(|state| health::apply_probe(state, &probe, ok))
        else {
            return;
        };
        if back {
            match probe.state {
                HealthState::Down => log!(
                    Info,
                    "node {} is back: probe succeeded; routing to it again",
                    probe.node
                ),
                HealthState::Quarantined => {
                    log!(Info, "node {} passed its probe; routing to it", probe.node)
                }
            }
        } else if let Err(why) = result {
            log!(
                Debug,
                "probe of {} node {}: {why}",
                probe.state.name(),
                probe.node
            );
        }
        self.sync_routes(routes, Some(&state), false);
    }

    fn log_event(&self, target: &str, state: &SharedState, event: &Event, error: Option<&String>) {
        let list = |v: &[NodeAddr]| {
            v.iter()
                .map(NodeAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let query = self
            .topology
            .queries
            .get(event.query())
            .map_or_else(String::new, |q| q.to_string());
        let nodes_of = |q: usize| state.list(q).map_or(&[][..], |l| l.nodes.as_slice());
        match event {
            Event::ListChanged {
                query: q,
                added,
                removed,
                total,
                first,
                recovered_after,
                quarantined,
            } => {
                if *recovered_after > 0 {
                    log!(
                        Info,
                        "discovery recovered after {recovered_after} failed attempts ({query})"
                    );
                }
                if *first {
                    log!(
                        Info,
                        "discovered {total} nodes from {target} ({query}): {}",
                        list(nodes_of(*q))
                    );
                } else {
                    log!(
                        Info,
                        "node list changed, now {total} nodes; added [{}], removed [{}]{} ({query})",
                        list(added),
                        list(removed),
                        if quarantined.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "; quarantined until a probe succeeds: [{}]",
                                list(quarantined)
                            )
                        }
                    );
                }
            }
            Event::ListUnchanged {
                recovered_after, ..
            } if *recovered_after > 0 => {
                log!(Info, "discovery recovered after {recovered_after} failed attempts ({query}); node list unchanged");
            }
            Event::Failed {
                consecutive,
                log: true,
                ..
            }
            | Event::EmptyRefused {
                consecutive,
                log: true,
                ..
            } => {
                let kept = if state.discovered() {
                    format!("keeping the last good list of {} nodes", state.nodes.len())
                } else {
                    "no node discovered yet".to_string()
                };
                let why = if matches!(event, Event::EmptyRefused { .. }) {
                    "it listed no node, and no other scope lists any"
                } else {
                    error.map_or("unknown error", String::as_str)
                };
                log!(
                    Warn,
                    "/localnodes from {target} ({query}) failed: {why}; {kept} ({consecutive} failures in a row; \
                     further failures are logged every {REMINDER_EVERY} attempts)",
                );
            }
            _ => {}
        }
    }

    /// Rebuilds this VM's routes when what it routes over changed. Nodes
    /// this VM saw fail stay out until the shared state agrees.
    fn sync_routes(&mut self, routes: &Routes, state: Option<&SharedState>, force: bool) {
        self.absorb_unreachable(routes);
        let mut tiers = discovery::routing_tiers(state, &self.topology);
        for tier in &mut tiers {
            tier.retain(|n| !self.pending_down.contains(n));
        }
        let affinity_on = self.config.key_route_affinity != Mode::None;
        if !force && !affinity_on && tiers == self.routed && tiers == routes.nodes() {
            return;
        }
        // One route per node, shared by every scope and ring naming it.
        let verify = self.config.verify_node_san;
        let mut made: BTreeMap<NodeAddr, Rc<Route>> = BTreeMap::new();
        let mut route = |n: &NodeAddr| {
            if let Some(known) = made.get(n) {
                return Rc::clone(known);
            }
            let fresh = Route::new(*n, verify);
            made.insert(*n, Rc::clone(&fresh));
            fresh
        };
        let tier_routes = tiers
            .iter()
            .map(|t| t.iter().map(&mut route).collect())
            .collect();
        let rings = match state {
            Some(state) if affinity_on => discovery::rings(state, &self.topology)
                .iter()
                .map(|nodes| {
                    let ring = affinity::ring(nodes, self.config.https);
                    Ring {
                        health: ring.iter().map(|n| self.node_health(state, n)).collect(),
                        routes: ring.iter().map(&mut route).collect(),
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        routes.replace(tier_routes, rings);
        self.routed = tiers;
    }

    fn node_health(&self, state: &SharedState, node: &NodeAddr) -> NodeHealth {
        if self.pending_down.contains(node) {
            return NodeHealth::Down;
        }
        match state.health.get(node).map(|h| h.state) {
            None => NodeHealth::Active,
            Some(HealthState::Quarantined) => NodeHealth::Quarantined,
            Some(HealthState::Down) => NodeHealth::Down,
        }
    }
}

fn set_shared(key: &str, state: &SharedState, cas: Option<u32>) -> Result<(), Status> {
    abi::set_shared_data(key, &state.encode(), cas)
}
