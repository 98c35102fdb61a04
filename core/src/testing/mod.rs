//! Hosts for the core's tests: an Envoy process simulated in memory, so
//! that the orchestration is tested without Envoy.
//!
//! - [`Process`]: what the VMs of one Envoy share: shared data with Envoy's
//!   exact compare-and-set rules (one process-wide token counter, `cas` 0
//!   writes unconditionally, an absent entry accepts any token), the clock
//!   (which the test moves, and may step back or jump), the stats, and the
//!   callouts made so far.
//! - [`TestHost`]: one VM's [`Host`] on a process.
//! - [`Sim`]: N VMs on one process, ticking at their own phases, with a
//!   simulated Alternator cluster answering their callouts.
//! - [`TestStream`]: one request's [`StreamHost`].
//! - [`logs`]: the log lines of the current test's thread.
//! - [`traffic`]: clients sending requests through a [`Sim`]'s VMs to nodes
//!   that answer with realistic noise, for balancing tests.
//! - [`addr`], [`addrs`], [`NODES`]: node addresses as tests write them,
//!   defined once for every test module.

use crate::error_body::LocalReply;
use crate::host::{Host, HostError, MetricKind, StreamHost};
use crate::model::NodeAddr;
use crate::poller::Poller;
use crate::vm_state::VmState;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

pub mod traffic;

/// The test binary's allocator: the system's, counting the bytes each
/// thread has allocated, so that a test can state how much memory some code
/// needed at its peak (what a Wasm VM's memory grows to, and keeps).
pub mod alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<usize> = const { Cell::new(0) };
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    fn grew(by: usize) {
        let _ = LIVE.try_with(|live| {
            let now = live.get().saturating_add(by);
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    fn shrank(by: usize) {
        let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(by)));
    }

    pub struct Counting;

    // SAFETY: every call is passed on to the system allocator unchanged;
    // the counters are plain thread-locals that never allocate.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc(layout);
            if !p.is_null() {
                grew(layout.size());
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc_zeroed(layout);
            if !p.is_null() {
                grew(layout.size());
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout);
            shrank(layout.size());
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = System.realloc(ptr, layout, new_size);
            if !p.is_null() {
                grew(new_size);
                shrank(layout.size());
            }
            p
        }
    }

    /// Runs `f`; also returns the most bytes it had allocated at once on
    /// this thread (beyond what was allocated before it).
    pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
        let base = LIVE.with(Cell::get);
        PEAK.with(|peak| peak.set(base));
        let out = f();
        (out, PEAK.with(Cell::get).saturating_sub(base))
    }
}

/// The nodes the simulated clusters of most tests list (bare IPs; the
/// filter adds the configured port, 8000 by default).
pub const NODES: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];

/// A node address written out in a test (`"10.0.0.1:8000"`).
pub fn addr(s: &str) -> NodeAddr {
    s.parse().unwrap()
}

/// Node addresses written out in a test, in the order given.
pub fn addrs(list: &[&str]) -> Vec<NodeAddr> {
    list.iter().map(|s| addr(s)).collect()
}

/// Runs before a shared-data write with its key and value; returns true
/// when it did its work (it is then dropped). This is how a test makes
/// another VM run between one VM's read and its write.
type BeforeSet = Box<dyn FnMut(&str, &[u8]) -> bool>;

/// One callout a VM made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub vm: usize,
    pub token: u32,
    pub cluster: String,
    pub path: String,
    /// The node asked (`x-envoy-original-dst-host`).
    pub node: String,
    /// When it was made, on Envoy's monotonic time.
    pub at_ms: u64,
    /// The timeout the call was made with.
    pub timeout_ms: u64,
    pub answered: bool,
}

impl Call {
    /// Whether the call went to the node with IP `ip` (any port).
    pub fn to(&self, ip: &str) -> bool {
        self.node
            .rsplit_once(':')
            .is_some_and(|(host, _)| host.trim_start_matches('[').trim_end_matches(']') == ip)
    }
}

/// An answer to a callout: `None` is no answer at all (no headers: Envoy
/// delivers a stream reset that way).
#[derive(Clone, Debug)]
pub struct Reply(pub Option<(u32, Vec<u8>)>);

/// Where the simulated clocks start (a plausible wall-clock time, in ms).
const START_MS: u64 = 1_700_000_000_000;

pub struct Process {
    pub config: RefCell<Vec<u8>>,
    /// Monotonic time: what Envoy's timers (ticks) and the network (answer
    /// latency) run on, and what [`Call::at_ms`] records.
    clock_ms: Cell<u64>,
    /// What the host clock every VM reads is ahead of [`Process::now_ms`]
    /// (negative: behind): 0 until the test steps the clock.
    wall_offset_ms: Cell<i64>,
    store: RefCell<BTreeMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
    stats: RefCell<Vec<(String, MetricKind, i64)>>,
    /// Every value recorded into a histogram, by stat id.
    samples: RefCell<Vec<(u32, u64)>>,
    pub calls: RefCell<Vec<Call>>,
    next_token: Cell<u32>,
    answering: RefCell<Option<Reply>>,
    before_set: RefCell<Option<BeforeSet>>,
    /// Requests a VM may enter from its tick, by context id.
    streams: RefCell<Vec<(u32, Rc<TestStream>)>>,
}

impl Process {
    pub fn new(config: &str) -> Rc<Process> {
        Rc::new(Process {
            config: RefCell::new(config.as_bytes().to_vec()),
            clock_ms: Cell::new(START_MS),
            wall_offset_ms: Cell::new(0),
            store: RefCell::new(BTreeMap::new()),
            next_cas: Cell::new(1),
            stats: RefCell::new(Vec::new()),
            samples: RefCell::new(Vec::new()),
            calls: RefCell::new(Vec::new()),
            next_token: Cell::new(1),
            answering: RefCell::new(None),
            before_set: RefCell::new(None),
            streams: RefCell::new(Vec::new()),
        })
    }

    /// Envoy's monotonic time, which ticks, answers and [`Call::at_ms`] run
    /// on (what the VMs read is [`Process::wall_ms`]).
    pub fn now_ms(&self) -> u64 {
        self.clock_ms.get()
    }

    /// Lets `ms` milliseconds pass.
    pub fn advance(&self, ms: u64) {
        self.clock_ms.set(self.clock_ms.get() + ms);
    }

    /// Sets the host clock every VM reads `ms` milliseconds back
    /// (negative) or ahead at once, as an NTP correction, an operator or a
    /// resumed VM might: ticks and answers keep coming on time (Envoy's
    /// timers are monotonic), but every VM reads the stepped time.
    pub fn step(&self, ms: i64) {
        self.wall_offset_ms
            .set(self.wall_offset_ms.get().saturating_add(ms));
    }

    /// The host clock the VMs read (`get_current_time`): the monotonic
    /// time plus whatever steps the test made.
    pub fn wall_ms(&self) -> u64 {
        self.clock_ms
            .get()
            .saturating_add_signed(self.wall_offset_ms.get())
    }

    /// The discovery record (the entry that is not the learned tables').
    pub fn record(&self) -> Option<crate::model::record::SharedState> {
        let store = self.store.borrow();
        let (_, (bytes, _)) = store
            .iter()
            .find(|(k, _)| k.starts_with("alternator_lb.discovery.") && !k.ends_with(".tables"))?;
        crate::model::record::SharedState::decode(bytes).ok()
    }

    /// Overwrites the discovery record with `state`, as any plugin sharing
    /// the VM id could (Envoy's shared data has no owner).
    pub fn set_record(&self, state: &crate::model::record::SharedState) {
        let mut store = self.store.borrow_mut();
        let cas = self.next_cas();
        if let Some((_, entry)) = store
            .iter_mut()
            .find(|(k, _)| k.starts_with("alternator_lb.discovery.") && !k.ends_with(".tables"))
        {
            *entry = (state.encode(), cas);
        }
    }

    pub fn keys(&self) -> Vec<String> {
        self.store.borrow().keys().cloned().collect()
    }

    /// Makes request `id` known to the process, so that a VM can enter it
    /// from its tick (until [`Process::end_stream`]).
    pub fn start_stream(&self, id: u32, request: &Rc<TestStream>) {
        self.streams.borrow_mut().push((id, Rc::clone(request)));
    }

    /// Request `id` ended: Envoy no longer has it.
    pub fn end_stream(&self, id: u32) {
        self.streams.borrow_mut().retain(|(s, _)| *s != id);
    }

    /// Installs a hook that runs before a later shared-data write.
    pub fn before_set(&self, hook: impl FnMut(&str, &[u8]) -> bool + 'static) {
        *self.before_set.borrow_mut() = Some(Box::new(hook));
    }

    /// A stat's value by name (every VM defining a name shares it).
    pub fn stat(&self, name: &str) -> Option<i64> {
        self.stats
            .borrow()
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| *v)
    }

    /// The values recorded into a histogram, oldest first.
    pub fn samples(&self, name: &str) -> Vec<u64> {
        let stats = self.stats.borrow();
        let Some(id) = stats.iter().position(|(n, _, _)| n == name) else {
            return Vec::new();
        };
        let samples = self.samples.borrow();
        samples
            .iter()
            .filter(|(s, _)| *s as usize == id)
            .map(|(_, v)| *v)
            .collect()
    }

    /// The callouts not answered yet, oldest first.
    pub fn pending(&self) -> Vec<Call> {
        self.calls
            .borrow()
            .iter()
            .filter(|c| !c.answered)
            .cloned()
            .collect()
    }

    fn mark_answered(&self, token: u32) {
        if let Some(c) = self
            .calls
            .borrow_mut()
            .iter_mut()
            .find(|c| c.token == token)
        {
            c.answered = true;
        }
    }

    fn next_cas(&self) -> u32 {
        let cas = self.next_cas.get();
        self.next_cas.set(cas.wrapping_add(1).max(1));
        cas
    }
}

/// One VM's host.
#[derive(Clone)]
pub struct TestHost {
    pub process: Rc<Process>,
    pub vm: usize,
}

impl Host for TestHost {
    type Stream = Rc<TestStream>;

    fn enter_stream(&self, context_id: u32) -> Result<Rc<TestStream>, HostError> {
        let streams = self.process.streams.borrow();
        let found = streams.iter().find(|(id, _)| *id == context_id);
        found
            .map(|(_, s)| Rc::clone(s))
            .ok_or_else(|| HostError::Status("BadArgument".into()))
    }

    fn now_nanos(&self) -> u64 {
        // VMs configured at the same instant still get different seeds.
        self.process.wall_ms() * 1_000_000 + self.vm as u64 * 7_919
    }

    fn set_tick_period_ms(&self, _period_ms: u32) -> Result<(), HostError> {
        Ok(())
    }

    fn plugin_configuration(&self) -> Option<Vec<u8>> {
        Some(self.process.config.borrow().clone())
    }

    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        Ok(self.process.store.borrow().get(key).cloned())
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        let hook = self.process.before_set.borrow_mut().take();
        if let Some(mut hook) = hook {
            if !hook(key, value) {
                *self.process.before_set.borrow_mut() = Some(hook);
            }
        }
        let mut store = self.process.store.borrow_mut();
        let cas = cas.unwrap_or(0);
        if let Some((_, current)) = store.get(key) {
            if cas != 0 && cas != *current {
                return Err(HostError::CasMismatch);
            }
        }
        let token = self.process.next_cas();
        store.insert(key.to_string(), (value.to_vec(), token));
        Ok(())
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<u32, HostError> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        let (Some(path), Some(node)) = (header(":path"), header("x-envoy-original-dst-host"))
        else {
            return Err(HostError::Status("BadArgument".into()));
        };
        if cluster != "alternator_discovery" {
            return Err(HostError::Status("BadArgument".into()));
        }
        let token = self.process.next_token.get();
        self.process.next_token.set(token + 1);
        self.process.calls.borrow_mut().push(Call {
            vm: self.vm,
            token,
            cluster: cluster.to_string(),
            path,
            node,
            at_ms: self.process.now_ms(),
            timeout_ms: timeout_ms.into(),
            answered: false,
        });
        Ok(token)
    }

    fn call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        let answering = self.process.answering.borrow();
        let (status, _) = answering.as_ref()?.0.as_ref()?;
        (name == ":status").then(|| status.to_string().into_bytes())
    }

    fn call_response_body(&self, size: usize) -> Option<Vec<u8>> {
        let answering = self.process.answering.borrow();
        let (_, body) = answering.as_ref()?.0.as_ref()?;
        Some(body.iter().copied().take(size).collect())
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let mut stats = self.process.stats.borrow_mut();
        if let Some(id) = stats.iter().position(|(n, _, _)| n == name) {
            return Ok(id as u32);
        }
        stats.push((name.to_string(), kind, 0));
        Ok(stats.len() as u32 - 1)
    }

    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostError> {
        let mut stats = self.process.stats.borrow_mut();
        let stat = stats
            .get_mut(id as usize)
            .ok_or_else(|| HostError::Status("NotFound".into()))?;
        stat.2 += delta;
        Ok(())
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        let mut stats = self.process.stats.borrow_mut();
        let stat = stats
            .get_mut(id as usize)
            .ok_or_else(|| HostError::Status("NotFound".into()))?;
        if stat.1 == MetricKind::Histogram {
            self.process.samples.borrow_mut().push((id, value));
        } else {
            stat.2 = value as i64;
        }
        Ok(())
    }
}

/// What Envoy 1.40 answers a callout itself when the connection to the
/// node is refused (checked with a real Envoy).
pub const ENVOY_REFUSED: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";
/// What it answers, with status 504, when the callout's timeout passes.
pub const ENVOY_TIMEOUT: &str = "upstream request timeout";

/// A simulated Alternator cluster: which nodes answer, and what
/// `/localnodes` lists.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// Nodes (IPs) that refuse connections: Envoy answers 503.
    pub dead: Vec<String>,
    /// Nodes that accept connections but never answer: Envoy answers 504
    /// when the callout's timeout has passed.
    pub silent: Vec<String>,
    /// Nodes that answer every call with this status and body.
    pub failing: Vec<(String, u32, Vec<u8>)>,
    /// What `/localnodes` answers (bare IPs), whoever is asked.
    pub listed: Vec<String>,
}

impl Cluster {
    /// How long after the call its answer comes, if not after `latency_ms`.
    pub fn delay(&self, call: &Call) -> Option<u64> {
        self.silent
            .iter()
            .any(|ip| call.to(ip))
            .then_some(call.timeout_ms)
    }

    pub fn reply(&self, call: &Call) -> Reply {
        if self.dead.iter().any(|ip| call.to(ip)) {
            return Reply(Some((503, ENVOY_REFUSED.as_bytes().to_vec())));
        }
        if self.silent.iter().any(|ip| call.to(ip)) {
            return Reply(Some((504, ENVOY_TIMEOUT.as_bytes().to_vec())));
        }
        if let Some((_, status, body)) = self.failing.iter().find(|(ip, _, _)| call.to(ip)) {
            return Reply(Some((*status, body.clone())));
        }
        if call.path.starts_with("/localnodes") {
            let body = serde_json::to_vec(&self.listed).unwrap_or_default();
            return Reply(Some((200, body)));
        }
        Reply(Some((200, b"healthy: test".to_vec())))
    }
}

/// N VMs of one Envoy process, each ticking on its own timer, as Envoy's
/// per-thread timers do: VM `i` first ticks at a phase of its own, then
/// every tick period plus `i` ms, so that which VM comes first after a due
/// time drifts.
pub struct Sim {
    pub process: Rc<Process>,
    pub vms: Vec<Rc<RefCell<Poller<TestHost>>>>,
    pub cluster: Rc<RefCell<Cluster>>,
    pub tick_ms: u64,
    next_tick: RefCell<Vec<u64>>,
    /// How long a callout takes to be answered.
    pub latency_ms: u64,
}

impl Sim {
    /// `vms` VMs configured with `config`, one after another, at the same
    /// instant; the cluster lists `listed`.
    pub fn new(config: &str, vms: usize, listed: &[&str]) -> Sim {
        Sim::with_configs(&vec![config; vms], listed)
    }

    /// One VM per configuration, all in one process: VM `i` is configured
    /// with `configs[i]` (two filter instances, or two versions of one
    /// filter's configuration, in one Envoy).
    pub fn with_configs(configs: &[&str], listed: &[&str]) -> Sim {
        let vms = configs.len();
        let process = Process::new(configs[0]);
        let pollers = configs
            .iter()
            .enumerate()
            .map(|(vm, config)| {
                *process.config.borrow_mut() = config.as_bytes().to_vec();
                let host = TestHost {
                    process: Rc::clone(&process),
                    vm,
                };
                let poller = Poller::configure(host).expect("configuration accepted");
                Rc::new(RefCell::new(poller))
            })
            .collect::<Vec<_>>();
        let tick_ms = crate::poller::tick_period_ms(pollers[0].borrow().config()).into();
        let start = process.now_ms();
        Sim {
            process,
            vms: pollers,
            cluster: Rc::new(RefCell::new(Cluster {
                listed: listed.iter().map(|s| s.to_string()).collect(),
                ..Cluster::default()
            })),
            tick_ms,
            next_tick: RefCell::new(
                (0..vms as u64)
                    .map(|i| start + (i * 37) % tick_ms)
                    .collect(),
            ),
            latency_ms: 3,
        }
    }

    /// Starts one more VM on the process (a reload, a reconfiguration): it
    /// finds the shared data as the others left it. Returns its index.
    pub fn start_vm(&mut self) -> usize {
        let vm = self.vms.len();
        let host = TestHost {
            process: Rc::clone(&self.process),
            vm,
        };
        let poller = Poller::configure(host).expect("configuration accepted");
        self.vms.push(Rc::new(RefCell::new(poller)));
        self.next_tick.borrow_mut().push(self.process.now_ms() + 1);
        vm
    }

    /// VM `vm` ticks no more (its worker went away).
    pub fn stop_vm(&self, vm: usize) {
        if let Some(next) = self.next_tick.borrow_mut().get_mut(vm) {
            *next = u64::MAX;
        }
    }

    pub fn vm(&self, vm: usize) -> Rc<RefCell<VmState>> {
        self.vms[vm].borrow().vm_state()
    }

    /// Every VM's routes, flattened per VM (the first non-empty tier).
    pub fn routed(&self, vm: usize) -> Vec<NodeAddr> {
        self.vm(vm)
            .borrow()
            .routes
            .nodes()
            .into_iter()
            .find(|t| !t.is_empty())
            .unwrap_or_default()
    }

    /// When VM `vm` ticks next.
    pub fn next_tick(&self, vm: usize) -> u64 {
        self.next_tick.borrow()[vm]
    }

    pub fn tick(&self, vm: usize) {
        self.vms[vm].borrow_mut().on_tick();
    }

    /// Answers every callout made at least `latency_ms` ago (a silent
    /// node's at its timeout), as the cluster stands now.
    pub fn deliver(&self) {
        let now = self.process.now_ms();
        for call in self.process.pending() {
            let delay = self.cluster.borrow().delay(&call);
            if call.at_ms + delay.unwrap_or(self.latency_ms) > now {
                continue;
            }
            let reply = self.cluster.borrow().reply(&call);
            self.answer(&call, reply);
        }
    }

    /// Delivers one answer to the VM that made the call.
    pub fn answer(&self, call: &Call, reply: Reply) {
        let (num_headers, body_size) = match &reply.0 {
            Some((_, body)) => (3, body.len()),
            None => (0, 0),
        };
        self.process.mark_answered(call.token);
        *self.process.answering.borrow_mut() = Some(reply);
        self.vms[call.vm]
            .borrow_mut()
            .on_http_call_response(call.token, num_headers, body_size);
        *self.process.answering.borrow_mut() = None;
    }

    /// Runs the clock for `ms` milliseconds, one millisecond at a time:
    /// each VM ticks at its phase, answers arrive after the latency.
    pub fn run(&self, ms: u64) {
        for _ in 0..ms {
            self.process.advance(1);
            let now = self.process.now_ms();
            for vm in 0..self.vms.len() {
                let due = self.next_tick.borrow()[vm];
                if now >= due {
                    self.next_tick.borrow_mut()[vm] = due + self.tick_ms + vm as u64;
                    self.tick(vm);
                }
            }
            self.deliver();
        }
    }

    /// Lets `ms` milliseconds pass without ticks or answers, every VM
    /// reading its clock each millisecond as its requests would: time the
    /// VMs see pass, where [`Process::advance`] alone is a jump of the
    /// host's clock, which a VM counts as one tick.
    pub fn pass(&self, ms: u64) {
        for _ in 0..ms {
            self.process.advance(1);
            let host_ns = self.process.wall_ms() * 1_000_000;
            for vm in 0..self.vms.len() {
                self.vm(vm).borrow().routes.now_ns(host_ns);
            }
        }
    }

    /// The `/localnodes` calls made so far.
    pub fn discovery_calls(&self) -> Vec<Call> {
        self.process
            .calls
            .borrow()
            .iter()
            .filter(|c| c.path.starts_with("/localnodes"))
            .cloned()
            .collect()
    }

    /// The probes (`GET /`) made so far.
    pub fn probes(&self) -> Vec<Call> {
        self.process
            .calls
            .borrow()
            .iter()
            .filter(|c| c.path == "/")
            .cloned()
            .collect()
    }
}

/// One request's host: its headers and bodies, what the filter handed to
/// Envoy, and what it answered itself.
#[derive(Default)]
pub struct TestStream {
    pub request_headers: Vec<(&'static str, Vec<u8>)>,
    pub response_headers: Vec<(&'static str, Vec<u8>)>,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    pub flags: u64,
    /// Envoy refuses the hand-off.
    pub refuse: bool,
    pub handed: RefCell<Vec<Vec<u8>>>,
    pub replies: RefCell<Vec<LocalReply>>,
    /// How often the request was resumed from outside its callbacks.
    pub resumed: Cell<u32>,
    /// What the request's clock reads (tests move it).
    pub now_ns: Cell<u64>,
    /// Every host call the filter made to read this request or its answer,
    /// in order: a request header by its name, a response header as
    /// "response:NAME", and "request.body", "response.body",
    /// "response.flags" and "clock".
    pub reads: RefCell<Vec<String>>,
}

impl TestStream {
    fn read(&self, what: &str) {
        self.reads.borrow_mut().push(what.to_string());
    }
}

impl StreamHost for TestStream {
    fn now_nanos(&self) -> u64 {
        self.read("clock");
        self.now_ns.get()
    }

    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.read(name);
        let found = self.request_headers.iter().find(|(n, _)| *n == name);
        found.map(|(_, v)| v.clone())
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.read(&format!("response:{name}"));
        let found = self.response_headers.iter().find(|(n, _)| *n == name);
        found.map(|(_, v)| v.clone())
    }

    fn request_body(&self, start: usize, size: usize) -> Option<Vec<u8>> {
        self.read("request.body");
        let rest = self.request_body.get(start..).filter(|r| !r.is_empty())?;
        Some(rest.iter().copied().take(size).collect())
    }

    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        self.read("response.body");
        Some(self.response_body.iter().copied().take(size).collect())
    }

    fn response_flags(&self) -> Option<Vec<u8>> {
        self.read("response.flags");
        Some(self.flags.to_le_bytes().to_vec())
    }

    fn call_foreign(&self, name: &str, args: &[u8]) -> Result<(), HostError> {
        assert_eq!(name, crate::filter_state::FOREIGN_FUNCTION);
        if self.refuse {
            return Err(HostError::Status("NotFound".into()));
        }
        self.handed.borrow_mut().push(args.to_vec());
        Ok(())
    }

    fn send_local_reply(&self, reply: &LocalReply) -> Result<(), HostError> {
        self.replies.borrow_mut().push(*reply);
        Ok(())
    }

    fn resume_request(&self) -> Result<(), HostError> {
        self.resumed.set(self.resumed.get() + 1);
        Ok(())
    }
}

/// A request entered from a VM's tick is the same request.
impl StreamHost for Rc<TestStream> {
    fn now_nanos(&self) -> u64 {
        self.as_ref().now_nanos()
    }
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.as_ref().request_header(name)
    }
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.as_ref().response_header(name)
    }
    fn request_body(&self, start: usize, size: usize) -> Option<Vec<u8>> {
        self.as_ref().request_body(start, size)
    }
    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        self.as_ref().response_body(size)
    }
    fn response_flags(&self) -> Option<Vec<u8>> {
        self.as_ref().response_flags()
    }
    fn call_foreign(&self, name: &str, args: &[u8]) -> Result<(), HostError> {
        self.as_ref().call_foreign(name, args)
    }
    fn send_local_reply(&self, reply: &LocalReply) -> Result<(), HostError> {
        self.as_ref().send_local_reply(reply)
    }
    fn resume_request(&self) -> Result<(), HostError> {
        self.as_ref().resume_request()
    }
}

thread_local! {
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let line = format!("{} {}", record.level(), record.args());
        LINES.with(|l| l.borrow_mut().push(line));
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

/// Starts capturing this thread's log lines (each test runs on its own
/// thread natively, and alone under WebAssembly) and forgets earlier ones.
pub fn capture_logs() {
    let _ = log::set_logger(&CAPTURE);
    log::set_max_level(log::LevelFilter::Debug);
    LINES.with(|l| l.borrow_mut().clear());
}

/// The lines logged on this thread since [`capture_logs`], as
/// `LEVEL message`.
pub fn logs() -> Vec<String> {
    LINES.with(|l| l.borrow().clone())
}
