//! MurmurHash3 x64_128 with seed 0, first 64-bit half as a signed integer:
//! the partition-key hash ScyllaDB's Alternator client libraries agree on.
//!
//! Not Scylla's token function: tail bytes are taken as unsigned, and the
//! input is the type-prefixed key value, not a serialized partition key.

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

fn fmix(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

fn mix_k1(k1: u64) -> u64 {
    k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
}

fn mix_k2(k2: u64) -> u64 {
    k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
}

/// Little-endian value of up to 8 bytes, each taken as unsigned.
fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

pub fn h1(data: &[u8]) -> i64 {
    let (mut h1, mut h2) = (0u64, 0u64);
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let (a, b) = block.split_at(8);
        h1 ^= mix_k1(le(a));
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= mix_k2(le(b));
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    if tail.len() > 8 {
        h2 ^= mix_k2(le(tail.get(8..).unwrap_or_default()));
    }
    if !tail.is_empty() {
        h1 ^= mix_k1(le(tail.get(..tail.len().min(8)).unwrap_or_default()));
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1.wrapping_add(h2) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// scylladb/alternator-client-golang shared/murmur/murmur_test.go
    /// (TestMurmur3CrossLanguageVectors).
    #[test]
    fn published_raw_vectors() {
        assert_eq!(h1(b""), 0);
        assert_eq!(h1(&[0x01]), 8849112093580131862);
        assert_eq!(h1(b"hello"), -3758069500696749310);
        assert_eq!(h1(b"\x01hello"), 8815023923555918238);
    }

    #[test]
    fn tail_bytes_are_unsigned_and_every_tail_length_is_covered() {
        // B ff0080 from feature-specs/vectors/affinity-hash.tsv.
        assert_eq!(h1(&[0x03, 0xff, 0x00, 0x80]), 14533934253577680);
        // Lengths 0..=40 hash differently (no tail byte is dropped).
        let data: Vec<u8> = (0u8..40).collect();
        let mut seen: Vec<i64> = (0..=40).map(|n| h1(&data[..n])).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 41);
    }
}
