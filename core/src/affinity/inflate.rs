//! Raw DEFLATE (RFC 1951) inflated, for the gzip bodies of [`super::gzip`].
//!
//! Written here rather than taken from a library because the module's size
//! is what this path pays for: the general-purpose inflaters carry streaming
//! state, fast lookup tables and window handling that a one-shot inflate of
//! a whole in-memory body never needs (miniz_oxide cost 10-13 KB of the
//! .wasm). Codes are decoded a bit at a time from count and symbol tables
//! (the canonical Huffman codes of RFC 1951 3.2.2), which is small and still
//! far faster than the bodies arrive.
//!
//! Which code sets are accepted follows zlib: over-subscribed ones never;
//! incomplete ones only when they hold one code of one bit, or none at all
//! (a block of literals needs no distance code).

/// Appends the inflated bytes of the one raw DEFLATE stream at the start of
/// `data` to `out`, never growing `out` past `limit` bytes in all; the
/// number of input bytes the stream used (through the byte holding its last
/// bit), or `None` when it is invalid, truncated or too large. Back
/// references reach only this stream's own output, never what `out` held
/// before.
pub(crate) fn inflate(data: &[u8], out: &mut Vec<u8>, limit: usize) -> Option<usize> {
    // Bit positions, a little past the end too, must fit in a usize.
    if data.len() > usize::MAX / 16 {
        return None;
    }
    let start = out.len();
    let mut bits = Bits { data, at: 0 };
    loop {
        let last = bits.take(1);
        // Literal/length code lengths, then distance code lengths.
        let mut lengths = [0u8; 288 + 32];
        let (lit, all) = match bits.take(2) {
            0 => {
                stored(&mut bits, out, limit)?;
                (0, 0)
            }
            // Fixed codes (RFC 1951 3.2.6). All 32 distance codes are made,
            // so that the unused 30 and 31 decode (and are then refused)
            // rather than leave the set incomplete.
            1 => {
                for (symbol, len) in (0..).zip(&mut lengths) {
                    *len = match symbol {
                        0..=143 | 280..=287 => 8,
                        144..=255 => 9,
                        256..=279 => 7,
                        _ => 5,
                    };
                }
                (288, 320)
            }
            2 => dynamic(&mut bits, &mut lengths)?,
            _ => return None,
        };
        if all > 0 {
            let lit_code = Code::new(lengths.get(..lit)?)?;
            let dist_code = Code::new(lengths.get(lit..all)?)?;
            codes(&mut bits, out, start, limit, &lit_code, &dist_code)?;
        }
        if bits.over() {
            return None;
        }
        if last == 1 {
            return Some(bits.at.div_ceil(8));
        }
    }
}

/// The input as a stream of bits, least significant bit of each byte first
/// (RFC 1951 3.1.1). Past the end it reads zeros, and [`Bits::over`] says
/// so: reads need no checks of their own (smaller code), only the loops
/// that could go on reading zeros do.
struct Bits<'a> {
    data: &'a [u8],
    /// The next bit's position: byte `at / 8`, bit `at % 8`.
    at: usize,
}

impl Bits<'_> {
    /// The next `n` bits (at most 16), the first one read lowest.
    fn take(&mut self, n: u32) -> u32 {
        let mut value = 0;
        for i in 0..n {
            let byte = self.data.get(self.at / 8).map_or(0, |&b| u32::from(b));
            value |= ((byte >> (self.at % 8)) & 1) << i;
            self.at += 1;
        }
        value
    }

    /// Whether bits past the end of the data have been read.
    fn over(&self) -> bool {
        self.at.div_ceil(8) > self.data.len()
    }
}

/// Makes room for `n` more bytes in `out`, or `None` past the limit. The
/// capacity doubles (amortized copies) but never beyond the limit, so a bomb
/// costs no more than `limit` bytes.
fn room(out: &mut Vec<u8>, n: usize, limit: usize) -> Option<()> {
    let need = out.len().checked_add(n).filter(|&need| need <= limit)?;
    if need > out.capacity() {
        let grown = out.capacity().saturating_mul(2).min(limit);
        out.reserve_exact(grown.max(need) - out.len());
    }
    Some(())
}

/// A stored block (BTYPE 00): after the rest of the current byte, LEN and
/// NLEN (its one's complement), then LEN bytes as they are.
fn stored(bits: &mut Bits, out: &mut Vec<u8>, limit: usize) -> Option<()> {
    bits.at = bits.at.next_multiple_of(8);
    let len = bits.take(16);
    if bits.take(16) != !len & 0xffff {
        return None;
    }
    let len = len as usize;
    let bytes = bits.data.get(bits.at / 8..)?.get(..len)?;
    room(out, len, limit)?;
    out.extend_from_slice(bytes);
    bits.at += len * 8;
    Some(())
}

/// The data of a Huffman-coded block, through its end-of-block code.
fn codes(
    bits: &mut Bits,
    out: &mut Vec<u8>,
    start: usize,
    limit: usize,
    lit: &Code,
    dist: &Code,
) -> Option<()> {
    loop {
        let symbol = lit.decode(bits);
        if bits.over() {
            return None;
        }
        let Some(length) = symbol.checked_sub(257) else {
            if symbol == 256 {
                return Some(());
            }
            room(out, 1, limit)?;
            out.push(symbol as u8);
            continue;
        };
        // Symbols 286 and 287, distances 30 and 31, codes that are not in
        // the set: invalid.
        let (base, extra) = match length {
            0..=27 => span(length, 4, 3),
            28 => (258, 0),
            _ => return None,
        };
        let length = (base + bits.take(extra)) as usize;
        let symbol = dist.decode(bits);
        if symbol > 29 {
            return None;
        }
        let (base, extra) = span(symbol, 2, 1);
        let distance = (base + bits.take(extra)) as usize;
        if distance > out.len() - start {
            return None;
        }
        room(out, length, limit)?;
        for _ in 0..length {
            // Byte by byte: the copy may overlap what it writes.
            let byte = *out.get(out.len() - distance)?;
            out.push(byte);
        }
    }
}

/// A dynamic-Huffman block's code lengths (BTYPE 10, RFC 1951 3.2.7), into
/// `lengths`: how many are literal/length ones, and how many in all. Both
/// codes' lengths are one sequence (a repeat may run from one into the
/// other), itself Huffman-coded.
fn dynamic(bits: &mut Bits, lengths: &mut [u8]) -> Option<(usize, usize)> {
    let lit = bits.take(5) as usize + 257;
    let all = bits.take(5) as usize + 1 + lit;
    let clen = bits.take(4) as usize + 4;
    if lit > 286 || all - lit > 30 {
        return None;
    }
    for &i in CLEN_ORDER.iter().take(clen) {
        *lengths.get_mut(usize::from(i))? = bits.take(3) as u8;
    }
    let clen = Code::new(lengths.get(..19)?)?;
    let mut i = 0;
    while i < all {
        let (length, repeat) = match clen.decode(bits) {
            symbol @ 0..=15 => (symbol as u8, 1),
            16 => (*lengths.get(i.checked_sub(1)?)?, 3 + bits.take(2)),
            17 => (0, 3 + bits.take(3)),
            18 => (0, 11 + bits.take(7)),
            _ => return None,
        };
        let end = i + repeat as usize;
        if end > all {
            return None;
        }
        lengths.get_mut(i..end)?.fill(length);
        i = end;
    }
    Some((lit, all))
}

/// A canonical Huffman code: how many codes each length (0 to 15 bits) has,
/// and the symbols ordered by code, which is by length and then by symbol.
struct Code {
    count: [u16; 16],
    symbols: [u16; 288],
}

impl Code {
    /// The code with the given length per symbol (0: unused), or `None`
    /// when the lengths over-subscribe the code space, or leave part of it
    /// unused other than with one code of one bit or none at all.
    fn new(lengths: &[u8]) -> Option<Code> {
        let mut code = Code {
            count: [0; 16],
            symbols: [0; 288],
        };
        let mut slots = code.symbols.iter_mut();
        // How much of the code space is left after each length.
        let mut left = 1i32;
        for (len, count) in (0u8..).zip(&mut code.count).skip(1) {
            for (symbol, _) in (0u16..).zip(lengths).filter(|&(_, &l)| l == len) {
                *slots.next()? = symbol;
                *count += 1;
            }
            left = 2 * left - i32::from(*count);
            if left < 0 {
                return None;
            }
        }
        let used = 288 - slots.len();
        if left > 0 && used != usize::from(*code.count.get(1)?) {
            return None;
        }
        Some(code)
    }

    /// The next symbol, or [`NO_SYMBOL`] after 15 bits that are no code of
    /// the set: one bit at a time, while the code read so far is past the
    /// codes of its length (RFC 1951 3.2.2: codes of one length are
    /// consecutive, and the next length's follow the last one doubled).
    fn decode(&self, bits: &mut Bits) -> u32 {
        // The code read; the first code of its length; that code's place
        // in `symbols`.
        let (mut code, mut first, mut index) = (0u32, 0u32, 0u32);
        for &count in self.count.iter().skip(1) {
            code |= bits.take(1);
            let count = u32::from(count);
            if code < first + count {
                let at = index + code.wrapping_sub(first);
                return self
                    .symbols
                    .get(at as usize)
                    .map_or(NO_SYMBOL, |&s| s.into());
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        NO_SYMBOL
    }
}

/// What [`Code::decode`] returns for bits that are no code: past every
/// table.
const NO_SYMBOL: u32 = u32::MAX;

/// The base and extra bit count of length symbol 257 + `symbol` (`group`
/// 4, `offset` 3) or of distance symbol `symbol` (`group` 2, `offset` 1),
/// by the rule RFC 1951 3.2.5's tables follow: the first two groups have no
/// extra bits and each group after them one more, and each base is the
/// previous one plus the number of values the previous symbol covers.
fn span(symbol: u32, group: u32, offset: u32) -> (u32, u32) {
    if symbol < group {
        return (symbol + offset, 0);
    }
    let extra = symbol / group - 1;
    (((group | (symbol % group)) << extra) + offset, extra)
}

/// The order in which a dynamic block gives the code length code's lengths.
const CLEN_ORDER: [u8; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

#[cfg(test)]
mod tests {
    use super::*;
    use miniz_oxide::deflate::core::{
        compress_to_output, create_comp_flags_from_zip_params, CompressionStrategy,
        CompressorOxide, TDEFLFlush, TDEFLStatus,
    };
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// xorshift64: reproducible inputs without a rand crate.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }

        /// JSON-like text: a small vocabulary, numbers, punctuation.
        fn text(&mut self, len: usize) -> Vec<u8> {
            const WORDS: [&str; 12] = [
                "\"TableName\"",
                "\"Item\"",
                "\"pk\"",
                "{\"S\":",
                "\"N\":",
                "alternator",
                "scylla",
                "}",
                ",",
                ":",
                " ",
                "\n",
            ];
            let mut out = Vec::with_capacity(len + 16);
            while out.len() < len {
                if self.below(5) == 0 {
                    out.extend_from_slice(self.next().to_string().as_bytes());
                } else {
                    out.extend_from_slice(WORDS[self.below(WORDS.len())].as_bytes());
                }
            }
            out.truncate(len);
            out
        }

        /// A short pattern over and over, now and then changed.
        fn repetitive(&mut self, len: usize) -> Vec<u8> {
            let period = 1 + self.below(40);
            let mut pattern = self.bytes(period);
            let mut out = Vec::with_capacity(len);
            while out.len() < len {
                if self.below(50) == 0 {
                    let i = self.below(pattern.len());
                    pattern[i] = self.next() as u8;
                }
                out.extend_from_slice(&pattern);
            }
            out.truncate(len);
            out
        }
    }

    /// Raw DEFLATE of `data` by miniz_oxide.
    fn deflate(data: &[u8], level: u8, strategy: CompressionStrategy) -> Vec<u8> {
        let flags = create_comp_flags_from_zip_params(level.into(), 0, strategy as i32);
        let mut compressor = CompressorOxide::new(flags);
        let mut out = Vec::new();
        let (status, _) = compress_to_output(&mut compressor, data, TDEFLFlush::Finish, |b| {
            out.extend_from_slice(b);
            true
        });
        assert_eq!(status, TDEFLStatus::Done);
        out
    }

    fn inflated(data: &[u8], limit: usize) -> Option<(Vec<u8>, usize)> {
        let mut out = Vec::new();
        let used = inflate(data, &mut out, limit)?;
        assert!(out.len() <= limit && out.capacity() <= limit.max(out.len()));
        Some((out, used))
    }

    /// Checks `stream` against miniz_oxide's own inflater: both refuse it,
    /// or both inflate it to the same bytes (and we used at most all of it).
    fn agrees_with_miniz(stream: &[u8]) {
        let theirs = miniz_oxide::inflate::decompress_to_vec(stream).ok();
        let ours = inflated(stream, 1 << 24);
        if let Some((_, used)) = &ours {
            assert!(*used <= stream.len());
        }
        assert_eq!(ours.map(|(out, _)| out), theirs, "{stream:02x?}");
    }

    fn check_round_trip(data: &[u8], stream: &[u8], what: &str) {
        let (out, used) = inflated(stream, data.len()).unwrap_or_else(|| panic!("{what}"));
        assert!(out == data, "{what}");
        assert_eq!(used, stream.len(), "{what}");
        // The stream's end is found exactly: trailing bytes are left alone.
        let mut tailed = stream.to_vec();
        tailed.extend_from_slice(&[0xff, 0x00, 0x1f, 0x8b]);
        assert_eq!(
            inflated(&tailed, data.len()).map(|r| r.1),
            Some(used),
            "{what}"
        );
    }

    #[test]
    fn inflates_what_miniz_oxide_deflates() {
        let mut gen = Gen(0x9e37_79b9_7f4a_7c15);
        let lengths = [
            0, 1, 2, 3, 4, 10, 100, 258, 1000, 4096, 32768, 65535, 65536, 70001,
        ];
        let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
        for len in lengths {
            inputs.push((format!("text {len}"), gen.text(len)));
            inputs.push((format!("repetitive {len}"), gen.repetitive(len)));
            inputs.push((format!("random {len}"), gen.bytes(len)));
            inputs.push((format!("zeros {len}"), vec![0; len]));
        }
        inputs.push(("text 300000".into(), gen.text(300_000)));
        inputs.push(("repetitive 300000".into(), gen.repetitive(300_000)));
        inputs.push(("random 300000".into(), gen.bytes(300_000)));
        let mut seen_types = [false; 3];
        for (what, data) in &inputs {
            for (level, strategy) in [
                (0, CompressionStrategy::Default),
                (1, CompressionStrategy::Default),
                (6, CompressionStrategy::Default),
                (9, CompressionStrategy::Default),
                (6, CompressionStrategy::Fixed),
                (6, CompressionStrategy::HuffmanOnly),
                (6, CompressionStrategy::RLE),
            ] {
                let stream = deflate(data, level, strategy);
                seen_types[usize::from((stream[0] >> 1) & 3)] = true;
                check_round_trip(
                    data,
                    &stream,
                    &format!("{what}, level {level}, {strategy:?}"),
                );
            }
        }
        assert_eq!(seen_types, [true; 3], "stored, fixed and dynamic blocks");
    }

    /// Bits written least significant first, as DEFLATE reads them.
    #[derive(Default)]
    struct Writer {
        out: Vec<u8>,
        bit: u32,
    }

    impl Writer {
        fn put(&mut self, value: u32, n: u32) {
            for i in 0..n {
                if self.bit % 8 == 0 {
                    self.out.push(0);
                }
                *self.out.last_mut().unwrap() |= (((value >> i) & 1) as u8) << (self.bit % 8);
                self.bit += 1;
            }
        }

        /// A Huffman code: its most significant bit first.
        fn code(&mut self, (code, len): Bitcode) {
            for i in (0..len).rev() {
                self.put(code >> i, 1);
            }
        }
    }

    /// A Huffman code's bits and their count.
    type Bitcode = (u32, u32);

    /// The canonical codes of `lengths` (RFC 1951 3.2.2).
    fn codes_of(lengths: &[u8]) -> Vec<Bitcode> {
        let mut count = [0u32; 16];
        for &l in lengths {
            count[l as usize] += 1;
        }
        count[0] = 0;
        let mut next = [0u32; 16];
        let mut code = 0;
        for bits in 1..16 {
            code = (code + count[bits - 1]) << 1;
            next[bits] = code;
        }
        lengths
            .iter()
            .map(|&l| {
                let c = next[l as usize];
                next[l as usize] += 1;
                (c, u32::from(l))
            })
            .collect()
    }

    /// A dynamic block's header giving `lit` and `dist` lengths, sent with
    /// a code length code of 4 bits for each of 0 to 15 (so each length is
    /// its own 4-bit code); its literal/length and distance codes.
    fn dynamic_header(
        w: &mut Writer,
        last: bool,
        lit: &[u8],
        dist: &[u8],
    ) -> (Vec<Bitcode>, Vec<Bitcode>) {
        w.put(u32::from(last), 1);
        w.put(2, 2);
        w.put(lit.len() as u32 - 257, 5);
        w.put(dist.len() as u32 - 1, 5);
        w.put(19 - 4, 4);
        for &symbol in &CLEN_ORDER {
            w.put(if symbol < 16 { 4 } else { 0 }, 3);
        }
        for &l in lit.iter().chain(dist) {
            w.code((u32::from(l), 4));
        }
        (codes_of(lit), codes_of(dist))
    }

    /// Fixed-Huffman literal/length codes.
    fn fixed_lit(symbol: usize) -> Bitcode {
        let mut lengths = [8u8; 288];
        lengths[144..256].fill(9);
        lengths[256..280].fill(7);
        codes_of(&lengths)[symbol]
    }

    /// A fixed block: literals "ab", then a match of `len` 3 at `distance`
    /// (distance symbol `dsym`, no extra bits), then end of block.
    fn fixed_match(dsym: u32) -> Vec<u8> {
        let mut w = Writer::default();
        w.put(1, 1);
        w.put(1, 2);
        w.code(fixed_lit(b'a'.into()));
        w.code(fixed_lit(b'b'.into()));
        w.code(fixed_lit(257));
        w.code((dsym, 5));
        w.code(fixed_lit(256));
        w.out
    }

    #[test]
    fn hand_built_fixed_blocks() {
        // Distances 1 and 2 reach into the output; 3 is past its start.
        assert_eq!(inflated(&fixed_match(0), 100).unwrap().0, b"abbbb");
        assert_eq!(inflated(&fixed_match(1), 100).unwrap().0, b"ababa");
        assert_eq!(inflated(&fixed_match(2), 100), None);
        // Distance codes 30 and 31 exist in the fixed code but mean nothing.
        assert_eq!(inflated(&fixed_match(30), 100), None);
        assert_eq!(inflated(&fixed_match(31), 100), None);
        // Nor do literal/length codes 286 and 287.
        for symbol in [286, 287] {
            let mut w = Writer::default();
            w.put(1, 1);
            w.put(1, 2);
            w.code(fixed_lit(symbol));
            w.code((0, 5));
            w.code(fixed_lit(256));
            assert_eq!(inflated(&w.out, 100), None, "{symbol}");
        }
        // Length 258 both ways: symbol 285, and 284 with all extra bits set
        // (zlib accepts it too).
        for (symbol, extra) in [(285, (0, 0)), (284, (31, 5))] {
            let mut w = Writer::default();
            w.put(1, 1);
            w.put(1, 2);
            w.code(fixed_lit(b'z'.into()));
            w.code(fixed_lit(symbol));
            w.put(extra.0, extra.1);
            w.code((0, 5));
            w.code(fixed_lit(256));
            assert_eq!(inflated(&w.out, 1000).unwrap().0, vec![b'z'; 259]);
        }
    }

    #[test]
    fn back_references_stay_inside_the_stream() {
        // An earlier gzip member's bytes are in `out` but out of reach.
        let mut out = b"earlier member".to_vec();
        assert_eq!(inflate(&fixed_match(2), &mut out, 100), None);
        let mut w = Writer::default();
        w.put(1, 1);
        w.put(1, 2);
        w.code(fixed_lit(257));
        w.code((0, 5));
        w.code(fixed_lit(256));
        let mut out = b"earlier member".to_vec();
        assert_eq!(inflate(&w.out, &mut out, 100), None);
        let mut out = b"earlier ".to_vec();
        let stream = fixed_match(1);
        assert_eq!(inflate(&stream, &mut out, 100), Some(stream.len()));
        assert_eq!(out, b"earlier ababa");
    }

    #[test]
    fn block_types_and_stored_lengths() {
        // BTYPE 11 is reserved, final or not.
        assert_eq!(inflated(&[0x07, 0, 0, 0], 100), None);
        assert_eq!(inflated(&[0x06, 0, 0, 0], 100), None);
        // A stored block: LEN, then NLEN its one's complement.
        let good = [0x01, 5, 0, 0xfa, 0xff, b'h', b'e', b'l', b'l', b'o'];
        assert_eq!(inflated(&good, 5), Some((b"hello".to_vec(), 10)));
        for (at, value) in [(3, 0xfb), (4, 0xfe), (1, 4), (2, 1)] {
            let mut bad = good;
            bad[at] = value;
            assert_eq!(inflated(&bad, 100), None, "{at}");
        }
        // The header's other bits in its byte are skipped; an empty stored
        // block; then a second, final one.
        let two = [0xf8, 0, 0, 0xff, 0xff, 0x01, 1, 0, 0xfe, 0xff, b'!', 0xaa];
        assert_eq!(inflated(&two, 100), Some((b"!".to_vec(), 11)));
    }

    #[test]
    fn code_sets_are_checked_like_zlib() {
        let mut lit = [0u8; 257];
        // Over-subscribed code length code: four codes of one bit.
        let mut w = Writer::default();
        w.put(1, 1);
        w.put(2, 2);
        w.put(0, 5);
        w.put(0, 5);
        w.put(0, 4);
        w.put(0b001_001_001_001, 12);
        w.put(0, 32);
        assert_eq!(inflated(&w.out, 100), None);

        // One literal/length code (end of block, one bit), no distance
        // codes: a valid empty block.
        lit[256] = 1;
        let mut w = Writer::default();
        let (l, _) = dynamic_header(&mut w, true, &lit, &[0]);
        w.code(l[256]);
        assert_eq!(inflated(&w.out, 100), Some((vec![], w.out.len())));
        // The unused half of that one-bit code is refused.
        let mut w = Writer::default();
        dynamic_header(&mut w, true, &lit, &[0]);
        w.code((1, 1));
        w.put(0, 16);
        assert_eq!(inflated(&w.out, 100), None);
        // One literal/length code of two bits: incomplete, refused.
        lit[256] = 2;
        let mut w = Writer::default();
        let (l, _) = dynamic_header(&mut w, true, &lit, &[0]);
        w.code(l[256]);
        assert_eq!(inflated(&w.out, 100), None);

        // Literals and one distance code: the match works.
        let mut lit = [0u8; 258];
        lit[b'x' as usize] = 2;
        lit[256] = 2;
        lit[257] = 1;
        let dist = [0, 0, 0, 1]; // distance 4
        let mut w = Writer::default();
        let (l, d) = dynamic_header(&mut w, true, &lit, &dist);
        for _ in 0..4 {
            w.code(l[b'x' as usize]);
        }
        w.code(l[257]);
        w.code(d[3]);
        w.code(l[256]);
        assert_eq!(inflated(&w.out, 100).unwrap().0, b"xxxxxxx");
        // No distance codes at all: literals alone are fine, a match is not.
        let mut w = Writer::default();
        let (l, _) = dynamic_header(&mut w, true, &lit, &[0]);
        w.code(l[b'x' as usize]);
        w.code(l[256]);
        assert_eq!(inflated(&w.out, 100).unwrap().0, b"x");
        let mut w = Writer::default();
        let (l, _) = dynamic_header(&mut w, true, &lit, &[0]);
        w.code(l[b'x' as usize]);
        w.code(l[257]);
        w.put(0, 32);
        assert_eq!(inflated(&w.out, 100), None);
        // Two distance codes of two bits: incomplete, refused.
        let mut w = Writer::default();
        let (l, _) = dynamic_header(&mut w, true, &lit, &[2, 2]);
        w.code(l[b'x' as usize]);
        w.code(l[256]);
        assert_eq!(inflated(&w.out, 100), None);
        // Over-subscribed literal/length code: three codes of one bit.
        let mut over = lit;
        over[b'x' as usize] = 1;
        over[256] = 1;
        let mut w = Writer::default();
        dynamic_header(&mut w, true, &over, &[1]);
        w.put(0, 32);
        assert_eq!(inflated(&w.out, 100), None);

        // More than 286 literal/length or 30 distance lengths.
        let mut big = [0u8; 287];
        big[b'x' as usize] = 1;
        big[256] = 1;
        let mut w = Writer::default();
        let (l, _) = dynamic_header(&mut w, true, &big[..286], &[0; 30]);
        w.code(l[256]);
        assert_eq!(inflated(&w.out, 100), Some((vec![], w.out.len())));
        let mut w = Writer::default();
        dynamic_header(&mut w, true, &big, &[0; 30]);
        w.code((1, 1));
        assert_eq!(inflated(&w.out, 100), None);
        let mut w = Writer::default();
        dynamic_header(&mut w, true, &big[..286], &[0; 31]);
        w.code((1, 1));
        assert_eq!(inflated(&w.out, 100), None);
    }

    #[test]
    fn code_length_repeats_are_checked() {
        // A code length code for lengths 0 and 2 and the repeats 16, 17, 18.
        let mut clen = [0u8; 19];
        clen[0] = 2;
        clen[2] = 2;
        clen[16] = 2;
        clen[17] = 3;
        clen[18] = 3;
        let c = codes_of(&clen);
        // A final dynamic block of 257 literal/length and 1 distance
        // lengths; then `lengths` (symbol, extra bits) and the data bits.
        let block = |lengths: &[(usize, u32)], data: (u32, u32)| {
            let mut w = Writer::default();
            w.put(1, 1);
            w.put(2, 2);
            w.put(0, 5);
            w.put(0, 5);
            w.put(19 - 4, 4);
            for &symbol in &CLEN_ORDER {
                w.put(u32::from(clen[symbol as usize]), 3);
            }
            for &(symbol, extra) in lengths {
                w.code(c[symbol]);
                w.put(
                    extra,
                    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 7][symbol],
                );
            }
            w.put(data.0, data.1);
            w.out
        };
        // 253 zeros (138 and 115), symbol 253 two bits, 16 copying that to
        // 254 to 256, no distance code. Then codes 00 (253), 10 (255) and
        // 11 (end of block), most significant bit first.
        let good = [(18, 127), (18, 104), (2, 0), (16, 0), (0, 0)];
        let stream = block(&good, (0b11_01_00, 6));
        assert_eq!(inflated(&stream, 100), Some((vec![253, 255], stream.len())));
        // 16 first: nothing to repeat.
        assert_eq!(inflated(&block(&[(16, 0)], (0, 32)), 100), None);
        // Each repeat running past the 258th length.
        for last in [(16, 0), (17, 0), (18, 0)] {
            let mut bad = good.to_vec();
            bad[4] = last;
            assert_eq!(inflated(&block(&bad, (0, 32)), 100), None, "{last:?}");
        }
    }

    #[test]
    fn spans_match_the_rfc_tables() {
        let length_base = [
            3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
            115, 131, 163, 195, 227,
        ];
        let length_extra = [
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5,
        ];
        for i in 0..28 {
            assert_eq!(
                span(i, 4, 3),
                (length_base[i as usize], length_extra[i as usize])
            );
        }
        let distance_base = [
            1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
            1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
        ];
        for i in 0u32..30 {
            let extra = (i / 2).saturating_sub(1);
            assert_eq!(span(i, 2, 1), (distance_base[i as usize], extra));
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let mut gen = Gen(7);
        let data = gen.text(3000);
        for (level, strategy) in [
            (0, CompressionStrategy::Default),
            (6, CompressionStrategy::Default),
            (6, CompressionStrategy::Fixed),
        ] {
            let stream = deflate(&data, level, strategy);
            for cut in 0..stream.len() {
                assert_eq!(inflated(&stream[..cut], 1 << 20), None, "{level} {cut}");
            }
        }
        for stream in [fixed_match(0), vec![0x01, 1, 0, 0xfe, 0xff, 7]] {
            for cut in 0..stream.len() {
                assert_eq!(inflated(&stream[..cut], 100), None);
            }
        }
    }

    #[test]
    fn the_limit_bounds_the_output() {
        let zeros = vec![0u8; 1_000_000];
        let stream = deflate(&zeros, 6, CompressionStrategy::Default);
        assert!(stream.len() < 2000, "{}", stream.len());
        assert_eq!(inflated(&stream, 1000), None);
        assert_eq!(inflated(&stream, 999_999), None);
        assert_eq!(inflated(&stream, 0), None);
        let (out, used) = inflated(&stream, 1_000_000).unwrap();
        assert!(out == zeros && used == stream.len());
        // The limit counts what `out` held before.
        let mut out = vec![1u8; 10];
        assert_eq!(inflate(&stream, &mut out, 1_000_009), None);
        assert!(out.capacity() <= 1_000_009);
        let mut out = vec![1u8; 10];
        assert_eq!(inflate(&stream, &mut out, 1_000_010), Some(stream.len()));
        // Stored blocks too.
        let stored = deflate(&zeros[..5000], 0, CompressionStrategy::Default);
        assert_eq!(inflated(&stored, 4999), None);
        assert_eq!(inflated(&stored, 5000).unwrap().0.len(), 5000);
    }

    #[test]
    fn garbage_never_panics() {
        let mut gen = Gen(0x1234_5678);
        for i in 0..5000 {
            let len = gen.below(300);
            let mut data = gen.bytes(len);
            // Most random first bytes end at once (BTYPE 11, a bad stored
            // length): steer a share into the Huffman block types.
            if let Some(first) = data.first_mut() {
                match i % 3 {
                    0 => *first = (*first & !6) | 2,
                    1 => *first = (*first & !6) | 4,
                    _ => {}
                }
            }
            let limit = if i % 2 == 0 { 1 << 16 } else { gen.below(64) };
            let mut out = Vec::new();
            if let Some(used) = inflate(&data, &mut out, limit) {
                assert!(used <= data.len() && out.len() <= limit);
            }
            agrees_with_miniz(&data);
        }
    }

    #[test]
    fn damaged_streams_agree_with_miniz_oxide() {
        let mut gen = Gen(99);
        for round in 0..300 {
            let data = match round % 3 {
                0 => gen.text(2000),
                1 => gen.repetitive(2000),
                _ => gen.bytes(300),
            };
            let strategy = if round % 2 == 0 {
                CompressionStrategy::Default
            } else {
                CompressionStrategy::Fixed
            };
            let mut stream = deflate(&data, 6, strategy);
            for _ in 0..1 + gen.below(3) {
                let at = gen.below(stream.len());
                stream[at] ^= 1 << gen.below(8);
            }
            agrees_with_miniz(&stream);
        }
    }
}
