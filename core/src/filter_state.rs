//! The bytes handed to Envoy's `set_envoy_filter_state` foreign function.
//!
//! Envoy's ORIGINAL_DST cluster connects to the address stored under
//! [`ORIGINAL_DST_KEY`] in the request's filter state. Setting it through
//! filter state, never through a header, means no client can pick the node.
//! The argument is the protobuf message
//! `SetEnvoyFilterStateArguments { string path = 1; string value = 2; LifeSpan span = 3; }`,
//! encoded here by hand once per node, so the request path only copies bytes.

use crate::model::NodeAddr;

pub const FOREIGN_FUNCTION: &str = "set_envoy_filter_state";
pub const ORIGINAL_DST_KEY: &str = "envoy.network.transport_socket.original_dst_address";
/// Names the upstream certificate must carry (comma-separated); Envoy checks
/// them on top of the cluster's own validation.
pub const UPSTREAM_SAN_KEY: &str = "envoy.network.upstream_subject_alt_names";
/// `LifeSpan.DownstreamRequest`: the choice lives exactly as long as the
/// request, so the next request on a keep-alive connection is picked anew.
const SPAN_DOWNSTREAM_REQUEST: u8 = 1;

/// Encoded `SetEnvoyFilterStateArguments` routing one request to `node`.
pub fn route_to(node: &NodeAddr) -> Vec<u8> {
    encode(ORIGINAL_DST_KEY, &node.authority())
}

/// Encoded `SetEnvoyFilterStateArguments` requiring `node`'s certificate to
/// name its IP: with TLS, a certificate from the right CA but for another
/// node is refused.
pub fn verify_san(node: &NodeAddr) -> Vec<u8> {
    encode(UPSTREAM_SAN_KEY, &node.ip.to_string())
}

fn encode(path: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + value.len() + 8);
    field_bytes(&mut out, 1, path.as_bytes());
    field_bytes(&mut out, 2, value.as_bytes());
    out.push(3 << 3); // field 3, varint
    out.push(SPAN_DOWNSTREAM_REQUEST);
    out
}

fn field_bytes(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push((field << 3) | 2); // length-delimited
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn encodes_path_value_and_span() {
        let node: NodeAddr = "10.0.0.1:8000".parse().unwrap();
        let b = route_to(&node);
        let key = ORIGINAL_DST_KEY.as_bytes();
        assert_eq!(b[0], 0x0a);
        assert_eq!(usize::from(b[1]), key.len());
        assert_eq!(&b[2..2 + key.len()], key);
        let rest = &b[2 + key.len()..];
        assert_eq!(rest, b"\x12\x0d10.0.0.1:8000\x18\x01");
    }

    #[test]
    fn long_values_use_multi_byte_lengths() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        let b = encode("p", &"v".repeat(200));
        assert_eq!(&b[3..6], &[0x12, 0xc8, 0x01]);
    }

    #[test]
    fn san_check_names_the_bare_ip() {
        let v4: NodeAddr = "10.0.0.1:8043".parse().unwrap();
        let b = verify_san(&v4);
        let key = UPSTREAM_SAN_KEY.as_bytes();
        assert_eq!(&b[2..2 + key.len()], key);
        assert_eq!(&b[2 + key.len()..], b"\x12\x0810.0.0.1\x18\x01");
        let v6: NodeAddr = "[fd00::1]:8043".parse().unwrap();
        assert!(verify_san(&v6).ends_with(b"\x12\x07fd00::1\x18\x01"));
    }

    #[test]
    fn ipv6_is_bracketed() {
        let node: NodeAddr = "[fd00::1]:8043".parse().unwrap();
        let b = route_to(&node);
        assert!(b.windows(14).any(|w| w == b"[fd00::1]:8043"));
    }
}
