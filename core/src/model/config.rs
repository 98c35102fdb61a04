//! The filter's configuration, once validated: what [`crate::config`]
//! makes of the JSON in the Wasm filter's `configuration`.

use super::address::NodeAddr;
use super::authority::HostPattern;
use super::cidr::Cidr;
use super::health::ProbePeriods;

/// Seeds of one datacenter (`seeds` as an object), or all seeds when the
/// datacenter is not named (`seeds` as an array: the original form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedGroup {
    pub datacenter: Option<String>,
    /// Sorted and deduplicated.
    pub seeds: Vec<NodeAddr>,
}

/// One step of the `routing` fallback chain: which nodes requests go to
/// while this scope has healthy nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `/localnodes` with these parameters. Both are set for a rack scope,
    /// only `dc` for a datacenter scope; the `datacenter`/`rack` shorthand
    /// may leave `dc` unset (the asked node's own datacenter) or both.
    Filter {
        dc: Option<String>,
        rack: Option<String>,
    },
    /// Every seed group's datacenter: `/localnodes?dc=NAME` per named group,
    /// plain `/localnodes` for the unnamed one (Alternator has no
    /// whole-cluster answer).
    Cluster,
}

/// Every setting of one filter instance, validated and with its defaults
/// filled in, so that no decision downstream re-checks a value or knows a
/// default: each VM's poller reads it once, when it is configured, and
/// hands the parts its routes, mailbox and rules need to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where discovery starts, and the node list until it first succeeds:
    /// every group's seeds, sorted and deduplicated.
    pub seeds: Vec<NodeAddr>,
    /// The same seeds by datacenter, sorted by name (an unnamed group is
    /// alone). No address is in two groups.
    pub seed_groups: Vec<SeedGroup>,
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
    /// The scopes requests are routed over, tried in order: non-empty, no
    /// duplicates, nothing after [`Scope::Cluster`].
    pub routing: Vec<Scope>,
    /// Consecutive failed connects a worker sees before a node is Down.
    pub down_after_failures: u32,
    /// Consecutive resets before a response (a connection was made) a
    /// worker sees before a node is Down.
    pub down_after_resets: u32,
    pub probe_periods: ProbePeriods,
    /// Where requests may ever go; empty means anywhere.
    pub allowed_cidrs: Vec<Cidr>,
    /// With TLS to the nodes: have Envoy check, per request, that the
    /// chosen node's certificate names the node's IP.
    pub verify_node_san: bool,
    /// Which writes go to their partition key's node.
    pub key_route_affinity: Mode,
    /// Table name -> partition (HASH) key attribute, sorted by table.
    pub partition_keys: Vec<(String, String)>,
    /// Whether clients spell nodes `https://`: the affinity ring is ordered
    /// by that spelling, so it must match the client libraries'.
    pub https: bool,
    /// The instance's name in its metric names; `None` for the plain
    /// `alternator_lb.<stat>` names.
    pub stat_prefix: Option<String>,
    /// How a request's node is picked within its routing scope.
    pub load_balancing: Balancing,
    /// The `:authority` values whose requests the filter routes; every
    /// other request passes through untouched. `None`: every request is
    /// routed. Never an empty list.
    pub hosts: Option<Vec<HostPattern>>,
}

/// `load_balancing`: how a request's node is picked among the healthy
/// nodes of its scope (key route affinity aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balancing {
    /// The round robin's next node, unless one drawn at random from the
    /// others is clearly cheaper (requests in flight and recent answer
    /// latency): slow nodes shed load, equal nodes keep equal shares.
    LeastRequest,
    /// Each node in turn, whatever its speed.
    RoundRobin,
}

/// Which writes have affinity (`key_route_affinity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    None,
    /// Writes that read before writing (conditions, returned old values,
    /// update expressions): the ones Alternator runs as LWT under
    /// `only_rmw_uses_lwt`.
    Rmw,
    /// Every PutItem, UpdateItem, DeleteItem and BatchWriteItem (for
    /// `alternator_write_isolation: always`).
    AnyWrite,
}
