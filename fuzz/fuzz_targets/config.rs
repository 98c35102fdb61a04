//! The filter configuration is operator input: anything must give either a
//! `ConfigError` or a `Config` that keeps its promises.
#![no_main]

use alternator_lb_core::cidr;
use alternator_lb_core::config::Config;
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
            assert!(!c.discovery_cluster.is_empty());
            assert!(c.down_after_failures >= 1);
            let _ = c.discovery_identity();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
