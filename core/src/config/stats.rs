//! The key of the filter's stats: `stat_prefix`.

use super::error::{err, ConfigError};
use super::given::{Given, Key};

/// Longest `stat_prefix`: it is part of every metric name.
pub(super) const MAX_STAT_PREFIX_LEN: usize = 64;

/// `stat_prefix` becomes a token of every metric name
/// (`alternator_lb.<stat_prefix>.nodes_known`), so it keeps to what stat
/// names and Prometheus names carry unchanged: no dots (they would split
/// the token), no spaces.
pub(super) fn stat_prefix_of(value: Key<String>) -> Result<Option<String>, ConfigError> {
    match value.0 {
        None => Ok(None),
        Some(Given::Expected(s))
            if !s.is_empty()
                && s.len() <= MAX_STAT_PREFIX_LEN
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Ok(Some(s))
        }
        Some(given) => Err(err(
            "stat_prefix",
            format!("must be 1 to {MAX_STAT_PREFIX_LEN} letters, digits, '_' or '-', got {given}"),
        )),
    }
}
