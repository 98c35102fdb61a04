//! The filter's own stats in Envoy (`/stats`, `/stats/prometheus`).
//!
//! Every VM of a filter instance defines the same names and so shares the
//! same Envoy stats; a `stat_prefix` puts the instance's name into every
//! name (`alternator_lb.<stat_prefix>.nodes_known`), as Envoy's own
//! extensions do, so that two instances in one Envoy keep their figures
//! apart. Counters that grow per request are counted in plain integers on
//! the request path ([`RequestCounts`], kept in the VM's mailbox) and added
//! here once per tick, so a request never makes a stats host call. Gauges
//! are set from the shared record by every VM on its tick; they all write
//! the same values.

use crate::host::{Host, MetricKind};

/// Every stat name starts with this: Envoy lists them under its
/// `wasmcustom.` namespace in `/stats`, and as `alternator_lb_...` in
/// `/stats/prometheus`.
pub const NAMESPACE: &str = "alternator_lb";

/// Gauges, from the shared record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gauge {
    NodesKnown,
    NodesDown,
    NodesQuarantined,
    NodeListAgeMs,
}

/// Counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    DiscoverySuccesses,
    DiscoveryFailures,
    /// `/localnodes` entries refused because they could point Envoy off
    /// the cluster (link-local, non-unicast, loopback, outside
    /// `allowed_cidrs`).
    DiscoveryEntriesRefused,
    NodesMarkedDown,
    ProbeSuccesses,
    ProbeFailures,
    RequestsRouted,
    /// Routed while no node of any scope could take requests: to a known
    /// node anyway (panic routing), least recently failed first.
    RequestsRoutedPanic,
    /// Answered with the 503 because no node is known at all.
    RejectedNoNode,
    /// Answered with the 503 because Envoy refused the hand-off.
    RejectedHandoffRefused,
    /// Not the filter's (`hosts`): passed through untouched.
    RequestsPassed,
    /// Held for their body, which did not come in time; sent on without
    /// affinity.
    HoldTimeouts,
    /// Held for their body (key route affinity).
    AffinityHeld,
    /// Held and routed to their key's node.
    AffinityRoutedByKey,
    /// Held, then routed as usual: not a qualifying write, a table whose
    /// key is unknown, an unusable key or body, or no usable node of the
    /// key's order.
    AffinityFellBack,
    /// Writes that may qualify, sent on without affinity because their
    /// body was not read: announced over their operation's limit or not
    /// announced, more held writes than a VM holds, or a reading bound
    /// reached (inflated size, gzip ratio, members looked at, nesting).
    AffinityBodyUnread,
}

impl Gauge {
    pub const ALL: [Gauge; 4] = [
        Gauge::NodesKnown,
        Gauge::NodesDown,
        Gauge::NodesQuarantined,
        Gauge::NodeListAgeMs,
    ];

    pub fn stat(self) -> &'static str {
        match self {
            Gauge::NodesKnown => "nodes_known",
            Gauge::NodesDown => "nodes_down",
            Gauge::NodesQuarantined => "nodes_quarantined",
            Gauge::NodeListAgeMs => "node_list_age_ms",
        }
    }
}

impl Counter {
    pub const ALL: [Counter; 16] = [
        Counter::DiscoverySuccesses,
        Counter::DiscoveryFailures,
        Counter::DiscoveryEntriesRefused,
        Counter::NodesMarkedDown,
        Counter::ProbeSuccesses,
        Counter::ProbeFailures,
        Counter::RequestsRouted,
        Counter::RequestsRoutedPanic,
        Counter::RejectedNoNode,
        Counter::RejectedHandoffRefused,
        Counter::RequestsPassed,
        Counter::HoldTimeouts,
        Counter::AffinityHeld,
        Counter::AffinityRoutedByKey,
        Counter::AffinityFellBack,
        Counter::AffinityBodyUnread,
    ];

    pub fn stat(self) -> &'static str {
        match self {
            Counter::DiscoverySuccesses => "discovery_successes",
            Counter::DiscoveryFailures => "discovery_failures",
            Counter::DiscoveryEntriesRefused => "discovery_entries_refused",
            Counter::NodesMarkedDown => "nodes_marked_down",
            Counter::ProbeSuccesses => "probe_successes",
            Counter::ProbeFailures => "probe_failures",
            Counter::RequestsRouted => "requests_routed",
            Counter::RequestsRoutedPanic => "requests_routed_panic",
            Counter::RejectedNoNode => "requests_rejected_no_node",
            Counter::RejectedHandoffRefused => "requests_rejected_handoff_refused",
            Counter::RequestsPassed => "requests_passed",
            Counter::HoldTimeouts => "requests_hold_timeout",
            Counter::AffinityHeld => "affinity_held",
            Counter::AffinityRoutedByKey => "affinity_routed_by_key",
            Counter::AffinityFellBack => "affinity_fell_back",
            Counter::AffinityBodyUnread => "affinity_body_unread",
        }
    }
}

/// How long a `/localnodes` call took, answered or not: a histogram.
pub const DISCOVERY_LATENCY_MS: &str = "discovery_latency_ms";

/// The full stat name: `alternator_lb.<stat>`, or with a prefix
/// `alternator_lb.<prefix>.<stat>`.
pub fn name(prefix: Option<&str>, stat: &str) -> String {
    match prefix {
        Some(prefix) => format!("{NAMESPACE}.{prefix}.{stat}"),
        None => format!("{NAMESPACE}.{stat}"),
    }
}

/// What a VM's requests did since it started, counted on the request path
/// without any host call; the poller turns the growth into stats deltas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub routed: u64,
    /// Of `routed`, those routed in panic (no node of any scope routable).
    pub routed_panic: u64,
    pub rejected_no_node: u64,
    pub rejected_handoff_refused: u64,
    /// Requests for hosts not in `hosts`, passed through untouched.
    pub passed: u64,
    pub hold_timeouts: u64,
    pub affinity_held: u64,
    pub affinity_routed_by_key: u64,
    pub affinity_fell_back: u64,
    pub affinity_body_unread: u64,
}

impl RequestCounts {
    /// Each per-request counter with its value.
    fn each(&self) -> [(Counter, u64); 10] {
        [
            (Counter::RequestsRouted, self.routed),
            (Counter::RequestsRoutedPanic, self.routed_panic),
            (Counter::RejectedNoNode, self.rejected_no_node),
            (
                Counter::RejectedHandoffRefused,
                self.rejected_handoff_refused,
            ),
            (Counter::RequestsPassed, self.passed),
            (Counter::HoldTimeouts, self.hold_timeouts),
            (Counter::AffinityHeld, self.affinity_held),
            (Counter::AffinityRoutedByKey, self.affinity_routed_by_key),
            (Counter::AffinityFellBack, self.affinity_fell_back),
            (Counter::AffinityBodyUnread, self.affinity_body_unread),
        ]
    }
}

/// The gauges' values, from the shared record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gauges {
    pub known: u64,
    pub down: u64,
    pub quarantined: u64,
    pub list_age_ms: u64,
}

/// The ids Envoy gave this VM's stats; `None` for one it refused to define
/// (the rest still work).
pub struct Metrics {
    gauges: [Option<u32>; 4],
    counters: [Option<u32>; 16],
    discovery_latency: Option<u32>,
    /// Request counts already added to the stats.
    flushed: RequestCounts,
    /// Node-count gauges as this VM last set them; they change only with the
    /// shared record, so unchanged values are not written again every tick.
    last_counts: Option<(u64, u64, u64)>,
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

impl Metrics {
    /// Defines every stat, named with `prefix` when there is one.
    pub fn define(host: &impl Host, prefix: Option<&str>) -> Self {
        Metrics {
            gauges: Gauge::ALL.map(|g| define(host, MetricKind::Gauge, &name(prefix, g.stat()))),
            counters: Counter::ALL
                .map(|c| define(host, MetricKind::Counter, &name(prefix, c.stat()))),
            discovery_latency: define(
                host,
                MetricKind::Histogram,
                &name(prefix, DISCOVERY_LATENCY_MS),
            ),
            flushed: RequestCounts::default(),
            last_counts: None,
        }
    }

    fn counter_id(&self, counter: Counter) -> Option<u32> {
        let at = Counter::ALL.iter().position(|c| *c == counter)?;
        self.counters.get(at).copied().flatten()
    }

    fn gauge_id(&self, gauge: Gauge) -> Option<u32> {
        let at = Gauge::ALL.iter().position(|g| *g == gauge)?;
        self.gauges.get(at).copied().flatten()
    }

    /// Adds `delta` to a counter.
    pub fn add(&self, host: &impl Host, counter: Counter, delta: u64) {
        if let (Some(id), Ok(delta)) = (self.counter_id(counter), i64::try_from(delta)) {
            if delta > 0 {
                // A stat Envoy no longer knows only loses this delta.
                let _ = host.increment_metric(id, delta);
            }
        }
    }

    fn set(&self, host: &impl Host, gauge: Gauge, value: u64) {
        if let Some(id) = self.gauge_id(gauge) {
            let _ = host.record_metric(id, value);
        }
    }

    /// Adds the request counts gathered since the last flush.
    pub fn flush_requests(&mut self, host: &impl Host, now: RequestCounts) {
        for ((counter, value), (_, flushed)) in now.each().into_iter().zip(self.flushed.each()) {
            self.add(host, counter, value.wrapping_sub(flushed));
        }
        self.flushed = now;
    }

    pub fn set_gauges(&mut self, host: &impl Host, g: &Gauges) {
        let counts = (g.known, g.down, g.quarantined);
        if self.last_counts != Some(counts) {
            self.set(host, Gauge::NodesKnown, g.known);
            self.set(host, Gauge::NodesDown, g.down);
            self.set(host, Gauge::NodesQuarantined, g.quarantined);
            self.last_counts = Some(counts);
        }
        self.set(host, Gauge::NodeListAgeMs, g.list_age_ms);
    }

    /// A `/localnodes` call's result and how long it took.
    pub fn discovery(&self, host: &impl Host, ok: bool, took_ms: u64) {
        let counter = if ok {
            Counter::DiscoverySuccesses
        } else {
            Counter::DiscoveryFailures
        };
        self.add(host, counter, 1);
        if let Some(id) = self.discovery_latency {
            let _ = host.record_metric(id, took_ms);
        }
    }

    pub fn probe(&self, host: &impl Host, ok: bool) {
        let counter = if ok {
            Counter::ProbeSuccesses
        } else {
            Counter::ProbeFailures
        };
        self.add(host, counter, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn names_carry_the_prefix_as_one_token() {
        assert_eq!(name(None, "nodes_known"), "alternator_lb.nodes_known");
        assert_eq!(
            name(Some("orders"), "nodes_known"),
            "alternator_lb.orders.nodes_known"
        );
        let mut stats: Vec<&str> = Counter::ALL.iter().map(|c| c.stat()).collect();
        stats.extend(Gauge::ALL.iter().map(|g| g.stat()));
        stats.push(DISCOVERY_LATENCY_MS);
        let count = stats.len();
        stats.sort_unstable();
        stats.dedup();
        assert_eq!(stats.len(), count, "every stat has its own name");
    }
}
