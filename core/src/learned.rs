//! The partition keys learned from CreateTable and DescribeTable answers,
//! shared by every VM of the Envoy process through one shared-data entry:
//! the VM whose request saw an answer writes it there on its tick, and the
//! others take it up on theirs. What the entry holds is
//! [`crate::affinity::tables`]'s business.

use crate::affinity;
use crate::host::{Host, CAS_ATTEMPTS, CREATE_ONLY};
use crate::model::Quoted;

/// The entry's key: per discovery identity, like the discovery record, and
/// versioned with the entry's own format ([`affinity::tables::FORMAT`]) on
/// top of the record's, which the discovery key already carries.
pub fn key_for(discovery_key: &str) -> String {
    format!("{discovery_key}.v{}.tables", affinity::tables::FORMAT)
}

/// The entry's bytes and CAS, if it exists and can be read.
pub fn read(host: &impl Host, key: &str) -> Option<(Vec<u8>, u32)> {
    host.shared_get(key).ok().flatten()
}

/// Adds `table`'s partition key `attr` to the shared entry. False when the
/// entry kept changing under us (the caller tries again later).
pub fn publish(host: &impl Host, key: &str, table: &str, attr: &str) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = match read(host, key) {
            Some((bytes, cas)) => (Some(bytes), cas),
            None => (None, CREATE_ONLY),
        };
        let next = affinity::with_learned(bytes.as_deref(), table, attr);
        if bytes.as_deref() == Some(next.as_slice()) {
            return true;
        }
        if host.shared_set(key, &next, Some(cas)).is_ok() {
            log::info!(
                "learned the partition key of table {}: {}; its qualifying writes now go to the key's node",
                Quoted(table),
                Quoted(attr)
            );
            return true;
        }
    }
    log::warn!(
        "could not share the partition key of table {} yet; trying again on the next tick",
        Quoted(table)
    );
    false
}
