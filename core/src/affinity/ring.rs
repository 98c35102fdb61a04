//! A scope's ring: its discovered nodes in the client libraries' canonical
//! order, which every key's order is drawn over.

use crate::model::NodeAddr;

/// `http://IP:PORT` as the libraries spell an endpoint: lowercase, IPv6 in
/// brackets, the scheme's default port left out. The ring is sorted by these
/// strings' bytes (so `10.0.0.10:8000` sorts before `10.0.0.1:8000`).
pub fn canonical(node: &NodeAddr, https: bool) -> String {
    let scheme = if https { "https" } else { "http" };
    let default = if https { 443 } else { 80 };
    let host = match node.ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    if node.port == default {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{}", node.port)
    }
}

/// The discovered nodes in the libraries' canonical order.
pub fn ring(nodes: &[NodeAddr], https: bool) -> Vec<NodeAddr> {
    let mut keyed: Vec<(String, NodeAddr)> =
        nodes.iter().map(|n| (canonical(n, https), *n)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.dedup_by(|a, b| a.0 == b.0);
    keyed.into_iter().map(|(_, n)| n).collect()
}
