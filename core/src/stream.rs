//! One request's way through the filter: pick a node, hand it to Envoy,
//! continue; on the answer, notice a node that did not answer.
//!
//! This is the only code that runs per request, so it does as little as
//! possible: no JSON, no shared-data read, no formatting, no allocation. The
//! routes and their pre-encoded filter-state arguments are kept current by
//! the VM's poller on its tick; counters are plain integers the poller
//! flushes to Envoy's stats on its tick.
//!
//! With `key_route_affinity` on, writes that may qualify are the exception:
//! their body is held until complete (its end, or its trailers), read as it
//! streams from Envoy's buffer ([`body`]), and routed to the key's node
//! ([`crate::affinity`] decides); the answers of CreateTable and
//! DescribeTable are read to learn tables' partition keys. Every other
//! request, and every request with affinity off, takes the path above.
//!
//! With `hosts`, a request whose `:authority` none of them matches is not
//! the filter's: it passes through untouched, and is only counted.

mod body;

use crate::affinity::gzip::{self, Inflate};
use crate::affinity::tables::MAX_ANSWER_BYTES;
use crate::affinity::walk::{Halt, Limit};
use crate::affinity::{self, KeyHashes, Mode, Op};
use crate::clock::Clock;
use crate::error_body::{self, LocalReply};
use crate::filter_state::FOREIGN_FUNCTION;
use crate::health::{flags_from_property, outcome_from_flags};
use crate::host::StreamHost;
use crate::mailbox::{Mailbox, StreakLimits};
use crate::model::authority;
use crate::model::config::Balancing;
use crate::model::health::Outcome;
use crate::routes::{Route, Routes, Sent, Settings};
use crate::vm_state::VmState;
use std::cell::RefCell;
use std::rc::Rc;

/// What Envoy is to do with the request or answer after a callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// Hold it (a body being buffered, or a local reply sent).
    Pause,
}

/// One request, from its headers to the end of its answer: created by the
/// glue per HTTP context, it carries what must be remembered between
/// Envoy's callbacks (the node it went to, whether its body is held, whether
/// its answer is read to learn a key) and nothing it could look up in its
/// VM's routes and mailbox instead.
pub struct Stream {
    /// Envoy's context id of this request, which the VM's poller needs to
    /// send it on should its body never come.
    id: u32,
    /// The VM's routes to pick from and its mailbox to the poller.
    vm: Rc<RefCell<VmState>>,
    /// The node this request went to, to attribute a failure and its load.
    chosen: Option<Sent>,
    /// A write whose body is held for affinity: its operation, and whether
    /// the body is gzip-compressed.
    held: Option<(Op, bool)>,
    /// Whether a held write's body has started to come (Envoy calls the
    /// filter with it), so it is no longer on the poller's waiting list.
    body_coming: bool,
    /// How much of a held write's body Envoy has buffered, as of its last
    /// body callback (what its trailers, if any, complete).
    body_size: usize,
    /// A CreateTable or DescribeTable whose answer may name a partition key,
    /// and whether that answer is gzip-compressed.
    learn: Option<(Op, bool)>,
}

impl Stream {
    /// A request of a VM whose configuration was refused: Envoy does not
    /// send requests to such a filter, but if it did, they would get the
    /// 503 rather than go on unrouted.
    pub fn unconfigured(id: u32) -> Stream {
        let settings = Settings {
            mode: Mode::None,
            verify_node_san: false,
            https: false,
            balancing: Balancing::RoundRobin,
        };
        let limits = StreakLimits {
            connect_failures: 1,
            resets: 1,
        };
        let clock = Rc::new(Clock::new(0, 0, 1_000));
        let vm = VmState::new(Routes::new(settings, 0, clock), limits, &[]);
        Stream::new(id, Rc::new(RefCell::new(vm)))
    }

    pub fn new(id: u32, vm: Rc<RefCell<VmState>>) -> Stream {
        Stream {
            id,
            vm,
            chosen: None,
            held: None,
            body_coming: false,
            body_size: 0,
            learn: None,
        }
    }

    pub fn on_request_headers(&mut self, host: &impl StreamHost, end_of_stream: bool) -> Action {
        // A second handle (a count, not an allocation), so that the VM's
        // state can be borrowed while this stream's fields change.
        let shared = Rc::clone(&self.vm);
        let Ok(mut vm) = shared.try_borrow_mut() else {
            return reject(host, &error_body::NO_NODE);
        };
        // With `hosts`, a request for another host passes untouched: no
        // node handed over, nothing held or read but its authority, and
        // nothing observed on its answer (it has no `chosen`, `held` or
        // `learn`). Without `hosts`, not even the authority is read.
        if let Some(hosts) = vm.routes.hosts() {
            let authority = host.request_header(":authority");
            if !authority::routes(hosts, authority.as_deref()) {
                let counts = vm.mailbox.counts_mut();
                counts.passed = counts.passed.wrapping_add(1);
                return Action::Continue;
            }
        }
        if vm.routes.mode() != Mode::None && self.wait_for_body(host, &mut vm, end_of_stream) {
            return Action::Pause;
        }
        self.route(host, &mut vm, None)
    }

    pub fn on_request_body(
        &mut self,
        host: &impl StreamHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        let Some((op, gzip)) = self.held else {
            return Action::Continue;
        };
        self.body_size = body_size;
        let shared = Rc::clone(&self.vm);
        let Ok(mut vm) = shared.try_borrow_mut() else {
            return Action::Continue;
        };
        if self.sent_on_meanwhile(&mut vm.mailbox) {
            return Action::Continue;
        }
        self.body_comes(&mut vm.mailbox);
        if !end_of_stream {
            // Envoy keeps the chunks; the whole body comes at the end.
            return Action::Pause;
        }
        self.route_held(host, &mut vm, op, gzip)
    }

    /// The request's trailers: its body, if any, is complete. Envoy calls
    /// this instead of a last body callback with `end_of_stream` (HTTP/2
    /// trailers), so a held write is routed here, never resumed without a
    /// node.
    pub fn on_request_trailers(&mut self, host: &impl StreamHost) -> Action {
        let Some((op, gzip)) = self.held else {
            return Action::Continue;
        };
        let shared = Rc::clone(&self.vm);
        let Ok(mut vm) = shared.try_borrow_mut() else {
            // Cannot happen (requests run one at a time); never send it on
            // without a node.
            return reject(host, &error_body::NO_NODE);
        };
        if self.sent_on_meanwhile(&mut vm.mailbox) {
            return Action::Continue;
        }
        self.body_comes(&mut vm.mailbox);
        self.route_held(host, &mut vm, op, gzip)
    }

    /// Whether the poller sent this held request on while its body was
    /// late: then it has a node. Its body coming now says nothing of
    /// Envoy: without `allow_on_headers_stop_iteration` Envoy hands the
    /// filter the body too, once the request goes on.
    fn sent_on_meanwhile(&mut self, mailbox: &mut Mailbox) -> bool {
        let Some(sent) = mailbox.take_sent_on(self.id) else {
            return false;
        };
        self.held = None;
        self.chosen = Some(sent);
        true
    }

    /// The first of a held request's body callbacks (or its trailers),
    /// while it is held: it is no longer on the poller's waiting list, and
    /// Envoy hands this filter bodies after a headers pause.
    fn body_comes(&mut self, mailbox: &mut Mailbox) {
        if !std::mem::replace(&mut self.body_coming, true) {
            mailbox.unhold(self.id);
            if mailbox.body_came() {
                log::info!("a held write's body came: holding writes for their key again");
            }
        }
    }

    /// Reads a held request's whole body and routes it: to its key's node,
    /// or as usual.
    fn route_held(
        &mut self,
        host: &impl StreamHost,
        vm: &mut VmState,
        op: Op,
        gzip: bool,
    ) -> Action {
        self.held = None;
        let read = read_body(host, vm, op, gzip, self.body_size);
        let by_key = match &read {
            Ok(Some(key)) => vm.routes.pick_for_key(key),
            Ok(None) | Err(_) => None,
        };
        let counts = vm.mailbox.counts_mut();
        if by_key.is_some() {
            counts.affinity_routed_by_key = counts.affinity_routed_by_key.wrapping_add(1);
        } else if let Err(Halt::Unread(_)) = read {
            counts.affinity_body_unread = counts.affinity_body_unread.wrapping_add(1);
        } else {
            counts.affinity_fell_back = counts.affinity_fell_back.wrapping_add(1);
        }
        self.route(host, vm, by_key)
    }

    pub fn on_response_headers(&mut self, host: &impl StreamHost) -> Action {
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            let chosen = match self.chosen.take() {
                Some(route) => Some(route),
                None if self.held.is_some() => vm.mailbox.take_sent_on(self.id),
                None => None,
            };
            if let Some(sent) = chosen {
                // Flags are 0 unless something went wrong; a node that
                // answered, whatever its status, is reachable.
                let flags = flags_from_property(host.response_flags().as_deref());
                let outcome = outcome_from_flags(flags);
                if outcome == Outcome::Answered && vm.routes.timed() {
                    let now = vm.routes.now_ns(host.now_nanos());
                    sent.route
                        .load
                        .answered(now.saturating_sub(sent.at_ns), now);
                } else {
                    sent.route.load.released();
                }
                vm.observe_sent(&sent, outcome);
            }
        }
        if let Some((op, _)) = self.learn {
            let ok = host.response_header(":status").as_deref() == Some(b"200");
            let gzip = host.response_header("content-encoding").as_deref() == Some(b"gzip");
            self.learn = ok.then_some((op, gzip));
        }
        Action::Continue
    }

    pub fn on_response_body(
        &mut self,
        host: &impl StreamHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        let Some((op, gzip)) = self.learn else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        self.learn = None;
        if body_size > MAX_ANSWER_BYTES {
            return Action::Continue;
        }
        let learned = whole_body(host.response_body(body_size), gzip)
            .and_then(|body| affinity::tables::learn(op, 200, &body));
        if let (Some((table, attr)), Ok(mut vm)) = (learned, self.vm.try_borrow_mut()) {
            vm.mailbox.remember(&table, &attr);
        }
        Action::Continue
    }

    /// Reads the operation; true when the request is held for its body,
    /// which is read before it is routed. Bodies announced over their
    /// operation's limit ([`affinity::body_limit`]), or not announced at
    /// all, are never held, and counted as not read.
    fn wait_for_body(
        &mut self,
        host: &impl StreamHost,
        vm: &mut VmState,
        end_of_stream: bool,
    ) -> bool {
        let mode = vm.routes.mode();
        let target = host.request_header("x-amz-target").unwrap_or_default();
        let op = Op::from_target(&target);
        if affinity::wants_response_body(mode, op) {
            self.learn = Some((op, false));
        }
        if end_of_stream || !affinity::wants_request_body(mode, op) || !vm.may_hold() {
            return false;
        }
        let announced = host
            .request_header("content-length")
            .and_then(|l| std::str::from_utf8(&l).ok()?.parse::<usize>().ok());
        let fits = announced.is_some_and(|n| n <= affinity::body_limit(op));
        if !fits
            || !vm
                .mailbox
                .hold(self.id, vm.routes.now_ns(host.now_nanos()) / 1_000_000)
        {
            let counts = vm.mailbox.counts_mut();
            counts.affinity_body_unread = counts.affinity_body_unread.wrapping_add(1);
            return false;
        }
        let gzip = host.request_header("content-encoding").as_deref() == Some(b"gzip");
        self.held = Some((op, gzip));
        true
    }

    /// Hands the request to `chosen`, or to the next node round robin.
    fn route(
        &mut self,
        host: &impl StreamHost,
        vm: &mut VmState,
        chosen: Option<Rc<Route>>,
    ) -> Action {
        match hand_off(host, vm, chosen) {
            Some(sent) => {
                self.chosen = Some(sent);
                Action::Continue
            }
            None => Action::Pause,
        }
    }
}

/// A request that ends without an answer releases its node's load; a
/// held one that ends before its body came (the client gave up, or the
/// poller sent it on) leaves the VM's waiting lists.
impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(sent) = self.chosen.take() {
            sent.route.load.released();
        }
        if self.held.is_some() {
            if let Ok(mut vm) = self.vm.try_borrow_mut() {
                vm.mailbox.unhold(self.id);
                if let Some(sent) = vm.mailbox.take_sent_on(self.id) {
                    sent.route.load.released();
                }
            }
        }
    }
}

/// Sends a request on: to `chosen`, or to the node the routes pick (least
/// request or round robin), by handing the node to Envoy. `None` when it
/// was answered with the 503 instead (no node, or Envoy refused the
/// hand-off); Envoy must then keep it paused.
pub fn hand_off(
    host: &impl StreamHost,
    vm: &mut VmState,
    chosen: Option<Rc<Route>>,
) -> Option<Sent> {
    // One clock read, for least-request costs and the latency sample.
    let now = if vm.routes.timed() {
        vm.routes.now_ns(host.now_nanos())
    } else {
        0
    };
    let picked = match chosen {
        Some(route) => Some((route, false)),
        None => vm.routes.pick(now),
    };
    // Only when no node is known at all: while one is, it gets the request
    // even if every node looks Down (panic routing).
    let Some((route, panic)) = picked else {
        let counts = vm.mailbox.counts_mut();
        counts.rejected_no_node = counts.rejected_no_node.wrapping_add(1);
        reject(host, &error_body::NO_NODE);
        return None;
    };
    let mut handed = host.call_foreign(FOREIGN_FUNCTION, &route.args);
    if let (Ok(()), Some(verify)) = (&handed, &route.verify) {
        handed = host.call_foreign(FOREIGN_FUNCTION, verify);
    }
    match handed {
        Ok(()) => {
            let counts = vm.mailbox.counts_mut();
            counts.routed = counts.routed.wrapping_add(1);
            if panic {
                counts.routed_panic = counts.routed_panic.wrapping_add(1);
            }
            route.load.sent(now);
            let generation = route.generation.get();
            Some(Sent {
                route,
                at_ns: now,
                generation,
            })
        }
        Err(e) => {
            // Without the filter state the ORIGINAL_DST cluster would
            // connect to Envoy's own listener address, or the node's
            // certificate would go unchecked: fail closed.
            let counts = vm.mailbox.counts_mut();
            counts.rejected_handoff_refused = counts.rejected_handoff_refused.wrapping_add(1);
            if vm.mailbox.note_refusal() {
                log::error!(
                    "Envoy refused {FOREIGN_FUNCTION} ({e}); requests are answered with 503. \
                     Is this Envoy older than 1.27, or built without that foreign function?"
                );
            }
            reject(host, &error_body::ROUTING_FAILED);
            None
        }
    }
}

/// A held request's body of `body_size` bytes, read as it streams from
/// Envoy's buffer (inflated a piece at a time when it is gzip) to the key
/// it routes by. A body over its operation's limit, or inflating past it or
/// past the gzip ratio, is not read ([`Halt::Unread`]).
fn read_body(
    host: &impl StreamHost,
    vm: &VmState,
    op: Op,
    gzip: bool,
    body_size: usize,
) -> Result<Option<KeyHashes>, Halt> {
    let limit = affinity::body_limit(op);
    if body_size > limit {
        return Err(Halt::Unread(Limit::Size));
    }
    let (mode, tables) = (vm.routes.mode(), vm.mailbox.tables());
    let body = || body::BodyReader::new(host, body_size);
    if gzip {
        let inflated = gzip::inflate_limit(limit, body_size);
        affinity::read_key(mode, op, || Inflate::new(body(), inflated), tables)
    } else {
        affinity::read_key(mode, op, body, tables)
    }
}

/// An answer's body, whole, inflated when it is gzip (`None` when that
/// fails or it inflates past [`MAX_ANSWER_BYTES`]).
fn whole_body(body: Option<Vec<u8>>, gzip: bool) -> Option<Vec<u8>> {
    let body = body?;
    if gzip {
        affinity::inflate_gzip(&body, MAX_ANSWER_BYTES)
    } else {
        Some(body)
    }
}

/// Answers the request locally with the DynamoDB-style 503.
fn reject(host: &impl StreamHost, reply: &LocalReply) -> Action {
    if let Err(e) = host.send_local_reply(reply) {
        log::error!("could not send the 503 answer: {e}");
    }
    Action::Pause
}

#[cfg(test)]
mod tests;
