//! The keys of node health: when this VM takes a node out
//! (`down_after_failures`, `down_after_resets`) and how often nodes out are
//! probed (`down_probe_interval_ms`, `quarantine_probe_interval_ms`).

use super::error::ConfigError;
use super::given::Key;
use super::values::integer;
use crate::model::health::ProbePeriods;

/// As the client libraries: a Down node is retried at least every 30 s
/// (sooner right after it went Down: the probes back off up to this).
pub const DEFAULT_DOWN_PROBE_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_QUARANTINE_PROBE_INTERVAL_MS: u64 = 1_000;
/// A refused connection is a node that is not there.
pub const DEFAULT_DOWN_AFTER_FAILURES: u32 = 1;
/// A reset after connecting happens to healthy nodes too (an idle
/// keep-alive connection closed by the node as a request goes out, Envoy's
/// "503 UC"); three in a row, with no answer between, are not chance.
pub const DEFAULT_DOWN_AFTER_RESETS: u32 = 3;
const PROBE_INTERVAL_RANGE: (u64, u64) = (100, 3_600_000);
const DOWN_AFTER_FAILURES_RANGE: (u32, u32) = (1, 100);
const DOWN_AFTER_RESETS_RANGE: (u32, u32) = (1, 100);

/// What the health keys give.
pub(super) struct Health {
    pub probe_periods: ProbePeriods,
    pub down_after_failures: u32,
    pub down_after_resets: u32,
}

pub(super) fn validate(
    down_probe_interval_ms: Key<u64>,
    quarantine_probe_interval_ms: Key<u64>,
    down_after_failures: Key<u32>,
    down_after_resets: Key<u32>,
) -> Result<Health, ConfigError> {
    Ok(Health {
        probe_periods: ProbePeriods {
            down_ms: integer(
                "down_probe_interval_ms",
                down_probe_interval_ms,
                PROBE_INTERVAL_RANGE,
                DEFAULT_DOWN_PROBE_INTERVAL_MS,
            )?,
            quarantine_ms: integer(
                "quarantine_probe_interval_ms",
                quarantine_probe_interval_ms,
                PROBE_INTERVAL_RANGE,
                DEFAULT_QUARANTINE_PROBE_INTERVAL_MS,
            )?,
        },
        down_after_failures: integer(
            "down_after_failures",
            down_after_failures,
            DOWN_AFTER_FAILURES_RANGE,
            DEFAULT_DOWN_AFTER_FAILURES,
        )?,
        down_after_resets: integer(
            "down_after_resets",
            down_after_resets,
            DOWN_AFTER_RESETS_RANGE,
            DEFAULT_DOWN_AFTER_RESETS,
        )?,
    })
}
