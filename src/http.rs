//! The per-request path: pick the next node, hand it to Envoy, continue; on
//! the response, notice a node that did not answer.
//!
//! This is the only code that runs per request, so it does as little as
//! possible: no JSON, no shared-data read, no formatting, no allocation. The
//! node list and its pre-encoded filter-state arguments are kept current by
//! the VM's root context on its tick; counters are plain cells the root
//! flushes to Envoy's stats on its tick.
//!
//! With `key_route_affinity` on, writes that may qualify are the exception:
//! their body is held until complete, read, and routed to the key's node
//! (`alternator_lb_core::affinity` decides); the answers of CreateTable and
//! DescribeTable are read to learn tables' partition keys. Every other
//! request, and every request with affinity off, takes the path above.

use crate::abi::{self, Action};
use crate::routes::{Route, Routes};
use alternator_lb_core::affinity::{self, Mode, Op, MAX_BODY_BYTES};
use alternator_lb_core::error_body;
use alternator_lb_core::filter_state::FOREIGN_FUNCTION;
use alternator_lb_core::health::outcome_from_flags;
use std::rc::Rc;

pub struct Http {
    pub routes: Rc<Routes>,
    /// The node this request went to, to attribute a failure.
    pub chosen: Option<Rc<Route>>,
    /// A write whose body is held for affinity: its operation, and whether
    /// the body is gzip-compressed.
    held: Option<(Op, bool)>,
    /// A CreateTable or DescribeTable whose answer may name a partition key,
    /// and whether that answer is gzip-compressed.
    learn: Option<(Op, bool)>,
}

impl Http {
    pub fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        let mode = self.routes.mode();
        if mode != Mode::None && self.wait_for_body(mode, end_of_stream) {
            return Action::Pause;
        }
        self.route(None)
    }

    pub fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some((op, gzip)) = self.held else {
            return Action::Continue;
        };
        if !end_of_stream {
            // Envoy keeps the chunks; the whole body comes at the end.
            return Action::Pause;
        }
        self.held = None;
        let key = whole_body(abi::REQUEST_BODY, body_size, gzip).and_then(|b| {
            let tables = self.routes.tables()?;
            affinity::key(self.routes.mode(), op, &b, &tables)
        });
        let by_key = key.and_then(|k| self.routes.pick_for_key(&k));
        self.route(by_key)
    }

    pub fn on_response_headers(&mut self) -> Action {
        if let Some(route) = self.chosen.take() {
            // Flags are 0 unless something went wrong; a node that answered,
            // whatever its status, is reachable.
            let flags = abi::response_flags();
            self.routes.observe(&route.node, outcome_from_flags(flags));
        }
        if let Some((op, _)) = self.learn {
            self.learn = (header(abi::RESPONSE_HEADERS, ":status") == b"200").then(|| {
                (
                    op,
                    header(abi::RESPONSE_HEADERS, "content-encoding") == b"gzip",
                )
            });
        }
        Action::Continue
    }

    pub fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some((op, gzip)) = self.learn else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        self.learn = None;
        let learned = whole_body(abi::RESPONSE_BODY, body_size, gzip)
            .and_then(|b| affinity::tables::learn(op, 200, &b));
        if let Some((table, attr)) = learned {
            if self.routes.remember(&table, &attr) {
                self.routes.publish_learned(&table, &attr);
            }
        }
        Action::Continue
    }

    pub fn new(routes: Rc<Routes>) -> Self {
        Http {
            routes,
            chosen: None,
            held: None,
            learn: None,
        }
    }

    /// Reads the operation; true when the request's body must be read
    /// before it is routed. Bodies announced over Alternator's 16 MiB limit,
    /// or not announced at all, are never held.
    fn wait_for_body(&mut self, mode: Mode, end_of_stream: bool) -> bool {
        let op = Op::from_target(&header(abi::REQUEST_HEADERS, "x-amz-target"));
        if affinity::wants_response_body(mode, op) {
            self.learn = Some((op, false));
        }
        if end_of_stream || !affinity::wants_request_body(mode, op) {
            return false;
        }
        let length = header(abi::REQUEST_HEADERS, "content-length");
        let announced = std::str::from_utf8(&length)
            .ok()
            .and_then(|l| l.parse::<usize>().ok());
        if !announced.is_some_and(|n| n <= MAX_BODY_BYTES) {
            return false;
        }
        let gzip = header(abi::REQUEST_HEADERS, "content-encoding") == b"gzip";
        self.held = Some((op, gzip));
        true
    }

    /// Hands the request to `chosen`, or to the next node round robin.
    fn route(&mut self, chosen: Option<Rc<Route>>) -> Action {
        let Some(route) = chosen.or_else(|| self.routes.pick()) else {
            self.routes.count_rejected();
            return reject(error_body::NO_NODE);
        };
        let mut handed = abi::call_foreign(FOREIGN_FUNCTION, &route.args);
        if let (Ok(_), Some(verify)) = (&handed, &route.verify) {
            handed = abi::call_foreign(FOREIGN_FUNCTION, verify);
        }
        match handed {
            Ok(_) => {
                self.routes.count_routed();
                self.chosen = Some(route);
                Action::Continue
            }
            Err(status) => {
                // Without the filter state the ORIGINAL_DST cluster would
                // connect to Envoy's own listener address, or the node's
                // certificate would go unchecked: fail closed.
                self.routes.refused(status.0);
                reject(error_body::ROUTING_FAILED)
            }
        }
    }
}

use abi::header;

/// A held body, whole, inflated when it is gzip (`None` when that fails).
fn whole_body(buffer: u32, size: usize, gzip: bool) -> Option<Vec<u8>> {
    let body = abi::buffer(buffer, size);
    if gzip {
        affinity::inflate_gzip(&body, MAX_BODY_BYTES)
    } else {
        Some(body)
    }
}

/// A request whose context the filter does not have (Envoy never created
/// it here, or its root context is gone): it must not reach the
/// ORIGINAL_DST cluster without a node chosen, so it gets the 503.
pub fn reject_unknown(id: u32) -> Action {
    abi::log!(
        Error,
        "request context {id} is unknown to the filter; answering 503 rather than forwarding it unrouted"
    );
    reject(error_body::NO_CONTEXT)
}

/// Answers the request locally with the DynamoDB-style 503.
fn reject(body: &[u8]) -> Action {
    let sent = abi::send_response(
        error_body::STATUS,
        &[("content-type", error_body::CONTENT_TYPE)],
        body,
    );
    if let Err(status) = sent {
        abi::log!(Error, "could not send the 503 answer: {status}");
    }
    Action::Pause
}
