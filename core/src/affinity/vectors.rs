//! The cross-language vectors: published ones (feature-specs/vectors of
//! scylladb/alternator-client-python, and the Go, Java and Rust libraries'
//! tests), and key-to-node vectors computed with an independent reference
//! implementation of that specification (derived: no library publishes
//! key-to-node vectors).

use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn av(kind: &str, value: &str) -> Json {
    Json::Object(vec![(kind.to_string(), Json::String(value.to_string()))])
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

/// Derived: BatchWriteItem voting (one table, Put requests).
#[allow(clippy::type_complexity)]
#[test]
fn batch_votes_order_the_nodes() {
    let cases: Vec<(Vec<(&str, &str)>, Vec<&str>, Vec<&str>)> = vec![
        (
            vec![
                ("S", "hello"),
                ("S", "user_123"),
                ("S", ""),
                ("S", "こんにちは"),
            ],
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
        ),
        (
            vec![
                ("N", "42"),
                ("N", "-12345"),
                ("B", "AQID"),
                ("S", "hello"),
                ("N", "3.14159"),
            ],
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
            vec!["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
        ),
    ];
    assert_eq!(cases.len(), 2);
    for (keys, nodes, want) in cases {
        let ring: Vec<NodeAddr> = nodes.iter().map(|n| n.parse().unwrap()).collect();
        let writes: Vec<Json> = keys
            .iter()
            .map(|(k, v)| {
                Json::Object(vec![(
                    "PutRequest".into(),
                    Json::Object(vec![(
                        "Item".into(),
                        Json::Object(vec![("pk".into(), av(k, v))]),
                    )]),
                )])
            })
            .collect();
        let body = Json::Object(vec![(
            "RequestItems".into(),
            Json::Object(vec![("t".into(), Json::Array(writes))]),
        )]);
        let order = batch_order(&body, &ring, |t| (t == "t").then_some("pk")).unwrap();
        let got: Vec<String> = order.iter().map(|&i| ring[i].to_string()).collect();
        assert_eq!(got, want, "{keys:?}");
        assert_eq!(
            batch_order(&body, &ring, |_| None),
            None,
            "no known key, no votes"
        );
    }
}

#[test]
fn which_writes_qualify() {
    let j = |s: &str| crate::json::parse(s.as_bytes()).unwrap();
    let rmw = |op: &str, body: &str| qualifies(op, &j(body), Mode::Rmw);
    assert!(rmw(
        "PutItem",
        r#"{"ConditionExpression":"attribute_not_exists(pk)"}"#
    ));
    assert!(rmw("DeleteItem", r#"{"ReturnValues":"ALL_OLD"}"#));
    assert!(!rmw("PutItem", r#"{"ReturnValues":"NONE"}"#));
    assert!(!rmw("PutItem", r#"{"ConditionExpression":""}"#));
    assert!(!rmw("PutItem", r#"{"Expected":{}}"#));
    assert!(rmw("UpdateItem", r#"{"UpdateExpression":"SET a = :v"}"#));
    assert!(!rmw("UpdateItem", r#"{"ReturnValues":"UPDATED_NEW"}"#));
    assert!(rmw(
        "UpdateItem",
        r#"{"AttributeUpdates":{"a":{"Action":"ADD","Value":{"N":"1"}}}}"#
    ));
    assert!(!rmw(
        "UpdateItem",
        r#"{"AttributeUpdates":{"a":{"Action":"DELETE"}}}"#
    ));
    assert!(rmw(
        "UpdateItem",
        r#"{"AttributeUpdates":{"a":{"Action":"DELETE","Value":{"SS":["x"]}}}}"#
    ));
    assert!(!rmw(
        "UpdateItem",
        r#"{"AttributeUpdates":{"a":{"Action":"PUT","Value":{"N":"1"}}}}"#
    ));
    assert!(!rmw("GetItem", r#"{"ConditionExpression":"x"}"#));
    assert!(!rmw("BatchWriteItem", r#"{"ConditionExpression":"x"}"#));
    assert!(qualifies("PutItem", &j("{}"), Mode::AnyWrite));
    assert!(!qualifies("TransactWriteItems", &j("{}"), Mode::AnyWrite));
    assert!(!qualifies(
        "PutItem",
        &j(r#"{"ConditionExpression":"x"}"#),
        Mode::None
    ));
}

#[test]
fn unusable_keys_have_no_affinity() {
    let j = |s: &str| crate::json::parse(s.as_bytes()).unwrap();
    for bad in [
        r#"{"S":"a","N":"1"}"#,
        r#"{"BOOL":true}"#,
        r#"{"SS":["a"]}"#,
        r#"{"B":"not base64!"}"#,
        r#""x""#,
        "{}",
    ] {
        assert_eq!(key_hash(&j(bad)), None, "{bad}");
    }
    let body = j(r#"{"Item":{"pk":{"S":"hello"}},"ConditionExpression":"x"}"#);
    assert_eq!(
        single_write_hash("PutItem", &body, Mode::Rmw, "pk"),
        Some(8815023923555918238)
    );
    assert_eq!(
        single_write_hash("PutItem", &body, Mode::Rmw, "other"),
        None
    );
    assert_eq!(
        single_write_hash("GetItem", &body, Mode::AnyWrite, "pk"),
        None
    );
}
