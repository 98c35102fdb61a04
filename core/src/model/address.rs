//! Node addresses: an IP literal and a port, never a host name.
//!
//! Alternator nodes are addressed by IP (`/localnodes` answers bare IPs), and
//! Envoy's ORIGINAL_DST cluster needs an `IP:PORT` literal, so a name that would
//! need DNS is refused up front instead of failing per request.

use super::quoted::Quoted;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// One Alternator node as the filter routes to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeAddr {
    pub ip: IpAddr,
    pub port: u16,
}

/// Why a string is not a usable node address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddrError {
    Empty,
    NotAnIp(String),
    BadPort(String),
    /// An address no node can have: unspecified, multicast or broadcast.
    NotUnicast(IpAddr),
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::Empty => write!(f, "empty address"),
            AddrError::NotAnIp(s) => write!(
                f,
                "{} is not an IP literal (expected IP, IP:PORT or [IPv6]:PORT)",
                Quoted(s)
            ),
            AddrError::BadPort(s) => write!(f, "{} has a port outside 1-65535", Quoted(s)),
            AddrError::NotUnicast(ip) => write!(f, "{ip} is not a unicast address"),
        }
    }
}

impl std::error::Error for AddrError {}

impl NodeAddr {
    pub fn new(ip: IpAddr, port: u16) -> Self {
        NodeAddr { ip, port }
    }

    /// Parses a configured seed: `IP`, `IP:PORT`, or `[IPv6]:PORT`; a bare
    /// IPv6 literal (no brackets) takes `default_port`.
    pub fn parse(s: &str, default_port: u16) -> Result<NodeAddr, AddrError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddrError::Empty);
        }
        if let Ok(ip) = IpAddr::from_str(s) {
            return checked(ip, default_port);
        }
        if let Ok(sa) = SocketAddr::from_str(s) {
            if sa.port() == 0 {
                return Err(AddrError::BadPort(s.to_string()));
            }
            if let SocketAddr::V6(v6) = sa {
                if v6.scope_id() != 0 {
                    return Err(AddrError::NotAnIp(s.to_string()));
                }
            }
            return checked(sa.ip(), sa.port());
        }
        // Distinguish "bad port" from "not an IP" for a clearer error.
        if let Some((host, port)) = split_host_port(s) {
            if IpAddr::from_str(host).is_ok() && port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(AddrError::BadPort(s.to_string()));
            }
        }
        Err(AddrError::NotAnIp(s.to_string()))
    }

    /// `IP:PORT`, with brackets around IPv6: the form Envoy's original
    /// destination address and an HTTP authority both expect.
    pub fn authority(&self) -> String {
        self.to_string()
    }
}

/// Refuses addresses that cannot belong to a node.
pub fn checked(ip: IpAddr, port: u16) -> Result<NodeAddr, AddrError> {
    // Fold first: `::ffff:224.0.0.1` is the IPv4 multicast address it maps.
    let ip = canonical(ip);
    if port == 0 {
        return Err(AddrError::BadPort(format!("{ip}:0")));
    }
    let unicast = match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    };
    if unicast {
        Ok(NodeAddr { ip, port })
    } else {
        Err(AddrError::NotUnicast(ip))
    }
}

/// Link-local: 169.254.0.0/16 or fe80::/10. No Alternator node is reached
/// there, but cloud metadata endpoints are (169.254.169.254); an IPv6 one
/// is not even reachable without the zone index an address here never has.
/// Expects an address folded by [`checked`] (a mapped IPv4 one is IPv4).
pub fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        // The first 10 bits are 1111 1110 10.
        IpAddr::V6(v6) => u128::from(*v6) >> 118 == 0x3fa,
    }
}

/// Loopback: 127.0.0.0/8 or ::1 (after folding, as [`is_link_local`]).
pub fn is_loopback(ip: &IpAddr) -> bool {
    ip.is_loopback()
}

/// An IPv4-mapped IPv6 address names the same node as the IPv4 one; folding
/// it keeps the sorted, deduplicated list honest.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    s.rsplit_once(':')
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(v4) => write!(f, "{v4}:{}", self.port),
            IpAddr::V6(v6) => write!(f, "[{v6}]:{}", self.port),
        }
    }
}

impl FromStr for NodeAddr {
    type Err = AddrError;
    /// Parses the canonical `IP:PORT` form written by [`fmt::Display`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let sa = SocketAddr::from_str(s).map_err(|_| AddrError::NotAnIp(s.to_string()))?;
        checked(sa.ip(), sa.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn ok(s: &str) -> String {
        NodeAddr::parse(s, 8000).unwrap().to_string()
    }

    #[test]
    fn bare_ipv4_takes_default_port() {
        assert_eq!(ok("10.0.0.1"), "10.0.0.1:8000");
    }

    #[test]
    fn explicit_port_wins() {
        assert_eq!(ok("10.0.0.1:9042"), "10.0.0.1:9042");
        assert_eq!(ok(" 10.0.0.1:1 "), "10.0.0.1:1");
    }

    #[test]
    fn ipv6_forms() {
        assert_eq!(ok("::1"), "[::1]:8000");
        assert_eq!(ok("[::1]:8043"), "[::1]:8043");
        assert_eq!(ok("fd00::5"), "[fd00::5]:8000");
        assert_eq!(ok("::ffff:10.1.2.3"), "10.1.2.3:8000");
    }

    #[test]
    fn host_names_and_junk_are_refused() {
        for bad in [
            "localhost",
            "node1:8000",
            "10.0.0",
            "10.0.0.1.5",
            "http://10.0.0.1",
            "[::1]",
        ] {
            assert!(
                matches!(NodeAddr::parse(bad, 8000), Err(AddrError::NotAnIp(_))),
                "{bad} should be refused as not an IP"
            );
        }
        assert_eq!(NodeAddr::parse("  ", 8000), Err(AddrError::Empty));
    }

    #[test]
    fn bad_ports_are_named() {
        for bad in ["10.0.0.1:0", "10.0.0.1:70000", "[::1]:0", "10.0.0.1:x"] {
            assert!(
                matches!(NodeAddr::parse(bad, 8000), Err(AddrError::BadPort(_))),
                "{bad} should be refused for its port"
            );
        }
    }

    #[test]
    fn non_unicast_is_refused() {
        for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "::", "ff02::1"] {
            assert!(
                matches!(NodeAddr::parse(bad, 8000), Err(AddrError::NotUnicast(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn mapped_non_unicast_is_refused() {
        // Found by fuzzing: the mapped form used to pass the unicast check.
        for bad in [
            "::ffff:224.0.0.1",
            "::ffff:0.0.0.0",
            "::ffff:255.255.255.255",
            "::ffff:Efff:2",
        ] {
            assert!(
                matches!(NodeAddr::parse(bad, 8000), Err(AddrError::NotUnicast(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn link_local_and_loopback_are_told_after_folding() {
        let folded = |s: &str| checked(s.parse().unwrap(), 1).unwrap().ip;
        for ll in [
            "169.254.0.1",
            "169.254.169.254",
            "169.254.255.255",
            "::ffff:169.254.169.254",
            "fe80::1",
            "febf:ffff::1",
        ] {
            assert!(is_link_local(&folded(ll)), "{ll}");
            assert!(!is_loopback(&folded(ll)), "{ll}");
        }
        for lo in ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.2"] {
            assert!(is_loopback(&folded(lo)), "{lo}");
            assert!(!is_link_local(&folded(lo)), "{lo}");
        }
        for other in [
            "169.253.255.255",
            "169.255.0.1",
            "10.0.0.1",
            "fec0::1",
            "fe7f::1",
            "fd00:ec2::254",
            "::2",
            "128.0.0.1",
        ] {
            assert!(!is_link_local(&folded(other)), "{other}");
            assert!(!is_loopback(&folded(other)), "{other}");
        }
    }

    #[test]
    fn display_round_trips_through_from_str() {
        for s in ["10.0.0.1:8000", "[fd00::1]:8043"] {
            let a: NodeAddr = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(a.authority(), s);
        }
        assert_eq!(
            NodeAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1).to_string(),
            "[::1]:1"
        );
    }

    #[test]
    fn ordering_is_by_ip_then_port() {
        let mut v: Vec<NodeAddr> = ["10.0.0.2:1", "10.0.0.10:1", "10.0.0.2:0"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        v.sort();
        let s: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        assert_eq!(s, ["10.0.0.2:1", "10.0.0.10:1"]);
    }
}
