//! The filter's configuration: the JSON in the Wasm filter's `configuration`.
//!
//! Validation is strict because a typo in a proxy config otherwise shows up as
//! silently wrong routing much later: an unknown key, a bad value or a missing
//! required key is refused, and the error names the key so the single log line
//! Envoy prints is enough to fix it.

use crate::address::{AddrError, NodeAddr};
use crate::cidr::{self, Cidr};
use crate::health::ProbePeriods;
use crate::json::{self, Json};

/// The members of the configuration object.
type Map = [(String, Json)];
use std::fmt;

pub const DEFAULT_PORT: u16 = 8000;
pub const DEFAULT_DISCOVERY_CLUSTER: &str = "alternator_discovery";
pub const DEFAULT_REFRESH_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_DISCOVERY_TIMEOUT_MS: u64 = 2_000;
/// The client libraries poll every minute when idle.
pub const DEFAULT_IDLE_REFRESH_INTERVAL_MS: u64 = 60_000;
/// "Idle" means a minute without requests, as in the client libraries.
pub const DEFAULT_IDLE_AFTER_MS: u64 = 60_000;
/// As the client libraries: a Down node is retried every 30 s.
pub const DEFAULT_DOWN_PROBE_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_QUARANTINE_PROBE_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_DOWN_AFTER_FAILURES: u64 = 1;

/// Polling faster than this would only load the cluster; one day is the
/// longest interval that still makes sense for a node list.
const REFRESH_INTERVAL_RANGE: (u64, u64) = (100, 86_400_000);
const DISCOVERY_TIMEOUT_RANGE: (u64, u64) = (10, 300_000);
const PROBE_INTERVAL_RANGE: (u64, u64) = (100, 3_600_000);
const DOWN_AFTER_FAILURES_RANGE: (u64, u64) = (1, 100);
const MAX_CIDRS: usize = 256;
const MAX_SEEDS: usize = 256;
const MAX_NAME_LEN: usize = 255;

/// Every key the filter understands, in the order the README documents them.
pub const KEYS: [&str; 14] = [
    "seeds",
    "port",
    "discovery_cluster",
    "refresh_interval_ms",
    "idle_refresh_interval_ms",
    "idle_after_ms",
    "discovery_timeout_ms",
    "datacenter",
    "rack",
    "down_after_failures",
    "down_probe_interval_ms",
    "quarantine_probe_interval_ms",
    "allowed_cidrs",
    "verify_node_san",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where discovery starts, and the node list until it first succeeds.
    pub seeds: Vec<NodeAddr>,
    /// Alternator port of every discovered node (`/localnodes` answers bare IPs).
    pub port: u16,
    /// Envoy cluster used for `/localnodes` callouts.
    pub discovery_cluster: String,
    pub refresh_interval_ms: u64,
    /// Used instead of `refresh_interval_ms` after `idle_after_ms` without
    /// requests.
    pub idle_refresh_interval_ms: u64,
    pub idle_after_ms: u64,
    pub discovery_timeout_ms: u64,
    pub datacenter: Option<String>,
    pub rack: Option<String>,
    /// Consecutive connection failures a worker sees before a node is Down.
    pub down_after_failures: u32,
    pub probe_periods: ProbePeriods,
    /// Where requests may ever go; empty means anywhere.
    pub allowed_cidrs: Vec<Cidr>,
    /// With TLS to the nodes: have Envoy check, per request, that the
    /// chosen node's certificate names the node's IP.
    pub verify_node_san: bool,
}

/// A refused configuration: which key, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending key; `None` when the document as a whole is wrong.
    pub key: Option<String>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "invalid configuration: key \"{key}\": {}", self.problem),
            None => write!(f, "invalid configuration: {}", self.problem),
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: Some(key.to_string()),
        problem: problem.into(),
    }
}

impl Config {
    /// Parses and validates the filter configuration.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(err("seeds", "is required, but the configuration is empty"));
        }
        let value = json::parse(bytes).map_err(|e| ConfigError {
            key: None,
            problem: format!("not valid JSON: {e}"),
        })?;
        let Json::Object(members) = value else {
            return Err(ConfigError {
                key: None,
                problem: "must be a JSON object".to_string(),
            });
        };
        let map = members.as_slice();
        if let Some((unknown, _)) = map.iter().find(|(k, _)| !KEYS.contains(&k.as_str())) {
            return Err(err(
                unknown,
                format!("unknown key (known keys: {})", KEYS.join(", ")),
            ));
        }
        for (i, (key, _)) in map.iter().enumerate() {
            if map.iter().skip(i + 1).any(|(other, _)| other == key) {
                return Err(err(key, "is given twice"));
            }
        }
        let port = match get(map, "port") {
            None => DEFAULT_PORT,
            Some(v) => u16::try_from(integer(v, "port", 1, 65_535)?).unwrap_or(DEFAULT_PORT),
        };
        let allowed_cidrs = cidrs(map)?;
        let seeds = seeds(map, port)?;
        if let Some(outside) = seeds.iter().find(|s| !cidr::allowed(&allowed_cidrs, &s.ip)) {
            return Err(err("seeds", format!("{outside} is outside allowed_cidrs")));
        }
        let discovery_cluster = optional_name(map, "discovery_cluster")?
            .unwrap_or_else(|| DEFAULT_DISCOVERY_CLUSTER.to_string());
        let refresh_interval_ms = optional_integer(
            map,
            "refresh_interval_ms",
            REFRESH_INTERVAL_RANGE,
            DEFAULT_REFRESH_INTERVAL_MS,
        )?;
        let discovery_timeout_ms = optional_integer(
            map,
            "discovery_timeout_ms",
            DISCOVERY_TIMEOUT_RANGE,
            DEFAULT_DISCOVERY_TIMEOUT_MS,
        )?;
        let interval = |key, default| optional_integer(map, key, PROBE_INTERVAL_RANGE, default);
        let probe_periods = ProbePeriods {
            down_ms: interval("down_probe_interval_ms", DEFAULT_DOWN_PROBE_INTERVAL_MS)?,
            quarantine_ms: interval(
                "quarantine_probe_interval_ms",
                DEFAULT_QUARANTINE_PROBE_INTERVAL_MS,
            )?,
        };
        let down_after_failures = optional_integer(
            map,
            "down_after_failures",
            DOWN_AFTER_FAILURES_RANGE,
            DEFAULT_DOWN_AFTER_FAILURES,
        )?;
        Ok(Config {
            seeds,
            port,
            discovery_cluster,
            refresh_interval_ms,
            idle_refresh_interval_ms: optional_integer(
                map,
                "idle_refresh_interval_ms",
                REFRESH_INTERVAL_RANGE,
                DEFAULT_IDLE_REFRESH_INTERVAL_MS,
            )?,
            idle_after_ms: optional_integer(
                map,
                "idle_after_ms",
                REFRESH_INTERVAL_RANGE,
                DEFAULT_IDLE_AFTER_MS,
            )?,
            discovery_timeout_ms,
            datacenter: optional_name(map, "datacenter")?,
            rack: optional_name(map, "rack")?,
            down_after_failures: u32::try_from(down_after_failures).unwrap_or(1),
            probe_periods,
            allowed_cidrs,
            verify_node_san: optional_bool(map, "verify_node_san", false)?,
        })
    }

    /// The identity of the discovery this configuration performs. Filters
    /// configured alike share one poller and one node list; different ones
    /// (another cluster, another dc) must not see each other's state, even in
    /// an Istio proxy where every plugin shares one `vm_id`.
    pub fn discovery_identity(&self) -> String {
        let seeds: Vec<String> = self.seeds.iter().map(NodeAddr::to_string).collect();
        format!(
            "{}|{}|{}|{}|{}",
            seeds.join(","),
            self.port,
            self.discovery_cluster,
            self.datacenter.as_deref().unwrap_or(""),
            self.rack.as_deref().unwrap_or("")
        )
    }
}

/// The value of `key`; [`Config::parse`] has already refused duplicates.
fn get<'a>(map: &'a Map, key: &str) -> Option<&'a Json> {
    map.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn seeds(map: &Map, port: u16) -> Result<Vec<NodeAddr>, ConfigError> {
    let Some(value) = get(map, "seeds") else {
        return Err(err(
            "seeds",
            "is required: list at least one Alternator node address",
        ));
    };
    let Json::Array(items) = value else {
        return Err(err(
            "seeds",
            "must be an array of node addresses like \"10.0.0.1\" or \"10.0.0.1:8000\"",
        ));
    };
    if items.is_empty() {
        return Err(err("seeds", "must not be empty"));
    }
    if items.len() > MAX_SEEDS {
        return Err(err(
            "seeds",
            format!(
                "lists {} addresses; at most {MAX_SEEDS} are accepted",
                items.len()
            ),
        ));
    }
    let mut seeds = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Json::String(s) = item else {
            return Err(err(
                "seeds",
                format!("entry {i} must be a string, got {item}"),
            ));
        };
        let addr = NodeAddr::parse(s, port)
            .map_err(|e: AddrError| err("seeds", format!("entry {i}: {e}")))?;
        seeds.push(addr);
    }
    seeds.sort_unstable();
    seeds.dedup();
    Ok(seeds)
}

fn cidrs(map: &Map) -> Result<Vec<Cidr>, ConfigError> {
    let key = "allowed_cidrs";
    let Some(value) = get(map, key) else {
        return Ok(Vec::new());
    };
    let Json::Array(items) = value else {
        return Err(err(key, "must be an array of ranges like \"10.0.0.0/8\""));
    };
    if items.is_empty() || items.len() > MAX_CIDRS {
        return Err(err(
            key,
            format!("must list 1 to {MAX_CIDRS} ranges (leave it out to allow any address)"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Json::String(s) => s.parse().map_err(|e| err(key, format!("entry {i}: {e}"))),
            other => Err(err(key, format!("entry {i} must be a string, got {other}"))),
        })
        .collect()
}

fn integer(v: &Json, key: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(err(
            key,
            format!("must be an integer from {min} to {max}, got {v}"),
        )),
    }
}

fn optional_integer(
    map: &Map,
    key: &str,
    (min, max): (u64, u64),
    default: u64,
) -> Result<u64, ConfigError> {
    get(map, key).map_or(Ok(default), |v| integer(v, key, min, max))
}

fn optional_bool(map: &Map, key: &str, default: bool) -> Result<bool, ConfigError> {
    match get(map, key) {
        None => Ok(default),
        Some(Json::Bool(b)) => Ok(*b),
        Some(v) => Err(err(key, format!("must be true or false, got {v}"))),
    }
}

fn optional_name(map: &Map, key: &str) -> Result<Option<String>, ConfigError> {
    match get(map, key) {
        None => Ok(None),
        Some(Json::String(s)) if !s.is_empty() && s.len() <= MAX_NAME_LEN && !s.chars().any(char::is_control) => {
            Ok(Some(s.clone()))
        }
        Some(v) => Err(err(
            key,
            format!("must be a non-empty string of at most {MAX_NAME_LEN} characters without control characters, got {v}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s.as_bytes())
    }

    fn key_of(s: &str) -> Option<String> {
        parse(s).unwrap_err().key
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let c = parse(r#"{"seeds": ["10.0.0.2", "10.0.0.1:9000"]}"#).unwrap();
        let seeds: Vec<String> = c.seeds.iter().map(|s| s.to_string()).collect();
        assert_eq!(seeds, ["10.0.0.1:9000", "10.0.0.2:8000"]);
        assert_eq!(c.port, 8000);
        assert_eq!(c.discovery_cluster, "alternator_discovery");
        assert_eq!(c.refresh_interval_ms, 1000);
        assert_eq!(c.discovery_timeout_ms, 2000);
        assert_eq!(c.datacenter, None);
        assert_eq!(c.rack, None);
        assert_eq!(c.idle_refresh_interval_ms, 60_000);
        assert_eq!(c.idle_after_ms, 60_000);
        assert_eq!(c.down_after_failures, 1);
        assert_eq!(
            c.probe_periods,
            ProbePeriods {
                down_ms: 30_000,
                quarantine_ms: 1_000
            }
        );
        assert!(c.allowed_cidrs.is_empty());
    }

    #[test]
    fn health_and_range_keys_are_read() {
        let c = parse(
            r#"{"seeds": ["10.0.0.1"], "idle_refresh_interval_ms": 5000, "down_after_failures": 3,
                "down_probe_interval_ms": 2000, "quarantine_probe_interval_ms": 300,
                "allowed_cidrs": ["10.0.0.0/8", "fd00::/8"]}"#,
        )
        .unwrap();
        assert_eq!(c.idle_refresh_interval_ms, 5000);
        assert_eq!(c.down_after_failures, 3);
        assert_eq!(
            c.probe_periods,
            ProbePeriods {
                down_ms: 2000,
                quarantine_ms: 300
            }
        );
        assert_eq!(c.allowed_cidrs.len(), 2);
    }

    #[test]
    fn seeds_outside_allowed_cidrs_are_refused() {
        let e = parse(r#"{"seeds": ["10.0.0.1", "192.0.2.1"], "allowed_cidrs": ["10.0.0.0/8"]}"#)
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("seeds"));
        assert!(
            e.problem
                .contains("192.0.2.1:8000 is outside allowed_cidrs"),
            "{e}"
        );
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            r#"{"seeds": ["::1"], "port": 8043, "discovery_cluster": "disc",
                "refresh_interval_ms": 250, "discovery_timeout_ms": 900,
                "datacenter": "eu west", "rack": "r1"}"#,
        )
        .unwrap();
        assert_eq!(c.seeds[0].to_string(), "[::1]:8043");
        assert_eq!(c.port, 8043);
        assert_eq!(c.discovery_cluster, "disc");
        assert_eq!(c.refresh_interval_ms, 250);
        assert_eq!(c.discovery_timeout_ms, 900);
        assert_eq!(c.datacenter.as_deref(), Some("eu west"));
        assert_eq!(c.rack.as_deref(), Some("r1"));
    }

    #[test]
    fn seeds_are_deduplicated() {
        let c = parse(r#"{"seeds": ["10.0.0.1", "10.0.0.1:8000", "::ffff:10.0.0.1"]}"#).unwrap();
        assert_eq!(c.seeds.len(), 1);
    }

    #[test]
    fn missing_or_empty_seeds_are_named() {
        assert_eq!(key_of(r#"{}"#).as_deref(), Some("seeds"));
        assert_eq!(key_of(r#"{"seeds": []}"#).as_deref(), Some("seeds"));
        assert_eq!(key_of(r#"{"seeds": "10.0.0.1"}"#).as_deref(), Some("seeds"));
        assert_eq!(key_of(r#"{"seeds": [1]}"#).as_deref(), Some("seeds"));
        assert_eq!(
            key_of(r#"{"seeds": ["alternator.local"]}"#).as_deref(),
            Some("seeds")
        );
        assert_eq!(key_of("").as_deref(), Some("seeds"));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse(r#"{"seeds": ["10.0.0.1"], "refresh_intervall_ms": 5}"#).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("refresh_intervall_ms"));
        assert!(e.to_string().contains("unknown key"), "{e}");
    }

    #[test]
    fn a_key_given_twice_is_named() {
        let e = parse(r#"{"seeds": ["10.0.0.1"], "port": 8000, "port": 9000}"#).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("port"));
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            (r#""port": 0"#, "port"),
            (r#""verify_node_san": "yes""#, "verify_node_san"),
            (r#""port": 65536"#, "port"),
            (r#""port": "8000""#, "port"),
            (r#""port": 80.5"#, "port"),
            (r#""refresh_interval_ms": 5"#, "refresh_interval_ms"),
            (r#""refresh_interval_ms": -1"#, "refresh_interval_ms"),
            (r#""discovery_timeout_ms": null"#, "discovery_timeout_ms"),
            (r#""discovery_cluster": """#, "discovery_cluster"),
            (r#""datacenter": 3"#, "datacenter"),
            (r#""rack": "a\nb""#, "rack"),
            (r#""down_after_failures": 0"#, "down_after_failures"),
            (r#""down_probe_interval_ms": 50"#, "down_probe_interval_ms"),
            (
                r#""quarantine_probe_interval_ms": true"#,
                "quarantine_probe_interval_ms",
            ),
            (
                r#""idle_refresh_interval_ms": 1"#,
                "idle_refresh_interval_ms",
            ),
            (r#""allowed_cidrs": []"#, "allowed_cidrs"),
            (r#""allowed_cidrs": ["10.0.0.0/40"]"#, "allowed_cidrs"),
            (r#""allowed_cidrs": "10.0.0.0/8""#, "allowed_cidrs"),
        ];
        for (fragment, key) in cases {
            let doc = format!(r#"{{"seeds": ["10.0.0.1"], {fragment}}}"#);
            let e = parse(&doc).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{doc}");
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn document_errors_have_no_key() {
        assert_eq!(key_of("{"), None);
        assert_eq!(key_of("[]"), None);
        assert!(parse("{")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
    }

    #[test]
    fn identity_differs_when_discovery_differs() {
        let a = parse(r#"{"seeds": ["10.0.0.1"]}"#).unwrap();
        let b = parse(r#"{"seeds": ["10.0.0.1"], "datacenter": "dc2"}"#).unwrap();
        let c = parse(r#"{"seeds": ["10.0.0.1"], "refresh_interval_ms": 500}"#).unwrap();
        assert_ne!(a.discovery_identity(), b.discovery_identity());
        assert_eq!(a.discovery_identity(), c.discovery_identity());
    }
}
