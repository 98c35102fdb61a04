//! The host side of the proxy-wasm ABI (0.2.1): the host functions the
//! filter calls, each wrapped so that it never panics and allocates only
//! what it returns.
//!
//! Why not the proxy-wasm SDK: its dispatcher, hash maps and the wrappers
//! for every host function (gRPC, queues, trailers, ...) were about a sixth
//! of the `.wasm`, and its wrappers panic on a status they do not expect,
//! which inside Envoy stops the VM. The filter calls a dozen host
//! functions; [`crate::entry`] is the other half (what Envoy calls).

use std::ptr::{null, null_mut};

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

/// A proxy-wasm status other than Ok, as the host returned it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            NOT_FOUND => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            7 => "Empty",
            8 => "CasMismatch",
            10 => "InternalFailure",
            12 => "Unimplemented",
            other => return write!(f, "status {other}"),
        };
        f.write_str(name)
    }
}

fn status(code: u32) -> Result<(), Status> {
    if code == OK {
        Ok(())
    } else {
        Err(Status(code))
    }
}

/// What a request callback tells Envoy: go on, or hold the request (its
/// headers until the body is complete, or the body until the end).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue = 0,
    Pause = 1,
}

/// Log levels, as the ABI numbers them.
#[derive(Clone, Copy)]
pub enum Level {
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// Writes one line to Envoy's log (the `wasm` logger; Envoy's level
/// decides whether it shows).
pub fn write_log(level: Level, message: &str) {
    // SAFETY: pointer and length describe a live string.
    unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// `log!(Level, "format", args...)`: formats only here, off the request path.
macro_rules! log {
    ($level:ident, $($arg:tt)+) => {
        $crate::abi::write_log($crate::abi::Level::$level, &format!($($arg)+))
    };
}
pub(crate) use log;

/// Hands out `size` bytes for the host to fill (`proxy_on_memory_allocate`):
/// `Vec` storage of exactly that capacity, which [`take`] takes back.
pub fn allocate(size: usize) -> *mut u8 {
    let mut v: Vec<u8> = Vec::with_capacity(size);
    let data = v.as_mut_ptr();
    std::mem::forget(v);
    data
}

/// Takes over bytes the host filled through [`allocate`]; empty for none.
fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host allocated `size` bytes at `data` through
    // `allocate`, a `Vec::with_capacity(size)`, and wrote all of them.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// What a host call returned through `data`/`size`, if the call succeeded;
/// empty otherwise. The bytes are taken over (and so freed) either way.
fn taken_if_ok(code: u32, data: *mut u8, size: usize) -> Vec<u8> {
    let bytes = take(data, size);
    if code == OK {
        bytes
    } else {
        Vec::new()
    }
}

/// The host's wall clock, in nanoseconds since the Unix epoch (0 if it
/// cannot tell).
pub fn now_nanos() -> u64 {
    let mut nanos = 0;
    // SAFETY: the out-pointer is a valid local.
    let code = unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
    if code == OK {
        nanos
    } else {
        0
    }
}

pub fn set_tick_period(millis: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_tick_period_milliseconds(millis) })
}

/// Buffers, as the ABI numbers them.
pub const REQUEST_BODY: u32 = 0;
pub const RESPONSE_BODY: u32 = 1;
pub const CALL_RESPONSE_BODY: u32 = 4;
pub const PLUGIN_CONFIGURATION: u32 = 7;

/// Up to `max` bytes of a buffer from its start; empty when there are none
/// or the host refuses.
pub fn buffer(kind: u32, max: usize) -> Vec<u8> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: the out-pointers are valid locals.
    let code = unsafe { proxy_get_buffer_bytes(kind, 0, max, &mut data, &mut size) };
    taken_if_ok(code, data, size)
}

/// Header maps, as the ABI numbers them.
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;
pub const CALL_RESPONSE_HEADERS: u32 = 6;

/// A header's value; empty when absent, or when the host refuses (Envoy
/// refuses header reads outside the headers callbacks).
pub fn header(map: u32, name: &str) -> Vec<u8> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: as above.
    let code =
        unsafe { proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size) };
    taken_if_ok(code, data, size)
}

/// `response.flags`, as a proxy-wasm property path (parts separated by NUL).
const RESPONSE_FLAGS: &[u8] = b"response\0flags";

/// Envoy's response flags of the current request (0 when there are none,
/// or when the host cannot tell).
#[inline]
pub fn response_flags() -> u64 {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: as above.
    let code = unsafe {
        proxy_get_property(
            RESPONSE_FLAGS.as_ptr(),
            RESPONSE_FLAGS.len(),
            &mut data,
            &mut size,
        )
    };
    let mut flags = 0;
    if code == OK && !data.is_null() && size == 8 {
        let mut bytes = [0u8; 8];
        // SAFETY: the host wrote `size` (8) bytes at `data`.
        unsafe { std::ptr::copy_nonoverlapping(data, bytes.as_mut_ptr(), 8) };
        flags = u64::from_le_bytes(bytes);
    }
    drop(take(data, size));
    flags
}

/// Calls the host's foreign function `name` with `args`; its result, if
/// any, is discarded.
#[inline]
pub fn call_foreign(name: &str, args: &[u8]) -> Result<(), Status> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: pointers and lengths describe live slices; out-pointers are
    // valid locals.
    let code = unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            &mut data,
            &mut size,
        )
    };
    drop(take(data, size));
    status(code)
}

/// A header map in the ABI's serialized form: the count, each pair's two
/// lengths, then each name and value NUL-terminated (all numbers u32 LE).
fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = pairs
        .iter()
        .map(|(n, v)| n.len() + v.len() + 10)
        .sum::<usize>()
        + 4;
    let mut out = Vec::with_capacity(size);
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len(pairs.len()));
    for (name, value) in pairs {
        out.extend_from_slice(&len(name.len()));
        out.extend_from_slice(&len(value.len()));
    }
    for (name, value) in pairs {
        for part in [name, value] {
            out.extend_from_slice(part.as_bytes());
            out.push(0);
        }
    }
    out
}

/// Answers the current request locally; Envoy sends it once the callback
/// returns.
pub fn send_response(code: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), Status> {
    let headers = serialize(headers);
    // SAFETY: pointers and lengths describe live slices.
    status(unsafe {
        proxy_send_local_response(
            code,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// A shared-data entry's bytes (`None` when absent) and CAS (`None` when
/// absent).
pub fn shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
    let mut data = null_mut();
    let mut size = 0;
    let mut cas = 0;
    // SAFETY: as above.
    let code =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    let bytes = take(data, size);
    match code {
        OK => Ok((
            (!data.is_null()).then_some(bytes),
            (cas != 0).then_some(cas),
        )),
        NOT_FOUND => Ok((None, None)),
        other => Err(Status(other)),
    }
}

/// Writes a shared-data entry if its CAS is still `cas` (`None`: whatever
/// it is).
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    // SAFETY: as above.
    status(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

/// Starts an HTTP call to `cluster` with no body; its token, which
/// `proxy_on_http_call_response` brings back.
pub fn http_call(cluster: &str, headers: &[(&str, &str)], timeout_ms: u32) -> Result<u32, Status> {
    let headers = serialize(headers);
    let trailers = serialize(&[]);
    let mut token = 0;
    // SAFETY: as above.
    let code = unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            null(),
            0,
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    };
    status(code).map(|()| token)
}

/// Stat kinds, as the ABI numbers them.
pub const COUNTER: u32 = 0;
pub const GAUGE: u32 = 1;

pub fn define_metric(kind: u32, name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: as above.
    let code = unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
    status(code).map(|()| id)
}

pub fn increment_metric(id: u32, delta: i64) {
    // SAFETY: no pointers.
    unsafe { proxy_increment_metric(id, delta) };
}

pub fn record_metric(id: u32, value: u64) {
    // SAFETY: no pointers.
    unsafe { proxy_record_metric(id, value) };
}
