//! Address ranges (`allowed_cidrs`): where the filter may ever send a request.
//!
//! `/localnodes` answers are trusted to name cluster nodes; a restriction to
//! known ranges makes sure a misbehaving or spoofed answer cannot turn the
//! proxy toward arbitrary addresses.

use super::quoted::Quoted;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => masked(
                u128::from(u32::from(net)),
                u128::from(u32::from(*ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), u128::from(*ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn masked(net: u128, ip: u128, bits: u8, prefix: u8) -> bool {
    let shift = u32::from(bits - prefix);
    shift >= 128 || (net >> shift) == (ip >> shift)
}

impl FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `fd00::/8`, or a single address.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let ip = IpAddr::from_str(ip).map_err(|_| {
            format!(
                "{} is not an IP range (expected e.g. 10.0.0.0/8)",
                Quoted(s)
            )
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{} has a prefix length outside 0-{max}", Quoted(s))),
            },
        };
        // Node addresses fold IPv4-mapped IPv6 to IPv4, so ranges do too; a
        // mapped range must stay within the mapped space (prefix >= 96).
        if let IpAddr::V6(v6) = ip {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return match prefix.checked_sub(96) {
                    Some(p) => Ok(Cidr {
                        network: IpAddr::V4(v4),
                        prefix: p,
                    }),
                    None => Err(format!(
                        "{}: an IPv4-mapped range needs a prefix length of at least 96",
                        Quoted(s)
                    )),
                };
            }
        }
        Ok(Cidr {
            network: ip,
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Whether `ip` is allowed: no ranges means everything is.
pub fn allowed(ranges: &[Cidr], ip: &IpAddr) -> bool {
    ranges.is_empty() || ranges.iter().any(|r| r.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_ranges() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(&ip("10.1.2.3")));
        assert!(!c.contains(&ip("10.2.0.1")));
        assert!(!c.contains(&ip("fd00::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&ip("192.0.2.1")));
        let one: Cidr = "127.0.0.2".parse().unwrap();
        assert!(one.contains(&ip("127.0.0.2")) && !one.contains(&ip("127.0.0.3")));
    }

    #[test]
    fn v6_ranges() {
        let c: Cidr = "fd00::/8".parse().unwrap();
        assert!(c.contains(&ip("fd12::1")));
        assert!(!c.contains(&ip("fe80::1")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(&ip("::1")));
    }

    #[test]
    fn mapped_ranges_fold_to_ipv4() {
        let c: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(&ip("10.2.3.4")));
        assert_eq!(
            "::ffff:10.0.0.1".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.1/32"
        );
        assert!("::ffff:10.0.0.0/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "x/1",
            "10.0.0.0/-1",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn no_ranges_allow_everything() {
        assert!(allowed(&[], &ip("192.0.2.1")));
        let r = ["127.0.0.0/8".parse().unwrap()];
        assert!(allowed(&r, &ip("127.3.4.5")));
        assert!(!allowed(&r, &ip("10.0.0.1")));
    }
}
