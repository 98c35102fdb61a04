//! How fast gzip request bodies are inflated for key route affinity: the
//! filter's own inflater (`affinity::inflate_gzip`, framing and CRC
//! included) against miniz_oxide's raw inflater on the same DEFLATE data.
//! A benchmark that prints figures, not a test:
//!
//!   cargo run --release -p alternator-lb-core --example inflate_speed
//!
//! Natively, with the workspace's release profile (opt-level "z"); V8 runs
//! the `.wasm` somewhat slower, so read the ratio more than the MB/s.

use alternator_lb_core::affinity::inflate_gzip;
use std::time::Instant;

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
    while out.len() < 1 << 20 {
        let (pk, n) = (gen.below(1_000_000), gen.below(1000));
        out.extend_from_slice(
            format!(
                r#"{{"PutRequest":{{"Item":{{"pk":{{"S":"user-{pk}"}},"n":{{"N":"{n}"}}}}}}}},"#
            )
            .as_bytes(),
        );
    }
    out.truncate(1 << 20);
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
    while out.len() < 1 << 20 {
        if gen.below(3) == 0 {
            out.extend_from_slice(gen.below(100_000_000).to_string().as_bytes());
        } else {
            out.extend_from_slice(WORDS[gen.below(WORDS.len() as u64) as usize].as_bytes());
        }
    }
    out.truncate(1 << 20);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                0xedb8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The median of `runs` timings of `f`, in MB/s of `bytes` output.
fn median_mb_s(runs: usize, bytes: usize, mut f: impl FnMut()) -> f64 {
    let mut rates: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            bytes as f64 / 1e6 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[runs / 2]
}

fn main() {
    let mut gen = Gen(5);
    println!("input (1 MiB each)   compressed   inflate_gzip   miniz_oxide (raw)   ratio");
    for (what, data) in [
        ("BatchWriteItem JSON", batch(&mut gen)),
        ("JSON-like text", text(&mut gen)),
    ] {
        let raw = miniz_oxide::deflate::compress_to_vec(&data, 6);
        let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        gz.extend_from_slice(&raw);
        gz.extend_from_slice(&crc32(&data).to_le_bytes());
        gz.extend_from_slice(&(data.len() as u32).to_le_bytes());
        assert_eq!(
            inflate_gzip(&gz, 16 << 20).as_deref(),
            Some(data.as_slice())
        );
        let ours = median_mb_s(21, data.len(), || {
            assert_eq!(
                inflate_gzip(&gz, 16 << 20).map(|v| v.len()),
                Some(data.len())
            );
        });
        let theirs = median_mb_s(21, data.len(), || {
            let out = miniz_oxide::inflate::decompress_to_vec(&raw).unwrap();
            assert_eq!(out.len(), data.len());
        });
        println!(
            "{what:<20} {:>10} B   {ours:>7.0} MB/s   {theirs:>12.0} MB/s   {:>5.2}x",
            gz.len(),
            ours / theirs
        );
    }
}
