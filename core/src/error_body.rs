//! The answer when no Alternator node can take a request.
//!
//! It is shaped like a DynamoDB error so that SDKs parse it, report a useful
//! message, and apply their retry policy for 5xx answers.

pub const STATUS: u32 = 503;
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
pub const NO_NODE: &[u8] = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ServiceUnavailableException","message":"alternator-lb: no Alternator node is available; the filter knows none and its seeds did not answer /localnodes"}"#;

pub const ROUTING_FAILED: &[u8] = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ServiceUnavailableException","message":"alternator-lb: Envoy refused the routing decision; see the Envoy log"}"#;

pub const NO_CONTEXT: &[u8] = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ServiceUnavailableException","message":"alternator-lb: the filter has no state for this request, so it cannot route it; see the Envoy log"}"#;

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn body_is_a_dynamodb_error() {
        let v: serde_json::Value = serde_json::from_slice(NO_NODE).unwrap();
        assert!(v["__type"]
            .as_str()
            .unwrap()
            .ends_with("#ServiceUnavailableException"));
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("no Alternator node"));
        for body in [ROUTING_FAILED, NO_CONTEXT] {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert!(v["__type"]
                .as_str()
                .unwrap()
                .ends_with("#ServiceUnavailableException"));
        }
    }
}
