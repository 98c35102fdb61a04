//! `hosts` entries (operator input) and request authorities (anyone's):
//! the input is a pattern, a newline, and an authority. Parsing either
//! never panics, and a pattern that is a plain name or address matches
//! itself, in any case.
#![no_main]

use alternator_lb_core::model::authority::{routes, HostPattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (pattern, authority) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(pattern) = std::str::from_utf8(pattern) else {
        let _ = routes(&[], Some(authority));
        return;
    };
    match pattern.parse::<HostPattern>() {
        Ok(p) => {
            let hosts = [p];
            let _ = routes(&hosts, Some(authority));
            let _ = routes(&hosts, None);
            if !pattern.starts_with('*') {
                assert!(routes(&hosts, Some(pattern.as_bytes())), "{pattern:?}");
                let upper = pattern.to_ascii_uppercase();
                assert!(routes(&hosts, Some(upper.as_bytes())), "{pattern:?}");
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
