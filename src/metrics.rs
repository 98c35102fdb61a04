//! The filter's own stats in Envoy (`/stats`, `/stats/prometheus`).
//!
//! Every VM defines the same names and so shares the same Envoy stats.
//! Counters that grow per request are counted in plain cells on the request
//! path and added here once per tick, so a request never makes a stats host
//! call. Gauges are set from the shared state by every VM on its tick; they
//! all write the same values.

use crate::abi::{self, COUNTER, GAUGE};

/// Stat names; Envoy shows them under its `wasmcustom.` namespace in
/// `/stats`, and without it in `/stats/prometheus`.
pub const NODES_KNOWN: &str = "alternator_lb.nodes_known";
pub const NODES_DOWN: &str = "alternator_lb.nodes_down";
pub const NODES_QUARANTINED: &str = "alternator_lb.nodes_quarantined";
pub const NODE_LIST_AGE_MS: &str = "alternator_lb.node_list_age_ms";
pub const DISCOVERY_SUCCESSES: &str = "alternator_lb.discovery_successes";
pub const DISCOVERY_FAILURES: &str = "alternator_lb.discovery_failures";
pub const REQUESTS_ROUTED: &str = "alternator_lb.requests_routed";
pub const REQUESTS_REJECTED: &str = "alternator_lb.requests_rejected_no_node";
pub const NODES_MARKED_DOWN: &str = "alternator_lb.nodes_marked_down";
pub const PROBES_SUCCEEDED: &str = "alternator_lb.probe_successes";
pub const PROBES_FAILED: &str = "alternator_lb.probe_failures";

#[derive(Default)]
pub struct Metrics {
    nodes_known: Option<u32>,
    nodes_down: Option<u32>,
    nodes_quarantined: Option<u32>,
    node_list_age_ms: Option<u32>,
    discovery_successes: Option<u32>,
    discovery_failures: Option<u32>,
    requests_routed: Option<u32>,
    requests_rejected: Option<u32>,
    nodes_marked_down: Option<u32>,
    probe_successes: Option<u32>,
    probe_failures: Option<u32>,
    /// Request counts already added to the stats.
    flushed: (u64, u64),
    /// Node-count gauges as this VM last set them; they change only with the
    /// shared state, so unchanged values are not written again every tick.
    last_counts: Option<(u64, u64, u64)>,
}

/// The gauges' values, from the shared state.
pub struct Gauges {
    pub known: u64,
    pub down: u64,
    pub quarantined: u64,
    pub list_age_ms: u64,
}

fn define(kind: u32, name: &str) -> Option<u32> {
    match abi::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(status) => {
            abi::log!(Warn, "cannot define stat {name}: {status}");
            None
        }
    }
}

fn add(id: Option<u32>, delta: u64) {
    if let (Some(id), Ok(delta)) = (id, i64::try_from(delta)) {
        if delta > 0 {
            abi::increment_metric(id, delta);
        }
    }
}

fn set(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        abi::record_metric(id, value);
    }
}

impl Metrics {
    pub fn define() -> Self {
        Metrics {
            nodes_known: define(GAUGE, NODES_KNOWN),
            nodes_down: define(GAUGE, NODES_DOWN),
            nodes_quarantined: define(GAUGE, NODES_QUARANTINED),
            node_list_age_ms: define(GAUGE, NODE_LIST_AGE_MS),
            discovery_successes: define(COUNTER, DISCOVERY_SUCCESSES),
            discovery_failures: define(COUNTER, DISCOVERY_FAILURES),
            requests_routed: define(COUNTER, REQUESTS_ROUTED),
            requests_rejected: define(COUNTER, REQUESTS_REJECTED),
            nodes_marked_down: define(COUNTER, NODES_MARKED_DOWN),
            probe_successes: define(COUNTER, PROBES_SUCCEEDED),
            probe_failures: define(COUNTER, PROBES_FAILED),
            flushed: (0, 0),
            last_counts: None,
        }
    }

    /// Adds the request counts gathered since the last flush.
    pub fn flush_requests(&mut self, (routed, rejected): (u64, u64)) {
        add(self.requests_routed, routed.wrapping_sub(self.flushed.0));
        add(
            self.requests_rejected,
            rejected.wrapping_sub(self.flushed.1),
        );
        self.flushed = (routed, rejected);
    }

    pub fn set_gauges(&mut self, g: &Gauges) {
        let counts = (g.known, g.down, g.quarantined);
        if self.last_counts != Some(counts) {
            set(self.nodes_known, g.known);
            set(self.nodes_down, g.down);
            set(self.nodes_quarantined, g.quarantined);
            self.last_counts = Some(counts);
        }
        set(self.node_list_age_ms, g.list_age_ms);
    }

    pub fn discovery(&self, ok: bool) {
        add(
            if ok {
                self.discovery_successes
            } else {
                self.discovery_failures
            },
            1,
        );
    }

    pub fn marked_down(&self) {
        add(self.nodes_marked_down, 1);
    }

    pub fn probe(&self, ok: bool) {
        add(
            if ok {
                self.probe_successes
            } else {
                self.probe_failures
            },
            1,
        );
    }
}
