//! What a request costs inside alternator-lb: host calls, allocations, and
//! (under callgrind) instructions.
//!
//! This binary links the real filter natively (`src/` of the root package,
//! compiled as this package's library `alternator_lb_native`), provides
//! every proxy-wasm host function as a counting mock (`host`), counts
//! allocations (`alloc`), and drives the filter through its exported
//! entry points (the proxy-wasm SDK's dispatcher) exactly as
//! Envoy calls them: `_initialize`, root context creation, `on_vm_start`,
//! `on_configure`, ticks, then per request `proxy_on_context_create`,
//! `proxy_on_request_headers`, `proxy_on_request_body`,
//! `proxy_on_response_headers`, `proxy_on_response_body`, `proxy_on_delete`
//! (the module exports no `proxy_on_log` or `proxy_on_done`, so Envoy calls
//! neither).
//!
//! `--only-picking` runs just the round-robin pick the request path makes
//! (`alternator_lb_core::picker::RoundRobin` over `Rc` routes, as
//! `alternator_lb_core::routes::Routes` holds them).
//!
//! The measured loops are `#[no_mangle] #[inline(never)]` functions
//! (`hotpath_requests_loop`, `hotpath_pick_loop`, `hotpath_pick_raw_loop`) so
//! that `valgrind --tool=callgrind --toggle-collect=<name>` counts exactly
//! their instructions; see README.md.

mod alloc;
mod host;

// The filter, linked for its exported entry points (declared below).
use alternator_lb_native as _;

use alternator_lb_core::filter_state;
use alternator_lb_core::model::NodeAddr;
use alternator_lb_core::picker::RoundRobin;
use std::cell::RefCell;
use std::hint::black_box;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

/// The plugin configuration handed to `on_configure`, with the
/// `load_balancing` of `--balancing`, and with `--hosts` a `hosts` list
/// that every request's authority ([`AUTHORITY`]) matches.
fn config(balancing: &str, hosts: bool) -> String {
    let hosts = if hosts {
        r#","hosts":["alternator.example"]"#
    } else {
        ""
    };
    format!(
        r#"{{"seeds":["10.0.0.1","10.0.0.2","10.0.0.3"],"load_balancing":"{balancing}"{hosts}}}"#
    )
}
/// Every request's `:authority` (the mock answers it only when asked).
const AUTHORITY: &str = "alternator.example:8080";
/// What the mock answers to the filter's `/localnodes` callout.
const LOCALNODES: &str = r#"["10.0.0.1","10.0.0.2","10.0.0.3"]"#;
const SEEDS: [&str; 3] = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"];

const ROOT_ID: u32 = 1;
/// Header counts and body sizes Envoy passes (the filter ignores them).
const REQUEST_HEADERS: usize = 8;
const RESPONSE_HEADERS: usize = 6;
const REQUEST_BODY: usize = 120;
const RESPONSE_BODY: usize = 2;
/// `proxy_wasm::types::Action::Continue`.
const CONTINUE: u32 = 0;

// The module's exports (the SDK's dispatcher), as Envoy sees them.
// `Action` is `#[repr(u32)]`, taken as `u32`.
extern "C" {
    fn _initialize();
    fn proxy_on_context_create(context_id: u32, root_context_id: u32);
    fn proxy_on_vm_start(context_id: u32, vm_configuration_size: usize) -> bool;
    fn proxy_on_configure(context_id: u32, plugin_configuration_size: usize) -> bool;
    fn proxy_on_tick(context_id: u32);
    fn proxy_on_request_headers(context_id: u32, num_headers: usize, end_of_stream: bool) -> u32;
    fn proxy_on_request_body(context_id: u32, body_size: usize, end_of_stream: bool) -> u32;
    fn proxy_on_response_headers(context_id: u32, num_headers: usize, end_of_stream: bool) -> u32;
    fn proxy_on_response_body(context_id: u32, body_size: usize, end_of_stream: bool) -> u32;
    fn proxy_on_delete(context_id: u32);
}

type Create = unsafe extern "C" fn(u32, u32);
type Stream = unsafe extern "C" fn(u32, usize, bool) -> u32;
type Id = unsafe extern "C" fn(u32);

/// The module's entry points, called through pointers the optimizer cannot
/// see through: like Envoy calling into a Wasm module, nothing of the
/// filter gets inlined into the driver.
struct Module {
    context_create: Create,
    request_headers: Stream,
    request_body: Stream,
    response_headers: Stream,
    response_body: Stream,
    delete: Id,
    tick: Id,
}

impl Module {
    fn new() -> Module {
        Module {
            context_create: black_box(proxy_on_context_create as Create),
            request_headers: black_box(proxy_on_request_headers as Stream),
            request_body: black_box(proxy_on_request_body as Stream),
            response_headers: black_box(proxy_on_response_headers as Stream),
            response_body: black_box(proxy_on_response_body as Stream),
            delete: black_box(proxy_on_delete as Id),
            tick: black_box(proxy_on_tick as Id),
        }
    }
}

/// One request, as Envoy drives an HTTP filter through it. Returns how many
/// callbacks did not answer `Continue` (0 when the filter routed it).
#[inline(always)]
fn one_request(m: &Module, id: u32) -> u32 {
    // SAFETY: the module's exports, called in Envoy's order with a fresh
    // context id under the configured root context.
    unsafe {
        (m.context_create)(id, ROOT_ID);
        let mut paused = u32::from((m.request_headers)(id, REQUEST_HEADERS, false) != CONTINUE);
        paused += u32::from((m.request_body)(id, REQUEST_BODY, true) != CONTINUE);
        paused += u32::from((m.response_headers)(id, RESPONSE_HEADERS, false) != CONTINUE);
        paused += u32::from((m.response_body)(id, RESPONSE_BODY, true) != CONTINUE);
        (m.delete)(id);
        paused
    }
}

/// Warm-up requests (not collected by callgrind).
#[inline(never)]
fn warmup_loop(m: &Module, next_id: &mut u32, n: u64) -> u64 {
    let mut not_continued = 0;
    for _ in 0..n {
        not_continued += u64::from(one_request(m, *next_id));
        *next_id += 1;
    }
    not_continued
}

/// The measured requests: `--toggle-collect=hotpath_requests_loop`.
#[no_mangle]
#[inline(never)]
fn hotpath_requests_loop(m: &Module, next_id: &mut u32, n: u64) -> u64 {
    let mut not_continued = 0;
    for _ in 0..n {
        not_continued += u64::from(one_request(m, *next_id));
        *next_id += 1;
    }
    not_continued
}

/// Counts over an interval.
#[derive(Clone, Copy)]
struct Cost {
    calls: host::Calls,
    module: alloc::Allocs,
    host: alloc::Allocs,
    time: Duration,
}

impl Cost {
    const ZERO: Cost = Cost {
        calls: host::Calls::ZERO,
        module: alloc::Allocs {
            allocs: 0,
            deallocs: 0,
            reallocs: 0,
            bytes: 0,
        },
        host: alloc::Allocs {
            allocs: 0,
            deallocs: 0,
            reallocs: 0,
            bytes: 0,
        },
        time: Duration::ZERO,
    };

    fn add(&mut self, other: &Cost) {
        self.calls.add(&other.calls);
        self.module.add(other.module);
        self.host.add(other.host);
        self.time += other.time;
    }
}

/// Starts measuring; `finish` gives the cost since.
struct Meter {
    calls: host::Calls,
    module: alloc::Allocs,
    host: alloc::Allocs,
    start: Instant,
}

impl Meter {
    #[inline(always)]
    fn start() -> Meter {
        Meter {
            calls: host::Calls::now(),
            module: alloc::module(),
            host: alloc::host(),
            start: Instant::now(),
        }
    }

    #[inline(always)]
    fn finish(self) -> Cost {
        let time = self.start.elapsed();
        Cost {
            calls: host::Calls::now().since(&self.calls),
            module: alloc::module().since(self.module),
            host: alloc::host().since(self.host),
            time,
        }
    }
}

fn per(x: u64, n: u64) -> f64 {
    x as f64 / n.max(1) as f64
}

/// `x / n`, with two decimals (none when `n` is 1: a single event).
fn avg(x: u64, n: u64) -> String {
    if n == 1 {
        x.to_string()
    } else {
        format!("{:.2}", per(x, n))
    }
}

fn print_cost(title: &str, c: &Cost, n: u64, unit: &str) {
    println!("{title}");
    println!("  host calls {unit}: {} in total", avg(c.calls.total(), n));
    for (name, count) in host::NAMES.iter().zip(c.calls.by_fn) {
        if count > 0 {
            println!("    {name:<38} {:>8}", avg(count, n));
        }
    }
    if c.calls.memory_allocate > 0 {
        println!(
            "    (and the host called the module's proxy_on_memory_allocate {} times, to hand it buffers)",
            avg(c.calls.memory_allocate, n)
        );
    }
    let m = c.module;
    println!(
        "  module allocations (the filter: the Wasm heap) {unit}: {} allocs, {} deallocs, {} reallocs, {} bytes",
        avg(m.allocs, n),
        avg(m.deallocs, n),
        avg(m.reallocs, n),
        avg(m.bytes, n)
    );
    let h = c.host;
    if h.allocs + h.deallocs + h.reallocs > 0 {
        println!(
            "  (mock host allocations, not the module's: {} allocs, {} deallocs {unit})",
            avg(h.allocs, n),
            avg(h.deallocs, n)
        );
    }
    println!(
        "  wall time {unit}: {:.1} ns (informative: native code, mock host)",
        c.time.as_nanos() as f64 / n.max(1) as f64
    );
}

struct Args {
    requests: u64,
    warmup: u64,
    only_picking: bool,
    verbose: bool,
    /// `load_balancing`: least_request (the filter's default) or round_robin.
    balancing: String,
    /// Configure `hosts` (every request matches it).
    hosts: bool,
}

const USAGE: &str =
    "usage: hotpath [--requests N] [--warmup N] [--balancing least_request|round_robin]
               [--hosts] [--only-picking] [--verbose]

Counts what a request costs inside the alternator-lb filter (native build of
the real filter, mock proxy-wasm host): host calls by function, allocations,
wall time; per full request and per callback. --only-picking runs only the
round-robin pick (for callgrind). --verbose prints the filter's log lines.
--balancing sets the filter's load_balancing (default least_request, the
filter's default). --hosts adds a hosts list that every request's
:authority matches (the filter then reads it per request).";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        requests: 100_000,
        warmup: 10_000,
        only_picking: false,
        verbose: false,
        balancing: "least_request".to_string(),
        hosts: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |what: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("{what} needs a positive number"))
        };
        match a.as_str() {
            "--requests" => args.requests = number("--requests")?,
            "--warmup" => args.warmup = number("--warmup")?,
            "--only-picking" => args.only_picking = true,
            "--verbose" => args.verbose = true,
            "--hosts" => args.hosts = true,
            "--balancing" => match it.next().as_deref() {
                Some(b @ ("least_request" | "round_robin")) => args.balancing = b.to_string(),
                _ => return Err("--balancing takes least_request or round_robin".to_string()),
            },
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("hotpath: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.only_picking {
        picking(&args);
        return ExitCode::SUCCESS;
    }
    if requests(&args) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Starts the VM as Envoy does; false if the filter refused to start.
fn start_vm(m: &Module, config: &str) -> bool {
    host::HOST.with(|h| {
        let mut h = h.borrow_mut();
        h.plugin_config = config.as_bytes().to_vec();
        h.localnodes_body = LOCALNODES.as_bytes().to_vec();
    });
    // SAFETY: the module's exports, in Envoy's start-up order.
    let started = unsafe {
        _initialize();
        proxy_on_context_create(ROOT_ID, 0);
        proxy_on_vm_start(ROOT_ID, 0) && proxy_on_configure(ROOT_ID, config.len())
    };
    if !started {
        return false;
    }
    // The first tick creates the shared state, the next leases the first
    // discovery round, whose callout is answered at once.
    for _ in 0..3 {
        tick(m);
    }
    true
}

/// One tick, with any callout it made answered. Returns the callouts.
fn tick(m: &Module) -> usize {
    // SAFETY: the module's export, on the root context.
    unsafe { (m.tick)(ROOT_ID) };
    host::deliver_callouts(ROOT_ID)
}

fn requests(args: &Args) -> bool {
    let m = Module::new();
    host::HOST.with(|h| h.borrow_mut().print_logs = true);
    println!("alternator-lb hot path: the real filter, built natively, driven through its proxy-wasm entry points");
    let config = config(&args.balancing, args.hosts);
    host::HOST.with(|h| h.borrow_mut().authority = Some(AUTHORITY.to_string()));
    println!("plugin configuration: {config}; /localnodes answers {LOCALNODES}");
    println!("filter log lines during start-up:");
    let setup = Meter::start();
    if !start_vm(&m, &config) {
        eprintln!("hotpath: the filter refused its configuration");
        return false;
    }
    let setup = setup.finish();
    if !args.verbose {
        host::HOST.with(|h| h.borrow_mut().print_logs = false);
    }
    let logs_before = host::HOST.with(|h| h.borrow().logs.len());

    let mut next_id = ROOT_ID + 1;
    let mut not_continued = warmup_loop(&m, &mut next_id, args.warmup);

    // Ticks: one after requests were served, one right after it.
    let busy_tick = Meter::start();
    let busy_callouts = tick(&m);
    let busy_tick = busy_tick.finish();
    let idle_tick = Meter::start();
    let idle_callouts = tick(&m);
    let idle_tick = idle_tick.finish();
    host::reset_route_check();

    // Pass A: the whole request, nothing measured inside the loop.
    let n = args.requests;
    let meter = Meter::start();
    not_continued += hotpath_requests_loop(&m, &mut next_id, n);
    let full = meter.finish();

    // What measuring costs (two snapshots of every counter, two clock
    // reads), included in each per-callback wall time below.
    let mut empty = Cost::ZERO;
    for _ in 0..n {
        empty.add(&black_box(Meter::start()).finish());
    }

    // Pass B: the same requests, measuring the two callbacks that do work.
    let mut on_request = Cost::ZERO;
    let mut on_response = Cost::ZERO;
    for _ in 0..n {
        let id = next_id;
        next_id += 1;
        // SAFETY: as in `one_request`.
        unsafe {
            (m.context_create)(id, ROOT_ID);
            let meter = Meter::start();
            let a = (m.request_headers)(id, REQUEST_HEADERS, false);
            on_request.add(&meter.finish());
            let b = (m.request_body)(id, REQUEST_BODY, true);
            let meter = Meter::start();
            let c = (m.response_headers)(id, RESPONSE_HEADERS, false);
            on_response.add(&meter.finish());
            let d = (m.response_body)(id, RESPONSE_BODY, true);
            (m.delete)(id);
            not_continued += u64::from([a, b, c, d].iter().any(|&x| x != CONTINUE));
        }
    }
    let total_requests = args.warmup + 2 * n;

    println!();
    println!(
        "{n} requests measured after {} warm-up requests; figures are per request",
        args.warmup
    );
    println!();
    print_cost(
        "Full request (proxy_on_context_create, _request_headers, _request_body, _response_headers,\n\
         _response_body, _delete):",
        &full,
        n,
        "per request",
    );
    println!();
    print_cost(
        "proxy_on_request_headers alone:",
        &on_request,
        n,
        "per request",
    );
    println!();
    print_cost(
        "proxy_on_response_headers alone:",
        &on_response,
        n,
        "per request",
    );
    println!(
        "(each per-callback wall time includes about {:.1} ns of measuring overhead)",
        empty.time.as_nanos() as f64 / n.max(1) as f64
    );
    println!();
    println!("Not per request (for scale):");
    print_cost(
        "  VM start-up (_initialize, root context, on_vm_start, on_configure, 3 ticks, first /localnodes answer):",
        &setup,
        1,
        "in all",
    );
    print_cost(
        &format!("  one tick after requests were served ({busy_callouts} callouts):"),
        &busy_tick,
        1,
        "in that tick",
    );
    print_cost(
        &format!("  one idle tick ({idle_callouts} callouts):"),
        &idle_tick,
        1,
        "in that tick",
    );

    // Checks: every request went to a seed, in round-robin order.
    let (routes_seen, out_of_turn, local, other, logs_after) = host::HOST.with(|h| {
        let h = h.borrow();
        (
            h.routes_seen.clone(),
            h.out_of_turn,
            h.local_responses,
            h.other_foreign_calls,
            h.logs.len(),
        )
    });
    println!();
    println!("Routing check (what set_envoy_filter_state received):");
    let mut ok = true;
    let mut routed = 0;
    let mut seeds_hit = Vec::new();
    for (args_bytes, count) in &routes_seen {
        // The argument names the node (a protobuf string field holding
        // the `ip:port` Envoy's ORIGINAL_DST cluster connects to).
        let seed = SEEDS
            .iter()
            .find(|s| args_bytes.windows(s.len()).any(|w| w == s.as_bytes()));
        match seed {
            Some(s) => {
                println!("  {s}: {count} requests");
                seeds_hit.push(*s);
            }
            None => {
                println!(
                    "  unexpected argument {:?}: {count} requests",
                    String::from_utf8_lossy(args_bytes)
                );
                ok = false;
            }
        }
        routed += count;
    }
    seeds_hit.sort_unstable();
    seeds_hit.dedup();
    let checks = [
        (
            routed == total_requests,
            format!("{routed} of {total_requests} requests routed"),
        ),
        (
            seeds_hit.len() == SEEDS.len(),
            format!("{} of {} seeds used", seeds_hit.len(), SEEDS.len()),
        ),
        // Round robin takes the nodes in strict turn; least request, with
        // nodes answering alike (the mock answers at once), spreads evenly.
        if args.balancing == "round_robin" {
            (
                out_of_turn == 0,
                format!("{out_of_turn} requests out of round-robin order"),
            )
        } else {
            let counts: Vec<u64> = routes_seen.iter().map(|(_, n)| *n).collect();
            let mean = total_requests as f64 / SEEDS.len() as f64;
            let worst = counts
                .iter()
                .map(|&n| (n as f64 - mean).abs() / mean)
                .fold(0.0, f64::max);
            (
                worst <= 0.05,
                format!("nodes within {:.1}% of the mean share", worst * 100.0),
            )
        },
        (
            not_continued == 0,
            format!("{not_continued} requests not continued"),
        ),
        (local == 0, format!("{local} local responses (503)")),
        (other == 0, format!("{other} other foreign function calls")),
        (
            logs_after == logs_before,
            format!(
                "{} log lines while serving requests",
                logs_after - logs_before
            ),
        ),
    ];
    for (good, what) in &checks {
        println!("  {} {what}", if *good { "ok:  " } else { "FAIL:" });
        ok &= good;
    }
    ok
}

/// A route as `alternator_lb_core::routes` holds it: the node and the pre-encoded
/// filter-state argument handed to Envoy.
struct Route {
    #[allow(dead_code)]
    node: NodeAddr,
    args: Vec<u8>,
}

type Picker = RefCell<RoundRobin<Rc<Route>>>;

/// The pick as `Routes::pick` makes it (borrow the picker, take the next
/// route, clone its `Rc`), and the clone dropped again as the request's
/// context eventually does.
#[inline(always)]
fn pick_loop(picker: &Picker, n: u64) -> u64 {
    let mut bytes = 0;
    for _ in 0..n {
        let route = picker
            .try_borrow_mut()
            .ok()
            .and_then(|mut p| p.pick().cloned());
        if let Some(route) = black_box(route) {
            bytes += route.args.len() as u64;
        }
    }
    bytes
}

/// `RoundRobin::pick` alone (no `RefCell`, no `Rc` clone).
#[inline(always)]
fn pick_raw_loop(rr: &mut RoundRobin<Rc<Route>>, n: u64) -> u64 {
    let mut bytes = 0;
    for _ in 0..n {
        if let Some(route) = black_box(rr.pick()) {
            bytes += route.args.len() as u64;
        }
    }
    bytes
}

/// Measured: `--toggle-collect=hotpath_pick_loop`.
#[no_mangle]
#[inline(never)]
fn hotpath_pick_loop(picker: &Picker, n: u64) -> u64 {
    pick_loop(picker, n)
}

/// Measured: `--toggle-collect=hotpath_pick_raw_loop`.
#[no_mangle]
#[inline(never)]
fn hotpath_pick_raw_loop(rr: &mut RoundRobin<Rc<Route>>, n: u64) -> u64 {
    pick_raw_loop(rr, n)
}

/// Warm-up (not collected).
#[inline(never)]
fn pick_warmup(picker: &Picker, rr: &mut RoundRobin<Rc<Route>>, n: u64) -> u64 {
    pick_loop(picker, n) + pick_raw_loop(rr, n)
}

fn picking(args: &Args) {
    let routes: Vec<Rc<Route>> = SEEDS
        .iter()
        .filter_map(|s| s.parse::<NodeAddr>().ok())
        .map(|node| {
            Rc::new(Route {
                args: filter_state::route_to(&node),
                node,
            })
        })
        .collect();
    let picker: Picker = RefCell::new(RoundRobin::new(routes.clone(), 0));
    let mut raw = RoundRobin::new(routes, 0);
    let n = args.requests;
    black_box(pick_warmup(
        black_box(&picker),
        black_box(&mut raw),
        args.warmup,
    ));

    let meter = Meter::start();
    black_box(hotpath_pick_loop(black_box(&picker), n));
    let pick = meter.finish();
    let meter = Meter::start();
    black_box(hotpath_pick_raw_loop(black_box(&mut raw), n));
    let pick_raw = meter.finish();

    println!(
        "alternator-lb picking alone: RoundRobin over {} routes, {n} picks after {} warm-up picks",
        SEEDS.len(),
        args.warmup
    );
    for (what, c) in [
        (
            "as Routes::pick (RefCell borrow, RoundRobin::pick, Rc clone and drop)",
            &pick,
        ),
        ("RoundRobin::pick alone", &pick_raw),
    ] {
        println!("  {what}:");
        println!(
            "    allocations per pick: {:.2}; host calls per pick: {:.2}; wall time per pick: {:.2} ns (informative)",
            per(c.module.allocs + c.module.reallocs, n),
            per(c.calls.total(), n),
            c.time.as_nanos() as f64 / n.max(1) as f64
        );
    }
    println!("  instructions per pick: run under callgrind (see README.md)");
}
