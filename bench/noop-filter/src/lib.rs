//! A Wasm HTTP filter that does nothing, built with the same SDK, build
//! profile and Envoy configuration as alternator-lb. Envoy's cost for it is
//! the floor any proxy-wasm filter pays per request; the benchmark compares
//! alternator-lb against it to separate the filter's own work from Envoy's
//! Wasm machinery.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

struct Root;
struct Http;

impl Context for Root {}
impl Context for Http {}
impl HttpContext for Http {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(Root));
}}
