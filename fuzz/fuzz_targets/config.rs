//! The filter configuration is operator input: anything must give either a
//! `ConfigError` or a `Config` that keeps its promises.
#![no_main]

use alternator_lb_core::model::cidr;
use alternator_lb_core::config::{MAX_HOSTS, MAX_SCOPES};
use alternator_lb_core::model::config::{Config, Scope};
use alternator_lb_core::topology::Topology;
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

/// What `address::checked` promises: no unspecified, multicast or broadcast address.
fn unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

fuzz_target!(|data: &[u8]| {
    match Config::parse(data) {
        Ok(c) => {
            assert!(!c.seeds.is_empty(), "config accepted without seeds");
            assert!(
                c.seeds.windows(2).all(|w| w[0] < w[1]),
                "seeds not sorted and deduplicated: {:?}",
                c.seeds
            );
            assert_ne!(c.port, 0);
            for s in &c.seeds {
                assert_ne!(s.port, 0, "seed {s} has port 0");
                assert!(unicast(s.ip), "seed {s} is not a unicast address");
                assert!(
                    cidr::allowed(&c.allowed_cidrs, &s.ip),
                    "seed {s} is outside {:?}",
                    c.allowed_cidrs
                );
            }
            // The groups are the same seeds, by datacenter, none in two.
            assert!(!c.seed_groups.is_empty());
            let mut grouped: Vec<_> = c.seed_groups.iter().flat_map(|g| g.seeds.clone()).collect();
            let count = grouped.len();
            grouped.sort_unstable();
            grouped.dedup();
            assert_eq!(grouped.len(), count, "a seed in two groups: {:?}", c.seed_groups);
            assert_eq!(grouped, c.seeds);
            assert!(c.seed_groups.iter().all(|g| !g.seeds.is_empty()));
            assert!(c.seed_groups.len() == 1 || c.seed_groups.iter().all(|g| g.datacenter.is_some()));
            // Routing: 1 to 8 distinct scopes, nothing after "cluster".
            assert!((1..=MAX_SCOPES).contains(&c.routing.len()));
            for (i, s) in c.routing.iter().enumerate() {
                assert!(!c.routing[..i].contains(s), "duplicate scope {s:?}");
                if *s == Scope::Cluster {
                    assert_eq!(i + 1, c.routing.len(), "scope after cluster");
                }
            }
            assert!(c.partition_keys.windows(2).all(|w| w[0].0 < w[1].0));
            assert!(c.partition_keys.iter().all(|(t, k)| !t.is_empty() && !k.is_empty()));
            let t = Topology::from_config(&c);
            assert_eq!(t.scopes.len(), c.routing.len());
            assert_eq!(t.query_seeds.len(), t.queries.len());
            assert!(t.scopes.iter().flatten().all(|&q| q < t.queries.len()));
            assert!(t.query_seeds.iter().all(|s| !s.is_empty()));
            assert!(!t.start_seeds.is_empty());
            for q in &t.queries {
                let _ = q.path();
            }
            if let Some(hosts) = &c.hosts {
                assert!((1..=MAX_HOSTS).contains(&hosts.len()), "{} hosts", hosts.len());
                for (i, h) in hosts.iter().enumerate() {
                    assert!(!hosts[..i].contains(h), "duplicate host {h:?}");
                }
            }
            assert!(!c.discovery_cluster.is_empty());
            assert!(c.down_after_failures >= 1);
            assert!(c.down_after_resets >= 1);
            let _ = c.discovery_identity();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
