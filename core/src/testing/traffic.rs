//! Clients sending requests through the VMs of a [`Sim`] to nodes that
//! answer the way real ones do: with jitter, an occasional late answer,
//! stalls of a whole node, a slower first answer on each new connection,
//! a seed that also answers the filter's `/localnodes` polls, a node that
//! is lastingly slower for a while.
//!
//! Time is kept in microseconds from the start of a run; the requests'
//! clock and the process clock the VMs tick on are the same clock, so the
//! pollers' work (ticks, polls, rebuilds) happens between requests as it
//! does in Envoy. Each client is connected to one VM (Envoy gives a
//! downstream connection to one worker), client `i` to VM `i % vms`.
//! Everything random comes from one seeded generator: a run is
//! reproducible, and a test runs several seeds to say "in every run".

use super::{Sim, TestStream};
use crate::filter_state;
use crate::model::NodeAddr;
use crate::rng::Rng;
use crate::stream::{Action, Stream};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// How the clients behave.
#[derive(Clone, Debug)]
pub struct Clients {
    /// How many; each sends its next request once its last is answered.
    pub count: usize,
    /// A client's own time between an answer and its next request (µs).
    pub think_us: u64,
    /// A further pause after each answer (µs).
    pub pause_us: u64,
}

impl Clients {
    /// `count` clients in a closed loop, 0.3 ms of their own per request.
    pub fn closed(count: usize) -> Clients {
        Clients {
            count,
            think_us: 300,
            pause_us: 0,
        }
    }
}

/// How the nodes answer.
#[derive(Clone, Debug)]
pub struct Nodes {
    /// Seeds everything random in a run.
    pub seed: u64,
    /// Every answer's least time (µs).
    pub base_us: u64,
    /// Plus a uniformly random 0..=`jitter_us`.
    pub jitter_us: u64,
    /// One answer in `.0` (any node, at random) is `.1` µs late.
    pub spikes: Option<(u64, u64)>,
    /// About every `.0` µs, one node (at random) stalls for `.1` µs:
    /// requests that reach it meanwhile are answered after the stall.
    pub stalls: Option<(u64, u64)>,
    /// How much later the first answer on a new connection comes (its
    /// handshake). A VM opens one the first time it sends to a node, and
    /// whenever its requests in flight there outnumber its connections.
    pub handshake_us: u64,
    /// A request reaching a node within this long after a `/localnodes`
    /// call was made to it waits this long: the seed answers the polls.
    pub poll_busy_us: u64,
    /// Nodes lastingly slower for a time: (node, from µs, until µs, how
    /// much slower in µs).
    pub slower: Vec<(NodeAddr, u64, u64, u64)>,
}

impl Nodes {
    /// Nodes as seen through Envoy on a busy machine: 1 ms plus 0-5 ms of
    /// jitter per answer, a 20 ms stall of one node about every 2 s, 8 ms
    /// more for a connection's first answer, the seed 1 ms slower while it
    /// answers a poll.
    pub fn realistic(seed: u64) -> Nodes {
        Nodes {
            seed,
            base_us: 1_000,
            jitter_us: 5_000,
            spikes: None,
            stalls: Some((1_000_000, 20_000)),
            handshake_us: 8_000,
            poll_busy_us: 1_000,
            slower: Vec::new(),
        }
    }
}

/// One request of a run.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub sent_us: u64,
    pub answered_us: u64,
    pub node: NodeAddr,
}

/// What a run did: every request, in the order they were sent.
#[derive(Debug)]
pub struct Run {
    pub requests: Vec<Request>,
    pub nodes: Vec<NodeAddr>,
}

impl Run {
    /// Per node (in [`Run::nodes`] order), how many of the requests sent in
    /// `[from_us, until_us)` it got.
    pub fn counts(&self, from_us: u64, until_us: u64) -> Vec<usize> {
        let mut counts = vec![0; self.nodes.len()];
        for r in &self.requests {
            if (from_us..until_us).contains(&r.sent_us) {
                if let Some(i) = self.nodes.iter().position(|n| *n == r.node) {
                    counts[i] += 1;
                }
            }
        }
        counts
    }

    /// Per node, its share of the requests sent in `[from_us, until_us)`.
    pub fn shares(&self, from_us: u64, until_us: u64) -> Vec<f64> {
        let counts = self.counts(from_us, until_us);
        let total: usize = counts.iter().sum();
        assert!(total > 0, "no request in [{from_us}, {until_us}) µs");
        counts.iter().map(|&c| c as f64 / total as f64).collect()
    }

    /// How many requests were answered in `[from_us, until_us)`.
    pub fn answered(&self, from_us: u64, until_us: u64) -> usize {
        let window = from_us..until_us;
        self.requests
            .iter()
            .filter(|r| window.contains(&r.answered_us))
            .count()
    }

    /// The smallest share any node had in any `window` consecutive
    /// requests.
    pub fn least_window_share(&self, window: usize) -> f64 {
        let mut least = 1.0f64;
        for requests in self.requests.windows(window) {
            for node in &self.nodes {
                let got = requests.iter().filter(|r| r.node == *node).count();
                least = least.min(got as f64 / window as f64);
            }
        }
        least
    }
}

/// A request on its way.
struct Flight {
    client: usize,
    vm: usize,
    sent_us: u64,
    node: NodeAddr,
    request: TestStream,
    stream: Stream,
}

/// The state of the nodes' randomness through a run.
struct Answering<'a> {
    nodes: &'a Nodes,
    rng: Rng,
    members: Vec<NodeAddr>,
    /// The current or next stall: (node, from µs, until µs).
    stall: Option<(NodeAddr, u64, u64)>,
    /// Per (VM, node): connections open, requests in flight.
    connections: HashMap<(usize, NodeAddr), (u32, u32)>,
}

impl Answering<'_> {
    /// Schedules the stalls up to `now_us`.
    fn stall_at(&mut self, node: NodeAddr, now_us: u64) -> u64 {
        let Some((every, length)) = self.nodes.stalls else {
            return 0;
        };
        loop {
            match self.stall {
                Some((_, _, until)) if until > now_us => break,
                _ => {}
            }
            let after = self.stall.map_or(0, |(_, _, until)| until);
            let from = after + self.rng.below(2 * every as usize) as u64;
            let victim = self.members[self.rng.below(self.members.len())];
            self.stall = Some((victim, from, from + length));
        }
        match self.stall {
            Some((victim, from, until)) if victim == node && from <= now_us => until - now_us,
            _ => 0,
        }
    }

    /// How long `node` takes to answer a request `vm` sends it at `now_us`
    /// (`seed_busy`: the node is answering a poll).
    fn latency(&mut self, vm: usize, node: NodeAddr, now_us: u64, seed_busy: bool) -> u64 {
        let nodes = self.nodes;
        let mut took = nodes.base_us + self.rng.below(nodes.jitter_us as usize + 1) as u64;
        if let Some((one_in, late)) = nodes.spikes {
            if self.rng.below(one_in as usize) == 0 {
                took += late;
            }
        }
        let (open, busy) = self.connections.entry((vm, node)).or_default();
        *busy += 1;
        if *busy > *open {
            *open += 1;
            took += nodes.handshake_us;
        }
        for (slow, from, until, extra) in &nodes.slower {
            if *slow == node && (*from..*until).contains(&now_us) {
                took += extra;
            }
        }
        if seed_busy {
            took += nodes.poll_busy_us;
        }
        took + self.stall_at(node, now_us)
    }

    fn done(&mut self, vm: usize, node: NodeAddr) {
        if let Some((_, busy)) = self.connections.get_mut(&(vm, node)) {
            *busy = busy.saturating_sub(1);
        }
    }
}

impl Sim {
    /// Runs `clients` against `nodes` for `duration_ms` of simulated time,
    /// from now: requests go through [`Stream`] on the VMs' routes as
    /// Envoy would send them, and are answered when the node model says.
    /// Requests still in flight at the end are answered, so that nothing
    /// stays counted in flight.
    pub fn drive(&self, clients: &Clients, nodes: &Nodes, duration_ms: u64) -> Run {
        let vms = self.vms.len();
        let members = self.routed(0);
        assert!(!members.is_empty(), "nothing to route to");
        let routes: Vec<(Vec<u8>, NodeAddr)> = members
            .iter()
            .map(|n| (filter_state::route_to(n), *n))
            .collect();
        let start_ms = self.process.now_ms();
        let wall_ms = self.process.wall_ms();
        let origin_ns = wall_ms * 1_000_000;
        let end_us = duration_ms * 1_000;
        let mut answering = Answering {
            nodes,
            rng: Rng::new(nodes.seed ^ 0x7472_6166_6669_6300),
            members: members.clone(),
            stall: None,
            connections: HashMap::new(),
        };
        // Clients start a little apart, as real ones do.
        let mut ready: Vec<Option<u64>> =
            (0..clients.count).map(|c| Some(c as u64 * 137)).collect();
        let mut flights: HashMap<u64, Flight> = HashMap::new();
        let mut due: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
        let mut requests = Vec::new();
        let mut id: u64 = 0;
        loop {
            let next_send = ready
                .iter()
                .enumerate()
                .filter_map(|(c, t)| t.map(|t| (t, c)))
                .filter(|(t, _)| *t < end_us)
                .min();
            let next_answer = due.peek().map(|Reverse((t, id))| (*t, *id));
            let now_us = match (next_send, next_answer) {
                (None, None) => break,
                (Some((s, _)), Some((a, _))) => s.min(a),
                (Some((s, _)), None) => s,
                (None, Some((a, _))) => a,
            };
            while self.process.now_ms() < start_ms + now_us / 1_000 {
                self.run(1);
            }
            let now_ns = origin_ns + now_us * 1_000;
            if let Some((at, done)) = next_answer.filter(|(a, _)| *a == now_us) {
                due.pop();
                let mut flight = flights.remove(&done).expect("a request in flight");
                flight.request.now_ns.set(now_ns);
                flight.stream.on_response_headers(&flight.request);
                answering.done(flight.vm, flight.node);
                ready[flight.client] = Some(at + clients.think_us + clients.pause_us);
                requests.push(Request {
                    sent_us: flight.sent_us,
                    answered_us: at,
                    node: flight.node,
                });
                continue;
            }
            let Some((_, client)) = next_send else {
                unreachable!("the earliest event is a send")
            };
            let vm = client % vms;
            let request = TestStream::default();
            request.now_ns.set(now_ns);
            id += 1;
            let mut stream = Stream::new(id as u32, self.vm(vm));
            assert_eq!(stream.on_request_headers(&request, true), Action::Continue);
            let handed = request.handed.borrow()[0].clone();
            let node = routes
                .iter()
                .find(|(args, _)| *args == handed)
                .map(|(_, n)| *n)
                .expect("routed to a node of the run");
            let seed_busy = self.polled_within(node, now_us, nodes.poll_busy_us, start_ms);
            let took = answering.latency(vm, node, now_us, seed_busy);
            ready[client] = None;
            due.push(Reverse((now_us + took.max(1), id)));
            flights.insert(
                id,
                Flight {
                    client,
                    vm,
                    sent_us: now_us,
                    node,
                    request,
                    stream,
                },
            );
        }
        requests.sort_by_key(|r| r.sent_us);
        Run {
            requests,
            nodes: members,
        }
    }

    /// Whether a `/localnodes` call was made to `node` within `window_us`
    /// before `now_us` (µs since `start_ms`).
    fn polled_within(&self, node: NodeAddr, now_us: u64, window_us: u64, start_ms: u64) -> bool {
        if window_us == 0 {
            return false;
        }
        let now_ms = start_ms + now_us / 1_000;
        let ip = node.ip.to_string();
        let calls = self.process.calls.borrow();
        let last = calls
            .iter()
            .rev()
            .find(|c| c.path.starts_with("/localnodes") && c.to(&ip));
        last.is_some_and(|c| c.at_ms <= now_ms && (now_ms - c.at_ms) * 1_000 < window_us.max(1_000))
    }
}
