//! Readers of the values every key group uses: integers in a range, flags,
//! and names (datacenters, racks, clusters).

use super::error::{err, ConfigError};
use super::given::{Given, Key};
use crate::model::Quoted;
use serde_json::Value;
use std::fmt;

const MAX_NAME_LEN: usize = 255;

/// Integers are read as `T` itself, never through a float: a number that
/// does not fit, a fraction or a negative number stays [`Given::Other`].
pub(super) fn integer<T>(
    key: &str,
    value: Key<T>,
    (min, max): (T, T),
    default: T,
) -> Result<T, ConfigError>
where
    T: Copy + PartialOrd + fmt::Display + Into<Value>,
{
    match value.0 {
        None => Ok(default),
        Some(Given::Expected(n)) if min <= n && n <= max => Ok(n),
        Some(given) => Err(err(
            key,
            format!("must be an integer from {min} to {max}, got {given}"),
        )),
    }
}

pub(super) fn flag(key: &str, value: Key<bool>, default: bool) -> Result<bool, ConfigError> {
    match value.0 {
        None => Ok(default),
        Some(Given::Expected(b)) => Ok(b),
        Some(Given::Other(value)) => Err(err(key, format!("must be true or false, got {value}"))),
    }
}

/// What [`valid_name`] accepts, for error messages.
pub(super) const NAME_RULE: &str =
    "must be a non-empty string of at most 255 characters without control characters";

/// Datacenter, rack and cluster names: they go into log lines and (escaped)
/// into `/localnodes` query strings.
pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && !s.chars().any(char::is_control)
}

pub(super) fn name(key: &str, value: Key<String>) -> Result<Option<String>, ConfigError> {
    match value.0 {
        None => Ok(None),
        Some(Given::Expected(s)) if valid_name(&s) => Ok(Some(s)),
        Some(given) => Err(err(key, format!("{NAME_RULE}, got {given}"))),
    }
}

/// A datacenter or rack name quoted, or `-` for none: how names enter the
/// discovery identity and the logs without two choices colliding.
pub(super) fn optional_quoted(name: Option<&str>) -> String {
    name.map_or_else(|| "-".to_string(), |n| Quoted(n).to_string())
}
