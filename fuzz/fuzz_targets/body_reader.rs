//! The body reader of key route affinity (`affinity::read_key`: serde_json
//! reading the body as it streams, plain or through the gzip inflater a
//! piece at a time) on hostile bodies, inflating to up to 16 MiB
//! (Alternator's request limit):
//!
//! - nothing panics, whatever the bytes;
//! - memory stays bounded: the most this thread allocates at once while a
//!   body is read stays under [`MAX_PEAK`], whether the body is plain or
//!   inflates to 16 MiB (Wasm memory never shrinks: the peak is what stays),
//!   plus what serde_json's scratch buffer takes for the longest string of
//!   the text (reading from an `io::Read`, it holds each string whole; see
//!   `affinity::walk`), at most three times its length while it grows;
//! - the answer does not depend on how the text arrives: the same bytes
//!   whole and in pieces of 1 to 7 bytes give the same result, and a gzip
//!   stream read a piece at a time gives what its inflated bytes give read
//!   plain (when the stream is valid gzip within the limit);
//! - a key found orders every ring into a permutation; a batch has 1 to
//!   `MAX_BATCH_TARGETS` targets.
//!
//! The first input byte picks the mode and operation (bits 0-1: the mode;
//! bits 2-4: the operation) and how the rest is read (bit 5: as gzip: a
//! whole stream when it starts with gzip's magic, else the DEFLATE data of
//! a member, so that a few kilobytes can inflate to 16 MiB; the trailer is
//! then wrong, which only a read to the end notices).
#![no_main]

use alternator_lb_core::affinity::gzip::Inflate;
use alternator_lb_core::affinity::walk::Result;
use alternator_lb_core::affinity::key::MAX_BATCH_TARGETS;
use alternator_lb_core::affinity::{inflate_gzip, order, read_key, KeyHashes, Mode, Op, Tables};
use libfuzzer_sys::fuzz_target;
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The most inflated bytes read: Alternator's request limit.
const LIMIT: usize = 16 * 1024 * 1024;

/// The most memory a read may take at once besides serde_json's scratch
/// buffer: a piece of text (16 KiB), the inflater's window and tables, a
/// key value hashed (4 KiB), a batch's 100 hashes, with room to spare; far
/// below one body.
const MAX_PEAK: usize = 256 * 1024;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call goes to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// `f`'s result and the most it allocated at once.
fn peak<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = f();
    (out, PEAK.load(Relaxed).saturating_sub(base))
}

/// Hands out `step` bytes at a time.
struct Trickle<'a> {
    rest: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(self.rest.len()).min(out.len());
        out[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

/// The length of the longest string in `text` (escapes as written, so at
/// least its decoded length), reading strings as JSON does; an unterminated
/// one counts to the end. What serde_json's scratch buffer may have to hold.
fn longest_string(text: &[u8]) -> usize {
    let (mut longest, mut len, mut inside, mut escaped) = (0, 0, false, false);
    for &b in text {
        if !inside {
            if b == b'"' {
                (inside, len) = (true, 0);
            }
            continue;
        }
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => {
                inside = false;
                longest = longest.max(len);
                continue;
            }
            _ => {}
        }
        len += 1;
    }
    longest.max(len)
}

/// What a gzip stream inflates to before it ends or fails, up to `limit`.
fn inflated_prefix(member: &[u8], limit: usize) -> Vec<u8> {
    let mut inflater = Inflate::new(member, limit);
    let mut out = Vec::new();
    let mut piece = [0u8; 16 * 1024];
    while let Ok(n @ 1..) = inflater.read(&mut piece) {
        out.extend_from_slice(&piece[..n]);
    }
    out
}

const MODES: [Mode; 4] = [Mode::Rmw, Mode::AnyWrite, Mode::Rmw, Mode::None];

fn check(key: &KeyHashes) {
    if let KeyHashes::Batch(hashes) = key {
        assert!((1..=MAX_BATCH_TARGETS).contains(&hashes.len()));
    }
    for ring_len in [1usize, 3, 7] {
        let mut o = order(key, ring_len).expect("a key orders every non-empty ring");
        o.sort_unstable();
        assert!(o.iter().copied().eq(0..ring_len));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, body)) = data.split_first() else {
        return;
    };
    let mode = MODES[usize::from(options & 3)];
    let op = Op::ALL[usize::from(options >> 2 & 7) % Op::ALL.len()];
    let tables = Tables::new(&[
        ("t".to_string(), "pk".to_string()),
        ("u".to_string(), "id".to_string()),
    ]);
    let plain = |text: &[u8]| -> Result<Option<KeyHashes>> { read_key(mode, op, || text, &tables) };

    if options & 0x20 == 0 {
        let (whole, used) = peak(|| plain(body));
        // The text is scanned only when the peak needs the scratch buffer.
        assert!(
            used < MAX_PEAK || used < MAX_PEAK + 3 * longest_string(body),
            "{used} bytes for a plain body"
        );
        if let Ok(Some(key)) = &whole {
            check(key);
        }
        for step in 1..8 {
            let pieces = read_key(mode, op, || Trickle { rest: body, step }, &tables);
            assert_eq!(pieces, whole, "in pieces of {step}");
        }
        return;
    }
    let member = if body.starts_with(&[0x1f, 0x8b]) {
        body.to_vec()
    } else {
        let mut member = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        member.extend_from_slice(body);
        member
    };
    let (streamed, used) = peak(|| read_key(mode, op, || Inflate::new(&member[..], LIMIT), &tables));
    assert!(
        used < MAX_PEAK || used < MAX_PEAK + 3 * longest_string(&inflated_prefix(&member, LIMIT)),
        "{used} bytes to read a gzip body"
    );
    if let Ok(Some(key)) = &streamed {
        check(key);
    }
    // What valid gzip inflates to, read plain, answers the same.
    if let Some(inflated) = inflate_gzip(&member, LIMIT) {
        assert_eq!(plain(&inflated), streamed);
    }
});
