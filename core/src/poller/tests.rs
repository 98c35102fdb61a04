//! The orchestration driven as Envoy drives it: several VMs (workers and
//! the main thread) ticking at their own phases on one simulated process,
//! whose shared data has Envoy's compare-and-set rules, against a simulated
//! cluster answering their callouts.

use crate::hold::{RETRY_AFTER_MS, TIMEOUTS_TO_STOP};
use crate::model::health::{HealthState, Outcome};
use crate::model::NodeAddr;
use crate::poller::HOLD_TIMEOUT_MS;
use crate::stream::{Action, Stream};
use crate::testing::{addr, capture_logs, logs, Reply, Sim, TestStream, ENVOY_TIMEOUT, NODES};
use crate::vm_state::VmState;
use std::cell::RefCell;
use std::rc::Rc;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// 1 s rounds (so 100 ms ticks), Down nodes probed every 2 s.
const CONFIG: &str = r#"{"seeds": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
    "down_probe_interval_ms": 2000}"#;

fn all() -> Vec<NodeAddr> {
    NODES.iter().map(|n| addr(&format!("{n}:8000"))).collect()
}

/// Four workers and the main thread, after the first round was answered.
fn discovered(config: &str, vms: usize) -> Sim {
    let sim = Sim::new(config, vms, &NODES);
    sim.run(500);
    assert_eq!(
        sim.discovery_calls().len(),
        1,
        "{:?}",
        sim.discovery_calls()
    );
    for vm in 0..vms {
        assert_eq!(sim.routed(vm), all(), "VM {vm}");
    }
    sim
}

/// Asserts that after the first call, `/localnodes` was asked exactly once
/// per `interval` ms, each within one tick of its due time.
fn one_call_per_interval(sim: &Sim, interval: u64, expected: usize) {
    let calls = sim.discovery_calls();
    assert_eq!(calls.len(), expected, "{calls:#?}");
    let first = calls[0].at_ms;
    for (k, call) in calls.iter().enumerate() {
        let due = first + k as u64 * interval;
        assert!(
            (due..due + sim.tick_ms).contains(&call.at_ms),
            "call {k} at +{} ms, due at +{} ms",
            call.at_ms - first,
            due - first
        );
    }
}

#[test]
fn five_vms_poll_once_per_interval() {
    let sim = Sim::new(CONFIG, 5, &NODES);
    sim.run(10_000);
    // The record is created on the first tick, the first round leased on
    // the next one; then one round a second, whichever VM wins it.
    one_call_per_interval(&sim, 1_000, 10);
    let pollers: std::collections::BTreeSet<usize> =
        sim.discovery_calls().iter().map(|c| c.vm).collect();
    assert!(
        pollers.len() > 1,
        "the lease moves between VMs: {pollers:?}"
    );
    assert_eq!(
        sim.process.stat("alternator_lb.discovery_successes"),
        Some(10)
    );
    assert_eq!(sim.process.stat("alternator_lb.nodes_known"), Some(3));
}

#[test]
fn a_vm_that_loses_the_lease_race_does_not_poll() {
    let sim = discovered(CONFIG, 2);
    let before = sim.discovery_calls().len();
    // Bring the next round due, then let VM 0 tick; just before it writes
    // its lease, VM 1 runs a whole tick and takes the round first.
    sim.pass(1_000);
    let rival = Rc::clone(&sim.vms[1]);
    let fired = Rc::new(RefCell::new(false));
    let flag = Rc::clone(&fired);
    sim.process.before_set(move |key, _| {
        if key.ends_with(".tables") {
            return false;
        }
        rival.borrow_mut().on_tick();
        *flag.borrow_mut() = true;
        true
    });
    sim.tick(0);
    assert!(*fired.borrow(), "VM 0 tried to write a lease");
    let calls = sim.discovery_calls();
    assert_eq!(calls.len(), before + 1, "{calls:#?}");
    assert_eq!(calls.last().unwrap().vm, 1, "the rival won the round");
    // VM 0 finds nothing due on its next tick: the round is taken.
    sim.tick(0);
    assert_eq!(sim.discovery_calls().len(), before + 1);
}

#[test]
fn a_record_created_by_two_vms_at_once_gives_one_poll() {
    let sim = Sim::new(CONFIG, 2, &NODES);
    // VM 0 finds no record and is about to create one; meanwhile VM 1
    // creates it, and (two ticks of its own) leases the first round.
    let rival = Rc::clone(&sim.vms[1]);
    let process = Rc::clone(&sim.process);
    sim.process.before_set(move |_, _| {
        rival.borrow_mut().on_tick();
        process.advance(100);
        rival.borrow_mut().on_tick();
        true
    });
    sim.tick(0);
    // VM 0's late creation did not reset the record VM 1 leased.
    let record = sim.process.record().expect("a record");
    assert_eq!(record.round, 1, "{record:?}");
    assert_eq!(sim.discovery_calls().len(), 1);
    assert_eq!(sim.discovery_calls()[0].vm, 1);
    sim.run(5_000);
    one_call_per_interval(&sim, 1_000, 6);
}

#[test]
fn every_vm_stops_routing_to_a_node_within_one_tick_of_its_failure() {
    capture_logs();
    let sim = discovered(CONFIG, 5);
    let victim = addr("10.0.0.2:8000");
    sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
    // A request on worker 3 finds the node unreachable: that worker stops
    // using it at once.
    sim.vm(3)
        .borrow_mut()
        .observe(&victim, Outcome::ConnectFailed);
    assert!(!sim.routed(3).contains(&victim));
    assert!(sim.routed(0).contains(&victim), "others learn on a tick");
    // Its next tick publishes it; every other VM's next tick takes it up.
    sim.tick(3);
    let record = sim.process.record().unwrap();
    assert_eq!(record.health[&victim].state, HealthState::Down);
    for vm in [0, 1, 2, 4] {
        sim.tick(vm);
        assert_eq!(sim.routed(vm), [all()[0], all()[2]], "VM {vm}");
    }
    assert_eq!(sim.process.stat("alternator_lb.nodes_marked_down"), Some(1));
    assert_eq!(sim.process.stat("alternator_lb.nodes_down"), Some(1));
    let marked: Vec<String> = logs()
        .into_iter()
        .filter(|l| l.contains("marked Down"))
        .collect();
    assert_eq!(marked.len(), 1, "logged once, by the VM that saw it");
    assert!(marked[0].starts_with("WARN node 10.0.0.2:8000 marked Down"));
}

#[test]
fn a_down_node_is_probed_once_per_period_and_comes_back_everywhere() {
    capture_logs();
    let sim = discovered(CONFIG, 5);
    let victim = addr("10.0.0.2:8000");
    sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
    sim.vm(0)
        .borrow_mut()
        .observe(&victim, Outcome::ConnectFailed);
    sim.run(7_000);
    // Probed every 2 s, by one VM each time, failing while it is dead.
    let probes = sim.probes();
    assert_eq!(probes.len(), 3, "{probes:#?}");
    for pair in probes.windows(2) {
        let gap = pair[1].at_ms - pair[0].at_ms;
        assert!((2_000..2_000 + sim.tick_ms).contains(&gap), "{gap}");
    }
    for vm in 0..5 {
        assert!(!sim.routed(vm).contains(&victim));
    }
    // Alive again: the next probe brings it back, on every VM within a tick.
    sim.cluster.borrow_mut().dead.clear();
    sim.run(2_000 + 2 * sim.tick_ms);
    for vm in 0..5 {
        assert_eq!(sim.routed(vm), all(), "VM {vm}");
    }
    assert_eq!(sim.process.stat("alternator_lb.probe_failures"), Some(3));
    assert_eq!(sim.process.stat("alternator_lb.probe_successes"), Some(1));
    assert!(logs()
        .iter()
        .any(|l| l == "INFO node 10.0.0.2:8000 is back: probe succeeded; routing to it again"));
}

/// Never refuse while nodes are known: with every node Down, requests go
/// to the known nodes anyway, least recently failed first (the node that
/// went Down longest ago), counted apart; one log line when it starts and
/// one when a probe brings a node back, whichever VMs see it.
#[test]
fn with_every_node_down_requests_go_to_the_least_recently_failed_until_one_is_back() {
    capture_logs();
    let sim = discovered(CONFIG, 3);
    sim.cluster.borrow_mut().dead = NODES.iter().map(|n| n.to_string()).collect();
    // They fail one after another, 10.0.0.3 first.
    for node in all().into_iter().rev() {
        sim.vm(1)
            .borrow_mut()
            .observe(&node, Outcome::ConnectFailed);
        sim.run(sim.tick_ms);
    }
    sim.run(300);
    for vm in 0..3 {
        assert!(sim.routed(vm).is_empty(), "VM {vm}");
        assert_eq!(
            sim.vm(vm).borrow().routes.panic_nodes(),
            [all()[2], all()[1], all()[0]],
            "VM {vm}: least recently failed first"
        );
    }
    // Each worker's first request of the episode goes to the node that
    // failed longest ago, the next ones in that order.
    for (id, want) in [(1, 2), (2, 1), (3, 0), (4, 2)] {
        let request = TestStream::default();
        let mut stream = Stream::new(id, sim.vm(2));
        assert_eq!(stream.on_request_headers(&request, true), Action::Continue);
        assert!(request.replies.borrow().is_empty());
        assert_eq!(
            request.handed.borrow()[0],
            crate::filter_state::route_to(&all()[want])
        );
    }
    sim.run(sim.tick_ms);
    assert_eq!(
        sim.process.stat("alternator_lb.requests_routed_panic"),
        Some(4)
    );
    assert_eq!(
        sim.process.stat("alternator_lb.requests_rejected_no_node"),
        Some(0)
    );
    // Discovery still lists them; the list is kept while it fails.
    sim.run(3_000);
    assert_eq!(sim.process.record().unwrap().nodes, all());
    sim.cluster.borrow_mut().dead.clear();
    sim.run(2_500);
    for vm in 0..3 {
        assert_eq!(sim.routed(vm), all(), "VM {vm}");
    }
    let request = TestStream::default();
    let mut stream = Stream::new(9, sim.vm(2));
    assert_eq!(stream.on_request_headers(&request, true), Action::Continue);
    sim.run(sim.tick_ms);
    assert_eq!(
        sim.process.stat("alternator_lb.requests_routed_panic"),
        Some(4)
    );
    let lines = logs();
    let started: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("requests go to them anyway"))
        .collect();
    assert_eq!(started.len(), 1, "{lines:?}");
    assert!(started[0].starts_with(
        "WARN no node of any routing scope can take requests (all 3 known nodes are Down or Quarantined)"
    ));
    let ended = lines
        .iter()
        .filter(|l| l.contains("panic routing ends"))
        .count();
    assert_eq!(ended, 1, "{lines:?}");
}

/// Before anything is discovered, with every seed Down, requests go to the
/// seeds anyway: a filter whose seeds all failed a request once refuses
/// nothing.
#[test]
fn with_every_seed_down_before_discovery_requests_still_go_to_the_seeds() {
    let sim = Sim::new(
        r#"{"seeds": ["10.0.0.1", "10.0.0.2"], "discovery_cluster": "typo"}"#,
        2,
        &NODES,
    );
    sim.run(300);
    for node in [addr("10.0.0.1:8000"), addr("10.0.0.2:8000")] {
        sim.vm(0)
            .borrow_mut()
            .observe(&node, Outcome::ConnectFailed);
    }
    sim.run(300);
    assert!(sim.routed(1).is_empty());
    let request = TestStream::default();
    let mut stream = Stream::new(1, sim.vm(1));
    assert_eq!(stream.on_request_headers(&request, true), Action::Continue);
    assert_eq!(request.handed.borrow().len(), 1);
}

const AFFINITY: &str = r#"{"seeds": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
    "key_route_affinity": "rmw"}"#;

/// What a DescribeTable answer through VM `vm` teaches it.
fn describe_through(vm: Rc<RefCell<VmState>>, table: &str, key: &str) {
    let body = format!(
        r#"{{"Table":{{"TableName":"{table}","KeySchema":[{{"AttributeName":"{key}","KeyType":"HASH"}}]}}}}"#
    );
    let request = TestStream {
        request_headers: vec![("x-amz-target", b"DynamoDB_20120810.DescribeTable".to_vec())],
        response_headers: vec![(":status", b"200".to_vec())],
        response_body: body.into_bytes(),
        ..TestStream::default()
    };
    let mut stream = Stream::new(3, vm);
    assert_eq!(stream.on_request_headers(&request, false), Action::Continue);
    assert_eq!(stream.on_request_body(&request, 30, true), Action::Continue);
    assert_eq!(stream.on_response_headers(&request), Action::Continue);
    let size = request.response_body.len();
    assert_eq!(
        stream.on_response_body(&request, size, false),
        Action::Pause
    );
    assert_eq!(
        stream.on_response_body(&request, size, true),
        Action::Continue
    );
}

#[test]
fn learned_partition_keys_reach_every_vm() {
    let sim = discovered(AFFINITY, 5);
    describe_through(sim.vm(2), "orders", "order_id");
    assert_eq!(
        sim.vm(2).borrow().mailbox.tables().pk_name("orders"),
        Some("order_id")
    );
    assert_eq!(sim.vm(0).borrow().mailbox.tables().pk_name("orders"), None);
    sim.tick(2);
    for vm in 0..5 {
        sim.tick(vm);
        assert_eq!(
            sim.vm(vm).borrow().mailbox.tables().pk_name("orders"),
            Some("order_id"),
            "VM {vm}"
        );
    }
}

#[test]
fn keys_learned_by_two_vms_at_once_are_both_kept() {
    let sim = discovered(AFFINITY, 3);
    describe_through(sim.vm(0), "orders", "order_id");
    describe_through(sim.vm(1), "users", "user_id");
    // VM 1 publishes its key between VM 0's read of the entry and its
    // write, and the entry does not exist yet: both create it.
    let rival = Rc::clone(&sim.vms[1]);
    sim.process.before_set(move |key, _| {
        if !key.ends_with(".tables") {
            return false;
        }
        rival.borrow_mut().on_tick();
        true
    });
    sim.tick(0);
    sim.tick(2);
    let vm = sim.vm(2);
    let vm = vm.borrow();
    assert_eq!(vm.mailbox.tables().pk_name("orders"), Some("order_id"));
    assert_eq!(vm.mailbox.tables().pk_name("users"), Some("user_id"));
}

#[test]
fn a_damaged_record_is_replaced_and_discovery_carries_on() {
    capture_logs();
    let sim = discovered(CONFIG, 2);
    let key = sim
        .process
        .keys()
        .into_iter()
        .find(|k| !k.ends_with(".tables"))
        .unwrap();
    use crate::host::Host;
    let host = crate::testing::TestHost {
        process: Rc::clone(&sim.process),
        vm: 9,
    };
    host.shared_set(&key, b"garbage", None).unwrap();
    sim.run(3_000);
    assert_eq!(sim.process.record().unwrap().nodes, all());
    let warned: Vec<String> = logs()
        .into_iter()
        .filter(|l| l.contains("corrupt shared state"))
        .collect();
    // The first VM to read it replaces it; the others read the replacement.
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(sim.routed(0) == all() && sim.routed(1) == all());
}

#[test]
fn a_changed_list_reaches_every_vm_and_new_nodes_wait_for_a_probe() {
    let sim = discovered(CONFIG, 4);
    sim.cluster.borrow_mut().listed.push("10.0.0.4".into());
    sim.run(1_000 + sim.tick_ms);
    let record = sim.process.record().unwrap();
    let newcomer = addr("10.0.0.4:8000");
    assert_eq!(record.nodes.len(), 4);
    // Quarantined until its probe (every 1 s) passes, then everywhere.
    sim.run(1_100 + sim.tick_ms);
    for vm in 0..4 {
        assert!(sim.routed(vm).contains(&newcomer), "VM {vm}");
    }
    sim.cluster.borrow_mut().listed.retain(|n| n != "10.0.0.1");
    sim.run(1_000 + sim.tick_ms);
    for vm in 0..4 {
        assert!(!sim.routed(vm).contains(&addr("10.0.0.1:8000")), "VM {vm}");
    }
}

/// A conditional write's request, as Envoy shows its headers.
fn conditional_write() -> Rc<TestStream> {
    let body = br#"{"TableName":"orders","Item":{"order_id":{"S":"o-1"}},"ConditionExpression":"attribute_not_exists(order_id)"}"#;
    Rc::new(TestStream {
        request_headers: vec![
            ("x-amz-target", b"DynamoDB_20120810.PutItem".to_vec()),
            ("content-length", body.len().to_string().into_bytes()),
        ],
        request_body: body.to_vec(),
        ..TestStream::default()
    })
}

/// A conditional write on VM 0 whose headers came without its body: held.
fn hold_write(sim: &Sim, id: u32) -> (Rc<TestStream>, Stream) {
    hold_write_on(sim, 0, id)
}

/// The same on VM `vm`, its headers read now (the request's clock: the
/// host's, which the VM makes its own).
fn hold_write_on(sim: &Sim, vm: usize, id: u32) -> (Rc<TestStream>, Stream) {
    let request = conditional_write();
    request.now_ns.set(sim.process.wall_ms() * 1_000_000);
    sim.process.start_stream(id, &request);
    let mut stream = Stream::new(id, sim.vm(vm));
    assert_eq!(
        stream.on_request_headers(request.as_ref(), false),
        Action::Pause
    );
    (request, stream)
}

/// Whether VM `vm` holds a conditional write now (it is let go at once).
fn holds_writes(sim: &Sim, vm: usize) -> bool {
    let later = conditional_write();
    let mut stream = Stream::new(900 + vm as u32, sim.vm(vm));
    match stream.on_request_headers(later.as_ref(), false) {
        Action::Pause => true,
        Action::Continue => {
            assert_eq!(later.handed.borrow().len(), 1, "sent on at once");
            false
        }
    }
}

/// A held write on VM `vm` whose body never comes: sent on, without
/// affinity, within the timeout and a tick, and answered.
fn time_out(sim: &Sim, vm: usize, id: u32) {
    let (request, mut stream) = hold_write_on(sim, vm, id);
    sim.run(HOLD_TIMEOUT_MS - sim.tick_ms);
    assert!(request.handed.borrow().is_empty(), "not before the timeout");
    sim.run(2 * sim.tick_ms);
    assert_eq!(request.handed.borrow().len(), 1, "sent on, once");
    assert_eq!(request.resumed.get(), 1);
    assert!(request.replies.borrow().is_empty());
    // Its answer is attributed to the node it went to.
    assert_eq!(
        stream.on_response_headers(request.as_ref()),
        Action::Continue
    );
    sim.process.end_stream(id);
}

fn stop_warnings() -> usize {
    logs()
        .iter()
        .filter(|l| l.contains("got no body within 300 ms"))
        .count()
}

const HOLDING: &str = r#"{"seeds": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
    "key_route_affinity": "rmw", "partition_keys": {"orders": "order_id"}}"#;

#[test]
fn a_vm_stops_holding_after_three_timeouts_when_it_never_saw_a_body() {
    capture_logs();
    let sim = discovered(HOLDING, 3);
    // Envoy without allow_on_headers_stop_iteration never calls with the
    // body: each held write waits the timeout, and is sent on.
    for i in 0..TIMEOUTS_TO_STOP {
        assert!(sim.vm(0).borrow().may_hold(), "before timeout {i}");
        time_out(&sim, 0, 40 + i);
    }
    let warned: Vec<String> = logs()
        .into_iter()
        .filter(|l| l.contains("got no body within 300 ms"))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("allow_on_headers_stop_iteration"));
    assert!(warned[0].contains("3 writes in a row"));
    sim.run(sim.tick_ms * 2);
    assert_eq!(
        sim.process.stat("alternator_lb.requests_hold_timeout"),
        Some(3)
    );
    assert_eq!(sim.process.stat("alternator_lb.affinity_held"), Some(3));
    // VM 0 now sends writes on at once; the other VMs decide on their own
    // evidence, and have none.
    assert!(!holds_writes(&sim, 0));
    assert!(holds_writes(&sim, 1));
    assert!(holds_writes(&sim, 2));
    assert_eq!(stop_warnings(), 1);
}

/// A step of the host's clock, either way, before a write is held or
/// while it is: it is sent on at the hold timeout, neither an hour late
/// nor at once (issue 18, item 6).
#[test]
fn a_clock_step_neither_holds_a_write_back_nor_lets_it_go_early() {
    for (step, while_held) in [
        (-HOUR_MS, false),
        (-HOUR_MS, true),
        (HOUR_MS, false),
        (HOUR_MS, true),
    ] {
        let case = format!("step {step} ms while held: {while_held}");
        let sim = discovered(HOLDING, 1);
        if !while_held {
            sim.process.step(step);
            sim.run(sim.tick_ms);
        }
        let (request, _stream) = hold_write(&sim, 60);
        sim.run(sim.tick_ms);
        if while_held {
            sim.process.step(step);
        }
        // A jump counts as a tick: at most a tick early.
        sim.run(HOLD_TIMEOUT_MS - 3 * sim.tick_ms);
        assert!(
            request.handed.borrow().is_empty(),
            "{case}: before the timeout"
        );
        sim.run(3 * sim.tick_ms);
        assert_eq!(
            request.handed.borrow().len(),
            1,
            "{case}: sent on at the timeout"
        );
    }
}

#[test]
fn a_vm_that_saw_a_body_never_stops_holding() {
    capture_logs();
    let sim = discovered(HOLDING, 1);
    let (request, mut stream) = hold_write(&sim, 50);
    let size = request.request_body.len();
    assert_eq!(
        stream.on_request_body(request.as_ref(), size, true),
        Action::Continue
    );
    sim.process.end_stream(50);
    for i in 0..2 * TIMEOUTS_TO_STOP {
        time_out(&sim, 0, 51 + i);
    }
    assert!(holds_writes(&sim, 0));
    assert_eq!(stop_warnings(), 0);
    sim.run(sim.tick_ms * 2);
    assert_eq!(
        sim.process.stat("alternator_lb.requests_hold_timeout"),
        Some(6)
    );
}

/// A held write whose body comes 700 ms after its headers (a slow
/// client): sent on without affinity at the timeout, its body then passed
/// on. Returns once it was answered.
fn slow_write(sim: &Sim, id: u32) {
    let (request, mut stream) = hold_write(sim, id);
    sim.run(HOLD_TIMEOUT_MS + sim.tick_ms);
    assert_eq!(request.handed.borrow().len(), 1, "sent on without affinity");
    sim.run(700 - HOLD_TIMEOUT_MS - sim.tick_ms);
    let size = request.request_body.len();
    assert_eq!(
        stream.on_request_body(request.as_ref(), size, true),
        Action::Continue
    );
    assert_eq!(request.handed.borrow().len(), 1, "not routed twice");
    assert_eq!(
        stream.on_response_headers(request.as_ref()),
        Action::Continue
    );
    sim.process.end_stream(id);
}

#[test]
fn one_slow_client_leaves_holding_on() {
    capture_logs();
    let sim = discovered(HOLDING, 1);
    slow_write(&sim, 60);
    assert!(holds_writes(&sim, 0));
    // A body that comes in time after it: holding for good, however many
    // slow writes follow.
    let (request, mut stream) = hold_write(&sim, 61);
    let size = request.request_body.len();
    assert_eq!(
        stream.on_request_body(request.as_ref(), size, true),
        Action::Continue
    );
    sim.process.end_stream(61);
    for i in 0..2 * TIMEOUTS_TO_STOP {
        slow_write(&sim, 62 + i);
    }
    assert!(holds_writes(&sim, 0));
    assert_eq!(stop_warnings(), 0);
    sim.run(sim.tick_ms * 2);
    assert_eq!(
        sim.process.stat("alternator_lb.requests_hold_timeout"),
        Some(1 + 2 * i64::from(TIMEOUTS_TO_STOP))
    );
}

#[test]
fn a_body_that_comes_after_its_write_was_sent_on_is_no_evidence() {
    // Envoy without allow_on_headers_stop_iteration hands the body over
    // once the write goes on: on a VM that never saw a body while holding,
    // three such writes stop holding as any three timeouts do.
    capture_logs();
    let sim = discovered(HOLDING, 1);
    for i in 0..TIMEOUTS_TO_STOP {
        assert!(sim.vm(0).borrow().may_hold());
        slow_write(&sim, 70 + i);
    }
    assert!(!holds_writes(&sim, 0));
    assert_eq!(stop_warnings(), 1);
}

#[test]
fn a_vm_that_stopped_holding_tries_again_after_a_minute() {
    capture_logs();
    let sim = discovered(HOLDING, 1);
    for i in 0..TIMEOUTS_TO_STOP {
        time_out(&sim, 0, 170 + i);
    }
    assert!(!holds_writes(&sim, 0));
    sim.run(RETRY_AFTER_MS - 3 * sim.tick_ms);
    assert!(!holds_writes(&sim, 0), "not before a minute");
    sim.run(3 * sim.tick_ms);
    // A minute on, one held write: it times out too, and holding stops at
    // once (the last three held writes all timed out), without a new line.
    time_out(&sim, 0, 80);
    assert!(!holds_writes(&sim, 0));
    assert_eq!(stop_warnings(), 1);
    // A minute later again, and this time the body comes: holding for good.
    sim.run(RETRY_AFTER_MS);
    let (request, mut stream) = hold_write(&sim, 81);
    let size = request.request_body.len();
    assert_eq!(
        stream.on_request_body(request.as_ref(), size, true),
        Action::Continue
    );
    sim.process.end_stream(81);
    for i in 0..TIMEOUTS_TO_STOP {
        time_out(&sim, 0, 82 + i);
    }
    assert!(holds_writes(&sim, 0));
}

#[test]
fn a_body_a_millisecond_after_its_headers_is_not_late() {
    // 10 s rounds: 1 s ticks, far longer than the hold timeout.
    let config = r#"{"seeds": ["10.0.0.1", "10.0.0.2", "10.0.0.3"], "refresh_interval_ms": 10000,
        "key_route_affinity": "rmw", "partition_keys": {"orders": "order_id"}}"#;
    let sim = Sim::new(config, 1, &NODES);
    sim.run(2_500);
    assert_eq!(sim.routed(0), all());
    assert_eq!(sim.tick_ms, 1_000);
    // The headers come a millisecond before the VM's tick ...
    sim.run(sim.next_tick(0) - sim.process.now_ms() - 1);
    let (request, mut stream) = hold_write(&sim, 90);
    sim.run(1);
    assert!(
        request.handed.borrow().is_empty(),
        "held still after the tick"
    );
    // ... and the body right after it.
    let size = request.request_body.len();
    assert_eq!(
        stream.on_request_body(request.as_ref(), size, true),
        Action::Continue
    );
    assert_eq!(request.handed.borrow().len(), 1);
    assert_eq!(request.resumed.get(), 0, "never sent on by the tick");
    sim.run(2 * sim.tick_ms);
    assert_eq!(
        sim.process.stat("alternator_lb.requests_hold_timeout"),
        Some(0)
    );
    assert_eq!(
        sim.process.stat("alternator_lb.affinity_routed_by_key"),
        Some(1)
    );
}

#[test]
fn a_body_that_starts_in_time_keeps_its_write_held_however_slow_it_is() {
    let sim = discovered(HOLDING, 2);
    let (request, mut stream) = hold_write(&sim, 50);
    sim.run(sim.tick_ms);
    let size = request.request_body.len();
    assert_eq!(
        stream.on_request_body(request.as_ref(), 10, false),
        Action::Pause
    );
    // The rest comes much later: the write waits for it, by its key.
    sim.run(5 * HOLD_TIMEOUT_MS);
    assert!(request.handed.borrow().is_empty());
    assert_eq!(
        stream.on_request_body(request.as_ref(), size, true),
        Action::Continue
    );
    assert_eq!(request.handed.borrow().len(), 1);
    assert_eq!(request.resumed.get(), 0);
    sim.run(sim.tick_ms * 2);
    assert_eq!(
        sim.process.stat("alternator_lb.requests_hold_timeout"),
        Some(0)
    );
    assert_eq!(
        sim.process.stat("alternator_lb.affinity_routed_by_key"),
        Some(1)
    );
    // Holding goes on.
    let next = conditional_write();
    let mut stream = Stream::new(51, sim.vm(1));
    assert_eq!(
        stream.on_request_headers(next.as_ref(), false),
        Action::Pause
    );
}

#[test]
fn a_held_write_that_ends_before_its_body_is_forgotten() {
    capture_logs();
    let sim = discovered(HOLDING, 1);
    let (request, stream) = hold_write(&sim, 60);
    // The client gives up: Envoy deletes the context.
    drop(stream);
    sim.process.end_stream(60);
    sim.run(3 * HOLD_TIMEOUT_MS);
    assert!(request.handed.borrow().is_empty());
    assert!(!logs().iter().any(|l| l.contains("got no body")));
    sim.run(sim.tick_ms);
    assert_eq!(
        sim.process.stat("alternator_lb.requests_hold_timeout"),
        Some(0)
    );
}

#[test]
fn a_stat_prefix_names_every_stat_of_its_instance() {
    let sim = Sim::new(
        r#"{"seeds": ["10.0.0.1", "10.0.0.2", "10.0.0.3"], "stat_prefix": "orders"}"#,
        2,
        &NODES,
    );
    sim.run(2_500);
    assert_eq!(
        sim.process.stat("alternator_lb.orders.discovery_successes"),
        Some(3)
    );
    assert_eq!(
        sim.process.stat("alternator_lb.orders.nodes_known"),
        Some(3)
    );
    assert_eq!(sim.process.stat("alternator_lb.discovery_successes"), None);
    // The latency of each call went into the histogram (the simulated
    // cluster answers after 3 ms).
    assert_eq!(
        sim.process
            .samples("alternator_lb.orders.discovery_latency_ms"),
        [3, 3, 3]
    );
}

const REFUSED: &str = "alternator_lb.discovery_entries_refused";

/// The addresses no answer may send the filter to, with seeds that are not
/// loopback; each is the form a hostile answer could use.
const HOSTILE: [&str; 6] = [
    "fe80::1",
    "169.254.169.254",
    "::ffff:169.254.169.254",
    "127.0.0.1",
    "::1",
    "224.0.0.1",
];

#[test]
fn refused_entries_are_dropped_counted_and_never_contacted() {
    capture_logs();
    let mut listed: Vec<&str> = NODES.to_vec();
    listed.extend(HOSTILE);
    let sim = Sim::new(CONFIG, 3, &listed);
    sim.run(5_500);
    for vm in 0..3 {
        assert_eq!(sim.routed(vm), all(), "VM {vm}");
    }
    let rounds = sim.discovery_calls().len() as i64;
    assert!(rounds >= 5, "{rounds}");
    assert_eq!(sim.process.stat(REFUSED), Some(6 * rounds));
    assert_eq!(
        sim.process.stat("alternator_lb.discovery_successes"),
        Some(rounds)
    );
    let calls = sim.process.calls.borrow().clone();
    for call in &calls {
        assert!(NODES.iter().any(|n| call.to(n)), "{call:?}");
    }
    // Named in the warning about the entries, once per VM that polled: the
    // list of dropped entries stays the same from answer to answer.
    let warned: Vec<String> = logs()
        .into_iter()
        .filter(|l| l.contains("unusable entries, ignored"))
        .collect();
    let pollers: std::collections::BTreeSet<usize> =
        sim.discovery_calls().iter().map(|c| c.vm).collect();
    assert_eq!(warned.len(), pollers.len(), "{warned:?}");
    for refusal in [
        "fe80::1 is link-local, refused",
        "169.254.169.254 is link-local, refused",
        "127.0.0.1 is loopback, refused as no seed is loopback",
        "::1 is loopback, refused as no seed is loopback",
        "224.0.0.1 is not a unicast address",
    ] {
        assert!(warned[0].contains(refusal), "{refusal}: {}", warned[0]);
    }
    assert!(warned[0].starts_with("WARN /localnodes from 10.0.0."));
    assert!(warned[0].contains("had 6 unusable entries"));
}

#[test]
fn loopback_seeds_let_loopback_answers_through_but_not_link_local_ones() {
    let config = r#"{"seeds": ["127.0.0.1"]}"#;
    let sim = Sim::new(config, 2, &["127.0.0.1", "127.0.0.2", "::1", "fe80::1"]);
    sim.run(2_500);
    let want = vec![
        addr("127.0.0.1:8000"),
        addr("127.0.0.2:8000"),
        addr("[::1]:8000"),
    ];
    assert_eq!(sim.routed(0), want);
    assert_eq!(sim.routed(1), want);
    let rounds = sim.discovery_calls().len() as i64;
    assert_eq!(sim.process.stat(REFUSED), Some(rounds));
    assert!(sim.process.calls.borrow().iter().all(|c| !c.to("fe80::1")));
}

#[test]
fn an_answer_naming_only_refused_addresses_keeps_the_list_and_counts() {
    capture_logs();
    let sim = discovered(CONFIG, 2);
    let before = sim.process.stat(REFUSED).unwrap_or(0);
    assert_eq!(before, 0);
    sim.cluster.borrow_mut().listed = vec!["fe80::1".into(), "169.254.169.254".into()];
    sim.run(3_000);
    assert_eq!(sim.process.record().unwrap().nodes, all());
    assert_eq!(sim.routed(0), all());
    let failed = sim.discovery_calls().len() as i64 - 1;
    assert!(failed >= 2, "{failed}");
    assert_eq!(sim.process.stat(REFUSED), Some(2 * failed));
    assert_eq!(
        sim.process.stat("alternator_lb.discovery_failures"),
        Some(failed)
    );
    let line = logs()
        .into_iter()
        .find(|l| l.contains("failed:"))
        .expect("a failure logged");
    assert!(
        line.contains(
            "failed: answer has no valid IP entry (2 dropped, e.g. fe80::1 is link-local, refused); \
             keeping the last good list of 3 nodes"
        ),
        "{line}"
    );
}

/// One VM whose only seed, 10.0.0.1, is set up by `setup`; the first
/// discovery failure's log line, after `ms`.
fn first_failure(setup: impl FnOnce(&Sim), ms: u64) -> String {
    capture_logs();
    let sim = Sim::new(r#"{"seeds": ["10.0.0.1"]}"#, 1, &NODES);
    setup(&sim);
    sim.run(ms);
    let failures: Vec<String> = logs()
        .into_iter()
        .filter(|l| l.contains("failed:"))
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let line = failures[0].clone();
    let prefix = "WARN /localnodes from 10.0.0.1:8000 (the asked node's dc) failed: ";
    let rest = line
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{line}"));
    let suffix = "; no node discovered yet (1 failures in a row; further failures are logged every 60 attempts)";
    rest.strip_suffix(suffix)
        .unwrap_or_else(|| panic!("{line}"))
        .to_string()
}

#[test]
fn discovery_failures_say_what_happened() {
    let refused = first_failure(
        |sim| sim.cluster.borrow_mut().dead.push("10.0.0.1".into()),
        500,
    );
    assert_eq!(
        refused,
        r#"connection failed or reset before an answer (Envoy: "remote connection failure")"#
    );
    // The node takes the connection and never answers: Envoy answers 504
    // at the 2 s timeout.
    let silent = first_failure(
        |sim| sim.cluster.borrow_mut().silent.push("10.0.0.1".into()),
        2_500,
    );
    assert_eq!(
        silent,
        "timed out: no answer within discovery_timeout_ms (2000 ms)"
    );
    let status = first_failure(
        |sim| {
            let body = br#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"boom
on two lines"}"#;
            sim.cluster
                .borrow_mut()
                .failing
                .push(("10.0.0.1".into(), 500, body.to_vec()));
        },
        500,
    );
    assert_eq!(
        status,
        r#"answered HTTP 500: "{\"__type\":\"com.amazonaws.dynamodb.v20120810#InternalServerError\",\"message\":\"boom\non two lines\"}""#
    );
    // A node's own 504, well before the timeout, is what it is.
    let early = first_failure(
        |sim| {
            let body = ENVOY_TIMEOUT.as_bytes().to_vec();
            sim.cluster
                .borrow_mut()
                .failing
                .push(("10.0.0.1".into(), 504, body));
        },
        500,
    );
    assert_eq!(early, r#"answered HTTP 504: "upstream request timeout""#);
    // A page of HTML is cut, on one line.
    let page = first_failure(
        |sim| {
            let body = "<html><body>\n".repeat(500).into_bytes();
            sim.cluster
                .borrow_mut()
                .failing
                .push(("10.0.0.1".into(), 503, body));
        },
        500,
    );
    assert!(
        page.starts_with(r#"answered HTTP 503 with a 6500-byte body starting "<html><body>\n"#),
        "{page}"
    );
    assert!(page.len() < 200 && !page.contains('\n'), "{page}");
}

/// The pending `/localnodes` call of a single VM that never gets answers
/// by itself.
fn unanswered_call(sim: &Sim) -> crate::testing::Call {
    for _ in 0..1_000 {
        sim.run(1);
        let pending = sim.process.pending();
        if let Some(call) = pending.first() {
            assert_eq!(pending.len(), 1, "{pending:?}");
            assert_eq!(call.at_ms, sim.process.now_ms());
            return call.clone();
        }
    }
    panic!("no call within 1 s");
}

#[test]
fn a_headerless_answer_is_a_timeout_only_after_the_timeout() {
    for (after_ms, want) in [
        (3, "connection failed or reset before an answer"),
        (1_500, "connection failed or reset before an answer"),
        (
            2_000,
            "timed out: no answer within discovery_timeout_ms (2000 ms)",
        ),
    ] {
        capture_logs();
        let mut sim = Sim::new(r#"{"seeds": ["10.0.0.1"]}"#, 1, &NODES);
        sim.latency_ms = u64::MAX / 2;
        let call = unanswered_call(&sim);
        assert_eq!(call.timeout_ms, 2_000);
        sim.pass(call.at_ms + after_ms - sim.process.now_ms());
        sim.answer(&call, Reply(None));
        let line = logs()
            .into_iter()
            .find(|l| l.contains("failed:"))
            .expect("a failure logged");
        assert!(
            line.contains(&format!("(the asked node's dc) failed: {want}; no node")),
            "after {after_ms} ms: {line}"
        );
    }
}

#[test]
fn the_timeout_is_the_configured_one() {
    capture_logs();
    let sim = Sim::new(
        r#"{"seeds": ["10.0.0.1"], "discovery_timeout_ms": 250}"#,
        1,
        &NODES,
    );
    sim.cluster.borrow_mut().silent.push("10.0.0.1".into());
    sim.run(1_000);
    let call = &sim.discovery_calls()[0];
    assert_eq!(call.timeout_ms, 250);
    assert!(logs()
        .iter()
        .any(|l| l.contains("failed: timed out: no answer within discovery_timeout_ms (250 ms)")));
}

#[test]
fn probe_failures_are_logged_at_debug_with_the_same_words() {
    capture_logs();
    let sim = discovered(CONFIG, 2);
    let victim = addr("10.0.0.2:8000");
    sim.vm(0)
        .borrow_mut()
        .observe(&victim, Outcome::ConnectFailed);
    sim.cluster
        .borrow_mut()
        .failing
        .push(("10.0.0.2".into(), 500, b"internal error".to_vec()));
    sim.run(2_500);
    sim.cluster.borrow_mut().failing.clear();
    sim.cluster.borrow_mut().silent.push("10.0.0.2".into());
    sim.run(4_500);
    sim.cluster.borrow_mut().silent.clear();
    sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
    sim.run(2_500);
    let probes: Vec<String> = logs()
        .into_iter()
        .filter(|l| l.contains("probe of"))
        .collect();
    let prefix = "DEBUG probe of Down node 10.0.0.2:8000: ";
    for want in [
        r#"answered HTTP 500: "internal error""#,
        "timed out: no answer within discovery_timeout_ms (2000 ms)",
        r#"connection failed or reset before an answer (Envoy: "remote connection failure")"#,
    ] {
        assert!(
            probes.contains(&format!("{prefix}{want}")),
            "{want}: {probes:#?}"
        );
    }
    assert!(!sim.routed(0).contains(&victim));
}

/// The shipped defaults: 1 s rounds, Down nodes probed after 1 s, then at
/// doubling waits up to 30 s.
const DEFAULTS: &str = r#"{"seeds": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}"#;

fn probes_of(sim: &Sim, node: &str) -> Vec<crate::testing::Call> {
    sim.probes()
        .into_iter()
        .filter(|c| c.node == node)
        .collect()
}

/// Runs the simulation until every VM routes `node` again, at most
/// `limit_ms`; returns how long that took, if it happened.
fn until_routed_everywhere(sim: &Sim, node: NodeAddr, limit_ms: u64) -> Option<u64> {
    for elapsed in 0..=limit_ms {
        if (0..sim.vms.len()).all(|vm| sim.routed(vm).contains(&node)) {
            return Some(elapsed);
        }
        sim.run(1);
    }
    None
}

/// A restart: the node stops (a request finds its connect refused), comes
/// back 3 s later, and is routed by every VM within 5 s of serving again,
/// whatever the outage's phase against the probes (outages of 2.5 to
/// 3.5 s, each starting at another point of the tick cycle).
#[test]
fn a_node_down_for_three_seconds_is_back_everywhere_within_five() {
    let victim = addr("10.0.0.2:8000");
    let mut worst = 0;
    for (i, outage) in (2_500..=3_500).step_by(100).enumerate() {
        let sim = discovered(DEFAULTS, 5);
        sim.run(i as u64 * 37);
        sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
        sim.vm(i % 5)
            .borrow_mut()
            .observe(&victim, Outcome::ConnectFailed);
        sim.run(outage);
        assert!(
            (0..5).all(|vm| !sim.routed(vm).contains(&victim)),
            "out everywhere during the outage"
        );
        sim.cluster.borrow_mut().dead.clear();
        let back = until_routed_everywhere(&sim, victim, 5_000)
            .unwrap_or_else(|| panic!("a {outage} ms outage: not back within 5 s"));
        worst = worst.max(back);
        let probes: Vec<u64> = probes_of(&sim, "10.0.0.2:8000")
            .iter()
            .map(|c| c.at_ms)
            .collect();
        println!("outage {outage} ms: back everywhere {back} ms after serving again; probes at {probes:?}");
    }
    println!("worst: {worst} ms");
}

/// Probes of a Down node come 1, 2, 4, 8, 16 s apart, then every 30 s:
/// one at a time, whichever of 5 VMs leases it, never two in one wait.
#[test]
fn down_probes_back_off_one_two_four_seconds_up_to_the_period_across_five_vms() {
    let sim = discovered(DEFAULTS, 5);
    let victim = addr("10.0.0.2:8000");
    sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
    sim.vm(4)
        .borrow_mut()
        .observe(&victim, Outcome::ConnectFailed);
    sim.tick(4);
    let down_at = sim.process.now_ms();
    assert_eq!(
        sim.process.record().unwrap().health[&victim].state,
        HealthState::Down
    );
    sim.run(125_000);
    let probes = probes_of(&sim, "10.0.0.2:8000");
    let mut at = vec![down_at];
    at.extend(probes.iter().map(|c| c.at_ms));
    let waits: Vec<u64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    let expected = [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000];
    assert_eq!(waits.len(), expected.len(), "{waits:?}");
    for (wait, want) in waits.iter().zip(expected) {
        // Leased on the first tick at or after the due time.
        assert!(
            (want..want + sim.tick_ms + 5).contains(wait),
            "waits {waits:?}"
        );
    }
    for vm in 0..5 {
        assert!(!sim.routed(vm).contains(&victim), "VM {vm}");
    }
    assert_eq!(sim.process.stat("alternator_lb.probe_failures"), Some(8));
}

/// Resets on reused connections happen to healthy nodes: fewer than
/// `down_after_resets` (3) in a row on each VM leave the node routed
/// everywhere, and an answer starts the count over.
#[test]
fn resets_below_the_threshold_leave_the_node_routed_on_every_vm() {
    capture_logs();
    let sim = discovered(DEFAULTS, 5);
    let victim = addr("10.0.0.2:8000");
    for vm in 0..5 {
        for _ in 0..2 {
            sim.vm(vm).borrow_mut().observe(&victim, Outcome::Reset);
        }
    }
    sim.run(1_000);
    for vm in 0..5 {
        assert_eq!(sim.routed(vm), all(), "VM {vm}");
    }
    assert!(sim.process.record().unwrap().health.is_empty());
    // An answer on VM 1 clears its count: two more resets are still fine.
    sim.vm(1).borrow_mut().observe(&victim, Outcome::Answered);
    for _ in 0..2 {
        sim.vm(1).borrow_mut().observe(&victim, Outcome::Reset);
    }
    sim.run(1_000);
    for vm in 0..5 {
        assert_eq!(sim.routed(vm), all(), "VM {vm}");
    }
    assert_eq!(sim.process.stat("alternator_lb.nodes_marked_down"), Some(0));
    // The third in a row takes it out: at once on VM 1, within a tick on
    // the others.
    sim.vm(1).borrow_mut().observe(&victim, Outcome::Reset);
    assert!(!sim.routed(1).contains(&victim));
    sim.run(2 * sim.tick_ms);
    for vm in 0..5 {
        assert!(!sim.routed(vm).contains(&victim), "VM {vm}");
    }
    assert_eq!(sim.process.stat("alternator_lb.nodes_marked_down"), Some(1));
    assert!(
        logs().iter().any(|l| l.starts_with(
            "WARN node 10.0.0.2:8000 marked Down: its connections were reset before any response (3 in a row)"
        )),
        "{:?}",
        logs()
    );
}

/// A Down node that `/localnodes` stops listing keeps its history, unprobed
/// while unlisted; listed again (still not serving) it is still Down on its
/// backoff: probed once at once, since its probe came due meanwhile, then
/// every 30 s, not every second like a newcomer. Serving again, it is back
/// at its next probe.
#[test]
fn a_node_listed_again_after_dropping_out_keeps_its_down_history() {
    // The shipped defaults, never idle within the test.
    let config = r#"{"seeds": ["10.0.0.1", "10.0.0.2", "10.0.0.3"], "idle_after_ms": 600000}"#;
    let sim = discovered(config, 3);
    let victim = addr("10.0.0.2:8000");
    sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
    sim.vm(0)
        .borrow_mut()
        .observe(&victim, Outcome::ConnectFailed);
    sim.run(40_000);
    let record = sim.process.record().unwrap();
    assert_eq!(record.health[&victim].state, HealthState::Down);
    assert_eq!(record.health[&victim].wait_ms, 30_000, "backed off");
    // The cluster drops it from /localnodes: kept aside, not probed.
    sim.cluster.borrow_mut().listed.retain(|n| n != "10.0.0.2");
    sim.run(2_000);
    let before = probes_of(&sim, "10.0.0.2:8000").len();
    sim.run(40_000);
    assert_eq!(probes_of(&sim, "10.0.0.2:8000").len(), before);
    let record = sim.process.record().unwrap();
    assert!(!record.nodes.contains(&victim));
    assert_eq!(record.health[&victim].state, HealthState::Down);
    assert_eq!(sim.process.stat("alternator_lb.nodes_down"), Some(0));
    // Listed again, still not serving: Down, probed once, then 30 s later.
    sim.cluster.borrow_mut().listed.push("10.0.0.2".into());
    sim.run(1_000 + 2 * sim.tick_ms);
    let record = sim.process.record().unwrap();
    assert_eq!(record.health[&victim].state, HealthState::Down);
    assert_eq!(probes_of(&sim, "10.0.0.2:8000").len(), before + 1);
    sim.run(20_000);
    assert_eq!(probes_of(&sim, "10.0.0.2:8000").len(), before + 1);
    for vm in 0..3 {
        assert!(!sim.routed(vm).contains(&victim), "VM {vm}");
    }
    // Serving: back at its next probe.
    sim.cluster.borrow_mut().dead.clear();
    let back = until_routed_everywhere(&sim, victim, 10_000 + 2 * sim.tick_ms);
    assert!(back.is_some(), "not back at its next probe");
}

/// A `discovery_cluster` that names no cluster (a typo Envoy's validation
/// cannot see): every `/localnodes` call fails before it is made, yet the
/// seeds answer requests. A discovery failure is not a node failure: the
/// seeds keep taking requests on every VM, and the failures are logged and
/// counted as ever.
#[test]
fn a_failing_discovery_never_takes_the_seeds_out_of_routing() {
    capture_logs();
    let config = r#"{"seeds": ["10.0.0.1", "10.0.0.2"], "discovery_cluster": "typo"}"#;
    let sim = Sim::new(config, 3, &NODES);
    sim.run(5_000);
    let seeds = vec![addr("10.0.0.1:8000"), addr("10.0.0.2:8000")];
    for vm in 0..3 {
        assert_eq!(sim.routed(vm), seeds, "VM {vm}");
    }
    let failures = sim
        .process
        .stat("alternator_lb.discovery_failures")
        .unwrap();
    assert!(failures >= 4, "{failures} failures counted");
    let record = sim.process.record().unwrap();
    assert!(!record.discovered());
    assert!(record.has_failed(&seeds[0]) && record.has_failed(&seeds[1]));
    assert!(
        logs()
            .iter()
            .any(|l| l.contains("could not call cluster \"typo\"")),
        "{:?}",
        logs()
    );
    // Requests go to the seeds.
    let request = TestStream::default();
    let mut stream = Stream::new(1, sim.vm(1));
    assert_eq!(stream.on_request_headers(&request, true), Action::Continue);
    assert_eq!(request.handed.borrow().len(), 1);
}

/// Two filter instances (or a configuration being changed) with different
/// `allowed_cidrs` in one Envoy: each keeps its own record, so neither
/// routes over a list the other's ranges let through.
#[test]
fn filters_with_different_allowed_ranges_keep_separate_records() {
    let narrow = r#"{"seeds": ["10.0.0.1"], "allowed_cidrs": ["10.0.0.0/16"]}"#;
    let wide = r#"{"seeds": ["10.0.0.1"], "allowed_cidrs": ["10.0.0.0/8"]}"#;
    let listed = ["10.0.0.1", "10.0.0.2", "10.1.0.4"];
    let sim = Sim::with_configs(&[narrow, wide, narrow, wide], &listed);
    sim.run(3_000);
    let records: Vec<String> = sim
        .process
        .keys()
        .into_iter()
        .filter(|k| !k.ends_with(".tables") && !k.ends_with(".nohold"))
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    let outsider = addr("10.1.0.4:8000");
    for vm in [0, 2] {
        assert_eq!(
            sim.routed(vm),
            [addr("10.0.0.1:8000"), addr("10.0.0.2:8000")],
            "VM {vm}"
        );
    }
    for vm in [1, 3] {
        assert!(sim.routed(vm).contains(&outsider), "VM {vm}");
    }
}

/// Shared data has no owner: whatever a record lists, every VM checks it
/// against its own rules and never routes, probes or asks a node they
/// refuse.
#[test]
fn every_vm_rechecks_the_records_nodes_against_its_own_rules() {
    capture_logs();
    let config = r#"{"seeds": ["10.0.0.1"], "allowed_cidrs": ["10.0.0.0/16"]}"#;
    let sim = discovered(config, 3);
    let mut record = sim.process.record().unwrap();
    let outsiders = [addr("10.1.0.4:8000"), addr("169.254.169.254:8000")];
    record.lists[0].nodes.extend(outsiders);
    record.lists[0].nodes.sort();
    record.refresh_nodes();
    // One listed as Active, one as Down (a probe would be due at once).
    let periods = crate::model::health::ProbePeriods {
        down_ms: 1_000,
        quarantine_ms: 1_000,
    };
    record = crate::health::mark_down_now(&record, outsiders[1], 0, periods).unwrap();
    sim.process.set_record(&record);
    let calls_before = sim.process.calls.borrow().len();
    // Every VM takes the record up within a tick (before the next round
    // replaces its list).
    sim.run(2 * sim.tick_ms);
    for vm in 0..3 {
        assert_eq!(sim.routed(vm), all(), "VM {vm}");
    }
    sim.run(5_000);
    let calls = sim.process.calls.borrow()[calls_before..].to_vec();
    assert!(
        calls
            .iter()
            .all(|c| !c.to("10.1.0.4") && !c.to("169.254.169.254")),
        "{calls:#?}"
    );
    assert!(
        logs().iter().any(|l| l.contains("nodes its rules refuse")),
        "{:?}",
        logs()
    );
}

/// Idle after 3 s without requests, then polled every 20 s.
const IDLE_3S: &str = r#"{"seeds": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
    "idle_after_ms": 3000, "idle_refresh_interval_ms": 20000}"#;

/// Runs the simulation for `ms`, with one request through one of the VMs
/// (in turn) every 100 ms: requests flow, so the process is active.
fn serve_for(sim: &Sim, ms: u64) {
    for i in 0..ms / 100 {
        let vm = i as usize % sim.vms.len();
        let request = TestStream::default();
        let mut stream = Stream::new(i as u32 + 1, sim.vm(vm));
        stream.on_request_headers(&request, true);
        sim.run(100);
    }
}

fn rounds_during(sim: &Sim, run: impl FnOnce(&Sim)) -> usize {
    let before = sim.discovery_calls().len();
    run(sim);
    sim.discovery_calls().len() - before
}

/// The host clock steps back an hour while a node is Down: every time the
/// record holds (the next round's, the next probe's, the last activity)
/// is then an hour ahead of every VM's clock. None of it may freeze the
/// VMs for that hour: rounds keep their pace, the Down node keeps being
/// probed and comes back when it serves, idleness is still noticed, and
/// the list's age stays a few seconds.
#[test]
fn a_clock_stepped_back_an_hour_freezes_no_round_probe_or_idle_pace() {
    let sim = discovered(IDLE_3S, 3);
    let victim = addr("10.0.0.2:8000");
    sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
    sim.vm(0)
        .borrow_mut()
        .observe(&victim, Outcome::ConnectFailed);
    serve_for(&sim, 2_000);
    assert_eq!(
        sim.process.record().unwrap().health[&victim].state,
        HealthState::Down
    );
    let probes_before = probes_of(&sim, "10.0.0.2:8000").len();
    sim.process.step(-HOUR_MS);

    let rounds = rounds_during(&sim, |sim| serve_for(sim, 6_000));
    assert!((5..=7).contains(&rounds), "{rounds} rounds in 6 s");
    let probes = probes_of(&sim, "10.0.0.2:8000").len() - probes_before;
    assert!(probes >= 2, "{probes} probes of the Down node in 6 s");
    let age = sim.process.stat("alternator_lb.node_list_age_ms").unwrap();
    assert!((0..1_500).contains(&age), "list age {age} ms");
    // It serves again: back everywhere at its next probe (8 s after the
    // last by now).
    sim.cluster.borrow_mut().dead.clear();
    assert!(until_routed_everywhere(&sim, victim, 9_000).is_some());

    // Requests flow, then stop: idle after 3 s, then a round every 20 s.
    serve_for(&sim, 2_000);
    let rounds = rounds_during(&sim, |sim| sim.run(30_000));
    assert!((3..=6).contains(&rounds), "{rounds} rounds in 30 s idle");
}

/// The host clock jumps an hour ahead: every due time has long passed. Each
/// is taken once, not once per interval missed: one round and then the
/// usual pace, one probe of the Down node and then its backoff.
#[test]
fn a_clock_jumping_an_hour_ahead_replays_nothing() {
    let sim = discovered(IDLE_3S, 3);
    let victim = addr("10.0.0.2:8000");
    sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
    sim.vm(0)
        .borrow_mut()
        .observe(&victim, Outcome::ConnectFailed);
    serve_for(&sim, 2_000);
    let probes_before = probes_of(&sim, "10.0.0.2:8000").len();
    sim.process.step(HOUR_MS);

    let rounds = rounds_during(&sim, |sim| serve_for(sim, 5_000));
    assert!((5..=6).contains(&rounds), "{rounds} rounds in 5 s");
    let probes: Vec<u64> = probes_of(&sim, "10.0.0.2:8000")[probes_before..]
        .iter()
        .map(|c| c.at_ms)
        .collect();
    assert!((1..=2).contains(&probes.len()), "probes at {probes:?}");
    let age = sim.process.stat("alternator_lb.node_list_age_ms").unwrap();
    assert!((0..1_500).contains(&age), "list age {age} ms");
    // Idleness is noticed an idle_after later as usual.
    let rounds = rounds_during(&sim, |sim| sim.run(30_000));
    assert!((3..=6).contains(&rounds), "{rounds} rounds in 30 s idle");
}

/// Opens a request on VM `vm` and sends it on until one goes to `target`
/// (round robin); the others are answered. Returns the request, still
/// awaiting its answer, and its stream.
fn in_flight_to(sim: &Sim, vm: usize, target: NodeAddr) -> (TestStream, Stream) {
    let args = crate::filter_state::route_to(&target);
    for id in 1..=64 {
        let request = TestStream::default();
        let mut stream = Stream::new(id, sim.vm(vm));
        assert_eq!(stream.on_request_headers(&request, true), Action::Continue);
        if request.handed.borrow().first() == Some(&args) {
            return (request, stream);
        }
        stream.on_response_headers(&request);
    }
    panic!("{target} is not routed by VM {vm}");
}

/// A node whose probe passes but whose requests fail: each time a VM
/// routes to it again, its next request fails. Recovery no longer forgets
/// the backoff: the node is back after 1, 2, 4, 8, 16, then every 30 s,
/// about 7 spells in a minute and a probe per spell, not one a second.
#[test]
fn a_node_whose_probe_passes_but_requests_fail_backs_off() {
    let sim = discovered(DEFAULTS, 3);
    let victim = addr("10.0.0.2:8000");
    let mut downs_at = Vec::new();
    let mut was_routed = true;
    for _ in 0..600 {
        let routed = (0..3).any(|vm| sim.routed(vm).contains(&victim));
        for vm in 0..3 {
            if sim.routed(vm).contains(&victim) {
                let (_, mut stream) = in_flight_to(&sim, vm, victim);
                let failed = TestStream {
                    flags: crate::health::FLAG_UPSTREAM_CONNECTION_FAILURE,
                    ..TestStream::default()
                };
                stream.on_response_headers(&failed);
            }
        }
        if was_routed && !routed {
            downs_at.push(sim.process.now_ms());
        }
        was_routed = routed;
        sim.run(100);
    }
    let gaps: Vec<u64> = downs_at.windows(2).map(|w| (w[1] - w[0]) / 1_000).collect();
    println!(
        "Down spells {} s apart",
        gaps.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let spells = sim.process.stat("alternator_lb.nodes_marked_down").unwrap();
    assert!(
        (5..=8).contains(&spells),
        "{spells} spells in 60 s, gaps {gaps:?}"
    );
    let probes = probes_of(&sim, "10.0.0.2:8000").len();
    assert!(probes <= 8, "{probes} probes in 60 s");
    assert!(gaps.windows(2).all(|w| w[1] >= w[0]), "gaps grow: {gaps:?}");
}

/// After its flapping stops, a node that stays up forgets its backoff: a
/// minute later, a single failure takes it out for 1 s, not 30.
#[test]
fn a_node_that_stays_up_forgets_its_backoff() {
    let config = r#"{"seeds": ["10.0.0.1", "10.0.0.2", "10.0.0.3"], "idle_after_ms": 600000}"#;
    let sim = discovered(config, 3);
    let victim = addr("10.0.0.2:8000");
    // Four spells in a row: its backoff is at 16 s.
    for _ in 0..4 {
        let vm = 0;
        until_routed_everywhere(&sim, victim, 40_000).expect("back");
        sim.vm(vm)
            .borrow_mut()
            .observe(&victim, Outcome::ConnectFailed);
        sim.run(2 * sim.tick_ms);
    }
    until_routed_everywhere(&sim, victim, 40_000).expect("back");
    let record = sim.process.record().unwrap();
    assert_eq!(
        record.health[&victim].wait_ms, 16_000,
        "{:?}",
        record.health
    );
    // Up for a minute: the memory fades and is forgotten.
    sim.run(60_000);
    assert!(sim.process.record().unwrap().health.is_empty());
    sim.vm(1)
        .borrow_mut()
        .observe(&victim, Outcome::ConnectFailed);
    sim.run(2 * sim.tick_ms);
    let record = sim.process.record().unwrap();
    assert_eq!(record.health[&victim].wait_ms, 1_000);
    assert!(until_routed_everywhere(&sim, victim, 1_000 + 2 * sim.tick_ms).is_some());
}

/// A request sent to a node before it went Down, and failing only after
/// the node came back, says nothing about the node since: it does not take
/// it out again (the node-health spec's attempt generation).
#[test]
fn the_outcome_of_a_request_sent_before_a_node_went_down_does_not_count_after() {
    let sim = discovered(DEFAULTS, 3);
    let victim = addr("10.0.0.2:8000");
    // VM 0 sends a request to the node; it hangs.
    let (_, mut late) = in_flight_to(&sim, 0, victim);
    // The node dies (VM 1 sees it), and comes back at its first probe.
    sim.vm(1)
        .borrow_mut()
        .observe(&victim, Outcome::ConnectFailed);
    sim.run(2 * sim.tick_ms);
    assert!(!sim.routed(0).contains(&victim));
    until_routed_everywhere(&sim, victim, 2_000).expect("back after its probe");
    // Now the old request fails: it was sent before the node went Down.
    let failed = TestStream {
        flags: crate::health::FLAG_UPSTREAM_CONNECTION_FAILURE,
        ..TestStream::default()
    };
    late.on_response_headers(&failed);
    assert!(
        sim.routed(0).contains(&victim),
        "taken out by a stale failure"
    );
    sim.run(2 * sim.tick_ms);
    for vm in 0..3 {
        assert!(sim.routed(vm).contains(&victim), "VM {vm}");
    }
    assert_eq!(sim.process.stat("alternator_lb.nodes_marked_down"), Some(1));
    // A request sent now, failing, counts.
    let (_, mut fresh) = in_flight_to(&sim, 0, victim);
    fresh.on_response_headers(&failed);
    assert!(!sim.routed(0).contains(&victim));
}

/// Make before break: `/localnodes` answers with three addresses where
/// nothing listens. Every VM keeps routing over the nodes that served,
/// while the newcomers are probed and fail; when the answer names the
/// cluster again, nothing has changed for requests.
#[test]
fn an_answer_of_dead_addresses_never_replaces_the_serving_nodes() {
    capture_logs();
    let sim = discovered(DEFAULTS, 3);
    let dead = ["10.9.0.1", "10.9.0.2", "10.9.0.3"];
    {
        let mut cluster = sim.cluster.borrow_mut();
        cluster.dead = dead.iter().map(|n| n.to_string()).collect();
        cluster.listed = dead.iter().map(|n| n.to_string()).collect();
    }
    for _ in 0..50 {
        sim.run(100);
        for vm in 0..3 {
            assert_eq!(sim.routed(vm), all(), "VM {vm}");
        }
    }
    let record = sim.process.record().unwrap();
    assert_eq!(record.lists[0].nodes.len(), 3);
    assert_eq!(record.lists[0].retiring, all());
    assert_eq!(sim.process.stat("alternator_lb.nodes_quarantined"), Some(3));
    assert!(dead.iter().all(|d| sim.probes().iter().any(|c| c.to(d))));
    assert!(
        logs().iter().any(|l| l.contains(
            "the nodes it dropped keep serving until one of its nodes passes a probe: \
             [10.0.0.1:8000, 10.0.0.2:8000, 10.0.0.3:8000]"
        )),
        "{:?}",
        logs()
    );
    // Each newcomer's failure is told, once by each VM that probed it,
    // though it was probed every second.
    for d in dead {
        let told = logs()
            .iter()
            .filter(|l| l.contains(&format!("new node {d}:8000 failed its probe")))
            .count();
        let probes = sim.probes().iter().filter(|c| c.to(d)).count();
        assert!(
            (1..=3).contains(&told) && told < probes,
            "{d}: told {told} times, probed {probes}"
        );
    }
    sim.cluster.borrow_mut().listed = NODES.iter().map(|n| n.to_string()).collect();
    sim.run(1_000 + 2 * sim.tick_ms);
    for vm in 0..3 {
        assert_eq!(sim.routed(vm), all(), "VM {vm}");
    }
    let record = sim.process.record().unwrap();
    assert!(record.lists[0].retiring.is_empty());
    assert!(record.health.is_empty(), "{:?}", record.health);
}

/// The same with an answer of 60,000 such addresses, under the size
/// limit: 1,024 are kept and probed, a few at a time, and the nodes that
/// served keep serving on every VM.
#[test]
fn sixty_thousand_dead_addresses_never_replace_the_serving_nodes() {
    capture_logs();
    let sim = discovered(DEFAULTS, 3);
    let dead: Vec<String> = (0..60_000)
        .map(|i| format!("10.9.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let probes_before = sim.probes().len();
    {
        let mut cluster = sim.cluster.borrow_mut();
        cluster.dead = dead.clone();
        cluster.listed = dead;
    }
    sim.run(3_000);
    for vm in 0..3 {
        assert_eq!(sim.routed(vm), all(), "VM {vm}");
    }
    let record = sim.process.record().unwrap();
    assert_eq!(record.lists[0].nodes.len(), crate::localnodes::MAX_NODES);
    assert_eq!(record.lists[0].retiring, all());
    // Probes: at most 4 a tick per VM.
    let probes = sim.probes().len() - probes_before;
    let ticks = 3 * 3_000 / sim.tick_ms as usize;
    assert!(probes <= 4 * ticks, "{probes} probes in 3 s");
    assert!(probes >= 100, "{probes} probes in 3 s");
    // Each VM names at most 10 of the newcomers that failed.
    let told = logs()
        .iter()
        .filter(|l| l.contains("failed its probe"))
        .count();
    assert!(
        (1..=3 * crate::localnodes::MAX_DESCRIBED).contains(&told),
        "told {told}"
    );
}

/// Make before break at start-up: the first answer lists only addresses
/// where nothing listens. The seed, which was serving, keeps serving.
#[test]
fn a_first_answer_of_dead_addresses_leaves_the_seed_serving() {
    let sim = Sim::new(r#"{"seeds": ["10.0.0.1"]}"#, 3, &["10.9.0.1", "10.9.0.2"]);
    sim.cluster.borrow_mut().dead = vec!["10.9.0.1".into(), "10.9.0.2".into()];
    sim.run(5_000);
    assert!(sim.process.record().unwrap().discovered());
    for vm in 0..3 {
        assert_eq!(sim.routed(vm), [addr("10.0.0.1:8000")], "VM {vm}");
    }
    // Once one of them serves, it replaces the seed everywhere.
    sim.cluster.borrow_mut().dead = vec!["10.9.0.1".into()];
    sim.run(1_000 + 2 * sim.tick_ms);
    for vm in 0..3 {
        assert_eq!(sim.routed(vm), [addr("10.9.0.2:8000")], "VM {vm}");
    }
}

/// Nodes an answer adds are probed at once, a few per tick and VM: forty
/// healthy newcomers are all routed by every VM within a second of the
/// answer, and none before its probe passed.
#[test]
fn new_nodes_are_probed_at_once_and_routed_within_a_second() {
    let sim = discovered(DEFAULTS, 3);
    let newcomers: Vec<String> = (1..=40).map(|i| format!("10.0.1.{i}")).collect();
    sim.cluster
        .borrow_mut()
        .listed
        .extend(newcomers.iter().cloned());
    let calls = sim.discovery_calls().len();
    while sim.discovery_calls().len() == calls {
        sim.run(1);
    }
    let asked = sim.process.now_ms();
    let want: Vec<NodeAddr> = newcomers
        .iter()
        .map(|n| addr(&format!("{n}:8000")))
        .collect();
    let mut routed_at = None;
    for _ in 0..2_000 {
        sim.run(10);
        for vm in 0..3 {
            for n in sim.routed(vm) {
                if want.contains(&n) {
                    let probed = sim
                        .probes()
                        .iter()
                        .any(|c| c.to(&n.ip.to_string()) && c.answered);
                    assert!(probed, "{n} routed before its probe");
                }
            }
        }
        if (0..3).all(|vm| want.iter().all(|n| sim.routed(vm).contains(n))) {
            routed_at = Some(sim.process.now_ms() - asked);
            break;
        }
    }
    let took = routed_at.expect("every newcomer routed");
    println!("40 newcomers routed everywhere {took} ms after the answer was asked for");
    assert!(took <= 1_000, "{took} ms");
}

/// A node's failure streak goes with it when the lists drop it: listed
/// again and serving, it starts with a clean count, so one reset does not
/// complete a streak begun before it left (and the streaks of nodes that
/// come and go do not pile up).
#[test]
fn a_failure_streak_is_forgotten_when_its_node_leaves_the_list() {
    let sim = discovered(DEFAULTS, 2);
    let victim = addr("10.0.0.2:8000");
    for _ in 0..2 {
        sim.vm(0).borrow_mut().observe(&victim, Outcome::Reset);
    }
    sim.cluster.borrow_mut().listed.retain(|n| n != "10.0.0.2");
    sim.run(1_000 + 2 * sim.tick_ms);
    assert!(!sim.routed(0).contains(&victim));
    sim.cluster.borrow_mut().listed.push("10.0.0.2".into());
    until_routed_everywhere(&sim, victim, 3_000).expect("listed again and probed");
    sim.vm(0).borrow_mut().observe(&victim, Outcome::Reset);
    assert!(
        sim.routed(0).contains(&victim),
        "one reset, not three in a row"
    );
}

const HOUR_MS: i64 = 3_600_000;

/// The discovery calls made in the last `ms` of simulated time (counted,
/// not timed: the host's clock, which the calls carry, has stepped).
fn calls_during(sim: &Sim, ms: u64) -> usize {
    let before = sim.discovery_calls().len();
    sim.run(ms);
    sim.discovery_calls().len() - before
}

#[test]
fn a_clock_step_back_of_an_hour_neither_stops_nor_replays_rounds() {
    let sim = discovered(CONFIG, 3);
    assert_eq!(calls_during(&sim, 3_000), 3);
    sim.process.step(-HOUR_MS);
    // Still one round a second: the record's times are the VMs' own.
    assert_eq!(calls_during(&sim, 5_000), 5);
}

#[test]
fn a_clock_jump_forward_of_an_hour_counts_as_one_tick() {
    let sim = discovered(CONFIG, 3);
    assert_eq!(calls_during(&sim, 3_000), 3);
    sim.process.step(HOUR_MS);
    // No burst: the round due within the next second comes once.
    assert_eq!(calls_during(&sim, 1_000), 1);
    assert_eq!(calls_during(&sim, 4_000), 4);
}

#[test]
fn a_clock_jump_forward_does_not_bring_a_down_nodes_probe_forward() {
    let sim = discovered(DEFAULTS, 3);
    let victim = addr("10.0.0.2:8000");
    sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
    sim.vm(1)
        .borrow_mut()
        .observe(&victim, Outcome::ConnectFailed);
    sim.tick(1);
    // Its first probe after 1 s fails; the next is 2 s later.
    sim.run(1_100);
    assert_eq!(probes_of(&sim, "10.0.0.2:8000").len(), 1);
    sim.process.step(HOUR_MS);
    sim.run(1_700);
    assert_eq!(probes_of(&sim, "10.0.0.2:8000").len(), 1, "not yet due");
    sim.run(400);
    assert_eq!(probes_of(&sim, "10.0.0.2:8000").len(), 2);
}

#[test]
fn a_clock_step_back_does_not_hold_a_down_nodes_probe_back() {
    let sim = discovered(DEFAULTS, 3);
    let victim = addr("10.0.0.2:8000");
    sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
    sim.vm(1)
        .borrow_mut()
        .observe(&victim, Outcome::ConnectFailed);
    sim.tick(1);
    sim.process.step(-HOUR_MS);
    sim.run(1_150);
    assert_eq!(probes_of(&sim, "10.0.0.2:8000").len(), 1);
}

#[test]
fn a_vm_started_after_a_clock_step_keeps_to_the_others_time() {
    for step in [-HOUR_MS, HOUR_MS] {
        // Two VMs run; the host's clock steps; a third VM (a reload)
        // starts on the same process and record.
        let mut sim = discovered(CONFIG, 2);
        sim.process.step(step);
        sim.run(2_000);
        sim.start_vm();
        // With the others: no fight over every round.
        assert_eq!(calls_during(&sim, 5_000), 5, "step {step}");
        // Alone: not frozen by the others' times.
        sim.stop_vm(0);
        sim.stop_vm(1);
        assert_eq!(calls_during(&sim, 5_000), 5, "step {step}");
        assert!(sim
            .discovery_calls()
            .iter()
            .rev()
            .take(5)
            .all(|c| c.vm == 2));
    }
}
