//! The cross-language vectors: published ones (feature-specs/vectors of
//! scylladb/alternator-client-python, and the Go, Java and Rust libraries'
//! tests), and key-to-node vectors computed with an independent reference
//! implementation of that specification (derived: no library publishes
//! key-to-node vectors).

use super::*;
use crate::model::NodeAddr;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn av(kind: &str, value: &str) -> Vec<u8> {
    serde_json::json!({ kind: value }).to_string().into_bytes()
}

/// feature-specs/vectors/affinity-hash.tsv and the type-collision vectors.
#[test]
fn published_key_hashes() {
    let cases: Vec<(&str, String, i64)> = vec![
        ("S", "hello".to_string(), 8815023923555918238i64),
        ("S", "".to_string(), 8849112093580131862i64),
        ("S", "user_123".to_string(), -4025731529809423594i64),
        ("S", "こんにちは".to_string(), -8746014667889746860i64),
        ("N", "42".to_string(), -5061732451827723051i64),
        ("N", "-12345".to_string(), 2496798676881075539i64),
        ("N", "3.14159".to_string(), 2139945193071104172i64),
        ("N", "1.23E10".to_string(), -8571981415737439826i64),
        ("B", "AQID".to_string(), 5026299041734804437i64),
        ("B", "".to_string(), 8244620721157455449i64),
        ("B", "/wCA".to_string(), 14533934253577680i64),
        ("S", "12345".to_string(), -6122888897254035317i64),
        ("N", "12345".to_string(), -3190731486301745196i64),
        ("B", "MTIzNDU=".to_string(), -3752463870508600385i64),
    ];
    for (kind, value, want) in cases {
        assert_eq!(key_hash(&av(kind, &value)), Some(want), "{kind} {value}");
    }
}

/// feature-specs/vectors/query-plan.tsv: whole plans over a canonically
/// sorted ring of 10 nodes, as indices into that ring.
#[test]
fn published_plans() {
    let cases: Vec<(i64, usize, Vec<usize>)> = vec![
        (42i64, 10, vec![5, 8, 4, 1, 6, 0, 9, 2, 7, 3]),
        (123i64, 10, vec![5, 0, 3, 2, 9, 4, 7, 1, 6, 8]),
        (999i64, 10, vec![4, 9, 3, 0, 1, 2, 5, 8, 7, 6]),
        (0i64, 10, vec![4, 0, 1, 9, 5, 7, 3, 2, 8, 6]),
        (-1i64, 10, vec![1, 4, 0, 2, 5, 9, 3, 6, 8, 7]),
        (12345i64, 10, vec![3, 4, 0, 6, 5, 7, 2, 8, 1, 9]),
        (
            9223372036854775807i64,
            10,
            vec![1, 6, 7, 0, 9, 3, 5, 2, 8, 4],
        ),
    ];
    for (seed, n, want) in cases {
        assert_eq!(plan(n, seed), want, "seed {seed}");
    }
}

/// Derived: the published keys over IPv4 rings, including 10.0.0.1 and
/// 10.0.0.10, whose order depends on whether the port is spelled out.
#[test]
fn keys_pick_the_node_the_libraries_pick() {
    let cases: Vec<(&str, String, Vec<&str>, &str)> = vec![
        (
            "S",
            "hello".to_string(),
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
            "10.0.0.1:8000",
        ),
        (
            "S",
            "".to_string(),
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
            "10.0.0.1:8000",
        ),
        (
            "S",
            "user_123".to_string(),
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
            "10.0.0.2:8000",
        ),
        (
            "S",
            "こんにちは".to_string(),
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
            "10.0.0.1:8000",
        ),
        (
            "N",
            "42".to_string(),
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
            "10.0.0.2:8000",
        ),
        (
            "N",
            "-12345".to_string(),
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
            "10.0.0.1:8000",
        ),
        (
            "N",
            "3.14159".to_string(),
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
            "10.0.0.1:8000",
        ),
        (
            "N",
            "1.23E10".to_string(),
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
            "10.0.0.1:8000",
        ),
        (
            "B",
            "AQID".to_string(),
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
            "10.0.0.3:8000",
        ),
        (
            "B",
            "".to_string(),
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
            "10.0.0.3:8000",
        ),
        (
            "B",
            "/wCA".to_string(),
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
            "10.0.0.3:8000",
        ),
        (
            "S",
            "hello".to_string(),
            vec![
                "10.0.0.2:8000",
                "10.0.0.10:8000",
                "10.0.0.1:8000",
                "10.0.0.9:8000",
            ],
            "10.0.0.2:8000",
        ),
        (
            "S",
            "".to_string(),
            vec![
                "10.0.0.2:8000",
                "10.0.0.10:8000",
                "10.0.0.1:8000",
                "10.0.0.9:8000",
            ],
            "10.0.0.1:8000",
        ),
        (
            "S",
            "user_123".to_string(),
            vec![
                "10.0.0.2:8000",
                "10.0.0.10:8000",
                "10.0.0.1:8000",
                "10.0.0.9:8000",
            ],
            "10.0.0.10:8000",
        ),
        (
            "S",
            "こんにちは".to_string(),
            vec![
                "10.0.0.2:8000",
                "10.0.0.10:8000",
                "10.0.0.1:8000",
                "10.0.0.9:8000",
            ],
            "10.0.0.1:8000",
        ),
        (
            "N",
            "42".to_string(),
            vec![
                "10.0.0.2:8000",
                "10.0.0.10:8000",
                "10.0.0.1:8000",
                "10.0.0.9:8000",
            ],
            "10.0.0.10:8000",
        ),
        (
            "N",
            "-12345".to_string(),
            vec![
                "10.0.0.2:8000",
                "10.0.0.10:8000",
                "10.0.0.1:8000",
                "10.0.0.9:8000",
            ],
            "10.0.0.9:8000",
        ),
        (
            "N",
            "3.14159".to_string(),
            vec![
                "10.0.0.2:8000",
                "10.0.0.10:8000",
                "10.0.0.1:8000",
                "10.0.0.9:8000",
            ],
            "10.0.0.2:8000",
        ),
        (
            "N",
            "1.23E10".to_string(),
            vec![
                "10.0.0.2:8000",
                "10.0.0.10:8000",
                "10.0.0.1:8000",
                "10.0.0.9:8000",
            ],
            "10.0.0.2:8000",
        ),
        (
            "B",
            "AQID".to_string(),
            vec![
                "10.0.0.2:8000",
                "10.0.0.10:8000",
                "10.0.0.1:8000",
                "10.0.0.9:8000",
            ],
            "10.0.0.1:8000",
        ),
        (
            "B",
            "".to_string(),
            vec![
                "10.0.0.2:8000",
                "10.0.0.10:8000",
                "10.0.0.1:8000",
                "10.0.0.9:8000",
            ],
            "10.0.0.2:8000",
        ),
        (
            "B",
            "/wCA".to_string(),
            vec![
                "10.0.0.2:8000",
                "10.0.0.10:8000",
                "10.0.0.1:8000",
                "10.0.0.9:8000",
            ],
            "10.0.0.2:8000",
        ),
        (
            "S",
            "hello".to_string(),
            vec!["10.0.0.2:80", "10.0.0.10:80", "10.0.0.1:80", "10.0.0.9:80"],
            "10.0.0.2:80",
        ),
        (
            "S",
            "".to_string(),
            vec!["10.0.0.2:80", "10.0.0.10:80", "10.0.0.1:80", "10.0.0.9:80"],
            "10.0.0.10:80",
        ),
        (
            "S",
            "user_123".to_string(),
            vec!["10.0.0.2:80", "10.0.0.10:80", "10.0.0.1:80", "10.0.0.9:80"],
            "10.0.0.1:80",
        ),
        (
            "S",
            "こんにちは".to_string(),
            vec!["10.0.0.2:80", "10.0.0.10:80", "10.0.0.1:80", "10.0.0.9:80"],
            "10.0.0.10:80",
        ),
        (
            "N",
            "42".to_string(),
            vec!["10.0.0.2:80", "10.0.0.10:80", "10.0.0.1:80", "10.0.0.9:80"],
            "10.0.0.1:80",
        ),
        (
            "N",
            "-12345".to_string(),
            vec!["10.0.0.2:80", "10.0.0.10:80", "10.0.0.1:80", "10.0.0.9:80"],
            "10.0.0.9:80",
        ),
        (
            "N",
            "3.14159".to_string(),
            vec!["10.0.0.2:80", "10.0.0.10:80", "10.0.0.1:80", "10.0.0.9:80"],
            "10.0.0.2:80",
        ),
        (
            "N",
            "1.23E10".to_string(),
            vec!["10.0.0.2:80", "10.0.0.10:80", "10.0.0.1:80", "10.0.0.9:80"],
            "10.0.0.2:80",
        ),
        (
            "B",
            "AQID".to_string(),
            vec!["10.0.0.2:80", "10.0.0.10:80", "10.0.0.1:80", "10.0.0.9:80"],
            "10.0.0.10:80",
        ),
        (
            "B",
            "".to_string(),
            vec!["10.0.0.2:80", "10.0.0.10:80", "10.0.0.1:80", "10.0.0.9:80"],
            "10.0.0.2:80",
        ),
        (
            "B",
            "/wCA".to_string(),
            vec!["10.0.0.2:80", "10.0.0.10:80", "10.0.0.1:80", "10.0.0.9:80"],
            "10.0.0.2:80",
        ),
    ];
    assert!(cases.len() >= 20);
    for (kind, value, nodes, want) in cases {
        let nodes: Vec<NodeAddr> = nodes.iter().map(|n| n.parse().unwrap()).collect();
        let ring = ring(&nodes, false);
        let hash = key_hash(&av(kind, &value)).unwrap();
        let first = plan(ring.len(), hash)[0];
        assert_eq!(preferred(ring.len(), hash), Some(first));
        assert_eq!(
            ring[first],
            want.parse::<NodeAddr>().unwrap(),
            "{kind} {value} over {nodes:?}"
        );
    }
}

/// The canonical rings of issue6_vectors.json's derived vectors.
const RINGS: [&[&str]; 4] = [
    &[
        "http://10.0.0.1:8000",
        "http://10.0.0.2:8000",
        "http://10.0.0.3:8000",
    ],
    &[
        "http://node1.example.com:8043",
        "http://node10.example.com:8043",
        "http://node2.example.com:8043",
        "http://node3.example.com:8043",
        "http://node4.example.com:8043",
        "http://node5.example.com:8043",
        "http://node6.example.com:8043",
        "http://node7.example.com:8043",
        "http://node8.example.com:8043",
        "http://node9.example.com:8043",
    ],
    &[
        "http://10.0.0.10:8000",
        "http://10.0.0.1:8000",
        "http://10.0.0.2:8000",
        "http://10.0.0.9:8000",
    ],
    &[
        "http://10.0.0.1",
        "http://10.0.0.10",
        "http://10.0.0.2",
        "http://10.0.0.9",
    ],
];

/// issue6_vectors.json `affinity_node_vectors`: ring, key type, key value
/// as sent (B in base64), hash, whole plan as indices into the ring.
#[allow(clippy::type_complexity)]
const NODE_VECTORS: &[(usize, &str, &str, i64, &[usize])] = &[
    (0, "S", "hello", 8815023923555918238, &[0, 1, 2]),
    (0, "S", "", 8849112093580131862, &[0, 1, 2]),
    (0, "S", "user_123", -4025731529809423594, &[1, 2, 0]),
    (0, "S", "こんにちは", -8746014667889746860, &[0, 1, 2]),
    (0, "N", "42", -5061732451827723051, &[1, 2, 0]),
    (0, "N", "-12345", 2496798676881075539, &[0, 1, 2]),
    (0, "N", "3.14159", 2139945193071104172, &[0, 2, 1]),
    (0, "N", "1.23E10", -8571981415737439826, &[0, 1, 2]),
    (0, "B", "AQID", 5026299041734804437, &[2, 0, 1]),
    (0, "B", "", 8244620721157455449, &[2, 0, 1]),
    (0, "B", "/wCA", 14533934253577680, &[2, 1, 0]),
    (
        1,
        "S",
        "hello",
        8815023923555918238,
        &[8, 7, 4, 2, 6, 0, 3, 5, 1, 9],
    ),
    (
        1,
        "S",
        "",
        8849112093580131862,
        &[9, 3, 7, 5, 0, 6, 1, 8, 2, 4],
    ),
    (
        1,
        "S",
        "user_123",
        -4025731529809423594,
        &[2, 3, 1, 8, 0, 9, 6, 7, 4, 5],
    ),
    (
        1,
        "S",
        "こんにちは",
        -8746014667889746860,
        &[5, 4, 8, 2, 9, 0, 1, 6, 7, 3],
    ),
    (
        1,
        "N",
        "42",
        -5061732451827723051,
        &[2, 6, 0, 9, 1, 4, 5, 3, 7, 8],
    ),
    (
        1,
        "N",
        "-12345",
        2496798676881075539,
        &[9, 3, 4, 5, 7, 8, 1, 6, 2, 0],
    ),
    (
        1,
        "N",
        "3.14159",
        2139945193071104172,
        &[6, 9, 7, 8, 2, 4, 1, 5, 0, 3],
    ),
    (
        1,
        "N",
        "1.23E10",
        -8571981415737439826,
        &[4, 5, 7, 0, 3, 2, 6, 1, 8, 9],
    ),
    (
        1,
        "B",
        "AQID",
        5026299041734804437,
        &[1, 5, 0, 2, 9, 4, 7, 3, 8, 6],
    ),
    (
        1,
        "B",
        "",
        8244620721157455449,
        &[0, 7, 4, 1, 2, 3, 9, 5, 8, 6],
    ),
    (
        1,
        "B",
        "/wCA",
        14533934253577680,
        &[6, 8, 5, 1, 7, 3, 2, 0, 9, 4],
    ),
    (2, "S", "hello", 8815023923555918238, &[2, 1, 0, 3]),
    (2, "S", "", 8849112093580131862, &[1, 0, 3, 2]),
    (2, "S", "user_123", -4025731529809423594, &[0, 3, 1, 2]),
    (2, "S", "こんにちは", -8746014667889746860, &[1, 3, 0, 2]),
    (2, "N", "42", -5061732451827723051, &[0, 3, 2, 1]),
    (2, "N", "-12345", 2496798676881075539, &[3, 0, 2, 1]),
    (2, "N", "3.14159", 2139945193071104172, &[2, 0, 1, 3]),
    (2, "N", "1.23E10", -8571981415737439826, &[2, 3, 1, 0]),
    (2, "B", "AQID", 5026299041734804437, &[1, 2, 0, 3]),
    (2, "B", "", 8244620721157455449, &[2, 1, 0, 3]),
    (2, "B", "/wCA", 14533934253577680, &[2, 3, 1, 0]),
    (3, "S", "hello", 8815023923555918238, &[2, 1, 0, 3]),
    (3, "S", "", 8849112093580131862, &[1, 0, 3, 2]),
    (3, "S", "user_123", -4025731529809423594, &[0, 3, 1, 2]),
    (3, "S", "こんにちは", -8746014667889746860, &[1, 3, 0, 2]),
    (3, "N", "42", -5061732451827723051, &[0, 3, 2, 1]),
    (3, "N", "-12345", 2496798676881075539, &[3, 0, 2, 1]),
    (3, "N", "3.14159", 2139945193071104172, &[2, 0, 1, 3]),
    (3, "N", "1.23E10", -8571981415737439826, &[2, 3, 1, 0]),
    (3, "B", "AQID", 5026299041734804437, &[1, 2, 0, 3]),
    (3, "B", "", 8244620721157455449, &[2, 1, 0, 3]),
    (3, "B", "/wCA", 14533934253577680, &[2, 3, 1, 0]),
];

/// issue6_vectors.json `batch_vote_vectors`: ring, targets, whole order.
#[allow(clippy::type_complexity)]
const BATCH_VECTORS: &[(usize, &[(&str, &str)], &[usize])] = &[
    (
        0,
        &[
            ("S", "hello"),
            ("S", "user_123"),
            ("S", ""),
            ("S", "こんにちは"),
        ],
        &[0, 1, 2],
    ),
    (
        0,
        &[
            ("N", "42"),
            ("N", "-12345"),
            ("B", "AQID"),
            ("S", "hello"),
            ("N", "3.14159"),
        ],
        &[0, 1, 2],
    ),
    (
        1,
        &[("S", "hello"), ("N", "42")],
        &[2, 8, 0, 1, 3, 4, 5, 6, 7, 9],
    ),
];

/// Derived: every `affinity_node_vectors` entry end to end, from a PutItem
/// body through [`key`] and [`order`] to the whole expected plan (hostname
/// rings included, which `NodeAddr` cannot hold; their order is given).
#[test]
fn put_item_bodies_reach_the_libraries_plan() {
    assert_eq!(NODE_VECTORS.len(), 44);
    let tables = Tables::new(&[("t".to_string(), "pk".to_string())]);
    for &(ring, kind, value, hash, want) in NODE_VECTORS {
        let ring = RINGS[ring];
        let body = format!(
            r#"{{"TableName":"t","Item":{{"pk":{{"{kind}":{}}},"x":{{"S":"y"}}}}}}"#,
            crate::model::Quoted(value)
        );
        let key = key(Mode::AnyWrite, Op::PutItem, body.as_bytes(), &tables);
        assert_eq!(key, Some(KeyHashes::Single(hash)), "{kind} {value}");
        let got = order(&key.unwrap(), ring.len()).unwrap();
        assert_eq!(got, want, "{kind} {value} over {ring:?}");
        // With every node healthy the request goes to the expected node.
        assert_eq!(choose(&got, |_| NodeHealth::Active), Some(want[0]));
    }
}

/// Derived: `batch_vote_vectors` end to end, from a BatchWriteItem body
/// (Put requests in one table, plus writes that must not vote).
#[test]
fn batch_write_bodies_reach_the_vote_order() {
    assert_eq!(BATCH_VECTORS.len(), 3);
    let tables = Tables::new(&[("t".to_string(), "pk".to_string())]);
    for &(ring, targets, want) in BATCH_VECTORS {
        let ring = RINGS[ring];
        let mut writes: Vec<String> = targets
            .iter()
            .map(|(kind, value)| {
                format!(
                    r#"{{"PutRequest":{{"Item":{{"pk":{{"{kind}":{}}}}}}}}}"#,
                    crate::model::Quoted(value)
                )
            })
            .collect();
        writes.push(r#"{"PutRequest":{"Item":{"pk":{"BOOL":true}}}}"#.to_string());
        let body = format!(
            r#"{{"RequestItems":{{"t":[{}],"unknown":[{{"DeleteRequest":{{"Key":{{"pk":{{"S":"x"}}}}}}}}]}}}}"#,
            writes.join(",")
        );
        let key = key(Mode::AnyWrite, Op::BatchWriteItem, body.as_bytes(), &tables);
        let Some(KeyHashes::Batch(hashes)) = &key else {
            panic!("{body}: {key:?}");
        };
        assert_eq!(hashes.len(), targets.len());
        let got = order(key.as_ref().unwrap(), ring.len()).unwrap();
        assert_eq!(got, want, "{targets:?} over {ring:?}");
        // The writes' order does not matter.
        let mut reversed = hashes.clone();
        reversed.reverse();
        assert_eq!(
            order(&KeyHashes::Batch(reversed), ring.len()).unwrap(),
            want
        );
    }
}

#[test]
fn unusable_key_values_have_no_hash() {
    let j = |s: &str| s.as_bytes().to_vec();
    for bad in [
        r#"{"S":"a","N":"1"}"#,
        r#"{"BOOL":true}"#,
        r#"{"NULL":true}"#,
        r#"{"SS":["a"]}"#,
        r#"{"B":"not base64!"}"#,
        r#"{"B":"AQI"}"#,
        r#"{"B":"A=QI"}"#,
        r#"{"N":1}"#,
        r#""x""#,
        "{}",
    ] {
        assert_eq!(key_hash(&j(bad)), None, "{bad}");
    }
}
