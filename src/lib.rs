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
//! - [`host`]: the few host facts the shell needs (time, randomness).

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
mod host;
mod http;
mod learned;
mod metrics;
mod root;
mod routes;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    // Replaces the SDK's hook: a panic traps this VM, so say so in Envoy's log
    // (with the failure policy's consequence) before it happens.
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(
            proxy_wasm::types::LogLevel::Critical,
            &format!("alternator-lb panicked, this Wasm VM stops (failure_policy applies): {info}"),
        );
    }));
    proxy_wasm::set_root_context(|_context_id| Box::new(root::Root::new()));
}}
