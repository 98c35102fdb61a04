//! What a gzip-compressed write costs key route affinity: inflating the body
//! (`affinity::inflate_gzip`, flate2 with its CRC-32 and length checks), then
//! reading the key from it (`affinity::key`). A benchmark that prints
//! figures, not a test:
//!
//!   cargo run --release -p alternator-lb-core --example inflate_speed
//!
//! Natively, with the workspace's release profile (opt-level "z"); V8 runs
//! the `.wasm` somewhat slower. The two inputs are the ones the filter's
//! earlier, hand-written inflater was measured on (docs/benchmarks.md), so the
//! figures compare.

// A measurement run by hand on inputs it builds itself: a panic is a fine
// way for it to stop, unlike in the filter the workspace's lints guard.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use alternator_lb_core::affinity::{inflate_gzip, key, KeyHashes, Mode, Op, Tables};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// xorshift64: reproducible inputs without a dependency.
struct Gen(u64);

impl Gen {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// 1 MiB of BatchWriteItem-like JSON (repetitive, compresses well).
fn batch(gen: &mut Gen) -> Vec<u8> {
    let mut out = br#"{"RequestItems":{"orders":["#.to_vec();
    while out.len() < MIB {
        let (pk, n) = (gen.below(1_000_000), gen.below(1000));
        out.extend_from_slice(
            format!(
                r#"{{"PutRequest":{{"Item":{{"pk":{{"S":"user-{pk}"}},"n":{{"N":"{n}"}}}}}}}},"#
            )
            .as_bytes(),
        );
    }
    out.truncate(MIB);
    out
}

/// 1 MiB of JSON-like text with random words and numbers (compresses less).
fn text(gen: &mut Gen) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "\"TableName\"",
        "\"Item\"",
        "{\"S\":",
        "\"N\":",
        "alternator",
        "scylla",
        ",",
        "}",
    ];
    let mut out = Vec::new();
    while out.len() < MIB {
        if gen.below(3) == 0 {
            out.extend_from_slice(gen.below(100_000_000).to_string().as_bytes());
        } else {
            out.extend_from_slice(WORDS[gen.below(WORDS.len() as u64) as usize].as_bytes());
        }
    }
    out.truncate(MIB);
    out
}

/// A PutItem of about 1 MiB: many attributes, the key attribute last, so
/// that reading the key means reading the whole item.
/// A PutItem of about 1 MiB whose key comes last: some 3,000 attributes of
/// 300-letter strings, so the reader looks at fewer members than its cap
/// (walk::MAX_ENTRIES) and must still pass over the whole item.
fn put_item(gen: &mut Gen) -> Vec<u8> {
    let mut out = br#"{"TableName":"orders","Item":{"#.to_vec();
    let mut i = 0;
    while out.len() < MIB - 400 {
        let value: String = (0..300)
            .map(|_| char::from(b'a' + gen.below(26) as u8))
            .collect();
        out.extend_from_slice(format!(r#""attr{i}":{{"S":"{value}"}},"#).as_bytes());
        i += 1;
    }
    out.extend_from_slice(
        br#""pk":{"S":"user-42"}},"ConditionExpression":"attribute_not_exists(pk)"}"#,
    );
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// The median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let mut gen = Gen(5);
    let limit = 16 << 20;
    println!("input (1 MiB each)     compressed    inflate_gzip            key()");
    for (what, data, is_key) in [
        ("BatchWriteItem JSON", batch(&mut gen), false),
        ("JSON-like text", text(&mut gen), false),
        ("PutItem, 1 MiB item", put_item(&mut gen), true),
    ] {
        let gz = gzip(&data);
        assert_eq!(inflate_gzip(&gz, limit).as_deref(), Some(data.as_slice()));
        let inflate = median(21, || {
            assert_eq!(inflate_gzip(&gz, limit).map(|v| v.len()), Some(data.len()));
        });
        let tables = Tables::new(&[("orders".to_string(), "pk".to_string())]);
        let key_time = is_key.then(|| {
            let got = key(Mode::Rmw, Op::PutItem, &data, &tables);
            assert!(matches!(got, Some(KeyHashes::Single(_))), "{got:?}");
            median(21, || {
                assert!(key(Mode::Rmw, Op::PutItem, &data, &tables).is_some());
            })
        });
        println!(
            "{what:<20} {:>10} B   {:>6.0} MB/s {:>6.2} ms   {}",
            gz.len(),
            data.len() as f64 / 1e6 / inflate.as_secs_f64(),
            ms(inflate),
            key_time.map_or("-".to_string(), |t| format!("{:.2} ms", ms(t)))
        );
    }
}
