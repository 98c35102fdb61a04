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
//! alternator-lb/5 <round> <next_due_ms> <last_success_ms> <last_activity_ms> <downs>
//! L <query> <round> <consecutive_failures>   (one per query, 0, 1, 2, ...)
//! F <failed target>                 (of the list above, oldest first)
//! N <node>                          (of the list above, sorted)
//! R <node>                          (the list's retiring nodes, sorted)
//! D <node> <next_probe_ms> <wait_ms> <since_ms> <generation>   (a Down node)
//! Q <node> <next_probe_ms> <wait_ms> <since_ms> <generation>   (a Quarantined node)
//! A <node> <next_probe_ms> <wait_ms> <since_ms> <generation>   (an Active node with a history)
//! ```
//!
//! The union of the lists is not stored: it is recomputed on decode, so the
//! record cannot contradict itself.
//!
//! The first word names the format and changes whenever the lines do (4
//! added the probe wait, which the Down backoff grows from; 5 the count of
//! entries into Down, and per node when it last changed state, its
//! generation, and Active nodes that remember a backoff; and the nodes a
//! list keeps serving until its new nodes are verified). A record in
//! another format is refused like a damaged one, never misread.

use crate::model::health::{Health, HealthState};
use crate::model::record::{QueryList, SharedState, MAX_FAILED};
use crate::model::NodeAddr;
use crate::model::Quoted;
use std::fmt::{self, Write as _};

/// The record's format version: the record's first word is
/// `alternator-lb/<FORMAT>` and its shared-data key carries it too
/// ([`key_for`]). A change to the encoding changes this one line. Because the
/// key differs, an Envoy that swaps module versions in place (same `vm_id`,
/// the old VMs draining while the new ones start) keeps two records side by
/// side, each read only by the VMs that understand it, instead of each side
/// taking the other's record for damage and resetting it.
///
/// `ALTERNATOR_LB_FORMAT` at build time overrides it (`scripts/build`
/// documents it): the end-to-end tests build a second module that way to run
/// two formats in one Envoy.
pub const FORMAT: &str = match option_env!("ALTERNATOR_LB_FORMAT") {
    Some(format) => format,
    None => "5",
};

// The version goes into a key and into a line of space-separated words, so a
// build-time override must be a plain token.
const _: () = assert!(
    is_token(FORMAT),
    "ALTERNATOR_LB_FORMAT must be 1 to 16 ASCII letters, digits, '-' or '_'"
);

const fn is_token(s: &str) -> bool {
    let mut rest = s.as_bytes();
    if rest.is_empty() || rest.len() > 16 {
        return false;
    }
    while let [b, tail @ ..] = rest {
        if !(b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') {
            return false;
        }
        rest = tail;
    }
    true
}

/// The record's first word is this prefix followed by [`FORMAT`].
const MAGIC_PREFIX: &str = "alternator-lb/";

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
/// [`Config::discovery_identity`](crate::model::config::Config::discovery_identity)).
/// Prefixed because Istio gives every plugin of a proxy the same `vm_id`, so
/// all of them share one key space; hashed to keep the key short; versioned
/// with [`FORMAT`], so that builds writing different formats never share a
/// record.
pub fn key_for(identity: &str) -> String {
    // FNV-1a, 64 bit: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in identity.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("alternator_lb.discovery.v{FORMAT}.{h:016x}")
}

impl SharedState {
    pub fn encode(&self) -> Vec<u8> {
        let entries: usize = self
            .lists
            .iter()
            .map(|l| 1 + l.failed.len() + l.nodes.len() + l.retiring.len())
            .sum();
        let mut s = String::with_capacity(64 + 32 * (entries + self.health.len()));
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "{MAGIC_PREFIX}{FORMAT} {} {} {} {} {}",
            self.round, self.next_due_ms, self.last_success_ms, self.last_activity_ms, self.downs
        );
        for (i, list) in self.lists.iter().enumerate() {
            let _ = writeln!(s, "L {i} {} {}", list.round, list.consecutive_failures);
            for f in &list.failed {
                let _ = writeln!(s, "F {f}");
            }
            for n in &list.nodes {
                let _ = writeln!(s, "N {n}");
            }
            for n in &list.retiring {
                let _ = writeln!(s, "R {n}");
            }
        }
        for (n, h) in &self.health {
            let kind = match h.state {
                HealthState::Active => 'A',
                HealthState::Down => 'D',
                HealthState::Quarantined => 'Q',
            };
            let _ = writeln!(
                s,
                "{kind} {n} {} {} {} {}",
                h.next_probe_ms, h.wait_ms, h.since_ms, h.generation
            );
        }
        s.into_bytes()
    }

    /// Reads a record [`SharedState::encode`] wrote. Anything else (another
    /// version, another plugin's value, damage) is an error, never a panic:
    /// shared data is writable by every plugin of the proxy.
    pub fn decode(bytes: &[u8]) -> Result<SharedState, DecodeError> {
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError("not UTF-8".into()))?;
        let mut lines = text.lines();
        let header = lines.next().ok_or_else(|| DecodeError("empty".into()))?;
        let mut fields = header.split(' ');
        let magic = fields.next().and_then(|w| w.strip_prefix(MAGIC_PREFIX));
        if magic != Some(FORMAT) {
            return Err(DecodeError(format!("unknown header {}", Quoted(header))));
        }
        let mut number = |what: &str| -> Result<u64, DecodeError> {
            fields
                .next()
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| DecodeError(format!("bad {what} in header {}", Quoted(header))))
        };
        let mut state = SharedState {
            round: number("round")?,
            next_due_ms: number("next_due_ms")?,
            last_success_ms: number("last_success_ms")?,
            last_activity_ms: number("last_activity_ms")?,
            ..SharedState::default()
        };
        state.downs = fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| DecodeError(format!("bad downs in header {}", Quoted(header))))?;
        if fields.next().is_some() {
            return Err(DecodeError(format!(
                "extra fields in header {}",
                Quoted(header)
            )));
        }
        for line in lines {
            decode_line(&mut state, line)
                .ok_or_else(|| DecodeError(format!("bad line {}", Quoted(line))))?;
        }
        state.refresh_nodes();
        Ok(state)
    }
}

/// Folds one body line into `state`; `None` when the line is malformed or
/// out of place.
fn decode_line(state: &mut SharedState, line: &str) -> Option<()> {
    let mut parts = line.split(' ');
    let kind = parts.next()?;
    let first = parts.next()?;
    let rest: Vec<&str> = parts.by_ref().take(4).collect();
    if parts.next().is_some() {
        return None;
    }
    match (kind, rest.as_slice()) {
        ("L", [round, failures]) => {
            // Lists come in index order, so an index is never a size.
            if first.parse::<usize>().ok()? != state.lists.len() {
                return None;
            }
            state.lists.push(QueryList {
                round: round.parse().ok()?,
                consecutive_failures: failures.parse().ok()?,
                ..QueryList::default()
            });
        }
        ("F", []) => {
            let addr: NodeAddr = first.parse().ok()?;
            let list = state.lists.last_mut()?;
            if list.failed.len() >= MAX_FAILED || list.failed.contains(&addr) {
                return None;
            }
            list.failed.push(addr);
        }
        ("N", []) => {
            let addr: NodeAddr = first.parse().ok()?;
            let list = state.lists.last_mut()?;
            if list.nodes.last().is_some_and(|last| *last >= addr) || !list.retiring.is_empty() {
                return None;
            }
            list.nodes.push(addr);
        }
        ("R", []) => {
            let addr: NodeAddr = first.parse().ok()?;
            let list = state.lists.last_mut()?;
            // At most as many as a list holds: they are a list's nodes.
            if list.retiring.last().is_some_and(|last| *last >= addr)
                || list.retiring.len() >= crate::localnodes::MAX_NODES
            {
                return None;
            }
            list.retiring.push(addr);
        }
        ("A" | "D" | "Q", [next_probe_ms, wait_ms, since_ms, generation]) => {
            let health = Health {
                state: match kind {
                    "A" => HealthState::Active,
                    "D" => HealthState::Down,
                    _ => HealthState::Quarantined,
                },
                next_probe_ms: next_probe_ms.parse().ok()?,
                wait_ms: wait_ms.parse().ok()?,
                since_ms: since_ms.parse().ok()?,
                generation: generation.parse().ok()?,
            };
            state.health.insert(first.parse().ok()?, health);
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::addr;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(
            key_for("a"),
            format!("alternator_lb.discovery.v{FORMAT}.af63dc4c8601ec8c")
        );
        assert_ne!(key_for("a|8000"), key_for("a|8001"));
        // The learned-tables entry sits next to the record, under both
        // formats: the record's (in the discovery key) and its own.
        assert_eq!(
            crate::learned::key_for(&key_for("a")),
            format!(
                "alternator_lb.discovery.v{FORMAT}.af63dc4c8601ec8c.v{}.tables",
                crate::affinity::tables::FORMAT
            )
        );
    }

    fn state() -> SharedState {
        let mut s = SharedState {
            round: 12,
            next_due_ms: 1_700_000_000_123,
            lists: vec![
                QueryList {
                    round: 11,
                    consecutive_failures: 0,
                    failed: vec![],
                    nodes: vec![addr("10.0.0.1:8000"), addr("[fd00::1]:8000")],
                    retiring: vec![addr("10.0.0.5:8000"), addr("10.0.0.6:8000")],
                },
                QueryList {
                    round: 0,
                    consecutive_failures: 3,
                    failed: vec![addr("10.0.0.9:8000"), addr("10.0.0.8:8000")],
                    nodes: vec![],
                    retiring: vec![],
                },
                QueryList {
                    round: 10,
                    consecutive_failures: 1,
                    failed: vec![addr("10.0.0.7:8000")],
                    nodes: vec![addr("10.0.0.1:8000"), addr("10.0.0.2:8000")],
                    retiring: vec![],
                },
                QueryList {
                    round: 9,
                    ..QueryList::default()
                },
            ],
            last_success_ms: 1_700_000_000_000,
            last_activity_ms: 1_700_000_000_001,
            downs: 7,
            ..SharedState::default()
        };
        s.refresh_nodes();
        s.health.insert(
            addr("10.0.0.1:8000"),
            Health {
                state: HealthState::Down,
                next_probe_ms: 5,
                wait_ms: 4_000,
                since_ms: 3,
                generation: 7,
            },
        );
        s.health.insert(
            addr("[fd00::1]:8000"),
            Health {
                state: HealthState::Quarantined,
                next_probe_ms: 6,
                wait_ms: 1_000,
                since_ms: 0,
                generation: 0,
            },
        );
        s.health.insert(
            addr("10.0.0.2:8000"),
            Health {
                state: HealthState::Active,
                next_probe_ms: 0,
                wait_ms: 2_000,
                since_ms: 9,
                generation: 6,
            },
        );
        s
    }

    #[test]
    fn round_trips() {
        let s = state();
        assert_eq!(SharedState::decode(&s.encode()), Ok(s.clone()));
        assert_eq!(
            SharedState::decode(&SharedState::default().encode()),
            Ok(SharedState::default())
        );
    }

    #[test]
    fn the_union_is_recomputed_not_stored() {
        let s = state();
        assert_eq!(
            s.nodes,
            [
                addr("10.0.0.1:8000"),
                addr("10.0.0.2:8000"),
                addr("10.0.0.5:8000"),
                addr("10.0.0.6:8000"),
                addr("[fd00::1]:8000")
            ],
            "the lists' nodes and the ones they keep serving"
        );
        let text = String::from_utf8(s.encode()).unwrap();
        assert_eq!(text.matches("N 10.0.0.1:8000").count(), 2, "{text}");
        assert!(
            text.starts_with(
                "alternator-lb/5 12 1700000000123 1700000000000 1700000000001 7\nL 0 11 0\nN "
            ),
            "{text}"
        );
        assert!(s.discovered());
        assert!(!SharedState::default().discovered());
        assert!(s.has_failed(&addr("10.0.0.8:8000")));
        assert!(!s.has_failed(&addr("10.0.0.1:8000")));
        assert_eq!(s.list(3).map(|l| l.round), Some(9));
        assert!(s.list(4).is_none());
    }

    #[test]
    fn foreign_or_damaged_values_are_errors() {
        let many_failed: String = (0..=MAX_FAILED)
            .map(|i| format!("\nF 10.0.{}.{}:1", i / 250, i % 250 + 1))
            .collect();
        let many_failed = format!("alternator-lb/5 1 2 3 4 0\nL 0 0 0{many_failed}");
        for bad in [
            &b""[..],
            b"hello",
            b"alternator-lb/2 1 2 3 4 5 6",
            // Formats before this one: refused, not misread.
            b"alternator-lb/3 1 2 3 4",
            b"alternator-lb/3 1 2 3 4\nD 10.0.0.1:1 5",
            b"alternator-lb/4 1 2 3 4",
            b"alternator-lb/4 1 2 3 4\nD 10.0.0.1:1 5 1000",
            b"alternator-lb/5 1 2 3 4",
            b"alternator-lb/5 1 2 3 4 5 6",
            b"alternator-lb/5 1 2 x 4 0",
            b"alternator-lb/5 1 2 3 -4 0",
            b"alternator-lb/5 1 2 3 4 4294967296",
            b"alternator-lb/5 1 2 3 4 0\nN 10.0.0.1:1",
            b"alternator-lb/5 1 2 3 4 0\nF 10.0.0.1:1",
            b"alternator-lb/5 1 2 3 4 0\nL 1 0 0",
            b"alternator-lb/5 1 2 3 4 0\nL 0 0 0\nL 0 0 0",
            b"alternator-lb/5 1 2 3 4 0\nL 0 0 0\nL 2 0 0",
            b"alternator-lb/5 1 2 3 4 0\nL 18446744073709551616 0 0",
            b"alternator-lb/5 1 2 3 4 0\nL 0 0 4294967296",
            b"alternator-lb/5 1 2 3 4 0\nL 0 x 0",
            b"alternator-lb/5 1 2 3 4 0\nL 0 0",
            b"alternator-lb/5 1 2 3 4 0\nL 0 0 0 0",
            b"alternator-lb/5 1 2 3 4 0\nL 0 0 0\nN nonsense",
            b"alternator-lb/5 1 2 3 4 0\nL 0 0 0\nN 10.0.0.2:1\nN 10.0.0.1:1",
            b"alternator-lb/5 1 2 3 4 0\nL 0 0 0\nN 10.0.0.1:1\nN 10.0.0.1:1",
            b"alternator-lb/5 1 2 3 4 0\nL 0 0 0\nN 10.0.0.1:1 x",
            b"alternator-lb/5 1 2 3 4 0\nL 0 0 0\nF 10.0.0.1:1\nF 10.0.0.1:1",
            b"alternator-lb/5 1 2 3 4 0\nL 0 0 0\nN",
            b"alternator-lb/5 1 2 3 4 0\nR 10.0.0.1:1",
            b"alternator-lb/5 1 2 3 4 0\nL 0 0 0\nR 10.0.0.2:1\nR 10.0.0.1:1",
            b"alternator-lb/5 1 2 3 4 0\nL 0 0 0\nR 10.0.0.1:1\nN 10.0.0.2:1",
            b"alternator-lb/5 1 2 3 4 0\nL 0 0 0\nR 10.0.0.1:1 x",
            b"alternator-lb/5 1 2 3 4 0\nX 10.0.0.1:1",
            b"alternator-lb/5 1 2 3 4 0\nD 10.0.0.1:1",
            b"alternator-lb/5 1 2 3 4 0\nD 10.0.0.1:1 5",
            b"alternator-lb/5 1 2 3 4 0\nD 10.0.0.1:1 5 6",
            b"alternator-lb/5 1 2 3 4 0\nD 10.0.0.1:1 5 6 7",
            b"alternator-lb/5 1 2 3 4 0\nQ 10.0.0.1:1 x 1 0 0",
            b"alternator-lb/5 1 2 3 4 0\nQ 10.0.0.1:1 1 x 0 0",
            b"alternator-lb/5 1 2 3 4 0\nA 10.0.0.1:1 1 1 x 0",
            b"alternator-lb/5 1 2 3 4 0\nA 10.0.0.1:1 1 1 0 -1",
            b"alternator-lb/5 1 2 3 4 0\nA 10.0.0.1:1 1 1 0 4294967296",
            b"alternator-lb/5 1 2 3 4 0\nD 10.0.0.1:1 5 -6 0 0",
            b"alternator-lb/5 1 2 3 4 0\nD 10.0.0.1:1 5 18446744073709551616 0 0",
            b"alternator-lb/5 1 2 3 4 0\nD 10.0.0.1:1 5 6 7 8 9",
            b"alternator-lb/5 1 2 3 4 0\nD nonsense 5 6 0 0",
            b"alternator-lb/5 1 2 3 4 0\n\n",
            many_failed.as_bytes(),
            b"\xff",
        ] {
            assert!(
                SharedState::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn health_lines_may_name_unlisted_nodes() {
        // Before discovery, seeds can be marked Down; after it, dropped
        // nodes keep their history.
        let s = SharedState::decode(b"alternator-lb/5 1 2 3 4 1\nD 10.0.0.1:1 5 1000 4 1").unwrap();
        assert_eq!(s.health.len(), 1);
        assert!(s.nodes.is_empty());
    }

    #[test]
    fn health_lines_carry_the_backoff_and_the_generation() {
        let text = String::from_utf8(state().encode()).unwrap();
        assert!(
            text.ends_with(
                "D 10.0.0.1:8000 5 4000 3 7\nA 10.0.0.2:8000 0 2000 9 6\nQ [fd00::1]:8000 6 1000 0 0\n"
            ),
            "{text}"
        );
        let s =
            SharedState::decode(b"alternator-lb/5 1 2 3 4 9\nD 10.0.0.1:1 5 16000 4 9").unwrap();
        assert_eq!(s.downs, 9);
        assert_eq!(
            s.health[&addr("10.0.0.1:1")],
            Health {
                state: HealthState::Down,
                next_probe_ms: 5,
                wait_ms: 16_000,
                since_ms: 4,
                generation: 9,
            }
        );
    }
}
