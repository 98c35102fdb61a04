//! One VM's part in keeping the node list: every VM of an Envoy process
//! (one per worker thread, one on the main thread) has a [`Poller`], and
//! they coordinate only through one shared-data record.
//!
//! On each tick a poller reads the record once, publishes what its requests
//! saw (unreachable nodes, activity, learned partition keys), rebuilds its
//! VM's routes if the record changed, and tries to lease a due discovery
//! round or probe by compare-and-set: the VM that wins makes the calls and
//! folds the answers back, the others see the result on their next tick.
//! The decisions themselves are [`crate::discovery`]'s and
//! [`crate::health`]'s; this module performs them through a [`Host`].

mod announce;
mod outcome;
#[cfg(test)]
mod tests;

use crate::clock::{self, Clock};
use crate::config::ConfigError;
use crate::discovery::{self, Round, Timing};
use crate::health::{self, Probe};
use crate::hold::{Timeout, RETRY_AFTER_MS, TIMEOUTS_TO_STOP};
use crate::host::{Host, HostError, StreamHost, CAS_ATTEMPTS, CREATE_ONLY};
use crate::learned;
use crate::localnodes::{self, Rules};
use crate::mailbox::{StreakLimits, Unreachable};
use crate::metrics::{Counter, Gauges, Metrics, RequestCounts};
use crate::model::config::{Config, Mode};
use crate::model::health::{HealthState, Outcome};
use crate::model::record::SharedState;
use crate::model::{NodeAddr, Quoted};
use crate::rng::Rng;
use crate::routes::{Routes, Settings};
use crate::shared_state;
use crate::stream;
use crate::topology::Topology;
use crate::vm_state::VmState;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use outcome::CallFailure;

/// Probes one VM leases per tick: nodes an answer adds are probed at once
/// (make before break), a few per tick and VM, so that a long list of
/// newcomers neither waits a tick each nor floods the cluster.
pub const MAX_PROBES_PER_TICK: usize = 4;

/// Probes one VM has in flight at most (each waits up to
/// `discovery_timeout_ms` for a silent address).
pub const MAX_PROBES_IN_FLIGHT: usize = 16;

/// How long a write held for its key's node may wait for the first bytes of
/// its body, from its headers (stamped with the request's own clock).
/// Clients send a write's body right behind its headers; a body that has
/// not started after this long is a slow client's, or one Envoy will not
/// hand the filter (its Wasm filter config lacks
/// `allow_on_headers_stop_iteration`). Either way the write is sent on
/// without affinity, and [`crate::hold::HoldRule`] tells the two apart.
/// Checked on ticks: such a write waits at most this plus one tick.
pub const HOLD_TIMEOUT_MS: u64 = 300;

/// Why a VM could not be configured (already logged).
#[derive(Debug)]
pub enum ConfigureError {
    Config(ConfigError),
    Tick(HostError),
}

impl fmt::Display for ConfigureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigureError::Config(e) => e.fmt(f),
            ConfigureError::Tick(e) => write!(f, "cannot set the tick period: {e}"),
        }
    }
}

impl std::error::Error for ConfigureError {}

/// A call this VM has made and awaits: one question of a discovery round
/// (the round, and which of the topology's queries), or a probe.
#[derive(Clone, Debug)]
enum Callout {
    Discovery(Round, usize),
    Probe(Probe),
}

/// A callout awaiting its answer, and when it was made: a headerless answer
/// or a 504 is a timeout only once the timeout has passed.
struct InFlight {
    call: Callout,
    sent_ms: u64,
}

pub struct Poller<H: Host> {
    host: H,
    config: Config,
    timing: Timing,
    topology: Topology,
    /// Shared-data key of the record.
    key: String,
    /// Shared-data key of the learned partition keys, and the CAS last read.
    learned_key: String,
    learned_cas: Option<u32>,
    rng: Rng,
    metrics: Metrics,
    /// The VM's routes and its mailbox, shared with its requests.
    vm: Rc<RefCell<VmState>>,
    /// The VM's time, shared with its requests.
    clock: Rc<Clock>,
    /// Shared-data key of the process's clock offset.
    clock_key: String,
    /// CAS of the record last seen, to skip unchanged ticks.
    last_cas: Option<u32>,
    in_flight: HashMap<u32, InFlight>,
    /// Nodes this VM saw fail and has not yet published as Down, with what
    /// ended their streak and the generation the failures belong to.
    pending_down: Vec<Unreachable>,
    /// Requests routed when activity was last checked.
    seen_requests: u64,
    /// Last warning about dropped `/localnodes` entries, to not repeat it
    /// (at most [`localnodes::MAX_DESCRIBED`] descriptions and a count).
    last_dropped: localnodes::Drops,
    corrupt_logged: bool,
    /// Whether refused nodes found in the record were logged.
    screen_logged: bool,
    /// New nodes whose failed probe this VM logged, so each is told once
    /// while it stays out; at most [`localnodes::MAX_DESCRIBED`], as a
    /// hostile answer may list a thousand nodes that never answer.
    told_failing: Vec<NodeAddr>,
}

/// How often each VM ticks: a tenth of the refresh interval, between 20 ms
/// and 1 s. The tick bounds how stale a VM's routes are after the record
/// changed, and how late a due round starts.
pub fn tick_period_ms(config: &Config) -> u32 {
    let tick = (config.refresh_interval_ms / 10).clamp(20, 1000);
    u32::try_from(tick).unwrap_or(1000)
}

impl<H: Host> Poller<H> {
    /// Reads and validates the configuration, sets the tick, and routes
    /// over the seeds (or the list other VMs already share) at once. The
    /// error is logged here.
    pub fn configure(host: H) -> Result<Poller<H>, ConfigureError> {
        let bytes = host.plugin_configuration().unwrap_or_default();
        let config = Config::parse(&bytes).map_err(|e| {
            log::error!("{e}");
            ConfigureError::Config(e)
        })?;
        host.set_tick_period_ms(tick_period_ms(&config))
            .map_err(|e| {
                let e = ConfigureError::Tick(e);
                log::error!("{e}");
                e
            })?;
        // The seed only varies starting points (round-robin offset, which
        // node to ask first), so that workers do not all start alike;
        // nothing depends on it being secret. proxy-wasm offers no
        // randomness, and Envoy configures its VMs one after another, so the
        // host clock's nanoseconds differ per VM.
        let mut rng = Rng::new(host.now_nanos());
        let key = shared_state::key_for(&config.discovery_identity());
        // Which record a VM shares, for whoever debugs two filters (or two
        // module versions) in one Envoy: once per VM, at start.
        log::debug!("discovery record in shared data key {key}");
        let settings = Settings {
            mode: config.key_route_affinity,
            verify_node_san: config.verify_node_san,
            https: config.https,
            balancing: config.load_balancing,
        };
        let limits = StreakLimits {
            connect_failures: config.down_after_failures,
            resets: config.down_after_resets,
        };
        // The VM's time: the host's clock made monotonic, a jump counting
        // as one tick, and as far from the host's clock as the other VMs'
        // (see crate::clock).
        let clock_key = format!("{key}.clock");
        let offset = clock::read_offset(&host, &clock_key);
        let clock = Rc::new(Clock::new(
            host.now_nanos(),
            offset,
            u64::from(tick_period_ms(&config)),
        ));
        let routes = Routes::new(settings, rng.below(usize::MAX), Rc::clone(&clock))
            .with_hosts(config.hosts.clone());
        let vm = VmState::new(routes, limits, &config.partition_keys);
        let mut poller = Poller {
            learned_key: learned::key_for(&key),
            key,
            topology: Topology::from_config(&config),
            timing: Timing {
                interval_ms: config.refresh_interval_ms,
                idle_interval_ms: config.idle_refresh_interval_ms,
                idle_after_ms: config.idle_after_ms,
            },
            learned_cas: None,
            metrics: Metrics::define(&host, config.stat_prefix.as_deref()),
            vm: Rc::new(RefCell::new(vm)),
            clock,
            clock_key,
            host,
            config,
            rng,
            last_cas: None,
            in_flight: HashMap::new(),
            pending_down: Vec::new(),
            told_failing: Vec::new(),
            seen_requests: 0,
            last_dropped: localnodes::Drops::default(),
            corrupt_logged: false,
            screen_logged: false,
        };
        let shared = poller.read_state();
        poller.rebuild(shared.as_ref().map(|(s, _)| s));
        Ok(poller)
    }

    /// The VM's routes and mailbox, for its requests.
    pub fn vm_state(&self) -> Rc<RefCell<VmState>> {
        Rc::clone(&self.vm)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The VM's time in milliseconds: every timing decision reads it.
    fn now_ms(&self) -> u64 {
        self.clock.read_ms(self.host.now_nanos())
    }

    /// One tick: publish what this VM's requests saw, refresh its routes,
    /// and lease a due discovery round or probe.
    pub fn on_tick(&mut self) {
        let now = self.now_ms();
        self.share_clock();
        if self.config.key_route_affinity != Mode::None {
            self.send_on_overdue(now);
            self.share_learned();
        }
        let Some((mut state, mut cas)) = self.read_state() else {
            // The first VM to tick creates the record. No VM takes a lease
            // in the tick it created the record in, and a creator that lost
            // the race leaves the winner's record alone (CREATE_ONLY).
            let initial = discovery::initial_state(now).encode();
            let _ = self.host.shared_set(&self.key, &initial, Some(CREATE_ONLY));
            return;
        };
        if let Some((published, new_cas)) = self.publish_observations(&state, cas, now) {
            state = published;
            cas = new_cas;
        }
        if self.last_cas != Some(cas) {
            self.last_cas = Some(cas);
            self.rebuild(Some(&state));
        }
        self.update_metrics(&state, now);

        let round =
            discovery::try_start_round(&state, now, self.timing, &self.topology, &mut self.rng)
                .map(|(next, round)| {
                    let calls: Vec<Callout> = round
                        .targets
                        .iter()
                        .map(|(query, _)| Callout::Discovery(round.clone(), *query))
                        .collect();
                    (next, calls)
                });
        let lease = round.or_else(|| {
            let in_flight = self
                .in_flight
                .values()
                .filter(|f| matches!(f.call, Callout::Probe(_)))
                .count();
            let room = MAX_PROBES_IN_FLIGHT
                .saturating_sub(in_flight)
                .min(MAX_PROBES_PER_TICK);
            health::try_start_probes(&state, now, self.config.probe_periods, room)
                .map(|(next, probes)| (next, probes.into_iter().map(Callout::Probe).collect()))
        });
        let Some((next, calls)) = lease else {
            return;
        };
        // Losing the swap means another VM took this round or probe.
        if self.write_state(&next, Some(cas)).is_ok() {
            for call in calls {
                self.dispatch(call);
            }
        }
    }

    /// Keeps this VM's clock in line with the other VMs' (see
    /// [`Clock::agree`]): offsets within two ticks agree, which is as far
    /// apart as readings a tick apart leave them.
    fn share_clock(&mut self) {
        let shared = clock::read_offset(&self.host, &self.clock_key);
        let tolerance = 2 * u64::from(tick_period_ms(&self.config));
        if let Some(offset) = self.clock.agree(shared, tolerance) {
            // Not written: the next tick tries again.
            clock::write_offset(&self.host, &self.clock_key, offset).ok();
        }
    }

    /// The answer to a callout this VM made.
    pub fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize) {
        let Some(InFlight { call, sent_ms }) = self.in_flight.remove(&token) else {
            return;
        };
        let now = self.now_ms();
        let elapsed_ms = now.saturating_sub(sent_ms);
        match call {
            Callout::Discovery(round, query) => {
                let (answer, refused) = self.read_answer(num_headers, body_size, elapsed_ms);
                self.finish_round(&round, query, answer, refused, now, elapsed_ms);
            }
            Callout::Probe(probe) => {
                let result = self
                    .call_status(num_headers, body_size, elapsed_ms)
                    .map_err(|e| e.to_string());
                self.finish_probe(probe, result);
            }
        }
    }

    fn dispatch(&mut self, call: Callout) {
        let (node, path) = match &call {
            Callout::Discovery(round, query) => (
                round.target(*query),
                self.topology.queries.get(*query).map(|q| q.path()),
            ),
            // Alternator's health check: `GET /` answers 200 without auth.
            Callout::Probe(probe) => (Some(probe.node), Some("/".to_string())),
        };
        let (Some(node), Some(path)) = (node, path) else {
            return;
        };
        let authority = node.authority();
        let headers = [
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", authority.as_str()),
            // Read by the discovery cluster (ORIGINAL_DST, use_http_header).
            ("x-envoy-original-dst-host", authority.as_str()),
            ("user-agent", "alternator-lb"),
        ];
        let timeout = u32::try_from(self.config.discovery_timeout_ms).unwrap_or(u32::MAX);
        match self
            .host
            .http_call(&self.config.discovery_cluster, &headers, timeout)
        {
            Ok(token) => {
                let sent_ms = self.now_ms();
                self.in_flight.insert(token, InFlight { call, sent_ms });
            }
            Err(e) => {
                let why = format!(
                    "could not call cluster {} ({e}); is it defined in Envoy's config?",
                    Quoted(&self.config.discovery_cluster)
                );
                let now = self.now_ms();
                match call {
                    Callout::Discovery(round, query) => {
                        self.finish_round(&round, query, Err(why), 0, now, 0)
                    }
                    Callout::Probe(probe) => self.finish_probe(probe, Err(why)),
                }
            }
        }
    }

    /// Whether the answer being delivered, `elapsed_ms` after its call, is
    /// a 200; if not, what happened instead (reading only the first bytes
    /// of the body).
    fn call_status(
        &self,
        num_headers: usize,
        body_size: usize,
        elapsed_ms: u64,
    ) -> Result<(), CallFailure> {
        let timeout_ms = self.config.discovery_timeout_ms;
        if num_headers == 0 {
            return Err(CallFailure::without_answer(elapsed_ms, timeout_ms));
        }
        let status = self
            .host
            .call_response_header(":status")
            .unwrap_or_default();
        let status = String::from_utf8_lossy(&status);
        match status.parse::<u32>() {
            Ok(200) => Ok(()),
            Ok(status) => {
                let head = body_size.min(outcome::BODY_HEAD_BYTES);
                let head = self.host.call_response_body(head).unwrap_or_default();
                Err(CallFailure::from_status(
                    status, &head, body_size, elapsed_ms, timeout_ms,
                ))
            }
            Err(_) => Err(CallFailure::BadStatus(status.into_owned())),
        }
    }

    /// Reads a `/localnodes` answer: the usable node list, or why there is
    /// none; and how many of its entries the rules refused. An answer over
    /// the size limit is refused unread.
    fn read_answer(
        &self,
        num_headers: usize,
        body_size: usize,
        elapsed_ms: u64,
    ) -> (Result<localnodes::Answer, String>, usize) {
        if let Err(e) = self.call_status(num_headers, body_size, elapsed_ms) {
            return (Err(e.to_string()), 0);
        }
        if body_size > localnodes::MAX_BODY_BYTES {
            let e = localnodes::AnswerError::TooLarge(body_size);
            return (Err(e.to_string()), 0);
        }
        let body = self.host.call_response_body(body_size).unwrap_or_default();
        match localnodes::parse(&body, &Rules::of(&self.config)) {
            Ok(answer) => {
                let refused = answer.refused;
                (Ok(answer), refused)
            }
            Err(e) => (Err(e.to_string()), e.refused()),
        }
    }

    /// Reads and decodes the record; `None` when absent or damaged (a
    /// damaged record is replaced, unless another VM already did).
    fn read_state(&mut self) -> Option<(SharedState, u32)> {
        let (bytes, cas) = match self.host.shared_get(&self.key) {
            Ok(found) => found?,
            Err(e) => {
                log::warn!("cannot read shared data: {e}");
                return None;
            }
        };
        match SharedState::decode(&bytes) {
            Ok(mut state) => {
                self.screen(&mut state);
                Some((state, cas))
            }
            Err(e) => {
                if !self.corrupt_logged {
                    self.corrupt_logged = true;
                    log::warn!("{e}; starting discovery state afresh");
                }
                let _ = self.write_state(&SharedState::default(), Some(cas));
                None
            }
        }
    }

    /// Drops the record's nodes this VM's rules refuse. Shared data has no
    /// owner: any plugin sharing the VM id can write the record, so it gets
    /// the checks an answer gets (the seeds, from this VM's configuration,
    /// excepted). Logged once per VM.
    fn screen(&mut self, state: &mut SharedState) {
        let rules = Rules::of(&self.config);
        let seeds = &self.config.seeds;
        let refused = state.retain_nodes(|n| rules.admits(n) || seeds.contains(n));
        if refused > 0 && !self.screen_logged {
            self.screen_logged = true;
            log::warn!(
                "the shared discovery record names {refused} nodes its rules refuse (outside allowed_cidrs, \
                 link-local, loopback or not unicast, or another port); they are ignored"
            );
        }
    }

    fn write_state(&self, state: &SharedState, cas: Option<u32>) -> Result<(), HostError> {
        self.host.shared_set(&self.key, &state.encode(), cas)
    }

    /// Publishes nodes this VM found unreachable (as Down) and that requests
    /// flow (for the refresh rhythm). Returns the written record and its CAS.
    fn publish_observations(
        &mut self,
        state: &SharedState,
        cas: u32,
        now_ms: u64,
    ) -> Option<(SharedState, u32)> {
        self.absorb_unreachable();
        let requests = self.requests().routed;
        let mut next = state.clone();
        let mut downs = Vec::new();
        for u in &self.pending_down {
            let periods = self.config.probe_periods;
            if let Some(marked) = health::mark_down(&next, u.node, u.generation, now_ms, periods) {
                next = marked;
                downs.push((u.node, u.why));
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
        self.write_state(&next, Some(cas)).ok()?;
        self.note_panic(state, &next);
        self.pending_down.clear();
        self.seen_requests = requests;
        for (node, why) in &downs {
            self.metrics.add(&self.host, Counter::NodesMarkedDown, 1);
            let (what, in_a_row) = match why {
                Outcome::Reset => (
                    "its connections were reset before any response",
                    self.config.down_after_resets,
                ),
                _ => ("connecting to it failed", self.config.down_after_failures),
            };
            log::warn!(
                "node {node} marked Down: {what} ({in_a_row} in a row); it gets no requests until /localnodes lists it \
                 and a probe succeeds (probed after {} ms, then at doubling waits up to every {} ms)",
                health::FIRST_DOWN_WAIT_MS.min(self.config.probe_periods.down_ms),
                self.config.probe_periods.down_ms
            );
        }
        let (_, new_cas) = self.read_state()?;
        Some((next, new_cas))
    }

    /// Takes over the nodes the requests found unreachable since last time.
    fn absorb_unreachable(&mut self) {
        let Ok(mut vm) = self.vm.try_borrow_mut() else {
            return;
        };
        for u in vm.mailbox.take_unreachable() {
            if !self.pending_down.iter().any(|p| p.node == u.node) {
                self.pending_down.push(u);
            }
        }
    }

    fn requests(&self) -> RequestCounts {
        self.vm
            .try_borrow()
            .map_or_else(|_| RequestCounts::default(), |vm| vm.mailbox.counts())
    }

    fn update_metrics(&mut self, state: &SharedState, now_ms: u64) {
        let requests = self.requests();
        self.metrics.flush_requests(&self.host, requests);
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
        let gauges = Gauges {
            known: known as u64,
            down: down as u64,
            quarantined: quarantined as u64,
            list_age_ms,
        };
        self.metrics.set_gauges(&self.host, &gauges);
    }

    /// Applies `update` to the record by compare-and-set, retried; returns
    /// the record written, or `None` if it kept changing under us. Logs a
    /// change of panic routing the write made.
    fn update_shared<E>(
        &mut self,
        mut update: impl FnMut(&SharedState) -> (SharedState, E),
    ) -> Option<(SharedState, E)> {
        for _ in 0..CAS_ATTEMPTS {
            let (state, cas) = match self.read_state() {
                Some((state, cas)) => (state, cas),
                None => (SharedState::default(), CREATE_ONLY),
            };
            let (next, extra) = update(&state);
            if self.write_state(&next, Some(cas)).is_ok() {
                self.note_panic(&state, &next);
                return Some((next, extra));
            }
        }
        log::warn!("shared state kept changing; an update was dropped");
        None
    }

    /// Folds a discovery round's result into the record and logs what
    /// changed, once, from the VM that ran the round; `refused` entries of
    /// the answer go to their stat.
    fn finish_round(
        &mut self,
        round: &Round,
        query: usize,
        answer: Result<localnodes::Answer, String>,
        refused: usize,
        now_ms: u64,
        took_ms: u64,
    ) {
        let target = round
            .target(query)
            .map_or_else(String::new, |t| t.to_string());
        self.metrics.discovery(&self.host, answer.is_ok(), took_ms);
        self.metrics
            .add(&self.host, Counter::DiscoveryEntriesRefused, refused as u64);
        if let Ok(answer) = &answer {
            if !answer.dropped.is_empty() && answer.dropped != self.last_dropped {
                log::warn!(
                    "/localnodes from {target} had {} unusable entries, ignored: {}",
                    answer.dropped.count,
                    answer.dropped.summary()
                );
                self.last_dropped = answer.dropped.clone();
            }
        }
        let seeds = self
            .topology
            .query_seeds
            .get(query)
            .cloned()
            .unwrap_or_default();
        let updated = self.update_shared(|state| match &answer {
            Ok(a) => discovery::apply_answer(state, round, query, a.nodes.clone(), &seeds, now_ms),
            Err(_) => discovery::apply_failure(state, round, query),
        });
        if let Some((state, event)) = updated {
            announce::event(
                &self.topology,
                &target,
                &state,
                &event,
                answer.as_ref().err(),
            );
            self.rebuild(Some(&state));
        }
    }

    /// Logs, once per Envoy process (from the VM whose write did it), that
    /// requests are now routed in panic, or no longer.
    fn note_panic(&self, before: &SharedState, after: &SharedState) {
        let was = discovery::panicking(Some(before), &self.topology);
        let is = discovery::panicking(Some(after), &self.topology);
        if is && !was {
            let known = discovery::panic_order(Some(after), &self.topology, &[]).len();
            log::warn!(
                "no node of any routing scope can take requests (all {known} known nodes are Down or \
                 Quarantined): requests go to them anyway, least recently failed first, until a probe \
                 brings one back (counted in requests_routed_panic)"
            );
        } else if was && !is {
            log::info!("a node can take requests again: panic routing ends");
        }
    }

    /// Folds a probe result in; a node that passes takes requests again.
    fn finish_probe(&mut self, probe: Probe, result: Result<(), String>) {
        self.metrics.probe(&self.host, result.is_ok());
        let ok = result.is_ok();
        let now = self.now_ms();
        let Some((state, back)) =
            self.update_shared(|state| health::apply_probe(state, &probe, ok, now))
        else {
            return;
        };
        if back {
            match probe.state {
                HealthState::Down => log::info!(
                    "node {} is back: probe succeeded; routing to it again",
                    probe.node
                ),
                HealthState::Quarantined | HealthState::Active => {
                    log::info!("node {} passed its probe; routing to it", probe.node)
                }
            }
        } else if let Err(why) = result {
            if probe.state == HealthState::Quarantined {
                self.tell_failing(probe.node, &why);
            } else {
                log::debug!("probe of {} node {}: {why}", probe.state.name(), probe.node);
            }
        }
        // Nodes no longer quarantined (passed, dropped) may be told again.
        self.told_failing.retain(|n| {
            state
                .health
                .get(n)
                .is_some_and(|h| h.state == HealthState::Quarantined)
        });
        self.rebuild(Some(&state));
    }

    /// Says once that a node an answer added failed its first probe and so
    /// takes no requests (a certificate the cluster's CA did not sign, a
    /// port nothing listens on): otherwise only the discovery line that
    /// quarantined it would name it.
    fn tell_failing(&mut self, node: NodeAddr, why: &str) {
        if self.told_failing.contains(&node) || self.told_failing.len() >= localnodes::MAX_DESCRIBED
        {
            log::debug!("probe of quarantined node {node}: {why}");
            return;
        }
        self.told_failing.push(node);
        log::warn!(
            "new node {node} failed its probe ({why}); it takes no requests until a probe succeeds"
        );
    }

    /// Rebuilds this VM's routes from the record. Nodes this VM saw fail
    /// stay out until the record agrees.
    fn rebuild(&mut self, state: Option<&SharedState>) {
        self.absorb_unreachable();
        let withheld: Vec<NodeAddr> = self.pending_down.iter().map(|p| p.node).collect();
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.rebuild(state, &self.topology, &withheld);
        }
    }

    /// Sends on, without affinity, the held writes whose body has not
    /// started to come within [`HOLD_TIMEOUT_MS`] of their headers, and
    /// applies this VM's hold rule ([`crate::hold::HoldRule`]): a VM that
    /// never saw a held write's body and whose last three held writes all
    /// timed out stops holding writes (Envoy does not seem to hand this
    /// filter bodies after a headers pause), and tries again a minute later.
    /// Other VMs decide on their own evidence.
    fn send_on_overdue(&mut self, now_ms: u64) {
        let Ok(mut vm) = self.vm.try_borrow_mut() else {
            return;
        };
        vm.mailbox.retry_holding(now_ms);
        let mut stopped = false;
        for id in vm.mailbox.take_overdue(now_ms, HOLD_TIMEOUT_MS) {
            // Envoy no longer having the request means it ended meanwhile:
            // neither a body nor a timeout.
            let Ok(request) = self.host.enter_stream(id) else {
                continue;
            };
            stopped |= vm.mailbox.hold_timed_out(now_ms) == Timeout::Stopped;
            if let Some(sent) = stream::hand_off(&request, &mut vm, None) {
                vm.mailbox.sent_on(id, sent);
                if let Err(e) = request.resume_request() {
                    log::warn!("could not resume a held request: {e}");
                }
            }
        }
        if stopped {
            log::warn!(
                "{TIMEOUTS_TO_STOP} writes in a row held for their key's node got no body within {HOLD_TIMEOUT_MS} ms, \
                 and no held write on this worker ever got one: this Envoy seems not to give a Wasm filter the \
                 request body after it pauses the headers, which needs allow_on_headers_stop_iteration: true in \
                 the Wasm filter's config (Istio's WasmPlugin and Envoy Gateway cannot set it; docs/key-route-affinity.md). \
                 They were sent on without affinity; this worker sends writes on without holding them, \
                 and tries holding one again every {} s.",
                RETRY_AFTER_MS / 1000
            );
        }
    }

    /// Shares the partition keys this VM's requests learned, and takes up
    /// those other VMs shared, when the shared entry changed.
    fn share_learned(&mut self) {
        let news = match self.vm.try_borrow_mut() {
            Ok(mut vm) => vm.mailbox.take_learned(),
            Err(_) => return,
        };
        let unshared: Vec<(String, String)> = news
            .into_iter()
            .filter(|(table, attr)| !learned::publish(&self.host, &self.learned_key, table, attr))
            .collect();
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.mailbox.requeue_learned(unshared);
        }
        let Some((bytes, cas)) = learned::read(&self.host, &self.learned_key) else {
            return;
        };
        if self.learned_cas != Some(cas) {
            self.learned_cas = Some(cas);
            if let Ok(mut vm) = self.vm.try_borrow_mut() {
                vm.mailbox.set_learned(Some(&bytes));
            }
        }
    }
}
