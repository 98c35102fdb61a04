//! Which `/localnodes` questions discovery asks, and which answers each
//! routing scope is made of.
//!
//! Alternator answers `/localnodes` for one datacenter (or one rack) at a
//! time; there is no whole-cluster answer. So a configuration's scopes are
//! turned into a small set of distinct questions ([`Query`]), each asked once
//! per discovery round, and every scope is the union of the answers to some
//! of them. Sharing questions between scopes (a `{dc: dc1}` scope and the
//! cluster scope's `dc1` question are one question) keeps a round as small
//! as the configuration allows, and keeps one list per question in the
//! shared state.

use crate::localnodes;
use crate::model::config::{Config, Scope};
use crate::model::NodeAddr;
use std::fmt;

/// One `/localnodes` question. `dc` unset asks for the datacenter of the
/// node that is asked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Query {
    pub dc: Option<String>,
    pub rack: Option<String>,
}

impl Query {
    /// The request path, parameters percent-encoded.
    pub fn path(&self) -> String {
        localnodes::request_path(self.dc.as_deref(), self.rack.as_deref())
    }
}

/// How a question reads in a log line: `dc=dc1 rack=rack1`.
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.dc, &self.rack) {
            (Some(dc), Some(rack)) => write!(f, "dc={dc} rack={rack}"),
            (Some(dc), None) => write!(f, "dc={dc}"),
            (None, Some(rack)) => write!(f, "rack={rack} (of the asked node's dc)"),
            (None, None) => write!(f, "the asked node's dc"),
        }
    }
}

/// The questions discovery asks and how routing combines their answers.
/// Every index in `scopes` is an index into `queries`, and `query_seeds`
/// has one entry per query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Deduplicated, in the order scopes first use them.
    pub queries: Vec<Query>,
    /// Per configured scope, in routing order: the queries whose lists it
    /// unions.
    pub scopes: Vec<Vec<usize>>,
    /// Per query: the seeds to ask while no discovered node will do: those
    /// of the seed group named like the query's dc, else all seeds.
    pub query_seeds: Vec<Vec<NodeAddr>>,
    /// What requests go to before anything is discovered: the seeds of the
    /// first scope's datacenter group when there is one, else all seeds.
    pub start_seeds: Vec<NodeAddr>,
    /// Every seed, sorted (the fallback when no start seed may be used).
    pub seeds: Vec<NodeAddr>,
}

impl Topology {
    pub fn from_config(config: &Config) -> Topology {
        let group_seeds = |dc: Option<&str>| -> Vec<NodeAddr> {
            config
                .seed_groups
                .iter()
                .find(|g| dc.is_some() && g.datacenter.as_deref() == dc)
                .map_or_else(|| config.seeds.clone(), |g| g.seeds.clone())
        };
        let mut queries: Vec<Query> = Vec::new();
        let mut scopes = Vec::with_capacity(config.routing.len());
        for scope in &config.routing {
            let asks: Vec<Query> = match scope {
                Scope::Filter { dc, rack } => vec![Query {
                    dc: dc.clone(),
                    rack: rack.clone(),
                }],
                Scope::Cluster => config
                    .seed_groups
                    .iter()
                    .map(|g| Query {
                        dc: g.datacenter.clone(),
                        rack: None,
                    })
                    .collect(),
            };
            let mut indices: Vec<usize> = Vec::with_capacity(asks.len());
            for query in asks {
                let index = match queries.iter().position(|q| *q == query) {
                    Some(i) => i,
                    None => {
                        queries.push(query);
                        queries.len() - 1
                    }
                };
                if !indices.contains(&index) {
                    indices.push(index);
                }
            }
            scopes.push(indices);
        }
        let query_seeds = queries
            .iter()
            .map(|q| group_seeds(q.dc.as_deref()))
            .collect();
        let start_seeds = match config.routing.first() {
            Some(Scope::Filter { dc: Some(dc), .. }) => group_seeds(Some(dc)),
            _ => config.seeds.clone(),
        };
        Topology {
            queries,
            scopes,
            query_seeds,
            start_seeds,
            seeds: config.seeds.clone(),
        }
    }

    /// The seeds of query `query` (empty for an index out of range).
    pub fn seeds_of(&self, query: usize) -> &[NodeAddr] {
        self.query_seeds.get(query).map_or(&[], Vec::as_slice)
    }

    /// The queries asking about the same datacenter as `query`, itself
    /// included (a query without dc is "the same" as the others without:
    /// all ask whatever datacenter the asked node is in).
    pub fn same_dc(&self, query: usize) -> Vec<usize> {
        let Some(q) = self.queries.get(query) else {
            return Vec::new();
        };
        (0..self.queries.len())
            .filter(|&i| self.queries.get(i).is_some_and(|o| o.dc == q.dc))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::addrs;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn topology(doc: &str) -> Topology {
        Topology::from_config(&Config::parse(doc.as_bytes()).unwrap())
    }

    fn q(dc: Option<&str>, rack: Option<&str>) -> Query {
        Query {
            dc: dc.map(str::to_string),
            rack: rack.map(str::to_string),
        }
    }

    #[test]
    fn default_is_one_plain_question_to_any_seed() {
        let t = topology(r#"{"seeds": ["10.0.0.2", "10.0.0.1"]}"#);
        assert_eq!(t.queries, [q(None, None)]);
        assert_eq!(t.scopes, [vec![0]]);
        let all = addrs(&["10.0.0.1:8000", "10.0.0.2:8000"]);
        assert_eq!(t.query_seeds, [all.as_slice()]);
        assert_eq!(t.start_seeds, all);
        assert_eq!(t.queries[0].path(), "/localnodes");
    }

    #[test]
    fn cluster_asks_each_seed_group_and_shares_questions() {
        let t = topology(
            r#"{"seeds": {"dc1": ["10.0.1.1"], "dc2": ["10.0.2.1", "10.0.2.2"]},
                "routing": [{"dc": "dc1", "rack": "rack1"}, {"dc": "dc1"}, "cluster"]}"#,
        );
        assert_eq!(
            t.queries,
            [
                q(Some("dc1"), Some("rack1")),
                q(Some("dc1"), None),
                q(Some("dc2"), None)
            ]
        );
        assert_eq!(t.scopes, [vec![0], vec![1], vec![1, 2]]);
        assert_eq!(
            t.query_seeds,
            [
                addrs(&["10.0.1.1:8000"]),
                addrs(&["10.0.1.1:8000"]),
                addrs(&["10.0.2.1:8000", "10.0.2.2:8000"])
            ]
        );
        assert_eq!(t.start_seeds, addrs(&["10.0.1.1:8000"]));
        assert_eq!(t.seeds.len(), 3);
        assert_eq!(t.queries[0].path(), "/localnodes?dc=dc1&rack=rack1");
        assert_eq!(t.queries[2].path(), "/localnodes?dc=dc2");
        assert_eq!(t.same_dc(0), [0, 1]);
        assert_eq!(t.same_dc(2), [2]);
        assert!(t.same_dc(3).is_empty());
        assert!(t.seeds_of(3).is_empty());
    }

    #[test]
    fn a_datacenter_without_seed_group_is_asked_of_any_seed() {
        let t = topology(
            r#"{"seeds": {"dc1": ["10.0.1.1"], "dc2": ["10.0.2.1"]},
                "routing": [{"dc": "dc3"}, "cluster"]}"#,
        );
        assert_eq!(
            t.queries,
            [
                q(Some("dc3"), None),
                q(Some("dc1"), None),
                q(Some("dc2"), None)
            ]
        );
        assert_eq!(t.scopes, [vec![0], vec![1, 2]]);
        assert_eq!(t.query_seeds[0], t.seeds);
        assert_eq!(t.start_seeds, t.seeds);
    }

    #[test]
    fn unnamed_seeds_with_dc_scopes() {
        let t = topology(r#"{"seeds": ["10.0.0.1"], "routing": [{"dc": "dc2"}, "cluster"]}"#);
        assert_eq!(t.queries, [q(Some("dc2"), None), q(None, None)]);
        assert_eq!(t.scopes, [vec![0], vec![1]]);
        assert_eq!(t.query_seeds, [t.seeds.clone(), t.seeds.clone()]);
    }

    #[test]
    fn shorthand_keys_are_one_question() {
        let t = topology(r#"{"seeds": ["10.0.0.1"], "rack": "r 1"}"#);
        assert_eq!(t.queries, [q(None, Some("r 1"))]);
        assert_eq!(t.queries[0].path(), "/localnodes?rack=r%201");
        assert_eq!(t.scopes, [vec![0]]);
    }

    #[test]
    fn queries_read_well_in_logs() {
        assert_eq!(
            q(Some("dc1"), Some("rack1")).to_string(),
            "dc=dc1 rack=rack1"
        );
        assert_eq!(q(Some("dc1"), None).to_string(), "dc=dc1");
        assert_eq!(
            q(None, Some("r")).to_string(),
            "rack=r (of the asked node's dc)"
        );
        assert_eq!(q(None, None).to_string(), "the asked node's dc");
    }
}
