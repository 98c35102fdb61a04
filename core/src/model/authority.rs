//! Which requests are the filter's (`hosts`): a request's `:authority`
//! matched against the configured host patterns.
//!
//! With `hosts` the filter can share a listener (an Istio egress gateway,
//! say) with traffic that is not Alternator's: requests for other hosts pass
//! through untouched. The patterns are read once, at configuration, into a
//! form the per-request check compares byte by byte, without allocating or
//! formatting.
//!
//! The rules (docs/configuration.md, "Sharing a gateway or listener"):
//!
//! - names compare ASCII case-insensitively, as DNS names do, and as Envoy
//!   matches a virtual host's `domains`;
//! - a pattern without a port matches its host with any port or none; one
//!   with a port matches that port only;
//! - `*.suffix` matches any name ending in `.suffix` (one or more labels
//!   before it), never the bare `suffix`;
//! - an IPv6 literal is written in brackets (`[::1]`, `[::1]:8000`) and
//!   matches the same address however the client spells it;
//! - an authority that is not a host name or IP literal, with an optional
//!   port, matches nothing (it passes): no userinfo, no trailing dot (Envoy's
//!   `strip_trailing_host_dot` removes one before the filter sees it), no
//!   zone index.

use super::quoted::Quoted;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// The longest host name DNS allows (without its trailing dot).
const MAX_NAME_LEN: usize = 253;
/// The longest label DNS allows.
const MAX_LABEL_LEN: usize = 63;

/// One `hosts` entry, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    host: Host,
    /// `None`: any port, or none.
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    /// A name or an IPv4 literal, lowercase.
    Name(Box<[u8]>),
    /// `*.suffix`: the suffix with its leading dot, lowercase.
    Suffix(Box<[u8]>),
    /// `[IPv6]`.
    V6(Ipv6Addr),
}

impl FromStr for HostPattern {
    type Err = String;

    /// `host`, `host:port`, `*.suffix`, `*.suffix:port`, `[IPv6]`,
    /// `[IPv6]:port`. The error is the problem, quoting `s`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let q = Quoted(s);
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some((inside, after)) = rest.split_once(']') else {
                return Err(format!("{q} opens a '[' it does not close"));
            };
            let ip = Ipv6Addr::from_str(inside)
                .map_err(|_| format!("{q}: the brackets must hold an IPv6 address"))?;
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(port) => Some(port_of(port).ok_or_else(|| bad_port(&q))?),
                    None => return Err(format!("{q}: only \":PORT\" may follow \"]\"")),
                },
            };
            (Host::V6(ip), port)
        } else {
            let (name, port) = match s.split_once(':') {
                None => (s, None),
                Some((_, rest)) if rest.contains(':') => {
                    return Err(format!(
                        "{q}: write an IPv6 address in brackets, like \"[::1]\" or \"[::1]:8000\""
                    ))
                }
                Some((name, port)) => (name, Some(port_of(port).ok_or_else(|| bad_port(&q))?)),
            };
            (name_pattern(name, &q)?, port)
        };
        Ok(HostPattern { host, port })
    }
}

fn bad_port(q: &Quoted<'_>) -> String {
    format!("{q}: the port must be a number from 1 to 65535")
}

/// A configured port: 1 to 65535, 1 to 5 digits (what a request's port
/// may be, so that the entry as written matches itself).
fn port_of(s: &str) -> Option<u16> {
    request_port(s.as_bytes()).filter(|&p| p != 0)
}

/// A name, an IPv4 literal or `*.suffix`, lowercased.
fn name_pattern(name: &str, q: &Quoted<'_>) -> Result<Host, String> {
    if name == "*" {
        return Err(format!(
            "{q}: a lone \"*\" would match every host; leave \"hosts\" out to route every request"
        ));
    }
    let (suffix, labels) = match name.strip_prefix("*.") {
        Some(labels) => (true, labels),
        None => (false, name),
    };
    if labels.contains('*') {
        return Err(format!(
            "{q}: a wildcard is only allowed as a leading \"*.\", like \"*.alternator.example\""
        ));
    }
    if !valid_name(labels.as_bytes()) {
        return Err(format!(
            "{q} is not a host name: labels of letters, digits, '-' or '_' separated by \
             single dots (no leading or trailing dot), each at most {MAX_LABEL_LEN} characters, \
             at most {MAX_NAME_LEN} in all"
        ));
    }
    let lower = labels.to_ascii_lowercase();
    Ok(if suffix {
        Host::Suffix(format!(".{lower}").into_bytes().into_boxed_slice())
    } else {
        Host::Name(lower.into_bytes().into_boxed_slice())
    })
}

#[inline(always)]
fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Whether `host` is `lower` (a lowercase name) in any case. Clients
/// mostly send names as configured, lowercase: then the plain comparison
/// decides, and the case-insensitive one is not needed.
#[inline]
fn same_name(host: &[u8], lower: &[u8]) -> bool {
    host == lower || host.eq_ignore_ascii_case(lower)
}

/// Labels of name bytes separated by single dots.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .split(|&b| b == b'.')
            .all(|label| !label.is_empty() && label.len() <= MAX_LABEL_LEN)
        && name.iter().all(|&b| b == b'.' || name_byte(b))
}

/// A request's `:authority`, split without copying.
struct Authority<'a> {
    /// The name, or what is inside the brackets.
    host: &'a [u8],
    bracketed: bool,
    port: Option<u16>,
}

impl<'a> Authority<'a> {
    /// `None` for anything but `host`, `host:port`, `[v6]`, `[v6]:port`
    /// (port of 1 to 5 digits). The host's bytes are not checked here: a
    /// name equal to a pattern's is a name, and the rest of a name that a
    /// `*.suffix` takes is checked when it does.
    fn split(bytes: &'a [u8]) -> Option<Authority<'a>> {
        let (host, bracketed, after) = match bytes.strip_prefix(b"[") {
            Some(rest) => {
                let close = rest.iter().position(|&b| b == b']')?;
                let (inside, after) = rest.split_at(close);
                (inside, true, after.get(1..)?)
            }
            None => {
                let colon = bytes.iter().position(|&b| b == b':');
                let (host, after) = bytes.split_at(colon.unwrap_or(bytes.len()));
                (host, false, after)
            }
        };
        let port = match after.split_first() {
            None => None,
            Some((b':', digits)) => Some(request_port(digits)?),
            Some(_) => return None,
        };
        Some(Authority {
            host,
            bracketed,
            port,
        })
    }
}

/// A port as a request spells it: 1 to 5 digits, at most 65535.
fn request_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    let mut port: u32 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        port = port * 10 + u32::from(b - b'0');
    }
    u16::try_from(port).ok()
}

impl HostPattern {
    fn matches(&self, authority: &Authority<'_>) -> bool {
        if self.port.is_some() && self.port != authority.port {
            return false;
        }
        match &self.host {
            Host::Name(name) => !authority.bracketed && same_name(authority.host, name),
            Host::Suffix(suffix) => {
                let host = authority.host;
                let (labels, end) = host.split_at(host.len().saturating_sub(suffix.len()));
                !authority.bracketed && same_name(end, suffix) && valid_name(labels)
            }
            Host::V6(ip) => {
                authority.bracketed
                    && std::str::from_utf8(authority.host)
                        .ok()
                        .and_then(|s| Ipv6Addr::from_str(s).ok())
                        == Some(*ip)
            }
        }
    }
}

/// Whether a request whose `:authority` is `authority` (`None`: it has
/// none) is one the filter routes, under `hosts`.
pub fn routes(hosts: &[HostPattern], authority: Option<&[u8]>) -> bool {
    match authority.and_then(Authority::split) {
        Some(authority) => hosts.iter().any(|h| h.matches(&authority)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn hosts(patterns: &[&str]) -> Vec<HostPattern> {
        patterns.iter().map(|p| p.parse().unwrap()).collect()
    }

    fn routed(patterns: &[&str], authority: &str) -> bool {
        routes(&hosts(patterns), Some(authority.as_bytes()))
    }

    #[test]
    fn a_name_without_port_matches_any_port_or_none_in_any_case() {
        let p = ["alternator.example"];
        for yes in [
            "alternator.example",
            "alternator.example:8000",
            "alternator.example:80",
            "Alternator.EXAMPLE:443",
            "alternator.example:08000",
        ] {
            assert!(routed(&p, yes), "{yes}");
        }
        for no in [
            "other.example",
            "x.alternator.example",
            "alternator.example.",
            "alternator.example.evil",
            "alternator.exampl",
            "alternator.example:",
            "alternator.example:65536",
            "alternator.example:800000",
            "alternator.example:80a",
            "alternator.example:-1",
            "alternator.example:8000:1",
            "user@alternator.example",
            " alternator.example",
            "[alternator.example]",
            "",
        ] {
            assert!(!routed(&p, no), "{no}");
        }
        assert!(!routes(&hosts(&p), None), "no authority at all");
    }

    #[test]
    fn a_name_with_a_port_matches_that_port_only() {
        let p = ["alternator.example:8000"];
        assert!(routed(&p, "alternator.example:8000"));
        assert!(routed(&p, "ALTERNATOR.example:8000"));
        assert!(!routed(&p, "alternator.example"));
        assert!(!routed(&p, "alternator.example:8001"));
        assert!(!routed(&p, "alternator.example:80"));
    }

    #[test]
    fn a_wildcard_matches_names_under_its_suffix_not_the_suffix() {
        let p = ["*.alternator.example"];
        for yes in [
            "eu.alternator.example",
            "a.b.alternator.example:8000",
            "EU.Alternator.Example",
        ] {
            assert!(routed(&p, yes), "{yes}");
        }
        for no in [
            "alternator.example",
            ".alternator.example",
            "xalternator.example",
            "eu.alternator.example.org",
            "[::1]",
            "user@eu.alternator.example",
            "a b.alternator.example",
            "..alternator.example",
            "a..alternator.example",
            "eu.alternator.example.",
        ] {
            assert!(!routed(&p, no), "{no}");
        }
        let p = ["*.alternator.example:8000"];
        assert!(routed(&p, "eu.alternator.example:8000"));
        assert!(!routed(&p, "eu.alternator.example:9000"));
        assert!(!routed(&p, "eu.alternator.example"));
    }

    #[test]
    fn ipv6_literals_match_by_address_in_brackets() {
        let p = ["[::1]:8000", "[fd00::a]"];
        for yes in [
            "[::1]:8000",
            "[0:0:0:0:0:0:0:1]:8000",
            "[fd00::a]",
            "[FD00:0::A]:443",
        ] {
            assert!(routed(&p, yes), "{yes}");
        }
        for no in [
            "[::1]",
            "[::1]:8001",
            "::1",
            "[::2]:8000",
            "[::1]8000",
            "[::1",
            "[fe80::1%25eth0]",
            "fd00::a",
        ] {
            assert!(!routed(&p, no), "{no}");
        }
    }

    #[test]
    fn ipv4_literals_are_names() {
        let p = ["10.0.0.5"];
        assert!(routed(&p, "10.0.0.5"));
        assert!(routed(&p, "10.0.0.5:8000"));
        assert!(!routed(&p, "10.0.0.50"));
    }

    #[test]
    fn any_pattern_of_several_may_match() {
        let p = ["a.example", "*.b.example", "[::1]"];
        assert!(routed(&p, "a.example:1"));
        assert!(routed(&p, "x.b.example"));
        assert!(routed(&p, "[::1]:9"));
        assert!(!routed(&p, "b.example"));
    }

    #[test]
    fn patterns_are_kept_lowercase() {
        assert_eq!(
            "Alternator.Example:8000".parse::<HostPattern>(),
            "alternator.example:8000".parse::<HostPattern>()
        );
        assert_eq!(
            "*.EU.example".parse::<HostPattern>(),
            "*.eu.example".parse::<HostPattern>()
        );
        assert_eq!(
            "[0::1]".parse::<HostPattern>(),
            "[::1]".parse::<HostPattern>()
        );
    }

    #[test]
    fn bad_patterns_say_why() {
        let long_label = format!("{}.example", "a".repeat(MAX_LABEL_LEN + 1));
        let long_name = ["abcdefgh"; 29].join(".");
        assert!(long_name.len() > MAX_NAME_LEN);
        let fits = ["abcdefgh"; 28].join(".");
        assert!(fits.parse::<HostPattern>().is_ok());
        for (bad, why) in [
            ("", "is not a host name"),
            ("*", "a lone \"*\" would match every host"),
            ("*:8000", "a lone \"*\""),
            ("a*.example", "only allowed as a leading \"*.\""),
            ("*.*.example", "only allowed as a leading \"*.\""),
            ("*example", "only allowed as a leading \"*.\""),
            ("a.*.example", "only allowed as a leading \"*.\""),
            ("*.", "is not a host name"),
            ("alternator.example.", "is not a host name"),
            (".alternator.example", "is not a host name"),
            ("a..example", "is not a host name"),
            ("alter nator", "is not a host name"),
            ("alternator.example/", "is not a host name"),
            ("user@alternator.example", "is not a host name"),
            ("é.example", "is not a host name"),
            (&long_label, "is not a host name"),
            (&long_name, "is not a host name"),
            (
                "alternator.example:",
                "the port must be a number from 1 to 65535",
            ),
            ("alternator.example:0", "the port must be"),
            ("alternator.example:65536", "the port must be"),
            ("alternator.example:+80", "the port must be"),
            ("alternator.example:http", "the port must be"),
            ("alternator.example:000080", "the port must be"),
            ("::1", "write an IPv6 address in brackets"),
            ("fd00::1:8000", "write an IPv6 address in brackets"),
            ("[::1", "opens a '[' it does not close"),
            (
                "[alternator.example]",
                "the brackets must hold an IPv6 address",
            ),
            ("[fe80::1%eth0]", "the brackets must hold an IPv6 address"),
            ("[::1]8000", "only \":PORT\" may follow \"]\""),
            ("[::1]:0", "the port must be"),
        ] {
            let e = bad.parse::<HostPattern>().unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.contains(&Quoted(bad).to_string()), "{bad:?}: {e}");
        }
    }

    /// The check reads the authority in place: no allocation, whatever it
    /// holds.
    #[test]
    fn matching_allocates_nothing() {
        let p = hosts(&["alternator.example", "*.b.example:8000", "[::1]"]);
        let authorities: [&[u8]; 6] = [
            b"alternator.example:8000",
            b"x.b.example:8000",
            b"[0:0::1]:80",
            b"other.example",
            b"[::1",
            b"\xff\xfe",
        ];
        let (found, peak) =
            crate::testing::alloc::peak_during(|| authorities.map(|a| routes(&p, Some(a))));
        assert_eq!(found, [true, true, true, false, false, false]);
        assert_eq!(peak, 0, "bytes allocated while matching");
    }
}
