//! The log lines a discovery result is worth, written once, by the VM that
//! ran the round: the first list, every change, a recovery, and the
//! failures the throttle lets through ([`crate::log_throttle`]).

use crate::discovery::Event;
use crate::log_throttle::REMINDER_EVERY;
use crate::model::record::SharedState;
use crate::model::NodeAddr;
use crate::topology::Topology;

fn list(nodes: &[NodeAddr]) -> String {
    nodes
        .iter()
        .map(NodeAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many nodes the quarantined and kept lists of a change name; a
/// hostile answer quarantines 1024.
const NAMED_NODES: usize = 10;

/// The first [`NAMED_NODES`] of `nodes`, and how many more there are.
fn few(nodes: &[NodeAddr]) -> String {
    let named = list(nodes.get(..NAMED_NODES).unwrap_or(nodes));
    match nodes.len().saturating_sub(NAMED_NODES) {
        0 => named,
        more => format!("{named}, and {more} more"),
    }
}

/// Logs what `event` (a result from `target`) did to `state`; `error` is
/// why the answer was unusable, if it was.
pub fn event(
    topology: &Topology,
    target: &str,
    state: &SharedState,
    event: &Event,
    error: Option<&String>,
) {
    let query = topology
        .queries
        .get(event.query())
        .map_or_else(String::new, |q| q.to_string());
    let nodes_of = |q: usize| state.list(q).map_or(&[][..], |l| l.nodes.as_slice());
    match event {
        Event::ListChanged {
            query: q,
            added,
            removed,
            total,
            first,
            recovered_after,
            quarantined,
            kept,
            forgotten,
        } => {
            if *recovered_after > 0 {
                log::info!("discovery recovered after {recovered_after} failed attempts ({query})");
            }
            let mut more = String::new();
            if !quarantined.is_empty() {
                more.push_str(&format!(
                    "; quarantined until a probe succeeds: [{}]",
                    few(quarantined)
                ));
            }
            if !kept.is_empty() {
                let whose = if *first { "seeds" } else { "nodes it dropped" };
                more.push_str(&format!(
                    "; the {whose} keep serving until one of its nodes passes a probe: [{}]",
                    few(kept)
                ));
            }
            if *first {
                log::info!(
                    "discovered {total} nodes from {target} ({query}): {}{more}",
                    list(nodes_of(*q))
                );
            } else {
                log::info!(
                    "node list changed, now {total} nodes; added [{}], removed [{}]{more} ({query})",
                    list(added),
                    list(removed),
                );
            }
            if *forgotten > 0 {
                log::info!(
                    "forgot the health history of {forgotten} nodes no list names any more (at most {} are kept)",
                    crate::health::MAX_UNLISTED
                );
            }
        }
        Event::ListUnchanged {
            recovered_after, ..
        } if *recovered_after > 0 => {
            log::info!(
                "discovery recovered after {recovered_after} failed attempts ({query}); node list unchanged"
            );
        }
        Event::Failed {
            consecutive,
            log: true,
            ..
        }
        | Event::EmptyRefused {
            consecutive,
            log: true,
            ..
        } => {
            let kept = if state.discovered() {
                format!("keeping the last good list of {} nodes", state.nodes.len())
            } else {
                "no node discovered yet".to_string()
            };
            let why = if matches!(event, Event::EmptyRefused { .. }) {
                "it listed no node, and no other scope lists any"
            } else {
                error.map_or("unknown error", String::as_str)
            };
            log::warn!(
                "/localnodes from {target} ({query}) failed: {why}; {kept} ({consecutive} failures in a row; \
                 further failures are logged every {REMINDER_EVERY} attempts)",
            );
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn long_node_lists_are_named_in_part() {
        let nodes: Vec<NodeAddr> = (1..=25)
            .map(|i| format!("10.0.0.{i}:8000").parse().unwrap())
            .collect();
        assert_eq!(few(&nodes[..2]), "10.0.0.1:8000, 10.0.0.2:8000");
        let line = few(&nodes);
        assert!(line.starts_with("10.0.0.1:8000, "), "{line}");
        assert!(line.ends_with("10.0.0.10:8000, and 15 more"), "{line}");
    }
}
