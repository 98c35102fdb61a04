//! The partition key hashes a request body routes by: one for a qualifying
//! single-item write, one per usable target of a BatchWriteItem.
//!
//! The body is read as it streams, by serde_json driven by the seeds and
//! visitors below ([`super::walk`]): only the members a rule needs are
//! deserialized, every other value is skipped (its members and entries
//! counted), and the reading stops as soon as the answer is known (a single
//! write: once its table, its key and, under `Rmw`, a member that makes it
//! qualify have been read; a batch: once `RequestItems` has been read). Of a
//! member named twice the first counts, as in Alternator (rapidjson).
//!
//! Anything the filter cannot use (a write that does not qualify, a table
//! whose key name is unknown, a key of an unsupported type, a body that is
//! not JSON where it was read) gives `Ok(None)` or
//! [`Halt::Unusable`](walk::Halt::Unusable), which means routing the request
//! as if affinity were off: the libraries' rule is that affinity never fails
//! or delays a request. A body whose reading reached a bound first gives
//! [`Halt::Unread`](walk::Halt::Unread): routed the same way, and counted
//! apart.

use super::limits::body_limit;
use super::murmur;
use super::op::{wants_request_body, Op};
use super::qualify::{Qualifies, Sign};
use super::tables::Tables;
use super::walk::{self, skip_members, Body, Cap, Entry, Members, Name, Object, Result};
use super::walk::{Skip, Text, Walk};
use crate::model::config::Mode;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::io::Read;

/// Most BatchWriteItem targets counted: what Alternator accepts by default
/// (`alternator_max_items_in_batch_write`; DynamoDB allows 25). A batch with
/// more usable targets routes normally. Each target costs one seeded
/// generator per scope ring (about 10 µs natively), so the cap is what keeps
/// a crafted batch of many tiny writes from costing milliseconds.
pub const MAX_BATCH_TARGETS: usize = 100;

/// What a write's body routes by: the MurmurHash3 of its partition key
/// value, or of each target's in a batch. Hashes, not the key itself: the
/// value is read, hashed and dropped as the body streams by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyHashes {
    /// The hash of a PutItem, UpdateItem or DeleteItem's partition key.
    Single(i64),
    /// The hashes of a BatchWriteItem's usable targets (at least one), in
    /// the body's order; the node order they give does not depend on it.
    Batch(Vec<i64>),
}

/// The key hashes `body` routes by, for a request of operation `op` under
/// `mode`; `None` to route it normally, including bodies over the limit of
/// their operation ([`super::body_limit`]) and bodies whose reading reached
/// a bound. `body` must already be inflated when the request came with
/// `Content-Encoding: gzip` ([`super::gzip`]).
pub fn key(mode: Mode, op: Op, body: &[u8], tables: &Tables) -> Option<KeyHashes> {
    if body.len() > body_limit(op) {
        return None;
    }
    read_key(mode, op, || body, tables).ok().flatten()
}

/// The key hashes of the body `open` reads, for a request of operation
/// `op` under `mode`. A single-item write whose `Item` (or `Key`) comes
/// before its `TableName` is read twice (the key's name is known only once
/// the table is), so `open` may be called twice, each time from the start.
pub fn read_key<R: Read>(
    mode: Mode,
    op: Op,
    mut open: impl FnMut() -> R,
    tables: &Tables,
) -> Result<Option<KeyHashes>> {
    if !wants_request_body(mode, op) {
        return Ok(None);
    }
    if op == Op::BatchWriteItem {
        let hashes = walk::read(open(), |walk, de| {
            Body(Batch { walk, tables }).deserialize(de)
        })?;
        return Ok(hashes.map(KeyHashes::Batch));
    }
    let rule = Single {
        mode,
        op,
        holder: if op == Op::PutItem { "Item" } else { "Key" },
        tables,
    };
    let found = walk::read(open(), |walk, de| {
        Body(SingleWrite { walk, rule: &rule }).deserialize(de)
    })?;
    let hash = match found {
        None => None,
        Some(Found::Key(hash)) => hash,
        // The key came before the table: read again for it alone.
        Some(Found::KeyEarlier(pk)) => walk::read(open(), |walk, de| {
            Body(KeyMember {
                walk,
                holder: rule.holder,
                pk,
            })
            .deserialize(de)
        })?,
    };
    Ok(hash.map(KeyHashes::Single))
}

/// What the first reading of a single write found, when it qualifies and
/// its table's key is known.
enum Found<'t> {
    /// Its key's hash, when the key is one affinity hashes.
    Key(Option<i64>),
    /// Its `Item`/`Key` came before `TableName`: the name of the key
    /// attribute to look for in it.
    KeyEarlier(&'t str),
}

/// What a single write is, for its rules.
struct Single<'t> {
    mode: Mode,
    op: Op,
    /// `Item` (PutItem) or `Key`: the member that holds the key.
    holder: &'static str,
    tables: &'t Tables,
}

/// A member of a single write's body, by what it is to the rules.
enum Member {
    Table,
    Holder,
    Sign(Sign),
    /// Nothing to a rule, or named before.
    Other,
}

/// A single write's body, read up to the point where it is decided.
struct SingleWrite<'w, 'r, 't> {
    walk: &'w mut Walk<Option<Found<'t>>>,
    rule: &'r Single<'t>,
}

impl<'de, 't> Members<'de> for SingleWrite<'_, '_, 't> {
    type Value = Option<Found<'t>>;

    fn cap(&mut self) -> &mut Cap {
        &mut self.walk.cap
    }

    fn members<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let Single {
            mode,
            op,
            holder,
            tables,
        } = *self.rule;
        let walk = self.walk;
        let mut qualified = mode == Mode::AnyWrite;
        let mut pk: Option<&'t str> = None;
        let (mut table_seen, mut holder_seen, mut key_earlier) = (false, false, false);
        let mut key = None;
        let mut signs_seen = [false; Sign::COUNT];
        loop {
            let sort = |name: Option<&str>| match name {
                Some("TableName") if !table_seen => Member::Table,
                Some(name) if name == holder && !holder_seen => Member::Holder,
                name => match name.and_then(|name| Sign::of(mode, op, name)) {
                    Some(sign) if !qualified => Member::Sign(sign),
                    _ => Member::Other,
                },
            };
            let Some(member) = map.next_key_seed(Name::new(&mut walk.cap, sort))? else {
                break;
            };
            match member {
                Member::Table => {
                    table_seen = true;
                    let read = |name: Option<&str>| name.and_then(|name| tables.pk_name(name));
                    // Not a name, or an unknown table: no key.
                    match map.next_value_seed(Text::new(&mut walk.cap, read))? {
                        Some(name) => pk = Some(name),
                        None => return Err(walk.decide(None)),
                    }
                }
                Member::Holder => {
                    holder_seen = true;
                    let Some(pk) = pk else {
                        map.next_value_seed(Skip(&mut walk.cap))?;
                        key_earlier = true;
                        continue;
                    };
                    // Once qualified, the key is the last thing needed:
                    // the reading stops at it.
                    let at_key: Option<fn(Option<i64>) -> Option<Found<'t>>> =
                        qualified.then_some(|hash| Some(Found::Key(hash)));
                    let attributes = Attributes {
                        walk: &mut *walk,
                        pk,
                        at_key,
                    };
                    match map.next_value_seed(Object(attributes))? {
                        Some(hash) => key = Some(hash),
                        None => return Err(walk.decide(None)),
                    }
                }
                Member::Sign(sign) => {
                    let seen = signs_seen.get_mut(sign as usize);
                    if seen.is_some_and(|seen| std::mem::replace(seen, true)) {
                        map.next_value_seed(Skip(&mut walk.cap))?;
                    } else {
                        qualified = map.next_value_seed(Qualifies::new(&mut walk.cap, op, sign))?;
                    }
                }
                Member::Other => map.next_value_seed(Skip(&mut walk.cap))?,
            }
            if let (true, Some(pk)) = (qualified, pk) {
                if let Some(hash) = key {
                    return Err(walk.decide(Some(Found::Key(Some(hash)))));
                }
                if key_earlier {
                    return Err(walk.decide(Some(Found::KeyEarlier(pk))));
                }
            }
        }
        // Not qualifying, no table, or no key: read to the end (and judged).
        Ok(None)
    }

    fn other(self) -> Self::Value {
        None
    }
}

/// A single write's body read again for its first `holder` member's
/// attribute `pk` (its key came before its table).
struct KeyMember<'w> {
    walk: &'w mut Walk<Option<i64>>,
    holder: &'static str,
    pk: &'w str,
}

impl<'de> Members<'de> for KeyMember<'_> {
    type Value = Option<i64>;

    fn cap(&mut self) -> &mut Cap {
        &mut self.walk.cap
    }

    fn members<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let KeyMember { walk, holder, pk } = self;
        let is_holder = |name: Option<&str>| name == Some(holder);
        while let Some(found) = map.next_key_seed(Name::new(&mut walk.cap, is_holder))? {
            if !found {
                map.next_value_seed(Skip(&mut walk.cap))?;
                continue;
            }
            let attributes = Attributes {
                walk: &mut *walk,
                pk,
                at_key: Some(|hash| hash),
            };
            let hash = map.next_value_seed(Object(attributes))?;
            return Err(walk.decide(hash));
        }
        Ok(None)
    }

    fn other(self) -> Self::Value {
        None
    }
}

/// An item's attributes (`Item`, `Key`), read for attribute `pk`: the hash
/// of the first one so named, when it is a usable key, and `None` for no
/// such attribute, or a value that is not an object. With `at_key`, the
/// reading stops at the key, giving what `at_key` makes of its hash (the
/// caller needs nothing more); without, the rest of the item is skipped so
/// that reading can go on after it.
struct Attributes<'w, 'p, T> {
    walk: &'w mut Walk<T>,
    pk: &'p str,
    at_key: Option<fn(Option<i64>) -> T>,
}

impl<'de, T> Members<'de> for Attributes<'_, '_, T> {
    type Value = Option<i64>;

    fn cap(&mut self) -> &mut Cap {
        &mut self.walk.cap
    }

    fn members<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let Attributes { walk, pk, at_key } = self;
        let is_key = |name: Option<&str>| name == Some(pk);
        while let Some(found) = map.next_key_seed(Name::new(&mut walk.cap, is_key))? {
            if !found {
                map.next_value_seed(Skip(&mut walk.cap))?;
                continue;
            }
            let hash = map.next_value_seed(Object(KeyValue(&mut walk.cap)))?;
            if let Some(at_key) = at_key {
                return Err(walk.decide(at_key(hash)));
            }
            skip_members(&mut walk.cap, map)?;
            return Ok(hash);
        }
        Ok(None)
    }

    fn other(self) -> Self::Value {
        None
    }
}

/// The hash of a partition-key AttributeValue when it is one affinity
/// hashes: an object of exactly one member, `S`, `N` (the number's text as
/// sent) or `B` (base64 on the wire, hashed decoded), whose value is a
/// string, hashed with MurmurHash3 after a one-byte type prefix. The value
/// is read whole in every case.
struct KeyValue<'c>(&'c mut Cap);

impl<'de> Members<'de> for KeyValue<'_> {
    type Value = Option<i64>;

    fn cap(&mut self) -> &mut Cap {
        self.0
    }

    fn members<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let cap = self.0;
        let prefix = |name: Option<&str>| match name {
            Some("S") => 1u8,
            Some("N") => 2,
            Some("B") => 3,
            _ => 0,
        };
        let Some(prefix) = map.next_key_seed(Name::new(cap, prefix))? else {
            return Ok(None);
        };
        let hash = |text: Option<&str>| match (prefix, text) {
            (0, _) | (_, None) => None,
            (3, Some(text)) => super::base64::decode(text).map(|bytes| hash_with(3, &bytes)),
            (_, Some(text)) => Some(hash_with(prefix, text.as_bytes())),
        };
        let hash = map.next_value_seed(Text::new(cap, hash))?;
        if map.next_key_seed(Name::new(cap, |_| ()))?.is_some() {
            // A second member: not a key value.
            map.next_value_seed(Skip(cap))?;
            skip_members(cap, map)?;
            return Ok(None);
        }
        Ok(hash)
    }

    fn other(self) -> Self::Value {
        None
    }
}

fn hash_with(prefix: u8, payload: &[u8]) -> i64 {
    let mut bytes = Vec::with_capacity(payload.len() + 1);
    bytes.push(prefix);
    bytes.extend_from_slice(payload);
    murmur::h1(&bytes)
}

/// The hash of a partition-key AttributeValue given as JSON text (see
/// [`KeyValue`]); `None` for anything else, or for more than one value.
pub fn key_hash(json: &[u8]) -> Option<i64> {
    walk::read(json, |walk, de| {
        Object(KeyValue(&mut walk.cap)).deserialize(de)
    })
    .ok()
    .flatten()
}

/// A BatchWriteItem body: every write of `RequestItems` with exactly one
/// of `PutRequest` (key in `Item`) or `DeleteRequest` (key in `Key`), in a
/// table whose key name is known, with a usable key. Other writes (unknown
/// tables, malformed entries, unusable keys) are skipped and the rest still
/// count; a table's writes are read only when its key name is known. `None`
/// when none is usable or more than [`MAX_BATCH_TARGETS`] are. Members after
/// `RequestItems` are not read.
struct Batch<'w, 't> {
    walk: &'w mut Walk<Option<Vec<i64>>>,
    tables: &'t Tables,
}

impl<'de> Members<'de> for Batch<'_, '_> {
    type Value = Option<Vec<i64>>;

    fn cap(&mut self) -> &mut Cap {
        &mut self.walk.cap
    }

    fn members<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let Batch { walk, tables } = self;
        let is_requests = |name: Option<&str>| name == Some("RequestItems");
        while let Some(found) = map.next_key_seed(Name::new(&mut walk.cap, is_requests))? {
            if !found {
                map.next_value_seed(Skip(&mut walk.cap))?;
                continue;
            }
            let requests = RequestItems {
                walk: &mut *walk,
                tables,
            };
            let hashes = map.next_value_seed(Object(requests))?;
            return Err(walk.decide(hashes.filter(|h| !h.is_empty())));
        }
        Ok(None)
    }

    fn other(self) -> Self::Value {
        None
    }
}

/// `RequestItems`: per table (a name may come twice), its writes' hashes;
/// `None` when it is not an object, or has more than [`MAX_BATCH_TARGETS`].
struct RequestItems<'w, 't> {
    walk: &'w mut Walk<Option<Vec<i64>>>,
    tables: &'t Tables,
}

impl<'de> Members<'de> for RequestItems<'_, '_> {
    type Value = Option<Vec<i64>>;

    fn cap(&mut self) -> &mut Cap {
        &mut self.walk.cap
    }

    fn members<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let RequestItems { walk, tables } = self;
        let mut hashes = Vec::new();
        let pk_name = |name: Option<&str>| name.and_then(|name| tables.pk_name(name));
        while let Some(pk) = map.next_key_seed(Name::new(&mut walk.cap, pk_name))? {
            let Some(pk) = pk else {
                map.next_value_seed(Skip(&mut walk.cap))?;
                continue;
            };
            let writes = Writes {
                walk: &mut *walk,
                pk,
                hashes: &mut hashes,
            };
            map.next_value_seed(writes)?;
        }
        Ok(Some(hashes))
    }

    fn other(self) -> Self::Value {
        None
    }
}

/// A table's array of writes, each one's hash added to `hashes`; any other
/// value is skipped.
struct Writes<'w, 'p> {
    walk: &'w mut Walk<Option<Vec<i64>>>,
    pk: &'p str,
    hashes: &'w mut Vec<i64>,
}

impl<'de> DeserializeSeed<'de> for Writes<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Writes<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of writes")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let Writes { walk, pk, hashes } = self;
        loop {
            let write = Write {
                walk: &mut *walk,
                pk,
            };
            let Some(hash) = seq.next_element_seed(Entry(Object(write)))? else {
                break;
            };
            let Some(hash) = hash else {
                continue;
            };
            if hashes.len() >= MAX_BATCH_TARGETS {
                return Err(walk.decide(None));
            }
            hashes.push(hash);
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<(), A::Error> {
        skip_members(&mut self.walk.cap, map)
    }

    walk::scalars!(|_this| ());
}

/// A member of a write request: absent, present but unusable, or the hash
/// of the key it holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Absent,
    Unusable,
    Hash(i64),
}

/// One BatchWriteItem write: the hash of its key attribute `pk`, when it
/// has exactly one of `PutRequest` and `DeleteRequest`. Read whole.
struct Write<'w, 'p> {
    walk: &'w mut Walk<Option<Vec<i64>>>,
    pk: &'p str,
}

impl<'de> Members<'de> for Write<'_, '_> {
    type Value = Option<i64>;

    fn cap(&mut self) -> &mut Cap {
        &mut self.walk.cap
    }

    fn members<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let Write { walk, pk } = self;
        let (mut put, mut delete) = (Part::Absent, Part::Absent);
        loop {
            let sort = |name: Option<&str>| match name {
                Some("PutRequest") if put == Part::Absent => Some(true),
                Some("DeleteRequest") if delete == Part::Absent => Some(false),
                _ => None,
            };
            let Some(which) = map.next_key_seed(Name::new(&mut walk.cap, sort))? else {
                break;
            };
            let (slot, holder) = match which {
                Some(true) => (&mut put, "Item"),
                Some(false) => (&mut delete, "Key"),
                None => {
                    map.next_value_seed(Skip(&mut walk.cap))?;
                    continue;
                }
            };
            let request = Request {
                walk: &mut *walk,
                holder,
                pk,
            };
            *slot = match map.next_value_seed(Object(request))? {
                Some(hash) => Part::Hash(hash),
                None => Part::Unusable,
            };
        }
        Ok(match (put, delete) {
            (Part::Hash(hash), Part::Absent) | (Part::Absent, Part::Hash(hash)) => Some(hash),
            _ => None,
        })
    }

    fn other(self) -> Self::Value {
        None
    }
}

/// `PutRequest` / `DeleteRequest`: the hash of its `holder`'s attribute
/// `pk`. Read whole.
struct Request<'w, 'p> {
    walk: &'w mut Walk<Option<Vec<i64>>>,
    holder: &'static str,
    pk: &'p str,
}

impl<'de> Members<'de> for Request<'_, '_> {
    type Value = Option<i64>;

    fn cap(&mut self) -> &mut Cap {
        &mut self.walk.cap
    }

    fn members<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let Request { walk, holder, pk } = self;
        let is_holder = |name: Option<&str>| name == Some(holder);
        while let Some(found) = map.next_key_seed(Name::new(&mut walk.cap, is_holder))? {
            if !found {
                map.next_value_seed(Skip(&mut walk.cap))?;
                continue;
            }
            let attributes = Attributes {
                walk: &mut *walk,
                pk,
                at_key: None,
            };
            let hash = map.next_value_seed(Object(attributes))?;
            skip_members(&mut walk.cap, map)?;
            return Ok(hash);
        }
        Ok(None)
    }

    fn other(self) -> Self::Value {
        None
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::affinity::walk::{self, Halt, Limit};
    use crate::affinity::{MAX_BODY_BYTES, MAX_ITEM_BODY_BYTES};
    use std::io;
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

    fn any(op: Op, body: &str) -> Option<KeyHashes> {
        key(Mode::AnyWrite, op, body.as_bytes(), &tables())
    }

    fn rmw(op: Op, body: &str) -> Option<KeyHashes> {
        key(Mode::Rmw, op, body.as_bytes(), &tables())
    }

    #[test]
    fn single_writes_hash_their_partition_key() {
        let put = r#"{"TableName":"t","Item":{"pk":{"S":"hello"},"a":{"N":"1"}}}"#;
        assert_eq!(any(Op::PutItem, put), Some(KeyHashes::Single(HELLO)));
        let update =
            r#"{"TableName":"t","Key":{"pk":{"S":"hello"}},"UpdateExpression":"SET a = :v"}"#;
        assert_eq!(any(Op::UpdateItem, update), Some(KeyHashes::Single(HELLO)));
        assert_eq!(rmw(Op::UpdateItem, update), Some(KeyHashes::Single(HELLO)));
        let delete = r#"{"TableName":"u","Key":{"id":{"N":"42"}}}"#;
        assert_eq!(any(Op::DeleteItem, delete), Some(KeyHashes::Single(N42)));
        assert_eq!(rmw(Op::DeleteItem, delete), None, "not RMW");
        assert_eq!(
            key(Mode::None, Op::PutItem, put.as_bytes(), &tables()),
            None
        );
        // PutItem's key is in Item, the others' in Key.
        assert_eq!(any(Op::PutItem, delete), None);
        assert_eq!(
            any(Op::PutItem, r#"{"TableName":"u","Item":{"id":{"N":"42"}}}"#),
            Some(KeyHashes::Single(N42))
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
            Some(KeyHashes::Single(B010203))
        );
        assert_eq!(any(Op::PutItem, &body("B", "not base64")), None);
        assert_eq!(any(Op::PutItem, &body("B", "AQI")), None, "unpadded");
        assert_eq!(
            any(Op::PutItem, &body("N", "42")),
            Some(KeyHashes::Single(N42))
        );
        // Numbers are not normalised: each spelling is another key.
        let spellings = ["42", "42.0", "4.2e1", "4.2E1", "042", "+42"];
        let mut hashes: Vec<i64> = spellings
            .iter()
            .map(|n| match any(Op::PutItem, &body("N", n)) {
                Some(KeyHashes::Single(h)) => h,
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
        assert_eq!(b, Some(KeyHashes::Single(-3752463870508600385)));
        // JSON escapes are decoded before hashing.
        assert_eq!(
            any(Op::PutItem, &body("S", r"\u0068ello")),
            Some(KeyHashes::Single(HELLO))
        );
    }

    #[test]
    fn composite_keys_hash_only_the_partition_key() {
        let with_sort = r#"{"TableName":"t","Key":{"sk":{"N":"7"},"pk":{"S":"hello"}}}"#;
        let other_sort = r#"{"TableName":"t","Key":{"pk":{"S":"hello"},"sk":{"N":"8"}}}"#;
        assert_eq!(
            any(Op::DeleteItem, with_sort),
            Some(KeyHashes::Single(HELLO))
        );
        assert_eq!(
            any(Op::DeleteItem, other_sort),
            Some(KeyHashes::Single(HELLO))
        );
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
            // Not a JSON object, not JSON, truncated before the key.
            r#"[{"TableName":"t","Item":{"pk":{"S":"a"}}}]"#,
            r#"{"TableName":"t","Item":{"pk":{"S":"a"#,
            r#"{"TableName":"t","Item":{"pk":{"S":"a""#,
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
        // Nesting elsewhere is skipped without being kept, up to the
        // reader's depth limit (DynamoDB itself stops at 32 levels).
        let nested = |depth: usize| {
            format!(
                r#"{{"TableName":"t","Item":{{"x":{{"L":{}{}}},"pk":{{"S":"hello"}}}},"y":{}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth),
                "{\"a\":".repeat(50_000) + "1",
                "}".repeat(50_000)
            )
        };
        let limit = walk::MAX_DEPTH - 3; // the body, Item and x's value
        assert_eq!(
            any(Op::PutItem, &nested(limit)),
            Some(KeyHashes::Single(HELLO))
        );
        let deep = nested(limit + 1);
        assert_eq!(
            read_key(Mode::AnyWrite, Op::PutItem, || deep.as_bytes(), &tables()),
            Err(Halt::Unread(Limit::Depth))
        );
        // Members that are not read may have any shape.
        let odd = r#"{"TableName":"t","Key":[],"Item":{"pk":{"S":"hello"}},"Expected":7,"ReturnValues":{}}"#;
        assert_eq!(any(Op::PutItem, odd), Some(KeyHashes::Single(HELLO)));
        assert_eq!(any(Op::DeleteItem, odd), None, "Key is not an object");
        // Of members named twice the first counts, as in Alternator: an
        // item's attributes, and the body's own members.
        let twice = r#"{"TableName":"t","Item":{"pk":{"S":"hello"},"pk":{"N":"42"}}}"#;
        assert_eq!(any(Op::PutItem, twice), Some(KeyHashes::Single(HELLO)));
        let table_twice = r#"{"TableName":"u","TableName":"t","Item":{"id":{"N":"42"}}}"#;
        assert_eq!(any(Op::PutItem, table_twice), Some(KeyHashes::Single(N42)));
        let item_twice =
            r#"{"TableName":"t","Item":{"pk":{"S":"hello"}},"Item":{"pk":{"N":"42"}}}"#;
        assert_eq!(any(Op::PutItem, item_twice), Some(KeyHashes::Single(HELLO)));
    }

    /// A source that records how far into the body it was read.
    struct Counted<'a> {
        body: &'a [u8],
        at: usize,
        reach: std::rc::Rc<std::cell::Cell<usize>>,
    }

    impl io::Read for Counted<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            // Small pieces, so that the reach is close to what was read.
            let end = (self.at + 4).min(self.body.len());
            let n = end - self.at;
            out[..n].copy_from_slice(&self.body[self.at..end]);
            self.at = end;
            self.reach.set(end);
            Ok(n)
        }
    }

    /// What `body` gives, how many readings it took and how far they got.
    fn read_counted(mode: Mode, op: Op, body: &str) -> (Result<Option<KeyHashes>>, usize, usize) {
        let reach = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut opened = 0;
        let got = read_key(
            mode,
            op,
            || {
                opened += 1;
                Counted {
                    body: body.as_bytes(),
                    at: 0,
                    reach: std::rc::Rc::clone(&reach),
                }
            },
            &tables(),
        );
        (got, opened, reach.get())
    }

    #[test]
    fn reading_stops_once_it_has_what_it_needs() {
        let rest = format!(r#","pad":"{}"}}}}"#, "x".repeat(10_000));
        // Under AnyWrite: the table and the key are all it needs. What
        // follows is not read, nor judged (here it is not even JSON).
        let put = format!(r#"{{"TableName":"t","Item":{{"pk":{{"S":"hello"}}{rest} garbage"#);
        let (got, opened, reach) = read_counted(Mode::AnyWrite, Op::PutItem, &put);
        assert_eq!((got, opened), (Ok(Some(KeyHashes::Single(HELLO))), 1));
        assert!(reach < 60, "read {reach} bytes");
        // Under Rmw, a member that makes it qualify too, wherever it is.
        let update = format!(
            r#"{{"TableName":"t","Key":{{"pk":{{"S":"hello"}}}},"UpdateExpression":"SET a = :v","x":"{}"}}"#,
            "y".repeat(10_000)
        );
        let (got, _, reach) = read_counted(Mode::Rmw, Op::UpdateItem, &update);
        assert_eq!(got, Ok(Some(KeyHashes::Single(HELLO))));
        assert!(reach < 100, "read {reach} bytes");
        let late = format!(
            r#"{{"TableName":"t","Key":{{"pk":{{"S":"hello"}}}},"x":"{}","ConditionExpression":"a"}}"#,
            "y".repeat(10_000)
        );
        let (got, _, reach) = read_counted(Mode::Rmw, Op::DeleteItem, &late);
        assert_eq!(got, Ok(Some(KeyHashes::Single(HELLO))));
        assert!(reach > 10_000, "the condition comes last");
        // A write that does not qualify is read to its end (and judged).
        let (got, _, reach) = read_counted(Mode::Rmw, Op::PutItem, &put);
        assert_eq!(got, Err(Halt::Unusable));
        assert!(reach > 10_000, "read {reach} bytes");
        // An unknown table needs nothing more.
        let unknown = format!(r#"{{"TableName":"zz","Item":{{"pk":{{"S":"hello"}}{rest}"#);
        let (got, _, reach) = read_counted(Mode::AnyWrite, Op::PutItem, &unknown);
        assert_eq!(got, Ok(None));
        assert!(reach < 30, "read {reach} bytes");
        // A batch: once RequestItems is read.
        let batch = format!(
            r#"{{"RequestItems":{{"t":[{{"PutRequest":{{"Item":{{"pk":{{"S":"hello"}}}}}}}}]}}{rest}"#
        );
        let (got, _, reach) = read_counted(Mode::AnyWrite, Op::BatchWriteItem, &batch);
        assert_eq!(got, Ok(Some(KeyHashes::Batch(vec![HELLO]))));
        assert!(reach < 90, "read {reach} bytes");
    }

    #[test]
    fn a_key_before_its_table_is_read_in_a_second_pass() {
        let later = r#"{"Key":{"x":{"S":"a"},"pk":{"S":"hello"}},"TableName":"t","ConditionExpression":"c","more":1}"#;
        let (got, opened, _) = read_counted(Mode::Rmw, Op::UpdateItem, later);
        assert_eq!((got, opened), (Ok(Some(KeyHashes::Single(HELLO))), 2));
        let first = r#"{"TableName":"t","Key":{"pk":{"S":"hello"}},"ConditionExpression":"c"}"#;
        assert_eq!(read_counted(Mode::Rmw, Op::UpdateItem, first).1, 1);
        // Not qualifying, or an unknown table: no second reading.
        for body in [
            r#"{"Key":{"pk":{"S":"hello"}},"TableName":"t"}"#,
            r#"{"Key":{"pk":{"S":"hello"}},"TableName":"zz","ConditionExpression":"c"}"#,
        ] {
            let (got, opened, _) = read_counted(Mode::Rmw, Op::UpdateItem, body);
            assert_eq!((got, opened), (Ok(None), 1), "{body}");
        }
        // The first Key counts in the second reading too.
        let twice = r#"{"Key":{"pk":{"S":"hello"}},"Key":{"pk":{"N":"42"}},"TableName":"t"}"#;
        assert_eq!(any(Op::DeleteItem, twice), Some(KeyHashes::Single(HELLO)));
    }

    #[test]
    fn junk_members_count_against_the_cap() {
        let junk = |n: usize| vec![r#""":0"#; n].join(",");
        let update = |n: usize| {
            format!(
                r#"{{"TableName":"t","Key":{{"pk":{{"S":"a"}}}},"AttributeUpdates":{{{}}}}}"#,
                junk(n)
            )
        };
        let read =
            |body: &str, mode: Mode, op: Op| read_key(mode, op, || body.as_bytes(), &tables());
        // The body's three members, the key's attribute and its S, and the
        // entries: within the cap, read to the end (nothing qualifies); one
        // more, and it is not read.
        let fits = walk::MAX_ENTRIES - 5;
        assert_eq!(read(&update(fits), Mode::Rmw, Op::UpdateItem), Ok(None));
        assert_eq!(
            read(&update(fits + 1), Mode::Rmw, Op::UpdateItem),
            Err(Halt::Unread(Limit::Entries))
        );
        // Junk anywhere the reader looks: the body's members, an item's
        // attributes before its key, a batch's tables and writes.
        let bodies = [
            (
                Op::PutItem,
                format!(r#"{{{},"TableName":"t"}}"#, junk(walk::MAX_ENTRIES)),
            ),
            (
                Op::PutItem,
                format!(
                    r#"{{"TableName":"t","Item":{{{},"pk":{{"S":"a"}}}}}}"#,
                    junk(walk::MAX_ENTRIES)
                ),
            ),
            (
                Op::BatchWriteItem,
                format!(r#"{{"RequestItems":{{{}}}}}"#, junk(walk::MAX_ENTRIES)),
            ),
            (
                Op::BatchWriteItem,
                format!(
                    r#"{{"RequestItems":{{"t":[{}]}}}}"#,
                    vec!["0"; walk::MAX_ENTRIES].join(",")
                ),
            ),
        ];
        for (op, body) in &bodies {
            assert_eq!(
                read(body, Mode::AnyWrite, *op),
                Err(Halt::Unread(Limit::Entries)),
                "{}",
                &body[..60]
            );
        }
        // Junk counts where it is skipped too: the rest of
        // AttributeUpdates once the write qualifies, on the way to its key.
        // The body's three members, the first entry and its Action, the
        // key's attribute and its S, and the junk.
        let qualified = |n: usize| {
            format!(
                r#"{{"TableName":"t","AttributeUpdates":{{"a":{{"Action":"ADD"}},{}}},"Key":{{"pk":{{"S":"hello"}}}}}}"#,
                junk(n)
            )
        };
        let fits = walk::MAX_ENTRIES - 7;
        assert_eq!(
            read(&qualified(fits), Mode::Rmw, Op::UpdateItem),
            Ok(Some(KeyHashes::Single(HELLO)))
        );
        assert_eq!(
            read(&qualified(fits + 1), Mode::Rmw, Op::UpdateItem),
            Err(Halt::Unread(Limit::Entries))
        );
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
        // One item: 1 MiB.
        let at_limit = fill(MAX_ITEM_BODY_BYTES);
        assert_eq!(
            key(Mode::AnyWrite, Op::PutItem, &at_limit, &tables()),
            Some(KeyHashes::Single(HELLO))
        );
        let over = fill(MAX_ITEM_BODY_BYTES + 1);
        assert_eq!(key(Mode::AnyWrite, Op::PutItem, &over, &tables()), None);
        // A batch: 16 MiB.
        let batch = |total: usize| {
            let head =
                r#"{"RequestItems":{"t":[{"PutRequest":{"Item":{"pk":{"S":"hello"}}}}]},"pad":""#;
            let mut body = head.as_bytes().to_vec();
            body.resize(total - 2, b'x');
            body.extend_from_slice(b"\"}");
            body
        };
        let at_limit = batch(MAX_BODY_BYTES);
        assert_eq!(
            key(Mode::AnyWrite, Op::BatchWriteItem, &at_limit, &tables()),
            Some(KeyHashes::Batch(vec![HELLO]))
        );
        let over = batch(MAX_BODY_BYTES + 1);
        assert_eq!(
            key(Mode::AnyWrite, Op::BatchWriteItem, &over, &tables()),
            None
        );
    }

    fn batch(body: &str) -> Option<KeyHashes> {
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
        assert_eq!(
            batch(body),
            Some(KeyHashes::Batch(vec![HELLO, N42, B010203]))
        );
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
        let Some(KeyHashes::Batch(hashes)) = batch(&body(MAX_BATCH_TARGETS)) else {
            panic!("a batch at the limit has affinity");
        };
        assert_eq!(hashes.len(), MAX_BATCH_TARGETS);
        assert_eq!(batch(&body(MAX_BATCH_TARGETS + 1)), None);
    }
}
