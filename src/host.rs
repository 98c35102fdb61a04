//! Host facts the shell needs, in the units the core takes.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds: the one clock every VM of the process shares,
/// which is what the discovery lease in shared data is written in.
pub fn millis(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A random seed from the host (on wasm32-wasip1, std draws its hash keys
/// from WASI `random_get`), mixed with the time so that it differs per VM even
/// if the host's randomness were poor.
pub fn random_seed(now: SystemTime) -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(millis(now));
    h.write_u128(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}
