//! The filter's own stats in Envoy (`/stats`, `/stats/prometheus`).
//!
//! Every VM defines the same names and so shares the same Envoy stats.
//! Counters that grow per request are counted in plain integers on the
//! request path ([`crate::router::Router`]) and added here once per tick,
//! so a request never makes a stats host call. Gauges are set from the
//! shared record by every VM on its tick; they all write the same values.

use crate::host::{Host, MetricKind};

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
pub const DISCOVERY_ENTRIES_REFUSED: &str = "alternator_lb.discovery_entries_refused";

/// The ids Envoy gave this VM's stats; `None` for one it refused to define
/// (the rest still work).
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
    discovery_entries_refused: Option<u32>,
    /// Request counts already added to the stats.
    flushed: (u64, u64),
    /// Node-count gauges as this VM last set them; they change only with the
    /// shared record, so unchanged values are not written again every tick.
    last_counts: Option<(u64, u64, u64)>,
}

/// The gauges' values, from the shared record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gauges {
    pub known: u64,
    pub down: u64,
    pub quarantined: u64,
    pub list_age_ms: u64,
}

fn define(host: &impl Host, kind: MetricKind, name: &str) -> Option<u32> {
    match host.define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(e) => {
            log::warn!("cannot define stat {name}: {e}");
            None
        }
    }
}

fn add(host: &impl Host, id: Option<u32>, delta: u64) {
    if let (Some(id), Ok(delta)) = (id, i64::try_from(delta)) {
        if delta > 0 {
            // A stat Envoy no longer knows only loses this delta.
            let _ = host.increment_metric(id, delta);
        }
    }
}

fn set(host: &impl Host, id: Option<u32>, value: u64) {
    if let Some(id) = id {
        let _ = host.record_metric(id, value);
    }
}

impl Metrics {
    pub fn define(host: &impl Host) -> Self {
        use MetricKind::{Counter, Gauge};
        Metrics {
            nodes_known: define(host, Gauge, NODES_KNOWN),
            nodes_down: define(host, Gauge, NODES_DOWN),
            nodes_quarantined: define(host, Gauge, NODES_QUARANTINED),
            node_list_age_ms: define(host, Gauge, NODE_LIST_AGE_MS),
            discovery_successes: define(host, Counter, DISCOVERY_SUCCESSES),
            discovery_failures: define(host, Counter, DISCOVERY_FAILURES),
            requests_routed: define(host, Counter, REQUESTS_ROUTED),
            requests_rejected: define(host, Counter, REQUESTS_REJECTED),
            nodes_marked_down: define(host, Counter, NODES_MARKED_DOWN),
            probe_successes: define(host, Counter, PROBES_SUCCEEDED),
            probe_failures: define(host, Counter, PROBES_FAILED),
            discovery_entries_refused: define(host, Counter, DISCOVERY_ENTRIES_REFUSED),
            flushed: (0, 0),
            last_counts: None,
        }
    }

    /// Adds the request counts gathered since the last flush.
    pub fn flush_requests(&mut self, host: &impl Host, (routed, rejected): (u64, u64)) {
        add(
            host,
            self.requests_routed,
            routed.wrapping_sub(self.flushed.0),
        );
        add(
            host,
            self.requests_rejected,
            rejected.wrapping_sub(self.flushed.1),
        );
        self.flushed = (routed, rejected);
    }

    pub fn set_gauges(&mut self, host: &impl Host, g: &Gauges) {
        let counts = (g.known, g.down, g.quarantined);
        if self.last_counts != Some(counts) {
            set(host, self.nodes_known, g.known);
            set(host, self.nodes_down, g.down);
            set(host, self.nodes_quarantined, g.quarantined);
            self.last_counts = Some(counts);
        }
        set(host, self.node_list_age_ms, g.list_age_ms);
    }

    pub fn discovery(&self, host: &impl Host, ok: bool) {
        let id = if ok {
            self.discovery_successes
        } else {
            self.discovery_failures
        };
        add(host, id, 1);
    }

    pub fn marked_down(&self, host: &impl Host) {
        add(host, self.nodes_marked_down, 1);
    }

    pub fn probe(&self, host: &impl Host, ok: bool) {
        let id = if ok {
            self.probe_successes
        } else {
            self.probe_failures
        };
        add(host, id, 1);
    }

    /// `/localnodes` entries naming an address the filter refuses to
    /// contact, per answer read.
    pub fn entries_refused(&self, host: &impl Host, entries: usize) {
        add(
            host,
            self.discovery_entries_refused,
            u64::try_from(entries).unwrap_or(u64::MAX),
        );
    }
}
