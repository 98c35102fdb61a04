//! One root context per VM: its `Poller` (configuration, tick, callout
//! answers) and a `Stream` per request over the poller's routes.

use crate::host::SdkHost;
use crate::http::Http;
use alternator_lb_core::poller::Poller;
use alternator_lb_core::stream::Stream;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

#[derive(Default)]
pub struct Root {
    poller: Option<Poller<SdkHost>>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(poller) = &mut self.poller {
            poller.on_http_call_response(token_id, num_headers, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _configuration_size: usize) -> bool {
        crate::host::follow_envoy_log_level();
        self.poller = Poller::configure(SdkHost).ok();
        self.poller.is_some()
    }

    fn on_tick(&mut self) {
        crate::host::follow_envoy_log_level();
        if let Some(poller) = &mut self.poller {
            poller.on_tick();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Envoy creates request contexts only for a configured filter; the
        // SDK would panic on `None`, so an unconfigured one gets a stream
        // with no route, which answers 503.
        let stream = match &self.poller {
            Some(poller) => Stream::new(context_id, poller.vm_state()),
            None => Stream::unconfigured(context_id),
        };
        Some(Box::new(Http::new(stream)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
