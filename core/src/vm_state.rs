//! What one VM's requests and its poller share: the routes the poller keeps
//! current and the requests pick from ([`Routes`]), and the mailbox they
//! leave each other things in ([`Mailbox`]).
//!
//! The two live in one `RefCell` (the VM is single-threaded, and a request
//! borrows once per callback), and what needs both is here: a failure
//! streak that ends takes its node out of the routes and posts it for the
//! poller; a rebuild of the routes drops the streaks of nodes gone.

use crate::mailbox::{Mailbox, StreakLimits, Unreachable};
use crate::model::config::Mode;
use crate::model::health::Outcome;
use crate::model::record::SharedState;
use crate::model::NodeAddr;
use crate::routes::{Routes, Sent};
use crate::topology::Topology;

/// One VM's own state, as opposed to the record every VM of the process
/// shares ([`SharedState`]): the poller writes the routes and reads the
/// mailbox on its ticks, the VM's requests read the routes and write the
/// mailbox.
pub struct VmState {
    pub routes: Routes,
    pub mailbox: Mailbox,
}

impl VmState {
    pub fn new(
        routes: Routes,
        limits: StreakLimits,
        partition_keys: &[(String, String)],
    ) -> VmState {
        VmState {
            routes,
            mailbox: Mailbox::new(limits, partition_keys),
        }
    }

    /// Whether a write may be held for its body now: affinity is on, and
    /// the VM holds writes ([`crate::hold::HoldRule`]).
    #[inline]
    pub fn may_hold(&self) -> bool {
        self.mailbox.holding() && self.routes.mode() != Mode::None
    }

    /// Folds the outcome of a request this VM sent into the failure
    /// streaks, unless the request was sent in an older generation of its
    /// node: it went Down since (here or in the record), and what happened
    /// to a request sent before says nothing about it now.
    #[inline]
    pub fn observe_sent(&mut self, sent: &Sent, outcome: Outcome) {
        if sent.generation == sent.route.generation.get() {
            self.observe(&sent.route.node, outcome);
        }
    }

    /// Folds one response from `node` into its failure streaks
    /// ([`Mailbox::streak_ended`]). A node whose streak ended stops getting
    /// this VM's requests at once, before the other VMs hear of it, and is
    /// posted for the poller to publish as Down.
    #[inline]
    pub fn observe(&mut self, node: &NodeAddr, outcome: Outcome) {
        if !self.mailbox.streak_ended(node, outcome) {
            return;
        }
        if let Some(generation) = self.routes.withdraw(node) {
            self.mailbox.post_unreachable(Unreachable {
                node: *node,
                why: outcome,
                generation,
            });
        }
    }

    /// Rebuilds the routes from the shared record ([`Routes::rebuild`]);
    /// when they changed, the failure streaks of nodes no longer routed to
    /// go.
    pub fn rebuild(
        &mut self,
        state: Option<&SharedState>,
        topology: &Topology,
        withheld: &[NodeAddr],
    ) {
        if self.routes.rebuild(state, topology, withheld) {
            let routes = &self.routes;
            self.mailbox.keep_streaks(|n| routes.has_route(n));
        }
    }
}
