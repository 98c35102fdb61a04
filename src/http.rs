//! One context per request: Envoy's request and response callbacks, handed
//! to the core's `Stream` with this request's host.

use crate::host::SdkStream;
use alternator_lb_core::stream::{self, Stream};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

pub struct Http {
    stream: Stream,
}

impl Http {
    pub fn new(stream: Stream) -> Http {
        Http { stream }
    }
}

/// Only in a module built for the end-to-end test of Envoy's failure
/// policy (`ALTERNATOR_LB_TRAP_HEADER`, scripts/build): a request carrying
/// this header makes the VM panic, as a bug would. `None`, and so no code,
/// in every other build.
const TRAP_HEADER: Option<&str> = option_env!("ALTERNATOR_LB_TRAP_HEADER");

fn action(a: stream::Action) -> Action {
    match a {
        stream::Action::Continue => Action::Continue,
        stream::Action::Pause => Action::Pause,
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if let Some(name) = TRAP_HEADER {
            if alternator_lb_core::host::StreamHost::request_header(&SdkStream, name).is_some() {
                #[allow(clippy::panic)]
                {
                    panic!("{name} asked for a trap (a test build)");
                }
            }
        }
        action(self.stream.on_request_headers(&SdkStream, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(
            self.stream
                .on_request_body(&SdkStream, body_size, end_of_stream),
        )
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.stream.on_request_trailers(&SdkStream))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        action(self.stream.on_response_headers(&SdkStream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(
            self.stream
                .on_response_body(&SdkStream, body_size, end_of_stream),
        )
    }
}
