//! The filter's configuration: the JSON in the Wasm filter's `configuration`.
//!
//! Validation is strict because a typo in a proxy config otherwise shows up as
//! silently wrong routing much later: an unknown key, a bad value or a missing
//! required key is refused, and the error names the key (and, in a list, the
//! entry) so the single log line Envoy prints is enough to fix it.
//!
//! serde reads the document into `document::Document`, whose values are
//! `document::Given`: the expected form, or whatever JSON stood there
//! instead. Deserializing therefore only fails on the document's own shape
//! (bad JSON, an unknown key, a key given twice), and every refused value is
//! refused afterwards, by code that can quote it and say what was expected.
//!
//! Each group of keys is validated in its own module, next to its limits
//! and defaults: `nodes` (`seeds`, `port`, `allowed_cidrs`,
//! `discovery_cluster`, `verify_node_san`), `timing` (refresh intervals
//! and the discovery timeout), `health` (when a node is taken out, how
//! often it is probed), `routing` (scopes), `affinity` (key route
//! affinity), `requests` (`hosts`, `load_balancing`) and `stats`
//! (`stat_prefix`); `values` reads the integers, flags and names they
//! share, `given` holds the forms values are read in, and `error` the
//! refusal.

mod affinity;
mod document;
mod error;
mod given;
mod health;
mod nodes;
mod requests;
mod routing;
mod stats;
mod timing;
mod values;

use crate::model::config::{Config, Scope};
use crate::model::{NodeAddr, Quoted};
use document::Document;
use error::{document_err, err};
use serde::de::IgnoredAny;
use values::optional_quoted;

pub use affinity::MAX_PARTITION_KEYS;
pub use document::KEYS;
pub use error::ConfigError;
pub use health::{
    DEFAULT_DOWN_AFTER_FAILURES, DEFAULT_DOWN_AFTER_RESETS, DEFAULT_DOWN_PROBE_INTERVAL_MS,
    DEFAULT_QUARANTINE_PROBE_INTERVAL_MS,
};
pub use nodes::{DEFAULT_DISCOVERY_CLUSTER, DEFAULT_PORT, MAX_SEEDS};
pub use requests::MAX_HOSTS;
pub use routing::MAX_SCOPES;
pub use timing::{
    DEFAULT_DISCOVERY_TIMEOUT_MS, DEFAULT_IDLE_AFTER_MS, DEFAULT_IDLE_REFRESH_INTERVAL_MS,
    DEFAULT_REFRESH_INTERVAL_MS,
};

impl Config {
    /// Parses and validates the filter configuration.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(err("seeds", "is required, but the configuration is empty"));
        }
        // The syntax is checked on its own first, so that a broken document
        // is reported as broken, not by whichever key precedes the break.
        serde_json::from_slice::<IgnoredAny>(bytes)
            .map_err(|e| document_err(format!("not valid JSON: {e}")))?;
        // A derived struct would also take an array of the values in field
        // order.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(document_err("must be a JSON object"));
        }
        let document: Document =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes))
                .map_err(document::shape_error)?;
        document.validate()
    }

    /// The identity of the discovery this configuration performs. Filters
    /// configured alike share one poller and one node list; different ones
    /// (another cluster, other seed groups, other scopes) must not see each
    /// other's state, even in an Istio proxy where every plugin shares one
    /// `vm_id`. Affinity settings, `scheme` and `hosts` only change how
    /// requests are routed over the lists (or which are), so filters that
    /// differ only there share them.
    /// A `stat_prefix` names an instance apart: it gets its own poller, so
    /// that its discovery figures are its own. `allowed_cidrs` filters the
    /// lists as they are read, so two instances (or the old and new VMs of a
    /// configuration change) with other ranges must not share them either.
    ///
    /// Names are quoted so that no choice of names makes two different
    /// configurations collide.
    pub fn discovery_identity(&self) -> String {
        let groups: Vec<String> = self
            .seed_groups
            .iter()
            .map(|g| {
                let seeds: Vec<String> = g.seeds.iter().map(NodeAddr::to_string).collect();
                format!(
                    "{}={}",
                    optional_quoted(g.datacenter.as_deref()),
                    seeds.join(",")
                )
            })
            .collect();
        let scopes: Vec<String> = self
            .routing
            .iter()
            .map(|s| match s {
                Scope::Cluster => "cluster".to_string(),
                Scope::Filter { dc, rack } => format!(
                    "{}/{}",
                    optional_quoted(dc.as_deref()),
                    optional_quoted(rack.as_deref())
                ),
            })
            .collect();
        let identity = format!(
            "{}|{}|{}|{}",
            groups.join(";"),
            self.port,
            Quoted(&self.discovery_cluster),
            scopes.join(";")
        );
        // Without ranges or a prefix, the identity is what it always was,
        // so an upgrade keeps sharing with VMs of the previous build.
        let identity = if self.allowed_cidrs.is_empty() {
            identity
        } else {
            // The ranges as a set: the order they are written in is no
            // difference.
            let mut ranges: Vec<String> =
                self.allowed_cidrs.iter().map(|c| c.to_string()).collect();
            ranges.sort();
            ranges.dedup();
            format!("{identity}|allowed={}", ranges.join(","))
        };
        match &self.stat_prefix {
            None => identity,
            Some(prefix) => format!("{identity}|{}", Quoted(prefix)),
        }
    }
}

#[cfg(test)]
mod tests;
