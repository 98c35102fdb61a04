//! The answers the filter gives itself when it cannot send a request to
//! any node.
//!
//! They are shaped like DynamoDB errors so that SDKs parse them, report a
//! useful message, and apply their retry policy for 5xx answers.

/// An answer the filter gives itself, without any node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    /// Envoy's response code details (`%RESPONSE_CODE_DETAILS%` in access
    /// logs), so that a log line says why the filter answered.
    pub details: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

impl LocalReply {
    /// The reply's headers as proxy-wasm's `proxy_send_local_response`
    /// takes them: the pair count, each name's and value's length, then
    /// each name and value followed by a NUL (lengths as little-endian
    /// u32s).
    pub fn header_map(&self) -> Vec<u8> {
        let headers = [("content-type", self.content_type)];
        let mut out = Vec::with_capacity(64);
        let count = u32::try_from(headers.len()).unwrap_or(0);
        out.extend_from_slice(&count.to_le_bytes());
        for (name, value) in headers {
            for part in [name, value] {
                let len = u32::try_from(part.len()).unwrap_or(0);
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
        for (name, value) in headers {
            for part in [name, value] {
                out.extend_from_slice(part.as_bytes());
                out.push(0);
            }
        }
        out
    }
}

pub const STATUS: u32 = 503;
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// No node may take the request: none is known, or all are Down.
pub const NO_NODE: LocalReply = LocalReply {
    status: STATUS,
    details: "alternator_lb_no_node",
    content_type: CONTENT_TYPE,
    body: br#"{"__type":"com.amazonaws.dynamodb.v20120810#ServiceUnavailableException","message":"alternator-lb: no Alternator node is available; the filter knows none and its seeds did not answer /localnodes"}"#,
};

/// Envoy refused the hand-off of the chosen node.
pub const ROUTING_FAILED: LocalReply = LocalReply {
    status: STATUS,
    details: "alternator_lb_handoff_refused",
    content_type: CONTENT_TYPE,
    body: br#"{"__type":"com.amazonaws.dynamodb.v20120810#ServiceUnavailableException","message":"alternator-lb: Envoy refused the routing decision; see the Envoy log"}"#,
};

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn headers_are_encoded_as_a_proxy_wasm_map() {
        let map = NO_NODE.header_map();
        let mut want = vec![1, 0, 0, 0, 12, 0, 0, 0, 26, 0, 0, 0];
        want.extend_from_slice(b"content-type\0application/x-amz-json-1.0\0");
        assert_eq!(map, want);
    }

    #[test]
    fn bodies_are_dynamodb_errors() {
        for reply in [NO_NODE, ROUTING_FAILED] {
            let v: serde_json::Value = serde_json::from_slice(reply.body).unwrap();
            assert!(v["__type"]
                .as_str()
                .unwrap()
                .ends_with("#ServiceUnavailableException"));
            assert!(v["message"]
                .as_str()
                .unwrap()
                .starts_with("alternator-lb: "));
            assert_eq!(reply.status, 503);
            // Envoy keeps details that are one token of [a-z_].
            assert!(reply.details.starts_with("alternator_lb_"));
            assert!(reply
                .details
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        let v: serde_json::Value = serde_json::from_slice(NO_NODE.body).unwrap();
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("no Alternator node"));
    }
}
