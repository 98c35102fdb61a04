//! Least request (the default) through [`Stream`] on a simulated Envoy of
//! two workers, against nodes that answer with the noise real ones have
//! ([`crate::testing::traffic`]): how equal nodes share, and how a slow
//! node sheds load and gets it back. Each scenario runs with several seeds
//! of the noise: what is asserted holds in every run, not on average.

use crate::testing::traffic::{Clients, Nodes, Run};
use crate::testing::{addr, Sim, NODES};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const SEEDS: [u64; 4] = [1, 2, 3, 4];
const S: u64 = 1_000_000;

/// Two workers with the default configuration, the first node the seed,
/// every node discovered.
fn envoy() -> Sim {
    let sim = Sim::new(r#"{"seeds": ["10.0.0.1"]}"#, 2, &NODES);
    sim.run(1_500);
    for vm in 0..2 {
        assert_eq!(sim.routed(vm).len(), 3);
    }
    sim
}

/// Asserts that every node's share of `[from_us, until_us)` is within
/// `tolerance` (relative) of an equal share.
fn assert_even(run: &Run, from_us: u64, until_us: u64, tolerance: f64, what: &str) {
    let shares = run.shares(from_us, until_us);
    let mean = 1.0 / shares.len() as f64;
    for (node, share) in run.nodes.iter().zip(&shares) {
        assert!(
            (share - mean).abs() <= tolerance * mean,
            "{what}: {node} got {share:.3} ({:?})",
            run.counts(from_us, until_us)
        );
    }
}

#[test]
fn one_client_spreads_evenly_under_realistic_noise() {
    // Jitter of 0-5 ms per answer, a 20 ms stall of one node now and then,
    // a slower first answer per connection, the seed busy with polls.
    for seed in SEEDS {
        let run = envoy().drive(&Clients::closed(1), &Nodes::realistic(seed), 8_000);
        assert!(run.requests.len() > 1_500, "{}", run.requests.len());
        assert_even(&run, 0, 8 * S, 0.05, &format!("seed {seed}"));
    }
}

#[test]
fn eight_clients_spread_evenly_under_realistic_noise() {
    for seed in SEEDS {
        let run = envoy().drive(&Clients::closed(8), &Nodes::realistic(seed), 8_000);
        assert_even(&run, 0, 8 * S, 0.05, &format!("seed {seed}"));
    }
}

#[test]
fn late_answers_now_and_then_never_sideline_an_equal_node() {
    // Every answer 0-3 ms late, and 1 answer in 20 (any node) 25 ms late.
    for seed in SEEDS {
        let nodes = Nodes {
            jitter_us: 3_000,
            spikes: Some((20, 25_000)),
            stalls: None,
            ..Nodes::realistic(seed)
        };
        let run = envoy().drive(&Clients::closed(1), &nodes, 8_000);
        assert!(run.requests.len() > 1_500, "{}", run.requests.len());
        assert_even(&run, 0, 8 * S, 0.05, &format!("seed {seed}"));
        let least = run.least_window_share(150);
        assert!(least >= 0.2, "seed {seed}: {least}");
    }
}

#[test]
fn a_node_3_ms_slower_keeps_most_of_its_share() {
    let slower = addr("10.0.0.2:8000");
    for seed in SEEDS {
        let nodes = Nodes {
            slower: vec![(slower, 0, u64::MAX, 3_000)],
            ..Nodes::realistic(seed)
        };
        let run = envoy().drive(&Clients::closed(1), &nodes, 8_000);
        let shares = run.shares(0, 8 * S);
        let fair = 1.0 / 3.0;
        assert!(shares[1] >= fair * 2.0 / 3.0, "seed {seed}: {shares:?}");
        let (a, b) = (shares[0], shares[2]);
        assert!((a - b).abs() <= 0.1 * a.max(b), "seed {seed}: {shares:?}");
    }
}

#[test]
fn load_shifts_gradually_with_a_lasting_difference() {
    // One client: the only signal is latency. A node a few ms slower keeps
    // nearly all its share, one 10 ms slower about half, one 30 ms slower
    // only the occasional try; in between, the share falls steadily.
    let slower = addr("10.0.0.3:8000");
    let seed = SEEDS[0];
    let mut last = f64::MAX;
    for (extra_ms, least, most) in [
        (0, 0.98, 1.02),
        (3, 0.9, 1.0),
        (6, 0.7, 0.9),
        (10, 0.35, 0.65),
        (15, 0.05, 0.25),
        (30, 0.0, 0.05),
    ] {
        let nodes = Nodes {
            slower: vec![(slower, 0, u64::MAX, extra_ms * 1_000)],
            ..Nodes::realistic(seed)
        };
        let run = envoy().drive(&Clients::closed(1), &nodes, 8_000);
        let of_fair = run.shares(0, 8 * S)[2] * 3.0;
        assert!(
            (least..=most).contains(&of_fair) && of_fair < last,
            "{extra_ms} ms slower: {of_fair:.3} of a fair share"
        );
        last = of_fair;
    }
}

#[test]
fn two_clients_with_pauses_spread_evenly() {
    let clients = Clients {
        count: 2,
        think_us: 300,
        pause_us: 30_000,
    };
    for seed in SEEDS {
        let run = envoy().drive(&clients, &Nodes::realistic(seed), 12_000);
        assert_even(&run, 0, 12 * S, 0.05, &format!("seed {seed}"));
    }
}

#[test]
fn a_slow_node_sheds_load_and_gets_it_back() {
    // 8 clients; one node 150 ms slower from 2 s to 22 s.
    let slow = addr("10.0.0.2:8000");
    for seed in SEEDS {
        let fast = envoy().drive(&Clients::closed(8), &Nodes::realistic(seed), 32_000);
        let nodes = Nodes {
            slower: vec![(slow, 2 * S, 22 * S, 150_000)],
            ..Nodes::realistic(seed)
        };
        let run = envoy().drive(&Clients::closed(8), &nodes, 32_000);
        let while_slow = run.shares(3 * S, 22 * S)[1];
        assert!(while_slow <= 0.02, "seed {seed}: {while_slow}");
        let throughput = run.answered(3 * S, 22 * S) as f64 / fast.answered(3 * S, 22 * S) as f64;
        assert!(throughput >= 0.9, "seed {seed}: {throughput}");
        // 10 s after it is fast again, it has its share back.
        let back = run.shares(27 * S, 32 * S)[1];
        assert!(back >= 0.3, "seed {seed}: {back}");
    }
}

#[test]
fn one_client_avoids_a_slow_node_and_tries_it_now_and_then() {
    let slow = addr("10.0.0.3:8000");
    for seed in SEEDS {
        let nodes = Nodes {
            slower: vec![(slow, 0, u64::MAX, 150_000)],
            ..Nodes::realistic(seed)
        };
        let run = envoy().drive(&Clients::closed(1), &nodes, 20_000);
        // Once a second, from the client's worker.
        let tries = run.counts(2 * S, 20 * S)[2];
        assert!((9..=20).contains(&tries), "seed {seed}: {tries}");
    }
}
