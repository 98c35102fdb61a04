//! A held request's body as Envoy buffered it, read a chunk at a time, so
//! that reading a body never copies all of it into the VM's memory (which
//! never shrinks): serde_json takes it as a [`Read`], the gzip inflater as
//! a [`BufRead`].

use crate::host::StreamHost;
use std::io::{self, BufRead, Read};

/// How much of the body is copied from Envoy at a time.
pub const CHUNK: usize = 64 * 1024;

pub struct BodyReader<'h, H> {
    host: &'h H,
    /// The body's size, as Envoy announced it in its last callback.
    size: usize,
    /// Where the next chunk starts.
    next: usize,
    chunk: Vec<u8>,
    /// Bytes of `chunk` read.
    at: usize,
}

impl<'h, H: StreamHost> BodyReader<'h, H> {
    pub fn new(host: &'h H, size: usize) -> BodyReader<'h, H> {
        BodyReader {
            host,
            size,
            next: 0,
            chunk: Vec::new(),
            at: 0,
        }
    }

    fn rest(&self) -> &[u8] {
        self.chunk.get(self.at..).unwrap_or_default()
    }

    /// The next chunk, once the current one is read; nothing past `size`,
    /// and a host that has less ends the body there.
    fn refill(&mut self) {
        if self.at < self.chunk.len() || self.next >= self.size {
            return;
        }
        let want = CHUNK.min(self.size - self.next);
        let mut chunk = self.host.request_body(self.next, want).unwrap_or_default();
        chunk.truncate(want);
        if chunk.is_empty() {
            self.next = self.size;
        }
        self.next += chunk.len();
        self.chunk = chunk;
        self.at = 0;
    }
}

/// Never fails: a host with less data than announced ends the body there.
impl<H: StreamHost> Read for BodyReader<'_, H> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.refill();
        let n = self.rest().len().min(out.len());
        if let (Some(to), Some(from)) = (out.get_mut(..n), self.rest().get(..n)) {
            to.copy_from_slice(from);
        }
        self.at += n;
        Ok(n)
    }
}

impl<H: StreamHost> BufRead for BodyReader<'_, H> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.refill();
        Ok(self.rest())
    }

    fn consume(&mut self, n: usize) {
        self.at = self.at.saturating_add(n).min(self.chunk.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestStream;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn the_body_is_read_in_chunks_and_stops_at_its_size() {
        let body: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let host = TestStream {
            request_body: body.clone(),
            ..TestStream::default()
        };
        let mut reader = BodyReader::new(&host, body.len());
        let mut got = Vec::new();
        let mut chunks = 0;
        loop {
            let piece = reader.fill_buf().unwrap().to_vec();
            if piece.is_empty() {
                break;
            }
            assert!(piece.len() <= CHUNK);
            chunks += 1;
            got.extend_from_slice(&piece);
            reader.consume(piece.len());
        }
        assert_eq!(got, body);
        assert_eq!(chunks, 4);
        // Read a piece at a time: the same bytes.
        let mut reader = BodyReader::new(&host, body.len());
        let mut again = Vec::new();
        let mut piece = vec![0; 1000];
        loop {
            let n = Read::read(&mut reader, &mut piece).unwrap();
            if n == 0 {
                break;
            }
            again.extend_from_slice(&piece[..n]);
        }
        assert_eq!(again, body);
        // A size smaller than what Envoy holds: no more than the size.
        let mut reader = BodyReader::new(&host, 10);
        let mut first = Vec::new();
        reader.read_to_end(&mut first).unwrap();
        assert_eq!(first, &body[..10]);
        // A host that has less than the size: the body ends there.
        let mut reader = BodyReader::new(&host, body.len() + CHUNK);
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        assert_eq!(all, body);
    }
}
