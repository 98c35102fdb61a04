//! One request at a time through [`Stream`], on the routes of a simulated
//! VM that discovered three nodes.

use super::*;
use crate::affinity::{MAX_BODY_BYTES, MAX_ITEM_BODY_BYTES};
use crate::filter_state;
use crate::health::{
    FLAG_UPSTREAM_CONNECTION_FAILURE, FLAG_UPSTREAM_CONNECTION_TERMINATION,
    FLAG_UPSTREAM_REMOTE_RESET,
};
use crate::model::NodeAddr;
use crate::testing::{addr, capture_logs, logs, Sim, TestStream, NODES};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod balancing;
mod hosts;

fn vm(config_extra: &str) -> Sim {
    // Round robin makes which node a request gets predictable; least
    // request has its own tests below.
    let config = format!(
        r#"{{"seeds": ["10.0.0.1", "10.0.0.2", "10.0.0.3"], "load_balancing": "round_robin"{config_extra}}}"#
    );
    let sim = Sim::new(&config, 1, &NODES);
    sim.run(500);
    assert_eq!(sim.routed(0).len(), 3);
    sim
}

fn node(handed: &[u8]) -> NodeAddr {
    for n in NODES {
        let addr: NodeAddr = format!("{n}:8000").parse().unwrap();
        if filter_state::route_to(&addr) == handed {
            return addr;
        }
    }
    panic!("not a route: {handed:?}");
}

/// A plain request (no body to wait for): where it was handed.
fn send(sim: &Sim, request: &TestStream) -> (Action, Stream) {
    let mut stream = Stream::new(1, sim.vm(0));
    (stream.on_request_headers(request, true), stream)
}

#[test]
fn requests_go_round_robin_with_the_prepared_bytes() {
    let sim = vm("");
    let mut seen = Vec::new();
    for _ in 0..6 {
        let request = TestStream::default();
        let (action, _) = send(&sim, &request);
        assert_eq!(action, Action::Continue);
        let handed = request.handed.borrow();
        assert_eq!(handed.len(), 1, "one host call per request");
        seen.push(node(&handed[0]));
    }
    assert_eq!(seen[..3], seen[3..], "{seen:?}");
    let mut distinct = seen[..3].to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3);
    assert_eq!(sim.vm(0).borrow().mailbox.counts().routed, 6);
    sim.run(sim.tick_ms);
    assert_eq!(sim.process.stat("alternator_lb.requests_routed"), Some(6));
}

#[test]
fn with_verify_node_san_the_certificate_check_follows_the_node() {
    let sim = vm(r#", "verify_node_san": true"#);
    let request = TestStream::default();
    send(&sim, &request);
    let handed = request.handed.borrow();
    assert_eq!(handed.len(), 2);
    let chosen = node(&handed[0]);
    assert_eq!(handed[1], filter_state::verify_san(&chosen));
}

#[test]
fn a_refused_hand_off_fails_closed_and_is_logged_once() {
    capture_logs();
    let sim = vm("");
    for _ in 0..3 {
        let request = TestStream {
            refuse: true,
            ..TestStream::default()
        };
        let (action, _) = send(&sim, &request);
        assert_eq!(action, Action::Pause);
        assert_eq!(*request.replies.borrow(), [error_body::ROUTING_FAILED]);
    }
    let refused: Vec<String> = logs()
        .into_iter()
        .filter(|l| l.contains("refused set_envoy_filter_state"))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let counts = sim.vm(0).borrow().mailbox.counts();
    assert_eq!((counts.routed, counts.rejected_handoff_refused), (0, 3));
}

#[test]
fn connection_failures_in_a_row_take_a_node_out_and_an_answer_resets_the_streak() {
    let sim = vm(r#", "down_after_failures": 2"#);
    let fails = |flags: u64| {
        let request = TestStream {
            flags,
            ..TestStream::default()
        };
        let (_, mut stream) = send(&sim, &request);
        let chosen = node(&request.handed.borrow()[0]);
        assert_eq!(stream.on_response_headers(&request), Action::Continue);
        chosen
    };
    // Requests 0, 3, 6, ... go to the same node: fail it, answer, fail it.
    let victim = fails(FLAG_UPSTREAM_CONNECTION_FAILURE);
    fails(0);
    fails(0);
    assert_eq!(fails(0), victim, "answered: the streak starts over");
    fails(0);
    fails(0);
    assert_eq!(fails(FLAG_UPSTREAM_CONNECTION_FAILURE), victim);
    assert!(sim.routed(0).contains(&victim), "one failure of two");
    fails(0);
    fails(0);
    assert_eq!(fails(FLAG_UPSTREAM_CONNECTION_FAILURE), victim);
    assert!(
        !sim.routed(0).contains(&victim),
        "two in a row: out at once"
    );
    // HTTP errors and timeouts are answers: 0x4 is an upstream timeout.
    for _ in 0..4 {
        fails(0x4);
    }
    assert_eq!(sim.routed(0).len(), 2);
}

/// Sends one request and reports `flags` as its outcome; returns the node
/// it went to.
fn respond(sim: &Sim, flags: u64) -> NodeAddr {
    let request = TestStream {
        flags,
        ..TestStream::default()
    };
    let (_, mut stream) = send(sim, &request);
    let chosen = node(&request.handed.borrow()[0]);
    assert_eq!(stream.on_response_headers(&request), Action::Continue);
    chosen
}

/// Sends requests round robin until one goes to `target`, which sees
/// `flags`; the others are answered.
fn respond_at(sim: &Sim, target: NodeAddr, flags: u64) {
    for _ in 0..NODES.len() {
        let request = TestStream {
            flags,
            ..TestStream::default()
        };
        let (_, mut stream) = send(sim, &request);
        let chosen = node(&request.handed.borrow()[0]);
        if chosen != target {
            // Not the target: answered.
            let answered = TestStream::default();
            stream.on_response_headers(&answered);
            continue;
        }
        stream.on_response_headers(&request);
        return;
    }
    panic!("{target} is not routed");
}

#[test]
fn resets_take_a_node_out_only_three_in_a_row_by_default() {
    let sim = vm("");
    let victim = respond(&sim, FLAG_UPSTREAM_CONNECTION_TERMINATION);
    respond_at(&sim, victim, FLAG_UPSTREAM_REMOTE_RESET);
    assert!(sim.routed(0).contains(&victim), "two resets: still in");
    // An answer between starts the count over.
    respond_at(&sim, victim, 0);
    respond_at(&sim, victim, FLAG_UPSTREAM_CONNECTION_TERMINATION);
    respond_at(&sim, victim, FLAG_UPSTREAM_CONNECTION_TERMINATION);
    sim.run(2 * sim.tick_ms);
    assert_eq!(sim.routed(0).len(), 3, "two in a row again: still in");
    assert_eq!(sim.process.stat("alternator_lb.nodes_marked_down"), Some(0));
    respond_at(&sim, victim, FLAG_UPSTREAM_REMOTE_RESET);
    assert!(!sim.routed(0).contains(&victim), "the third in a row");
    sim.run(sim.tick_ms);
    assert_eq!(sim.process.stat("alternator_lb.nodes_marked_down"), Some(1));
}

#[test]
fn one_failed_connect_takes_a_node_out_by_default() {
    let sim = vm("");
    let victim = respond(&sim, FLAG_UPSTREAM_CONNECTION_FAILURE);
    assert!(!sim.routed(0).contains(&victim));
}

/// Failed connects and resets are counted apart; only an answer clears
/// both.
#[test]
fn connect_failures_and_resets_have_their_own_thresholds() {
    let sim = vm(r#", "down_after_failures": 2, "down_after_resets": 3"#);
    let victim = respond(&sim, FLAG_UPSTREAM_REMOTE_RESET);
    respond_at(&sim, victim, FLAG_UPSTREAM_REMOTE_RESET);
    respond_at(&sim, victim, FLAG_UPSTREAM_CONNECTION_FAILURE);
    assert!(
        sim.routed(0).contains(&victim),
        "2 resets and 1 failed connect"
    );
    respond_at(&sim, victim, FLAG_UPSTREAM_REMOTE_RESET);
    assert!(!sim.routed(0).contains(&victim), "the third reset");

    let sim = vm(r#", "down_after_failures": 2, "down_after_resets": 3"#);
    let victim = respond(&sim, FLAG_UPSTREAM_CONNECTION_FAILURE);
    respond_at(&sim, victim, FLAG_UPSTREAM_REMOTE_RESET);
    respond_at(&sim, victim, 0);
    respond_at(&sim, victim, FLAG_UPSTREAM_CONNECTION_FAILURE);
    respond_at(&sim, victim, FLAG_UPSTREAM_REMOTE_RESET);
    assert!(sim.routed(0).contains(&victim), "the answer cleared both");
    respond_at(&sim, victim, FLAG_UPSTREAM_CONNECTION_FAILURE);
    assert!(
        !sim.routed(0).contains(&victim),
        "the second failed connect"
    );

    // With a threshold of 1, one reset is enough.
    let sim = vm(r#", "down_after_resets": 1"#);
    let victim = respond(&sim, FLAG_UPSTREAM_CONNECTION_TERMINATION);
    assert!(!sim.routed(0).contains(&victim));
}

const RMW: &str = r#", "key_route_affinity": "rmw", "partition_keys": {"orders": "order_id"}"#;

fn put(body: &[u8], gzip: bool) -> TestStream {
    let mut headers = vec![
        ("x-amz-target", b"DynamoDB_20120810.PutItem".to_vec()),
        ("content-length", body.len().to_string().into_bytes()),
    ];
    if gzip {
        headers.push(("content-encoding", b"gzip".to_vec()));
    }
    TestStream {
        request_headers: headers,
        request_body: body.to_vec(),
        ..TestStream::default()
    }
}

fn conditional_put(key: &str) -> Vec<u8> {
    format!(
        r#"{{"TableName":"orders","Item":{{"order_id":{{"S":"{key}"}}}},"ConditionExpression":"attribute_not_exists(order_id)"}}"#
    )
    .into_bytes()
}

/// Sends a write whose body is held: where it went.
fn send_held(sim: &Sim, request: &TestStream) -> NodeAddr {
    let mut stream = Stream::new(2, sim.vm(0));
    assert_eq!(stream.on_request_headers(request, false), Action::Pause);
    let size = request.request_body.len();
    assert_eq!(
        stream.on_request_body(request, size / 2, false),
        Action::Pause
    );
    assert!(
        request.handed.borrow().is_empty(),
        "not routed before the body"
    );
    assert_eq!(
        stream.on_request_body(request, size, true),
        Action::Continue
    );
    node(&request.handed.borrow()[0])
}

#[test]
fn a_conditional_write_goes_to_its_keys_node_every_time() {
    let sim = vm(RMW);
    let body = conditional_put("o-1001");
    let first = send_held(&sim, &put(&body, false));
    for _ in 0..5 {
        assert_eq!(send_held(&sim, &put(&body, false)), first);
    }
    // The node is the key's: the first of its order over the ring.
    let key = affinity::key(
        Mode::Rmw,
        Op::PutItem,
        &body,
        sim.vm(0).borrow().mailbox.tables(),
    );
    let chosen = sim
        .vm(0)
        .borrow()
        .routes
        .pick_for_key(&key.unwrap())
        .unwrap();
    assert_eq!(chosen.node, first);
    // Other keys spread over the nodes.
    let nodes: std::collections::BTreeSet<NodeAddr> = (0..30)
        .map(|i| send_held(&sim, &put(&conditional_put(&format!("k{i}")), false)))
        .collect();
    assert_eq!(nodes.len(), 3);
}

#[test]
fn a_gzip_body_is_routed_by_the_key_inside() {
    use std::io::Write;
    let sim = vm(RMW);
    let body = conditional_put("o-1001");
    let plain = send_held(&sim, &put(&body, false));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let compressed = gz.finish().unwrap();
    for _ in 0..3 {
        assert_eq!(send_held(&sim, &put(&compressed, true)), plain);
    }
}

#[test]
fn only_writes_that_may_qualify_and_announce_a_bounded_body_are_held() {
    let sim = vm(RMW);
    let immediate = |request: &TestStream, end_of_stream: bool| {
        let mut stream = Stream::new(3, sim.vm(0));
        assert_eq!(
            stream.on_request_headers(request, end_of_stream),
            Action::Continue
        );
        assert_eq!(request.handed.borrow().len(), 1, "routed at the headers");
    };
    let body = conditional_put("o-1");
    // A read.
    immediate(
        &TestStream {
            request_headers: vec![("x-amz-target", b"DynamoDB_20120810.GetItem".to_vec())],
            ..TestStream::default()
        },
        false,
    );
    // No Content-Length, or one over 1 MiB (a single item), or no body at
    // all. The first two are writes whose body was not read: counted.
    let mut unannounced = put(&body, false);
    unannounced
        .request_headers
        .retain(|(n, _)| *n != "content-length");
    immediate(&unannounced, false);
    let mut huge = put(&body, false);
    huge.request_headers[1].1 = (MAX_ITEM_BODY_BYTES + 1).to_string().into_bytes();
    immediate(&huge, false);
    immediate(&put(&body, false), true);
    let counts = sim.vm(0).borrow().mailbox.counts();
    assert_eq!((counts.affinity_held, counts.affinity_body_unread), (0, 2));
    sim.run(sim.tick_ms);
    assert_eq!(
        sim.process.stat("alternator_lb.affinity_body_unread"),
        Some(2)
    );
}

/// A write whose headers announce `length` bytes of body: whether it is
/// held (it is let go at once).
fn held_at(sim: &Sim, target: &str, length: usize) -> bool {
    let request = TestStream {
        request_headers: vec![
            ("x-amz-target", target.as_bytes().to_vec()),
            ("content-length", length.to_string().into_bytes()),
        ],
        ..TestStream::default()
    };
    let mut stream = Stream::new(7, sim.vm(0));
    stream.on_request_headers(&request, false) == Action::Pause
}

#[test]
fn single_item_writes_are_held_up_to_1_mib_and_batches_up_to_16_mib() {
    let sim =
        vm(r#", "key_route_affinity": "any_write", "partition_keys": {"orders": "order_id"}"#);
    for op in ["PutItem", "UpdateItem", "DeleteItem"] {
        let target = format!("DynamoDB_20120810.{op}");
        assert!(held_at(&sim, &target, MAX_ITEM_BODY_BYTES), "{op}");
        assert!(!held_at(&sim, &target, MAX_ITEM_BODY_BYTES + 1), "{op}");
    }
    let batch = "DynamoDB_20120810.BatchWriteItem";
    assert!(held_at(&sim, batch, 2 * MAX_ITEM_BODY_BYTES));
    assert!(held_at(&sim, batch, MAX_BODY_BYTES));
    assert!(!held_at(&sim, batch, MAX_BODY_BYTES + 1));
    assert_eq!(sim.vm(0).borrow().mailbox.counts().affinity_body_unread, 4);
}

fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// The issue's bomb: a gzip body of about 16 KB that inflates to 16 MiB of
/// junk members in `AttributeUpdates`.
fn bomb() -> Vec<u8> {
    let mut json = br#"{"AttributeUpdates":{"#.to_vec();
    while json.len() < MAX_BODY_BYTES - 16 {
        json.extend_from_slice(br#""":0,"#);
    }
    json.extend_from_slice(br#""":0}}"#);
    gzip_bytes(&json)
}

/// A held write with `body` (whole, at once): where it went, if anywhere.
fn send_whole(sim: &Sim, op: &str, body: &[u8], gzip: bool) -> Option<NodeAddr> {
    let mut request = put(body, gzip);
    request.request_headers[0].1 = format!("DynamoDB_20120810.{op}").into_bytes();
    let mut stream = Stream::new(8, sim.vm(0));
    assert_eq!(stream.on_request_headers(&request, false), Action::Pause);
    assert_eq!(
        stream.on_request_body(&request, body.len(), true),
        Action::Continue
    );
    let handed = request.handed.borrow();
    handed.first().map(|h| node(h))
}

#[test]
fn a_gzip_bomb_is_sent_on_unread_and_costs_little_memory() {
    let sim = vm(RMW);
    let bomb = bomb();
    assert!(bomb.len() < 32_000, "{} bytes", bomb.len());
    for op in ["UpdateItem", "PutItem"] {
        let (went, peak) = crate::testing::alloc::peak_during(|| send_whole(&sim, op, &bomb, true));
        assert!(went.is_some(), "{op}: sent on");
        // Not the 16 MiB inflated, nor its members: a few pieces.
        assert!(peak < 256 * 1024, "{op}: {peak} bytes at the peak");
    }
    let counts = sim.vm(0).borrow().mailbox.counts();
    assert_eq!(counts.affinity_body_unread, 2);
    assert_eq!(counts.affinity_fell_back + counts.affinity_routed_by_key, 0);
}

#[test]
fn gzip_bodies_inflate_within_a_ratio_and_are_read_only_as_far_as_needed() {
    let sim = vm(RMW);
    let key_first = conditional_put("o-1001");
    let by_key = send_held(&sim, &put(&key_first, false));
    // 900 KB of padding compresses about 1000 times: past the ratio.
    let pad = "z".repeat(900_000);
    let padded = |condition_first: bool| {
        let (before, after) = if condition_first {
            (
                r#","ConditionExpression":"attribute_not_exists(order_id)""#,
                "",
            )
        } else {
            (
                "",
                r#","ConditionExpression":"attribute_not_exists(order_id)""#,
            )
        };
        format!(
            r#"{{"TableName":"orders","Item":{{"order_id":{{"S":"o-1001"}}}}{before},"pad":"{pad}"{after}}}"#
        )
        .into_bytes()
    };
    // The condition before the padding: decided before the ratio matters.
    let early = gzip_bytes(&padded(true));
    assert!(early.len() * gzip::MAX_RATIO < 900_000, "{}", early.len());
    assert_eq!(send_whole(&sim, "PutItem", &early, true), Some(by_key));
    // After it: the padding is inflated past the ratio, so not read.
    let late = gzip_bytes(&padded(false));
    send_whole(&sim, "PutItem", &late, true);
    // The same body as sent, plain: read whole, routed by key.
    assert_eq!(
        send_whole(&sim, "PutItem", &padded(false), false),
        Some(by_key)
    );
    let counts = sim.vm(0).borrow().mailbox.counts();
    assert_eq!(
        (counts.affinity_routed_by_key, counts.affinity_body_unread),
        (3, 1)
    );
}

#[test]
fn a_held_write_with_trailers_is_routed_when_they_come() {
    let sim = vm(RMW);
    let body = conditional_put("o-1001");
    let by_key = send_held(&sim, &put(&body, false));
    // HTTP/2 trailers: the last body callback does not end the stream.
    let request = put(&body, false);
    let mut stream = Stream::new(9, sim.vm(0));
    assert_eq!(stream.on_request_headers(&request, false), Action::Pause);
    assert_eq!(
        stream.on_request_body(&request, body.len(), false),
        Action::Pause
    );
    assert!(request.handed.borrow().is_empty());
    assert_eq!(stream.on_request_trailers(&request), Action::Continue);
    assert_eq!(request.handed.borrow().len(), 1, "routed, once");
    assert_eq!(node(&request.handed.borrow()[0]), by_key);
    // Trailers right after the headers (no body): routed as usual.
    let empty = put(b"", false);
    let mut stream = Stream::new(10, sim.vm(0));
    assert_eq!(stream.on_request_headers(&empty, false), Action::Pause);
    assert_eq!(stream.on_request_trailers(&empty), Action::Continue);
    assert_eq!(empty.handed.borrow().len(), 1);
    assert_eq!(
        sim.vm(0).borrow().mailbox.held_counts(),
        (0, 0),
        "none left held"
    );
    // A request that was not held: trailers change nothing.
    let plain = TestStream::default();
    let mut stream = Stream::new(11, sim.vm(0));
    assert_eq!(stream.on_request_headers(&plain, false), Action::Continue);
    assert_eq!(stream.on_request_trailers(&plain), Action::Continue);
    assert_eq!(plain.handed.borrow().len(), 1);
}

#[test]
fn held_writes_are_kept_by_id_up_to_a_bound() {
    let sim = vm(RMW);
    let body = conditional_put("o-1");
    let mut open: Vec<(TestStream, Stream)> = (0..crate::hold::MAX_HELD as u32)
        .map(|id| {
            let request = put(&body, false);
            let mut stream = Stream::new(10_000 + id, sim.vm(0));
            assert_eq!(stream.on_request_headers(&request, false), Action::Pause);
            (request, stream)
        })
        .collect();
    assert_eq!(
        sim.vm(0).borrow().mailbox.held_counts(),
        (crate::hold::MAX_HELD, 0)
    );
    // One more: sent on at once, without affinity, counted.
    let extra = put(&body, false);
    let mut stream = Stream::new(99_999, sim.vm(0));
    assert_eq!(stream.on_request_headers(&extra, false), Action::Continue);
    assert_eq!(extra.handed.borrow().len(), 1);
    assert_eq!(sim.vm(0).borrow().mailbox.counts().affinity_body_unread, 1);
    // Any of them, by id: its body comes, it leaves the list.
    let (request, mut stream) = open.swap_remove(500);
    assert_eq!(
        stream.on_request_body(&request, body.len(), true),
        Action::Continue
    );
    assert_eq!(
        sim.vm(0).borrow().mailbox.held_counts(),
        (crate::hold::MAX_HELD - 1, 0)
    );
    // The others end (the clients give up): nothing is left.
    drop(open);
    assert_eq!(sim.vm(0).borrow().mailbox.held_counts(), (0, 0));
}

#[test]
fn with_affinity_off_no_header_is_read() {
    let sim = vm("");
    let request = put(&conditional_put("o-1"), false);
    let mut stream = Stream::new(4, sim.vm(0));
    assert_eq!(stream.on_request_headers(&request, false), Action::Continue);
    assert_eq!(stream.on_request_body(&request, 10, true), Action::Continue);
    assert_eq!(request.handed.borrow().len(), 1);
}

fn describe(status: &[u8], body: Vec<u8>, gzip: bool) -> TestStream {
    let mut response_headers = vec![(":status", status.to_vec())];
    if gzip {
        response_headers.push(("content-encoding", b"gzip".to_vec()));
    }
    TestStream {
        request_headers: vec![("x-amz-target", b"DynamoDB_20120810.DescribeTable".to_vec())],
        response_headers,
        response_body: body,
        ..TestStream::default()
    }
}

fn answer(sim: &Sim, exchange: &TestStream) {
    let mut stream = Stream::new(5, sim.vm(0));
    assert_eq!(stream.on_request_headers(exchange, true), Action::Continue);
    assert_eq!(stream.on_response_headers(exchange), Action::Continue);
    let size = exchange.response_body.len();
    assert_eq!(
        stream.on_response_body(exchange, size, true),
        Action::Continue
    );
}

#[test]
fn table_descriptions_teach_partition_keys() {
    use std::io::Write;
    let sim = vm(r#", "key_route_affinity": "any_write""#);
    let body = |t: &str| {
        format!(r#"{{"Table":{{"TableName":"{t}","KeySchema":[{{"AttributeName":"id","KeyType":"HASH"}}]}}}}"#)
            .into_bytes()
    };
    answer(&sim, &describe(b"400", body("refused"), false));
    answer(&sim, &describe(b"200", body("plain"), false));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body("zipped")).unwrap();
    answer(&sim, &describe(b"200", gz.finish().unwrap(), true));
    let vm = sim.vm(0);
    let mut vm = vm.borrow_mut();
    assert_eq!(vm.mailbox.tables().pk_name("refused"), None);
    assert_eq!(vm.mailbox.tables().pk_name("plain"), Some("id"));
    assert_eq!(vm.mailbox.tables().pk_name("zipped"), Some("id"));
    let news = vm.mailbox.take_learned();
    assert_eq!(news.len(), 2, "{news:?}");
}

#[test]
fn held_writes_are_counted_by_how_they_were_routed() {
    let sim = vm(RMW);
    send_held(&sim, &put(&conditional_put("o-1"), false));
    // Held (whether it qualifies depends on the body), then routed as usual.
    let plain = br#"{"TableName":"orders","Item":{"order_id":{"S":"o-2"}}}"#;
    send_held(&sim, &put(plain, false));
    let unknown_table =
        br#"{"TableName":"users","Item":{"id":{"S":"u"}},"ConditionExpression":"x"}"#;
    send_held(&sim, &put(unknown_table, false));
    let counts = sim.vm(0).borrow().mailbox.counts();
    assert_eq!(counts.affinity_held, 3);
    assert_eq!(counts.affinity_routed_by_key, 1);
    assert_eq!(counts.affinity_fell_back, 2);
    assert_eq!(counts.routed, 3);
    sim.run(sim.tick_ms);
    assert_eq!(
        sim.process.stat("alternator_lb.affinity_fell_back"),
        Some(2)
    );
}

#[test]
fn local_replies_name_why_in_their_details() {
    let sim = vm("");
    let refused = TestStream {
        refuse: true,
        ..TestStream::default()
    };
    send(&sim, &refused);
    assert_eq!(
        refused.replies.borrow()[0].details,
        "alternator_lb_handoff_refused"
    );
    sim.run(sim.tick_ms);
    assert_eq!(
        sim.process
            .stat("alternator_lb.requests_rejected_handoff_refused"),
        Some(1)
    );
    // The no-node answer only comes with no node known at all: a stream of
    // a VM whose configuration was refused (every configured VM knows its
    // seeds, and routes to them even when they look Down).
    let nowhere = TestStream::default();
    let mut stream = Stream::unconfigured(9);
    assert_eq!(stream.on_request_headers(&nowhere, true), Action::Pause);
    assert_eq!(nowhere.replies.borrow()[0].details, "alternator_lb_no_node");
}

/// One VM with the default configuration (least request).
fn least_request_vm() -> Sim {
    let sim = Sim::new(
        r#"{"seeds": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}"#,
        1,
        &NODES,
    );
    sim.run(500);
    assert_eq!(sim.routed(0).len(), 3);
    sim
}

/// `count` requests routed (ids from `first_id`) and not yet answered.
fn open_streams(sim: &Sim, first_id: u32, count: u32) -> Vec<(TestStream, Stream)> {
    (first_id..first_id + count)
        .map(|id| {
            let request = TestStream::default();
            let mut stream = Stream::new(id, sim.vm(0));
            assert_eq!(stream.on_request_headers(&request, true), Action::Continue);
            (request, stream)
        })
        .collect()
}

fn assert_nothing_in_flight(sim: &Sim) {
    for node in sim.routed(0) {
        assert_eq!(
            sim.vm(0).borrow().routes.in_flight(&node),
            Some(0),
            "{node}"
        );
    }
}

#[test]
fn in_flight_counts_come_back_to_zero_however_streams_end() {
    let sim = least_request_vm();
    let open = open_streams(&sim, 2000, 30);
    let total: u32 = sim
        .routed(0)
        .iter()
        .map(|n| sim.vm(0).borrow().routes.in_flight(n).unwrap())
        .sum();
    assert_eq!(total, 30);
    for (i, (request, mut stream)) in open.into_iter().enumerate() {
        match i % 3 {
            // Answered.
            0 => {
                stream.on_response_headers(&request);
            }
            // The node reset the connection: Envoy still calls with its 503.
            1 => {
                let reset = TestStream {
                    flags: 0x10,
                    ..TestStream::default()
                };
                stream.on_response_headers(&reset);
            }
            // The client went away: no answer ever comes.
            _ => {}
        }
        drop(stream);
        drop(request);
    }
    assert_nothing_in_flight(&sim);
}

#[test]
fn a_node_leaving_its_tier_mid_flight_keeps_the_counts_right() {
    let sim = least_request_vm();
    let leaving = addr("10.0.0.1:8000");
    let open = open_streams(&sim, 3000, 12);
    assert!(sim.vm(0).borrow().routes.in_flight(&leaving).unwrap() > 0);
    // /localnodes stops listing it while its requests are in flight.
    sim.cluster.borrow_mut().listed.retain(|n| n != "10.0.0.1");
    sim.run(1_200);
    assert!(!sim.routed(0).contains(&leaving));
    assert_eq!(sim.vm(0).borrow().routes.in_flight(&leaving), None);
    // Its requests end after it left: nothing goes negative, and the nodes
    // left are back at zero.
    for (request, mut stream) in open {
        stream.on_response_headers(&request);
    }
    assert_nothing_in_flight(&sim);
    // Listed again, it starts from nothing (after its quarantine probe).
    sim.cluster.borrow_mut().listed.push("10.0.0.1".into());
    sim.run(3_000);
    assert!(sim.routed(0).contains(&leaving));
    assert_eq!(sim.vm(0).borrow().routes.in_flight(&leaving), Some(0));
}

#[test]
fn a_single_node_takes_every_request() {
    let sim = Sim::new(r#"{"seeds": ["10.0.0.1"]}"#, 1, &["10.0.0.1"]);
    sim.run(500);
    for i in 0..5 {
        let request = TestStream::default();
        let mut stream = Stream::new(4000 + i, sim.vm(0));
        stream.on_request_headers(&request, true);
        assert_eq!(node(&request.handed.borrow()[0]), addr("10.0.0.1:8000"));
    }
}
