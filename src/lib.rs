//! alternator-lb: a proxy-wasm HTTP filter that spreads DynamoDB requests over
//! the live nodes of a ScyllaDB Alternator cluster.
//!
//! This crate is the thin shell: it moves data between Envoy and the
//! decisions in `alternator_lb_core`, and nothing here decides anything that
//! could be tested without a host.
//!
//! - [`root`]: one per VM (every worker thread and the main thread): reads the
//!   configuration, ticks, takes part in discovery, keeps the VM's node list.
//! - [`http`]: one per request: picks the node and hands it to Envoy.
//! - [`abi`] and [`entry`]: the proxy-wasm ABI itself, both directions
//!   (host functions called, callbacks exported), without the SDK.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

mod abi;
mod entry;
mod http;
mod learned;
mod metrics;
mod root;
mod routes;
