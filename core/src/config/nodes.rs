//! The keys that say where the nodes are and which may be: `seeds`,
//! `port`, `allowed_cidrs`, `discovery_cluster` and `verify_node_san`.

use super::error::{err, ConfigError};
use super::given::{Given, Key, Members};
use super::values::optional_quoted;
use super::values::{flag, integer, name, valid_name, NAME_RULE};
use crate::model::address;
use crate::model::cidr::{self, Cidr};
use crate::model::config::SeedGroup;
use crate::model::{AddrError, NodeAddr, Quoted};
use serde::Deserialize;

pub const DEFAULT_PORT: u16 = 8000;
pub const DEFAULT_DISCOVERY_CLUSTER: &str = "alternator_discovery";
const PORT_RANGE: (u16, u16) = (1, 65_535);
const MAX_CIDRS: usize = 256;
/// Seed addresses in all groups together.
pub const MAX_SEEDS: usize = 256;

/// What the node keys give.
pub(super) struct Nodes {
    pub seeds: Vec<NodeAddr>,
    pub seed_groups: Vec<SeedGroup>,
    pub port: u16,
    pub allowed_cidrs: Vec<Cidr>,
    pub discovery_cluster: String,
}

/// `port` first (the seeds are read with it), then `allowed_cidrs` (the
/// seeds must be inside), `seeds` and `discovery_cluster`.
pub(super) fn validate(
    seeds: Key<SeedsForm>,
    port: Key<u16>,
    allowed_cidrs: Key<Vec<Given<String>>>,
    discovery_cluster: Key<String>,
) -> Result<Nodes, ConfigError> {
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
    Ok(Nodes {
        seeds,
        seed_groups,
        port,
        allowed_cidrs,
        discovery_cluster: name("discovery_cluster", discovery_cluster)?
            .unwrap_or_else(|| DEFAULT_DISCOVERY_CLUSTER.to_string()),
    })
}

/// `verify_node_san`: whether each node's certificate must name it.
pub(super) fn verify_node_san(value: Key<bool>) -> Result<bool, ConfigError> {
    flag("verify_node_san", value, false)
}

/// `seeds`: one list, or lists by datacenter name.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum SeedsForm {
    List(Vec<Given<String>>),
    ByDatacenter(Members<Given<Vec<Given<String>>>>),
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
