//! Every decision alternator-lb makes, as plain Rust with no host calls.
//!
//! The proxy-wasm glue in the `alternator-lb` crate only moves bytes between
//! Envoy and these modules: it implements the two host traits of [`host`]
//! with the proxy-wasm SDK and hands Envoy's callbacks to a [`poller`]
//! (one per VM) and a [`stream`] (one per request). Keeping everything else
//! free of host calls is what lets the same unit tests run natively and
//! compiled to WebAssembly, with an in-memory Envoy process standing in for
//! the host, and it keeps each decision in one obvious place:
//!
//! | decision                                   | module          |
//! |--------------------------------------------|-----------------|
//! | the data every decision works on (addresses, ranges, configuration, health, the shared record) | [`model`] |
//! | whether a configuration is acceptable, one module per key group | [`config`] |
//! | whether a request is the filter's, by its `:authority` (`hosts`) | [`model::authority`] |
//! | what a `/localnodes` answer means           | [`localnodes`]  |
//! | which `/localnodes` questions the routing scopes need | [`topology`] |
//! | who polls, when, whom, and what a result does to the shared record | [`discovery`] |
//! | which nodes may take requests (Active, Quarantined, Down) | [`health`] |
//! | how the record is stored in shared data     | [`shared_state`] |
//! | what the filter needs from its host         | [`host`]        |
//! | how a VM takes part: ticks, leases, callouts, publishing | [`poller`] |
//! | a VM's own time, monotonic and agreed between VMs | [`clock`]  |
//! | what a VM routes over (scopes, rings, panic order), rebuilt from the record | [`routes`] |
//! | what a VM's requests and its poller leave each other (held requests, failure streaks, unreachable nodes, learned keys, counts) | [`mailbox`] |
//! | the routes and the mailbox as one VM's state, and the steps that need both | [`vm_state`] |
//! | which node of a scope the next request goes to | [`picker`], [`load`], [`rng`] |
//! | one request's way: hold, route, hand off, observe | [`stream`] |
//! | which writes a VM holds for their body, and whether it holds any | [`hold`] |
//! | which node a partition key's writes go to, and learning keys | [`affinity`], [`learned`] |
//! | the bytes handed to Envoy                   | [`filter_state`], [`error_body`] |
//! | the filter's stats                          | [`metrics`]     |
//! | when a repeated failure is worth a log line | [`log_throttle`] |
//!
//! Imports run one way: [`model`] imports nothing else of the crate, and
//! no module imports one that imports it back.

// The lints are the workspace's (Cargo.toml); clippy.toml frees tests of
// the ones it has a setting for, and this line of the two it has none for.
#![cfg_attr(test, allow(clippy::string_slice, clippy::unreachable))]

pub mod affinity;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod error_body;
pub mod filter_state;
pub mod health;
pub mod hold;
pub mod host;
pub mod learned;
pub mod load;
pub mod localnodes;
pub mod log_throttle;
pub mod mailbox;
pub mod metrics;
pub mod model;
pub mod picker;
pub mod poller;
pub mod rng;
pub mod routes;
pub mod shared_state;
pub mod stream;
pub mod topology;
pub mod vm_state;

#[cfg(test)]
mod testing;

#[cfg(test)]
#[global_allocator]
static ALLOCATOR: testing::alloc::Counting = testing::alloc::Counting;

#[cfg(all(test, target_arch = "wasm32"))]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_node_experimental);
