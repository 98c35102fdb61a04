//! alternator-lb: a proxy-wasm HTTP filter that spreads DynamoDB requests over
//! the live nodes of a ScyllaDB Alternator cluster.
//!
//! This crate is the thin shell on the proxy-wasm SDK: it hands Envoy's
//! callbacks to `alternator_lb_core` and the core's host requests to Envoy,
//! and decides nothing itself.
//!
//! - [`root`]: one root context per VM (every worker thread and the main
//!   thread): configuration, tick and callout answers, for the VM's
//!   `Poller`.
//! - [`http`]: one context per request, for its `Stream`.
//! - [`host`]: the core's host traits, implemented with `proxy_wasm::hostcalls`.

mod host;
mod http;
mod root;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    // Installs the SDK's logger for the `log` macros (the level follows
    // Envoy's once the VM is configured) ...
    proxy_wasm::set_log_level(LogLevel::Info);
    // ... and replaces its panic hook: a panic traps this VM, so say so in
    // Envoy's log, with what the failure policy then does.
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(
            LogLevel::Critical,
            &format!("alternator-lb panicked, this Wasm VM stops (failure_policy applies): {info}"),
        );
    }));
    proxy_wasm::set_root_context(|_| Box::new(root::Root::default()));
}}
