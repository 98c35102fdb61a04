//! Key route affinity: the node ScyllaDB's Alternator client libraries send
//! a partition key's writes to, so that conditional writes (LWT) for one key
//! meet at one coordinator whether they come through this proxy or from an
//! application using those libraries.
//!
//! The algorithm follows the libraries' cross-language specification
//! (`feature-specs/key-route-affinity.md` and `query-plan.md` in
//! scylladb/alternator-client-python): hash the type-prefixed key value with
//! MurmurHash3, seed Go's `math/rand` with it, and draw a pick-and-remove
//! order over the canonically sorted list of discovered nodes. Health is
//! applied last, walking that order ([`choose()`]).
//!
//! A request's way through it, one module each:
//!
//! 1. [`op`]: the operation, from `X-Amz-Target`, and whether the request's
//!    (or the answer's) body is needed at all; [`body_limit`]: how large a
//!    body of it is held and read;
//! 2. [`gzip`]: a compressed body inflated a piece at a time (flate2),
//!    within a size and a ratio;
//! 3. [`read_key()`] (with [`qualify`] and [`Tables`], reading the body as it
//!    streams with serde_json, within the bounds of [`walk`]): the key
//!    hash(es) the body routes by;
//! 4. [`order()`]: the order the key gives a ring's nodes;
//! 5. [`choose()`]: the first healthy node of that order.
//!
//! [`tables`] also learns partition key names from table descriptions (the
//! shapes of [`body`]).
//! Everything here is pure; the glue does the buffering and routing.

pub mod body;
pub mod choose;
pub mod go_rand;
mod go_rand_cooked;
pub mod gzip;
pub mod key;
pub mod murmur;
pub mod op;
pub mod order;
pub mod qualify;
pub mod tables;
pub mod walk;

pub use choose::{choose, NodeHealth};
pub use gzip::inflate_gzip;
pub use key::{key, key_hash, read_key, Key};
pub use op::{wants_request_body, wants_response_body, Op};
pub use order::order;
pub use tables::{with_learned, Tables};

pub use crate::model::config::Mode;
use crate::model::NodeAddr;

/// Largest BatchWriteItem body the filter holds and reads (announced, and
/// inflated for gzip bodies): Alternator's request limit. A larger one
/// routes normally and the node refuses it.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Largest PutItem, UpdateItem or DeleteItem body the filter holds and
/// reads (announced, and inflated): one item is at most 400 KB in DynamoDB,
/// so a larger body is not a plausible single-item write; it routes
/// normally, and the node judges it.
pub const MAX_ITEM_BODY_BYTES: usize = 1024 * 1024;

/// How large a body of `op` may be to be held and read for its key.
pub fn body_limit(op: Op) -> usize {
    if op == Op::BatchWriteItem {
        MAX_BODY_BYTES
    } else {
        MAX_ITEM_BODY_BYTES
    }
}

/// `http://IP:PORT` as the libraries spell an endpoint: lowercase, IPv6 in
/// brackets, the scheme's default port left out. The ring is sorted by these
/// strings' bytes (so `10.0.0.10:8000` sorts before `10.0.0.1:8000`).
pub fn canonical(node: &NodeAddr, https: bool) -> String {
    let scheme = if https { "https" } else { "http" };
    let default = if https { 443 } else { 80 };
    let host = match node.ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    if node.port == default {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{}", node.port)
    }
}

/// The discovered nodes in the libraries' canonical order.
pub fn ring(nodes: &[NodeAddr], https: bool) -> Vec<NodeAddr> {
    let mut keyed: Vec<(String, NodeAddr)> =
        nodes.iter().map(|n| (canonical(n, https), *n)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.dedup_by(|a, b| a.0 == b.0);
    keyed.into_iter().map(|(_, n)| n).collect()
}

/// The order in which a key's requests try the ring's nodes (indices into
/// `ring_len` nodes); the first is the key's node. Past the generator's
/// supported draws the rest follow in ring order.
pub fn plan(ring_len: usize, hash: i64) -> Vec<usize> {
    let mut rest: Vec<usize> = (0..ring_len).collect();
    let mut rng = go_rand::GoRand::new(hash);
    let mut out = Vec::with_capacity(ring_len);
    while !rest.is_empty() {
        let Some(i) = rng.intn(rest.len()) else {
            rest.sort_unstable();
            out.extend(rest);
            break;
        };
        out.push(rest.swap_remove(i));
    }
    out
}

/// The key's node alone: the first pick of [`plan`], without building the
/// rest of the order (what BatchWriteItem votes need per item).
pub fn preferred(ring_len: usize, hash: i64) -> Option<usize> {
    go_rand::GoRand::new(hash).intn(ring_len)
}

/// Standard base64 with padding, as the AWS SDKs send binary values.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.chunks_exact(4);
    let last = chunks.len().saturating_sub(1);
    for (i, chunk) in chunks.enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i != last) {
            return None;
        }
        let mut n = 0u32;
        for &c in chunk.iter().take(4 - pad) {
            n = (n << 6) | sextet(c)?;
        }
        n <<= 6 * pad as u32;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(three.get(..3 - pad)?);
    }
    Some(out)
}

#[cfg(test)]
mod vectors;
