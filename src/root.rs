//! One root context per VM: configuration, the tick, the callouts
//! (`/localnodes` and health probes), and the VM's copy of the routes.
//!
//! Every VM ticks. On each tick it reads the shared state once, publishes
//! what its requests saw (unreachable nodes, activity), rebuilds its routes if
//! the state changed, and tries to lease a due discovery round or probe; the
//! VM that wins makes the call and folds the answer back. All decisions are
//! in `alternator_lb_core`; this file only performs them.

use crate::host;
use crate::http::Http;
use crate::metrics::{Gauges, Metrics};
use crate::routes::{Route, Routes};
use alternator_lb_core::address::NodeAddr;
use alternator_lb_core::config::Config;
use alternator_lb_core::discovery::{self, Event, Round, Timing};
use alternator_lb_core::health::{self, HealthState, Probe};
use alternator_lb_core::json::Quoted;
use alternator_lb_core::localnodes;
use alternator_lb_core::log_throttle::REMINDER_EVERY;
use alternator_lb_core::rng::Rng;
use alternator_lb_core::shared_state::{self, SharedState};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, Status};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// Attempts at a compare-and-swap update before giving up for this tick.
const CAS_ATTEMPTS: usize = 8;

pub struct Root {
    routes: Rc<Routes>,
    active: Option<Active>,
}

/// A call this VM has made and awaits.
#[derive(Clone, Copy)]
enum Callout {
    Discovery(Round),
    Probe(Probe),
}

/// State of a configured VM.
struct Active {
    config: Config,
    timing: Timing,
    key: String,
    localnodes_path: String,
    rng: Rng,
    metrics: Metrics,
    /// The list `routes` was last built from, to rebuild only on change.
    routed: Vec<NodeAddr>,
    /// CAS of the shared state last seen, to skip unchanged ticks.
    last_cas: Option<u32>,
    in_flight: HashMap<u32, Callout>,
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

    fn now_ms() -> u64 {
        hostcalls::get_current_time().map_or(0, host::millis)
    }

    fn dispatch(&mut self, active: &mut Active, call: Callout) {
        let (node, path) = match call {
            Callout::Discovery(round) => (round.target, active.localnodes_path.as_str()),
            // Alternator's health check: `GET /` answers 200 without auth.
            Callout::Probe(probe) => (probe.node, "/"),
        };
        let auth = node.authority();
        let headers = vec![
            (":method", "GET"),
            (":path", path),
            (":authority", auth.as_str()),
            // Read by the discovery cluster (ORIGINAL_DST, use_http_header).
            ("x-envoy-original-dst-host", auth.as_str()),
            ("user-agent", "alternator-lb"),
        ];
        let timeout = Duration::from_millis(active.config.discovery_timeout_ms);
        match self.dispatch_http_call(
            &active.config.discovery_cluster,
            headers,
            None,
            vec![],
            timeout,
        ) {
            Ok(token) => {
                active.in_flight.insert(token, call);
            }
            Err(status) => {
                let why = format!(
                    "could not call cluster {} ({status:?}); is it defined in Envoy's config?",
                    Quoted(&active.config.discovery_cluster)
                );
                let now = Self::now_ms();
                match call {
                    Callout::Discovery(round) => {
                        active.finish_round(&self.routes, round, Err(why), now)
                    }
                    Callout::Probe(probe) => active.finish_probe(&self.routes, probe, Err(why)),
                }
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(mut active) = self.active.take() else {
            return;
        };
        if let Some(call) = active.in_flight.remove(&token_id) {
            let now = Self::now_ms();
            match call {
                Callout::Discovery(round) => {
                    let answer = read_answer(&active.config, num_headers, body_size);
                    active.finish_round(&self.routes, round, answer, now);
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
    let status = hostcalls::get_map_value(
        proxy_wasm::types::MapType::HttpCallResponseHeaders,
        ":status",
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    status
        .parse()
        .map_err(|_| format!("answered with status {status:?}"))
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
    let body = hostcalls::get_buffer(
        proxy_wasm::types::BufferType::HttpCallResponseBody,
        0,
        body_size,
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    localnodes::parse(&body, config.port, &config.allowed_cidrs).map_err(|e| e.to_string())
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log::error!("{e}");
                return false;
            }
        };
        let now = hostcalls::get_current_time().unwrap_or(std::time::UNIX_EPOCH);
        let mut rng = Rng::new(host::random_seed(now));
        self.routes
            .configure(rng.below(usize::MAX), config.down_after_failures);
        let tick = (config.refresh_interval_ms / 10).clamp(20, 1000);
        if let Err(status) = hostcalls::set_tick_period(Duration::from_millis(tick)) {
            log::error!("cannot set the tick period: {status:?}");
            return false;
        }
        let mut active = Active {
            key: shared_state::key_for(&config.discovery_identity()),
            localnodes_path: localnodes::request_path(
                config.datacenter.as_deref(),
                config.rack.as_deref(),
            ),
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
            in_flight: HashMap::new(),
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

    fn on_tick(&mut self) {
        let now = Self::now_ms();
        let Some(mut active) = self.active.take() else {
            return;
        };
        if let Some(call) = active.tick(&self.routes, now) {
            self.dispatch(&mut active, call);
        }
        self.active = Some(active);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http::new(Rc::clone(&self.routes))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Active {
    /// Reads and decodes the shared state; `None` when absent or damaged.
    fn read_state(&mut self) -> Option<(SharedState, u32)> {
        let (bytes, cas) = match hostcalls::get_shared_data(&self.key) {
            Ok(v) => v,
            Err(status) => {
                log::warn!("cannot read shared data: {status:?}");
                return None;
            }
        };
        let (bytes, cas) = (bytes?, cas?);
        match SharedState::decode(&bytes) {
            Ok(state) => Some((state, cas)),
            Err(e) => {
                if !self.corrupt_logged {
                    self.corrupt_logged = true;
                    log::warn!("{e}; starting discovery state afresh");
                }
                // Replace it, but only if nobody else already did.
                let _ = set_shared(&self.key, &SharedState::default(), Some(cas));
                None
            }
        }
    }

    /// One tick: publish what this VM's requests saw, refresh its routes,
    /// and lease a due discovery round or probe.
    fn tick(&mut self, routes: &Routes, now_ms: u64) -> Option<Callout> {
        let Some((mut state, mut cas)) = self.read_state() else {
            // First VM to tick creates the state. Creation cannot be a
            // compare-and-swap in proxy-wasm; racing creators write nearly
            // identical values, and no VM takes a lease in the tick it
            // created the state in, so the race cannot produce two polls.
            let _ = set_shared(&self.key, &discovery::initial_state(now_ms), None);
            return None;
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

        let lease = discovery::try_start_round(
            &state,
            now_ms,
            self.timing,
            &self.config.seeds,
            &mut self.rng,
        )
        .map(|(next, round)| (next, Callout::Discovery(round)))
        .or_else(|| {
            health::try_start_probe(&state, now_ms, self.config.probe_periods)
                .map(|(next, probe)| (next, Callout::Probe(probe)))
        });
        let (next, call) = lease?;
        // Losing the swap means another VM took this round or probe.
        set_shared(&self.key, &next, Some(cas)).ok().map(|()| call)
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
            log::warn!(
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
        let known = if state.list_round > 0 {
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
        log::warn!("shared state kept changing; an update was dropped");
        None
    }

    /// Folds a discovery round's result into the shared state and logs what
    /// changed, once, from the VM that ran the round.
    fn finish_round(
        &mut self,
        routes: &Routes,
        round: Round,
        answer: Result<localnodes::Answer, String>,
        now_ms: u64,
    ) {
        self.metrics.discovery(answer.is_ok());
        if let Ok(answer) = &answer {
            if !answer.dropped.is_empty() && answer.dropped != self.last_dropped {
                log::warn!(
                    "/localnodes from {} had {} unusable entries, ignored: {}",
                    round.target,
                    answer.dropped.len(),
                    answer.dropped.join("; ")
                );
                self.last_dropped = answer.dropped.clone();
            }
        }
        let updated = self.update_shared(|state| match &answer {
            Ok(a) => discovery::apply_answer(state, &round, a.nodes.clone(), now_ms),
            Err(_) => discovery::apply_failure(state, &round),
        });
        if let Some((state, event)) = updated {
            self.log_event(&round, &state, &event, answer.as_ref().err());
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
                HealthState::Down => log::info!(
                    "node {} is back: probe succeeded; routing to it again",
                    probe.node
                ),
                HealthState::Quarantined => {
                    log::info!("node {} passed its probe; routing to it", probe.node)
                }
            }
        } else if let Err(why) = result {
            log::debug!("probe of {:?} node {}: {why}", probe.state, probe.node);
        }
        self.sync_routes(routes, Some(&state), false);
    }

    fn log_event(&self, round: &Round, state: &SharedState, event: &Event, error: Option<&String>) {
        let list = |v: &[NodeAddr]| {
            v.iter()
                .map(NodeAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match event {
            Event::ListChanged {
                added,
                removed,
                total,
                first,
                recovered_after,
            } => {
                if *recovered_after > 0 {
                    log::info!("discovery recovered after {recovered_after} failed attempts");
                }
                if *first {
                    log::info!(
                        "discovered {total} nodes from {}: {}",
                        round.target,
                        list(&state.nodes)
                    );
                } else {
                    log::info!(
                        "node list changed, now {total} nodes; added [{}], removed [{}]{}",
                        list(added),
                        list(removed),
                        if added.is_empty() {
                            ""
                        } else {
                            "; added nodes are quarantined until a probe succeeds"
                        }
                    );
                }
            }
            Event::ListUnchanged { recovered_after } if *recovered_after > 0 => {
                log::info!("discovery recovered after {recovered_after} failed attempts; node list unchanged");
            }
            Event::Failed {
                consecutive,
                log: true,
            } => {
                let kept = if state.list_round > 0 {
                    format!("keeping the last good list of {} nodes", state.nodes.len())
                } else {
                    "no node discovered yet".to_string()
                };
                log::warn!(
                    "/localnodes from {} failed: {}; {kept} ({consecutive} failures in a row; \
                     further failures are logged every {REMINDER_EVERY} attempts)",
                    round.target,
                    error.map_or("unknown error", String::as_str),
                );
            }
            _ => {}
        }
    }

    /// Rebuilds this VM's routes when the list to route over changed. Nodes
    /// this VM saw fail stay out until the shared state agrees.
    fn sync_routes(&mut self, routes: &Routes, state: Option<&SharedState>, force: bool) {
        self.absorb_unreachable(routes);
        let mut nodes = discovery::routing_nodes(state, &self.config.seeds);
        nodes.retain(|n| !self.pending_down.contains(n));
        if !force && nodes == self.routed && nodes == routes.nodes() {
            return;
        }
        let verify = self.config.verify_node_san;
        routes.replace(nodes.iter().map(|n| Route::new(*n, verify)).collect());
        self.routed = nodes;
    }
}

fn set_shared(key: &str, state: &SharedState, cas: Option<u32>) -> Result<(), Status> {
    hostcalls::set_shared_data(key, Some(&state.encode()), cas)
}
