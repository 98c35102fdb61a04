//! The keys of key route affinity: `key_route_affinity`, `partition_keys`
//! and `scheme` (how the client libraries spell nodes, which orders the
//! ring).

use super::error::{err, ConfigError};
use super::given::{Given, Key, Members};
use crate::model::config::Mode;
use crate::model::Quoted;

/// Tables with a configured partition key; more would belong in a learned
/// table (`DescribeTable`) rather than in a proxy config.
pub const MAX_PARTITION_KEYS: usize = 1024;

/// What the affinity keys give.
pub(super) struct Affinity {
    pub mode: Mode,
    pub partition_keys: Vec<(String, String)>,
    pub https: bool,
}

pub(super) fn validate(
    key_route_affinity: Key<String>,
    partition_keys: Key<Members<Given<String>>>,
    scheme: Key<String>,
) -> Result<Affinity, ConfigError> {
    Ok(Affinity {
        mode: mode(key_route_affinity)?,
        partition_keys: tables(partition_keys)?,
        https: https(scheme)?,
    })
}

fn mode(mode: Key<String>) -> Result<Mode, ConfigError> {
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
