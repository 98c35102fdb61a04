//! `hosts`: a VM that routes only some authorities passes the others
//! through untouched, and reads nothing more than it did without the key.

use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const HOSTS: &str = r#", "hosts": ["alternator.example", "*.eu.alternator.example:8000"]"#;

fn with_authority(mut request: TestStream, authority: &str) -> TestStream {
    request
        .request_headers
        .push((":authority", authority.as_bytes().to_vec()));
    request
}

fn reads(request: &TestStream) -> Vec<String> {
    request.reads.borrow().clone()
}

/// A whole exchange as Envoy drives it: headers, body, answer headers and
/// body. Returns what each callback answered.
fn exchange(sim: &Sim, id: u32, request: &TestStream) -> [Action; 4] {
    let mut stream = Stream::new(id, sim.vm(0));
    let size = request.request_body.len();
    let headers = stream.on_request_headers(request, size == 0);
    let body = stream.on_request_body(request, size, true);
    let answer = stream.on_response_headers(request);
    let answer_size = request.response_body.len();
    let answer_body = stream.on_response_body(request, answer_size, true);
    [headers, body, answer, answer_body]
}

#[test]
fn without_hosts_the_authority_is_never_read() {
    let sim = vm("");
    let request = with_authority(TestStream::default(), "other.example");
    let (action, mut stream) = send(&sim, &request);
    assert_eq!(action, Action::Continue);
    assert_eq!(request.handed.borrow().len(), 1);
    stream.on_response_headers(&request);
    // Round robin, affinity off: the answer's flags are all it reads.
    assert_eq!(reads(&request), ["response.flags"]);
}

#[test]
fn other_hosts_pass_untouched_even_writes_affinity_would_hold() {
    let sim = vm(&format!("{RMW}{HOSTS}"));
    let write = put(&conditional_put("o-1"), false);
    let describe_answer =
        br#"{"Table":{"TableName":"users","KeySchema":[{"AttributeName":"id","KeyType":"HASH"}]}}"#;
    let passing = [
        with_authority(put(&conditional_put("o-1"), false), "other.example"),
        with_authority(put(&conditional_put("o-1"), false), "other.example:8000"),
        // The bare suffix of a wildcard, and a wildcard's name on another
        // port.
        with_authority(put(&conditional_put("o-1"), false), "eu.alternator.example"),
        with_authority(
            put(&conditional_put("o-1"), false),
            "x.eu.alternator.example:8443",
        ),
        with_authority(put(&conditional_put("o-1"), false), "alternator.example."),
        with_authority(
            describe(b"200", describe_answer.to_vec(), false),
            "other.example",
        ),
        // No authority at all (an HTTP/1.0 request without Host).
        put(&conditional_put("o-1"), false),
    ];
    for (i, request) in passing.iter().enumerate() {
        let actions = exchange(&sim, 100 + i as u32, request);
        assert_eq!(actions, [Action::Continue; 4], "request {i}");
        assert!(request.handed.borrow().is_empty(), "request {i}: handed");
        assert!(request.replies.borrow().is_empty(), "request {i}: replied");
        assert_eq!(reads(request), [":authority"], "request {i}");
    }
    let vm = sim.vm(0);
    assert_eq!(vm.borrow().mailbox.held_counts(), (0, 0));
    assert_eq!(
        vm.borrow().mailbox.tables().pk_name("users"),
        None,
        "not learned"
    );
    let counts = vm.borrow().mailbox.counts();
    assert_eq!(
        (counts.passed, counts.routed, counts.affinity_held),
        (passing.len() as u64, 0, 0)
    );
    assert_eq!(
        (counts.affinity_body_unread, counts.affinity_fell_back),
        (0, 0)
    );
    sim.run(sim.tick_ms);
    assert_eq!(
        sim.process.stat("alternator_lb.requests_passed"),
        Some(passing.len() as i64)
    );
    assert_eq!(sim.process.stat("alternator_lb.requests_routed"), Some(0));

    // The filter's own hosts are routed as before, by key: the write is
    // held, read, and sent to its key's node, whatever the spelling.
    let by_key = send_held(&sim, &with_authority(write, "alternator.example"));
    for authority in [
        "Alternator.Example:8000",
        "eu.eu.alternator.example:8000",
        "ALTERNATOR.EXAMPLE:443",
    ] {
        let request = with_authority(put(&conditional_put("o-1"), false), authority);
        assert_eq!(send_held(&sim, &request), by_key, "{authority}");
        assert_eq!(reads(&request)[..2], [":authority", "x-amz-target"]);
        assert!(reads(&request).contains(&"request.body".to_string()));
    }
    let counts = sim.vm(0).borrow().mailbox.counts();
    assert_eq!(
        (counts.passed, counts.routed, counts.affinity_routed_by_key),
        (passing.len() as u64, 4, 4)
    );
}

/// With least request (the default), a passed request costs no clock read,
/// no request in flight and no latency sample; the filter's own requests
/// keep their accounting.
#[test]
fn passed_requests_leave_least_request_accounting_alone() {
    let sim = Sim::new(
        r#"{"seeds": ["10.0.0.1", "10.0.0.2", "10.0.0.3"], "hosts": ["alternator.example"]}"#,
        1,
        &NODES,
    );
    sim.run(500);
    assert_eq!(sim.routed(0).len(), 3);
    let passing: Vec<TestStream> = (0..20)
        .map(|_| with_authority(TestStream::default(), "other.example"))
        .collect();
    let mut open: Vec<Stream> = passing
        .iter()
        .enumerate()
        .map(|(i, request)| {
            let mut stream = Stream::new(200 + i as u32, sim.vm(0));
            assert_eq!(stream.on_request_headers(request, true), Action::Continue);
            stream
        })
        .collect();
    assert_nothing_in_flight(&sim);
    for (stream, request) in open.iter_mut().zip(&passing) {
        request.now_ns.set(5_000_000_000);
        assert_eq!(stream.on_response_headers(request), Action::Continue);
        assert_eq!(reads(request), [":authority"]);
    }
    drop(open);
    assert_nothing_in_flight(&sim);

    let mine = with_authority(TestStream::default(), "alternator.example:8000");
    let mut stream = Stream::new(300, sim.vm(0));
    assert_eq!(stream.on_request_headers(&mine, true), Action::Continue);
    let chosen = node(&mine.handed.borrow()[0]);
    assert_eq!(sim.vm(0).borrow().routes.in_flight(&chosen), Some(1));
    stream.on_response_headers(&mine);
    assert_eq!(sim.vm(0).borrow().routes.in_flight(&chosen), Some(0));
    assert_eq!(
        reads(&mine),
        [":authority", "clock", "response.flags", "clock"]
    );
}
