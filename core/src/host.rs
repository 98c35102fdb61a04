//! What the filter needs from its host, as two small traits: [`Host`] for a
//! VM (clock, shared data, callouts, metrics, tick) and [`StreamHost`] for
//! one request (its headers and body, Envoy's response flags, the hand-off
//! of the chosen node, a local reply).
//!
//! The orchestration ([`crate::poller`], [`crate::stream`]) is written
//! against these traits, so it runs the same under Envoy (the glue
//! implements them with the proxy-wasm SDK) and in the core's tests (an
//! in-memory host with real compare-and-set, a clock the test moves and
//! scripted callouts). Logging is not part of them: every log line goes
//! through the `log` crate's macros, whose logger the glue sets to Envoy's
//! (at Envoy's level) and the tests to one that captures lines.

use crate::error_body::LocalReply;
use std::fmt;

/// The CAS token that creates a shared-data entry only if it is absent.
/// proxy-wasm has no create-if-absent; but an absent entry accepts any
/// token, while an existing one refuses every token but its own, and Envoy
/// hands tokens out from one process-wide counter, so an existing entry
/// holds this one only once in 2^32 writes. A VM that read "absent" and
/// writes late thus cannot overwrite the record another VM created (and
/// perhaps already leased) meanwhile.
pub const CREATE_ONLY: u32 = u32::MAX;

/// Attempts at a read, update and compare-and-set of a shared-data entry
/// (the discovery record, the learned tables) before the update is left
/// for the caller's next tick: each failure means another VM wrote in
/// between, and a VM spinning on a busy entry would hold up its requests.
pub const CAS_ATTEMPTS: usize = 8;

/// Why the host refused a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostError {
    /// A compare-and-set lost: the entry changed since it was read.
    CasMismatch,
    /// Any other refusal, with the host's status (e.g. `BadArgument`).
    Status(String),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::CasMismatch => f.write_str("CasMismatch"),
            HostError::Status(status) => f.write_str(status),
        }
    }
}

impl std::error::Error for HostError {}

/// A stat's kind, as proxy-wasm defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// A VM's host: every VM of an Envoy process (one per worker thread, one on
/// the main thread) has its own, and they share the clock, the shared data
/// and the stats.
pub trait Host {
    /// A request of this VM, entered from outside its own callbacks.
    type Stream: StreamHost;

    /// Wall-clock nanoseconds: the one clock every VM of the process
    /// shares, which is what the lease in shared data is written in.
    fn now_nanos(&self) -> u64;

    /// How often the VM's tick comes.
    fn set_tick_period_ms(&self, period_ms: u32) -> Result<(), HostError>;

    /// The filter's configuration bytes.
    fn plugin_configuration(&self) -> Option<Vec<u8>>;

    /// A shared-data entry and its CAS token; `Ok(None)` when it does not
    /// exist.
    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError>;

    /// Writes a shared-data entry if its CAS token is still `cas`.
    /// `None` writes unconditionally: proxy-wasm has no create-if-absent, and
    /// an absent entry accepts any token.
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError>;

    /// Sends an HTTP request through Envoy cluster `cluster`; its answer
    /// comes back as a call of `Poller::on_http_call_response` with the
    /// token returned here.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<u32, HostError>;

    /// While an answer is delivered: one of its headers (`:status`).
    fn call_response_header(&self, name: &str) -> Option<Vec<u8>>;

    /// While an answer is delivered: its body, `size` bytes.
    fn call_response_body(&self, size: usize) -> Option<Vec<u8>>;

    /// Makes request `context_id` the one the next calls act on (a request
    /// the VM paused and now sends on from its tick); an error when Envoy no
    /// longer has it.
    fn enter_stream(&self, context_id: u32) -> Result<Self::Stream, HostError>;

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError>;
    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostError>;
    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError>;
}

/// The host of one request, valid during its callbacks.
pub trait StreamHost {
    /// Wall-clock nanoseconds (least-request times each request).
    fn now_nanos(&self) -> u64;
    fn request_header(&self, name: &str) -> Option<Vec<u8>>;
    fn response_header(&self, name: &str) -> Option<Vec<u8>>;
    /// Up to `size` bytes of the request body Envoy has buffered, from
    /// byte `start` (fewer at its end; `None` past it): held bodies are
    /// read a chunk at a time.
    fn request_body(&self, start: usize, size: usize) -> Option<Vec<u8>>;
    fn response_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Envoy's `response.flags` property for this request, as the host
    /// encodes it (a little-endian 64-bit integer).
    fn response_flags(&self) -> Option<Vec<u8>>;
    /// Calls the foreign function `name` with `args` (the chosen node's
    /// pre-encoded filter state).
    fn call_foreign(&self, name: &str, args: &[u8]) -> Result<(), HostError>;
    /// Answers the request locally instead of sending it upstream.
    fn send_local_reply(&self, reply: &LocalReply) -> Result<(), HostError>;
    /// Lets a request paused at its headers go on.
    fn resume_request(&self) -> Result<(), HostError>;
}
