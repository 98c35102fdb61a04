//! A Wasm HTTP filter that does nothing, exporting the same proxy-wasm
//! callbacks as alternator-lb (after `scripts/build`), built with the same
//! profile and loaded with the same Envoy configuration. Envoy's cost for it
//! is the floor any proxy-wasm filter with those callbacks pays per request:
//! a context per request and a call into V8 per callback. The benchmark
//! compares alternator-lb against it to separate the filter's own work from
//! Envoy's Wasm machinery.
//!
//! Like alternator-lb it speaks the ABI directly (no SDK), so the floor
//! contains nothing but Envoy's side of the calls.

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory for the host to write into; this filter never asks for any.
#[cfg_attr(
    all(target_arch = "wasm32", target_os = "unknown"),
    export_name = "malloc"
)]
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "unknown")), no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut v: Vec<u8> = Vec::with_capacity(size);
    let data = v.as_mut_ptr();
    std::mem::forget(v);
    data
}

#[no_mangle]
pub extern "C" fn _initialize() {}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _root_id: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root_id: u32, _size: usize) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root_id: u32, _size: usize) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(_root_id: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(_: u32, _: u32, _: usize, _: usize, _: usize) {}

/// Every request callback answers Continue (0).
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_id: u32, _headers: usize, _end: bool) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_id: u32, _size: usize, _end: bool) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_id: u32, _headers: usize, _end: bool) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(_id: u32, _size: usize, _end: bool) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(_id: u32) {}
