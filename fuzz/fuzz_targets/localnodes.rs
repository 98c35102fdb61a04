//! `/localnodes` answers come from the network: any bytes must give either an
//! error or a node list that keeps the documented promises.
//!
//! The first input byte picks the options (bit 0: an `allowed_cidrs` list;
//! bits 1-2: the port; bit 3: loopback seeds), the rest is the body.
#![no_main]

use alternator_lb_core::localnodes::{self, Rules, MAX_DESCRIBED, MAX_NODES};
use alternator_lb_core::model::cidr::{self, Cidr};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

/// What `address::checked` promises: no unspecified, multicast or broadcast address.
fn unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// 169.254.0.0/16 and fe80::/10, written apart from the crate's own check.
fn link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..2] == [169, 254],
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

const PORTS: [u16; 4] = [8000, 1, 65535, 0];

fuzz_target!(|data: &[u8]| {
    let Some((&options, body)) = data.split_first() else {
        return;
    };
    let allowed: Vec<Cidr> = if options & 1 == 1 {
        vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]
    } else {
        Vec::new()
    };
    let port = PORTS[usize::from((options >> 1) & 3)];
    let loopback = options & 8 == 8;
    let rules = Rules {
        port,
        allowed: &allowed,
        loopback,
    };

    match localnodes::parse(body, &rules) {
        Ok(answer) => {
            let nodes = &answer.nodes;
            // Only `[]` may give no node: entries that are all unusable
            // are an error, not an empty datacenter.
            assert!(
                !nodes.is_empty() || body.iter().filter(|b| !b.is_ascii_whitespace()).eq(b"[]"),
                "empty node list accepted from a non-empty array"
            );
            assert!(
                nodes.len() <= MAX_NODES,
                "{} nodes > {MAX_NODES}",
                nodes.len()
            );
            assert!(
                nodes.windows(2).all(|w| w[0] < w[1]),
                "nodes not sorted and deduplicated: {nodes:?}"
            );
            assert!(
                nodes.is_empty() || port != 0,
                "a node with port 0 was accepted"
            );
            assert!(
                answer.refused <= answer.dropped.count,
                "more refused than dropped"
            );
            assert!(
                answer.dropped.described.len() <= MAX_DESCRIBED.min(answer.dropped.count),
                "more descriptions kept than allowed"
            );
            for n in nodes {
                assert_eq!(n.port, port, "{n} does not have the configured port");
                assert!(cidr::allowed(&allowed, &n.ip), "{n} is outside {allowed:?}");
                assert!(unicast(n.ip), "{n} is not a unicast address");
                assert!(!link_local(n.ip), "{n} is link-local");
                assert!(loopback || !n.ip.is_loopback(), "{n} is loopback");
                if let IpAddr::V6(v6) = n.ip {
                    assert!(v6.to_ipv4_mapped().is_none(), "{n} not folded to IPv4");
                }
                // What the filter hands to Envoy must read back as the same node.
                assert_eq!(n.authority().parse(), Ok(*n));
            }
        }
        Err(e) => {
            // The error is logged: formatting it must not panic either.
            let _ = e.to_string();
        }
    }
});
