//! Alternator's `GET /localnodes`: building the request and reading the answer.
//!
//! The answer is a JSON array of bare IP strings. It is trusted only as far as
//! it is well formed: anything that is not an IP literal is dropped (and
//! reported, so an operator can see a misbehaving node), the rest is
//! deduplicated and sorted so that every worker and every Envoy sees the same
//! list for the same cluster state.
//!
//! `/localnodes` is plain, unauthenticated HTTP, so an answer is also not
//! trusted to say where Envoy may connect: addresses no node has, or that
//! reach something other than a node (link-local ones, where cloud metadata
//! endpoints answer; loopback ones, unless the seeds are loopback too) are
//! refused, see [`Rules`].
//!
//! The array is read entry by entry (serde_json, each entry kept as its JSON
//! text until it is looked at), never as a tree of the whole answer: a 1 MiB
//! answer is some 70,000 entries, and each worker reads every answer.

use crate::model::address;
use crate::model::cidr::{self, Cidr};
use crate::model::config::Config;
use crate::model::{AddrError, NodeAddr, Quoted};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Answers larger than this are refused unread: even a cluster of thousands
/// of IPv6 nodes answers in well under 100 KiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// More nodes than this are dropped: no Alternator datacenter is that large,
/// and the cap bounds the memory every worker spends on its list.
pub const MAX_NODES: usize = 1024;
/// Deepest nesting of arrays and objects in an answer (the array itself is
/// one level). Alternator's answers are one level deep; a deeper answer is
/// refused whole rather than entry by entry, as it always was, and the
/// bound keeps describing a bad entry from recursing as deep as it nests.
pub const MAX_DEPTH: usize = 64;

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

/// How many dropped entries are described; the others are only counted. A
/// hostile 1 MiB answer is some 500,000 junk entries, and every worker reads
/// every answer: their descriptions must not be kept.
pub const MAX_DESCRIBED: usize = 10;

/// The entries an answer had to drop: how many, and a description of the
/// first [`MAX_DESCRIBED`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// At most [`MAX_DESCRIBED`] descriptions, in answer order (a note
    /// about nodes beyond [`MAX_NODES`] first).
    pub described: Vec<String>,
    /// Every dropped entry, described or not.
    pub count: usize,
}

impl Drops {
    /// Counts a dropped entry, keeping its description while there is room.
    fn push(&mut self, description: String) {
        self.count += 1;
        if self.described.len() < MAX_DESCRIBED {
            self.described.push(description);
        }
    }

    /// A description to come first (it counts as one more drop).
    fn push_front(&mut self, description: String) {
        self.count += 1;
        self.described.insert(0, description);
        self.described.truncate(MAX_DESCRIBED);
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The descriptions, and how many more entries were dropped:
    /// `a; b; c; and 12 more`.
    pub fn summary(&self) -> String {
        let named = self.described.join("; ");
        match self.count.saturating_sub(self.described.len()) {
            0 => named,
            more => format!("{named}; and {more} more"),
        }
    }
}

/// A well-formed answer: the nodes (possibly none), and what had to be
/// dropped to get them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Sorted, deduplicated, at most [`MAX_NODES`]; empty only for `[]`.
    pub nodes: Vec<NodeAddr>,
    /// The dropped entries (bad entries; duplicates are not counted).
    pub dropped: Drops,
    /// How many of the dropped entries are addresses the [`Rules`] refuse
    /// (as opposed to entries that are not addresses at all).
    pub refused: usize,
}

/// Why an answer cannot be used at all. The last good list stays in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerError {
    TooLarge(usize),
    NotUtf8,
    NotJson(String),
    NotAnArray,
    /// Entries were present but none was a usable address: what was
    /// dropped, and how many of those the [`Rules`] refused.
    NoValidEntry {
        dropped: Drops,
        refused: usize,
    },
}

impl AnswerError {
    /// Entries of the answer the [`Rules`] refused (for the stat).
    pub fn refused(&self) -> usize {
        match self {
            AnswerError::NoValidEntry { refused, .. } => *refused,
            _ => 0,
        }
    }
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
            AnswerError::NoValidEntry { dropped, .. } => {
                write!(f, "answer has no valid IP entry ({} dropped", dropped.count)?;
                if let Some(first) = dropped.described.first() {
                    write!(f, ", e.g. {first}")?;
                }
                write!(f, ")")
            }
        }
    }
}

impl std::error::Error for AnswerError {}

/// Which addresses an answer may name.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'c> {
    /// The Alternator port every listed IP gets (answers carry bare IPs).
    pub port: u16,
    /// `allowed_cidrs`: when non-empty, nothing outside these ranges.
    pub allowed: &'c [Cidr],
    /// Whether loopback addresses may be listed. A node's loopback address
    /// is reachable only from its own host, so a cluster that lists them
    /// is one on this host (a test or demo setup), whose seeds are loopback
    /// too; anywhere else such an answer would point Envoy at services of
    /// the proxy's own host.
    pub loopback: bool,
}

impl<'c> Rules<'c> {
    /// The rules a configuration implies: loopback answers are accepted
    /// when any seed is a loopback address.
    pub fn of(config: &'c Config) -> Rules<'c> {
        Rules {
            port: config.port,
            allowed: &config.allowed_cidrs,
            loopback: config.seeds.iter().any(|s| address::is_loopback(&s.ip)),
        }
    }
}

impl Rules<'_> {
    /// Whether an answer may have named `node` (with the configured port):
    /// the check every VM repeats on the shared record's nodes, which any
    /// plugin sharing the VM id could have written.
    pub fn admits(&self, node: &NodeAddr) -> bool {
        node.port == self.port && node_from_ip(node.ip, self).is_ok()
    }
}

/// Reads a `/localnodes` body; each IP gets the configured Alternator port.
/// Entries that are not IP literals, and addresses the `rules` refuse, are
/// dropped (the refused ones are counted apart):
///
/// - addresses no node can have: unspecified, multicast, broadcast;
/// - link-local addresses (169.254.0.0/16, fe80::/10), always;
/// - loopback addresses (127.0.0.0/8, ::1) unless [`Rules::loopback`];
/// - addresses outside `allowed_cidrs`, when it is set.
///
/// IPv4-mapped IPv6 addresses are folded to IPv4 first, so
/// `::ffff:169.254.169.254` is as link-local as `169.254.169.254`.
///
/// Only the [`MAX_NODES`] smallest addresses are kept, whatever order the
/// answer lists them in: Alternator answers in no particular order, and every
/// worker must derive the same list from the same answer. They are kept as
/// the entries arrive (the largest kept one evicted by a smaller newcomer),
/// so an answer of n entries costs O(n log MAX_NODES), not a sort of all n.
pub fn parse(body: &[u8], rules: &Rules) -> Result<Answer, AnswerError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(AnswerError::TooLarge(body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|_| AnswerError::NotUtf8)?;
    // JSON's own whitespace, nothing else: anything else is for serde_json
    // to refuse.
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('[')
    {
        return Err(match check_nesting(text, MAX_DEPTH) {
            Ok(()) => AnswerError::NotAnArray,
            Err(e) => AnswerError::NotJson(e.to_string()),
        });
    }
    let mut entries = Entries {
        rules,
        seen: 0,
        nodes: BTreeSet::new(),
        beyond: 0,
        dropped: Drops::default(),
        refused: 0,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    de::Deserializer::deserialize_seq(&mut de, &mut entries)
        .and_then(|()| de.end())
        .map_err(|e| AnswerError::NotJson(e.to_string()))?;
    let Entries {
        seen,
        nodes,
        beyond,
        mut dropped,
        refused,
        ..
    } = entries;
    // `[]` is a real answer: the datacenter or rack asked about has no live
    // node (or does not exist). Whether it may replace a list is for
    // discovery to decide.
    if nodes.is_empty() && seen > 0 {
        return Err(AnswerError::NoValidEntry { dropped, refused });
    }
    if beyond > 0 {
        // First, so that a warning naming only the first few still says it.
        dropped.push_front(format!("{beyond} nodes beyond the limit of {MAX_NODES}"));
    }
    Ok(Answer {
        nodes: nodes.into_iter().collect(),
        dropped,
        refused,
    })
}

/// What the answer's entries gave so far.
struct Entries<'c> {
    rules: &'c Rules<'c>,
    /// Entries read, good or bad.
    seen: usize,
    /// The smallest valid addresses so far, never more than [`MAX_NODES`].
    nodes: BTreeSet<NodeAddr>,
    /// Valid entries that did not fit: each counts once when it is refused
    /// or evicted, so an address beyond the limit that the answer repeats
    /// counts once per repetition (Alternator lists each node once).
    beyond: usize,
    dropped: Drops,
    /// Entries of `dropped` that the rules refused.
    refused: usize,
}

impl Entries<'_> {
    fn keep(&mut self, node: NodeAddr) {
        if self.nodes.len() < MAX_NODES {
            self.nodes.insert(node);
            return;
        }
        if self.nodes.last().is_some_and(|largest| node > *largest) {
            self.beyond += 1;
        } else if self.nodes.insert(node) {
            self.nodes.pop_last();
            self.beyond += 1;
        }
    }

    /// Takes one entry; an error (an entry nested past [`MAX_DEPTH`])
    /// refuses the whole answer.
    fn entry(&mut self, raw: &RawValue) -> Result<(), String> {
        self.seen += 1;
        let text = raw.get();
        if !text.starts_with('"') {
            check_nesting(text, MAX_DEPTH - 1)
                .map_err(|_| format!("an entry nests deeper than {MAX_DEPTH} levels"))?;
            // Quoted as sent, on one line: JSON allows line breaks between
            // tokens (never raw inside strings), and this goes to a log.
            let one_line = text.replace(['\n', '\r', '\t'], " ");
            self.dropped
                .push(format!("non-string entry {}", abbreviate(&one_line)));
            return Ok(());
        }
        match serde_json::from_str::<Text>(text) {
            Ok(Text(ip)) => match node(&ip, self.rules) {
                Ok(node) => self.keep(node),
                Err(Dropped::Unusable(why)) => self.dropped.push(why),
                Err(Dropped::Refused(why)) => {
                    self.refused += 1;
                    self.dropped.push(why);
                }
            },
            // serde_json has just read it as a string.
            Err(e) => self.dropped.push(e.to_string()),
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for &mut Entries<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of IP strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&RawValue>()? {
            self.entry(raw).map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

/// An entry's string, borrowed from the answer unless escapes had to be
/// decoded.
#[derive(Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// Whether `text` is one JSON value nested at most `max` levels deep.
/// serde_json skips a value without recursing, so without this any depth
/// would pass.
fn check_nesting(text: &str, max: usize) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    Nesting { left: max }.deserialize(&mut de)?;
    de.end()
}

/// Visits any value, refusing arrays and objects more than `left` deep.
#[derive(Clone, Copy)]
struct Nesting {
    left: usize,
}

impl Nesting {
    fn inner<E: de::Error>(self) -> Result<Nesting, E> {
        match self.left.checked_sub(1) {
            Some(left) => Ok(Nesting { left }),
            None => Err(E::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels"
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Nesting {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Nesting {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// Why an entry was dropped, as the warning describes it.
enum Dropped {
    /// Not a node address at all.
    Unusable(String),
    /// An address, but one the rules refuse.
    Refused(String),
}

fn node(text: &str, rules: &Rules) -> Result<NodeAddr, Dropped> {
    let ip = IpAddr::from_str(text).map_err(|_| {
        Dropped::Unusable(format!(
            "{} is not an IP literal",
            Quoted(&abbreviate(text))
        ))
    })?;
    node_from_ip(ip, rules)
}

fn node_from_ip(ip: IpAddr, rules: &Rules) -> Result<NodeAddr, Dropped> {
    let node = address::checked(ip, rules.port).map_err(|e| match e {
        AddrError::NotUnicast(_) => Dropped::Refused(e.to_string()),
        _ => Dropped::Unusable(e.to_string()),
    })?;
    let ip = node.ip;
    if address::is_link_local(&ip) {
        return Err(Dropped::Refused(format!("{ip} is link-local, refused")));
    }
    if address::is_loopback(&ip) && !rules.loopback {
        return Err(Dropped::Refused(format!(
            "{ip} is loopback, refused as no seed is loopback"
        )));
    }
    if !cidr::allowed(rules.allowed, &ip) {
        return Err(Dropped::Refused(format!("{ip} is outside allowed_cidrs")));
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

    /// Port 8000, no allowed_cidrs, seeds that are not loopback.
    const R: Rules = Rules {
        port: 8000,
        allowed: &[],
        loopback: false,
    };

    fn nodes(body: &str) -> Vec<String> {
        parse(body.as_bytes(), &R)
            .unwrap()
            .nodes
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    /// A 1 MiB junk answer is some 500,000 bad entries, read by every
    /// worker: only the first few are described, all of them counted.
    #[test]
    fn a_junk_answer_keeps_ten_descriptions_and_a_count() {
        let mut body = String::from("[\"10.0.0.1\"");
        for i in 0..50_000 {
            body.push_str(&format!(",\"junk{i}\""));
        }
        body.push(']');
        let a = parse(body.as_bytes(), &R).unwrap();
        assert_eq!(a.nodes.len(), 1);
        assert_eq!(a.dropped.count, 50_000);
        assert_eq!(a.dropped.described.len(), MAX_DESCRIBED);
        assert_eq!(a.dropped.described[0], "\"junk0\" is not an IP literal");
        assert!(
            a.dropped
                .summary()
                .ends_with("\"junk9\" is not an IP literal; and 49990 more"),
            "{}",
            a.dropped.summary()
        );
        // An answer with nothing usable says the same in its error.
        let junk = body.replacen("\"10.0.0.1\",", "", 1);
        let Err(AnswerError::NoValidEntry { dropped, refused }) = parse(junk.as_bytes(), &R) else {
            panic!("not refused");
        };
        assert_eq!(
            (dropped.count, dropped.described.len(), refused),
            (50_000, 10, 0)
        );
        // A short list is named whole.
        let a = parse(br#"["10.0.0.1", "x", "y"]"#, &R).unwrap();
        assert_eq!(
            a.dropped.summary(),
            r#""x" is not an IP literal; "y" is not an IP literal"#
        );
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
            &R,
        )
        .unwrap();
        assert_eq!(a.nodes.len(), 1);
        assert_eq!(a.dropped.count, 7, "{:?}", a.dropped);
        assert!(a.dropped.described.iter().any(|d| d.contains("node2")));
        // Only 0.0.0.0 is an address; the rest are not addresses at all.
        assert_eq!(a.refused, 1, "{:?}", a.dropped);
    }

    fn kept(a: &Answer) -> Vec<String> {
        a.nodes.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn link_local_addresses_are_refused_and_counted() {
        let a = parse(
            br#"["10.0.0.1", "169.254.169.254", "fe80::1", "::ffff:169.254.1.1",
                "febf:ffff::2", "169.254.0.0", "fe80::1"]"#,
            &R,
        )
        .unwrap();
        assert_eq!(kept(&a), ["10.0.0.1:8000"]);
        assert_eq!(a.refused, 6, "each entry counts: {:?}", a.dropped);
        assert_eq!(
            a.dropped.described,
            [
                "169.254.169.254 is link-local, refused",
                "fe80::1 is link-local, refused",
                "169.254.1.1 is link-local, refused",
                "febf:ffff::2 is link-local, refused",
                "169.254.0.0 is link-local, refused",
                "fe80::1 is link-local, refused",
            ]
        );
        // Neighbours of the ranges are ordinary addresses.
        let a = parse(br#"["169.253.255.255", "169.255.0.1", "fec0::1"]"#, &R).unwrap();
        assert_eq!(a.nodes.len(), 3);
        assert_eq!(a.refused, 0);
    }

    #[test]
    fn link_local_stays_refused_with_loopback_seeds_and_ranges_that_cover_it() {
        let allowed: Vec<Cidr> = vec![
            "169.254.0.0/16".parse().unwrap(),
            "fe80::/10".parse().unwrap(),
            "127.0.0.0/8".parse().unwrap(),
        ];
        let rules = Rules {
            allowed: &allowed,
            loopback: true,
            ..R
        };
        let a = parse(br#"["169.254.169.254", "fe80::1", "127.0.0.2"]"#, &rules).unwrap();
        assert_eq!(kept(&a), ["127.0.0.2:8000"]);
        assert_eq!(a.refused, 2);
    }

    #[test]
    fn loopback_is_refused_unless_a_seed_is_loopback() {
        let body = br#"["127.0.0.1", "::1", "::ffff:127.0.0.5", "127.255.255.254", "10.0.0.1"]"#;
        let a = parse(body, &R).unwrap();
        assert_eq!(kept(&a), ["10.0.0.1:8000"]);
        assert_eq!(a.refused, 4);
        assert!(a
            .dropped
            .described
            .contains(&"127.0.0.5 is loopback, refused as no seed is loopback".to_string()));
        assert!(a
            .dropped
            .described
            .contains(&"::1 is loopback, refused as no seed is loopback".to_string()));
        let local = Rules {
            loopback: true,
            ..R
        };
        let a = parse(body, &local).unwrap();
        assert_eq!(
            kept(&a),
            [
                "10.0.0.1:8000",
                "127.0.0.1:8000",
                "127.0.0.5:8000",
                "127.255.255.254:8000",
                "[::1]:8000"
            ]
        );
        assert_eq!((a.refused, a.dropped.count), (0, 0));
    }

    #[test]
    fn the_configuration_decides_whether_loopback_is_allowed() {
        let rules_of = |doc: &str| {
            let config = Config::parse(doc.as_bytes()).unwrap();
            let loopback = Rules::of(&config).loopback;
            loopback
        };
        assert!(!rules_of(r#"{"seeds": ["10.0.0.1", "fd00::1"]}"#));
        assert!(rules_of(r#"{"seeds": ["127.0.0.1"]}"#));
        assert!(rules_of(r#"{"seeds": ["10.0.0.1", "::1"]}"#));
        assert!(rules_of(r#"{"seeds": ["::ffff:127.3.0.1"]}"#));
        assert!(rules_of(
            r#"{"seeds": {"dc1": ["10.0.0.1"], "dc2": ["127.0.0.2:9000"]}}"#
        ));
        let config = Config::parse(
            br#"{"seeds": ["10.0.0.1"], "port": 9042, "allowed_cidrs": ["10.0.0.0/8"]}"#,
        )
        .unwrap();
        let rules = Rules::of(&config);
        assert_eq!((rules.port, rules.allowed.len()), (9042, 1));
    }

    #[test]
    fn addresses_no_node_has_are_refused_and_counted() {
        let a = parse(
            br#"["0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "ff02::1",
                "::ffff:224.0.0.1", "::ffff:0.0.0.0", "10.0.0.1"]"#,
            &R,
        )
        .unwrap();
        assert_eq!(kept(&a), ["10.0.0.1:8000"]);
        assert_eq!(a.refused, 7, "{:?}", a.dropped);
        assert!(a
            .dropped
            .described
            .iter()
            .all(|d| d.ends_with("is not a unicast address")));
    }

    #[test]
    fn an_answer_of_refused_addresses_only_is_unusable_and_counted() {
        let e = parse(br#"["fe80::1", "169.254.169.254", "127.0.0.1", "x"]"#, &R).unwrap_err();
        assert_eq!(e.refused(), 3);
        assert!(
            e.to_string()
                .starts_with("answer has no valid IP entry (4 dropped, e.g. fe80::1 is link-local"),
            "{e}"
        );
        assert_eq!(AnswerError::NotAnArray.refused(), 0);
    }

    #[test]
    fn an_empty_array_is_an_empty_answer() {
        for body in [&b"[]"[..], b" [ ] \n"] {
            assert_eq!(
                parse(body, &R),
                Ok(Answer {
                    nodes: vec![],
                    dropped: Drops::default(),
                    refused: 0,
                })
            );
        }
    }

    #[test]
    fn non_string_entries_are_quoted_as_sent() {
        let a = parse(
            b"[\"10.0.0.1\", {\"a\": [1,\r\n\t2.50]}, 1e2, \"\\u0031\\u0030.0.0.2\"]",
            &R,
        )
        .unwrap();
        assert_eq!(a.nodes.len(), 2, "escapes are decoded");
        assert_eq!(
            a.dropped.described,
            [
                r#"non-string entry {"a": [1,   2.50]}"#,
                "non-string entry 1e2"
            ]
        );
    }

    #[test]
    fn unusable_answers_are_errors() {
        assert_eq!(parse(br#"{"nodes":[]}"#, &R), Err(AnswerError::NotAnArray));
        assert_eq!(parse(br#""10.0.0.1""#, &R), Err(AnswerError::NotAnArray));
        assert!(matches!(parse(b"<html>", &R), Err(AnswerError::NotJson(_))));
        assert!(matches!(parse(b"", &R), Err(AnswerError::NotJson(_))));
        assert!(matches!(
            parse(br#"["10.0.0.1""#, &R),
            Err(AnswerError::NotJson(_))
        ));
        assert_eq!(parse(b"[\"\xff\"]", &R), Err(AnswerError::NotUtf8));
        assert!(
            matches!(parse(br#"["x", 1]"#, &R), Err(AnswerError::NoValidEntry { dropped, refused: 0 }) if dropped.count == 2)
        );
    }

    #[test]
    fn addresses_outside_allowed_ranges_are_dropped() {
        let allowed: Vec<Cidr> = vec!["10.0.0.0/24".parse().unwrap()];
        let a = parse(
            br#"["10.0.0.1","10.0.1.1","192.0.2.1"]"#,
            &Rules {
                allowed: &allowed,
                ..R
            },
        )
        .unwrap();
        assert_eq!(a.nodes.len(), 1);
        assert_eq!(a.dropped.count, 2);
        assert!(
            a.dropped.described[0].contains("outside allowed_cidrs"),
            "{:?}",
            a.dropped
        );
        assert_eq!(a.refused, 2);
        assert!(matches!(
            parse(
                br#"["192.0.2.1"]"#,
                &Rules {
                    allowed: &allowed,
                    ..R
                }
            ),
            Err(AnswerError::NoValidEntry { refused: 1, .. })
        ));
        // With loopback seeds, allowed_cidrs still narrows loopback answers.
        let allowed: Vec<Cidr> = vec!["127.0.0.0/24".parse().unwrap()];
        let local = Rules {
            allowed: &allowed,
            loopback: true,
            ..R
        };
        let a = parse(br#"["127.0.0.1", "127.0.1.1", "::1", "10.0.0.1"]"#, &local).unwrap();
        assert_eq!(kept(&a), ["127.0.0.1:8000"]);
        assert_eq!(a.refused, 3);
        assert!(a
            .dropped
            .described
            .contains(&"127.0.1.1 is outside allowed_cidrs".to_string()));
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            parse(deep.as_bytes(), &R),
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
        let a = parse(nested(50).as_bytes(), &R).unwrap();
        assert_eq!(a.nodes.len(), 1);
        assert_eq!(a.dropped.count, 1);
        assert!(matches!(
            parse(nested(100).as_bytes(), &R),
            Err(AnswerError::NotJson(_))
        ));
    }

    #[test]
    fn oversized_answer_is_refused_unread() {
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            parse(&big, &R),
            Err(AnswerError::TooLarge(MAX_BODY_BYTES + 1))
        );
    }

    #[test]
    fn node_count_is_capped() {
        let body: Vec<String> = (0..(MAX_NODES + 10))
            .map(|i| format!("\"10.1.{}.{}\"", i / 250, i % 250 + 1))
            .collect();
        let a = parse(format!("[{}]", body.join(",")).as_bytes(), &R).unwrap();
        assert_eq!(a.nodes.len(), MAX_NODES);
        assert!(a
            .dropped
            .described
            .iter()
            .any(|d| d.contains("beyond the limit")));
    }

    /// A deterministic shuffle (xorshift64 Fisher-Yates).
    fn shuffle<T>(items: &mut [T], mut seed: u64) {
        for i in (1..items.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            items.swap(i, (seed % (i as u64 + 1)) as usize);
        }
    }

    #[test]
    fn the_cap_keeps_the_smallest_addresses_whatever_the_order() {
        let mut ips: Vec<String> = (1..=6000u32)
            .map(|i| match i % 5 {
                0 => format!("fd00::{i:x}"),
                1 => format!("::ffff:10.2.{}.{}", i / 250, i % 250 + 1),
                _ => format!("10.{}.{}.{}", i % 3, i / 250, i % 250 + 1),
            })
            .collect();
        let mut want: Vec<NodeAddr> = ips
            .iter()
            .map(|s| address::checked(s.parse().unwrap(), 8000).unwrap())
            .collect();
        want.sort_unstable();
        want.dedup();
        let distinct = want.len();
        assert!(distinct > MAX_NODES + 1000, "{distinct}");
        want.truncate(MAX_NODES);
        let body = |ips: &[String]| {
            let quoted: Vec<String> = ips.iter().map(|s| format!("\"{s}\"")).collect();
            format!("[{}]", quoted.join(","))
        };
        // Distinct entries in several orders: the same list, and the exact
        // count of what did not fit.
        let note = format!(
            "{} nodes beyond the limit of {MAX_NODES}",
            distinct - MAX_NODES
        );
        ips.sort();
        for seed in [0, 1, 2, 3] {
            match seed {
                0 => {}
                1 => ips.reverse(),
                _ => shuffle(&mut ips, seed),
            }
            let a = parse(body(&ips).as_bytes(), &R).unwrap();
            assert!(a.nodes == want, "order {seed}");
            assert_eq!(a.dropped.described, [note.as_str()], "order {seed}");
        }
        // Repeated entries (and bad ones) mixed in change nothing kept.
        let mut noisy = ips.clone();
        noisy.extend(ips.iter().step_by(3).cloned());
        noisy.extend(["nope".to_string(), "0.0.0.0".to_string()]);
        shuffle(&mut noisy, 99);
        let a = parse(body(&noisy).as_bytes(), &R).unwrap();
        assert!(a.nodes == want);
        assert!(a
            .dropped
            .described
            .iter()
            .any(|d| d.contains("beyond the limit")));
        assert!(a.dropped.described.iter().any(|d| d.contains("nope")));
    }

    #[test]
    fn long_bad_entries_are_abbreviated() {
        let long = "x".repeat(10_000);
        let a = parse(format!(r#"["10.0.0.1","{long}"]"#).as_bytes(), &R).unwrap();
        assert!(
            a.dropped.described[0].len() < 100,
            "{}",
            a.dropped.described[0]
        );
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
