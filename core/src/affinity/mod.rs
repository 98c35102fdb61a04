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
//! applied by the caller, walking that order.
//!
//! Not yet wired into the filter (see the issue notes): this module is the
//! decision core, tested against the published vectors.

pub mod choose;
pub mod go_rand;
mod go_rand_cooked;
pub mod murmur;
pub mod op;
pub mod tables;

pub use choose::{choose, NodeHealth};
pub use op::{wants_request_body, wants_response_body, Op};
pub use tables::{with_learned, Tables};

use crate::address::NodeAddr;
use crate::json::Json;

/// Largest body the filter reads, for a key or a table description
/// (decompressed, for gzip bodies). DynamoDB caps a request at 16 MB; a
/// larger one routes normally and the node refuses it.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

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

/// The hash input of a partition-key AttributeValue: exactly one member,
/// `S`, `N` (the number's text as sent) or `B` (base64 on the wire, hashed
/// decoded), after a one-byte type prefix. Anything else has no affinity.
pub fn key_bytes(value: &Json) -> Option<Vec<u8>> {
    let Json::Object(members) = value else {
        return None;
    };
    let [(kind, Json::String(text))] = members.as_slice() else {
        return None;
    };
    let (prefix, payload) = match kind.as_str() {
        "S" => (1u8, text.as_bytes().to_vec()),
        "N" => (2u8, text.as_bytes().to_vec()),
        "B" => (3u8, base64_decode(text)?),
        _ => return None,
    };
    let mut out = Vec::with_capacity(payload.len() + 1);
    out.push(prefix);
    out.extend_from_slice(&payload);
    Some(out)
}

pub fn key_hash(value: &Json) -> Option<i64> {
    key_bytes(value).map(|b| murmur::h1(&b))
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

/// Which writes have affinity (`key_route_affinity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    None,
    /// Writes that read before writing (conditions, returned old values,
    /// update expressions): the ones Alternator runs as LWT under
    /// `only_rmw_uses_lwt`.
    Rmw,
    /// Every PutItem, UpdateItem, DeleteItem and BatchWriteItem (for
    /// `alternator_write_isolation: always`).
    AnyWrite,
}

fn non_empty(body: &Json, key: &str) -> bool {
    match body.get(key) {
        Some(Json::String(s)) => !s.is_empty(),
        Some(Json::Object(m)) => !m.is_empty(),
        _ => false,
    }
}

/// Whether a single-item write qualifies under `mode` (`op` is the part of
/// `X-Amz-Target` after `DynamoDB_20120810.`).
pub fn qualifies(op: &str, body: &Json, mode: Mode) -> bool {
    let single = matches!(op, "PutItem" | "UpdateItem" | "DeleteItem");
    match mode {
        Mode::None => false,
        Mode::AnyWrite => single,
        Mode::Rmw if !single => false,
        Mode::Rmw => {
            let returns = body.get("ReturnValues").and_then(Json::as_str);
            if non_empty(body, "ConditionExpression") || non_empty(body, "Expected") {
                return true;
            }
            if op != "UpdateItem" {
                return returns.is_some_and(|r| r != "NONE");
            }
            if non_empty(body, "UpdateExpression")
                || matches!(returns, Some("ALL_OLD" | "UPDATED_OLD" | "ALL_NEW"))
            {
                return true;
            }
            // Legacy AttributeUpdates: ADD, or DELETE of given values, read first.
            match body.get("AttributeUpdates") {
                Some(Json::Object(updates)) => {
                    updates
                        .iter()
                        .any(|(_, u)| match u.get("Action").and_then(Json::as_str) {
                            Some("ADD") => true,
                            Some("DELETE") => u.get("Value").is_some(),
                            _ => false,
                        })
                }
                _ => false,
            }
        }
    }
}

/// The key hash of a qualifying single-item write, given the table's
/// partition key name; `None` when it does not qualify or the key is absent
/// or unusable (the request is then routed normally).
pub fn single_write_hash(op: &str, body: &Json, mode: Mode, pk_name: &str) -> Option<i64> {
    if !qualifies(op, body, mode) {
        return None;
    }
    let holder = if op == "PutItem" { "Item" } else { "Key" };
    key_hash(body.get(holder)?.get(pk_name)?)
}

/// BatchWriteItem under `AnyWrite`: every Put/Delete whose table's key name
/// is known votes for its key's node; nodes by votes (most first), ties by
/// canonical name, then the rest of the ring. `None` without any vote.
pub fn batch_order<'a>(
    body: &Json,
    ring: &[NodeAddr],
    pk_name: impl Fn(&str) -> Option<&'a str>,
) -> Option<Vec<usize>> {
    let Some(Json::Object(tables)) = body.get("RequestItems") else {
        return None;
    };
    let mut votes = vec![0usize; ring.len()];
    let mut any = false;
    for (table, writes) in tables {
        let (Some(pk), Json::Array(writes)) = (pk_name(table), writes) else {
            continue;
        };
        for w in writes {
            let key = match (w.get("PutRequest"), w.get("DeleteRequest")) {
                (Some(put), None) => put.get("Item"),
                (None, Some(del)) => del.get("Key"),
                _ => None,
            };
            let Some(hash) = key.and_then(|k| k.get(pk)).and_then(key_hash) else {
                continue;
            };
            if let Some(slot) = preferred(ring.len(), hash).and_then(|i| votes.get_mut(i)) {
                *slot += 1;
                any = true;
            }
        }
    }
    if !any {
        return None;
    }
    // The ring is already in canonical order, so index order breaks ties.
    let mut order: Vec<usize> = (0..ring.len()).collect();
    order.sort_by(|&a, &b| {
        let (va, vb) = (
            votes.get(a).copied().unwrap_or(0),
            votes.get(b).copied().unwrap_or(0),
        );
        vb.cmp(&va).then(a.cmp(&b))
    });
    Some(order)
}

#[cfg(test)]
mod vectors;
