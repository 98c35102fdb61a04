//! What one VM routes over, shared between its root context (which rebuilds
//! it on tick) and its requests (which only read and count).

use alternator_lb_core::affinity::{self, Key, Mode, NodeHealth, Tables};
use alternator_lb_core::filter_state;
use alternator_lb_core::model::health::Outcome;
use alternator_lb_core::model::NodeAddr;
use alternator_lb_core::picker::RoundRobin;
use std::cell::{Cell, Ref, RefCell};
use std::collections::BTreeMap;
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

/// One scope's discovered nodes in the client libraries' canonical order,
/// healthy or not, for key route affinity: health only decides at the pick.
pub struct Ring {
    pub routes: Vec<Rc<Route>>,
    pub health: Vec<NodeHealth>,
}

pub struct Routes {
    /// One round robin per routing scope; a request takes the first that
    /// has a node.
    tiers: RefCell<Vec<RoundRobin<Rc<Route>>>>,
    /// Per scope, for key route affinity (empty when it is off).
    rings: RefCell<Vec<Ring>>,
    mode: Cell<Mode>,
    tables: RefCell<Tables>,
    start: Cell<usize>,
    /// Shared-data key of the learned partition keys.
    learned_key: RefCell<String>,
    /// Requests routed and rejected since the VM started; the root turns
    /// the growth into stats deltas.
    routed: Cell<u64>,
    rejected: Cell<u64>,
    /// Connection failures in a row per node, seen by this VM.
    failures: RefCell<BTreeMap<NodeAddr, u32>>,
    down_after_failures: Cell<u32>,
    /// Nodes this VM found unreachable, for the root to publish as Down.
    unreachable: RefCell<Vec<NodeAddr>>,
    refusal_logged: Cell<bool>,
}

impl Routes {
    pub fn new() -> Self {
        Routes {
            tiers: RefCell::new(Vec::new()),
            rings: RefCell::new(Vec::new()),
            mode: Cell::new(Mode::None),
            tables: RefCell::new(Tables::default()),
            start: Cell::new(0),
            learned_key: RefCell::new(String::new()),
            routed: Cell::new(0),
            rejected: Cell::new(0),
            failures: RefCell::new(BTreeMap::new()),
            down_after_failures: Cell::new(1),
            unreachable: RefCell::new(Vec::new()),
            refusal_logged: Cell::new(false),
        }
    }

    pub fn configure(
        &self,
        start: usize,
        down_after_failures: u32,
        mode: Mode,
        partition_keys: &[(String, String)],
        learned_key: String,
    ) {
        if let Ok(mut key) = self.learned_key.try_borrow_mut() {
            *key = learned_key;
        }
        if let Ok(mut tiers) = self.tiers.try_borrow_mut() {
            tiers.clear();
        }
        self.start.set(start);
        self.down_after_failures.set(down_after_failures);
        self.mode.set(mode);
        if let Ok(mut tables) = self.tables.try_borrow_mut() {
            *tables = Tables::new(partition_keys);
        }
    }

    #[inline]
    pub fn mode(&self) -> Mode {
        self.mode.get()
    }

    /// The next node of the first scope that has one.
    #[inline]
    pub fn pick(&self) -> Option<Rc<Route>> {
        let mut tiers = self.tiers.try_borrow_mut().ok()?;
        tiers
            .iter_mut()
            .find(|t| !t.is_empty())
            .and_then(|t| t.pick().cloned())
    }

    /// The key's node: in the first scope whose ring has a usable node, the
    /// first Active node of the key's order, else the first Quarantined one.
    /// `None` leaves the request to [`Routes::pick`].
    pub fn pick_for_key(&self, key: &Key) -> Option<Rc<Route>> {
        let rings = self.rings.try_borrow().ok()?;
        rings.iter().find_map(|ring| {
            let order = affinity::order(key, ring.routes.len())?;
            let i = affinity::choose(&order, |i| {
                ring.health.get(i).copied().unwrap_or(NodeHealth::Down)
            })?;
            ring.routes.get(i).cloned()
        })
    }

    /// Replaces the scopes' node lists (and, with affinity, their rings).
    pub fn replace(&self, tiers: Vec<Vec<Rc<Route>>>, rings: Vec<Ring>) {
        if let Ok(mut current) = self.tiers.try_borrow_mut() {
            current.resize_with(tiers.len(), || {
                RoundRobin::new(Vec::new(), self.start.get())
            });
            for (picker, routes) in current.iter_mut().zip(tiers) {
                picker.replace(routes);
            }
        }
        if let Ok(mut current) = self.rings.try_borrow_mut() {
            *current = rings;
        }
    }

    /// Every node some scope routes to now, in scope order.
    pub fn nodes(&self) -> Vec<Vec<NodeAddr>> {
        self.tiers
            .try_borrow()
            .map(|tiers| {
                tiers
                    .iter()
                    .map(|t| t.entries().iter().map(|r| r.node).collect())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn tables(&self) -> Option<Ref<'_, Tables>> {
        self.tables.try_borrow().ok()
    }

    /// Replaces what this VM knows of learned partition keys with the
    /// shared entry every VM writes to.
    pub fn set_learned(&self, encoded: Option<&[u8]>) {
        if let Ok(mut tables) = self.tables.try_borrow_mut() {
            tables.set_learned(encoded);
        }
    }

    /// Shares a learned partition key with the other VMs.
    pub fn publish_learned(&self, table: &str, attr: &str) {
        if let Ok(key) = self.learned_key.try_borrow() {
            crate::learned::publish(&key, table, attr);
        }
    }

    /// Records a learned partition key; true when it is news to this VM.
    pub fn remember(&self, table: &str, attr: &str) -> bool {
        self.tables
            .try_borrow_mut()
            .map(|mut t| t.remember(table, attr))
            .unwrap_or(false)
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
                let streak = failures.get(node).copied().unwrap_or(0) + 1;
                failures.insert(*node, streak);
                if streak >= self.down_after_failures.get() {
                    failures.remove(node);
                    if let Ok(mut tiers) = self.tiers.try_borrow_mut() {
                        for tier in tiers.iter_mut() {
                            tier.retain(|r| r.node != *node);
                        }
                    }
                    if let Ok(mut rings) = self.rings.try_borrow_mut() {
                        for ring in rings.iter_mut() {
                            let at = ring.routes.iter().position(|r| r.node == *node);
                            if let Some(h) = at.and_then(|i| ring.health.get_mut(i)) {
                                *h = NodeHealth::Down;
                            }
                        }
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
            crate::abi::log!(
                Error,
                "Envoy refused {} (proxy-wasm status {status}); requests are answered with 503. \
                 Is this Envoy older than 1.27, or built without that foreign function?",
                filter_state::FOREIGN_FUNCTION
            );
        }
    }
}
