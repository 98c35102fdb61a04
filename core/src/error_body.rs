//! The answers the filter gives itself when it cannot send a request to
//! any node.
//!
//! They are shaped like DynamoDB errors so that SDKs parse them, report a
//! useful message, and apply their retry policy for 5xx answers.

/// An answer the filter gives itself, without any node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

pub const STATUS: u32 = 503;
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// No node may take the request: none is known, or all are Down.
pub const NO_NODE: LocalReply = LocalReply {
    status: STATUS,
    content_type: CONTENT_TYPE,
    body: br#"{"__type":"com.amazonaws.dynamodb.v20120810#ServiceUnavailableException","message":"alternator-lb: no Alternator node is available; the filter knows none and its seeds did not answer /localnodes"}"#,
};

/// Envoy refused the hand-off of the chosen node.
pub const ROUTING_FAILED: LocalReply = LocalReply {
    status: STATUS,
    content_type: CONTENT_TYPE,
    body: br#"{"__type":"com.amazonaws.dynamodb.v20120810#ServiceUnavailableException","message":"alternator-lb: Envoy refused the routing decision; see the Envoy log"}"#,
};

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

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
        }
        let v: serde_json::Value = serde_json::from_slice(NO_NODE.body).unwrap();
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("no Alternator node"));
    }
}
