//! What the largest `/localnodes` answer the filter reads costs: a body of
//! about 1 MiB (the size limit) listing some 70,000 distinct IPv4 addresses,
//! far past the 1024 nodes kept. Timed per step, as a discovery result is
//! handled: `localnodes::parse` (reading, capping, sorting), then
//! `discovery::apply_answer` into a state whose list it replaces, then what
//! every worker rebuilds from the new state, `discovery::routing_tiers` and
//! `discovery::rings`. A benchmark that prints figures, not a test:
//!
//!   cargo run --release -p alternator-lb-core --example localnodes_speed
//!
//! Natively, with the workspace's release profile (opt-level "z"); V8 runs
//! the `.wasm` somewhat slower. The answer comes in random order (as
//! Alternator lists nodes in no particular order) and, for comparison,
//! already sorted.

// A measurement run by hand on inputs it builds itself: a panic is a fine
// way for it to stop, unlike in the filter the workspace's lints guard.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use alternator_lb_core::discovery::{self, Round};
use alternator_lb_core::localnodes::{self, Rules, MAX_BODY_BYTES, MAX_NODES};
use alternator_lb_core::model::record::{QueryList, SharedState};
use alternator_lb_core::model::NodeAddr;
use alternator_lb_core::rng::Rng;
use alternator_lb_core::topology::{Query, Topology};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const RUNS: usize = 21;
const PORT: u16 = 8000;
/// No allowed_cidrs, seeds that are not loopback: the default rules.
const RULES: Rules = Rules {
    port: PORT,
    allowed: &[],
    loopback: false,
};

/// Distinct addresses in 10.0.0.0/8 spread over the range (an odd
/// multiplier permutes 24 bits), as many as fit in a body under the limit.
fn addresses() -> Vec<Ipv4Addr> {
    let mut ips = Vec::new();
    let mut bytes = 1; // "["
    for i in 1u32.. {
        let ip = Ipv4Addr::from(0x0a00_0000 | (i.wrapping_mul(0x9e_3779) & 0xff_ffff));
        bytes += ip.to_string().len() + 3; // quotes and a comma
        if bytes > MAX_BODY_BYTES - 64 {
            break;
        }
        ips.push(ip);
    }
    ips
}

fn body(ips: &[Ipv4Addr]) -> Vec<u8> {
    let quoted: Vec<String> = ips.iter().map(|ip| format!("\"{ip}\"")).collect();
    format!("[{}]", quoted.join(",")).into_bytes()
}

/// One query, one scope, and a state whose list is 1024 other nodes: the
/// answer replaces every node (each one added is quarantined, and the 1024
/// it drops keep serving until one of them passes a probe: the worst case).
fn setup() -> (Topology, SharedState, Round) {
    let seed = NodeAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), PORT);
    let topology = Topology {
        queries: vec![Query {
            dc: None,
            rack: None,
        }],
        scopes: vec![vec![0]],
        query_seeds: vec![vec![seed]],
        start_seeds: vec![seed],
        seeds: vec![seed],
    };
    let old: Vec<NodeAddr> = (0..MAX_NODES as u32)
        .map(|i| NodeAddr::new(IpAddr::V4(Ipv4Addr::from(0xac10_0000 + i)), PORT))
        .collect();
    let mut state = SharedState {
        round: 1,
        lists: vec![QueryList {
            round: 1,
            nodes: old,
            ..QueryList::default()
        }],
        ..SharedState::default()
    };
    state.refresh_nodes();
    let round = Round {
        number: 2,
        targets: vec![(0, seed)],
    };
    (topology, state, round)
}

const STEPS: [&str; 5] = ["parse", "apply_answer", "routing_tiers", "rings", "total"];

/// Each step's timings over [`RUNS`] runs.
fn measure(body: &[u8]) -> [Vec<Duration>; 5] {
    let (topology, state, round) = setup();
    let mut times: [Vec<Duration>; 5] = Default::default();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let answer = localnodes::parse(body, &RULES).expect("a usable answer");
        let t1 = Instant::now();
        let seeds = &topology.query_seeds[0];
        let (next, event) = discovery::apply_answer(&state, &round, 0, answer.nodes, seeds, 1_000);
        let t2 = Instant::now();
        let tiers = discovery::routing_tiers(Some(&next), &topology);
        let t3 = Instant::now();
        let rings = discovery::rings(&next, &topology);
        let t4 = Instant::now();
        assert!(matches!(
            event,
            discovery::Event::ListChanged { total, .. } if total == MAX_NODES
        ));
        // The new nodes and the old ones they have not yet replaced.
        assert_eq!(rings[0].len(), 2 * MAX_NODES);
        std::hint::black_box(tiers);
        for (i, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0]
            .into_iter()
            .enumerate()
        {
            times[i].push(d);
        }
    }
    times
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(what: &str, body: &[u8], entries: usize) {
    let answer = localnodes::parse(body, &RULES).expect("a usable answer");
    println!(
        "{what}: {} bytes, {entries} addresses, {} kept, dropped: {:?}",
        body.len(),
        answer.nodes.len(),
        answer.dropped
    );
    println!("  step            median       max   (ms, {RUNS} runs)");
    for (step, mut times) in STEPS.iter().zip(measure(body)) {
        times.sort();
        println!(
            "  {step:<13} {:>8.3}  {:>8.3}",
            ms(times[RUNS / 2]),
            ms(times[RUNS - 1])
        );
    }
}

fn main() {
    let mut ips = addresses();
    // A reproducible shuffle (Fisher-Yates with the core's seeded generator).
    let mut rng = Rng::new(0x5eed);
    for i in (1..ips.len()).rev() {
        ips.swap(i, rng.below(i + 1));
    }
    report("random order", &body(&ips), ips.len());
    ips.sort();
    report("sorted order", &body(&ips), ips.len());
}
