//! What the filter knows about a node's health: the states a node can be in,
//! how often each is probed, and what one proxied request said about it.
//!
//! Data only: the transitions are [`crate::health`]'s.

/// A node that may not take requests. A node with no health record is
/// Active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthState {
    /// A connection to it failed, or was reset before any response.
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
}

/// Probe periods, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePeriods {
    pub down_ms: u64,
    pub quarantine_ms: u64,
}

impl ProbePeriods {
    /// The period between two probes of a node in `state`.
    pub fn of(&self, state: HealthState) -> u64 {
        match state {
            HealthState::Down => self.down_ms,
            HealthState::Quarantined => self.quarantine_ms,
        }
    }
}

/// What Envoy reports about one proxied request, reduced to what health
/// needs. Envoy's response flags say whether the upstream connection failed
/// (UF), was reset (UR) or terminated (UC) before a response started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The node answered (any status, 5xx included).
    Answered,
    /// No answer: connection failure or reset before the response.
    Unreachable,
}
