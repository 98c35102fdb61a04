//! The filter's configuration: the JSON in the Wasm filter's `configuration`.
//!
//! Validation is strict because a typo in a proxy config otherwise shows up as
//! silently wrong routing much later: an unknown key, a bad value or a missing
//! required key is refused, and the error names the key (and, in a list, the
//! entry) so the single log line Envoy prints is enough to fix it.
//!
//! serde reads the document into [`Document`], whose values are [`Given`]:
//! the expected form, or whatever JSON stood there instead. Deserializing
//! therefore only fails on the document's own shape (bad JSON, an unknown
//! key, a key given twice), and every refused value is refused afterwards,
//! by code that can quote it and say what was expected.

use crate::model::address;
use crate::model::authority::HostPattern;
use crate::model::cidr::{self, Cidr};
use crate::model::config::{Balancing, Config, Mode, Scope, SeedGroup};
use crate::model::health::ProbePeriods;
use crate::model::{AddrError, NodeAddr, Quoted};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_path_to_error::Segment;
use std::fmt;
use std::marker::PhantomData;

pub const DEFAULT_PORT: u16 = 8000;
pub const DEFAULT_DISCOVERY_CLUSTER: &str = "alternator_discovery";
pub const DEFAULT_REFRESH_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_DISCOVERY_TIMEOUT_MS: u64 = 2_000;
/// The client libraries poll every minute when idle.
pub const DEFAULT_IDLE_REFRESH_INTERVAL_MS: u64 = 60_000;
/// "Idle" means a minute without requests, as in the client libraries.
pub const DEFAULT_IDLE_AFTER_MS: u64 = 60_000;
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

const PORT_RANGE: (u16, u16) = (1, 65_535);
/// Polling faster than this would only load the cluster; one day is the
/// longest interval that still makes sense for a node list.
const REFRESH_INTERVAL_RANGE: (u64, u64) = (100, 86_400_000);
const DISCOVERY_TIMEOUT_RANGE: (u64, u64) = (10, 300_000);
const PROBE_INTERVAL_RANGE: (u64, u64) = (100, 3_600_000);
const DOWN_AFTER_FAILURES_RANGE: (u32, u32) = (1, 100);
const DOWN_AFTER_RESETS_RANGE: (u32, u32) = (1, 100);
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
/// `hosts` entries: a request that matches none is compared with each, so
/// the list stays short; a gateway's Alternator names are a handful.
pub const MAX_HOSTS: usize = 64;

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

fn document_err(problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: None,
        problem: problem.into(),
    }
}

/// The configuration as written: one field per key of [`KEYS`].
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Document {
    seeds: Key<SeedsForm>,
    port: Key<u16>,
    discovery_cluster: Key<String>,
    refresh_interval_ms: Key<u64>,
    idle_refresh_interval_ms: Key<u64>,
    idle_after_ms: Key<u64>,
    discovery_timeout_ms: Key<u64>,
    routing: Key<Vec<Given<ScopeForm>>>,
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

/// A key's value; `None` when the key is absent. A plain `Option` would
/// also take an explicit `null` for "absent", and `null` is refused like
/// any other value of the wrong kind.
struct Key<T>(Option<Given<T>>);

impl<T> Default for Key<T> {
    fn default() -> Self {
        Key(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Key<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Given::deserialize(deserializer).map(|given| Key(Some(given)))
    }
}

/// A value in the expected form, or else the JSON that was there, kept so
/// that the refusal can quote it. Deserializing it never fails, which is
/// what lets a refusal say more than serde's "invalid type".
#[derive(Deserialize)]
#[serde(untagged)]
enum Given<T> {
    Expected(T),
    Other(Value),
}

/// The value as JSON, for the "got ..." of a refusal. A value in the
/// expected form can be refused too (a number out of range, a string that
/// is not a valid name), so both forms are shown.
impl<T: Clone + Into<Value>> fmt::Display for Given<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Given::Expected(value) => fmt::Display::fmt(&value.clone().into(), f),
            Given::Other(value) => fmt::Display::fmt(value, f),
        }
    }
}

/// An object's members in document order, duplicates included: serde's
/// maps keep one value per name, and a datacenter, table or scope member
/// named twice must be refused rather than half-ignored.
struct Members<T>(Vec<(String, T)>);

impl<T> Members<T> {
    /// The value of `name`; duplicates are refused before this is asked.
    fn get(&self, name: &str) -> Option<&T> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn first_duplicate(&self) -> Option<&str> {
        self.0.iter().enumerate().find_map(|(i, (name, _))| {
            self.0
                .iter()
                .skip(i + 1)
                .any(|(other, _)| other == name)
                .then_some(name.as_str())
        })
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Members<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for MembersVisitor<T> {
            type Value = Members<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<T>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor(PhantomData))
    }
}

/// `seeds`: one list, or lists by datacenter name.
#[derive(Deserialize)]
#[serde(untagged)]
enum SeedsForm {
    List(Vec<Given<String>>),
    ByDatacenter(Members<Given<Vec<Given<String>>>>),
}

/// One `routing` entry: a word (only "cluster" is one), or an object with
/// `dc` and perhaps `rack`.
///
/// Words here, in `key_route_affinity` and in `scheme` are read as strings
/// and compared, not as serde enums: those would also take `{"rmw": null}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeForm {
    Word(String),
    Filter(Members<Given<String>>),
}

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
                .map_err(shape_error)?;
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

/// The refusal for a document serde could not read. Values are [`Given`],
/// so what is left is the object itself: a key not in [`KEYS`] (its name
/// comes from the error's path), a key given twice (serde's derive names it
/// only in its message, "duplicate field `port`"), or what the syntax check
/// lets through: a number too large even for a float, a lone surrogate.
fn shape_error(e: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
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
    fn validate(self) -> Result<Config, ConfigError> {
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
        let port = integer("port", port, PORT_RANGE, DEFAULT_PORT)?;
        let allowed_cidrs = cidrs(allowed_cidrs)?;
        let seed_groups = seed_groups(seeds, port)?;
        let mut seeds: Vec<NodeAddr> = seed_groups
            .iter()
            .flat_map(|g| g.seeds.iter().copied())
            .collect();
        crate::model::sorted::sort_dedup(&mut seeds);
        if let Some(outside) = seeds.iter().find(|s| !cidr::allowed(&allowed_cidrs, &s.ip)) {
            return Err(err("seeds", format!("{outside} is outside allowed_cidrs")));
        }
        Ok(Config {
            seeds,
            seed_groups,
            port,
            discovery_cluster: name("discovery_cluster", discovery_cluster)?
                .unwrap_or_else(|| DEFAULT_DISCOVERY_CLUSTER.to_string()),
            refresh_interval_ms: integer(
                "refresh_interval_ms",
                refresh_interval_ms,
                REFRESH_INTERVAL_RANGE,
                DEFAULT_REFRESH_INTERVAL_MS,
            )?,
            discovery_timeout_ms: integer(
                "discovery_timeout_ms",
                discovery_timeout_ms,
                DISCOVERY_TIMEOUT_RANGE,
                DEFAULT_DISCOVERY_TIMEOUT_MS,
            )?,
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
            idle_refresh_interval_ms: integer(
                "idle_refresh_interval_ms",
                idle_refresh_interval_ms,
                REFRESH_INTERVAL_RANGE,
                DEFAULT_IDLE_REFRESH_INTERVAL_MS,
            )?,
            idle_after_ms: integer(
                "idle_after_ms",
                idle_after_ms,
                REFRESH_INTERVAL_RANGE,
                DEFAULT_IDLE_AFTER_MS,
            )?,
            routing: routing_scopes(
                routing,
                name("datacenter", datacenter)?,
                name("rack", rack)?,
            )?,
            allowed_cidrs,
            verify_node_san: flag("verify_node_san", verify_node_san, false)?,
            key_route_affinity: affinity(key_route_affinity)?,
            partition_keys: tables(partition_keys)?,
            https: https(scheme)?,
            stat_prefix: stat_prefix_of(stat_prefix)?,
            load_balancing: balancing(load_balancing)?,
            hosts: host_patterns(hosts)?,
        })
    }
}

fn optional_quoted(name: Option<&str>) -> String {
    name.map_or_else(|| "-".to_string(), |n| Quoted(n).to_string())
}

const SEEDS_FORMS: &str =
    "must be an array of node addresses like \"10.0.0.1\" or \"10.0.0.1:8000\", \
     or an object mapping each datacenter name to such an array";

fn seed_groups(seeds: Key<SeedsForm>, port: u16) -> Result<Vec<SeedGroup>, ConfigError> {
    let form = match seeds.0 {
        None => {
            return Err(err(
                "seeds",
                "is required: list at least one Alternator node address",
            ))
        }
        Some(Given::Other(_)) => return Err(err("seeds", SEEDS_FORMS)),
        Some(Given::Expected(form)) => form,
    };
    let total: usize = match &form {
        SeedsForm::List(items) => items.len(),
        SeedsForm::ByDatacenter(groups) => groups
            .0
            .iter()
            .map(|(_, group)| match group {
                Given::Expected(items) => items.len(),
                Given::Other(_) => 0,
            })
            .sum(),
    };
    if total > MAX_SEEDS {
        return Err(err(
            "seeds",
            format!("lists {total} addresses; at most {MAX_SEEDS} are accepted"),
        ));
    }
    match form {
        SeedsForm::ByDatacenter(groups) => named_groups(groups, port),
        SeedsForm::List(items) if !items.is_empty() => Ok(vec![SeedGroup {
            datacenter: None,
            seeds: addresses(items, port, "")?,
        }]),
        SeedsForm::List(_) => Err(err("seeds", "must not be empty")),
    }
}

/// `seeds` as an object: datacenter name -> non-empty address array. Groups
/// come out sorted by name so that the member order in the document changes
/// nothing (not even the discovery identity).
fn named_groups(
    members: Members<Given<Vec<Given<String>>>>,
    port: u16,
) -> Result<Vec<SeedGroup>, ConfigError> {
    if members.0.is_empty() {
        return Err(err("seeds", "must name at least one datacenter"));
    }
    if let Some(dc) = members.first_duplicate() {
        return Err(err(
            "seeds",
            format!("datacenter {} is given twice", Quoted(dc)),
        ));
    }
    let mut groups = Vec::with_capacity(members.0.len());
    for (dc, value) in members.0 {
        if !valid_name(&dc) {
            return Err(err(
                "seeds",
                format!("datacenter name {} {}", Quoted(&dc), NAME_RULE),
            ));
        }
        let context = format!("datacenter {}: ", Quoted(&dc));
        let items = match value {
            Given::Expected(items) => items,
            Given::Other(value) => {
                return Err(err(
                    "seeds",
                    format!("{context}must be an array of node addresses, got {value}"),
                ))
            }
        };
        if items.is_empty() {
            return Err(err("seeds", format!("{context}must not be empty")));
        }
        groups.push(SeedGroup {
            seeds: addresses(items, port, &context)?,
            datacenter: Some(dc),
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
fn addresses(
    items: Vec<Given<String>>,
    port: u16,
    context: &str,
) -> Result<Vec<NodeAddr>, ConfigError> {
    let mut seeds = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let s = match item {
            Given::Expected(s) => s,
            Given::Other(value) => {
                return Err(err(
                    "seeds",
                    format!("{context}entry {i} must be a string, got {value}"),
                ))
            }
        };
        let addr = NodeAddr::parse(&s, port)
            .map_err(|e: AddrError| err("seeds", format!("{context}entry {i}: {e}")))?;
        // A seed is the operator's own choice, but a link-local one cannot
        // work: `/localnodes` answers naming link-local addresses are
        // always refused (cloud metadata endpoints live there), so its
        // cluster could never be discovered; and an IPv6 one is not even
        // reachable without the zone index no address here carries.
        if address::is_link_local(&addr.ip) {
            return Err(err(
                "seeds",
                format!(
                    "{context}entry {i}: {} is link-local (169.254.0.0/16, fe80::/10); \
                     nodes are never discovered there, since /localnodes answers naming \
                     link-local addresses are refused",
                    addr.ip
                ),
            ));
        }
        seeds.push(addr);
    }
    crate::model::sorted::sort_dedup(&mut seeds);
    Ok(seeds)
}

/// `routing`, or the scope the old `datacenter`/`rack` keys stand for, or
/// the default `["cluster"]`.
fn routing_scopes(
    routing: Key<Vec<Given<ScopeForm>>>,
    dc: Option<String>,
    rack: Option<String>,
) -> Result<Vec<Scope>, ConfigError> {
    let key = "routing";
    let Some(value) = routing.0 else {
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
    let items = match value {
        Given::Expected(items) => items,
        Given::Other(value) => {
            return Err(err(
                key,
                format!(
                    "must be an array of scopes like {{\"dc\": \"dc1\", \"rack\": \"rack1\"}}, \
                     {{\"dc\": \"dc1\"}} or \"cluster\", got {value}"
                ),
            ))
        }
    };
    if items.is_empty() || items.len() > MAX_SCOPES {
        return Err(err(
            key,
            format!("must list 1 to {MAX_SCOPES} scopes, got {}", items.len()),
        ));
    }
    let mut scopes: Vec<Scope> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
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
fn scope(item: Given<ScopeForm>) -> Result<Scope, String> {
    const FORMS: &str = "a scope is {\"dc\": NAME, \"rack\": NAME}, {\"dc\": NAME} or \"cluster\"";
    let members = match item {
        Given::Expected(ScopeForm::Word(word)) if word == "cluster" => return Ok(Scope::Cluster),
        Given::Expected(ScopeForm::Word(word)) => {
            return Err(format!("{FORMS}, got {}", Quoted(&word)))
        }
        Given::Expected(ScopeForm::Filter(members)) => members,
        Given::Other(other) => return Err(format!("{FORMS}, got {other}")),
    };
    if let Some((unknown, _)) = members.0.iter().find(|(k, _)| k != "dc" && k != "rack") {
        return Err(format!("unknown member {} ({FORMS})", Quoted(unknown)));
    }
    if let Some(twice) = members.first_duplicate() {
        return Err(format!("member {} is given twice", Quoted(twice)));
    }
    let name = |member: &str| -> Result<Option<String>, String> {
        match members.get(member) {
            None => Ok(None),
            Some(Given::Expected(s)) if valid_name(s) => Ok(Some(s.clone())),
            Some(given) => Err(format!("\"{member}\" {NAME_RULE}, got {given}")),
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

fn affinity(mode: Key<String>) -> Result<Mode, ConfigError> {
    match mode.0 {
        None => Ok(Mode::None),
        Some(Given::Expected(s)) if s == "none" => Ok(Mode::None),
        Some(Given::Expected(s)) if s == "rmw" => Ok(Mode::Rmw),
        Some(Given::Expected(s)) if s == "any_write" => Ok(Mode::AnyWrite),
        Some(given) => Err(err(
            "key_route_affinity",
            format!("must be \"none\", \"rmw\" or \"any_write\", got {given}"),
        )),
    }
}

const ATTRIBUTE_RULE: &str = "the partition key attribute must be a non-empty string";

/// `partition_keys`, sorted by table.
fn tables(
    partition_keys: Key<Members<Given<String>>>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let key = "partition_keys";
    let members = match partition_keys.0 {
        None => return Ok(Vec::new()),
        Some(Given::Expected(members)) => members,
        Some(Given::Other(value)) => {
            return Err(err(
                key,
                format!(
                    "must be an object mapping table names to partition key attribute names, \
                     like {{\"orders\": \"order_id\"}}, got {value}"
                ),
            ))
        }
    };
    if members.0.len() > MAX_PARTITION_KEYS {
        return Err(err(
            key,
            format!(
                "names {} tables; at most {MAX_PARTITION_KEYS} are accepted",
                members.0.len()
            ),
        ));
    }
    if let Some(table) = members.first_duplicate() {
        return Err(err(key, format!("table {} is given twice", Quoted(table))));
    }
    let mut tables = Vec::with_capacity(members.0.len());
    for (table, attribute) in members.0 {
        if table.is_empty() {
            return Err(err(key, "a table name must not be empty"));
        }
        let attribute = match attribute {
            Given::Expected(attribute) if !attribute.is_empty() => attribute,
            Given::Expected(_) => {
                return Err(err(
                    key,
                    format!("table {}: {ATTRIBUTE_RULE}", Quoted(&table)),
                ))
            }
            Given::Other(value) => {
                return Err(err(
                    key,
                    format!("table {}: {ATTRIBUTE_RULE}, got {value}", Quoted(&table)),
                ))
            }
        };
        tables.push((table, attribute));
    }
    tables.sort();
    Ok(tables)
}

fn https(scheme: Key<String>) -> Result<bool, ConfigError> {
    match scheme.0 {
        None => Ok(false),
        Some(Given::Expected(s)) if s == "http" => Ok(false),
        Some(Given::Expected(s)) if s == "https" => Ok(true),
        Some(given) => Err(err(
            "scheme",
            format!("must be \"http\" or \"https\", got {given}"),
        )),
    }
}

fn balancing(value: Key<String>) -> Result<Balancing, ConfigError> {
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

fn cidrs(allowed_cidrs: Key<Vec<Given<String>>>) -> Result<Vec<Cidr>, ConfigError> {
    let key = "allowed_cidrs";
    let items = match allowed_cidrs.0 {
        None => return Ok(Vec::new()),
        Some(Given::Expected(items)) => items,
        Some(Given::Other(_)) => {
            return Err(err(key, "must be an array of ranges like \"10.0.0.0/8\""))
        }
    };
    if items.is_empty() || items.len() > MAX_CIDRS {
        return Err(err(
            key,
            format!("must list 1 to {MAX_CIDRS} ranges (leave it out to allow any address)"),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Given::Expected(s) => s.parse().map_err(|e| err(key, format!("entry {i}: {e}"))),
            Given::Other(other) => {
                Err(err(key, format!("entry {i} must be a string, got {other}")))
            }
        })
        .collect()
}

/// `hosts`: `None` when absent (every request is the filter's).
fn host_patterns(hosts: Key<Vec<Given<String>>>) -> Result<Option<Vec<HostPattern>>, ConfigError> {
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

/// Integers are read as `T` itself, never through a float: a number that
/// does not fit, a fraction or a negative number stays [`Given::Other`].
fn integer<T>(key: &str, value: Key<T>, (min, max): (T, T), default: T) -> Result<T, ConfigError>
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

fn flag(key: &str, value: Key<bool>, default: bool) -> Result<bool, ConfigError> {
    match value.0 {
        None => Ok(default),
        Some(Given::Expected(b)) => Ok(b),
        Some(Given::Other(value)) => Err(err(key, format!("must be true or false, got {value}"))),
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

/// Longest `stat_prefix`: it is part of every metric name.
const MAX_STAT_PREFIX_LEN: usize = 64;

/// `stat_prefix` becomes a token of every metric name
/// (`alternator_lb.<stat_prefix>.nodes_known`), so it keeps to what stat
/// names and Prometheus names carry unchanged: no dots (they would split
/// the token), no spaces.
fn stat_prefix_of(value: Key<String>) -> Result<Option<String>, ConfigError> {
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

fn name(key: &str, value: Key<String>) -> Result<Option<String>, ConfigError> {
    match value.0 {
        None => Ok(None),
        Some(Given::Expected(s)) if valid_name(&s) => Ok(Some(s)),
        Some(given) => Err(err(key, format!("{NAME_RULE}, got {given}"))),
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
        assert_eq!(c.down_after_resets, 3);
        assert_eq!(
            c.probe_periods,
            ProbePeriods {
                down_ms: 30_000,
                quarantine_ms: 1_000
            }
        );
        assert!(c.allowed_cidrs.is_empty());
        assert_eq!(c.hosts, None, "every request is the filter's");
    }

    #[test]
    fn health_and_range_keys_are_read() {
        let c = parse(
            r#"{"seeds": ["10.0.0.1"], "idle_refresh_interval_ms": 5000, "down_after_failures": 3,
                "down_after_resets": 7, "down_probe_interval_ms": 2000, "quarantine_probe_interval_ms": 300,
                "allowed_cidrs": ["10.0.0.0/8", "fd00::/8"]}"#,
        )
        .unwrap();
        assert_eq!(c.idle_refresh_interval_ms, 5000);
        assert_eq!(c.down_after_failures, 3);
        assert_eq!(c.down_after_resets, 7);
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
    fn link_local_seeds_are_refused() {
        for (doc, entry) in [
            (
                r#"{"seeds": ["10.0.0.1", "169.254.169.254"]}"#,
                "entry 1: 169.254.169.254",
            ),
            (r#"{"seeds": ["[fe80::1]:8000"]}"#, "entry 0: fe80::1"),
            (
                r#"{"seeds": ["::ffff:169.254.0.9"]}"#,
                "entry 0: 169.254.0.9",
            ),
            (
                r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["febf::1"]}}"#,
                "datacenter \"dc2\": entry 0: febf::1",
            ),
        ] {
            let e = parse(doc).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("seeds"), "{doc}");
            let text = e.to_string();
            assert!(text.contains(&format!("{entry} is link-local")), "{text}");
            assert!(text.contains("/localnodes answers naming link-local addresses are refused"));
        }
        // Loopback seeds are fine (local test setups), as are the ranges'
        // neighbours.
        assert!(parse(r#"{"seeds": ["127.0.0.1", "::1", "169.255.0.1", "fec0::1"]}"#).is_ok());
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
            (r#""down_after_resets": 0"#, "down_after_resets"),
            (r#""down_after_resets": 101"#, "down_after_resets"),
            (r#""down_after_resets": "3""#, "down_after_resets"),
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
    fn refusals_say_what_was_given() {
        let cases = [
            (
                r#"{"seeds": ["10.0.0.1"], "port": 0}"#,
                r#"key "port": must be an integer from 1 to 65535, got 0"#,
            ),
            (
                r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2", 7]}}"#,
                r#"key "seeds": datacenter "dc2": entry 1 must be a string, got 7"#,
            ),
            (
                r#"{"seeds": ["10.0.0.1"], "port": 8000, "port": 9000}"#,
                r#"key "port": is given twice"#,
            ),
            (
                r#"{"seeds": ["10.0.0.1"], "routing": [{"dc": "a", "rack": [1, "r"]}]}"#,
                r#"key "routing": entry 0: "rack" must be a non-empty string of at most 255 characters without control characters, got [1,"r"]"#,
            ),
            (
                r#"{"seeds": ["10.0.0.1"], "scheme": "ftp"}"#,
                r#"key "scheme": must be "http" or "https", got "ftp""#,
            ),
        ];
        for (doc, message) in cases {
            let e = parse(doc).unwrap_err();
            assert_eq!(e.to_string(), format!("invalid configuration: {message}"));
        }
    }

    /// Integers are never read through a float or a string, and `null` is
    /// a value, not an absent key.
    #[test]
    fn integers_refuse_every_other_kind() {
        for (given, shown) in [
            ("80.5", "80.5"),
            ("-1", "-1"),
            ("\"8000\"", "\"8000\""),
            ("null", "null"),
            ("true", "true"),
            ("65536", "65536"),
            ("18446744073709551616", "1.8446744073709552e+19"),
            ("[8000]", "[8000]"),
        ] {
            let e = parse(&format!(r#"{{"seeds": ["10.0.0.1"], "port": {given}}}"#)).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "invalid configuration: key \"port\": must be an integer from 1 to 65535, \
                     got {shown}"
                )
            );
        }
        let e = parse(r#"{"seeds": ["10.0.0.1"], "down_after_failures": 4294967296}"#).unwrap_err();
        assert!(e.problem.ends_with("from 1 to 100, got 4294967296"), "{e}");
    }

    /// serde's enums would take `{"word": null}` for `"word"`.
    #[test]
    fn words_are_strings_only() {
        refused(
            r#""key_route_affinity": {"rmw": null}"#,
            "key_route_affinity",
            r#"got {"rmw":null}"#,
        );
        refused(r#""scheme": {"https": null}"#, "scheme", "got {");
        refused(
            r#""routing": [{"cluster": null}]"#,
            "routing",
            "entry 0: unknown member \"cluster\"",
        );
        refused(r#""routing": ["Cluster"]"#, "routing", r#"got "Cluster""#);
    }

    /// A derived struct also reads an array of its fields in order.
    #[test]
    fn only_an_object_is_a_configuration() {
        for doc in [r#"[["10.0.0.1"]]"#, "[]", "7", r#""seeds""#, "null"] {
            let e = parse(doc).unwrap_err();
            assert_eq!(
                e.to_string(),
                "invalid configuration: must be a JSON object"
            );
        }
    }

    /// What serde_json refuses only when it reads the value for real is
    /// still reported as bad JSON, with its position.
    #[test]
    fn late_syntax_errors_are_not_valid_json() {
        for doc in [
            r#"{"seeds": ["10.0.0.1"], "port": 1e400}"#,
            r#"{"seeds": ["10.0.0.1"], "datacenter": "\ud800"}"#,
            r#"{"seeds": ["10.0.0.1"], "prot": 1, "port": }"#,
        ] {
            let e = parse(doc).unwrap_err();
            assert_eq!(e.key, None, "{doc}");
            assert!(e.problem.starts_with("not valid JSON: "), "{doc}: {e}");
            assert!(e.problem.contains(" at line 1 column "), "{doc}: {e}");
        }
    }

    /// The known keys an unknown key's refusal lists are the ones the
    /// document has fields for.
    #[test]
    fn keys_are_the_document_fields() {
        let Err(e) = serde_json::from_str::<Document>(r#"{"?": 1}"#) else {
            panic!("an unknown key was accepted");
        };
        let fields: Vec<String> = KEYS.iter().map(|k| format!("`{k}`")).collect();
        assert!(
            e.to_string().starts_with(&format!(
                "unknown field `?`, expected one of {}",
                fields.join(", ")
            )),
            "{e}"
        );
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
                "down_after_failures": 1, "down_after_resets": 3, "down_probe_interval_ms": 30000,
                "quarantine_probe_interval_ms": 1000, "allowed_cidrs": ["10.0.0.0/8"],
                "verify_node_san": true, "key_route_affinity": "rmw",
                "partition_keys": {"t": "k"}, "scheme": "https", "stat_prefix": "orders-eu",
                "load_balancing": "round_robin", "hosts": ["alternator.example"]}"#,
        );
        assert!(c.is_ok(), "{c:?}");
        assert_eq!(c.unwrap().stat_prefix.as_deref(), Some("orders-eu"));
        let shorthand = parse(r#"{"seeds": ["10.0.0.1"], "datacenter": "a", "rack": "b"}"#);
        assert!(shorthand.is_ok());
        // Every key in KEYS is used by one of the two documents above.
        assert_eq!(KEYS.len(), 22);
    }

    #[test]
    fn hosts_are_read_in_order() {
        let c = parse(
            r#"{"seeds": ["10.0.0.1"], "hosts": ["Alternator.example", "*.eu.example:8000", "[::1]:8000", "10.0.0.9"]}"#,
        )
        .unwrap();
        let expected: Vec<HostPattern> = [
            "alternator.example",
            "*.eu.example:8000",
            "[::1]:8000",
            "10.0.0.9",
        ]
        .iter()
        .map(|h| h.parse().unwrap())
        .collect();
        assert_eq!(c.hosts, Some(expected));
        let most: Vec<String> = (0..MAX_HOSTS)
            .map(|i| format!("\"h{i}.example\""))
            .collect();
        let c = parse(&format!(
            r#"{{"seeds": ["10.0.0.1"], "hosts": [{}]}}"#,
            most.join(",")
        ))
        .unwrap();
        assert_eq!(c.hosts.map(|h| h.len()), Some(MAX_HOSTS));
    }

    #[test]
    fn bad_hosts_are_refused_with_their_entry() {
        let too_many: Vec<String> = (0..=MAX_HOSTS)
            .map(|i| format!("\"h{i}.example\""))
            .collect();
        let too_many = format!(r#""hosts": [{}]"#, too_many.join(","));
        let cases = [
            (
                r#""hosts": []"#,
                "must not be empty: an empty list would pass every request",
            ),
            (
                r#""hosts": "alternator.example""#,
                "must be an array of hosts",
            ),
            (r#""hosts": null"#, "got null"),
            (
                r#""hosts": {"alternator.example": 1}"#,
                "must be an array of hosts",
            ),
            (&too_many, "lists 65 hosts; at most 64"),
            (
                r#""hosts": ["a.example", 7]"#,
                "entry 1 must be a string, got 7",
            ),
            (
                r#""hosts": ["a.example", null]"#,
                "entry 1 must be a string, got null",
            ),
            (r#""hosts": [""]"#, "entry 0: \"\" is not a host name"),
            (
                r#""hosts": ["*"]"#,
                "entry 0: \"*\": a lone \"*\" would match every host",
            ),
            (
                r#""hosts": ["a.example", "al*.example"]"#,
                "entry 1: \"al*.example\": a wildcard",
            ),
            (
                r#""hosts": ["alternator.example:0"]"#,
                "entry 0: \"alternator.example:0\": the port",
            ),
            (
                r#""hosts": ["alternator.example:99999"]"#,
                "the port must be a number from 1 to 65535",
            ),
            (r#""hosts": ["::1"]"#, "write an IPv6 address in brackets"),
            (r#""hosts": ["[::1]", "[0::1]"]"#, "entry 1 repeats entry 0"),
            (
                r#""hosts": ["a.example", "A.EXAMPLE"]"#,
                "entry 1 repeats entry 0",
            ),
            (r#""hosts": ["a.example. "]"#, "is not a host name"),
            (
                r#""hosts": ["a.example\n"]"#,
                r#"entry 0: "a.example\n" is not a host name"#,
            ),
        ];
        for (fragment, needle) in cases {
            refused(fragment, "hosts", needle);
        }
        // A port or a narrower name is another pattern, not a repeat.
        assert!(parse(
            r#"{"seeds": ["10.0.0.1"], "hosts": ["a.example", "a.example:8000", "*.a.example"]}"#
        )
        .is_ok());
    }

    #[test]
    fn load_balancing_is_least_request_unless_round_robin_is_asked() {
        let lb = |extra: &str| parse(&format!(r#"{{"seeds": ["10.0.0.1"]{extra}}}"#));
        assert_eq!(lb("").unwrap().load_balancing, Balancing::LeastRequest);
        assert_eq!(
            lb(r#", "load_balancing": "least_request""#)
                .unwrap()
                .load_balancing,
            Balancing::LeastRequest
        );
        assert_eq!(
            lb(r#", "load_balancing": "round_robin""#)
                .unwrap()
                .load_balancing,
            Balancing::RoundRobin
        );
        for bad in [r#""ROUND_ROBIN""#, r#""random""#, "null", "1"] {
            let e = lb(&format!(r#", "load_balancing": {bad}"#)).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("load_balancing"), "{bad}");
            assert!(
                e.problem
                    .contains(r#"must be "least_request" or "round_robin", got"#),
                "{e}"
            );
        }
    }

    #[test]
    fn stat_prefix_is_one_token_of_a_metric_name() {
        let prefix = |v: &str| parse(&format!(r#"{{"seeds": ["10.0.0.1"], "stat_prefix": {v}}}"#));
        assert_eq!(
            prefix(r#""a_B-9""#).unwrap().stat_prefix.as_deref(),
            Some("a_B-9")
        );
        assert_eq!(
            parse(r#"{"seeds": ["10.0.0.1"]}"#).unwrap().stat_prefix,
            None
        );
        for bad in [r#""""#, r#""a.b""#, r#""a b""#, r#""é""#, "7", "null"] {
            let e = prefix(bad).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("stat_prefix"), "{bad}");
            assert!(
                e.problem.contains("letters, digits, '_' or '-', got"),
                "{e}"
            );
        }
        let long = format!(r#""{}""#, "x".repeat(MAX_STAT_PREFIX_LEN + 1));
        assert!(prefix(&long).is_err());
        // Each named instance polls for itself; without a name, the identity
        // is unchanged.
        let id = |doc: &str| parse(doc).unwrap().discovery_identity();
        let plain = id(r#"{"seeds": ["10.0.0.1"]}"#);
        assert_ne!(plain, id(r#"{"seeds": ["10.0.0.1"], "stat_prefix": "a"}"#));
        assert_ne!(
            id(r#"{"seeds": ["10.0.0.1"], "stat_prefix": "a"}"#),
            id(r#"{"seeds": ["10.0.0.1"], "stat_prefix": "b"}"#)
        );
        assert!(!plain.contains('|') || plain.matches('|').count() == 3);
    }

    /// `allowed_cidrs` filters what discovery keeps, so it is part of the
    /// identity: other ranges, another record. The same ranges in another
    /// order are the same; no ranges leave the identity as it always was.
    #[test]
    fn identity_follows_allowed_ranges() {
        let id = |doc: &str| parse(doc).unwrap().discovery_identity();
        let none = id(r#"{"seeds": ["10.0.0.1"]}"#);
        let narrow = id(r#"{"seeds": ["10.0.0.1"], "allowed_cidrs": ["10.0.0.0/16"]}"#);
        let wide = id(r#"{"seeds": ["10.0.0.1"], "allowed_cidrs": ["10.0.0.0/8"]}"#);
        assert_ne!(narrow, wide);
        assert_ne!(none, narrow);
        assert_eq!(
            none,
            "-=10.0.0.1:8000|8000|\"alternator_discovery\"|cluster"
        );
        assert_eq!(
            id(r#"{"seeds": ["10.0.0.1"], "allowed_cidrs": ["10.0.0.0/8", "fd00::/8"]}"#),
            id(
                r#"{"seeds": ["10.0.0.1"], "allowed_cidrs": ["fd00::/8", "10.0.0.0/8", "10.0.0.0/8"]}"#
            )
        );
        assert_ne!(
            crate::shared_state::key_for(&narrow),
            crate::shared_state::key_for(&wide)
        );
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
            r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "hosts": ["a.example"]}"#,
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
