//! The filter's configuration: the JSON in the Wasm filter's `configuration`.
//!
//! Validation is strict because a typo in a proxy config otherwise shows up as
//! silently wrong routing much later: an unknown key, a bad value or a missing
//! required key is refused, and the error names the key (and, in a list, the
//! entry) so the single log line Envoy prints is enough to fix it.

use crate::json::{self, Json};
use crate::model::cidr::{self, Cidr};
use crate::model::config::{Config, Mode, Scope, SeedGroup};
use crate::model::health::ProbePeriods;
use crate::model::{AddrError, NodeAddr, Quoted};

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
/// Seed addresses in all groups together.
pub const MAX_SEEDS: usize = 256;
const MAX_NAME_LEN: usize = 255;
/// Every scope costs one `/localnodes` request per round (more for
/// "cluster"); a fallback chain longer than rack, dc, a few other dcs and
/// the cluster has no use.
pub const MAX_SCOPES: usize = 8;
/// Tables with a configured partition key; more would belong in a learned
/// table (`DescribeTable`) rather than in a proxy config.
pub const MAX_PARTITION_KEYS: usize = 1024;

/// Every key the filter understands, in the order the README documents them.
pub const KEYS: [&str; 18] = [
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
    "down_probe_interval_ms",
    "quarantine_probe_interval_ms",
    "allowed_cidrs",
    "verify_node_san",
    "key_route_affinity",
    "partition_keys",
    "scheme",
];

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
        if let Some(key) = first_duplicate(map) {
            return Err(err(key, "is given twice"));
        }
        let port = match get(map, "port") {
            None => DEFAULT_PORT,
            Some(v) => u16::try_from(integer(v, "port", 1, 65_535)?).unwrap_or(DEFAULT_PORT),
        };
        let allowed_cidrs = cidrs(map)?;
        let seed_groups = seed_groups(map, port)?;
        let mut seeds: Vec<NodeAddr> = seed_groups
            .iter()
            .flat_map(|g| g.seeds.iter().copied())
            .collect();
        crate::model::sorted::sort_dedup(&mut seeds);
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
            seed_groups,
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
            routing: routing(map)?,
            down_after_failures: u32::try_from(down_after_failures).unwrap_or(1),
            probe_periods,
            allowed_cidrs,
            verify_node_san: optional_bool(map, "verify_node_san", false)?,
            key_route_affinity: key_route_affinity(map)?,
            partition_keys: partition_keys(map)?,
            https: https(map)?,
        })
    }

    /// The identity of the discovery this configuration performs. Filters
    /// configured alike share one poller and one node list; different ones
    /// (another cluster, other seed groups, other scopes) must not see each
    /// other's state, even in an Istio proxy where every plugin shares one
    /// `vm_id`. Affinity settings and `scheme` only change how requests are
    /// routed over the lists, so filters that differ only there share them.
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
        format!(
            "{}|{}|{}|{}",
            groups.join(";"),
            self.port,
            Quoted(&self.discovery_cluster),
            scopes.join(";")
        )
    }
}

fn optional_quoted(name: Option<&str>) -> String {
    name.map_or_else(|| "-".to_string(), |n| Quoted(n).to_string())
}

/// The value of `key`; [`Config::parse`] has already refused duplicates.
fn get<'a>(map: &'a Map, key: &str) -> Option<&'a Json> {
    map.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The first member name that occurs twice (the JSON reader keeps both).
fn first_duplicate(map: &Map) -> Option<&str> {
    map.iter().enumerate().find_map(|(i, (key, _))| {
        map.iter()
            .skip(i + 1)
            .any(|(other, _)| other == key)
            .then_some(key.as_str())
    })
}

const SEEDS_FORMS: &str =
    "must be an array of node addresses like \"10.0.0.1\" or \"10.0.0.1:8000\", \
     or an object mapping each datacenter name to such an array";

fn seed_groups(map: &Map, port: u16) -> Result<Vec<SeedGroup>, ConfigError> {
    let Some(value) = get(map, "seeds") else {
        return Err(err(
            "seeds",
            "is required: list at least one Alternator node address",
        ));
    };
    let total: usize = match value {
        Json::Array(items) => items.len(),
        Json::Object(members) => members
            .iter()
            .map(|(_, v)| match v {
                Json::Array(items) => items.len(),
                _ => 0,
            })
            .sum(),
        _ => return Err(err("seeds", SEEDS_FORMS)),
    };
    if total > MAX_SEEDS {
        return Err(err(
            "seeds",
            format!("lists {total} addresses; at most {MAX_SEEDS} are accepted"),
        ));
    }
    match value {
        Json::Object(members) => named_groups(members, port),
        Json::Array(items) if !items.is_empty() => Ok(vec![SeedGroup {
            datacenter: None,
            seeds: addresses(items, port, "")?,
        }]),
        _ => Err(err("seeds", "must not be empty")),
    }
}

/// `seeds` as an object: datacenter name -> non-empty address array. Groups
/// come out sorted by name so that the member order in the document changes
/// nothing (not even the discovery identity).
fn named_groups(members: &Map, port: u16) -> Result<Vec<SeedGroup>, ConfigError> {
    if members.is_empty() {
        return Err(err("seeds", "must name at least one datacenter"));
    }
    if let Some(dc) = first_duplicate(members) {
        return Err(err(
            "seeds",
            format!("datacenter {} is given twice", Quoted(dc)),
        ));
    }
    let mut groups = Vec::with_capacity(members.len());
    for (dc, value) in members {
        if !valid_name(dc) {
            return Err(err(
                "seeds",
                format!("datacenter name {} {}", Quoted(dc), NAME_RULE),
            ));
        }
        let context = format!("datacenter {}: ", Quoted(dc));
        let Json::Array(items) = value else {
            return Err(err(
                "seeds",
                format!("{context}must be an array of node addresses, got {value}"),
            ));
        };
        if items.is_empty() {
            return Err(err("seeds", format!("{context}must not be empty")));
        }
        groups.push(SeedGroup {
            datacenter: Some(dc.clone()),
            seeds: addresses(items, port, &context)?,
        });
    }
    groups.sort_by(|a, b| a.datacenter.cmp(&b.datacenter));
    // A node is in exactly one datacenter; listing it twice is a mistake
    // that would also make "ask a seed of dc X" ambiguous.
    for (i, group) in groups.iter().enumerate() {
        for other in groups.iter().skip(i + 1) {
            if let Some(shared) = group.seeds.iter().find(|s| other.seeds.contains(s)) {
                return Err(err(
                    "seeds",
                    format!(
                        "{shared} is listed under both datacenter {} and {}",
                        optional_quoted(group.datacenter.as_deref()),
                        optional_quoted(other.datacenter.as_deref())
                    ),
                ));
            }
        }
    }
    Ok(groups)
}

/// One group's addresses, sorted and deduplicated; `context` prefixes
/// errors (the datacenter, in the object form).
fn addresses(items: &[Json], port: u16, context: &str) -> Result<Vec<NodeAddr>, ConfigError> {
    let mut seeds = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Json::String(s) = item else {
            return Err(err(
                "seeds",
                format!("{context}entry {i} must be a string, got {item}"),
            ));
        };
        let addr = NodeAddr::parse(s, port)
            .map_err(|e: AddrError| err("seeds", format!("{context}entry {i}: {e}")))?;
        seeds.push(addr);
    }
    crate::model::sorted::sort_dedup(&mut seeds);
    Ok(seeds)
}

/// `routing`, or the scope the old `datacenter`/`rack` keys stand for, or
/// the default `["cluster"]`.
fn routing(map: &Map) -> Result<Vec<Scope>, ConfigError> {
    let key = "routing";
    let dc = optional_name(map, "datacenter")?;
    let rack = optional_name(map, "rack")?;
    let Some(value) = get(map, key) else {
        if dc.is_none() && rack.is_none() {
            return Ok(vec![Scope::Cluster]);
        }
        return Ok(vec![Scope::Filter { dc, rack }]);
    };
    if dc.is_some() || rack.is_some() {
        return Err(err(
            key,
            "cannot be combined with \"datacenter\" or \"rack\", which are a shorthand for a \
             single scope; write that scope in \"routing\" instead",
        ));
    }
    let Json::Array(items) = value else {
        return Err(err(
            key,
            format!(
                "must be an array of scopes like {{\"dc\": \"dc1\", \"rack\": \"rack1\"}}, \
                 {{\"dc\": \"dc1\"}} or \"cluster\", got {value}"
            ),
        ));
    };
    if items.is_empty() || items.len() > MAX_SCOPES {
        return Err(err(
            key,
            format!("must list 1 to {MAX_SCOPES} scopes, got {}", items.len()),
        ));
    }
    let mut scopes: Vec<Scope> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if scopes.last() == Some(&Scope::Cluster) {
            return Err(err(
                key,
                format!(
                    "entry {i} comes after \"cluster\", which already covers every seed \
                     group's datacenter"
                ),
            ));
        }
        let scope = scope(item).map_err(|problem| err(key, format!("entry {i}: {problem}")))?;
        if let Some(j) = scopes.iter().position(|s| *s == scope) {
            return Err(err(key, format!("entry {i} repeats entry {j}")));
        }
        scopes.push(scope);
    }
    Ok(scopes)
}

/// One `routing` entry; the error is the problem without key or index.
fn scope(item: &Json) -> Result<Scope, String> {
    const FORMS: &str = "a scope is {\"dc\": NAME, \"rack\": NAME}, {\"dc\": NAME} or \"cluster\"";
    let members = match item {
        Json::String(s) if s == "cluster" => return Ok(Scope::Cluster),
        Json::Object(members) => members,
        other => return Err(format!("{FORMS}, got {other}")),
    };
    if let Some((unknown, _)) = members.iter().find(|(k, _)| k != "dc" && k != "rack") {
        return Err(format!("unknown member {} ({FORMS})", Quoted(unknown)));
    }
    if let Some(twice) = first_duplicate(members) {
        return Err(format!("member {} is given twice", Quoted(twice)));
    }
    let name = |member: &str| -> Result<Option<String>, String> {
        match get(members, member) {
            None => Ok(None),
            Some(Json::String(s)) if valid_name(s) => Ok(Some(s.clone())),
            Some(v) => Err(format!("\"{member}\" {NAME_RULE}, got {v}")),
        }
    };
    let dc = name("dc")?;
    let rack = name("rack")?;
    if dc.is_none() {
        return Err(format!(
            "a scope needs \"dc\" (a rack is only meaningful within a named datacenter; {FORMS})"
        ));
    }
    Ok(Scope::Filter { dc, rack })
}

fn key_route_affinity(map: &Map) -> Result<Mode, ConfigError> {
    match get(map, "key_route_affinity") {
        None => Ok(Mode::None),
        Some(Json::String(s)) if s == "none" => Ok(Mode::None),
        Some(Json::String(s)) if s == "rmw" => Ok(Mode::Rmw),
        Some(Json::String(s)) if s == "any_write" => Ok(Mode::AnyWrite),
        Some(v) => Err(err(
            "key_route_affinity",
            format!("must be \"none\", \"rmw\" or \"any_write\", got {v}"),
        )),
    }
}

const ATTRIBUTE_RULE: &str = "the partition key attribute must be a non-empty string";

fn partition_keys(map: &Map) -> Result<Vec<(String, String)>, ConfigError> {
    let key = "partition_keys";
    let Some(value) = get(map, key) else {
        return Ok(Vec::new());
    };
    let Json::Object(members) = value else {
        return Err(err(
            key,
            format!(
                "must be an object mapping table names to partition key attribute names, \
                 like {{\"orders\": \"order_id\"}}, got {value}"
            ),
        ));
    };
    if members.len() > MAX_PARTITION_KEYS {
        return Err(err(
            key,
            format!(
                "names {} tables; at most {MAX_PARTITION_KEYS} are accepted",
                members.len()
            ),
        ));
    }
    if let Some(table) = first_duplicate(members) {
        return Err(err(key, format!("table {} is given twice", Quoted(table))));
    }
    let mut tables = Vec::with_capacity(members.len());
    for (table, attribute) in members {
        if table.is_empty() {
            return Err(err(key, "a table name must not be empty"));
        }
        let Json::String(attribute) = attribute else {
            return Err(err(
                key,
                format!("table {}: {ATTRIBUTE_RULE}, got {attribute}", Quoted(table)),
            ));
        };
        if attribute.is_empty() {
            return Err(err(
                key,
                format!("table {}: {ATTRIBUTE_RULE}", Quoted(table)),
            ));
        }
        tables.push((table.clone(), attribute.clone()));
    }
    tables.sort();
    Ok(tables)
}

fn https(map: &Map) -> Result<bool, ConfigError> {
    match get(map, "scheme") {
        None => Ok(false),
        Some(Json::String(s)) if s == "http" => Ok(false),
        Some(Json::String(s)) if s == "https" => Ok(true),
        Some(v) => Err(err(
            "scheme",
            format!("must be \"http\" or \"https\", got {v}"),
        )),
    }
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

/// What [`valid_name`] accepts, for error messages.
const NAME_RULE: &str =
    "must be a non-empty string of at most 255 characters without control characters";

/// Datacenter, rack and cluster names: they go into log lines and (escaped)
/// into `/localnodes` query strings.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && !s.chars().any(char::is_control)
}

fn optional_name(map: &Map, key: &str) -> Result<Option<String>, ConfigError> {
    match get(map, key) {
        None => Ok(None),
        Some(Json::String(s)) if valid_name(s) => Ok(Some(s.clone())),
        Some(v) => Err(err(key, format!("{NAME_RULE}, got {v}"))),
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

    fn filter(dc: Option<&str>, rack: Option<&str>) -> Scope {
        Scope::Filter {
            dc: dc.map(str::to_string),
            rack: rack.map(str::to_string),
        }
    }

    /// The error for `fragment` added to a valid document; it must name
    /// `key` and contain `needle`.
    fn refused(fragment: &str, key: &str, needle: &str) {
        let doc = if fragment.starts_with(r#""seeds""#) {
            format!("{{{fragment}}}")
        } else {
            format!(r#"{{"seeds": ["10.0.0.1"], {fragment}}}"#)
        };
        let e = parse(&doc).expect_err(&doc);
        assert_eq!(e.key.as_deref(), Some(key), "{doc}: {e}");
        assert!(e.to_string().contains(needle), "{doc}: {e}");
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
        assert_eq!(c.routing, [Scope::Cluster]);
        assert_eq!(
            c.seed_groups,
            [SeedGroup {
                datacenter: None,
                seeds: c.seeds.clone()
            }]
        );
        assert_eq!(c.key_route_affinity, Mode::None);
        assert!(c.partition_keys.is_empty());
        assert!(!c.https);
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
        assert_eq!(c.routing, [filter(Some("eu west"), Some("r1"))]);
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
    fn seeds_by_datacenter_form_sorted_groups() {
        let c = parse(
            r#"{"seeds": {"dc2": ["10.0.2.1"], "dc1": ["10.0.1.2", "10.0.1.1:9000", "10.0.1.2"]}}"#,
        )
        .unwrap();
        let names: Vec<Option<&str>> = c
            .seed_groups
            .iter()
            .map(|g| g.datacenter.as_deref())
            .collect();
        assert_eq!(names, [Some("dc1"), Some("dc2")]);
        let dc1: Vec<String> = c.seed_groups[0]
            .seeds
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(dc1, ["10.0.1.1:9000", "10.0.1.2:8000"]);
        let all: Vec<String> = c.seeds.iter().map(|s| s.to_string()).collect();
        assert_eq!(all, ["10.0.1.1:9000", "10.0.1.2:8000", "10.0.2.1:8000"]);
        assert_eq!(c.routing, [Scope::Cluster]);
    }

    #[test]
    fn bad_seed_groups_are_refused() {
        let many: Vec<String> = (0..=MAX_SEEDS)
            .map(|i| format!("\"10.1.{}.{}\"", i / 250, i % 250 + 1))
            .collect();
        let (half_a, half_b) = many.split_at(many.len() / 2);
        let split = format!(
            r#""seeds": {{"a": [{}], "b": [{}]}}"#,
            half_a.join(","),
            half_b.join(",")
        );
        let cases = [
            (r#""seeds": {}"#, "at least one datacenter"),
            (
                r#""seeds": {"dc1": []}"#,
                "datacenter \"dc1\": must not be empty",
            ),
            (
                r#""seeds": {"dc1": "10.0.0.1"}"#,
                "datacenter \"dc1\": must be an array",
            ),
            (r#""seeds": {"": ["10.0.0.1"]}"#, "datacenter name \"\""),
            (r#""seeds": {"d\nc": ["10.0.0.1"]}"#, "control characters"),
            (
                r#""seeds": {"dc1": ["10.0.0.1"], "dc1": ["10.0.0.2"]}"#,
                "datacenter \"dc1\" is given twice",
            ),
            (
                r#""seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2", "10.0.0.1:8000"]}"#,
                "10.0.0.1:8000 is listed under both datacenter \"dc1\" and \"dc2\"",
            ),
            (
                r#""seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2", 7]}"#,
                "datacenter \"dc2\": entry 1 must be a string",
            ),
            (
                r#""seeds": {"dc1": ["10.0.0.1", "host.example"]}"#,
                "datacenter \"dc1\": entry 1:",
            ),
            (r#""seeds": 7"#, "or an object mapping each datacenter"),
            (&split, "lists 257 addresses; at most 256"),
        ];
        for (fragment, needle) in cases {
            refused(fragment, "seeds", needle);
        }
        refused(
            &format!(r#""seeds": [{}]"#, many.join(",")),
            "seeds",
            "lists 257 addresses",
        );
        refused(
            r#""seeds": {"dc1": ["10.0.0.1"], "dc2": ["192.0.2.1"]}, "allowed_cidrs": ["10.0.0.0/8"]"#,
            "seeds",
            "192.0.2.1:8000 is outside allowed_cidrs",
        );
    }

    #[test]
    fn routing_scopes_are_read_in_order() {
        let c = parse(
            r#"{"seeds": {"dc1": ["10.0.0.1"]}, "routing": [{"dc": "dc1", "rack": "r1"}, {"rack": "r2", "dc": "dc2"}, {"dc": "dc1"}, "cluster"]}"#,
        )
        .unwrap();
        assert_eq!(
            c.routing,
            [
                filter(Some("dc1"), Some("r1")),
                filter(Some("dc2"), Some("r2")),
                filter(Some("dc1"), None),
                Scope::Cluster
            ]
        );
        let confined = parse(r#"{"seeds": ["10.0.0.1"], "routing": [{"dc": "dc1"}]}"#).unwrap();
        assert_eq!(confined.routing, [filter(Some("dc1"), None)]);
    }

    #[test]
    fn datacenter_and_rack_are_a_shorthand_for_one_scope() {
        let one = |extra: &str| {
            parse(&format!(r#"{{"seeds": ["10.0.0.1"], {extra}}}"#))
                .unwrap()
                .routing
        };
        assert_eq!(one(r#""datacenter": "dc1""#), [filter(Some("dc1"), None)]);
        assert_eq!(one(r#""rack": "r1""#), [filter(None, Some("r1"))]);
        assert_eq!(
            one(r#""datacenter": "dc1", "rack": "r1""#),
            [filter(Some("dc1"), Some("r1"))]
        );
    }

    #[test]
    fn bad_routing_is_refused_with_its_entry() {
        let nine = [r#"{"dc": "x"}"#; MAX_SCOPES + 1].join(",");
        let cases = [
            (r#""routing": "cluster""#, "must be an array of scopes"),
            (r#""routing": []"#, "must list 1 to 8 scopes, got 0"),
            (
                &format!(r#""routing": [{nine}]"#),
                "must list 1 to 8 scopes, got 9",
            ),
            (
                r#""routing": ["cluster", {"dc": "dc1"}]"#,
                "entry 1 comes after \"cluster\"",
            ),
            (
                r#""routing": ["cluster", "cluster"]"#,
                "entry 1 comes after \"cluster\"",
            ),
            (
                r#""routing": [{"dc": "a"}, {"dc": "b"}, {"dc": "a"}]"#,
                "entry 2 repeats entry 0",
            ),
            (
                r#""routing": [{"dc": "a", "rack": "r"}, {"rack": "r", "dc": "a"}]"#,
                "entry 1 repeats entry 0",
            ),
            (r#""routing": ["everywhere"]"#, "entry 0: a scope is"),
            (r#""routing": [{"dc": "a"}, 3]"#, "entry 1: a scope is"),
            (r#""routing": [null]"#, "entry 0: a scope is"),
            (
                r#""routing": [{"dc": "a", "zone": "z"}]"#,
                "entry 0: unknown member \"zone\"",
            ),
            (
                r#""routing": [{"rack": "r1"}]"#,
                "entry 0: a scope needs \"dc\"",
            ),
            (r#""routing": [{}]"#, "entry 0: a scope needs \"dc\""),
            (
                r#""routing": [{"dc": ""}]"#,
                "entry 0: \"dc\" must be a non-empty string",
            ),
            (
                r#""routing": [{"dc": "a", "rack": 1}]"#,
                "entry 0: \"rack\" must be a non-empty",
            ),
            (r#""routing": [{"dc": "a\tb"}]"#, "entry 0: \"dc\" must be"),
            (
                r#""routing": [{"dc": "a", "dc": "b"}]"#,
                "entry 0: member \"dc\" is given twice",
            ),
            (
                r#""routing": ["cluster"], "datacenter": "dc1""#,
                "cannot be combined",
            ),
            (
                r#""rack": "r1", "routing": ["cluster"]"#,
                "cannot be combined",
            ),
        ];
        for (fragment, needle) in cases {
            refused(fragment, "routing", needle);
        }
    }

    #[test]
    fn affinity_keys_are_read() {
        let c = parse(
            r#"{"seeds": ["10.0.0.1"], "key_route_affinity": "any_write", "scheme": "https",
                "partition_keys": {"users": "user_id", "orders": "order_id"}}"#,
        )
        .unwrap();
        assert_eq!(c.key_route_affinity, Mode::AnyWrite);
        assert!(c.https);
        assert_eq!(
            c.partition_keys,
            [
                ("orders".to_string(), "order_id".to_string()),
                ("users".to_string(), "user_id".to_string())
            ]
        );
        let mode = |m: &str| {
            parse(&format!(
                r#"{{"seeds": ["10.0.0.1"], "key_route_affinity": "{m}"}}"#
            ))
            .unwrap()
            .key_route_affinity
        };
        assert_eq!(mode("none"), Mode::None);
        assert_eq!(mode("rmw"), Mode::Rmw);
        let http = parse(r#"{"seeds": ["10.0.0.1"], "scheme": "http"}"#).unwrap();
        assert!(!http.https);
        let empty = parse(r#"{"seeds": ["10.0.0.1"], "partition_keys": {}}"#).unwrap();
        assert!(empty.partition_keys.is_empty());
    }

    #[test]
    fn bad_affinity_keys_are_refused() {
        let too_many: Vec<String> = (0..=MAX_PARTITION_KEYS)
            .map(|i| format!(r#""t{i}": "pk""#))
            .collect();
        let too_many = format!(r#""partition_keys": {{{}}}"#, too_many.join(","));
        let cases = [
            (
                r#""key_route_affinity": "RMW""#,
                "key_route_affinity",
                "\"none\", \"rmw\" or \"any_write\"",
            ),
            (
                r#""key_route_affinity": true"#,
                "key_route_affinity",
                "got true",
            ),
            (r#""scheme": "HTTPS""#, "scheme", "\"http\" or \"https\""),
            (r#""scheme": null"#, "scheme", "got null"),
            (
                r#""partition_keys": ["orders"]"#,
                "partition_keys",
                "must be an object",
            ),
            (
                r#""partition_keys": {"": "id"}"#,
                "partition_keys",
                "table name must not be empty",
            ),
            (
                r#""partition_keys": {"orders": ""}"#,
                "partition_keys",
                "table \"orders\": the partition key",
            ),
            (
                r#""partition_keys": {"orders": 1}"#,
                "partition_keys",
                "got 1",
            ),
            (
                r#""partition_keys": {"orders": "a", "orders": "b"}"#,
                "partition_keys",
                "table \"orders\" is given twice",
            ),
            (
                &too_many,
                "partition_keys",
                "names 1025 tables; at most 1024",
            ),
        ];
        for (fragment, key, needle) in cases {
            refused(fragment, key, needle);
        }
    }

    #[test]
    fn every_known_key_is_accepted() {
        let c = parse(
            r#"{"seeds": ["10.0.0.1"], "port": 8000, "discovery_cluster": "d",
                "refresh_interval_ms": 1000, "idle_refresh_interval_ms": 60000,
                "idle_after_ms": 60000, "discovery_timeout_ms": 2000, "routing": ["cluster"],
                "down_after_failures": 1, "down_probe_interval_ms": 30000,
                "quarantine_probe_interval_ms": 1000, "allowed_cidrs": ["10.0.0.0/8"],
                "verify_node_san": true, "key_route_affinity": "rmw",
                "partition_keys": {"t": "k"}, "scheme": "https"}"#,
        );
        assert!(c.is_ok(), "{c:?}");
        let shorthand = parse(r#"{"seeds": ["10.0.0.1"], "datacenter": "a", "rack": "b"}"#);
        assert!(shorthand.is_ok());
        // Every key in KEYS is used by one of the two documents above.
        assert_eq!(KEYS.len(), 18);
    }

    #[test]
    fn identity_follows_seed_groups_and_routing_only() {
        let id = |doc: &str| parse(doc).unwrap().discovery_identity();
        let base = id(r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}}"#);
        // The same groups written in another order are the same discovery.
        assert_eq!(
            base,
            id(r#"{"seeds": {"dc2": ["10.0.0.2"], "dc1": ["10.0.0.1"]}}"#)
        );
        for other in [
            r#"{"seeds": ["10.0.0.1", "10.0.0.2"]}"#,
            r#"{"seeds": {"dc1": ["10.0.0.1", "10.0.0.2"]}}"#,
            r#"{"seeds": {"dc1": ["10.0.0.2"], "dc2": ["10.0.0.1"]}}"#,
            r#"{"seeds": {"dc1": ["10.0.0.1"], "dc3": ["10.0.0.2"]}}"#,
            r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "routing": [{"dc": "dc1"}, "cluster"]}"#,
            r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "routing": [{"dc": "dc1"}]}"#,
            r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "datacenter": "dc1"}"#,
        ] {
            assert_ne!(base, id(other), "{other}");
        }
        for same in [
            r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "key_route_affinity": "rmw"}"#,
            r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "partition_keys": {"t": "k"}}"#,
            r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "scheme": "https"}"#,
            r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "routing": ["cluster"]}"#,
        ] {
            assert_eq!(base, id(same), "{same}");
        }
        // Scopes that differ only in where a name ends are different.
        assert_ne!(
            id(r#"{"seeds": ["10.0.0.1"], "routing": [{"dc": "a/b"}]}"#),
            id(r#"{"seeds": ["10.0.0.1"], "routing": [{"dc": "a", "rack": "b"}]}"#)
        );
        // The shorthand is the scope it stands for.
        assert_eq!(
            id(r#"{"seeds": ["10.0.0.1"], "datacenter": "dc1", "rack": "r1"}"#),
            id(r#"{"seeds": ["10.0.0.1"], "routing": [{"dc": "dc1", "rack": "r1"}]}"#)
        );
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
