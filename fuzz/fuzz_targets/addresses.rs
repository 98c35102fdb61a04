//! Seed addresses and `allowed_cidrs` entries, as strings.
#![no_main]

use alternator_lb_core::model::NodeAddr;
use alternator_lb_core::model::cidr::Cidr;
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
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    match NodeAddr::parse(s, 8000) {
        Ok(a) => {
            assert_ne!(a.port, 0, "{s:?} gave port 0");
            assert!(unicast(a.ip), "{s:?} gave {a}, not a unicast address");
            // The canonical spelling reads back as the same node, both ways.
            assert_eq!(a.to_string().parse(), Ok(a), "{s:?}");
            assert_eq!(NodeAddr::parse(&a.to_string(), 8000), Ok(a), "{s:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    match s.parse::<Cidr>() {
        Ok(c) => {
            let shown = c.to_string();
            assert_eq!(shown.parse::<Cidr>(), Ok(c), "{s:?} shown as {shown:?}");
        }
        Err(e) => {
            let _ = e.len();
        }
    }
});
