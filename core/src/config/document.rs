//! The configuration document as serde reads it, before validation: one
//! field per key, each value kept in whatever form it came (`Given`), and
//! the refusal for a document serde could not read at all.

use super::error::{document_err, err, ConfigError};
use super::given::{Given, Key, Members};
use super::{affinity, health, nodes, requests, routing, stats, timing};
use crate::model::config::Config;
use serde::Deserialize;
use serde_path_to_error::Segment;

/// Every key the filter understands, in the order the README documents them.
/// The fields of [`Document`] are the same keys (a test holds them equal);
/// this list is what an "unknown key" refusal offers instead.
pub const KEYS: [&str; 22] = [
    "seeds",
    "port",
    "discovery_cluster",
    "refresh_interval_ms",
    "idle_refresh_interval_ms",
    "idle_after_ms",
    "discovery_timeout_ms",
    "routing",
    "datacenter",
    "rack",
    "down_after_failures",
    "down_after_resets",
    "down_probe_interval_ms",
    "quarantine_probe_interval_ms",
    "allowed_cidrs",
    "verify_node_san",
    "key_route_affinity",
    "partition_keys",
    "scheme",
    "stat_prefix",
    "load_balancing",
    "hosts",
];

/// The configuration as written: one field per key of [`KEYS`].
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Document {
    seeds: Key<nodes::SeedsForm>,
    port: Key<u16>,
    discovery_cluster: Key<String>,
    refresh_interval_ms: Key<u64>,
    idle_refresh_interval_ms: Key<u64>,
    idle_after_ms: Key<u64>,
    discovery_timeout_ms: Key<u64>,
    routing: Key<Vec<Given<routing::ScopeForm>>>,
    datacenter: Key<String>,
    rack: Key<String>,
    down_after_failures: Key<u32>,
    down_after_resets: Key<u32>,
    down_probe_interval_ms: Key<u64>,
    quarantine_probe_interval_ms: Key<u64>,
    allowed_cidrs: Key<Vec<Given<String>>>,
    verify_node_san: Key<bool>,
    key_route_affinity: Key<String>,
    partition_keys: Key<Members<Given<String>>>,
    scheme: Key<String>,
    stat_prefix: Key<String>,
    load_balancing: Key<String>,
    hosts: Key<Vec<Given<String>>>,
}

/// The refusal for a document serde could not read. Values are [`Given`],
/// so what is left is the object itself: a key not in [`KEYS`] (its name
/// comes from the error's path), a key given twice (serde's derive names it
/// only in its message, "duplicate field `port`"), or what the syntax check
/// lets through: a number too large even for a float, a lone surrogate.
pub(super) fn shape_error(e: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    if e.inner().is_syntax() || e.inner().is_eof() {
        return document_err(format!("not valid JSON: {}", e.into_inner()));
    }
    let key = match e.path().iter().next() {
        Some(Segment::Map { key }) => Some(key.clone()),
        _ => None,
    };
    if let Some(unknown) = key.as_deref().filter(|k| !KEYS.contains(k)) {
        return err(
            unknown,
            format!("unknown key (known keys: {})", KEYS.join(", ")),
        );
    }
    let message = e.into_inner().to_string();
    if let Some(twice) = KEYS
        .iter()
        .find(|k| message.starts_with(&format!("duplicate field `{k}`")))
    {
        return err(twice, "is given twice");
    }
    ConfigError {
        key,
        problem: message,
    }
}

impl Document {
    /// Each key group validates its own keys, in this order: of several
    /// refused keys, the first is the one the log line names.
    pub(super) fn validate(self) -> Result<Config, ConfigError> {
        let Document {
            seeds,
            port,
            discovery_cluster,
            refresh_interval_ms,
            idle_refresh_interval_ms,
            idle_after_ms,
            discovery_timeout_ms,
            routing,
            datacenter,
            rack,
            down_after_failures,
            down_after_resets,
            down_probe_interval_ms,
            quarantine_probe_interval_ms,
            allowed_cidrs,
            verify_node_san,
            key_route_affinity,
            partition_keys,
            scheme,
            stat_prefix,
            load_balancing,
            hosts,
        } = self;
        let nodes = nodes::validate(seeds, port, allowed_cidrs, discovery_cluster)?;
        let (refresh_interval_ms, discovery_timeout_ms) =
            timing::polling(refresh_interval_ms, discovery_timeout_ms)?;
        let health = health::validate(
            down_probe_interval_ms,
            quarantine_probe_interval_ms,
            down_after_failures,
            down_after_resets,
        )?;
        let (idle_refresh_interval_ms, idle_after_ms) =
            timing::idle(idle_refresh_interval_ms, idle_after_ms)?;
        let routing = routing::scopes(routing, datacenter, rack)?;
        let verify_node_san = nodes::verify_node_san(verify_node_san)?;
        let affinity = affinity::validate(key_route_affinity, partition_keys, scheme)?;
        let stat_prefix = stats::stat_prefix_of(stat_prefix)?;
        let load_balancing = requests::balancing(load_balancing)?;
        let hosts = requests::host_patterns(hosts)?;
        Ok(Config {
            seeds: nodes.seeds,
            seed_groups: nodes.seed_groups,
            port: nodes.port,
            discovery_cluster: nodes.discovery_cluster,
            refresh_interval_ms,
            discovery_timeout_ms,
            probe_periods: health.probe_periods,
            down_after_failures: health.down_after_failures,
            down_after_resets: health.down_after_resets,
            idle_refresh_interval_ms,
            idle_after_ms,
            routing,
            allowed_cidrs: nodes.allowed_cidrs,
            verify_node_san,
            key_route_affinity: affinity.mode,
            partition_keys: affinity.partition_keys,
            https: affinity.https,
            stat_prefix,
            load_balancing,
            hosts,
        })
    }
}
