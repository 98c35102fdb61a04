//! Which attribute is each table's partition (HASH) key: the name affinity
//! needs to find a write's key in its body.
//!
//! Two sources, as in the client libraries: the configured
//! `partition_keys` map, which always wins, and what the filter learns from
//! the answers passing through it (`CreateTable` and `DescribeTable` name the
//! key in their `KeySchema`). The libraries learn with a `DescribeTable` of
//! their own; a proxy cannot sign one, but it sees the application's. What a
//! request finds unknown gets normal routing, never a delay.
//!
//! Learned names are shared by every worker through one proxy-wasm shared
//! data entry ([`encode`], [`decode`], [`with_learned`]), so a table learned
//! by one worker has affinity on all of them. Learned names are a cache:
//! a table dropped and created again with another key is relearned from the
//! next answer that describes it; until then its writes go to the node of a
//! value that is not their key, which costs LWT locality, not correctness.

use std::collections::BTreeMap;

use super::body::{object, KeySchemaElement, TableAnswer, TableDescription};
use super::op::Op;

/// At most this many learned tables. Past it, further tables are not
/// learned (their writes route normally unless configured) and those
/// already learned keep their entries: a client creating tables without end
/// cannot grow the shared entry or each worker's memory without bound.
pub const MAX_LEARNED: usize = 1024;

/// Largest CreateTable or DescribeTable answer read (inflated, for a gzip
/// answer): a table's description is a few kilobytes, even with many
/// indexes; a larger answer teaches nothing.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Longest table name learned (DynamoDB's limit; Alternator's is lower).
pub const MAX_TABLE_BYTES: usize = 255;

/// Longest key attribute name learned: DynamoDB allows 255 characters,
/// which UTF-8 may spell in up to four bytes each.
pub const MAX_ATTRIBUTE_BYTES: usize = 1024;

/// The entry's format version: its first line is
/// `alternator-lb/tables/<FORMAT>`, and its shared-data key carries it too
/// ([`crate::learned::key_for`]), so that modules writing different formats
/// in one Envoy (an upgrade in place) keep separate entries. A change to the
/// encoding changes this one line.
pub const FORMAT: &str = "1";

/// The entry's first line is this prefix, [`FORMAT`] and a newline; any other
/// first line reads as nothing learned.
const MAGIC_PREFIX: &[u8] = b"alternator-lb/tables/";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    configured: BTreeMap<String, String>,
    learned: BTreeMap<String, String>,
}

impl Tables {
    /// The configured `partition_keys` (table, attribute). Entries with an
    /// empty table or attribute are ignored (the libraries ignore incomplete
    /// entries); of duplicates the first counts.
    pub fn new(configured: &[(String, String)]) -> Tables {
        let mut map = BTreeMap::new();
        for (table, attr) in configured {
            if !table.is_empty() && !attr.is_empty() && !map.contains_key(table) {
                map.insert(table.clone(), attr.clone());
            }
        }
        Tables {
            configured: map,
            learned: BTreeMap::new(),
        }
    }

    /// The table's partition key attribute: configured, else learned.
    pub fn pk_name(&self, table: &str) -> Option<&str> {
        self.configured
            .get(table)
            .or_else(|| self.learned.get(table))
            .map(String::as_str)
    }

    /// Replaces what this worker has learned with the shared entry's
    /// contents (read on a timer; `None` when the entry does not exist).
    pub fn set_learned(&mut self, encoded: Option<&[u8]>) {
        self.learned = encoded.map(decode).unwrap_or_default();
    }

    /// Records a learned key (from [`learn`]). True when it is news that
    /// the shared entry should get ([`with_learned`]): not when configuration
    /// already names the table's key, when it was already known, or when
    /// [`MAX_LEARNED`] tables are known and this is another.
    pub fn remember(&mut self, table: &str, attr: &str) -> bool {
        if self.configured.contains_key(table) || !learnable(table, attr) {
            return false;
        }
        insert(&mut self.learned, table, attr)
    }

    /// How many tables were learned (for metrics and logs).
    pub fn learned_len(&self) -> usize {
        self.learned.len()
    }
}

fn learnable(table: &str, attr: &str) -> bool {
    (1..=MAX_TABLE_BYTES).contains(&table.len()) && (1..=MAX_ATTRIBUTE_BYTES).contains(&attr.len())
}

/// Inserts or updates within the bound; true when the map changed.
fn insert(map: &mut BTreeMap<String, String>, table: &str, attr: &str) -> bool {
    let full = map.len() >= MAX_LEARNED;
    match map.get_mut(table) {
        Some(known) if known == attr => false,
        Some(known) => {
            attr.clone_into(known);
            true
        }
        None if full => false,
        None => {
            map.insert(table.to_owned(), attr.to_owned());
            true
        }
    }
}

/// The (table, partition key attribute) an answer describes: a 200 answer
/// to CreateTable (`TableDescription`) or DescribeTable (`Table`), whose
/// `KeySchema` has an element with `KeyType` `HASH`. `None` for anything
/// else, including answers that are not JSON (a compressed answer must be
/// inflated first) and names longer than the learned limits.
pub fn learn(op: Op, status: u16, body: &[u8]) -> Option<(String, String)> {
    if !matches!(op, Op::CreateTable | Op::DescribeTable)
        || status != 200
        || body.len() > MAX_ANSWER_BYTES
    {
        return None;
    }
    let answer: TableAnswer = object(std::str::from_utf8(body).ok()?)?;
    let holder = if op == Op::CreateTable {
        answer.created
    } else {
        answer.described
    };
    let description: TableDescription = object(holder?.get())?;
    let table = description.table.get()?;
    let attr = description
        .key_schema
        .get()?
        .into_iter()
        .filter_map(|e| object::<KeySchemaElement>(e.get()))
        .find(|e| e.kind.as_ref().map(|k| k.as_str()) == Some("HASH"))?
        .name
        .get()?;
    learnable(table.as_str(), attr.as_str()).then(|| (table.0.into_owned(), attr.0.into_owned()))
}

/// The shared entry's bytes for these learned keys: the magic line, then
/// per table `<length>:<table><length>:<attribute>` and a newline, lengths
/// in decimal bytes, so names may hold any character (tabs, newlines,
/// colons, any UTF-8) without escaping. Tables in byte order, so the same
/// map always encodes to the same bytes.
pub fn encode(learned: &BTreeMap<String, String>) -> Vec<u8> {
    let size: usize = learned.iter().map(|(t, a)| t.len() + a.len() + 10).sum();
    let mut out = Vec::with_capacity(MAGIC_PREFIX.len() + FORMAT.len() + 1 + size);
    out.extend_from_slice(MAGIC_PREFIX);
    out.extend_from_slice(FORMAT.as_bytes());
    out.push(b'\n');
    for (table, attr) in learned {
        for name in [table, attr] {
            out.extend_from_slice(name.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(name.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// The learned keys in a shared entry. All or nothing: bytes that are not
/// exactly what [`encode`] writes (another version's format, truncation, a
/// name over the limits, more than [`MAX_LEARNED`] tables) read as nothing
/// learned, which only means normal routing until the tables are learned
/// again. Never panics.
pub fn decode(bytes: &[u8]) -> BTreeMap<String, String> {
    decode_all(bytes).unwrap_or_default()
}

fn decode_all(bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    let mut rest = bytes
        .strip_prefix(MAGIC_PREFIX)?
        .strip_prefix(FORMAT.as_bytes())?
        .strip_prefix(b"\n")?;
    let mut map = BTreeMap::new();
    while !rest.is_empty() {
        let (table, after) = name(rest, MAX_TABLE_BYTES)?;
        let (attr, after) = name(after, MAX_ATTRIBUTE_BYTES)?;
        rest = after.strip_prefix(b"\n")?;
        if map.len() >= MAX_LEARNED && !map.contains_key(table) {
            return None;
        }
        map.insert(table.to_owned(), attr.to_owned());
    }
    Some(map)
}

/// One `<length>:<bytes>` field: a non-empty UTF-8 name of at most `max`
/// bytes, and what follows it.
fn name(bytes: &[u8], max: usize) -> Option<(&str, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 4 {
        return None;
    }
    let (len, rest) = bytes.split_at_checked(digits)?;
    let len: usize = std::str::from_utf8(len).ok()?.parse().ok()?;
    if len == 0 || len > max {
        return None;
    }
    let rest = rest.strip_prefix(b":")?;
    let (text, rest) = rest.split_at_checked(len)?;
    Some((std::str::from_utf8(text).ok()?, rest))
}

/// The shared entry after a worker learned `table`'s key: what `encoded`
/// holds (`None`: no entry yet; unreadable: treated as empty) with the
/// table's attribute added or replaced. When the table is already there
/// with that attribute, or the bound is reached, the result equals the
/// input's canonical encoding, so a caller can skip the write when the bytes
/// did not change. Meant for a compare-and-swap loop: read entry and CAS,
/// compute this, write with the CAS, and on a CAS mismatch start again from
/// a fresh read, so that concurrent learners never drop each other's tables.
pub fn with_learned(encoded: Option<&[u8]>, table: &str, attr: &str) -> Vec<u8> {
    let mut map = encoded.map(decode).unwrap_or_default();
    if learnable(table, attr) {
        insert(&mut map, table, attr);
    }
    encode(&map)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(t, a)| (t.to_string(), a.to_string()))
            .collect()
    }

    #[test]
    fn configured_names_win_over_learned_ones() {
        let mut tables = Tables::new(&pairs(&[
            ("orders", "order_id"),
            ("", "x"),
            ("empty", ""),
            ("orders", "second"),
        ]));
        assert_eq!(tables.pk_name("orders"), Some("order_id"));
        assert_eq!(tables.pk_name(""), None);
        assert_eq!(tables.pk_name("empty"), None);
        assert_eq!(tables.pk_name("users"), None);

        assert!(!tables.remember("orders", "other"), "configured wins");
        assert!(tables.remember("users", "user_id"));
        assert!(!tables.remember("users", "user_id"), "not news twice");
        assert!(tables.remember("users", "uid"), "a new key replaces");
        assert!(tables.remember("empty", "k"), "ignored config entry");
        assert_eq!(tables.pk_name("orders"), Some("order_id"));
        assert_eq!(tables.pk_name("users"), Some("uid"));
        assert_eq!(tables.pk_name("empty"), Some("k"));
        assert_eq!(tables.learned_len(), 2);

        let shared = with_learned(None, "orders", "learned");
        tables.set_learned(Some(&shared));
        assert_eq!(tables.pk_name("orders"), Some("order_id"));
        assert_eq!(tables.pk_name("users"), None, "replaced by the entry");
        tables.set_learned(None);
        assert_eq!(tables.learned_len(), 0);
    }

    #[test]
    fn learning_stops_at_the_bound() {
        let mut tables = Tables::new(&[]);
        let mut full = BTreeMap::new();
        for i in 0..MAX_LEARNED {
            assert!(tables.remember(&format!("t{i}"), "pk"));
            full.insert(format!("t{i}"), "pk".to_string());
        }
        let shared = encode(&full);
        assert_eq!(with_learned(Some(&shared), "t1", "pk"), shared);
        assert!(!tables.remember("one_more", "pk"));
        assert_eq!(tables.pk_name("one_more"), None);
        assert!(
            tables.remember("t7", "changed"),
            "known tables still update"
        );
        assert_eq!(with_learned(Some(&shared), "one_more", "pk"), shared);
        assert_eq!(decode(&shared).len(), MAX_LEARNED);
        let updated = with_learned(Some(&shared), "t7", "changed");
        assert_eq!(
            decode(&updated).get("t7").map(String::as_str),
            Some("changed")
        );

        // An entry over the bound is not one this code writes.
        let mut over = shared.clone();
        over.extend_from_slice(b"8:one_more2:pk\n");
        assert!(decode(&over).is_empty());
    }

    #[test]
    fn names_over_the_limits_are_not_learned() {
        let mut tables = Tables::new(&[]);
        let long_table = "t".repeat(MAX_TABLE_BYTES + 1);
        let long_attr = "é".repeat(MAX_ATTRIBUTE_BYTES / 2 + 1);
        assert!(!tables.remember(&long_table, "pk"));
        assert!(!tables.remember("t", &long_attr));
        assert!(!tables.remember("t", ""));
        assert!(tables.remember(
            &"t".repeat(MAX_TABLE_BYTES),
            &"é".repeat(MAX_ATTRIBUTE_BYTES / 2)
        ));
        assert_eq!(
            with_learned(None, &long_table, "pk"),
            encode(&BTreeMap::new())
        );
    }

    #[test]
    fn answers_name_the_hash_key() {
        let create = br#"{"TableDescription":{"TableName":"orders","KeySchema":[
            {"AttributeName":"sk","KeyType":"RANGE"},{"AttributeName":"order_id","KeyType":"HASH"}],
            "AttributeDefinitions":[],"TableStatus":"ACTIVE"}}"#;
        let describe = br#"{"Table":{"KeySchema":[{"KeyType":"HASH","AttributeName":"id\tx\u00e9"}],"TableName":"a.b-c_d"}}"#;
        let want = |t: &str, a: &str| Some((t.to_string(), a.to_string()));
        assert_eq!(
            learn(Op::CreateTable, 200, create),
            want("orders", "order_id")
        );
        assert_eq!(
            learn(Op::DescribeTable, 200, describe),
            want("a.b-c_d", "id\txé")
        );
        // The wrong operation's holder, another status, another operation.
        assert_eq!(learn(Op::DescribeTable, 200, create), None);
        assert_eq!(learn(Op::CreateTable, 200, describe), None);
        assert_eq!(learn(Op::CreateTable, 400, create), None);
        assert_eq!(learn(Op::PutItem, 200, create), None);
        for bad in [
            &br#"{"Table":{"TableName":"t","KeySchema":[{"AttributeName":"a","KeyType":"RANGE"}]}}"#[..],
            br#"{"Table":{"TableName":"t","KeySchema":{"AttributeName":"a","KeyType":"HASH"}}}"#,
            br#"{"Table":{"TableName":"t","KeySchema":[{"KeyType":"HASH"}]}}"#,
            br#"{"Table":{"TableName":"t","KeySchema":[{"AttributeName":7,"KeyType":"HASH"}]}}"#,
            br#"{"Table":{"TableName":"t","KeySchema":[{"AttributeName":"","KeyType":"HASH"}]}}"#,
            br#"{"Table":{"KeySchema":[{"AttributeName":"a","KeyType":"HASH"}]}}"#,
            br#"{"Table":{"TableName":"","KeySchema":[{"AttributeName":"a","KeyType":"HASH"}]}}"#,
            br#"{"Table":[]}"#,
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException"}"#,
            b"\x1f\x8b\x08\x00",
            b"",
            br#"{"Table":{"TableName":"t","KeySchema":[{"AttributeName":"a","KeyType":"HASH"}]}"#,
        ] {
            assert_eq!(learn(Op::DescribeTable, 200, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn entries_round_trip_whatever_the_names_hold() {
        let names = [
            ("plain", "pk"),
            ("tab\there", "new\nline"),
            ("quote\"s'", "back\\slash"),
            ("5:colons:", "12:"),
            ("日本語", "ключ"),
            ("\u{0}nul", "\r\n\u{7f}"),
            ("emoji 🦀", "😀"),
        ];
        let mut shared: Option<Vec<u8>> = None;
        for (t, a) in names {
            shared = Some(with_learned(shared.as_deref(), t, a));
        }
        let map = decode(shared.as_deref().unwrap());
        assert_eq!(map.len(), names.len());
        for (t, a) in names {
            assert_eq!(map.get(t).map(String::as_str), Some(a), "{t:?}");
        }
        assert_eq!(encode(&map), shared.clone().unwrap(), "canonical");
        let mut tables = Tables::new(&[]);
        tables.set_learned(shared.as_deref());
        assert_eq!(tables.pk_name("tab\there"), Some("new\nline"));
        // Re-learning a known key changes nothing.
        assert_eq!(
            with_learned(shared.as_deref(), "plain", "pk"),
            shared.clone().unwrap()
        );
    }

    #[test]
    fn unreadable_entries_read_as_nothing_learned() {
        let good = with_learned(None, "t", "pk");
        assert_eq!(good, b"alternator-lb/tables/1\n1:t2:pk\n");
        for bad in [
            &b""[..],
            b"alternator-lb/tables/2\n1:t2:pk\n",
            b"alternator-lb/tables/1\n1:t2:pk",
            b"alternator-lb/tables/1\n1:t2:p",
            b"alternator-lb/tables/1\n1:t2:pk\nx",
            b"alternator-lb/tables/1\n0:2:pk\n",
            b"alternator-lb/tables/1\n1:t0:\n",
            b"alternator-lb/tables/1\n:t2:pk\n",
            b"alternator-lb/tables/1\n99999:t2:pk\n",
            b"alternator-lb/tables/1\n256:t2:pk\n",
            b"alternator-lb/tables/1\n1:\xff2:pk\n",
            b"alternator-lb/tables/1\n18446744073709551617:t2:pk\n",
            b"alternator-lb/tables/1\n-1:t2:pk\n",
            b"alternator-lb/tables/1\n1 t2:pk\n",
        ] {
            assert!(decode(bad).is_empty(), "{bad:?}");
            // A writer starts over from an unreadable entry.
            assert_eq!(with_learned(Some(bad), "t", "pk"), good);
        }
        assert_eq!(decode(b"alternator-lb/tables/1\n").len(), 0);
        // Leading zeros are not what encode writes, but harmless to read.
        assert_eq!(decode(b"alternator-lb/tables/1\n01:t2:pk\n").len(), 1);
    }
}
