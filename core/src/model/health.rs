//! What the filter knows about a node's health: the states a node can be in,
//! how often each is probed, and what one proxied request said about it.
//!
//! Data only: the transitions are [`crate::health`]'s.

/// A node that may not take requests. A node with no health record is
/// Active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthState {
    /// A connection to it failed, or connections were reset before any
    /// response too many times in a row.
    Down,
    /// It joined the known nodes after the first discovery: Alternator lists
    /// a node some seconds before it serves.
    Quarantined,
}

impl HealthState {
    /// The state's name in log lines.
    pub fn name(self) -> &'static str {
        match self {
            HealthState::Down => "Down",
            HealthState::Quarantined => "Quarantined",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub state: HealthState,
    /// Wall-clock time at which the next probe may start.
    pub next_probe_ms: u64,
    /// How long before `next_probe_ms` the node was last probed (or went
    /// Down, or was quarantined). A Down node's waits grow from it, so it
    /// lives in the shared record: whichever VM leases the next probe must
    /// know where the backoff stands.
    pub wait_ms: u64,
}

/// Probe periods, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePeriods {
    /// The longest wait between two probes of a Down node.
    pub down_ms: u64,
    pub quarantine_ms: u64,
}

/// What Envoy reports about one proxied request, reduced to what health
/// needs: Envoy's response flags say whether the upstream connection could
/// not be made (UF), or was reset (UR) or terminated (UC) before a response
/// started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The node answered (any status, 5xx included).
    Answered,
    /// No connection could be made: nothing listens, or nothing answers.
    ConnectFailed,
    /// A connection was made, then reset or closed before a response. On a
    /// reused keep-alive connection this happens to healthy nodes too (the
    /// node closed an idle connection as the request went out).
    Reset,
}
