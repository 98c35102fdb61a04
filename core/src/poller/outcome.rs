//! What went wrong with a callout (a `/localnodes` question or a probe), in
//! words an operator can act on: the node could not be reached, it did not
//! answer in time, or it answered something other than 200 (shown with the
//! start of its body).
//!
//! Envoy 1.40 delivers most failures as answers of its own: a connection
//! that fails, or is reset before the node answers, comes back as a 503
//! whose body starts with [`ENVOY_CONNECT_ERROR`], and a callout that
//! reaches its timeout as a 504; a stream reset after that comes with no
//! headers at all. A 504 or a headerless answer is a timeout only when the
//! callout's timeout has actually passed (the node itself, or a proxy in
//! front of it, may answer 504 early).

use crate::model::Quoted;
use std::borrow::Cow;
use std::fmt;

/// How Envoy's router starts the body of the 503 it answers itself when
/// the connection to the node failed or was reset before any answer; the
/// reason follows after [`RESET_REASON`].
pub const ENVOY_CONNECT_ERROR: &str = "upstream connect error or disconnect/reset before headers.";
const RESET_REASON: &str = "reset reason: ";
/// How much of a failed answer's body is read: enough for an error
/// message, never a whole page.
pub const BODY_HEAD_BYTES: usize = 256;
/// How many characters of it a log line shows.
const SHOWN_CHARS: usize = 100;

/// Why a callout gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallFailure {
    /// Nothing came back within the callout's timeout.
    TimedOut { timeout_ms: u64 },
    /// The connection could not be made, or was reset before an answer;
    /// `reason` is Envoy's, when it gave one.
    Connection { reason: Option<String> },
    /// The node answered `status` (not 200); `head` is the start of its
    /// `body_size`-byte body, all of it when `complete`.
    Status {
        status: u32,
        head: String,
        body_size: usize,
        complete: bool,
    },
    /// The `:status` header was not a number.
    BadStatus(String),
}

/// Whether `elapsed_ms` since the call reaches its timeout. A tenth of the
/// timeout is allowed for the two clocks: the VM's (read before the call is
/// made) and the one Envoy's timer runs on.
fn timed_out(elapsed_ms: u64, timeout_ms: u64) -> bool {
    elapsed_ms.saturating_add(timeout_ms / 10) >= timeout_ms
}

impl CallFailure {
    /// A callout delivered without any header.
    pub fn without_answer(elapsed_ms: u64, timeout_ms: u64) -> CallFailure {
        if timed_out(elapsed_ms, timeout_ms) {
            CallFailure::TimedOut { timeout_ms }
        } else {
            CallFailure::Connection { reason: None }
        }
    }

    /// An answer with a status other than 200; `head` is at most the first
    /// [`BODY_HEAD_BYTES`] of its `body_size` bytes.
    pub fn from_status(
        status: u32,
        head: &[u8],
        body_size: usize,
        elapsed_ms: u64,
        timeout_ms: u64,
    ) -> CallFailure {
        if status == 504 && timed_out(elapsed_ms, timeout_ms) {
            return CallFailure::TimedOut { timeout_ms };
        }
        let (text, decoded_all) = text_of(head);
        if status == 503 {
            if let Some(rest) = text.strip_prefix(ENVOY_CONNECT_ERROR) {
                let rest = rest.trim();
                let reason = rest.strip_prefix(RESET_REASON).unwrap_or(rest);
                return CallFailure::Connection {
                    reason: (!reason.is_empty()).then(|| shown(reason).0),
                };
            }
        }
        let (head_text, cut) = shown(&text);
        CallFailure::Status {
            status,
            head: head_text,
            body_size,
            complete: head.len() >= body_size && decoded_all && !cut,
        }
    }
}

/// The body's first bytes as text, and whether all of them made it: bytes
/// that are not UTF-8 become U+FFFD, but a character cut off by the end of
/// what was read is left out.
fn text_of(head: &[u8]) -> (Cow<'_, str>, bool) {
    match std::str::from_utf8(head) {
        Ok(text) => (Cow::Borrowed(text), true),
        Err(e) if e.error_len().is_none() => {
            let valid = head.get(..e.valid_up_to()).unwrap_or_default();
            (String::from_utf8_lossy(valid), false)
        }
        Err(_) => (String::from_utf8_lossy(head), true),
    }
}

/// At most [`SHOWN_CHARS`] of `text`, and whether some were left out.
fn shown(text: &str) -> (String, bool) {
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => (text.get(..cut).unwrap_or_default().to_string(), true),
        None => (text.to_string(), false),
    }
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallFailure::TimedOut { timeout_ms } => write!(
                f,
                "timed out: no answer within discovery_timeout_ms ({timeout_ms} ms)"
            ),
            CallFailure::Connection { reason: None } => {
                f.write_str("connection failed or reset before an answer")
            }
            CallFailure::Connection {
                reason: Some(reason),
            } => write!(
                f,
                "connection failed or reset before an answer (Envoy: {})",
                Quoted(reason)
            ),
            CallFailure::Status {
                status,
                head,
                body_size,
                complete,
            } => {
                if *body_size == 0 {
                    write!(f, "answered HTTP {status} with an empty body")
                } else if *complete {
                    write!(f, "answered HTTP {status}: {}", Quoted(head))
                } else {
                    write!(
                        f,
                        "answered HTTP {status} with a {body_size}-byte body starting {}",
                        Quoted(head)
                    )
                }
            }
            CallFailure::BadStatus(status) => {
                write!(f, "answered with status {}", Quoted(status))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn status(code: u32, body: &[u8], elapsed_ms: u64) -> String {
        let head = body.get(..BODY_HEAD_BYTES).unwrap_or(body);
        CallFailure::from_status(code, head, body.len(), elapsed_ms, 2000).to_string()
    }

    #[test]
    fn no_headers_is_a_timeout_only_once_the_timeout_has_passed() {
        let failure = |elapsed| CallFailure::without_answer(elapsed, 2000).to_string();
        assert_eq!(failure(3), "connection failed or reset before an answer");
        assert_eq!(failure(1500), "connection failed or reset before an answer");
        for elapsed in [1800, 2000, 2001, 60_000] {
            assert_eq!(
                failure(elapsed),
                "timed out: no answer within discovery_timeout_ms (2000 ms)"
            );
        }
    }

    #[test]
    fn envoys_504_at_the_timeout_is_a_timeout_and_a_nodes_early_one_is_not() {
        assert_eq!(
            status(504, b"upstream request timeout", 2002),
            "timed out: no answer within discovery_timeout_ms (2000 ms)"
        );
        assert_eq!(
            status(504, b"upstream request timeout", 40),
            r#"answered HTTP 504: "upstream request timeout""#
        );
    }

    #[test]
    fn envoys_connect_error_is_a_connection_failure_with_its_reason() {
        assert_eq!(
            status(
                503,
                b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused",
                5
            ),
            "connection failed or reset before an answer (Envoy: \"remote connection failure, \
             transport failure reason: delayed connect error: Connection refused\")"
        );
        assert_eq!(
            status(
                503,
                b"upstream connect error or disconnect/reset before headers. reset reason: connection timeout",
                1000
            ),
            r#"connection failed or reset before an answer (Envoy: "connection timeout")"#
        );
        assert_eq!(
            status(503, ENVOY_CONNECT_ERROR.as_bytes(), 5),
            "connection failed or reset before an answer"
        );
        // Any other 503 is the node's own answer.
        assert_eq!(
            status(503, b"no healthy upstream", 5),
            r#"answered HTTP 503: "no healthy upstream""#
        );
        // So is that text under another status.
        assert!(status(502, ENVOY_CONNECT_ERROR.as_bytes(), 5).starts_with("answered HTTP 502: "));
    }

    #[test]
    fn a_status_shows_the_body_quoted_on_one_line() {
        assert_eq!(
            status(500, br#"{"message": "simulated internal error"}"#, 5),
            r#"answered HTTP 500: "{\"message\": \"simulated internal error\"}""#
        );
        assert_eq!(status(404, b"", 5), "answered HTTP 404 with an empty body");
        assert_eq!(
            status(500, b"line 1\r\nline 2\n\"\x01", 5),
            r#"answered HTTP 500: "line 1\r\nline 2\n\"\u0001""#
        );
    }

    #[test]
    fn a_long_body_is_cut_and_its_size_given() {
        let body = "<html>\n".repeat(1000);
        let line = status(503, body.as_bytes(), 5);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with(
                r#"answered HTTP 503 with a 7000-byte body starting "<html>\n<html>\n"#
            ),
            "{line}"
        );
        // 100 characters, quoted and escaped: well under 200 bytes.
        assert!(line.len() < 200, "{} bytes: {line}", line.len());
        assert!(line.ends_with(r#"\n<h""#), "{line}");
        // An Envoy reason is bounded the same way.
        let long = format!("{ENVOY_CONNECT_ERROR} reset reason: {}", "x".repeat(500));
        let line = status(503, long.as_bytes(), 5);
        assert!(line.len() < 200, "{line}");
    }

    #[test]
    fn bodies_that_are_not_utf8_are_shown_safely() {
        assert_eq!(
            status(500, b"bad \xff byte", 5),
            "answered HTTP 500: \"bad \u{fffd} byte\""
        );
        // A character cut by the end of what was read is left out, and the
        // body is said to go on.
        let mut body = "é".repeat(BODY_HEAD_BYTES / 2 - 1).into_bytes();
        body.extend_from_slice("€".as_bytes());
        let head = body.get(..BODY_HEAD_BYTES).unwrap();
        let line = CallFailure::from_status(500, head, body.len(), 5, 2000).to_string();
        assert!(!line.contains('\u{fffd}'), "{line}");
        assert!(
            line.contains(&format!("a {}-byte body starting", body.len())),
            "{line}"
        );
        // Short, but cut within its last character: not complete either.
        let line = CallFailure::from_status(500, "ab€".as_bytes().get(..3).unwrap(), 5, 5, 2000)
            .to_string();
        assert_eq!(
            line,
            r#"answered HTTP 500 with a 5-byte body starting "ab""#
        );
    }

    #[test]
    fn a_status_that_is_not_a_number_is_quoted() {
        assert_eq!(
            CallFailure::BadStatus("2\n00".into()).to_string(),
            r#"answered with status "2\n00""#
        );
    }
}
