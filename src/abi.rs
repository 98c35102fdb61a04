//! The two host calls on the per-request path, made directly on the
//! proxy-wasm ABI.
//!
//! The SDK's wrappers allocate on every call (a `Vec` of path parts, its
//! serialization) and panic on a status they do not expect. These take
//! pre-built byte strings, allocate nothing themselves, and turn any status
//! into an error value.

use std::ptr::null_mut;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
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
}

const STATUS_OK: u32 = 0;

/// `response.flags`, as a proxy-wasm property path (parts separated by NUL).
const RESPONSE_FLAGS: &[u8] = b"response\0flags";

/// Frees a buffer the host filled through `proxy_on_memory_allocate` (the
/// SDK's allocator hands out `Vec` storage of exactly `size` bytes).
fn release(data: *mut u8, size: usize) {
    if !data.is_null() && size > 0 {
        // SAFETY: the host allocated `size` bytes through the SDK's
        // `proxy_on_memory_allocate`, which leaks a `Vec::with_capacity(size)`.
        drop(unsafe { Vec::from_raw_parts(data, size, size) });
    }
}

/// Calls the host's foreign function `name` with `args`; its result, if
/// any, is discarded. `Err` carries the proxy-wasm status.
#[inline]
pub fn call_foreign(name: &str, args: &[u8]) -> Result<(), u32> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: pointers and lengths describe live slices; out-pointers are
    // valid locals.
    let status = unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            &mut data,
            &mut size,
        )
    };
    release(data, size);
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(status)
    }
}

/// Envoy's response flags of the current request (0 when there are none,
/// or when the host cannot tell).
#[inline]
pub fn response_flags() -> u64 {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: as above.
    let status = unsafe {
        proxy_get_property(
            RESPONSE_FLAGS.as_ptr(),
            RESPONSE_FLAGS.len(),
            &mut data,
            &mut size,
        )
    };
    let mut flags = 0;
    if status == STATUS_OK && !data.is_null() && size == 8 {
        let mut bytes = [0u8; 8];
        // SAFETY: the host wrote `size` (8) bytes at `data`.
        unsafe { std::ptr::copy_nonoverlapping(data, bytes.as_mut_ptr(), 8) };
        flags = u64::from_le_bytes(bytes);
    }
    release(data, size);
    flags
}

/// Header maps, as the ABI numbers them.
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;

/// A header's value; empty when absent, or when the host refuses (Envoy
/// refuses header reads outside the headers callbacks, where the SDK's
/// wrapper would panic).
pub fn header(map: u32, name: &str) -> Vec<u8> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: as above.
    let status =
        unsafe { proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size) };
    if status != STATUS_OK || data.is_null() || size == 0 {
        release(data, size);
        return Vec::new();
    }
    // SAFETY: the host allocated `size` bytes at `data` through the SDK's
    // allocator; the Vec takes them over.
    unsafe { Vec::from_raw_parts(data, size, size) }
}
