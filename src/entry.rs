//! What Envoy calls: the proxy-wasm ABI's exported functions, each handed
//! to the root context ([`Root`], one per VM and plugin) or the request's
//! context ([`Http`]) it names.
//!
//! Contexts live in two [`VecMap`]s keyed by context id. Envoy numbers
//! contexts upwards, so a new request's context goes at the end, and the
//! per-request lookups are a binary search over the requests in flight on
//! this worker. Envoy defers what a host call would call back into the
//! module (local replies, callout answers) until the current callback
//! returns, so callbacks do not nest; if one ever did, or named a context
//! the filter does not have, it does nothing, except that a request's
//! headers are then answered with the 503 rather than forwarded unrouted.
//! Nothing here may panic inside Envoy.

use crate::abi::{self, Action};
use crate::http::{self, Http};
use crate::root::Root;
use std::cell::RefCell;
use std::collections::BTreeMap;

struct Contexts {
    roots: BTreeMap<u32, Root>,
    requests: BTreeMap<u32, Http>,
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = const {
        RefCell::new(Contexts {
            roots: BTreeMap::new(),
            requests: BTreeMap::new(),
        })
    };
}

/// Runs `f` on the contexts; `None` when they are busy (a callback from
/// inside a callback).
fn with<T>(f: impl FnOnce(&mut Contexts) -> Option<T>) -> Option<T> {
    CONTEXTS.with(|c| f(&mut *c.try_borrow_mut().ok()?))
}

fn root<T>(id: u32, f: impl FnOnce(&mut Root) -> T) -> Option<T> {
    with(|c| c.roots.get_mut(&id).map(f))
}

fn request(id: u32, f: impl FnOnce(&mut Http) -> Action) -> u32 {
    with(|c| c.requests.get_mut(&id).map(f)).unwrap_or(Action::Continue) as u32
}

/// Runs once when the VM starts: a panic would trap the VM, so say so in
/// Envoy's log (with the failure policy's consequence) before it happens.
#[no_mangle]
pub extern "C" fn _initialize() {
    std::panic::set_hook(Box::new(|info| {
        abi::log!(
            Critical,
            "alternator-lb panicked, this Wasm VM stops (failure_policy applies): {info}"
        );
    }));
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory for the host to write into (`malloc` is the name Envoy looks for
/// in a module without WASI).
#[cfg_attr(
    all(target_arch = "wasm32", target_os = "unknown"),
    export_name = "malloc"
)]
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "unknown")), no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    abi::allocate(size)
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_id: u32) {
    with(|c| {
        if root_id == 0 {
            c.roots.insert(context_id, Root::new());
        } else {
            let http = c.roots.get(&root_id)?.new_http();
            c.requests.insert(context_id, http);
        }
        Some(())
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root_id: u32, _vm_configuration_size: usize) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root_id: u32, _configuration_size: usize) -> bool {
    root(root_id, Root::on_configure).unwrap_or(false)
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(root_id: u32) {
    root(root_id, Root::on_tick);
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    root_id: u32,
    token: u32,
    num_headers: usize,
    body_size: usize,
    _num_trailers: usize,
) {
    root(root_id, |r| {
        r.on_http_call_response(token, num_headers, body_size)
    });
}

/// Fails closed: a request the filter has no context for is answered with
/// the 503, never forwarded without a node chosen.
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(id: u32, _num_headers: usize, end: bool) -> u32 {
    with(|c| c.requests.get_mut(&id).map(|h| h.on_request_headers(end)))
        .unwrap_or_else(|| http::reject_unknown(id)) as u32
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(id: u32, body_size: usize, end: bool) -> u32 {
    request(id, |h| h.on_request_body(body_size, end))
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(id: u32, _num_headers: usize, _end: bool) -> u32 {
    request(id, Http::on_response_headers)
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(id: u32, body_size: usize, end: bool) -> u32 {
    request(id, |h| h.on_response_body(body_size, end))
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(id: u32) {
    with(|c| {
        if c.requests.remove(&id).is_none() {
            c.roots.remove(&id);
        }
        Some(())
    });
}
