//! `fake-node`: a fast fake Alternator cluster for benchmarks.
//!
//! ```text
//! fake-node --port P [--delay ADDR=MS ...] ADDR [ADDR ...]
//!     e.g. fake-node --port 8000 127.9.9.1 127.9.9.2 127.9.9.3
//!          fake-node --port 8000 --delay 127.9.9.3=150 127.9.9.1 127.9.9.2 127.9.9.3
//! ```
//!
//! Listens on every `ADDR:P` (all nodes share one port, like Alternator's
//! `alternator_port`; with `--port 0` the kernel picks a port for the first
//! address and the others reuse it) and answers HTTP/1.1 with keep-alive and
//! pipelining:
//!
//! * `POST /` (any body, read fully by `Content-Length` or chunked):
//!   200, `application/x-amz-json-1.0`, body `{}`: a DynamoDB request;
//! * `GET /localnodes[?...]`: a JSON array of all the listen addresses;
//! * `GET /`: 200 `healthy: <Host>`, Alternator's health check;
//! * `GET /stats`: the per-address request counts as JSON, with each
//!   address's `delay_ms` (not counted);
//! * anything else: 404.
//!
//! `--delay ADDR=MS` (repeatable, ADDR one of the listen addresses, MS in
//! milliseconds, decimals allowed) makes that node a slow one: every
//! `POST /` it receives is answered MS after the request arrived complete.
//! Health checks, `/localnodes` and `/stats` stay immediate, so a load
//! balancer sees a node that is alive but slow to serve data, the case
//! least-request balancing exists for. The delay is a sleep of that
//! connection's own thread: other connections, to the slow node or to the
//! others, are not held up, and a slow node accepts any number of requests
//! at once (its latency does not grow with load). Pipelined requests are
//! still answered in order: answers queued before the first delayed one go
//! out at once, the rest when the delay has passed (requests that arrived
//! together share one delay rather than adding up).
//!
//! Prints `fake-node listening on port P: ADDR ...` once every address
//! listens (followed by `(delayed: ADDR MS ms ...)` when some are), and the
//! counts (the `/stats` JSON) on SIGTERM or SIGINT before exiting. One
//! thread per connection: the backend must never be the bottleneck of an
//! Envoy benchmark, and a blocking loop that parses every complete request
//! in its buffer and answers them with one write is cheap enough (well over
//! 50k req/s per core on loopback).
//!
//! Std only, no dependencies.

// A benchmark's backend, not the filter: its HTTP parsing slices buffers at
// offsets it has just checked, and a panic would end one connection's
// thread of a test tool, so the workspace's panic lints do not apply here.
#![allow(clippy::indexing_slicing, clippy::string_slice)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest chunked body buffered (Content-Length bodies are streamed away).
const MAX_CHUNKED: usize = 32 * 1024 * 1024;
/// Longest `--delay`: anything longer is a typo (or seconds meant as ms),
/// and clients time out long before.
const MAX_DELAY_MS: f64 = 600_000.0;

#[derive(Default)]
struct Counters {
    dynamodb: AtomicU64,
    localnodes: AtomicU64,
    health: AtomicU64,
    other: AtomicU64,
    connections: AtomicU64,
}

struct Cluster {
    addrs: Vec<IpAddr>,
    counters: Vec<Counters>,
    /// Per address: how long its `POST /` answers are held (`--delay`).
    delays: Vec<Option<Duration>>,
    localnodes_body: Vec<u8>,
}

impl Cluster {
    fn new(addrs: Vec<IpAddr>) -> Self {
        let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        Cluster {
            counters: addrs.iter().map(|_| Counters::default()).collect(),
            delays: addrs.iter().map(|_| None).collect(),
            localnodes_body: format!("[{}]", list.join(",")).into_bytes(),
            addrs,
        }
    }

    /// Applies `--delay` settings; refuses an address that is not listened
    /// on (a delay that silently applies to nothing would make a slow-node
    /// benchmark measure equal nodes).
    fn with_delays(mut self, delays: &[(IpAddr, Duration)]) -> Result<Self, String> {
        for (ip, d) in delays {
            let node = self
                .addrs
                .iter()
                .position(|a| a == ip)
                .ok_or_else(|| format!("--delay {ip}: not one of the listen addresses"))?;
            self.delays[node] = Some(*d);
        }
        Ok(self)
    }

    fn stats_json(&self) -> String {
        let nodes: Vec<String> = self
            .addrs
            .iter()
            .zip(&self.counters)
            .zip(&self.delays)
            .map(|((a, c), d)| {
                format!(
                    "\"{a}\":{{\"dynamodb\":{},\"localnodes\":{},\"health\":{},\"other\":{},\"connections\":{},\"delay_ms\":{}}}",
                    c.dynamodb.load(Ordering::Relaxed),
                    c.localnodes.load(Ordering::Relaxed),
                    c.health.load(Ordering::Relaxed),
                    c.other.load(Ordering::Relaxed),
                    c.connections.load(Ordering::Relaxed),
                    d.map_or(0.0, |d| d.as_secs_f64() * 1e3),
                )
            })
            .collect();
        format!("{{\"nodes\":{{{}}}}}", nodes.join(","))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Route {
    DynamoDb,
    LocalNodes,
    Health,
    Stats,
    NotFound,
}

#[derive(Debug, PartialEq)]
enum BodyKind {
    Length(u64),
    Chunked,
}

#[derive(Debug, PartialEq)]
struct Head {
    len: usize,
    route: Route,
    head_only: bool,
    host: Vec<u8>,
    body: BodyKind,
    close: bool,
}

#[derive(Debug, PartialEq)]
enum Parsed {
    Incomplete,
    Bad(&'static str),
    Request(Head),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token))
}

/// Parses one request head at the start of `buf`.
fn parse_head(buf: &[u8]) -> Parsed {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Parsed::Bad("431 Request Header Fields Too Large")
        } else {
            Parsed::Incomplete
        };
    };
    let mut lines = buf[..end]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad("400 Bad Request");
    };
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Parsed::Bad("505 HTTP Version Not Supported"),
    };
    let mut close = http10;
    let mut body = BodyKind::Length(0);
    let mut host = Vec::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Parsed::Bad("400 Bad Request");
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            match std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            {
                Some(n) if body != BodyKind::Chunked => body = BodyKind::Length(n),
                Some(_) => {}
                None => return Parsed::Bad("400 Bad Request"),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if has_token(value, b"chunked") {
                body = BodyKind::Chunked;
            } else {
                return Parsed::Bad("501 Not Implemented");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            if has_token(value, b"close") {
                close = true;
            } else if has_token(value, b"keep-alive") {
                close = false;
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            host = value.to_vec();
        }
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let get = method == b"GET" || method == b"HEAD";
    let route = match (get, method, path) {
        (true, _, b"/") => Route::Health,
        (true, _, b"/localnodes") => Route::LocalNodes,
        (true, _, b"/stats") => Route::Stats,
        (false, b"POST", b"/") => Route::DynamoDb,
        _ => Route::NotFound,
    };
    Parsed::Request(Head {
        len: end + 4,
        route,
        head_only: method == b"HEAD",
        host,
        body,
        close,
    })
}

/// Length of a complete chunked body (with trailers) at the start of `buf`,
/// `Ok(None)` if more bytes are needed.
fn chunked_len(buf: &[u8]) -> Result<Option<usize>, &'static str> {
    let mut pos = 0;
    loop {
        let Some(eol) = find(&buf[pos..], b"\r\n") else {
            return Ok(None);
        };
        let line = &buf[pos..pos + eol];
        let size_hex = trim(line.split(|&b| b == b';').next().unwrap_or_default());
        let size = std::str::from_utf8(size_hex)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or("400 Bad Request")?;
        pos += eol + 2;
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let Some(eol) = find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        if pos + size + 2 > buf.len() {
            return Ok(None);
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err("400 Bad Request");
        }
        pos += size + 2;
    }
}

const DYNAMODB_OK: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: 2\r\n\r\n{}";
const DYNAMODB_OK_CLOSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";

/// Answers a request that cannot be served and asks to close the
/// connection (the rest of the stream cannot be trusted); returns `true`,
/// the new "closing" state.
fn refuse(out: &mut Vec<u8>, status: &str, body: &[u8]) -> bool {
    respond(out, status, "text/plain", body, false, true);
    true
}

fn respond(
    out: &mut Vec<u8>,
    status: &str,
    ctype: &str,
    body: &[u8],
    head_only: bool,
    close: bool,
) {
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
        .as_bytes(),
    );
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Answers a request whose body has been read completely.
fn answer(cluster: &Cluster, node: usize, head: &Head, out: &mut Vec<u8>) {
    let c = &cluster.counters[node];
    match head.route {
        Route::DynamoDb => {
            c.dynamodb.fetch_add(1, Ordering::Relaxed);
            out.extend_from_slice(if head.close {
                DYNAMODB_OK_CLOSE
            } else {
                DYNAMODB_OK
            });
        }
        Route::LocalNodes => {
            c.localnodes.fetch_add(1, Ordering::Relaxed);
            respond(
                out,
                "200 OK",
                "application/json",
                &cluster.localnodes_body,
                head.head_only,
                head.close,
            );
        }
        Route::Health => {
            c.health.fetch_add(1, Ordering::Relaxed);
            let mut body = b"healthy: ".to_vec();
            body.extend_from_slice(&head.host);
            respond(
                out,
                "200 OK",
                "text/plain",
                &body,
                head.head_only,
                head.close,
            );
        }
        Route::Stats => {
            let body = cluster.stats_json();
            respond(
                out,
                "200 OK",
                "application/json",
                body.as_bytes(),
                head.head_only,
                head.close,
            );
        }
        Route::NotFound => {
            c.other.fetch_add(1, Ordering::Relaxed);
            respond(
                out,
                "404 Not Found",
                "text/plain",
                b"not found",
                head.head_only,
                head.close,
            );
        }
    }
}

/// Answers a complete request like [`answer`]; on a delayed node, a
/// DynamoDB answer is also marked in `held`: the bytes of `out` before the
/// first such answer, and when the held rest is due (`arrived` + the node's
/// delay; every request answered in one batch arrived with the same read).
fn answer_in_time(
    cluster: &Cluster,
    node: usize,
    head: &Head,
    out: &mut Vec<u8>,
    held: &mut Option<(usize, Instant)>,
    arrived: Instant,
) {
    if let (Route::DynamoDb, Some(delay), None) = (head.route, cluster.delays[node], *held) {
        *held = Some((out.len(), arrived + delay));
    }
    answer(cluster, node, head, out);
}

/// Writes the batch of answers `out`: at once, or with `held` the part
/// before the first delayed answer at once and the rest when it is due.
fn send(stream: &mut TcpStream, out: &[u8], held: Option<(usize, Instant)>) -> io::Result<()> {
    let Some((at, due)) = held else {
        return stream.write_all(out);
    };
    let (now, later) = out.split_at(at.min(out.len()));
    if !now.is_empty() {
        stream.write_all(now)?;
    }
    let wait = due.saturating_duration_since(Instant::now());
    if !wait.is_zero() {
        thread::sleep(wait);
    }
    stream.write_all(later)
}

/// Serves one connection: parses every complete request in the buffer
/// (pipelining), answers them with one write (two on a delayed node, see
/// [`send`]), then reads more.
fn serve(mut stream: TcpStream, node: usize, cluster: &Cluster) -> io::Result<()> {
    stream.set_nodelay(true)?;
    cluster.counters[node]
        .connections
        .fetch_add(1, Ordering::Relaxed);
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut start = 0; // buf[start..] is not parsed yet
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut pending: Option<Head> = None; // head whose Content-Length body is being skipped
    let mut skip: u64 = 0;
    let mut closing = false;
    let mut rd = vec![0u8; 64 * 1024];
    // When the last read returned: the requests it completed arrived then.
    let mut arrived = Instant::now();
    let mut held: Option<(usize, Instant)> = None;
    loop {
        while !closing {
            if let Some(head) = &pending {
                let n = skip.min((buf.len() - start) as u64);
                start += n as usize;
                skip -= n;
                if skip > 0 {
                    break;
                }
                answer_in_time(cluster, node, head, &mut out, &mut held, arrived);
                closing = head.close;
                pending = None;
                continue;
            }
            match parse_head(&buf[start..]) {
                Parsed::Incomplete => break,
                Parsed::Bad(status) => {
                    closing = refuse(&mut out, status, status.as_bytes());
                }
                Parsed::Request(head) => match head.body {
                    BodyKind::Length(n) => {
                        start += head.len;
                        skip = n;
                        pending = Some(head);
                    }
                    BodyKind::Chunked => match chunked_len(&buf[start + head.len..]) {
                        Ok(Some(n)) => {
                            start += head.len + n;
                            answer_in_time(cluster, node, &head, &mut out, &mut held, arrived);
                            closing = head.close;
                        }
                        Ok(None) if buf.len() - start > MAX_CHUNKED => {
                            closing = refuse(&mut out, "413 Content Too Large", b"too large");
                        }
                        Ok(None) => break,
                        Err(status) => {
                            closing = refuse(&mut out, status, status.as_bytes());
                        }
                    },
                },
            }
        }
        if start == buf.len() {
            buf.clear();
            start = 0;
        } else if start > 0 {
            buf.drain(..start);
            start = 0;
        }
        if !out.is_empty() {
            send(&mut stream, &out, held.take())?;
            out.clear();
        }
        if closing {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            return Ok(());
        }
        let n = stream.read(&mut rd)?;
        if n == 0 {
            return Ok(());
        }
        arrived = Instant::now();
        if pending.is_some() && buf.is_empty() {
            // Skipping a body: drop what we can without copying it.
            let dropped = skip.min(n as u64) as usize;
            skip -= dropped as u64;
            buf.extend_from_slice(&rd[dropped..n]);
        } else {
            buf.extend_from_slice(&rd[..n]);
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
fn install_signal_handlers() {
    extern "C" fn on_signal(_: i32) {
        STOP.store(true, Ordering::SeqCst);
    }
    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
}

#[cfg(not(unix))]
fn install_signal_handlers() {}

fn usage() -> ExitCode {
    eprintln!(
        "usage: fake-node --port PORT [--delay ADDR=MS ...] ADDR [ADDR ...]\n  \
         PORT 0: the kernel picks one; --delay: POST / on ADDR answered MS milliseconds late"
    );
    ExitCode::from(2)
}

/// Reads a `--delay` value, `ADDR=MS` (the last `=`, so IPv6 works).
fn parse_delay(arg: &str) -> Result<(IpAddr, Duration), String> {
    let (addr, ms) = arg
        .rsplit_once('=')
        .ok_or_else(|| format!("--delay {arg}: expected ADDR=MS, e.g. 127.9.9.3=150"))?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("--delay {arg}: {addr:?} is not an IP address"))?;
    let ms: f64 = ms
        .parse()
        .ok()
        .filter(|m: &f64| m.is_finite() && (0.0..=MAX_DELAY_MS).contains(m))
        .ok_or_else(|| {
            format!(
                "--delay {arg}: {ms:?} is not a number of milliseconds from 0 to {MAX_DELAY_MS}"
            )
        })?;
    Ok((ip, Duration::from_secs_f64(ms / 1e3)))
}

fn main() -> ExitCode {
    let mut port: Option<u16> = None;
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut delays: Vec<(IpAddr, Duration)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" | "-p" => match args.next().and_then(|p| p.parse().ok()) {
                Some(p) => port = Some(p),
                None => return usage(),
            },
            "--delay" => match args.next().as_deref().map(parse_delay) {
                Some(Ok((ip, d))) if delays.iter().all(|(other, _)| *other != ip) => {
                    delays.push((ip, d))
                }
                Some(Ok((ip, _))) => {
                    eprintln!("fake-node: --delay {ip} given twice");
                    return usage();
                }
                Some(Err(e)) => {
                    eprintln!("fake-node: {e}");
                    return usage();
                }
                None => return usage(),
            },
            "--help" | "-h" => return usage(),
            a => match a.parse() {
                Ok(ip) => addrs.push(ip),
                Err(_) => {
                    eprintln!("fake-node: not an IP address: {a}");
                    return usage();
                }
            },
        }
    }
    let (Some(mut port), false) = (port, addrs.is_empty()) else {
        return usage();
    };
    // Checked before binding: a wrong --delay fails at once, not after
    // the ports were taken.
    let cluster = match Cluster::new(addrs.clone()).with_delays(&delays) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("fake-node: {e}");
            return usage();
        }
    };

    let mut listeners = Vec::new();
    for ip in &addrs {
        match TcpListener::bind(SocketAddr::new(*ip, port)) {
            Ok(l) => {
                if port == 0 {
                    port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                }
                listeners.push(l);
            }
            Err(e) => {
                eprintln!("fake-node: cannot listen on {ip}:{port}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    install_signal_handlers();
    for (node, listener) in listeners.into_iter().enumerate() {
        let cluster = Arc::clone(&cluster);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                let cluster = Arc::clone(&cluster);
                let spawned = thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let _ = serve(stream, node, &cluster);
                    });
                if let Err(e) = spawned {
                    eprintln!("fake-node: cannot start a connection thread: {e}");
                }
            }
        });
    }
    let list: Vec<String> = cluster.addrs.iter().map(|a| a.to_string()).collect();
    let delayed: Vec<String> = delays
        .iter()
        .map(|(ip, d)| format!("{ip} {} ms", d.as_secs_f64() * 1e3))
        .collect();
    if delayed.is_empty() {
        println!("fake-node listening on port {port}: {}", list.join(" "));
    } else {
        println!(
            "fake-node listening on port {port}: {} (delayed: {})",
            list.join(" "),
            delayed.join(", ")
        );
    }
    let _ = io::stdout().flush();
    while !STOP.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(50));
    }
    println!("{}", cluster.stats_json());
    let _ = io::stdout().flush();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(buf: &[u8]) -> Head {
        match parse_head(buf) {
            Parsed::Request(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn routes() {
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n{}x").route,
            Route::DynamoDb
        );
        assert_eq!(
            head(b"GET /localnodes?dc=x HTTP/1.1\r\n\r\n").route,
            Route::LocalNodes
        );
        assert_eq!(
            head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").route,
            Route::Health
        );
        assert_eq!(head(b"GET /nope HTTP/1.1\r\n\r\n").route, Route::NotFound);
        assert_eq!(head(b"PUT / HTTP/1.1\r\n\r\n").route, Route::NotFound);
    }

    #[test]
    fn head_fields() {
        let h = head(
            b"POST / HTTP/1.1\r\nhost:  x:1 \r\ncontent-length: 12\r\nConnection: Close\r\n\r\n",
        );
        assert_eq!(h.body, BodyKind::Length(12));
        assert_eq!(h.host, b"x:1");
        assert!(h.close);
        assert!(head(b"GET / HTTP/1.0\r\n\r\n").close);
        assert!(!head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").close);
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").body,
            BodyKind::Chunked
        );
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\nContent-Len"),
            Parsed::Incomplete
        );
        assert!(matches!(parse_head(b"garbage\r\n\r\n"), Parsed::Bad(_)));
    }

    #[test]
    fn chunked() {
        assert_eq!(chunked_len(b"3\r\nabc\r\n0\r\n\r\nNEXT"), Ok(Some(13)));
        assert_eq!(
            chunked_len(b"3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n"),
            Ok(Some(23))
        );
        assert_eq!(chunked_len(b"3\r\nab"), Ok(None));
        assert_eq!(chunked_len(b"3\r\nabc\r\n0\r\n"), Ok(None));
        assert!(chunked_len(b"zz\r\n").is_err());
    }

    /// A real socket: pipelined requests, a body split across writes, and
    /// a chunked body, all answered in order on one connection.
    #[test]
    fn pipelined_keep_alive() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cluster = Arc::new(Cluster::new(vec![addr.ip()]));
        let c2 = Arc::clone(&cluster);
        thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let _ = serve(s, 0, &c2);
        });
        let mut s = TcpStream::connect(addr).unwrap();
        let body = br#"{"TableName":"t","Key":{"k":{"S":"v"}}}"#;
        let one = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut req = Vec::new();
        for _ in 0..3 {
            req.extend_from_slice(one.as_bytes());
            req.extend_from_slice(body);
        }
        req.extend_from_slice(b"GET /localnodes HTTP/1.1\r\nHost: h\r\n\r\n");
        req.extend_from_slice(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        );
        req.extend_from_slice(one.as_bytes());
        let (a, b) = body.split_at(5);
        req.extend_from_slice(a);
        s.write_all(&req).unwrap();
        thread::sleep(Duration::from_millis(50));
        s.write_all(b).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 7, "{got}");
        assert_eq!(got.matches("\r\n\r\n{}").count(), 5, "{got}");
        assert!(got.contains(r#"["127.0.0.1"]"#), "{got}");
        assert!(got.ends_with("healthy: h"), "{got}");
        let c = &cluster.counters[0];
        assert_eq!(c.dynamodb.load(Ordering::Relaxed), 5);
        assert_eq!(c.localnodes.load(Ordering::Relaxed), 1);
        assert_eq!(c.health.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn delay_arguments() {
        let ms = Duration::from_millis;
        assert_eq!(
            parse_delay("127.9.9.3=150"),
            Ok(("127.9.9.3".parse().unwrap(), ms(150)))
        );
        assert_eq!(
            parse_delay("::1=0.5"),
            Ok(("::1".parse().unwrap(), Duration::from_micros(500)))
        );
        assert_eq!(
            parse_delay("127.0.0.1=0"),
            Ok(("127.0.0.1".parse().unwrap(), ms(0)))
        );
        for bad in [
            "127.0.0.1",
            "node=5",
            "127.0.0.1=",
            "127.0.0.1=-1",
            "127.0.0.1=NaN",
            "127.0.0.1=inf",
            "127.0.0.1=600001",
            "127.0.0.1=5ms",
        ] {
            let e = parse_delay(bad).unwrap_err();
            assert!(e.starts_with(&format!("--delay {bad}:")), "{bad}: {e}");
        }
    }

    #[test]
    fn a_delay_names_a_listen_address() {
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let d = Duration::from_millis(7);
        let c = Cluster::new(ips.clone())
            .with_delays(&[(ips[1], d)])
            .unwrap();
        assert_eq!(c.delays, vec![None, Some(d)]);
        assert!(c.stats_json().contains(r#""connections":0,"delay_ms":7}"#));
        assert!(c.stats_json().contains(r#""connections":0,"delay_ms":0}"#));
        let e = Cluster::new(ips)
            .with_delays(&[("127.0.0.2".parse().unwrap(), d)])
            .err()
            .unwrap();
        assert!(
            e.contains("127.0.0.2: not one of the listen addresses"),
            "{e}"
        );
    }

    /// Serves the connections accepted on a new loopback listener, the i-th
    /// as node `nodes[i]` of `cluster`, each on its own thread as `main`
    /// does. Connect in order: the kernel accepts them in that order.
    fn serve_as(cluster: &Arc<Cluster>, nodes: Vec<usize>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cluster = Arc::clone(cluster);
        thread::spawn(move || {
            for node in nodes {
                let (s, _) = listener.accept().unwrap();
                let cluster = Arc::clone(&cluster);
                thread::spawn(move || {
                    let _ = serve(s, node, &cluster);
                });
            }
        });
        addr
    }

    /// Reads from `s` until `buf` ends with `end` (blocking; a wrong server
    /// fails on the read timeout rather than hanging the test run).
    fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, end: &[u8]) {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut rd = [0u8; 4096];
        while !buf.ends_with(end) {
            let n = s.read(&mut rd).unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(buf));
            buf.extend_from_slice(&rd[..n]);
        }
    }

    const POST: &[u8] = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}";

    /// A slow node (a minute, never waited for) holds only its own
    /// DynamoDB answer: the health check pipelined before it, another
    /// connection to the same node and a connection to another node are
    /// answered meanwhile.
    #[test]
    fn a_delayed_answer_holds_up_only_itself() {
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
        let cluster = Arc::new(
            Cluster::new(ips.clone())
                .with_delays(&[(ips[0], Duration::from_secs(60))])
                .unwrap(),
        );
        let addr = serve_as(&cluster, vec![0, 0, 1]);
        let mut slow = TcpStream::connect(addr).unwrap();
        let mut same_node = TcpStream::connect(addr).unwrap();
        let mut other_node = TcpStream::connect(addr).unwrap();

        let mut req = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
        req.extend_from_slice(POST);
        slow.write_all(&req).unwrap();
        let mut got = Vec::new();
        read_until(&mut slow, &mut got, b"healthy: h");
        // The POST has been read and counted: only its answer is held.
        while cluster.counters[0].dynamodb.load(Ordering::Relaxed) == 0 {
            thread::sleep(Duration::from_millis(5));
        }

        same_node
            .write_all(b"GET / HTTP/1.1\r\nHost: h2\r\n\r\nGET /localnodes HTTP/1.1\r\n\r\n")
            .unwrap();
        let mut got2 = Vec::new();
        read_until(&mut same_node, &mut got2, br#"["127.0.0.1","127.0.0.2"]"#);
        assert!(
            String::from_utf8_lossy(&got2).contains("healthy: h2"),
            "{got2:?}"
        );
        other_node.write_all(POST).unwrap();
        let mut got3 = Vec::new();
        read_until(&mut other_node, &mut got3, b"\r\n\r\n{}");

        slow.set_nonblocking(true).unwrap();
        let mut rd = [0u8; 256];
        match slow.read(&mut rd) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("the slow node answered early: {other:?} {:?}", &rd[..]),
        }
        assert_eq!(
            got,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nhealthy: h"
        );
        assert_eq!(cluster.counters[0].dynamodb.load(Ordering::Relaxed), 1);
        assert_eq!(cluster.counters[1].dynamodb.load(Ordering::Relaxed), 1);
    }

    /// Every DynamoDB answer of a slow node comes no sooner than the delay
    /// after its request was sent, pipelined answers in order, and each new
    /// request waits its own delay.
    #[test]
    fn delayed_answers_come_after_the_delay_in_order() {
        let delay = Duration::from_millis(200);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let cluster = Arc::new(Cluster::new(vec![ip]).with_delays(&[(ip, delay)]).unwrap());
        let addr = serve_as(&cluster, vec![0]);
        let mut s = TcpStream::connect(addr).unwrap();

        let mut req = POST.to_vec();
        req.extend_from_slice(b"GET /localnodes HTTP/1.1\r\n\r\n");
        req.extend_from_slice(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        );
        req.extend_from_slice(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let sent = Instant::now();
        s.write_all(&req).unwrap();
        let mut got = Vec::new();
        read_until(&mut s, &mut got, b"healthy: h");
        assert!(sent.elapsed() >= delay, "{:?}", sent.elapsed());
        let got = String::from_utf8(got).unwrap();
        let order: Vec<usize> = ["{}", r#"["127.0.0.1"]"#, "{}", "healthy: h"]
            .iter()
            .scan(0, |from, body| {
                let at = *from + got[*from..].find(&format!("\r\n\r\n{body}"))?;
                *from = at + 1;
                Some(at)
            })
            .collect();
        assert_eq!(order.len(), 4, "{got}");
        assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 4, "{got}");

        for _ in 0..2 {
            let sent = Instant::now();
            s.write_all(POST).unwrap();
            let mut got = Vec::new();
            read_until(&mut s, &mut got, b"\r\n\r\n{}");
            assert!(sent.elapsed() >= delay, "{:?}", sent.elapsed());
        }
        assert_eq!(cluster.counters[0].dynamodb.load(Ordering::Relaxed), 4);
        assert_eq!(cluster.counters[0].health.load(Ordering::Relaxed), 1);
    }
}
