//! One root context per VM: configuration, the tick, discovery callouts, and
//! the VM's copy of the node list.
//!
//! Every VM ticks. On each tick it reads the shared discovery state once,
//! rebuilds its routes if the state changed, and tries to take the lease for a
//! due discovery round; the VM that wins calls `/localnodes` and folds the
//! answer back into the shared state. All decisions are in
//! `alternator_lb_core::discovery`; this file only performs them.

use crate::host;
use crate::http::{Http, Routes};
use alternator_lb_core::address::NodeAddr;
use alternator_lb_core::config::Config;
use alternator_lb_core::discovery::{self, Event, Round};
use alternator_lb_core::filter_state;
use alternator_lb_core::localnodes;
use alternator_lb_core::rng::Rng;
use alternator_lb_core::shared_state::{self, SharedState};
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

/// State of a configured VM.
struct Active {
    config: Config,
    key: String,
    localnodes_path: String,
    rng: Rng,
    /// The list `routes` currently holds, to rebuild only on change.
    routed: Vec<NodeAddr>,
    /// CAS of the shared state last seen, to skip unchanged ticks.
    last_cas: Option<u32>,
    in_flight: HashMap<u32, Round>,
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
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some(round) = active.in_flight.remove(&token_id) else {
            return;
        };
        let answer = read_answer(self, num_headers, body_size);
        if let Some(active) = self.active.as_mut() {
            active.finish(&self.routes, round, answer);
        }
    }
}

/// Reads the callout's answer: the usable node list, or why there is none.
fn read_answer(
    ctx: &Root,
    num_headers: usize,
    body_size: usize,
) -> Result<localnodes::Answer, String> {
    let Some(active) = ctx.active.as_ref() else {
        return Err("filter not configured".to_string());
    };
    if num_headers == 0 {
        return Err(format!(
            "no answer (connection failed or reset, or no reply within {} ms)",
            active.config.discovery_timeout_ms
        ));
    }
    let status = ctx
        .get_http_call_response_header(":status")
        .unwrap_or_default();
    if status != "200" {
        return Err(format!("answered HTTP {status}"));
    }
    if body_size > localnodes::MAX_BODY_BYTES {
        return Err(localnodes::AnswerError::TooLarge(body_size).to_string());
    }
    let body = ctx
        .get_http_call_response_body(0, body_size)
        .unwrap_or_default();
    localnodes::parse(&body, active.config.port).map_err(|e| e.to_string())
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log::error!("{e}");
                return false;
            }
        };
        let now = self.get_current_time();
        let mut rng = Rng::new(host::random_seed(now));
        let start = rng.below(usize::MAX);
        if let Ok(mut picker) = self.routes.picker.try_borrow_mut() {
            *picker = alternator_lb_core::picker::RoundRobin::new(Vec::new(), start);
        }
        let tick = (config.refresh_interval_ms / 10).clamp(20, 1000);
        self.set_tick_period(Duration::from_millis(tick));
        log::debug!(
            "alternator-lb configured: seeds {:?}, port {}, discovery cluster {:?}, refresh every {} ms",
            config.seeds.iter().map(NodeAddr::to_string).collect::<Vec<_>>(),
            config.port,
            config.discovery_cluster,
            config.refresh_interval_ms
        );
        let mut active = Active {
            key: shared_state::key_for(&config.discovery_identity()),
            localnodes_path: localnodes::request_path(
                config.datacenter.as_deref(),
                config.rack.as_deref(),
            ),
            config,
            rng,
            routed: Vec::new(),
            last_cas: None,
            in_flight: HashMap::new(),
            last_dropped: Vec::new(),
            corrupt_logged: false,
        };
        // Route over the seeds (or the list other VMs already share) at once,
        // not one tick later.
        let shared = active.read_state();
        active.sync_routes(&self.routes, shared.as_ref().map(|(s, _)| s));
        self.active = Some(active);
        true
    }

    fn on_tick(&mut self) {
        let now = host::millis(self.get_current_time());
        let Some(mut active) = self.active.take() else {
            return;
        };
        if let Some(round) = active.tick(&self.routes, now) {
            let auth = round.target.authority();
            let headers = vec![
                (":method", "GET"),
                (":path", active.localnodes_path.as_str()),
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
                    active.in_flight.insert(token, round);
                }
                Err(status) => {
                    let why = format!(
                        "could not call cluster {:?} ({status:?}); is it defined in Envoy's config?",
                        active.config.discovery_cluster
                    );
                    active.finish(&self.routes, round, Err(why));
                }
            }
        }
        self.active = Some(active);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            routes: Rc::clone(&self.routes),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Active {
    /// Reads and decodes the shared state; `None` when absent or damaged.
    fn read_state(&mut self) -> Option<(SharedState, u32)> {
        let (bytes, cas) = match proxy_wasm::hostcalls::get_shared_data(&self.key) {
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

    /// One tick: refresh this VM's routes from the shared state, and take
    /// the lease for a discovery round if one is due.
    fn tick(&mut self, routes: &Routes, now_ms: u64) -> Option<Round> {
        let Some((state, cas)) = self.read_state() else {
            // First VM to tick creates the state. Creation cannot be a
            // compare-and-swap in proxy-wasm; racing creators write identical
            // values, and no VM takes a lease in the tick it created the
            // state in, so the race cannot produce two polls.
            let _ = set_shared(&self.key, &SharedState::default(), None);
            return None;
        };
        if self.last_cas != Some(cas) {
            self.last_cas = Some(cas);
            self.sync_routes(routes, Some(&state));
        }
        let interval = self.config.refresh_interval_ms;
        let (next, round) = discovery::try_start_round(
            &state,
            now_ms,
            interval,
            &self.config.seeds,
            &mut self.rng,
        )?;
        match set_shared(&self.key, &next, Some(cas)) {
            Ok(()) => Some(round),
            // Another VM took this round.
            Err(_) => None,
        }
    }

    /// Folds a round's result into the shared state (compare-and-swap, retried)
    /// and logs what changed, once, from the VM that ran the round.
    fn finish(
        &mut self,
        routes: &Routes,
        round: Round,
        answer: Result<localnodes::Answer, String>,
    ) {
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
        for _ in 0..CAS_ATTEMPTS {
            let (state, cas) = match self.read_state() {
                Some((state, cas)) => (state, Some(cas)),
                None => (SharedState::default(), None),
            };
            let (next, event) = match &answer {
                Ok(a) => discovery::apply_answer(&state, &round, a.nodes.clone()),
                Err(_) => discovery::apply_failure(&state, &round),
            };
            if set_shared(&self.key, &next, cas).is_ok() {
                self.log_event(&round, &next, &event, answer.as_ref().err());
                self.sync_routes(routes, Some(&next));
                return;
            }
        }
        log::warn!(
            "shared state kept changing; result of discovery round {} dropped",
            round.number
        );
    }

    fn log_event(&self, round: &Round, state: &SharedState, event: &Event, error: Option<&String>) {
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
                let list = |v: &[NodeAddr]| {
                    v.iter()
                        .map(NodeAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                if *first {
                    log::info!(
                        "discovered {total} nodes from {}: {}",
                        round.target,
                        list(&state.nodes)
                    );
                } else {
                    log::info!(
                        "node list changed, now {total} nodes; added [{}], removed [{}]",
                        list(added),
                        list(removed)
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
                     further failures are logged every {} attempts)",
                    round.target,
                    error.map_or("unknown error", String::as_str),
                    alternator_lb_core::log_throttle::REMINDER_EVERY
                );
            }
            _ => {}
        }
    }

    /// Rebuilds this VM's routes when the list to route over changed.
    fn sync_routes(&mut self, routes: &Routes, state: Option<&SharedState>) {
        let nodes = discovery::routing_nodes(state, &self.config.seeds);
        if nodes == self.routed {
            return;
        }
        let encoded = nodes.iter().map(filter_state::route_to).collect();
        if let Ok(mut picker) = routes.picker.try_borrow_mut() {
            picker.replace(encoded);
            self.routed = nodes;
        }
    }
}

fn set_shared(key: &str, state: &SharedState, cas: Option<u32>) -> Result<(), Status> {
    proxy_wasm::hostcalls::set_shared_data(key, Some(&state.encode()), cas)
}
