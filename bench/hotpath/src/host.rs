//! Mock proxy-wasm host: every `env.proxy_*` function of the ABI (more than
//! the filter imports), as `#[no_mangle] extern "C"` functions the native
//! link resolves the proxy-wasm SDK's `hostcalls` imports to.
//!
//! They behave like Envoy as far as the filter can tell: buffers the host
//! returns are allocated inside the module through its exported
//! `proxy_on_memory_allocate` (the module then owns and frees them), shared
//! data is a real key/value map with compare-and-swap, callouts get tokens
//! and are answered later by [`deliver_callouts`]. Each function counts its
//! calls. None of them allocates on the request path, and what they do
//! allocate is counted as host memory, not the filter's (see `alloc`).
//!
//! Enum-like parameters (log level, buffer type, map type, ...) are taken
//! as `u32`, as the ABI passes them, so that no value the module passes can
//! be an invalid enum. Statuses are returned as `u32`.

use crate::alloc::InHost;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

// proxy-wasm statuses (as the SDK's `hostcalls` read them).
const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const BAD_ARGUMENT: u32 = 2;
const CAS_MISMATCH: u32 = 8;
const UNIMPLEMENTED: u32 = 12;

// BufferType and MapType values used here.
const BUFFER_HTTP_CALL_RESPONSE_BODY: u32 = 4;
const BUFFER_VM_CONFIGURATION: u32 = 6;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
/// `proxy_wasm::types::MapType::HttpRequestHeaders`.
const MAP_HTTP_REQUEST_HEADERS: u32 = 0;
const MAP_HTTP_CALL_RESPONSE_HEADERS: u32 = 6;

extern "C" {
    /// The module's allocator export (the SDK's).
    fn proxy_on_memory_allocate(size: usize) -> *mut u8;
    /// The module's callout-response entry point (the SDK's dispatcher).
    fn proxy_on_http_call_response(
        context_id: u32,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    );
}

macro_rules! host_functions {
    ($($name:ident),* $(,)?) => {
        /// Every host function, in the order calls are reported.
        #[allow(non_camel_case_types, clippy::enum_variant_names)]
        #[derive(Clone, Copy)]
        #[repr(usize)]
        pub enum Fn { $($name),* }
        pub const NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

host_functions!(
    proxy_log,
    proxy_get_log_level,
    proxy_get_current_time_nanoseconds,
    proxy_set_tick_period_milliseconds,
    proxy_get_buffer_bytes,
    proxy_set_buffer_bytes,
    proxy_get_header_map_pairs,
    proxy_set_header_map_pairs,
    proxy_get_header_map_value,
    proxy_remove_header_map_value,
    proxy_replace_header_map_value,
    proxy_add_header_map_value,
    proxy_get_property,
    proxy_set_property,
    proxy_get_shared_data,
    proxy_set_shared_data,
    proxy_register_shared_queue,
    proxy_resolve_shared_queue,
    proxy_dequeue_shared_queue,
    proxy_enqueue_shared_queue,
    proxy_continue_stream,
    proxy_close_stream,
    proxy_send_local_response,
    proxy_http_call,
    proxy_grpc_call,
    proxy_grpc_stream,
    proxy_grpc_send,
    proxy_grpc_cancel,
    proxy_grpc_close,
    proxy_get_status,
    proxy_set_effective_context,
    proxy_call_foreign_function,
    proxy_done,
    proxy_define_metric,
    proxy_get_metric,
    proxy_record_metric,
    proxy_increment_metric,
);

pub const COUNT: usize = NAMES.len();

static CALLS: [AtomicU64; COUNT] = [const { AtomicU64::new(0) }; COUNT];
/// Times the host called the module's `proxy_on_memory_allocate`.
static MODULE_ALLOCATES: AtomicU64 = AtomicU64::new(0);

/// Host-call counts at one moment (or over an interval, after `since`).
#[derive(Clone, Copy)]
pub struct Calls {
    pub by_fn: [u64; COUNT],
    pub memory_allocate: u64,
}

impl Calls {
    pub const ZERO: Calls = Calls {
        by_fn: [0; COUNT],
        memory_allocate: 0,
    };

    pub fn now() -> Calls {
        let mut by_fn = [0; COUNT];
        for (n, c) in by_fn.iter_mut().zip(CALLS.iter()) {
            *n = c.load(Relaxed);
        }
        Calls {
            by_fn,
            memory_allocate: MODULE_ALLOCATES.load(Relaxed),
        }
    }

    pub fn since(&self, earlier: &Calls) -> Calls {
        let mut by_fn = [0; COUNT];
        for ((d, a), b) in by_fn.iter_mut().zip(self.by_fn).zip(earlier.by_fn) {
            *d = a - b;
        }
        Calls {
            by_fn,
            memory_allocate: self.memory_allocate - earlier.memory_allocate,
        }
    }

    pub fn add(&mut self, other: &Calls) {
        for (a, b) in self.by_fn.iter_mut().zip(other.by_fn) {
            *a += b;
        }
        self.memory_allocate += other.memory_allocate;
    }

    pub fn total(&self) -> u64 {
        self.by_fn.iter().sum()
    }
}

/// Counts one call of `f` and marks the rest of the mock as host code.
#[inline(always)]
fn enter(f: Fn) -> InHost {
    if let Some(c) = CALLS.get(f as usize) {
        // Single-threaded: a plain load and store, no locked instruction.
        c.store(c.load(Relaxed) + 1, Relaxed);
    }
    InHost::enter()
}

/// What the mock host knows; a thread-local like a Wasm VM's host context.
#[derive(Default)]
pub struct HostState {
    pub plugin_config: Vec<u8>,
    pub print_logs: bool,
    pub logs: Vec<(u32, String)>,
    pub tick_period_ms: u32,
    shared: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    next_cas: u32,
    next_token: u32,
    /// Callouts made and not answered yet: (token, cluster, :path).
    pub pending: Vec<(u32, String, String)>,
    /// The callout answer being delivered: (:status, body).
    answer: Option<(String, Vec<u8>)>,
    /// Answer to give a `/localnodes` callout (the body).
    pub localnodes_body: Vec<u8>,
    pub metrics: Vec<(String, u32, u64)>,
    pub local_responses: u64,
    /// Every distinct `set_envoy_filter_state` argument seen, in first-seen
    /// order, with how many requests carried it.
    pub routes_seen: Vec<(Vec<u8>, u64)>,
    last_route: Option<usize>,
    /// Consecutive routes that did not follow the round-robin cycle.
    pub out_of_turn: u64,
    pub other_foreign_calls: u64,
    /// Every request's `:authority` (`None`: the request has none).
    pub authority: Option<String>,
}

thread_local! {
    pub static HOST: RefCell<HostState> = RefCell::new(HostState {
        next_cas: 1,
        next_token: 1,
        ..HostState::default()
    });
}

fn with_host<R>(f: impl FnOnce(&mut HostState) -> R) -> R {
    HOST.with(|h| f(&mut h.borrow_mut()))
}

/// # Safety
/// `ptr` must be valid for `len` bytes (or `len` 0).
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(ptr, len)
    }
}

/// Hands `data` to the module the way Envoy does: a buffer of exactly its
/// size allocated by the module's `proxy_on_memory_allocate`, filled, and
/// returned through the out-pointers. The module owns it from then on.
///
/// # Safety
/// The out-pointers must be valid for writes.
unsafe fn give(guard: &InHost, data: &[u8], out_data: *mut *mut u8, out_size: *mut usize) {
    MODULE_ALLOCATES.store(MODULE_ALLOCATES.load(Relaxed) + 1, Relaxed);
    // Through an opaque pointer, like Envoy calling into the VM: kept a
    // separate call (not inlined here by LTO), so that callgrind can tell
    // the module's allocation from the mock's own work.
    let allocate: unsafe extern "C" fn(usize) -> *mut u8 =
        std::hint::black_box(proxy_on_memory_allocate);
    let buf = guard.module(|| allocate(data.len()));
    if !buf.is_null() {
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
    }
    *out_data = buf;
    *out_size = data.len();
}

/// Reads a proxy-wasm serialized header map (count, sizes, NUL-ended
/// strings) into pairs.
fn deserialize_map(bytes: &[u8]) -> Vec<(String, String)> {
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?) as usize)
    };
    let mut out = Vec::new();
    let Some(n) = word(0) else { return out };
    let mut data = 4 + n * 8;
    for i in 0..n {
        let (Some(k), Some(v)) = (word(4 + i * 8), word(8 + i * 8)) else {
            break;
        };
        let key = bytes.get(data..data + k).unwrap_or_default();
        let value = bytes
            .get(data + k + 1..data + k + 1 + v)
            .unwrap_or_default();
        out.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
        data += k + v + 2;
    }
    out
}

/// Answers every callout made so far, as Envoy would when the upstream
/// replies: `/localnodes` with `localnodes_body`, health probes (`GET /`)
/// with an empty 200. Returns how many were answered.
pub fn deliver_callouts(root_id: u32) -> usize {
    let pending = with_host(|h| std::mem::take(&mut h.pending));
    for (token, _cluster, path) in &pending {
        let body = if path.starts_with("/localnodes") {
            with_host(|h| h.localnodes_body.clone())
        } else {
            Vec::new()
        };
        let size = body.len();
        with_host(|h| h.answer = Some(("200".to_string(), body)));
        // SAFETY: the module's own export, called as Envoy calls it.
        unsafe { proxy_on_http_call_response(root_id, *token, 1, size, 0) };
        with_host(|h| h.answer = None);
    }
    pending.len()
}

// ---------------------------------------------------------------------------
// The host functions. `#[inline(never)]` keeps each one a separate function,
// as a real host call is (LTO could otherwise inline a mock into the filter).

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32 {
    let _g = enter(Fn::proxy_log);
    let message = String::from_utf8_lossy(bytes(message_data, message_size)).into_owned();
    with_host(|h| {
        if h.print_logs {
            println!("  [filter log, level {level}] {message}");
        }
        h.logs.push((level, message));
    });
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_get_log_level(return_level: *mut u32) -> u32 {
    let _g = enter(Fn::proxy_get_log_level);
    *return_level = 2; // Info
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32 {
    let _g = enter(Fn::proxy_get_current_time_nanoseconds);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    *return_time = now;
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_set_tick_period_milliseconds(period: u32) -> u32 {
    let _g = enter(Fn::proxy_set_tick_period_milliseconds);
    with_host(|h| h.tick_period_ms = period);
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_get_buffer_bytes(
    buffer_type: u32,
    start: usize,
    max_size: usize,
    return_buffer_data: *mut *mut u8,
    return_buffer_size: *mut usize,
) -> u32 {
    let g = enter(Fn::proxy_get_buffer_bytes);
    let buffer = with_host(|h| match buffer_type {
        BUFFER_PLUGIN_CONFIGURATION => Some(h.plugin_config.clone()),
        BUFFER_VM_CONFIGURATION => Some(Vec::new()),
        BUFFER_HTTP_CALL_RESPONSE_BODY => h.answer.as_ref().map(|(_, body)| body.clone()),
        _ => None,
    });
    let Some(buffer) = buffer else {
        return NOT_FOUND;
    };
    let start = start.min(buffer.len());
    let end = start.saturating_add(max_size).min(buffer.len());
    give(
        &g,
        buffer.get(start..end).unwrap_or_default(),
        return_buffer_data,
        return_buffer_size,
    );
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_set_buffer_bytes(
    _buffer_type: u32,
    _start: usize,
    _size: usize,
    _buffer_data: *const u8,
    _buffer_size: usize,
) -> u32 {
    let _g = enter(Fn::proxy_set_buffer_bytes);
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_get_header_map_pairs(
    _map_type: u32,
    return_map_data: *mut *mut u8,
    return_map_size: *mut usize,
) -> u32 {
    let _g = enter(Fn::proxy_get_header_map_pairs);
    // An empty map (a null buffer reads as no pairs).
    *return_map_data = std::ptr::null_mut();
    *return_map_size = 0;
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_set_header_map_pairs(
    _map_type: u32,
    _map_data: *const u8,
    _map_size: usize,
) -> u32 {
    let _g = enter(Fn::proxy_set_header_map_pairs);
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_get_header_map_value(
    map_type: u32,
    key_data: *const u8,
    key_size: usize,
    return_value_data: *mut *mut u8,
    return_value_size: *mut usize,
) -> u32 {
    let g = enter(Fn::proxy_get_header_map_value);
    let key = bytes(key_data, key_size);
    let value = with_host(|h| match (map_type, key, &h.answer) {
        (MAP_HTTP_CALL_RESPONSE_HEADERS, b":status", Some((status, _))) => Some(status.clone()),
        (MAP_HTTP_REQUEST_HEADERS, b":authority", _) => h.authority.clone(),
        _ => None,
    });
    match value {
        Some(v) => {
            give(&g, v.as_bytes(), return_value_data, return_value_size);
            OK
        }
        None => NOT_FOUND,
    }
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_remove_header_map_value(
    _map_type: u32,
    _key_data: *const u8,
    _key_size: usize,
) -> u32 {
    let _g = enter(Fn::proxy_remove_header_map_value);
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_replace_header_map_value(
    _map_type: u32,
    _key_data: *const u8,
    _key_size: usize,
    _value_data: *const u8,
    _value_size: usize,
) -> u32 {
    let _g = enter(Fn::proxy_replace_header_map_value);
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_add_header_map_value(
    _map_type: u32,
    _key_data: *const u8,
    _key_size: usize,
    _value_data: *const u8,
    _value_size: usize,
) -> u32 {
    let _g = enter(Fn::proxy_add_header_map_value);
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_get_property(
    path_data: *const u8,
    path_size: usize,
    return_value_data: *mut *mut u8,
    return_value_size: *mut usize,
) -> u32 {
    let g = enter(Fn::proxy_get_property);
    if bytes(path_data, path_size) == b"response\0flags" {
        // Envoy serializes `response.flags` as a little-endian u64; no flag
        // set means the upstream answered.
        give(
            &g,
            &0u64.to_le_bytes(),
            return_value_data,
            return_value_size,
        );
        OK
    } else {
        NOT_FOUND
    }
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_set_property(
    _path_data: *const u8,
    _path_size: usize,
    _value_data: *const u8,
    _value_size: usize,
) -> u32 {
    let _g = enter(Fn::proxy_set_property);
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_get_shared_data(
    key_data: *const u8,
    key_size: usize,
    return_value_data: *mut *mut u8,
    return_value_size: *mut usize,
    return_cas: *mut u32,
) -> u32 {
    let g = enter(Fn::proxy_get_shared_data);
    let key = bytes(key_data, key_size);
    let Some((value, cas)) = with_host(|h| h.shared.get(key).cloned()) else {
        return NOT_FOUND;
    };
    give(&g, &value, return_value_data, return_value_size);
    *return_cas = cas;
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_set_shared_data(
    key_data: *const u8,
    key_size: usize,
    value_data: *const u8,
    value_size: usize,
    cas: u32,
) -> u32 {
    let _g = enter(Fn::proxy_set_shared_data);
    let key = bytes(key_data, key_size);
    let value = bytes(value_data, value_size);
    with_host(|h| {
        // Envoy: a non-zero CAS must match the stored one; 0 writes always.
        if let Some((_, current)) = h.shared.get(key) {
            if cas != 0 && cas != *current {
                return CAS_MISMATCH;
            }
        }
        let new_cas = h.next_cas;
        h.next_cas = h.next_cas.wrapping_add(1).max(1);
        h.shared.insert(key.to_vec(), (value.to_vec(), new_cas));
        OK
    })
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_register_shared_queue(
    _name_data: *const u8,
    _name_size: usize,
    return_id: *mut u32,
) -> u32 {
    let _g = enter(Fn::proxy_register_shared_queue);
    *return_id = 1;
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_resolve_shared_queue(
    _vm_id_data: *const u8,
    _vm_id_size: usize,
    _name_data: *const u8,
    _name_size: usize,
    _return_id: *mut u32,
) -> u32 {
    let _g = enter(Fn::proxy_resolve_shared_queue);
    NOT_FOUND
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_dequeue_shared_queue(
    _queue_id: u32,
    _return_value_data: *mut *mut u8,
    _return_value_size: *mut usize,
) -> u32 {
    let _g = enter(Fn::proxy_dequeue_shared_queue);
    // Envoy's status for an empty queue.
    7
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_enqueue_shared_queue(
    _queue_id: u32,
    _value_data: *const u8,
    _value_size: usize,
) -> u32 {
    let _g = enter(Fn::proxy_enqueue_shared_queue);
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_continue_stream(_stream_type: u32) -> u32 {
    let _g = enter(Fn::proxy_continue_stream);
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_close_stream(_stream_type: u32) -> u32 {
    let _g = enter(Fn::proxy_close_stream);
    OK
}

#[no_mangle]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn proxy_send_local_response(
    _status_code: u32,
    _status_code_details_data: *const u8,
    _status_code_details_size: usize,
    _body_data: *const u8,
    _body_size: usize,
    _headers_data: *const u8,
    _headers_size: usize,
    _grpc_status: i32,
) -> u32 {
    let _g = enter(Fn::proxy_send_local_response);
    with_host(|h| h.local_responses += 1);
    OK
}

#[no_mangle]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn proxy_http_call(
    upstream_data: *const u8,
    upstream_size: usize,
    headers_data: *const u8,
    headers_size: usize,
    _body_data: *const u8,
    _body_size: usize,
    _trailers_data: *const u8,
    _trailers_size: usize,
    _timeout: u32,
    return_token: *mut u32,
) -> u32 {
    let _g = enter(Fn::proxy_http_call);
    let cluster = String::from_utf8_lossy(bytes(upstream_data, upstream_size)).into_owned();
    let headers = deserialize_map(bytes(headers_data, headers_size));
    let Some((_, path)) = headers.into_iter().find(|(k, _)| k == ":path") else {
        return BAD_ARGUMENT;
    };
    let token = with_host(|h| {
        let token = h.next_token;
        h.next_token += 1;
        h.pending.push((token, cluster, path));
        token
    });
    *return_token = token;
    OK
}

#[no_mangle]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn proxy_grpc_call(
    _upstream_data: *const u8,
    _upstream_size: usize,
    _service_name_data: *const u8,
    _service_name_size: usize,
    _method_name_data: *const u8,
    _method_name_size: usize,
    _initial_metadata_data: *const u8,
    _initial_metadata_size: usize,
    _message_data_data: *const u8,
    _message_data_size: usize,
    _timeout: u32,
    _return_callout_id: *mut u32,
) -> u32 {
    let _g = enter(Fn::proxy_grpc_call);
    UNIMPLEMENTED
}

#[no_mangle]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn proxy_grpc_stream(
    _upstream_data: *const u8,
    _upstream_size: usize,
    _service_name_data: *const u8,
    _service_name_size: usize,
    _method_name_data: *const u8,
    _method_name_size: usize,
    _initial_metadata_data: *const u8,
    _initial_metadata_size: usize,
    _return_stream_id: *mut u32,
) -> u32 {
    let _g = enter(Fn::proxy_grpc_stream);
    UNIMPLEMENTED
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_grpc_send(
    _token: u32,
    _message_ptr: *const u8,
    _message_len: usize,
    _end_stream: bool,
) -> u32 {
    let _g = enter(Fn::proxy_grpc_send);
    UNIMPLEMENTED
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_grpc_cancel(_token_id: u32) -> u32 {
    let _g = enter(Fn::proxy_grpc_cancel);
    UNIMPLEMENTED
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_grpc_close(_token_id: u32) -> u32 {
    let _g = enter(Fn::proxy_grpc_close);
    UNIMPLEMENTED
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_get_status(
    return_code: *mut u32,
    return_message_data: *mut *mut u8,
    return_message_size: *mut usize,
) -> u32 {
    let _g = enter(Fn::proxy_get_status);
    *return_code = 0;
    *return_message_data = std::ptr::null_mut();
    *return_message_size = 0;
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_set_effective_context(_context_id: u32) -> u32 {
    let _g = enter(Fn::proxy_set_effective_context);
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_call_foreign_function(
    function_name_data: *const u8,
    function_name_size: usize,
    arguments_data: *const u8,
    arguments_size: usize,
    results_data: *mut *mut u8,
    results_size: *mut usize,
) -> u32 {
    let _g = enter(Fn::proxy_call_foreign_function);
    // `set_envoy_filter_state` returns no result.
    *results_data = std::ptr::null_mut();
    *results_size = 0;
    if bytes(function_name_data, function_name_size) != b"set_envoy_filter_state" {
        with_host(|h| h.other_foreign_calls += 1);
        return NOT_FOUND;
    }
    let args = bytes(arguments_data, arguments_size);
    with_host(|h| {
        // Round robin: the argument should be the one after the previous
        // one in first-seen order. Checked first, so a request costs one
        // comparison here.
        let n = h.routes_seen.len();
        let expected = h
            .last_route
            .map_or(0, |i| if i + 1 >= n { 0 } else { i + 1 });
        let hit = match h.routes_seen.get_mut(expected) {
            Some((seen, count)) if seen.as_slice() == args => {
                *count += 1;
                Some(expected)
            }
            _ => None,
        };
        let index = hit.unwrap_or_else(|| {
            if h.last_route.is_some() {
                h.out_of_turn += 1;
            }
            match h
                .routes_seen
                .iter()
                .position(|(seen, _)| seen.as_slice() == args)
            {
                Some(i) => {
                    if let Some((_, count)) = h.routes_seen.get_mut(i) {
                        *count += 1;
                    }
                    i
                }
                None => {
                    // A node not seen before is a new turn, not a skip.
                    if h.last_route.is_some() {
                        h.out_of_turn -= 1;
                    }
                    h.routes_seen.push((args.to_vec(), 1));
                    h.routes_seen.len() - 1
                }
            }
        });
        h.last_route = Some(index);
    });
    OK
}

/// Forgets the round-robin position (after a phase where the filter did
/// not route every request through this check in order).
pub fn reset_route_check() {
    with_host(|h| h.last_route = None);
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_done() -> u32 {
    let _g = enter(Fn::proxy_done);
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_define_metric(
    metric_type: u32,
    name_data: *const u8,
    name_size: usize,
    return_id: *mut u32,
) -> u32 {
    let _g = enter(Fn::proxy_define_metric);
    let name = String::from_utf8_lossy(bytes(name_data, name_size)).into_owned();
    let id = with_host(|h| {
        if let Some(i) = h.metrics.iter().position(|(n, _, _)| *n == name) {
            return i;
        }
        h.metrics.push((name, metric_type, 0));
        h.metrics.len() - 1
    });
    *return_id = id as u32;
    OK
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32 {
    let _g = enter(Fn::proxy_get_metric);
    match with_host(|h| h.metrics.get(metric_id as usize).map(|m| m.2)) {
        Some(v) => {
            *return_value = v;
            OK
        }
        None => NOT_FOUND,
    }
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_record_metric(metric_id: u32, value: u64) -> u32 {
    let _g = enter(Fn::proxy_record_metric);
    with_host(|h| match h.metrics.get_mut(metric_id as usize) {
        Some(m) => {
            m.2 = value;
            OK
        }
        None => NOT_FOUND,
    })
}

#[no_mangle]
#[inline(never)]
unsafe extern "C" fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32 {
    let _g = enter(Fn::proxy_increment_metric);
    with_host(|h| match h.metrics.get_mut(metric_id as usize) {
        Some(m) => {
            m.2 = m.2.wrapping_add_signed(offset);
            OK
        }
        None => NOT_FOUND,
    })
}
