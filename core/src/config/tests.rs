//! The configuration as a whole document: every key read, every refusal
//! named, and the discovery identity.

use super::document::Document;
use super::stats::MAX_STAT_PREFIX_LEN;
use super::*;
use crate::model::authority::HostPattern;
use crate::model::config::{Balancing, Mode, SeedGroup};
use crate::model::health::ProbePeriods;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn parse(s: &str) -> Result<Config, ConfigError> {
    Config::parse(s.as_bytes())
}

fn key_of(s: &str) -> Option<String> {
    parse(s).unwrap_err().key
}

fn filter(dc: Option<&str>, rack: Option<&str>) -> Scope {
    Scope::Filter {
        dc: dc.map(str::to_string),
        rack: rack.map(str::to_string),
    }
}

/// The error for `fragment` added to a valid document; it must name
/// `key` and contain `needle`.
fn refused(fragment: &str, key: &str, needle: &str) {
    let doc = if fragment.starts_with(r#""seeds""#) {
        format!("{{{fragment}}}")
    } else {
        format!(r#"{{"seeds": ["10.0.0.1"], {fragment}}}"#)
    };
    let e = parse(&doc).expect_err(&doc);
    assert_eq!(e.key.as_deref(), Some(key), "{doc}: {e}");
    assert!(e.to_string().contains(needle), "{doc}: {e}");
}

#[test]
fn minimal_config_takes_defaults() {
    let c = parse(r#"{"seeds": ["10.0.0.2", "10.0.0.1:9000"]}"#).unwrap();
    let seeds: Vec<String> = c.seeds.iter().map(|s| s.to_string()).collect();
    assert_eq!(seeds, ["10.0.0.1:9000", "10.0.0.2:8000"]);
    assert_eq!(c.port, 8000);
    assert_eq!(c.discovery_cluster, "alternator_discovery");
    assert_eq!(c.refresh_interval_ms, 1000);
    assert_eq!(c.discovery_timeout_ms, 2000);
    assert_eq!(c.routing, [Scope::Cluster]);
    assert_eq!(
        c.seed_groups,
        [SeedGroup {
            datacenter: None,
            seeds: c.seeds.clone()
        }]
    );
    assert_eq!(c.key_route_affinity, Mode::None);
    assert!(c.partition_keys.is_empty());
    assert!(!c.https);
    assert_eq!(c.idle_refresh_interval_ms, 60_000);
    assert_eq!(c.idle_after_ms, 60_000);
    assert_eq!(c.down_after_failures, 1);
    assert_eq!(c.down_after_resets, 3);
    assert_eq!(
        c.probe_periods,
        ProbePeriods {
            down_ms: 30_000,
            quarantine_ms: 1_000
        }
    );
    assert!(c.allowed_cidrs.is_empty());
    assert_eq!(c.hosts, None, "every request is the filter's");
}

#[test]
fn health_and_range_keys_are_read() {
    let c = parse(
        r#"{"seeds": ["10.0.0.1"], "idle_refresh_interval_ms": 5000, "down_after_failures": 3,
            "down_after_resets": 7, "down_probe_interval_ms": 2000, "quarantine_probe_interval_ms": 300,
            "allowed_cidrs": ["10.0.0.0/8", "fd00::/8"]}"#,
    )
    .unwrap();
    assert_eq!(c.idle_refresh_interval_ms, 5000);
    assert_eq!(c.down_after_failures, 3);
    assert_eq!(c.down_after_resets, 7);
    assert_eq!(
        c.probe_periods,
        ProbePeriods {
            down_ms: 2000,
            quarantine_ms: 300
        }
    );
    assert_eq!(c.allowed_cidrs.len(), 2);
}

#[test]
fn seeds_outside_allowed_cidrs_are_refused() {
    let e = parse(r#"{"seeds": ["10.0.0.1", "192.0.2.1"], "allowed_cidrs": ["10.0.0.0/8"]}"#)
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("seeds"));
    assert!(
        e.problem
            .contains("192.0.2.1:8000 is outside allowed_cidrs"),
        "{e}"
    );
}

#[test]
fn link_local_seeds_are_refused() {
    for (doc, entry) in [
        (
            r#"{"seeds": ["10.0.0.1", "169.254.169.254"]}"#,
            "entry 1: 169.254.169.254",
        ),
        (r#"{"seeds": ["[fe80::1]:8000"]}"#, "entry 0: fe80::1"),
        (
            r#"{"seeds": ["::ffff:169.254.0.9"]}"#,
            "entry 0: 169.254.0.9",
        ),
        (
            r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["febf::1"]}}"#,
            "datacenter \"dc2\": entry 0: febf::1",
        ),
    ] {
        let e = parse(doc).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("seeds"), "{doc}");
        let text = e.to_string();
        assert!(text.contains(&format!("{entry} is link-local")), "{text}");
        assert!(text.contains("/localnodes answers naming link-local addresses are refused"));
    }
    // Loopback seeds are fine (local test setups), as are the ranges'
    // neighbours.
    assert!(parse(r#"{"seeds": ["127.0.0.1", "::1", "169.255.0.1", "fec0::1"]}"#).is_ok());
}

#[test]
fn every_key_is_read() {
    let c = parse(
        r#"{"seeds": ["::1"], "port": 8043, "discovery_cluster": "disc",
            "refresh_interval_ms": 250, "discovery_timeout_ms": 900,
            "datacenter": "eu west", "rack": "r1"}"#,
    )
    .unwrap();
    assert_eq!(c.seeds[0].to_string(), "[::1]:8043");
    assert_eq!(c.port, 8043);
    assert_eq!(c.discovery_cluster, "disc");
    assert_eq!(c.refresh_interval_ms, 250);
    assert_eq!(c.discovery_timeout_ms, 900);
    assert_eq!(c.routing, [filter(Some("eu west"), Some("r1"))]);
}

#[test]
fn seeds_are_deduplicated() {
    let c = parse(r#"{"seeds": ["10.0.0.1", "10.0.0.1:8000", "::ffff:10.0.0.1"]}"#).unwrap();
    assert_eq!(c.seeds.len(), 1);
}

#[test]
fn missing_or_empty_seeds_are_named() {
    assert_eq!(key_of(r#"{}"#).as_deref(), Some("seeds"));
    assert_eq!(key_of(r#"{"seeds": []}"#).as_deref(), Some("seeds"));
    assert_eq!(key_of(r#"{"seeds": "10.0.0.1"}"#).as_deref(), Some("seeds"));
    assert_eq!(key_of(r#"{"seeds": [1]}"#).as_deref(), Some("seeds"));
    assert_eq!(
        key_of(r#"{"seeds": ["alternator.local"]}"#).as_deref(),
        Some("seeds")
    );
    assert_eq!(key_of("").as_deref(), Some("seeds"));
}

#[test]
fn unknown_key_is_named() {
    let e = parse(r#"{"seeds": ["10.0.0.1"], "refresh_intervall_ms": 5}"#).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("refresh_intervall_ms"));
    assert!(e.to_string().contains("unknown key"), "{e}");
}

#[test]
fn a_key_given_twice_is_named() {
    let e = parse(r#"{"seeds": ["10.0.0.1"], "port": 8000, "port": 9000}"#).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("port"));
    assert!(e.to_string().contains("twice"), "{e}");
}

#[test]
fn bad_values_are_named() {
    let cases = [
        (r#""port": 0"#, "port"),
        (r#""verify_node_san": "yes""#, "verify_node_san"),
        (r#""port": 65536"#, "port"),
        (r#""port": "8000""#, "port"),
        (r#""port": 80.5"#, "port"),
        (r#""refresh_interval_ms": 5"#, "refresh_interval_ms"),
        (r#""refresh_interval_ms": -1"#, "refresh_interval_ms"),
        (r#""discovery_timeout_ms": null"#, "discovery_timeout_ms"),
        (r#""discovery_cluster": """#, "discovery_cluster"),
        (r#""datacenter": 3"#, "datacenter"),
        (r#""rack": "a\nb""#, "rack"),
        (r#""down_after_failures": 0"#, "down_after_failures"),
        (r#""down_after_resets": 0"#, "down_after_resets"),
        (r#""down_after_resets": 101"#, "down_after_resets"),
        (r#""down_after_resets": "3""#, "down_after_resets"),
        (r#""down_probe_interval_ms": 50"#, "down_probe_interval_ms"),
        (
            r#""quarantine_probe_interval_ms": true"#,
            "quarantine_probe_interval_ms",
        ),
        (
            r#""idle_refresh_interval_ms": 1"#,
            "idle_refresh_interval_ms",
        ),
        (r#""allowed_cidrs": []"#, "allowed_cidrs"),
        (r#""allowed_cidrs": ["10.0.0.0/40"]"#, "allowed_cidrs"),
        (r#""allowed_cidrs": "10.0.0.0/8""#, "allowed_cidrs"),
    ];
    for (fragment, key) in cases {
        let doc = format!(r#"{{"seeds": ["10.0.0.1"], {fragment}}}"#);
        let e = parse(&doc).unwrap_err();
        assert_eq!(e.key.as_deref(), Some(key), "{doc}");
        assert!(e.to_string().contains(key), "{e}");
    }
}

#[test]
fn refusals_say_what_was_given() {
    let cases = [
        (
            r#"{"seeds": ["10.0.0.1"], "port": 0}"#,
            r#"key "port": must be an integer from 1 to 65535, got 0"#,
        ),
        (
            r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2", 7]}}"#,
            r#"key "seeds": datacenter "dc2": entry 1 must be a string, got 7"#,
        ),
        (
            r#"{"seeds": ["10.0.0.1"], "port": 8000, "port": 9000}"#,
            r#"key "port": is given twice"#,
        ),
        (
            r#"{"seeds": ["10.0.0.1"], "routing": [{"dc": "a", "rack": [1, "r"]}]}"#,
            r#"key "routing": entry 0: "rack" must be a non-empty string of at most 255 characters without control characters, got [1,"r"]"#,
        ),
        (
            r#"{"seeds": ["10.0.0.1"], "scheme": "ftp"}"#,
            r#"key "scheme": must be "http" or "https", got "ftp""#,
        ),
    ];
    for (doc, message) in cases {
        let e = parse(doc).unwrap_err();
        assert_eq!(e.to_string(), format!("invalid configuration: {message}"));
    }
}

/// Integers are never read through a float or a string, and `null` is
/// a value, not an absent key.
#[test]
fn integers_refuse_every_other_kind() {
    for (given, shown) in [
        ("80.5", "80.5"),
        ("-1", "-1"),
        ("\"8000\"", "\"8000\""),
        ("null", "null"),
        ("true", "true"),
        ("65536", "65536"),
        ("18446744073709551616", "1.8446744073709552e+19"),
        ("[8000]", "[8000]"),
    ] {
        let e = parse(&format!(r#"{{"seeds": ["10.0.0.1"], "port": {given}}}"#)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "invalid configuration: key \"port\": must be an integer from 1 to 65535, \
                 got {shown}"
            )
        );
    }
    let e = parse(r#"{"seeds": ["10.0.0.1"], "down_after_failures": 4294967296}"#).unwrap_err();
    assert!(e.problem.ends_with("from 1 to 100, got 4294967296"), "{e}");
}

/// serde's enums would take `{"word": null}` for `"word"`.
#[test]
fn words_are_strings_only() {
    refused(
        r#""key_route_affinity": {"rmw": null}"#,
        "key_route_affinity",
        r#"got {"rmw":null}"#,
    );
    refused(r#""scheme": {"https": null}"#, "scheme", "got {");
    refused(
        r#""routing": [{"cluster": null}]"#,
        "routing",
        "entry 0: unknown member \"cluster\"",
    );
    refused(r#""routing": ["Cluster"]"#, "routing", r#"got "Cluster""#);
}

/// A derived struct also reads an array of its fields in order.
#[test]
fn only_an_object_is_a_configuration() {
    for doc in [r#"[["10.0.0.1"]]"#, "[]", "7", r#""seeds""#, "null"] {
        let e = parse(doc).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: must be a JSON object"
        );
    }
}

/// What serde_json refuses only when it reads the value for real is
/// still reported as bad JSON, with its position.
#[test]
fn late_syntax_errors_are_not_valid_json() {
    for doc in [
        r#"{"seeds": ["10.0.0.1"], "port": 1e400}"#,
        r#"{"seeds": ["10.0.0.1"], "datacenter": "\ud800"}"#,
        r#"{"seeds": ["10.0.0.1"], "prot": 1, "port": }"#,
    ] {
        let e = parse(doc).unwrap_err();
        assert_eq!(e.key, None, "{doc}");
        assert!(e.problem.starts_with("not valid JSON: "), "{doc}: {e}");
        assert!(e.problem.contains(" at line 1 column "), "{doc}: {e}");
    }
}

/// The known keys an unknown key's refusal lists are the ones the
/// document has fields for.
#[test]
fn keys_are_the_document_fields() {
    let Err(e) = serde_json::from_str::<Document>(r#"{"?": 1}"#) else {
        panic!("an unknown key was accepted");
    };
    let fields: Vec<String> = KEYS.iter().map(|k| format!("`{k}`")).collect();
    assert!(
        e.to_string().starts_with(&format!(
            "unknown field `?`, expected one of {}",
            fields.join(", ")
        )),
        "{e}"
    );
}

#[test]
fn document_errors_have_no_key() {
    assert_eq!(key_of("{"), None);
    assert_eq!(key_of("[]"), None);
    assert!(parse("{")
        .unwrap_err()
        .to_string()
        .contains("not valid JSON"));
}

#[test]
fn seeds_by_datacenter_form_sorted_groups() {
    let c = parse(
        r#"{"seeds": {"dc2": ["10.0.2.1"], "dc1": ["10.0.1.2", "10.0.1.1:9000", "10.0.1.2"]}}"#,
    )
    .unwrap();
    let names: Vec<Option<&str>> = c
        .seed_groups
        .iter()
        .map(|g| g.datacenter.as_deref())
        .collect();
    assert_eq!(names, [Some("dc1"), Some("dc2")]);
    let dc1: Vec<String> = c.seed_groups[0]
        .seeds
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(dc1, ["10.0.1.1:9000", "10.0.1.2:8000"]);
    let all: Vec<String> = c.seeds.iter().map(|s| s.to_string()).collect();
    assert_eq!(all, ["10.0.1.1:9000", "10.0.1.2:8000", "10.0.2.1:8000"]);
    assert_eq!(c.routing, [Scope::Cluster]);
}

#[test]
fn bad_seed_groups_are_refused() {
    let many: Vec<String> = (0..=MAX_SEEDS)
        .map(|i| format!("\"10.1.{}.{}\"", i / 250, i % 250 + 1))
        .collect();
    let (half_a, half_b) = many.split_at(many.len() / 2);
    let split = format!(
        r#""seeds": {{"a": [{}], "b": [{}]}}"#,
        half_a.join(","),
        half_b.join(",")
    );
    let cases = [
        (r#""seeds": {}"#, "at least one datacenter"),
        (
            r#""seeds": {"dc1": []}"#,
            "datacenter \"dc1\": must not be empty",
        ),
        (
            r#""seeds": {"dc1": "10.0.0.1"}"#,
            "datacenter \"dc1\": must be an array",
        ),
        (r#""seeds": {"": ["10.0.0.1"]}"#, "datacenter name \"\""),
        (r#""seeds": {"d\nc": ["10.0.0.1"]}"#, "control characters"),
        (
            r#""seeds": {"dc1": ["10.0.0.1"], "dc1": ["10.0.0.2"]}"#,
            "datacenter \"dc1\" is given twice",
        ),
        (
            r#""seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2", "10.0.0.1:8000"]}"#,
            "10.0.0.1:8000 is listed under both datacenter \"dc1\" and \"dc2\"",
        ),
        (
            r#""seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2", 7]}"#,
            "datacenter \"dc2\": entry 1 must be a string",
        ),
        (
            r#""seeds": {"dc1": ["10.0.0.1", "host.example"]}"#,
            "datacenter \"dc1\": entry 1:",
        ),
        (r#""seeds": 7"#, "or an object mapping each datacenter"),
        (&split, "lists 257 addresses; at most 256"),
    ];
    for (fragment, needle) in cases {
        refused(fragment, "seeds", needle);
    }
    refused(
        &format!(r#""seeds": [{}]"#, many.join(",")),
        "seeds",
        "lists 257 addresses",
    );
    refused(
        r#""seeds": {"dc1": ["10.0.0.1"], "dc2": ["192.0.2.1"]}, "allowed_cidrs": ["10.0.0.0/8"]"#,
        "seeds",
        "192.0.2.1:8000 is outside allowed_cidrs",
    );
}

#[test]
fn routing_scopes_are_read_in_order() {
    let c = parse(
        r#"{"seeds": {"dc1": ["10.0.0.1"]}, "routing": [{"dc": "dc1", "rack": "r1"}, {"rack": "r2", "dc": "dc2"}, {"dc": "dc1"}, "cluster"]}"#,
    )
    .unwrap();
    assert_eq!(
        c.routing,
        [
            filter(Some("dc1"), Some("r1")),
            filter(Some("dc2"), Some("r2")),
            filter(Some("dc1"), None),
            Scope::Cluster
        ]
    );
    let confined = parse(r#"{"seeds": ["10.0.0.1"], "routing": [{"dc": "dc1"}]}"#).unwrap();
    assert_eq!(confined.routing, [filter(Some("dc1"), None)]);
}

#[test]
fn datacenter_and_rack_are_a_shorthand_for_one_scope() {
    let one = |extra: &str| {
        parse(&format!(r#"{{"seeds": ["10.0.0.1"], {extra}}}"#))
            .unwrap()
            .routing
    };
    assert_eq!(one(r#""datacenter": "dc1""#), [filter(Some("dc1"), None)]);
    assert_eq!(one(r#""rack": "r1""#), [filter(None, Some("r1"))]);
    assert_eq!(
        one(r#""datacenter": "dc1", "rack": "r1""#),
        [filter(Some("dc1"), Some("r1"))]
    );
}

#[test]
fn bad_routing_is_refused_with_its_entry() {
    let nine = [r#"{"dc": "x"}"#; MAX_SCOPES + 1].join(",");
    let cases = [
        (r#""routing": "cluster""#, "must be an array of scopes"),
        (r#""routing": []"#, "must list 1 to 8 scopes, got 0"),
        (
            &format!(r#""routing": [{nine}]"#),
            "must list 1 to 8 scopes, got 9",
        ),
        (
            r#""routing": ["cluster", {"dc": "dc1"}]"#,
            "entry 1 comes after \"cluster\"",
        ),
        (
            r#""routing": ["cluster", "cluster"]"#,
            "entry 1 comes after \"cluster\"",
        ),
        (
            r#""routing": [{"dc": "a"}, {"dc": "b"}, {"dc": "a"}]"#,
            "entry 2 repeats entry 0",
        ),
        (
            r#""routing": [{"dc": "a", "rack": "r"}, {"rack": "r", "dc": "a"}]"#,
            "entry 1 repeats entry 0",
        ),
        (r#""routing": ["everywhere"]"#, "entry 0: a scope is"),
        (r#""routing": [{"dc": "a"}, 3]"#, "entry 1: a scope is"),
        (r#""routing": [null]"#, "entry 0: a scope is"),
        (
            r#""routing": [{"dc": "a", "zone": "z"}]"#,
            "entry 0: unknown member \"zone\"",
        ),
        (
            r#""routing": [{"rack": "r1"}]"#,
            "entry 0: a scope needs \"dc\"",
        ),
        (r#""routing": [{}]"#, "entry 0: a scope needs \"dc\""),
        (
            r#""routing": [{"dc": ""}]"#,
            "entry 0: \"dc\" must be a non-empty string",
        ),
        (
            r#""routing": [{"dc": "a", "rack": 1}]"#,
            "entry 0: \"rack\" must be a non-empty",
        ),
        (r#""routing": [{"dc": "a\tb"}]"#, "entry 0: \"dc\" must be"),
        (
            r#""routing": [{"dc": "a", "dc": "b"}]"#,
            "entry 0: member \"dc\" is given twice",
        ),
        (
            r#""routing": ["cluster"], "datacenter": "dc1""#,
            "cannot be combined",
        ),
        (
            r#""rack": "r1", "routing": ["cluster"]"#,
            "cannot be combined",
        ),
    ];
    for (fragment, needle) in cases {
        refused(fragment, "routing", needle);
    }
}

#[test]
fn affinity_keys_are_read() {
    let c = parse(
        r#"{"seeds": ["10.0.0.1"], "key_route_affinity": "any_write", "scheme": "https",
            "partition_keys": {"users": "user_id", "orders": "order_id"}}"#,
    )
    .unwrap();
    assert_eq!(c.key_route_affinity, Mode::AnyWrite);
    assert!(c.https);
    assert_eq!(
        c.partition_keys,
        [
            ("orders".to_string(), "order_id".to_string()),
            ("users".to_string(), "user_id".to_string())
        ]
    );
    let mode = |m: &str| {
        parse(&format!(
            r#"{{"seeds": ["10.0.0.1"], "key_route_affinity": "{m}"}}"#
        ))
        .unwrap()
        .key_route_affinity
    };
    assert_eq!(mode("none"), Mode::None);
    assert_eq!(mode("rmw"), Mode::Rmw);
    let http = parse(r#"{"seeds": ["10.0.0.1"], "scheme": "http"}"#).unwrap();
    assert!(!http.https);
    let empty = parse(r#"{"seeds": ["10.0.0.1"], "partition_keys": {}}"#).unwrap();
    assert!(empty.partition_keys.is_empty());
}

#[test]
fn bad_affinity_keys_are_refused() {
    let too_many: Vec<String> = (0..=MAX_PARTITION_KEYS)
        .map(|i| format!(r#""t{i}": "pk""#))
        .collect();
    let too_many = format!(r#""partition_keys": {{{}}}"#, too_many.join(","));
    let cases = [
        (
            r#""key_route_affinity": "RMW""#,
            "key_route_affinity",
            "\"none\", \"rmw\" or \"any_write\"",
        ),
        (
            r#""key_route_affinity": true"#,
            "key_route_affinity",
            "got true",
        ),
        (r#""scheme": "HTTPS""#, "scheme", "\"http\" or \"https\""),
        (r#""scheme": null"#, "scheme", "got null"),
        (
            r#""partition_keys": ["orders"]"#,
            "partition_keys",
            "must be an object",
        ),
        (
            r#""partition_keys": {"": "id"}"#,
            "partition_keys",
            "table name must not be empty",
        ),
        (
            r#""partition_keys": {"orders": ""}"#,
            "partition_keys",
            "table \"orders\": the partition key",
        ),
        (
            r#""partition_keys": {"orders": 1}"#,
            "partition_keys",
            "got 1",
        ),
        (
            r#""partition_keys": {"orders": "a", "orders": "b"}"#,
            "partition_keys",
            "table \"orders\" is given twice",
        ),
        (
            &too_many,
            "partition_keys",
            "names 1025 tables; at most 1024",
        ),
    ];
    for (fragment, key, needle) in cases {
        refused(fragment, key, needle);
    }
}

#[test]
fn every_known_key_is_accepted() {
    let c = parse(
        r#"{"seeds": ["10.0.0.1"], "port": 8000, "discovery_cluster": "d",
            "refresh_interval_ms": 1000, "idle_refresh_interval_ms": 60000,
            "idle_after_ms": 60000, "discovery_timeout_ms": 2000, "routing": ["cluster"],
            "down_after_failures": 1, "down_after_resets": 3, "down_probe_interval_ms": 30000,
            "quarantine_probe_interval_ms": 1000, "allowed_cidrs": ["10.0.0.0/8"],
            "verify_node_san": true, "key_route_affinity": "rmw",
            "partition_keys": {"t": "k"}, "scheme": "https", "stat_prefix": "orders-eu",
            "load_balancing": "round_robin", "hosts": ["alternator.example"]}"#,
    );
    assert!(c.is_ok(), "{c:?}");
    assert_eq!(c.unwrap().stat_prefix.as_deref(), Some("orders-eu"));
    let shorthand = parse(r#"{"seeds": ["10.0.0.1"], "datacenter": "a", "rack": "b"}"#);
    assert!(shorthand.is_ok());
    // Every key in KEYS is used by one of the two documents above.
    assert_eq!(KEYS.len(), 22);
}

#[test]
fn hosts_are_read_in_order() {
    let c = parse(
        r#"{"seeds": ["10.0.0.1"], "hosts": ["Alternator.example", "*.eu.example:8000", "[::1]:8000", "10.0.0.9"]}"#,
    )
    .unwrap();
    let expected: Vec<HostPattern> = [
        "alternator.example",
        "*.eu.example:8000",
        "[::1]:8000",
        "10.0.0.9",
    ]
    .iter()
    .map(|h| h.parse().unwrap())
    .collect();
    assert_eq!(c.hosts, Some(expected));
    let most: Vec<String> = (0..MAX_HOSTS)
        .map(|i| format!("\"h{i}.example\""))
        .collect();
    let c = parse(&format!(
        r#"{{"seeds": ["10.0.0.1"], "hosts": [{}]}}"#,
        most.join(",")
    ))
    .unwrap();
    assert_eq!(c.hosts.map(|h| h.len()), Some(MAX_HOSTS));
}

#[test]
fn bad_hosts_are_refused_with_their_entry() {
    let too_many: Vec<String> = (0..=MAX_HOSTS)
        .map(|i| format!("\"h{i}.example\""))
        .collect();
    let too_many = format!(r#""hosts": [{}]"#, too_many.join(","));
    let cases = [
        (
            r#""hosts": []"#,
            "must not be empty: an empty list would pass every request",
        ),
        (
            r#""hosts": "alternator.example""#,
            "must be an array of hosts",
        ),
        (r#""hosts": null"#, "got null"),
        (
            r#""hosts": {"alternator.example": 1}"#,
            "must be an array of hosts",
        ),
        (&too_many, "lists 65 hosts; at most 64"),
        (
            r#""hosts": ["a.example", 7]"#,
            "entry 1 must be a string, got 7",
        ),
        (
            r#""hosts": ["a.example", null]"#,
            "entry 1 must be a string, got null",
        ),
        (r#""hosts": [""]"#, "entry 0: \"\" is not a host name"),
        (
            r#""hosts": ["*"]"#,
            "entry 0: \"*\": a lone \"*\" would match every host",
        ),
        (
            r#""hosts": ["a.example", "al*.example"]"#,
            "entry 1: \"al*.example\": a wildcard",
        ),
        (
            r#""hosts": ["alternator.example:0"]"#,
            "entry 0: \"alternator.example:0\": the port",
        ),
        (
            r#""hosts": ["alternator.example:99999"]"#,
            "the port must be a number from 1 to 65535",
        ),
        (r#""hosts": ["::1"]"#, "write an IPv6 address in brackets"),
        (r#""hosts": ["[::1]", "[0::1]"]"#, "entry 1 repeats entry 0"),
        (
            r#""hosts": ["a.example", "A.EXAMPLE"]"#,
            "entry 1 repeats entry 0",
        ),
        (r#""hosts": ["a.example. "]"#, "is not a host name"),
        (
            r#""hosts": ["a.example\n"]"#,
            r#"entry 0: "a.example\n" is not a host name"#,
        ),
    ];
    for (fragment, needle) in cases {
        refused(fragment, "hosts", needle);
    }
    // A port or a narrower name is another pattern, not a repeat.
    assert!(parse(
        r#"{"seeds": ["10.0.0.1"], "hosts": ["a.example", "a.example:8000", "*.a.example"]}"#
    )
    .is_ok());
}

#[test]
fn load_balancing_is_least_request_unless_round_robin_is_asked() {
    let lb = |extra: &str| parse(&format!(r#"{{"seeds": ["10.0.0.1"]{extra}}}"#));
    assert_eq!(lb("").unwrap().load_balancing, Balancing::LeastRequest);
    assert_eq!(
        lb(r#", "load_balancing": "least_request""#)
            .unwrap()
            .load_balancing,
        Balancing::LeastRequest
    );
    assert_eq!(
        lb(r#", "load_balancing": "round_robin""#)
            .unwrap()
            .load_balancing,
        Balancing::RoundRobin
    );
    for bad in [r#""ROUND_ROBIN""#, r#""random""#, "null", "1"] {
        let e = lb(&format!(r#", "load_balancing": {bad}"#)).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("load_balancing"), "{bad}");
        assert!(
            e.problem
                .contains(r#"must be "least_request" or "round_robin", got"#),
            "{e}"
        );
    }
}

#[test]
fn stat_prefix_is_one_token_of_a_metric_name() {
    let prefix = |v: &str| parse(&format!(r#"{{"seeds": ["10.0.0.1"], "stat_prefix": {v}}}"#));
    assert_eq!(
        prefix(r#""a_B-9""#).unwrap().stat_prefix.as_deref(),
        Some("a_B-9")
    );
    assert_eq!(
        parse(r#"{"seeds": ["10.0.0.1"]}"#).unwrap().stat_prefix,
        None
    );
    for bad in [r#""""#, r#""a.b""#, r#""a b""#, r#""é""#, "7", "null"] {
        let e = prefix(bad).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("stat_prefix"), "{bad}");
        assert!(
            e.problem.contains("letters, digits, '_' or '-', got"),
            "{e}"
        );
    }
    let long = format!(r#""{}""#, "x".repeat(MAX_STAT_PREFIX_LEN + 1));
    assert!(prefix(&long).is_err());
    // Each named instance polls for itself; without a name, the identity
    // is unchanged.
    let id = |doc: &str| parse(doc).unwrap().discovery_identity();
    let plain = id(r#"{"seeds": ["10.0.0.1"]}"#);
    assert_ne!(plain, id(r#"{"seeds": ["10.0.0.1"], "stat_prefix": "a"}"#));
    assert_ne!(
        id(r#"{"seeds": ["10.0.0.1"], "stat_prefix": "a"}"#),
        id(r#"{"seeds": ["10.0.0.1"], "stat_prefix": "b"}"#)
    );
    assert!(!plain.contains('|') || plain.matches('|').count() == 3);
}

/// `allowed_cidrs` filters what discovery keeps, so it is part of the
/// identity: other ranges, another record. The same ranges in another
/// order are the same; no ranges leave the identity as it always was.
#[test]
fn identity_follows_allowed_ranges() {
    let id = |doc: &str| parse(doc).unwrap().discovery_identity();
    let none = id(r#"{"seeds": ["10.0.0.1"]}"#);
    let narrow = id(r#"{"seeds": ["10.0.0.1"], "allowed_cidrs": ["10.0.0.0/16"]}"#);
    let wide = id(r#"{"seeds": ["10.0.0.1"], "allowed_cidrs": ["10.0.0.0/8"]}"#);
    assert_ne!(narrow, wide);
    assert_ne!(none, narrow);
    assert_eq!(
        none,
        "-=10.0.0.1:8000|8000|\"alternator_discovery\"|cluster"
    );
    assert_eq!(
        id(r#"{"seeds": ["10.0.0.1"], "allowed_cidrs": ["10.0.0.0/8", "fd00::/8"]}"#),
        id(r#"{"seeds": ["10.0.0.1"], "allowed_cidrs": ["fd00::/8", "10.0.0.0/8", "10.0.0.0/8"]}"#)
    );
    assert_ne!(
        crate::shared_state::key_for(&narrow),
        crate::shared_state::key_for(&wide)
    );
}

#[test]
fn identity_follows_seed_groups_and_routing_only() {
    let id = |doc: &str| parse(doc).unwrap().discovery_identity();
    let base = id(r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}}"#);
    // The same groups written in another order are the same discovery.
    assert_eq!(
        base,
        id(r#"{"seeds": {"dc2": ["10.0.0.2"], "dc1": ["10.0.0.1"]}}"#)
    );
    for other in [
        r#"{"seeds": ["10.0.0.1", "10.0.0.2"]}"#,
        r#"{"seeds": {"dc1": ["10.0.0.1", "10.0.0.2"]}}"#,
        r#"{"seeds": {"dc1": ["10.0.0.2"], "dc2": ["10.0.0.1"]}}"#,
        r#"{"seeds": {"dc1": ["10.0.0.1"], "dc3": ["10.0.0.2"]}}"#,
        r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "routing": [{"dc": "dc1"}, "cluster"]}"#,
        r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "routing": [{"dc": "dc1"}]}"#,
        r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "datacenter": "dc1"}"#,
    ] {
        assert_ne!(base, id(other), "{other}");
    }
    for same in [
        r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "hosts": ["a.example"]}"#,
        r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "key_route_affinity": "rmw"}"#,
        r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "partition_keys": {"t": "k"}}"#,
        r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "scheme": "https"}"#,
        r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["10.0.0.2"]}, "routing": ["cluster"]}"#,
    ] {
        assert_eq!(base, id(same), "{same}");
    }
    // Scopes that differ only in where a name ends are different.
    assert_ne!(
        id(r#"{"seeds": ["10.0.0.1"], "routing": [{"dc": "a/b"}]}"#),
        id(r#"{"seeds": ["10.0.0.1"], "routing": [{"dc": "a", "rack": "b"}]}"#)
    );
    // The shorthand is the scope it stands for.
    assert_eq!(
        id(r#"{"seeds": ["10.0.0.1"], "datacenter": "dc1", "rack": "r1"}"#),
        id(r#"{"seeds": ["10.0.0.1"], "routing": [{"dc": "dc1", "rack": "r1"}]}"#)
    );
}

#[test]
fn identity_differs_when_discovery_differs() {
    let a = parse(r#"{"seeds": ["10.0.0.1"]}"#).unwrap();
    let b = parse(r#"{"seeds": ["10.0.0.1"], "datacenter": "dc2"}"#).unwrap();
    let c = parse(r#"{"seeds": ["10.0.0.1"], "refresh_interval_ms": 500}"#).unwrap();
    assert_ne!(a.discovery_identity(), b.discovery_identity());
    assert_eq!(a.discovery_identity(), c.discovery_identity());
}
