//! The record every VM of one Envoy process shares through proxy-wasm
//! shared data: who polls next and when (a lease), what each `/localnodes`
//! question last answered and which targets failed it, and node health.
//!
//! Data only: [`crate::discovery`] and [`crate::health`] decide what changes
//! it, [`crate::shared_state`] encodes it.

use super::address::NodeAddr;
use super::health::Health;
use super::sorted;
use std::collections::{BTreeMap, BTreeSet};

/// How many failed targets are remembered per query; enough to walk a large
/// seed list, small enough to keep the shared record short.
pub const MAX_FAILED: usize = 64;

/// What discovery knows about one [`Query`](crate::topology::Query): its
/// last stored answer and its current failure streak. Failures are kept per
/// query because queries fail independently (a datacenter whose seeds are
/// all down must not make the others look failed, nor hide their successes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryList {
    /// Round whose answer `nodes` is; 0 while the query was never answered.
    pub round: u64,
    /// Unusable answers in a row since the last stored one.
    pub consecutive_failures: u32,
    /// Targets that failed this query since its last stored answer, oldest
    /// first, at most [`MAX_FAILED`].
    pub failed: Vec<NodeAddr>,
    /// The answer, sorted and deduplicated; may be empty (an empty rack or
    /// datacenter).
    pub nodes: Vec<NodeAddr>,
    /// Make before break: the nodes that served this query's part (its
    /// last list with a routable node, or for its first answer its seeds)
    /// and that the answer dropped, kept serving while none of `nodes` is
    /// routable yet; emptied once one is. Sorted.
    pub retiring: Vec<NodeAddr>,
}

/// How far apart the VMs' clocks may be (see `crate::clock`): two ticks of
/// the longest period (1 s) that their offsets may differ by, and a tick
/// between their readings.
pub const CLOCK_SLACK_MS: u64 = 3_000;

/// A time read from the record, as this VM acts on it. The record's times
/// were written by VMs whose clocks may not agree with this one's by more
/// than they should: one whose offset could not be shared (shared data
/// refused the write) when the host's clock stepped. A time further ahead of `now_ms` than
/// `horizon_ms`, the longest any legitimate writer sets it ahead (a
/// round's interval, a probe's wait), and [`CLOCK_SLACK_MS`], cannot have
/// been meant for this clock: it counts as `now_ms`, so a due time is due
/// now instead of freezing this VM for as long as the gap.
pub fn effective_ms(recorded_ms: u64, now_ms: u64, horizon_ms: u64) -> u64 {
    if recorded_ms
        > now_ms
            .saturating_add(horizon_ms)
            .saturating_add(CLOCK_SLACK_MS)
    {
        now_ms
    } else {
        recorded_ms
    }
}

/// The one record every VM of an Envoy process shares: the VMs coordinate
/// through nothing else, so everything one VM's decision needs from the
/// others (the lease, the lists, health) is here. Each VM reads it whole on
/// its tick and replaces it whole by compare-and-set; a request never reads
/// it (its VM's routes are rebuilt from it instead).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedState {
    /// Number of discovery rounds started so far; a round is one lease.
    pub round: u64,
    /// Wall-clock milliseconds before which no new round may start.
    pub next_due_ms: u64,
    /// One entry per query of the topology, by query index. Shorter while
    /// some queries were never touched.
    pub lists: Vec<QueryList>,
    /// The union of every list and every list's retiring nodes, sorted: the
    /// known nodes (health, probes and metrics work on it). Keep it in step
    /// with [`SharedState::refresh_nodes`].
    pub nodes: Vec<NodeAddr>,
    /// Wall-clock time of the last stored `/localnodes` answer (0: never).
    pub last_success_ms: u64,
    /// Last time any worker reported requests, at most a second stale.
    pub last_activity_ms: u64,
    /// Entries into Down so far (wrapping, never 0 once counted): each node
    /// that goes Down takes the next count as its generation.
    pub downs: u32,
    /// Nodes that may not take requests, and nodes with a history worth
    /// keeping (see [`crate::health`]); a node not here is Active.
    pub health: BTreeMap<NodeAddr, Health>,
}

impl SharedState {
    /// Whether any query has been answered. Once one is, the union is never
    /// empty again: discovery refuses the answer that would empty it.
    pub fn discovered(&self) -> bool {
        self.lists.iter().any(|l| l.round > 0)
    }

    /// The list of query `query`, if the state has one.
    pub fn list(&self, query: usize) -> Option<&QueryList> {
        self.lists.get(query)
    }

    /// Recomputes [`SharedState::nodes`] from the lists.
    pub fn refresh_nodes(&mut self) {
        self.nodes = sorted::union(
            self.lists
                .iter()
                .flat_map(|l| [l.nodes.as_slice(), l.retiring.as_slice()]),
        );
    }

    /// Forgets every node `keep` refuses, wherever the record names it (a
    /// list, a failed target, health); returns how many distinct nodes that
    /// was.
    pub fn retain_nodes(&mut self, keep: impl Fn(&NodeAddr) -> bool) -> usize {
        let named = self
            .lists
            .iter()
            .flat_map(|l| l.nodes.iter().chain(&l.failed).chain(&l.retiring))
            .chain(self.health.keys());
        let refused: BTreeSet<&NodeAddr> = named.filter(|n| !keep(n)).collect();
        let refused = refused.len();
        if refused > 0 {
            for list in &mut self.lists {
                list.nodes.retain(&keep);
                list.failed.retain(&keep);
                list.retiring.retain(&keep);
            }
            self.health.retain(|n, _| keep(n));
            self.refresh_nodes();
        }
        refused
    }

    /// Whether `node` failed any query since that query's last answer.
    pub fn has_failed(&self, node: &NodeAddr) -> bool {
        self.lists.iter().any(|l| l.failed.contains(node))
    }
}
