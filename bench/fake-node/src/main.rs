//! `fake-node`: a fast fake Alternator cluster for benchmarks.
//!
//! ```text
//! fake-node --port P ADDR [ADDR ...]      e.g. fake-node --port 8000 127.9.9.1 127.9.9.2 127.9.9.3
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
//! * `GET /stats`: the per-address request counts as JSON (not counted);
//! * anything else: 404.
//!
//! Prints `fake-node listening on port P: ADDR ...` once every address
//! listens, and the counts (the `/stats` JSON) on SIGTERM or SIGINT before
//! exiting. One thread per connection: the backend must never be the
//! bottleneck of an Envoy benchmark, and a blocking loop that parses every
//! complete request in its buffer and answers them with one write is cheap
//! enough (well over 50k req/s per core on loopback).
//!
//! Std only, no dependencies.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest chunked body buffered (Content-Length bodies are streamed away).
const MAX_CHUNKED: usize = 32 * 1024 * 1024;

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
    localnodes_body: Vec<u8>,
}

impl Cluster {
    fn new(addrs: Vec<IpAddr>) -> Self {
        let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        Cluster {
            counters: addrs.iter().map(|_| Counters::default()).collect(),
            localnodes_body: format!("[{}]", list.join(",")).into_bytes(),
            addrs,
        }
    }

    fn stats_json(&self) -> String {
        let nodes: Vec<String> = self
            .addrs
            .iter()
            .zip(&self.counters)
            .map(|(a, c)| {
                format!(
                    "\"{a}\":{{\"dynamodb\":{},\"localnodes\":{},\"health\":{},\"other\":{},\"connections\":{}}}",
                    c.dynamodb.load(Ordering::Relaxed),
                    c.localnodes.load(Ordering::Relaxed),
                    c.health.load(Ordering::Relaxed),
                    c.other.load(Ordering::Relaxed),
                    c.connections.load(Ordering::Relaxed),
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

/// Serves one connection: parses every complete request in the buffer
/// (pipelining), answers them with one write, then reads more.
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
    loop {
        while !closing {
            if let Some(head) = &pending {
                let n = skip.min((buf.len() - start) as u64);
                start += n as usize;
                skip -= n;
                if skip > 0 {
                    break;
                }
                answer(cluster, node, head, &mut out);
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
                            answer(cluster, node, &head, &mut out);
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
            stream.write_all(&out)?;
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
    eprintln!("usage: fake-node --port PORT ADDR [ADDR ...]   (PORT 0: the kernel picks one)");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut port: Option<u16> = None;
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" | "-p" => match args.next().and_then(|p| p.parse().ok()) {
                Some(p) => port = Some(p),
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
    let cluster = Arc::new(Cluster::new(addrs));
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
    println!("fake-node listening on port {port}: {}", list.join(" "));
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
}
