//! What one VM routes over, shared between its root context (which rebuilds
//! it on tick) and its requests (which only read and count).

use alternator_lb_core::address::NodeAddr;
use alternator_lb_core::filter_state;
use alternator_lb_core::health::Outcome;
use alternator_lb_core::picker::RoundRobin;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// One node, with the exact bytes handed to Envoy to route there.
pub struct Route {
    pub node: NodeAddr,
    pub args: Vec<u8>,
    /// With `verify_node_san`: the certificate check for this node.
    pub verify: Option<Vec<u8>>,
}

impl Route {
    pub fn new(node: NodeAddr, verify_san: bool) -> Rc<Route> {
        Rc::new(Route {
            args: filter_state::route_to(&node),
            verify: verify_san.then(|| filter_state::verify_san(&node)),
            node,
        })
    }
}

pub struct Routes {
    picker: RefCell<RoundRobin<Rc<Route>>>,
    /// Requests routed and rejected since the VM started; the root turns
    /// the growth into stats deltas.
    routed: Cell<u64>,
    rejected: Cell<u64>,
    /// Connection failures in a row per node, seen by this VM.
    failures: RefCell<HashMap<NodeAddr, u32>>,
    down_after_failures: Cell<u32>,
    /// Nodes this VM found unreachable, for the root to publish as Down.
    unreachable: RefCell<Vec<NodeAddr>>,
    refusal_logged: Cell<bool>,
}

impl Routes {
    pub fn new() -> Self {
        Routes {
            picker: RefCell::new(RoundRobin::new(Vec::new(), 0)),
            routed: Cell::new(0),
            rejected: Cell::new(0),
            failures: RefCell::new(HashMap::new()),
            down_after_failures: Cell::new(1),
            unreachable: RefCell::new(Vec::new()),
            refusal_logged: Cell::new(false),
        }
    }

    pub fn configure(&self, start: usize, down_after_failures: u32) {
        if let Ok(mut picker) = self.picker.try_borrow_mut() {
            *picker = RoundRobin::new(Vec::new(), start);
        }
        self.down_after_failures.set(down_after_failures);
    }

    #[inline]
    pub fn pick(&self) -> Option<Rc<Route>> {
        self.picker.try_borrow_mut().ok()?.pick().cloned()
    }

    pub fn replace(&self, routes: Vec<Rc<Route>>) {
        if let Ok(mut picker) = self.picker.try_borrow_mut() {
            picker.replace(routes);
        }
    }

    pub fn nodes(&self) -> Vec<NodeAddr> {
        self.picker
            .try_borrow()
            .map(|p| p.entries().iter().map(|r| r.node).collect())
            .unwrap_or_default()
    }

    #[inline]
    pub fn count_routed(&self) {
        self.routed.set(self.routed.get().wrapping_add(1));
    }

    pub fn count_rejected(&self) {
        self.rejected.set(self.rejected.get().wrapping_add(1));
    }

    pub fn counts(&self) -> (u64, u64) {
        (self.routed.get(), self.rejected.get())
    }

    /// Folds one response into the failure streaks. A node unreachable
    /// `down_after_failures` times in a row stops getting this VM's requests
    /// at once, before the other VMs hear of it.
    #[inline]
    pub fn observe(&self, node: &NodeAddr, outcome: Outcome) {
        let Ok(mut failures) = self.failures.try_borrow_mut() else {
            return;
        };
        match outcome {
            Outcome::Answered => {
                if !failures.is_empty() {
                    failures.remove(node);
                }
            }
            Outcome::Unreachable => {
                let streak = failures.entry(*node).or_insert(0);
                *streak += 1;
                if *streak >= self.down_after_failures.get() {
                    failures.remove(node);
                    if let Ok(mut picker) = self.picker.try_borrow_mut() {
                        picker.retain(|r| r.node != *node);
                    }
                    if let Ok(mut unreachable) = self.unreachable.try_borrow_mut() {
                        if !unreachable.contains(node) {
                            unreachable.push(*node);
                        }
                    }
                }
            }
        }
    }

    pub fn take_unreachable(&self) -> Vec<NodeAddr> {
        self.unreachable
            .try_borrow_mut()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default()
    }

    pub fn refused(&self, status: u32) {
        if !self.refusal_logged.replace(true) {
            log::error!(
                "Envoy refused {} (proxy-wasm status {status}); requests are answered with 503. \
                 Is this Envoy older than 1.27, or built without that foreign function?",
                filter_state::FOREIGN_FUNCTION
            );
        }
    }
}
