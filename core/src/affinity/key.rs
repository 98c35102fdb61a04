//! The partition key hashes a request body routes by: one for a qualifying
//! single-item write, one per usable target of a BatchWriteItem.
//!
//! Anything the filter cannot use (a write that does not qualify, a table
//! whose key name is unknown, a key of an unsupported type, a body that is
//! not JSON or is too large) gives `None`, which means routing the request
//! as if affinity were off: the libraries' rule is that affinity never fails
//! or delays a request.

use super::body::Member::{Absent, Is};
use super::body::{object, BatchWrite, Members, Obj, SingleWrite, WriteRequest};
use super::{key_hash, qualifies, wants_request_body, Mode, Op, Tables, MAX_BODY_BYTES};
use serde_json::value::RawValue;

/// Most BatchWriteItem targets counted: what Alternator accepts by default
/// (`alternator_max_items_in_batch_write`; DynamoDB allows 25). A batch with
/// more usable targets routes normally. Each target costs one seeded
/// generator per scope ring (about 10 µs natively), so the cap is what keeps
/// a crafted batch of many tiny writes from costing milliseconds.
pub const MAX_BATCH_TARGETS: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// The hash of a PutItem, UpdateItem or DeleteItem's partition key.
    Single(i64),
    /// The hashes of a BatchWriteItem's usable targets (at least one), in
    /// the body's order; the node order they give does not depend on it.
    Batch(Vec<i64>),
}

/// The key hashes `body` routes by, for a request of operation `op` under
/// `mode`; `None` to route it normally. `body` must already be inflated
/// when the request came with `Content-Encoding: gzip` ([`super::gzip`]).
pub fn key(mode: Mode, op: Op, body: &[u8], tables: &Tables) -> Option<Key> {
    if !wants_request_body(mode, op) || body.len() > MAX_BODY_BYTES {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    if op == Op::BatchWriteItem {
        return batch_hashes(text, tables).map(Key::Batch);
    }
    let write: SingleWrite = object(text)?;
    if !qualifies(op, &write, mode) {
        return None;
    }
    let pk = tables.pk_name(write.table.as_ref()?.as_str())?;
    let holder = if op == Op::PutItem {
        write.item
    } else {
        write.key
    };
    let attributes: Members = serde_json::from_str(holder?.get()).ok()?;
    key_hash(attributes.get(pk)?).map(Key::Single)
}

/// Every write of `RequestItems` with exactly one of `PutRequest` (key in
/// `Item`) or `DeleteRequest` (key in `Key`), in a table whose key name is
/// known, with a usable key. Other writes (unknown tables, malformed
/// entries, unusable keys) are skipped and the rest still count; a table's
/// writes are read only when its key name is known. `None` when none is
/// usable or more than [`MAX_BATCH_TARGETS`] are.
fn batch_hashes(text: &str, tables: &Tables) -> Option<Vec<i64>> {
    let batch: BatchWrite = object(text)?;
    let requests = batch.requests.get()?;
    let mut hashes = Vec::new();
    for (table, writes) in &requests.0 {
        let Some(pk) = tables.pk_name(table) else {
            continue;
        };
        let Ok(writes) = serde_json::from_str::<Vec<&RawValue>>(writes.get()) else {
            continue;
        };
        for write in writes {
            let Some(hash) = target_hash(write, pk) else {
                continue;
            };
            if hashes.len() >= MAX_BATCH_TARGETS {
                return None;
            }
            hashes.push(hash);
        }
    }
    (!hashes.is_empty()).then_some(hashes)
}

/// The hash of one BatchWriteItem write's key attribute `pk`.
fn target_hash(write: &RawValue, pk: &str) -> Option<i64> {
    let write: WriteRequest = object(write.get())?;
    let attributes = match (write.put, write.delete) {
        (Is(Obj(put)), Absent) => put.item,
        (Absent, Is(Obj(delete))) => delete.key,
        _ => return None,
    };
    key_hash(attributes.get()?.get(pk)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const HELLO: i64 = 8815023923555918238; // S "hello"
    const N42: i64 = -5061732451827723051; // N "42"
    const B010203: i64 = 5026299041734804437; // B 01 02 03

    fn tables() -> Tables {
        Tables::new(&[
            ("t".to_string(), "pk".to_string()),
            ("u".to_string(), "id".to_string()),
        ])
    }

    fn any(op: Op, body: &str) -> Option<Key> {
        key(Mode::AnyWrite, op, body.as_bytes(), &tables())
    }

    fn rmw(op: Op, body: &str) -> Option<Key> {
        key(Mode::Rmw, op, body.as_bytes(), &tables())
    }

    #[test]
    fn single_writes_hash_their_partition_key() {
        let put = r#"{"TableName":"t","Item":{"pk":{"S":"hello"},"a":{"N":"1"}}}"#;
        assert_eq!(any(Op::PutItem, put), Some(Key::Single(HELLO)));
        let update =
            r#"{"TableName":"t","Key":{"pk":{"S":"hello"}},"UpdateExpression":"SET a = :v"}"#;
        assert_eq!(any(Op::UpdateItem, update), Some(Key::Single(HELLO)));
        assert_eq!(rmw(Op::UpdateItem, update), Some(Key::Single(HELLO)));
        let delete = r#"{"TableName":"u","Key":{"id":{"N":"42"}}}"#;
        assert_eq!(any(Op::DeleteItem, delete), Some(Key::Single(N42)));
        assert_eq!(rmw(Op::DeleteItem, delete), None, "not RMW");
        assert_eq!(
            key(Mode::None, Op::PutItem, put.as_bytes(), &tables()),
            None
        );
        // PutItem's key is in Item, the others' in Key.
        assert_eq!(any(Op::PutItem, delete), None);
        assert_eq!(
            any(Op::PutItem, r#"{"TableName":"u","Item":{"id":{"N":"42"}}}"#),
            Some(Key::Single(N42))
        );
        // Other operations have no key, whatever their body.
        for op in [Op::CreateTable, Op::DescribeTable, Op::Other] {
            assert_eq!(any(op, put), None, "{op:?}");
        }
    }

    #[test]
    fn b_keys_are_hashed_decoded_and_n_keys_as_sent() {
        let body =
            |t: &str, v: &str| format!(r#"{{"TableName":"t","Item":{{"pk":{{"{t}":"{v}"}}}}}}"#);
        assert_eq!(
            any(Op::PutItem, &body("B", "AQID")),
            Some(Key::Single(B010203))
        );
        assert_eq!(any(Op::PutItem, &body("B", "not base64")), None);
        assert_eq!(any(Op::PutItem, &body("B", "AQI")), None, "unpadded");
        assert_eq!(any(Op::PutItem, &body("N", "42")), Some(Key::Single(N42)));
        // Numbers are not normalised: each spelling is another key.
        let spellings = ["42", "42.0", "4.2e1", "4.2E1", "042", "+42"];
        let mut hashes: Vec<i64> = spellings
            .iter()
            .map(|n| match any(Op::PutItem, &body("N", n)) {
                Some(Key::Single(h)) => h,
                other => panic!("{n}: {other:?}"),
            })
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), spellings.len());
        // S, N and B of the same text are three keys.
        let s = any(Op::PutItem, &body("S", "MTIzNDU="));
        let b = any(Op::PutItem, &body("B", "MTIzNDU="));
        assert_ne!(s, b);
        assert_eq!(b, Some(Key::Single(-3752463870508600385)));
        // JSON escapes are decoded before hashing.
        assert_eq!(
            any(Op::PutItem, &body("S", r"\u0068ello")),
            Some(Key::Single(HELLO))
        );
    }

    #[test]
    fn composite_keys_hash_only_the_partition_key() {
        let with_sort = r#"{"TableName":"t","Key":{"sk":{"N":"7"},"pk":{"S":"hello"}}}"#;
        let other_sort = r#"{"TableName":"t","Key":{"pk":{"S":"hello"},"sk":{"N":"8"}}}"#;
        assert_eq!(any(Op::DeleteItem, with_sort), Some(Key::Single(HELLO)));
        assert_eq!(any(Op::DeleteItem, other_sort), Some(Key::Single(HELLO)));
    }

    #[test]
    fn unusable_requests_route_normally() {
        for body in [
            // Unknown or missing table.
            r#"{"TableName":"x","Item":{"pk":{"S":"a"}}}"#,
            r#"{"Item":{"pk":{"S":"a"}}}"#,
            r#"{"TableName":7,"Item":{"pk":{"S":"a"}}}"#,
            // Missing key, or the sort key only.
            r#"{"TableName":"t","Item":{"sk":{"S":"a"}}}"#,
            r#"{"TableName":"t"}"#,
            r#"{"TableName":"t","Item":[]}"#,
            r#"{"TableName":"t","Item":null}"#,
            // Unsupported types and malformed AttributeValues.
            r#"{"TableName":"t","Item":{"pk":{"BOOL":true}}}"#,
            r#"{"TableName":"t","Item":{"pk":{"NULL":true}}}"#,
            r#"{"TableName":"t","Item":{"pk":{"SS":["a"]}}}"#,
            r#"{"TableName":"t","Item":{"pk":{"L":[{"S":"a"}]}}}"#,
            r#"{"TableName":"t","Item":{"pk":{"M":{"S":{"S":"a"}}}}}"#,
            r#"{"TableName":"t","Item":{"pk":{"S":"a","N":"1"}}}"#,
            r#"{"TableName":"t","Item":{"pk":{"S":1}}}"#,
            r#"{"TableName":"t","Item":{"pk":{"N":42}}}"#,
            r#"{"TableName":"t","Item":{"pk":{}}}"#,
            r#"{"TableName":"t","Item":{"pk":"a"}}"#,
            r#"{"TableName":"t","Item":{"pk":{"s":"a"}}}"#,
            // Not a JSON object, not JSON, truncated.
            r#"[{"TableName":"t","Item":{"pk":{"S":"a"}}}]"#,
            r#"{"TableName":"t","Item":{"pk":{"S":"a"}}"#,
            "TableName=t",
            "",
        ] {
            assert_eq!(any(Op::PutItem, body), None, "{body}");
        }
        // Gzip bytes are not JSON: they must be inflated first.
        assert_eq!(
            key(
                Mode::AnyWrite,
                Op::PutItem,
                b"\x1f\x8b\x08\x00\x00",
                &tables()
            ),
            None
        );
    }

    #[test]
    fn only_the_members_read_matter() {
        // Deep nesting elsewhere is skipped without recursing (DynamoDB
        // itself stops at 32 levels).
        let deep = format!(
            r#"{{"TableName":"t","Item":{{"x":{{"L":{}{}}},"pk":{{"S":"hello"}}}},"y":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000),
            "{\"a\":".repeat(50_000) + "1",
            "}".repeat(50_000)
        );
        assert_eq!(any(Op::PutItem, &deep), Some(Key::Single(HELLO)));
        // Members that are not read may have any shape.
        let odd = r#"{"TableName":"t","Key":[],"Item":{"pk":{"S":"hello"}},"Expected":7,"ReturnValues":{}}"#;
        assert_eq!(any(Op::PutItem, odd), Some(Key::Single(HELLO)));
        assert_eq!(any(Op::DeleteItem, odd), None, "Key is not an object");
        // Of an item's attributes named twice, the first counts (as in
        // Alternator); a member of the body named twice is a body serde
        // refuses, which routes normally.
        let twice = r#"{"TableName":"t","Item":{"pk":{"S":"hello"},"pk":{"N":"42"}}}"#;
        assert_eq!(any(Op::PutItem, twice), Some(Key::Single(HELLO)));
        let table_twice = r#"{"TableName":"t","TableName":"u","Item":{"pk":{"S":"a"}}}"#;
        assert_eq!(any(Op::PutItem, table_twice), None);
    }

    #[test]
    fn bodies_over_the_limit_route_normally() {
        let head = r#"{"TableName":"t","Item":{"pk":{"S":"hello"}},"pad":""#;
        let fill = |total: usize| {
            let mut body = head.as_bytes().to_vec();
            body.resize(total - 2, b'x');
            body.extend_from_slice(b"\"}");
            body
        };
        let at_limit = fill(MAX_BODY_BYTES);
        assert_eq!(
            key(Mode::AnyWrite, Op::PutItem, &at_limit, &tables()),
            Some(Key::Single(HELLO))
        );
        let over = fill(MAX_BODY_BYTES + 1);
        assert_eq!(key(Mode::AnyWrite, Op::PutItem, &over, &tables()), None);
    }

    fn batch(body: &str) -> Option<Key> {
        any(Op::BatchWriteItem, body)
    }

    #[test]
    fn batch_writes_collect_their_usable_targets() {
        let body = r#"{"RequestItems":{
            "t":[{"PutRequest":{"Item":{"pk":{"S":"hello"},"x":{"N":"1"}}}},
                 {"DeleteRequest":{"Key":{"pk":{"N":"42"}}}},
                 {"PutRequest":{"Item":{"pk":{"BOOL":true}}}},
                 {"PutRequest":{"Item":{"other":{"S":"a"}}}},
                 {"PutRequest":{"Key":{"pk":{"S":"a"}}}},
                 {"DeleteRequest":{"Item":{"pk":{"S":"a"}}}},
                 {"PutRequest":{"Item":{"pk":{"S":"a"}}},"DeleteRequest":{"Key":{"pk":{"S":"a"}}}},
                 {},
                 "junk"],
            "unknown":[{"PutRequest":{"Item":{"pk":{"S":"a"}}}}],
            "u":[{"DeleteRequest":{"Key":{"id":{"B":"AQID"}}}}],
            "v":{"not":"an array"}}}"#;
        assert_eq!(batch(body), Some(Key::Batch(vec![HELLO, N42, B010203])));
        // Never under RMW, never with affinity off.
        assert_eq!(rmw(Op::BatchWriteItem, body), None);
        assert_eq!(
            key(Mode::None, Op::BatchWriteItem, body.as_bytes(), &tables()),
            None
        );
        // No usable target: normal routing.
        for none in [
            r#"{"RequestItems":{"unknown":[{"PutRequest":{"Item":{"pk":{"S":"a"}}}}]}}"#,
            r#"{"RequestItems":{"t":[{"PutRequest":{"Item":{"pk":{"SS":["a"]}}}}]}}"#,
            r#"{"RequestItems":{"t":[]}}"#,
            r#"{"RequestItems":{}}"#,
            r#"{"RequestItems":[]}"#,
            r#"{"TableName":"t","Item":{"pk":{"S":"hello"}}}"#,
            "not json",
        ] {
            assert_eq!(batch(none), None, "{none}");
        }
    }

    #[test]
    fn batches_past_the_target_limit_route_normally() {
        let body = |n: usize| {
            let writes: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"PutRequest":{{"Item":{{"pk":{{"N":"{i}"}}}}}}}}"#))
                .collect();
            format!(r#"{{"RequestItems":{{"t":[{}]}}}}"#, writes.join(","))
        };
        let Some(Key::Batch(hashes)) = batch(&body(MAX_BATCH_TARGETS)) else {
            panic!("a batch at the limit has affinity");
        };
        assert_eq!(hashes.len(), MAX_BATCH_TARGETS);
        assert_eq!(batch(&body(MAX_BATCH_TARGETS + 1)), None);
    }
}
