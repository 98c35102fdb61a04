//! The keys of discovery's rhythm: `refresh_interval_ms`,
//! `discovery_timeout_ms`, and the slower rhythm when idle,
//! `idle_refresh_interval_ms` and `idle_after_ms`.

use super::error::ConfigError;
use super::given::Key;
use super::values::integer;

pub const DEFAULT_REFRESH_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_DISCOVERY_TIMEOUT_MS: u64 = 2_000;
/// The client libraries poll every minute when idle.
pub const DEFAULT_IDLE_REFRESH_INTERVAL_MS: u64 = 60_000;
/// "Idle" means a minute without requests, as in the client libraries.
pub const DEFAULT_IDLE_AFTER_MS: u64 = 60_000;
/// Polling faster than this would only load the cluster; one day is the
/// longest interval that still makes sense for a node list.
const REFRESH_INTERVAL_RANGE: (u64, u64) = (100, 86_400_000);
const DISCOVERY_TIMEOUT_RANGE: (u64, u64) = (10, 300_000);

/// `refresh_interval_ms` and `discovery_timeout_ms`.
pub(super) fn polling(
    refresh_interval_ms: Key<u64>,
    discovery_timeout_ms: Key<u64>,
) -> Result<(u64, u64), ConfigError> {
    Ok((
        integer(
            "refresh_interval_ms",
            refresh_interval_ms,
            REFRESH_INTERVAL_RANGE,
            DEFAULT_REFRESH_INTERVAL_MS,
        )?,
        integer(
            "discovery_timeout_ms",
            discovery_timeout_ms,
            DISCOVERY_TIMEOUT_RANGE,
            DEFAULT_DISCOVERY_TIMEOUT_MS,
        )?,
    ))
}

/// `idle_refresh_interval_ms` and `idle_after_ms`.
pub(super) fn idle(
    idle_refresh_interval_ms: Key<u64>,
    idle_after_ms: Key<u64>,
) -> Result<(u64, u64), ConfigError> {
    Ok((
        integer(
            "idle_refresh_interval_ms",
            idle_refresh_interval_ms,
            REFRESH_INTERVAL_RANGE,
            DEFAULT_IDLE_REFRESH_INTERVAL_MS,
        )?,
        integer(
            "idle_after_ms",
            idle_after_ms,
            REFRESH_INTERVAL_RANGE,
            DEFAULT_IDLE_AFTER_MS,
        )?,
    ))
}
