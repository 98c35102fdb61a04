//! What the filter knows about a node's health: the states a node can be in,
//! how often each is probed, and what one proxied request said about it.
//!
//! Data only: the transitions are [`crate::health`]'s.

/// Where a node stands. A node without a health record is Active with no
/// history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthState {
    /// Takes requests. Kept in the record only while the node has a history
    /// worth remembering (a recent Down spell, a generation).
    Active,
    /// A connection to it failed, or connections were reset before any
    /// response too many times in a row.
    Down,
    /// It joined the known nodes (listed by an answer, or listed again after
    /// dropping out): Alternator lists a node some seconds before it
    /// serves, and an answer may name addresses where nothing answers, so
    /// it waits for a probe.
    Quarantined,
}

impl HealthState {
    /// The state's name in log lines.
    pub fn name(self) -> &'static str {
        match self {
            HealthState::Active => "Active",
            HealthState::Down => "Down",
            HealthState::Quarantined => "Quarantined",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub state: HealthState,
    /// Down or Quarantined: the time at which the next probe may start.
    /// Active: 0.
    pub next_probe_ms: u64,
    /// Down: the wait that led to `next_probe_ms`, the backoff's current
    /// step; the next one doubles it. Active or Quarantined: the wait the
    /// node's last Down spell had reached, so that going Down again soon
    /// resumes the backoff there instead of at its start (0: no such
    /// memory). It lives in the shared record: whichever VM leases the next
    /// probe, or sees the node fail, must know where the backoff stands.
    pub wait_ms: u64,
    /// Down: when it went Down. Active or Quarantined: when it last left
    /// Down (0: never), from which its memory of the backoff fades.
    pub since_ms: u64,
    /// The record's count of entries into Down when this node last went
    /// Down (0: never, or long enough ago to be forgotten). Requests carry
    /// the generation they were sent in; an outcome from an older one says
    /// nothing about the node any more.
    pub generation: u32,
}

impl Health {
    /// A node just listed for the first time, probed at `now_ms`.
    pub fn newcomer(now_ms: u64) -> Health {
        Health {
            state: HealthState::Quarantined,
            next_probe_ms: now_ms,
            wait_ms: 0,
            since_ms: 0,
            generation: 0,
        }
    }

    /// Whether the entry remembers anything beyond its state: a backoff to
    /// resume, or a generation requests may still carry.
    pub fn has_history(&self) -> bool {
        self.state == HealthState::Down || self.wait_ms > 0 || self.generation > 0
    }
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
