//! Host facts the shell needs, in the units the core takes.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds: the one clock every VM of the process shares,
/// which is what the discovery lease in shared data is written in.
pub fn millis(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A seed that differs per VM. proxy-wasm offers no randomness and the module
/// imports nothing but the proxy-wasm ABI (no WASI `random_get`), so it is
/// the host clock's nanoseconds when the VM configures: Envoy starts its
/// worker VMs one after another, so no two read the same instant. The seed
/// only varies starting points (round-robin offset, which node to ask
/// first); nothing depends on it being secret.
pub fn random_seed(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
