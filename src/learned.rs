//! The partition keys learned from CreateTable and DescribeTable answers,
//! shared by every VM of the Envoy process through one proxy-wasm
//! shared-data entry: a worker that sees an answer writes it there, and the
//! others pick it up on their tick. What to store is decided in
//! `alternator_lb_core::affinity::tables`.

use crate::abi;
use alternator_lb_core::affinity;
use alternator_lb_core::model::Quoted;

/// Attempts at the compare-and-swap before the news is left for the next
/// answer of that table to publish.
const CAS_ATTEMPTS: usize = 8;

/// The entry's key: per discovery identity, like the discovery state.
pub fn key_for(discovery_key: &str) -> String {
    format!("{discovery_key}.tables")
}

/// The entry's bytes and CAS, if it exists.
pub fn read(key: &str) -> Option<(Option<Vec<u8>>, u32)> {
    let (bytes, cas) = abi::shared_data(key).ok()?;
    Some((bytes, cas?))
}

/// Adds `table`'s partition key `attr` to the shared entry.
pub fn publish(key: &str, table: &str, attr: &str) {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = abi::shared_data(key).unwrap_or((None, None));
        let next = affinity::with_learned(bytes.as_deref(), table, attr);
        if bytes.as_deref() == Some(next.as_slice()) {
            return;
        }
        if abi::set_shared_data(key, &next, cas).is_ok() {
            abi::log!(
                Info,
                "learned the partition key of table {}: {}; its qualifying writes now go to the key's node",
                Quoted(table),
                Quoted(attr)
            );
            return;
        }
    }
    abi::log!(
        Warn,
        "could not share the partition key of table {}; it stays known to one worker until seen again",
        Quoted(table)
    );
}
