//! The per-request path: pick the next node, hand it to Envoy, continue.
//!
//! This is the only code that runs per request, so it does as little as
//! possible: no JSON, no shared-data read, no formatting, no allocation. The
//! node list and its pre-encoded filter-state arguments are kept current by
//! the VM's root context on its tick.

use alternator_lb_core::error_body;
use alternator_lb_core::filter_state::FOREIGN_FUNCTION;
use alternator_lb_core::picker::RoundRobin;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// What one VM routes over; owned by the root context, shared with requests.
pub struct Routes {
    /// Encoded `set_envoy_filter_state` arguments, one per node.
    pub picker: RefCell<RoundRobin<Vec<u8>>>,
    /// Whether a refusal by Envoy was already logged in this VM.
    refusal_logged: Cell<bool>,
}

impl Routes {
    pub fn new() -> Self {
        Routes {
            picker: RefCell::new(RoundRobin::new(Vec::new(), 0)),
            refusal_logged: Cell::new(false),
        }
    }
}

pub struct Http {
    pub routes: Rc<Routes>,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let refusal = {
            let Ok(mut picker) = self.routes.picker.try_borrow_mut() else {
                return reject(error_body::ROUTING_FAILED);
            };
            match picker.pick() {
                None => return reject(error_body::NO_NODE),
                Some(args) => {
                    match hostcalls::call_foreign_function(FOREIGN_FUNCTION, Some(args)) {
                        Ok(_) => return Action::Continue,
                        Err(status) => status,
                    }
                }
            }
        };
        // Without the filter state the ORIGINAL_DST cluster would connect to
        // Envoy's own listener address: fail closed instead.
        if !self.routes.refusal_logged.replace(true) {
            log::error!(
                "Envoy refused {FOREIGN_FUNCTION} ({refusal:?}); requests are answered with 503. \
                 Is this Envoy older than 1.27, or built without that foreign function?"
            );
        }
        reject(error_body::ROUTING_FAILED)
    }
}

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
