//! core's JSON reader against serde_json: whatever serde_json accepts (within
//! core's nesting limit) core must accept and read to the same tree; what
//! core accepts must read back from its own output; nothing may panic.
#![no_main]

use alternator_lb_core::json::{self, Json, MAX_DEPTH};
use libfuzzer_sys::fuzz_target;

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Numbers compared by value (serde_json rewrites them), members by key
/// (serde_json sorts them and keeps the last of duplicates).
fn same(ours: &Json, theirs: &serde_json::Value) -> bool {
    match (ours, theirs) {
        (Json::Null, serde_json::Value::Null) => true,
        (Json::Bool(a), serde_json::Value::Bool(b)) => a == b,
        (Json::Number(a), serde_json::Value::Number(b)) => {
            // serde_json's default float reading may round the last bit
            // differently from the standard library's.
            b.to_string() == *a
                || matches!((a.parse::<f64>(), b.as_f64()),
                    (Ok(x), Some(y)) if x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15)
        }
        (Json::String(a), serde_json::Value::String(b)) => a == b,
        (Json::Array(a), serde_json::Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Json::Object(a), serde_json::Value::Object(b)) => b.iter().all(|(k, v)| {
            a.iter().rev().find(|(ak, _)| ak == k).is_some_and(|(_, av)| same(av, v))
        }) && a.iter().all(|(k, _)| b.contains_key(k)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let ours = json::parse(data);
    if let Ok(theirs) = serde_json::from_slice::<serde_json::Value>(data) {
        if depth(&theirs) <= MAX_DEPTH {
            let ours = ours.as_ref().expect("serde_json accepted what core refused");
            assert!(same(ours, &theirs), "different trees: {ours:?} vs {theirs:?}");
        }
    }
    match ours {
        Ok(v) => {
            let text = v.to_string();
            assert_eq!(json::parse(text.as_bytes()).as_ref(), Ok(&v), "{text}");
        }
        Err(e) => {
            assert!(e.offset <= data.len());
            let _ = e.to_string();
        }
    }
});
