//! The orchestration driven as Envoy drives it: several VMs (workers and
//! the main thread) ticking at their own phases on one simulated process,
//! whose shared data has Envoy's compare-and-set rules, against a simulated
//! cluster answering their callouts.

use crate::model::health::{HealthState, Outcome};
use crate::model::NodeAddr;
use crate::router::Router;
use crate::stream::{Action, Stream};
use crate::testing::{capture_logs, logs, Sim, TestStream};
use std::cell::RefCell;
use std::rc::Rc;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const NODES: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];

/// 1 s rounds (so 100 ms ticks), Down nodes probed every 2 s.
const CONFIG: &str = r#"{"seeds": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
    "down_probe_interval_ms": 2000}"#;

fn a(s: &str) -> NodeAddr {
    s.parse().unwrap()
}

fn all() -> Vec<NodeAddr> {
    NODES.iter().map(|n| a(&format!("{n}:8000"))).collect()
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
    sim.process.advance(1_000);
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
    let victim = a("10.0.0.2:8000");
    sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
    // A request on worker 3 finds the node unreachable: that worker stops
    // using it at once.
    sim.router(3)
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
    let victim = a("10.0.0.2:8000");
    sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
    sim.router(0)
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

#[test]
fn with_every_node_down_requests_get_the_503_until_probes_bring_nodes_back() {
    let sim = discovered(CONFIG, 3);
    sim.cluster.borrow_mut().dead = NODES.iter().map(|n| n.to_string()).collect();
    for node in all() {
        sim.router(1)
            .borrow_mut()
            .observe(&node, Outcome::ConnectFailed);
    }
    sim.run(300);
    for vm in 0..3 {
        assert!(sim.routed(vm).is_empty(), "VM {vm}");
    }
    let request = TestStream::default();
    let mut stream = Stream::new(sim.router(2));
    assert_eq!(stream.on_request_headers(&request, true), Action::Pause);
    assert_eq!(
        request.replies.borrow()[0].body,
        crate::error_body::NO_NODE.body
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
    let mut stream = Stream::new(sim.router(2));
    assert_eq!(stream.on_request_headers(&request, true), Action::Continue);
    assert_eq!(request.handed.borrow().len(), 1);
}

const AFFINITY: &str = r#"{"seeds": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
    "key_route_affinity": "rmw"}"#;

/// What a DescribeTable answer through VM `vm` teaches it.
fn describe_through(router: Rc<RefCell<Router>>, table: &str, key: &str) {
    let body = format!(
        r#"{{"Table":{{"TableName":"{table}","KeySchema":[{{"AttributeName":"{key}","KeyType":"HASH"}}]}}}}"#
    );
    let request = TestStream {
        request_headers: vec![("x-amz-target", b"DynamoDB_20120810.DescribeTable".to_vec())],
        response_headers: vec![(":status", b"200".to_vec())],
        response_body: body.into_bytes(),
        ..TestStream::default()
    };
    let mut stream = Stream::new(router);
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
    describe_through(sim.router(2), "orders", "order_id");
    assert_eq!(
        sim.router(2).borrow().tables().pk_name("orders"),
        Some("order_id")
    );
    assert_eq!(sim.router(0).borrow().tables().pk_name("orders"), None);
    sim.tick(2);
    for vm in 0..5 {
        sim.tick(vm);
        assert_eq!(
            sim.router(vm).borrow().tables().pk_name("orders"),
            Some("order_id"),
            "VM {vm}"
        );
    }
}

#[test]
fn keys_learned_by_two_vms_at_once_are_both_kept() {
    let sim = discovered(AFFINITY, 3);
    describe_through(sim.router(0), "orders", "order_id");
    describe_through(sim.router(1), "users", "user_id");
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
    let tables = sim.router(2);
    let tables = tables.borrow();
    assert_eq!(tables.tables().pk_name("orders"), Some("order_id"));
    assert_eq!(tables.tables().pk_name("users"), Some("user_id"));
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
    let newcomer = a("10.0.0.4:8000");
    assert_eq!(record.nodes.len(), 4);
    // Quarantined until its probe (every 1 s) passes, then everywhere.
    sim.run(1_100 + sim.tick_ms);
    for vm in 0..4 {
        assert!(sim.routed(vm).contains(&newcomer), "VM {vm}");
    }
    sim.cluster.borrow_mut().listed.retain(|n| n != "10.0.0.1");
    sim.run(1_000 + sim.tick_ms);
    for vm in 0..4 {
        assert!(!sim.routed(vm).contains(&a("10.0.0.1:8000")), "VM {vm}");
    }
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
    let victim = a("10.0.0.2:8000");
    let mut worst = 0;
    for (i, outage) in (2_500..=3_500).step_by(100).enumerate() {
        let sim = discovered(DEFAULTS, 5);
        sim.run(i as u64 * 37);
        sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
        sim.router(i % 5)
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
    let victim = a("10.0.0.2:8000");
    sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
    sim.router(4)
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
    let victim = a("10.0.0.2:8000");
    for vm in 0..5 {
        for _ in 0..2 {
            sim.router(vm).borrow_mut().observe(&victim, Outcome::Reset);
        }
    }
    sim.run(1_000);
    for vm in 0..5 {
        assert_eq!(sim.routed(vm), all(), "VM {vm}");
    }
    assert!(sim.process.record().unwrap().health.is_empty());
    // An answer on VM 1 clears its count: two more resets are still fine.
    sim.router(1)
        .borrow_mut()
        .observe(&victim, Outcome::Answered);
    for _ in 0..2 {
        sim.router(1).borrow_mut().observe(&victim, Outcome::Reset);
    }
    sim.run(1_000);
    for vm in 0..5 {
        assert_eq!(sim.routed(vm), all(), "VM {vm}");
    }
    assert_eq!(sim.process.stat("alternator_lb.nodes_marked_down"), Some(0));
    // The third in a row takes it out: at once on VM 1, within a tick on
    // the others.
    sim.router(1).borrow_mut().observe(&victim, Outcome::Reset);
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

/// A Down node that `/localnodes` stops listing is forgotten; listed again,
/// it is quarantined and probed every `quarantine_probe_interval_ms` (1 s),
/// not where its Down backoff had got to.
#[test]
fn a_node_listed_again_after_dropping_out_is_probed_on_the_quarantine_schedule() {
    let sim = discovered(DEFAULTS, 3);
    let victim = a("10.0.0.2:8000");
    sim.cluster.borrow_mut().dead.push("10.0.0.2".into());
    sim.router(0)
        .borrow_mut()
        .observe(&victim, Outcome::ConnectFailed);
    sim.run(40_000);
    let record = sim.process.record().unwrap();
    assert_eq!(record.health[&victim].state, HealthState::Down);
    assert_eq!(record.health[&victim].wait_ms, 30_000, "backed off");
    // The cluster drops it from /localnodes: forgotten.
    sim.cluster.borrow_mut().listed.retain(|n| n != "10.0.0.2");
    sim.run(2_000);
    let record = sim.process.record().unwrap();
    assert!(!record.nodes.contains(&victim));
    assert!(record.health.is_empty(), "{:?}", record.health);
    // Listed again, still not serving: Quarantined, probed every second.
    sim.cluster.borrow_mut().listed.push("10.0.0.2".into());
    let before = probes_of(&sim, "10.0.0.2:8000").len();
    sim.run(1_000 + sim.tick_ms);
    let record = sim.process.record().unwrap();
    assert_eq!(record.health[&victim].state, HealthState::Quarantined);
    sim.run(4_000);
    let probes = probes_of(&sim, "10.0.0.2:8000");
    let since: Vec<u64> = probes[before..].iter().map(|c| c.at_ms).collect();
    assert!(since.len() >= 4, "{since:?}");
    for pair in since.windows(2) {
        let gap = pair[1] - pair[0];
        assert!((1_000..1_000 + sim.tick_ms + 5).contains(&gap), "{since:?}");
    }
    for vm in 0..3 {
        assert!(!sim.routed(vm).contains(&victim), "VM {vm}");
    }
    // Serving: back within a quarantine period (and a tick).
    sim.cluster.borrow_mut().dead.clear();
    let back = until_routed_everywhere(&sim, victim, 1_000 + 2 * sim.tick_ms);
    assert!(back.is_some(), "not back within a quarantine period");
}
