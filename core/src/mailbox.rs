//! What one VM's requests and its poller leave each other between ticks:
//! the requests held for their body and those the poller sent on, the
//! failures in a row the requests saw per node and the nodes those took
//! out, the partition keys learned, and what the requests did (counts).
//!
//! Requests run one at a time on the VM's thread and never touch the shared
//! record or the host's stats; the poller reads this on its tick and does
//! that for them (publishing Down nodes and learned keys, flushing counts),
//! and hands back the other VMs' learned keys and the requests it sent on.
//! Nothing here calls the host, parses, formats or allocates on the
//! per-request methods (counting, holding, observing an answer).

use crate::affinity::Tables;
use crate::hold::{HoldRule, Holds, Timeout};
use crate::metrics::RequestCounts;
use crate::model::health::Outcome;
use crate::model::NodeAddr;
use crate::routes::Sent;
use std::collections::HashMap;

/// How many failures in a row, seen by this VM, take a node out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreakLimits {
    /// Failed connects in a row (`down_after_failures`).
    pub connect_failures: u32,
    /// Resets before a response in a row (`down_after_resets`).
    pub resets: u32,
}

/// A node this VM took out: why, and in which generation of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreachable {
    pub node: NodeAddr,
    pub why: Outcome,
    pub generation: u32,
}

/// One node's failures in a row, seen by this VM since its last answer.
/// Counted apart: a failed connect is a strong sign, a reset a weak one.
#[derive(Debug, Default)]
struct Streak {
    connect_failures: u32,
    resets: u32,
}

/// The exchange between one VM's requests and its poller, apart from the
/// routes ([`crate::routes::Routes`]) so that what requests report, and
/// what waits for the poller, is not hidden among the nodes they pick from.
pub struct Mailbox {
    limits: StreakLimits,
    /// What requests did since the VM started; the poller turns the growth
    /// into stats deltas.
    counts: RequestCounts,
    /// Whether this VM holds writes for their body ([`HoldRule`]).
    hold_rule: HoldRule,
    /// Requests paused at their headers whose body has not come yet, and
    /// those the poller sent on without it (and where), by context id.
    holds: Holds<Sent>,
    /// Failures in a row per node, seen by this VM; a node that answers
    /// has none.
    failures: HashMap<NodeAddr, Streak>,
    /// Nodes this VM found unreachable, for the poller to publish as Down:
    /// what ended their streak (a failed connect, or a reset), and the
    /// generation the failed requests were sent in.
    unreachable: Vec<Unreachable>,
    /// The partition keys this VM knows: configured, learned here, and
    /// learned by other VMs (handed over by the poller).
    tables: Tables,
    /// Partition keys this VM learned, for the poller to share.
    learned: Vec<(String, String)>,
    /// Whether Envoy's refusal of a hand-off was logged (once per VM).
    refusal_logged: bool,
}

impl Mailbox {
    pub fn new(limits: StreakLimits, partition_keys: &[(String, String)]) -> Mailbox {
        Mailbox {
            limits,
            counts: RequestCounts::default(),
            hold_rule: HoldRule::default(),
            holds: Holds::default(),
            failures: HashMap::new(),
            unreachable: Vec::new(),
            tables: Tables::new(partition_keys),
            learned: Vec::new(),
            refusal_logged: false,
        }
    }

    /// The request counters, to count on.
    #[inline]
    pub fn counts_mut(&mut self) -> &mut RequestCounts {
        &mut self.counts
    }

    /// What requests did since the VM started.
    pub fn counts(&self) -> RequestCounts {
        self.counts
    }

    /// Whether Envoy's refusal of a hand-off is news, noting it: true the
    /// first time (worth a log line; the next ones are not).
    pub fn note_refusal(&mut self) -> bool {
        !std::mem::replace(&mut self.refusal_logged, true)
    }

    // Held requests.

    /// Whether the VM holds writes for their body now ([`HoldRule`]).
    #[inline]
    pub fn holding(&self) -> bool {
        self.hold_rule.holding()
    }

    /// Records that request `id` is paused at its headers for its body,
    /// from `now_ms` (the request's own clock); false when the VM holds as
    /// many requests as it may ([`crate::hold::MAX_HELD`]): the request is
    /// then sent on without being held.
    pub fn hold(&mut self, id: u32, now_ms: u64) -> bool {
        if !self.holds.hold(id, now_ms) {
            return false;
        }
        self.counts.affinity_held = self.counts.affinity_held.wrapping_add(1);
        true
    }

    /// Request `id`'s body is coming (or it is gone): no longer waiting.
    pub fn unhold(&mut self, id: u32) {
        self.holds.unhold(id);
    }

    /// A held request's body (or its trailers) came while it was held:
    /// Envoy hands bodies over after a headers pause. True when the VM had
    /// stopped holding writes and holds them again.
    pub fn body_came(&mut self) -> bool {
        self.hold_rule.body_came()
    }

    /// The held requests that have waited `timeout_ms` or longer for their
    /// body, taken off the waiting list.
    pub fn take_overdue(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<u32> {
        self.holds.take_overdue(now_ms, timeout_ms)
    }

    /// Counts a held request sent on because its body did not come in
    /// time, and applies [`HoldRule`].
    pub fn hold_timed_out(&mut self, now_ms: u64) -> Timeout {
        self.counts.hold_timeouts = self.counts.hold_timeouts.wrapping_add(1);
        self.hold_rule.timed_out(now_ms)
    }

    /// Holds writes again if the VM stopped a while ago ([`HoldRule::retry`]).
    pub fn retry_holding(&mut self, now_ms: u64) -> bool {
        self.hold_rule.retry(now_ms)
    }

    /// Records that the poller sent held request `id` on, and where.
    pub fn sent_on(&mut self, id: u32, sent: Sent) {
        self.holds.sent_on(id, sent);
    }

    /// Where the poller sent held request `id` on, if it did (asked once).
    pub fn take_sent_on(&mut self, id: u32) -> Option<Sent> {
        self.holds.take_sent_on(id)
    }

    /// Requests held now: how many wait for their body, and how many were
    /// sent on and not yet told.
    pub fn held_counts(&self) -> (usize, usize) {
        self.holds.sizes()
    }

    // Failure streaks and the nodes they took out.

    /// Folds one response from `node` into its failure streaks; true when
    /// the node's connects failed [`StreakLimits::connect_failures`] times
    /// in a row, or its connections were reset [`StreakLimits::resets`]
    /// times in a row (the streak then starts afresh). An answer ends both
    /// streaks.
    #[inline]
    pub fn streak_ended(&mut self, node: &NodeAddr, outcome: Outcome) -> bool {
        let (limit, streak) = match outcome {
            Outcome::Answered => {
                if !self.failures.is_empty() {
                    self.failures.remove(node);
                }
                return false;
            }
            Outcome::ConnectFailed => {
                let streak = self.failures.entry(*node).or_default();
                (self.limits.connect_failures, &mut streak.connect_failures)
            }
            Outcome::Reset => {
                let streak = self.failures.entry(*node).or_default();
                (self.limits.resets, &mut streak.resets)
            }
        };
        *streak = streak.saturating_add(1);
        if *streak >= limit {
            self.failures.remove(node);
            return true;
        }
        false
    }

    /// Failure streaks go with their node: keeps those of the nodes `keep`
    /// accepts, so that a node that comes back starts afresh and streaks of
    /// nodes that come and go do not pile up.
    pub fn keep_streaks(&mut self, keep: impl Fn(&NodeAddr) -> bool) {
        self.failures.retain(|n, _| keep(n));
    }

    /// Posts a node this VM took out, for the poller to publish as Down
    /// (once until the poller takes it).
    pub fn post_unreachable(&mut self, unreachable: Unreachable) {
        if !self.unreachable.iter().any(|u| u.node == unreachable.node) {
            self.unreachable.push(unreachable);
        }
    }

    /// The nodes found unreachable since the last call.
    pub fn take_unreachable(&mut self) -> Vec<Unreachable> {
        std::mem::take(&mut self.unreachable)
    }

    // Partition keys.

    /// The partition keys this VM knows.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Replaces what this VM knows of learned partition keys with the
    /// shared entry every VM writes to.
    pub fn set_learned(&mut self, encoded: Option<&[u8]>) {
        self.tables.set_learned(encoded);
        // Keys learned here and not yet shared stay known until shared.
        for (table, attr) in &self.learned {
            self.tables.remember(table, attr);
        }
    }

    /// Records a partition key a table description named; when it is news
    /// to this VM, it is queued for the poller to share.
    pub fn remember(&mut self, table: &str, attr: &str) {
        if self.tables.remember(table, attr) {
            self.learned.push((table.to_owned(), attr.to_owned()));
        }
    }

    /// The partition keys learned since the last call.
    pub fn take_learned(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.learned)
    }

    /// Queues again the keys [`Mailbox::take_learned`] gave that could not
    /// be shared yet.
    pub fn requeue_learned(&mut self, unshared: Vec<(String, String)>) {
        self.learned.extend(unshared);
    }
}
