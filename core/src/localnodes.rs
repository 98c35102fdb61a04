//! Alternator's `GET /localnodes`: building the request and reading the answer.
//!
//! The answer is a JSON array of bare IP strings. It is trusted only as far as
//! it is well formed: anything that is not an IP literal is dropped (and
//! reported, so an operator can see a misbehaving node), the rest is
//! deduplicated and sorted so that every worker and every Envoy sees the same
//! list for the same cluster state.

use crate::json::{self, Json};
use crate::model::address;
use crate::model::cidr::{self, Cidr};
use crate::model::{NodeAddr, Quoted};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Answers larger than this are refused unread: even a cluster of thousands
/// of IPv6 nodes answers in well under 100 KiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// More nodes than this are dropped: no Alternator datacenter is that large,
/// and the cap bounds the memory every worker spends on its list.
pub const MAX_NODES: usize = 1024;

/// The path of the discovery request, with the optional `dc` and `rack`
/// query parameters percent-encoded.
pub fn request_path(datacenter: Option<&str>, rack: Option<&str>) -> String {
    let mut path = String::from("/localnodes");
    let mut sep = '?';
    for (name, value) in [("dc", datacenter), ("rack", rack)] {
        if let Some(value) = value {
            path.push(sep);
            path.push_str(name);
            path.push('=');
            percent_encode_into(value, &mut path);
            sep = '&';
        }
    }
    path
}

fn percent_encode_into(value: &str, out: &mut String) {
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0xf));
        }
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).map_or('0', |c| c.to_ascii_uppercase())
}

/// A well-formed answer: the nodes (possibly none), and what had to be
/// dropped to get them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Sorted, deduplicated, at most [`MAX_NODES`]; empty only for `[]`.
    pub nodes: Vec<NodeAddr>,
    /// One description per dropped entry (bad entries, duplicates not counted).
    pub dropped: Vec<String>,
}

/// Why an answer cannot be used at all. The last good list stays in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerError {
    TooLarge(usize),
    NotUtf8,
    NotJson(String),
    NotAnArray,
    /// Entries were present but none was an IP literal.
    NoValidEntry(Vec<String>),
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::TooLarge(n) => write!(
                f,
                "answer of {n} bytes exceeds the {MAX_BODY_BYTES}-byte limit"
            ),
            AnswerError::NotUtf8 => write!(f, "answer is not UTF-8"),
            AnswerError::NotJson(e) => write!(f, "answer is not JSON: {e}"),
            AnswerError::NotAnArray => write!(f, "answer is not a JSON array"),
            AnswerError::NoValidEntry(dropped) => {
                write!(f, "answer has no valid IP entry ({} dropped", dropped.len())?;
                if let Some(first) = dropped.first() {
                    write!(f, ", e.g. {first}")?;
                }
                write!(f, ")")
            }
        }
    }
}

impl std::error::Error for AnswerError {}

/// Reads a `/localnodes` body; each IP gets the configured Alternator `port`.
/// Addresses outside `allowed` (when non-empty) are dropped like bad entries.
pub fn parse(body: &[u8], port: u16, allowed: &[Cidr]) -> Result<Answer, AnswerError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(AnswerError::TooLarge(body.len()));
    }
    if std::str::from_utf8(body).is_err() {
        return Err(AnswerError::NotUtf8);
    }
    let value = json::parse(body).map_err(|e| AnswerError::NotJson(e.to_string()))?;
    let Json::Array(items) = value else {
        return Err(AnswerError::NotAnArray);
    };
    // `[]` is a real answer: the datacenter or rack asked about has no live
    // node (or does not exist). Whether it may replace a list is for
    // discovery to decide.
    if items.is_empty() {
        return Ok(Answer {
            nodes: Vec::new(),
            dropped: Vec::new(),
        });
    }
    let mut nodes = Vec::with_capacity(items.len().min(MAX_NODES));
    let mut dropped = Vec::new();
    for item in &items {
        match entry(item, port, allowed) {
            Ok(node) => nodes.push(node),
            Err(why) => dropped.push(why),
        }
    }
    crate::model::sorted::sort_dedup(&mut nodes);
    if nodes.is_empty() {
        return Err(AnswerError::NoValidEntry(dropped));
    }
    if nodes.len() > MAX_NODES {
        dropped.push(format!(
            "{} nodes beyond the limit of {MAX_NODES}",
            nodes.len() - MAX_NODES
        ));
        nodes.truncate(MAX_NODES);
    }
    Ok(Answer { nodes, dropped })
}

fn entry(item: &Json, port: u16, allowed: &[Cidr]) -> Result<NodeAddr, String> {
    let Json::String(s) = item else {
        return Err(format!(
            "non-string entry {}",
            abbreviate(&item.to_string())
        ));
    };
    let ip = IpAddr::from_str(s)
        .map_err(|_| format!("{} is not an IP literal", Quoted(&abbreviate(s))))?;
    let node = address::checked(ip, port).map_err(|e| e.to_string())?;
    if !cidr::allowed(allowed, &node.ip) {
        return Err(format!("{} is outside allowed_cidrs", node.ip));
    }
    Ok(node)
}

/// Keeps warnings about hostile entries short.
fn abbreviate(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", s.get(..cut).unwrap_or_default()),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn nodes(body: &str) -> Vec<String> {
        parse(body.as_bytes(), 8000, &[])
            .unwrap()
            .nodes
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn plain_answer_is_sorted_and_ported() {
        assert_eq!(
            nodes(r#"["10.0.0.3","10.0.0.1","10.0.0.20"]"#),
            ["10.0.0.1:8000", "10.0.0.3:8000", "10.0.0.20:8000"]
        );
    }

    #[test]
    fn ipv6_entries_are_bracketed() {
        assert_eq!(
            nodes(r#"["fd00::2","10.0.0.1"]"#),
            ["10.0.0.1:8000", "[fd00::2]:8000"]
        );
    }

    #[test]
    fn duplicates_are_removed() {
        assert_eq!(
            nodes(r#"["10.0.0.1","10.0.0.1","::ffff:10.0.0.1"]"#),
            ["10.0.0.1:8000"]
        );
    }

    #[test]
    fn bad_entries_are_dropped_and_reported() {
        let a = parse(
            br#"["10.0.0.1", "node2", 7, null, "10.0.0.2:8000", "0.0.0.0", {"a":1}, " 10.0.0.3"]"#,
            8000,
            &[],
        )
        .unwrap();
        assert_eq!(a.nodes.len(), 1);
        assert_eq!(a.dropped.len(), 7, "{:?}", a.dropped);
        assert!(a.dropped.iter().any(|d| d.contains("node2")));
    }

    #[test]
    fn an_empty_array_is_an_empty_answer() {
        for body in [&b"[]"[..], b" [ ] \n"] {
            assert_eq!(
                parse(body, 8000, &[]),
                Ok(Answer {
                    nodes: vec![],
                    dropped: vec![]
                })
            );
        }
    }

    #[test]
    fn unusable_answers_are_errors() {
        assert_eq!(
            parse(br#"{"nodes":[]}"#, 8000, &[]),
            Err(AnswerError::NotAnArray)
        );
        assert_eq!(
            parse(br#""10.0.0.1""#, 8000, &[]),
            Err(AnswerError::NotAnArray)
        );
        assert!(matches!(
            parse(b"<html>", 8000, &[]),
            Err(AnswerError::NotJson(_))
        ));
        assert!(matches!(
            parse(b"", 8000, &[]),
            Err(AnswerError::NotJson(_))
        ));
        assert!(matches!(
            parse(br#"["10.0.0.1""#, 8000, &[]),
            Err(AnswerError::NotJson(_))
        ));
        assert_eq!(parse(b"[\"\xff\"]", 8000, &[]), Err(AnswerError::NotUtf8));
        assert!(
            matches!(parse(br#"["x", 1]"#, 8000, &[]), Err(AnswerError::NoValidEntry(d)) if d.len() == 2)
        );
    }

    #[test]
    fn addresses_outside_allowed_ranges_are_dropped() {
        let allowed: Vec<Cidr> = vec!["10.0.0.0/24".parse().unwrap()];
        let a = parse(br#"["10.0.0.1","10.0.1.1","192.0.2.1"]"#, 8000, &allowed).unwrap();
        assert_eq!(a.nodes.len(), 1);
        assert_eq!(a.dropped.len(), 2);
        assert!(
            a.dropped[0].contains("outside allowed_cidrs"),
            "{:?}",
            a.dropped
        );
        assert!(matches!(
            parse(br#"["192.0.2.1"]"#, 8000, &allowed),
            Err(AnswerError::NoValidEntry(_))
        ));
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            parse(deep.as_bytes(), 8000, &[]),
            Err(AnswerError::NotJson(_))
        ));
        // An entry nested within the reader's limit is one bad entry; past
        // the limit the whole answer is refused.
        let nested = |depth: usize| {
            format!(
                r#"["10.0.0.1", {}1{}]"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        let a = parse(nested(50).as_bytes(), 8000, &[]).unwrap();
        assert_eq!(a.nodes.len(), 1);
        assert_eq!(a.dropped.len(), 1);
        assert!(matches!(
            parse(nested(100).as_bytes(), 8000, &[]),
            Err(AnswerError::NotJson(_))
        ));
    }

    #[test]
    fn oversized_answer_is_refused_unread() {
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            parse(&big, 8000, &[]),
            Err(AnswerError::TooLarge(MAX_BODY_BYTES + 1))
        );
    }

    #[test]
    fn node_count_is_capped() {
        let body: Vec<String> = (0..(MAX_NODES + 10))
            .map(|i| format!("\"10.1.{}.{}\"", i / 250, i % 250 + 1))
            .collect();
        let a = parse(format!("[{}]", body.join(",")).as_bytes(), 8000, &[]).unwrap();
        assert_eq!(a.nodes.len(), MAX_NODES);
        assert!(a.dropped.iter().any(|d| d.contains("beyond the limit")));
    }

    #[test]
    fn long_bad_entries_are_abbreviated() {
        let long = "x".repeat(10_000);
        let a = parse(format!(r#"["10.0.0.1","{long}"]"#).as_bytes(), 8000, &[]).unwrap();
        assert!(a.dropped[0].len() < 100, "{}", a.dropped[0]);
    }

    #[test]
    fn request_path_encodes_parameters() {
        assert_eq!(request_path(None, None), "/localnodes");
        assert_eq!(request_path(Some("dc1"), None), "/localnodes?dc=dc1");
        assert_eq!(request_path(None, Some("r 1")), "/localnodes?rack=r%201");
        assert_eq!(
            request_path(Some("eu-west/1&x=ü"), Some("rack~1")),
            "/localnodes?dc=eu-west%2F1%26x%3D%C3%BC&rack=rack~1"
        );
    }
}
