//! The keys of which requests are the filter's and how they spread over a
//! scope's nodes: `hosts` and `load_balancing`.

use super::error::{err, ConfigError};
use super::given::{Given, Key};
use crate::model::authority::HostPattern;
use crate::model::config::Balancing;

/// `hosts` entries: a request that matches none is compared with each, so
/// the list stays short; a gateway's Alternator names are a handful.
pub const MAX_HOSTS: usize = 64;

pub(super) fn balancing(value: Key<String>) -> Result<Balancing, ConfigError> {
    match value.0 {
        None => Ok(Balancing::LeastRequest),
        Some(Given::Expected(s)) if s == "least_request" => Ok(Balancing::LeastRequest),
        Some(Given::Expected(s)) if s == "round_robin" => Ok(Balancing::RoundRobin),
        Some(given) => Err(err(
            "load_balancing",
            format!("must be \"least_request\" or \"round_robin\", got {given}"),
        )),
    }
}

/// `hosts`: `None` when absent (every request is the filter's).
pub(super) fn host_patterns(
    hosts: Key<Vec<Given<String>>>,
) -> Result<Option<Vec<HostPattern>>, ConfigError> {
    let key = "hosts";
    let items = match hosts.0 {
        None => return Ok(None),
        Some(Given::Expected(items)) => items,
        Some(Given::Other(value)) => {
            return Err(err(
                key,
                format!(
                    "must be an array of hosts like \"alternator.example\", \
                     \"alternator.example:8000\" or \"*.alternator.example\", got {value}"
                ),
            ))
        }
    };
    if items.is_empty() {
        return Err(err(
            key,
            "must not be empty: an empty list would pass every request, routing none; \
             leave \"hosts\" out to route every request",
        ));
    }
    if items.len() > MAX_HOSTS {
        return Err(err(
            key,
            format!(
                "lists {} hosts; at most {MAX_HOSTS} are accepted",
                items.len()
            ),
        ));
    }
    let mut patterns: Vec<HostPattern> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let pattern = match item {
            Given::Expected(s) => s
                .parse::<HostPattern>()
                .map_err(|e| err(key, format!("entry {i}: {e}")))?,
            Given::Other(other) => {
                return Err(err(key, format!("entry {i} must be a string, got {other}")))
            }
        };
        if let Some(j) = patterns.iter().position(|p| *p == pattern) {
            return Err(err(key, format!("entry {i} repeats entry {j}")));
        }
        patterns.push(pattern);
    }
    Ok(Some(patterns))
}
