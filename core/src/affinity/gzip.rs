//! Gzip request bodies inflated, so that a compressed write's key can be
//! read.
//!
//! The client libraries compress request bodies of 1 KB and more when asked
//! (`Content-Encoding: gzip`, feature-specs compression.md), and a proxy
//! that routes by key must read through that (it forwards the original
//! bytes unchanged).
//!
//! flate2 (its pure-Rust miniz_oxide backend, the one that builds for
//! wasm32-unknown-unknown) reads the gzip framing (RFC 1952) and inflates.
//! It refuses what a member must not be: another magic or compression
//! method, reserved flag bits, a header CRC (FHCRC) that does not match, a
//! name or comment over 64 KiB, a CRC-32 or ISIZE trailer that does not
//! match the data. The trailer is worth its cost (a CRC is a fraction of
//! the inflating): a body that fails it is one the node will refuse
//! anyway, so nothing is lost by giving it no affinity. Concatenated
//! members (RFC 1952 2.2) are inflated one after the other, as `gzip -d`
//! and zlib's gunzip do; anything else after a member is read as a header
//! that is not one, and refused.

use super::walk::{Limit, PIECE};
use flate2::bufread::MultiGzDecoder;
use std::io::{self, BufRead, Read};

/// How many times its compressed size a gzip body may inflate to. JSON of
/// DynamoDB requests compresses 5 to 20 times; a deflate stream can reach
/// about 1000 (a "bomb"). A body past the ratio is not read further.
pub const MAX_RATIO: usize = 100;

/// Below this many inflated bytes the ratio is not applied: tiny bodies of
/// a few hundred bytes may compress far better than large ones.
pub const RATIO_FREE_BYTES: usize = 64 * 1024;

/// How many bytes a gzip body of `compressed` bytes may inflate to: its
/// operation's `limit`, and [`MAX_RATIO`] times its size (at least
/// [`RATIO_FREE_BYTES`]).
pub fn inflate_limit(limit: usize, compressed: usize) -> usize {
    compressed
        .saturating_mul(MAX_RATIO)
        .max(RATIO_FREE_BYTES)
        .min(limit)
}

/// A gzip stream inflated a piece at a time (the body reader's piece, at
/// most [`PIECE`] bytes), as JSON text for serde_json
/// ([`super::walk::read`]): corrupt gzip (a bad header, data, CRC or
/// length, trailing bytes that are no member) is flate2's error, which makes
/// the body unusable; more than `limit` inflated bytes is
/// [`Limit::Size`]'s ([`Limit::io_error`]), checked as each piece comes, so
/// a body that would inflate to gigabytes costs one piece of memory (and
/// the decoder's window).
pub struct Inflate<R: BufRead> {
    decoder: MultiGzDecoder<R>,
    /// Inflated so far, and the most allowed.
    out: usize,
    limit: usize,
}

impl<R: BufRead> Inflate<R> {
    pub fn new(compressed: R, limit: usize) -> Inflate<R> {
        Inflate {
            decoder: MultiGzDecoder::new(compressed),
            out: 0,
            limit,
        }
    }
}

impl<R: BufRead> Read for Inflate<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // Reading past the last byte of data is what checks the trailer:
        // `Ok(0)` comes only after a good one (and no further member).
        let n = self.decoder.read(out)?;
        if n > self.limit.saturating_sub(self.out) {
            return Err(Limit::Size.io_error());
        }
        self.out += n;
        Ok(n)
    }
}

/// The inflated `body`, whole, or `None` when it is not valid gzip
/// (truncated, corrupt, a CRC or length mismatch, trailing bytes) or would
/// inflate to more than `limit` bytes (checked while inflating, so a small
/// body that inflates to gigabytes costs at most `limit` bytes of memory).
/// For answers that are read whole; request bodies are read piece by
/// piece ([`Inflate`]).
pub fn inflate_gzip(body: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut source = Inflate::new(body, limit);
    let mut piece = vec![0u8; PIECE.min(limit.saturating_add(1))];
    let mut out = Vec::new();
    loop {
        let n = source.read(&mut piece).ok()?;
        if n == 0 {
            return Some(out);
        }
        grow(&mut out, n, limit);
        out.extend_from_slice(piece.get(..n)?);
    }
}

/// Makes room for `more` bytes, doubling as a `Vec` does but never past
/// `limit` (the caller has checked that `more` fits), so that a body just
/// under the limit does not cost twice the limit.
fn grow(out: &mut Vec<u8>, more: usize, limit: usize) {
    let needed = out.len() + more;
    if needed > out.capacity() {
        let target = out
            .capacity()
            .saturating_mul(2)
            .clamp(needed, limit.max(needed));
        out.reserve_exact(target - out.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affinity::MAX_BODY_BYTES;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    const BODY: &[u8] = br#"{"TableName":"t","Item":{"pk":{"S":"hello"}}}"#;

    /// `gzip.compress(BODY, mtime=0)` (Python 3).
    fn python_body() -> Vec<u8> {
        hex(concat!(
            "1f8b0800000000000203ab560a494cca49f54bcc4d55b2522a51d251f22c49cd",
            "55b2aa562ac80691c140d18cd49c9c7ca5dada5a00918ecafa2d000000"
        ))
    }

    /// `gzip.GzipFile(filename="req.json", mtime=0)` holding
    /// `b"second member "`: a member with FNAME.
    fn python_named() -> Vec<u8> {
        hex(concat!(
            "1f8b08080000000002ff7265712e6a736f6e002b4e4dcecf4b51c84dcd4d4a2d",
            "520000e0d1f0d50e000000"
        ))
    }

    /// `gzip.compress(b"\0" * 100000, compresslevel=9, mtime=0)`: 132 bytes.
    fn python_zeros() -> Vec<u8> {
        hex(concat!(
            "1f8b0800000000000203edc13101000000c2a0f54f6d0d0fa000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000000000000000000000000000008057037d9511d4",
            "a0860100"
        ))
    }

    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        crc.sum()
    }

    /// A gzip member holding `data` in stored (uncompressed) DEFLATE blocks,
    /// with the given extra header bytes after the fixed ten: the header
    /// is written here, since its fields are what is tested.
    fn stored(data: &[u8], flags: u8, optional: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut out = vec![0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 255];
        out.extend_from_slice(optional);
        if flags & FHCRC != 0 {
            let crc = crc32(&out) as u16;
            out.extend_from_slice(&crc.to_le_bytes());
        }
        let mut deflate = flate2::write::DeflateEncoder::new(out, flate2::Compression::none());
        deflate.write_all(data).unwrap();
        let mut out = deflate.finish().unwrap();
        out.extend_from_slice(&crc32(data).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    #[test]
    fn the_crc_is_the_standard_one() {
        // The check value of CRC-32 (ISO 3309), which gzip trailers carry.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn inflates_what_python_compresses() {
        assert_eq!(inflate_gzip(&python_body(), 1 << 20).unwrap(), BODY);
        assert_eq!(
            inflate_gzip(&python_named(), 1 << 20).unwrap(),
            b"second member "
        );
        // gzip.compress(b"", mtime=0)
        let empty = hex("1f8b080000000000020303000000000000000000");
        assert_eq!(inflate_gzip(&empty, 0).unwrap(), b"");
    }

    #[test]
    fn concatenated_members_inflate_in_order() {
        let mut two = python_named();
        two.extend_from_slice(&python_body());
        let mut want = b"second member ".to_vec();
        want.extend_from_slice(BODY);
        assert_eq!(inflate_gzip(&two, 1 << 20).unwrap(), want);
        // The limit counts all members together.
        assert_eq!(inflate_gzip(&two, want.len()).unwrap(), want);
        assert_eq!(inflate_gzip(&two, want.len() - 1), None);
    }

    #[test]
    fn optional_header_fields_are_skipped_and_checked() {
        let mut optional = vec![4, 0, b'A', b'B', 0, 0]; // FEXTRA: one empty subfield
        optional.extend_from_slice(b"name.json\0a comment\0");
        let all = FEXTRA | FNAME | FCOMMENT | FHCRC;
        let member = stored(BODY, all, &optional);
        assert_eq!(inflate_gzip(&member, 1 << 20).unwrap(), BODY);
        // FTEXT (bit 0) is only a hint.
        assert_eq!(inflate_gzip(&stored(BODY, 1, &[]), 100).unwrap(), BODY);
        // A wrong header CRC.
        let mut bad = member.clone();
        let crc_at = 10 + optional.len();
        bad[crc_at] ^= 1;
        assert_eq!(inflate_gzip(&bad, 1 << 20), None);
        // Reserved flag bits.
        for bit in [0x20, 0x40, 0x80] {
            assert_eq!(inflate_gzip(&stored(BODY, bit, &[]), 100), None);
        }
        // An FEXTRA length past the end, an unterminated name.
        assert_eq!(inflate_gzip(&stored(b"", FEXTRA, &[0xff, 0xff]), 100), None);
        assert_eq!(inflate_gzip(&stored(b"", FNAME, b"no end"), 100), None);
    }

    #[test]
    fn truncated_or_corrupt_input_is_refused() {
        let good = python_body();
        for len in 0..good.len() {
            assert_eq!(inflate_gzip(&good[..len], 1 << 20), None, "prefix {len}");
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x5a;
            // MTIME (4..8), XFL (8) and OS (9) are not checked.
            if (4..10).contains(&i) {
                assert_eq!(inflate_gzip(&bad, 1 << 20).unwrap(), BODY);
            } else {
                assert_eq!(inflate_gzip(&bad, 1 << 20), None, "byte {i}");
            }
        }
        // The trailer checked: CRC-32, then ISIZE.
        for at in [good.len() - 8, good.len() - 4] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            assert_eq!(inflate_gzip(&bad, 1 << 20), None);
        }
        // Trailing bytes that are not another member.
        for tail in [&b"\0"[..], b"\x1f", b"\x1f\x8b", b"garbage", b"\n"] {
            let mut bad = good.clone();
            bad.extend_from_slice(tail);
            assert_eq!(inflate_gzip(&bad, 1 << 20), None, "{tail:?}");
        }
        // Not gzip at all: raw JSON, a zlib stream, another CM.
        assert_eq!(inflate_gzip(BODY, 1 << 20), None);
        assert_eq!(inflate_gzip(&hex("789c030000000001"), 1 << 20), None);
        let mut cm = good.clone();
        cm[2] = 7;
        assert_eq!(inflate_gzip(&cm, 1 << 20), None);
        // A reserved DEFLATE block type (BTYPE 11).
        let mut bad_block = good[..10].to_vec();
        bad_block.extend_from_slice(&[0x07, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(inflate_gzip(&bad_block, 1 << 20), None);
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let zeros = python_zeros();
        assert_eq!(zeros.len(), 132);
        assert_eq!(inflate_gzip(&zeros, 100_000).unwrap(), vec![0u8; 100_000]);
        assert_eq!(inflate_gzip(&zeros, 99_999), None);
        assert_eq!(inflate_gzip(&zeros, 0), None);
    }

    #[test]
    fn the_body_limit_holds_for_large_stored_bodies() {
        let mut data: Vec<u8> = (0..MAX_BODY_BYTES).map(|i| (i % 251) as u8).collect();
        let at_limit = stored(&data, 0, &[]);
        let got = inflate_gzip(&at_limit, MAX_BODY_BYTES).unwrap();
        assert!(got == data);
        data.push(7);
        assert_eq!(inflate_gzip(&stored(&data, 0, &[]), MAX_BODY_BYTES), None);
    }
}
