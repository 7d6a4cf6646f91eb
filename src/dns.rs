//! DNS vocabulary shared by every layer: client subnets (ECS or a remote
//! address) and names compared the way DNS compares them. It depends on
//! nothing else in the crate, so the pipe, the readings and the algorithms
//! can all use it without importing each other.

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

/// A client subnet: the ECS option, or the remote address as a host prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Subnet {
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (parse_ip(a)?, p.parse::<u8>().ok()?),
            None => return parse_ip(s).map(Self::host),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }
}

impl Subnet {
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses an address as pdns prints it; IPv6 may carry a `%iface` suffix
/// (pipe.rst), which says nothing about the client and is dropped.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.split_once('%').map_or(s, |(a, _)| a);
    s.parse().ok()
}

impl Subnet {
    /// No host bits set beyond the prefix: `192.0.2.0/24`, not `192.0.2.1/24`.
    pub fn is_network(&self) -> bool {
        let host = host_bits(self.addr, self.prefix);
        let host_mask = 1u128.checked_shl(host).map_or(u128::MAX, |b| b - 1);
        bits(self.addr) & host_mask == 0
    }

    /// The subnet with its host bits cleared: `192.0.2.0/24` for `192.0.2.1/24`.
    pub fn network(&self) -> Self {
        let host = host_bits(self.addr, self.prefix);
        let kept = mask(self.addr, self.prefix).checked_shl(host).unwrap_or(0);
        let addr = match self.addr {
            IpAddr::V4(_) => IpAddr::V4((kept as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(kept.into()),
        };
        Self { addr, ..*self }
    }

    /// Whether `addr` lies in this subnet. IPv4-mapped IPv6 addresses count
    /// as IPv4, the way pdns may pass them.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        addr.is_ipv4() == self.addr.is_ipv4()
            && mask(addr, self.prefix) == mask(self.addr, self.prefix)
    }
}

fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn host_bits(a: IpAddr, prefix: u8) -> u32 {
    let width = if a.is_ipv4() { 32 } else { 128 };
    u32::from(width - prefix.min(width))
}

/// The network part of `a`, shifted down.
fn mask(a: IpAddr, prefix: u8) -> u128 {
    bits(a).checked_shr(host_bits(a, prefix)).unwrap_or(0)
}

/// Compares a stored (lowercase) name with an asked one, ignoring ASCII case.
pub fn cmp_name(stored: &str, asked: &str) -> Ordering {
    let a = stored.bytes();
    let b = asked.bytes().map(|c| c.to_ascii_lowercase());
    a.cmp(b)
}

/// A record type, parsed once when a record is read from the database. The
/// types the pipe treats specially are named; every other type is carried by
/// its mnemonic, upper case, and served as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RType<'a> {
    A,
    Aaaa,
    Srv,
    Mx,
    Soa,
    Other(&'a str),
}

impl<'a> RType<'a> {
    /// `s` as a type; an unnamed type borrows `s`, which the caller keeps
    /// in upper case (the form pdns prints).
    pub fn parse(s: &'a str) -> Self {
        const NAMED: [(&str, RType<'static>); 5] = [
            ("A", RType::A),
            ("AAAA", RType::Aaaa),
            ("SRV", RType::Srv),
            ("MX", RType::Mx),
            ("SOA", RType::Soa),
        ];
        NAMED
            .iter()
            .find(|(name, _)| s.eq_ignore_ascii_case(name))
            .map_or(Self::Other(s), |(_, t)| *t)
    }

    pub fn as_str(self) -> &'a str {
        match self {
            Self::A => "A",
            Self::Aaaa => "AAAA",
            Self::Srv => "SRV",
            Self::Mx => "MX",
            Self::Soa => "SOA",
            Self::Other(s) => s,
        }
    }

    /// MX and SRV carry a priority in its own DATA field.
    pub fn has_priority(self) -> bool {
        matches!(self, Self::Mx | Self::Srv)
    }

    /// The RRsets the algorithms can order: SRV by priority and weight,
    /// A and AAAA by choosing the best addresses.
    pub fn is_rankable(self) -> bool {
        matches!(self, Self::Srv | Self::A | Self::Aaaa)
    }
}

impl fmt::Display for RType<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
