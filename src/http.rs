//! The per-request path: pick the next node, hand it to Envoy, continue; on
//! the response, notice a node that did not answer.
//!
//! This is the only code that runs per request, so it does as little as
//! possible: no JSON, no shared-data read, no formatting, no allocation. The
//! node list and its pre-encoded filter-state arguments are kept current by
//! the VM's root context on its tick; counters are plain cells the root
//! flushes to Envoy's stats on its tick.

use crate::abi;
use crate::routes::{Route, Routes};
use alternator_lb_core::error_body;
use alternator_lb_core::filter_state::FOREIGN_FUNCTION;
use alternator_lb_core::health::outcome_from_flags;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

pub struct Http {
    pub routes: Rc<Routes>,
    /// The node this request went to, to attribute a failure.
    pub chosen: Option<Rc<Route>>,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(route) = self.routes.pick() else {
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
                self.routes.refused(status);
                reject(error_body::ROUTING_FAILED)
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(route) = self.chosen.take() {
            // Flags are 0 unless something went wrong; a node that answered,
            // whatever its status, is reachable.
            let flags = abi::response_flags();
            self.routes.observe(&route.node, outcome_from_flags(flags));
        }
        Action::Continue
    }
}

impl Http {
    pub fn new(routes: Rc<Routes>) -> Self {
        Http {
            routes,
            chosen: None,
        }
    }
}

/// Answers the request locally with the DynamoDB-style 503.
fn reject(body: &[u8]) -> Action {
    let sent = hostcalls::send_http_response(
        error_body::STATUS,
        vec![("content-type", error_body::CONTENT_TYPE)],
        Some(body),
    );
    if let Err(status) = sent {
        log::error!("could not send the 503 answer: {status:?}");
    }
    Action::Pause
}
