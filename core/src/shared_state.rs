//! The discovery state every VM of one Envoy process shares, and its encoding.
//!
//! Envoy runs one Wasm VM per worker thread plus one on the main thread, and
//! each ticks on its own. They coordinate through one proxy-wasm shared-data
//! entry holding this record, updated only by compare-and-swap: who polls next
//! and when (a lease), which targets failed, and the current node list. One
//! entry rather than several keeps every update atomic.
//!
//! The encoding is a few text lines, cheap to write and to read on a tick, and
//! readable in a debugger:
//!
//! ```text
//! alternator-lb/2 <round> <next_due_ms> <list_round> <consecutive_failures> <last_success_ms> <last_activity_ms>
//! F <failed target>                 (oldest first)
//! N <node>                          (sorted)
//! D <node> <next_probe_ms>          (a Down node)
//! Q <node> <next_probe_ms>          (a Quarantined node)
//! ```

use crate::address::NodeAddr;
use crate::health::{Health, HealthState};
use crate::json::Quoted;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

const MAGIC: &str = "alternator-lb/2";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedState {
    /// Number of discovery rounds started so far; a round is one lease.
    pub round: u64,
    /// Wall-clock milliseconds before which no new round may start.
    pub next_due_ms: u64,
    /// Round whose answer produced `nodes`; 0 while nothing was discovered.
    pub list_round: u64,
    pub consecutive_failures: u32,
    /// Discovery targets that failed since the last success, oldest first.
    pub failed: Vec<NodeAddr>,
    /// The discovered node list, sorted and deduplicated.
    pub nodes: Vec<NodeAddr>,
    /// Wall-clock time of the last usable `/localnodes` answer (0: never).
    pub last_success_ms: u64,
    /// Last time any worker reported requests, at most a second stale.
    pub last_activity_ms: u64,
    /// Nodes that may not take requests; a node not here is Active.
    pub health: BTreeMap<NodeAddr, Health>,
}

/// A shared-data value that is not a record this version wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt shared state: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// The shared-data key for a discovery identity (see
/// [`Config::discovery_identity`](crate::config::Config::discovery_identity)).
/// Prefixed because Istio gives every plugin of a proxy the same `vm_id`, so
/// all of them share one key space; hashed to keep the key short.
pub fn key_for(identity: &str) -> String {
    // FNV-1a, 64 bit: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in identity.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("alternator_lb.discovery.{h:016x}")
}

impl SharedState {
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::with_capacity(64 + 32 * (self.failed.len() + self.nodes.len()));
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "{MAGIC} {} {} {} {} {} {}",
            self.round,
            self.next_due_ms,
            self.list_round,
            self.consecutive_failures,
            self.last_success_ms,
            self.last_activity_ms
        );
        for f in &self.failed {
            let _ = writeln!(s, "F {f}");
        }
        for n in &self.nodes {
            let _ = writeln!(s, "N {n}");
        }
        for (n, h) in &self.health {
            let kind = match h.state {
                HealthState::Down => 'D',
                HealthState::Quarantined => 'Q',
            };
            let _ = writeln!(s, "{kind} {n} {}", h.next_probe_ms);
        }
        s.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<SharedState, DecodeError> {
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError("not UTF-8".into()))?;
        let mut lines = text.lines();
        let header = lines.next().ok_or_else(|| DecodeError("empty".into()))?;
        let mut fields = header.split(' ');
        if fields.next() != Some(MAGIC) {
            return Err(DecodeError(format!("unknown header {}", Quoted(header))));
        }
        let mut number = |what: &str| -> Result<u64, DecodeError> {
            fields
                .next()
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| DecodeError(format!("bad {what} in header {}", Quoted(header))))
        };
        let round = number("round")?;
        let next_due_ms = number("next_due_ms")?;
        let list_round = number("list_round")?;
        let consecutive_failures = u32::try_from(number("consecutive_failures")?)
            .map_err(|_| DecodeError("consecutive_failures out of range".into()))?;
        let last_success_ms = number("last_success_ms")?;
        let last_activity_ms = number("last_activity_ms")?;
        let mut state = SharedState {
            round,
            next_due_ms,
            list_round,
            consecutive_failures,
            last_success_ms,
            last_activity_ms,
            ..SharedState::default()
        };
        for line in lines {
            let bad = || DecodeError(format!("bad line {}", Quoted(line)));
            let mut parts = line.split(' ');
            let (Some(kind), Some(addr)) = (parts.next(), parts.next()) else {
                return Err(bad());
            };
            let addr: NodeAddr = addr.parse().map_err(|_| bad())?;
            let mut state_of = |s| -> Result<(NodeAddr, Health), DecodeError> {
                let next_probe_ms = parts.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
                Ok((
                    addr,
                    Health {
                        state: s,
                        next_probe_ms,
                    },
                ))
            };
            match kind {
                "F" => state.failed.push(addr),
                "N" => state.nodes.push(addr),
                "D" => {
                    let (a, h) = state_of(HealthState::Down)?;
                    state.health.insert(a, h);
                }
                "Q" => {
                    let (a, h) = state_of(HealthState::Quarantined)?;
                    state.health.insert(a, h);
                }
                _ => return Err(bad()),
            }
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn addr(s: &str) -> NodeAddr {
        s.parse().unwrap()
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(key_for("a"), "alternator_lb.discovery.af63dc4c8601ec8c");
        assert_ne!(key_for("a|8000"), key_for("a|8001"));
    }

    #[test]
    fn round_trips() {
        let mut s = SharedState {
            round: 12,
            next_due_ms: 1_700_000_000_123,
            list_round: 11,
            consecutive_failures: 1,
            failed: vec![addr("10.0.0.9:8000")],
            nodes: vec![addr("10.0.0.1:8000"), addr("[fd00::1]:8000")],
            last_success_ms: 1_700_000_000_000,
            last_activity_ms: 1_700_000_000_001,
            health: BTreeMap::new(),
        };
        s.health.insert(
            addr("10.0.0.1:8000"),
            Health {
                state: HealthState::Down,
                next_probe_ms: 5,
            },
        );
        s.health.insert(
            addr("[fd00::1]:8000"),
            Health {
                state: HealthState::Quarantined,
                next_probe_ms: 6,
            },
        );
        assert_eq!(SharedState::decode(&s.encode()), Ok(s.clone()));
        assert_eq!(
            SharedState::decode(&SharedState::default().encode()),
            Ok(SharedState::default())
        );
    }

    #[test]
    fn foreign_or_damaged_values_are_errors() {
        for bad in [
            &b""[..],
            b"hello",
            b"alternator-lb/1 1 2 3 4",
            b"alternator-lb/2 1 2 3 4 5",
            b"alternator-lb/2 1 2 3 x 5 6",
            b"alternator-lb/2 1 2 3 4 5 6\nN nonsense",
            b"alternator-lb/2 1 2 3 4 5 6\nX 10.0.0.1:1",
            b"alternator-lb/2 1 2 3 4 5 6\nN",
            b"alternator-lb/2 1 2 3 4 5 6\nD 10.0.0.1:1",
            b"alternator-lb/2 1 2 3 4 5 6\nQ 10.0.0.1:1 x",
            b"alternator-lb/2 1 2 3 99999999999 5 6",
            b"\xff",
        ] {
            assert!(
                SharedState::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
