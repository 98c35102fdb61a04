//! The core's host traits implemented with `proxy_wasm::hostcalls`, which
//! return `Result` where the SDK's trait helpers would unwrap. A status
//! becomes a `HostError`; what the value means is the core's business.
//!
//! The SDK still panics on a status outside each host function's own list
//! (docs/hardening-and-limits.md, "Hardening", says which); Envoy 1.40 returns only listed ones
//! for these calls.

use alternator_lb_core::error_body::LocalReply;
use alternator_lb_core::host::{Host, HostError, MetricKind, StreamHost};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};
use std::time::{Duration, UNIX_EPOCH};

fn refused(status: Status) -> HostError {
    match status {
        Status::CasMismatch => HostError::CasMismatch,
        other => HostError::Status(format!("{other:?}")),
    }
}

/// Sets the `log` macros' level to the one Envoy runs its Wasm log at, so
/// that a line Envoy would drop is not even formatted.
pub fn follow_envoy_log_level() {
    if let Ok(level) = hostcalls::get_log_level() {
        // The SDK maps Critical to "off"; keep errors.
        let level = if level == LogLevel::Critical {
            LogLevel::Error
        } else {
            level
        };
        proxy_wasm::set_log_level(level);
    }
}

/// A VM's host: Envoy, through the SDK.
pub struct SdkHost;

impl Host for SdkHost {
    type Stream = SdkStream;

    fn enter_stream(&self, context_id: u32) -> Result<SdkStream, HostError> {
        hostcalls::set_effective_context(context_id)
            .map(|()| SdkStream)
            .map_err(refused)
    }

    fn now_nanos(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    fn set_tick_period_ms(&self, period_ms: u32) -> Result<(), HostError> {
        hostcalls::set_tick_period(Duration::from_millis(period_ms.into())).map_err(refused)
    }

    fn plugin_configuration(&self) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
    }

    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        match hostcalls::get_shared_data(key).map_err(refused)? {
            (value, Some(cas)) => Ok(Some((value.unwrap_or_default(), cas))),
            (_, None) => Ok(None),
        }
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(refused)
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<u32, HostError> {
        let timeout = Duration::from_millis(timeout_ms.into());
        hostcalls::dispatch_http_call(cluster, headers.to_vec(), None, Vec::new(), timeout)
            .map_err(refused)
    }

    fn call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
            .ok()
            .flatten()
    }

    fn call_response_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
            .ok()
            .flatten()
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        hostcalls::define_metric(kind, name).map_err(refused)
    }

    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostError> {
        hostcalls::increment_metric(id, delta).map_err(refused)
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        hostcalls::record_metric(id, value).map_err(refused)
    }
}

/// The host of the request whose callback runs.
pub struct SdkStream;

impl StreamHost for SdkStream {
    #[inline]
    fn now_nanos(&self) -> u64 {
        SdkHost.now_nanos()
    }

    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
    }

    fn request_body(&self, start: usize, size: usize) -> Option<Vec<u8>> {
        // The core asks for at most a chunk past the body's size, far from
        // `start + size` overflowing (Envoy's only BadArgument here, on
        // which the SDK would panic).
        hostcalls::get_buffer(BufferType::HttpRequestBody, start, size)
            .ok()
            .flatten()
    }

    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size)
            .ok()
            .flatten()
    }

    #[inline]
    fn response_flags(&self) -> Option<Vec<u8>> {
        hostcalls::get_property(vec!["response", "flags"])
            .ok()
            .flatten()
    }

    #[inline]
    fn call_foreign(&self, name: &str, args: &[u8]) -> Result<(), HostError> {
        hostcalls::call_foreign_function(name, Some(args))
            .map(drop)
            .map_err(refused)
    }

    fn send_local_reply(&self, reply: &LocalReply) -> Result<(), HostError> {
        local_reply::send(reply)
    }

    fn resume_request(&self) -> Result<(), HostError> {
        hostcalls::resume_http_request().map_err(refused)
    }
}

/// The one host call made without the SDK: its `send_http_response` (0.2.5)
/// passes no response code details, and the details are what tells an
/// access log (`%RESPONSE_CODE_DETAILS%`) why the filter answered a request
/// itself. The same import the SDK declares, called with them.
mod local_reply {
    use alternator_lb_core::error_body::LocalReply;
    use alternator_lb_core::host::HostError;
    use proxy_wasm::types::Status;

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_send_local_response(
            status_code: u32,
            status_code_details_data: *const u8,
            status_code_details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> Status;
    }

    pub fn send(reply: &LocalReply) -> Result<(), HostError> {
        let headers = reply.header_map();
        // SAFETY: every pointer and length describes a live slice for the
        // duration of the call; the host copies what it needs.
        let status = unsafe {
            proxy_send_local_response(
                reply.status,
                reply.details.as_ptr(),
                reply.details.len(),
                reply.body.as_ptr(),
                reply.body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        };
        match status {
            Status::Ok => Ok(()),
            other => Err(HostError::Status(format!("{other:?}"))),
        }
    }
}
