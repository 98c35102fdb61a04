//! Request and answer bodies come from clients and nodes, so nothing the
//! affinity path reads from them may panic: key() for every operation and
//! mode (on the bytes as given, and inflated when they are gzip), an
//! AttributeValue's hash on the bytes as JSON text, the gzip inflater (flate2; the bytes also as a member's
//! DEFLATE data, with its output limit exact), table descriptions, and the
//! shared entry of learned tables (which any plugin of the proxy can
//! write). Whatever key() returns must order a ring into a permutation,
//! and choose() must pick from it.
#![no_main]

use alternator_lb_core::affinity::{
    self, choose, inflate_gzip, key, order, tables, KeyHashes, Mode, NodeHealth, Op, Tables,
};
use libfuzzer_sys::fuzz_target;

/// Small enough that the fuzzer's bombs stay cheap.
const LIMIT: usize = 1 << 20;

fn check(k: &KeyHashes) {
    for ring_len in [1usize, 2, 3, 7, 16] {
        let o = order(k, ring_len).expect("a key orders every non-empty ring");
        let mut seen = o.clone();
        seen.sort_unstable();
        assert!(
            seen.iter().copied().eq(0..ring_len),
            "not a permutation: {o:?}"
        );
        let health = |i: usize| match i % 3 {
            0 => NodeHealth::Down,
            1 => NodeHealth::Quarantined,
            _ => NodeHealth::Active,
        };
        if let Some(n) = choose(&o, health) {
            assert!(o.contains(&n) && health(n) != NodeHealth::Down);
        }
    }
}

fn keys(body: &[u8], tables: &Tables) {
    for mode in [Mode::None, Mode::Rmw, Mode::AnyWrite] {
        for op in Op::ALL {
            if let Some(k) = key(mode, op, body, tables) {
                assert!(affinity::wants_request_body(mode, op));
                if let KeyHashes::Batch(h) = &k {
                    assert!(!h.is_empty() && h.len() <= affinity::key::MAX_BATCH_TARGETS);
                }
                check(&k);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = Op::from_target(data);
    // The bytes as a partition key's AttributeValue: a hash only for one
    // member S, N or B holding a string (B: valid base64), which serde_json
    // reads as JSON too.
    if affinity::key_hash(data).is_some() {
        let value: serde_json::Value = serde_json::from_slice(data).expect("JSON");
        let object = value.as_object().expect("an object");
        assert_eq!(object.len(), 1);
        assert!(object.values().all(serde_json::Value::is_string));
    }
    let mut tables = Tables::new(&[
        ("t".to_string(), "pk".to_string()),
        ("u".to_string(), "id".to_string()),
    ]);
    for op in [Op::CreateTable, Op::DescribeTable] {
        if let Some((t, a)) = tables::learn(op, 200, data) {
            assert!(!t.is_empty() && !a.is_empty());
            tables.remember(&t, &a);
        }
    }
    keys(data, &tables);
    if let Some(inflated) = inflate_gzip(data, LIMIT) {
        assert!(inflated.len() <= LIMIT);
        keys(&inflated, &tables);
    }
    // The same bytes as the DEFLATE data of a gzip member, so that every
    // input reaches the inflater (the trailer check comes after it).
    let mut member = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    member.extend_from_slice(data);
    if let Some(inflated) = inflate_gzip(&member, LIMIT) {
        // The limit is exact: what inflates at LIMIT inflates at its own
        // size and not one byte less.
        assert!(inflated.len() <= LIMIT);
        assert_eq!(inflate_gzip(&member, inflated.len()).as_ref(), Some(&inflated));
        if let Some(less) = inflated.len().checked_sub(1) {
            assert_eq!(inflate_gzip(&member, less), None);
        }
    }
    // The shared entry: decoding never panics, and what decodes re-encodes
    // to bytes that decode the same.
    let learned = tables::decode(data);
    assert_eq!(tables::decode(&tables::encode(&learned)), learned);
    let updated = tables::with_learned(Some(data), "t2", "k\n\t\"é");
    assert_eq!(
        tables::decode(&updated).get("t2").map(String::as_str),
        (learned.len() < tables::MAX_LEARNED || learned.contains_key("t2")).then_some("k\n\t\"é")
    );
    tables.set_learned(Some(data));
});
