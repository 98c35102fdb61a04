//! Host facts the shell needs, in the units the core takes.

/// Wall-clock milliseconds from the host's nanoseconds: the one clock every
/// VM of the process shares, which is what the discovery lease in shared
/// data is written in.
pub fn millis(nanos: u64) -> u64 {
    nanos / 1_000_000
}

/// A seed that differs per VM. proxy-wasm offers no randomness and the module
/// imports nothing but the proxy-wasm ABI (no WASI `random_get`), so it is
/// the host clock's nanoseconds when the VM configures: Envoy starts its
/// worker VMs one after another, so no two read the same instant. The seed
/// only varies starting points (round-robin offset, which node to ask
/// first); nothing depends on it being secret.
pub fn random_seed(nanos: u64) -> u64 {
    nanos
}
