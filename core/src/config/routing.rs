//! The keys of routing scopes: `routing`, or its shorthand `datacenter`
//! and `rack`.

use super::error::{err, ConfigError};
use super::given::{Given, Key, Members};
use super::values::{name, valid_name, NAME_RULE};
use crate::model::config::Scope;
use crate::model::Quoted;
use serde::Deserialize;

/// Every scope costs one `/localnodes` request per round (more for
/// "cluster"); a fallback chain longer than rack, dc, a few other dcs and
/// the cluster has no use.
pub const MAX_SCOPES: usize = 8;

/// The scopes: `datacenter` and `rack` are read first, then `routing`.
pub(super) fn scopes(
    routing: Key<Vec<Given<ScopeForm>>>,
    datacenter: Key<String>,
    rack: Key<String>,
) -> Result<Vec<Scope>, ConfigError> {
    let datacenter = name("datacenter", datacenter)?;
    let rack = name("rack", rack)?;
    routing_scopes(routing, datacenter, rack)
}

/// One `routing` entry: a word (only "cluster" is one), or an object with
/// `dc` and perhaps `rack`.
///
/// Words here, in `key_route_affinity` and in `scheme` are read as strings
/// and compared, not as serde enums: those would also take `{"rmw": null}`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum ScopeForm {
    Word(String),
    Filter(Members<Given<String>>),
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
