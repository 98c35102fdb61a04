//! Shared data is readable and writable by every plugin of the proxy, so the
//! record may be garbage. Decoding must never panic, and whatever decodes must
//! survive an encode/decode round trip unchanged.
#![no_main]

use alternator_lb_core::model::record::SharedState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match SharedState::decode(data) {
        Ok(state) => {
            // Lists and the nodes they keep serving are sorted sets, and the
            // union is theirs.
            for list in &state.lists {
                assert!(list.nodes.windows(2).all(|w| w[0] < w[1]), "{:?}", list.nodes);
                assert!(list.retiring.windows(2).all(|w| w[0] < w[1]), "{:?}", list.retiring);
            }
            let mut union: Vec<_> = state
                .lists
                .iter()
                .flat_map(|l| l.nodes.iter().chain(&l.retiring).copied())
                .collect();
            union.sort_unstable();
            union.dedup();
            assert_eq!(union, state.nodes);
            let encoded = state.encode();
            assert_eq!(
                SharedState::decode(&encoded),
                Ok(state),
                "round trip changed the state; encoded as {:?}",
                String::from_utf8_lossy(&encoded)
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
