//! The PowerDNS pipe protocol, ABI 1 to 5: parsing request lines and
//! formatting answer lines. No I/O happens here; `backend` owns the loop.
//!
//! The wire dialogue (TAB-separated, one request line, one answer that ends
//! with `END` or is a single `FAIL`/`OK` line), as pdns 4.7 really sends it
//! (`../shared/reference/pdns-pipe-abi.md`):
//!
//! ```text
//! ABI 1   → HELO  1
//!         ← OK    pdns-ha 0.1.0, pipe ABI 1
//!         → Q     _sip._udp.example.com  IN  SOA  -1  0.0.0.0
//!         ← END
//!         → Q     example.com  IN  SOA  -1  0.0.0.0
//!         ← DATA  example.com  IN  SOA  3600  1  ns1.example.com. hostmaster.example.com. …
//!         ← END
//!         → Q     _sip._udp.example.com  IN  ANY  1  127.0.0.1
//!         ← DATA  _sip._udp.example.com  IN  SRV  300  1  10  50 5060 sip1.example.com.
//!         ← END
//!         → AXFR  1
//!         ← DATA  …  (every record of zone 1)
//!         ← END
//!
//! ABI 2   Q gains local-ip:          Q  qname  IN  ANY  1  127.0.0.1  127.0.0.1
//! ABI 3   Q gains edns-subnet:       Q  qname  IN  ANY  1  127.0.0.1  127.0.0.1  203.0.113.0/24
//!         DATA gains scopebits, auth: DATA  24  1  qname  IN  A  60  1  192.0.2.11
//! ABI 4   AXFR gains the zone name:  AXFR  1  example.com
//! ABI 5   CMD for `pdnsutil backend-cmd`:
//!         → CMD   status
//!         ← status lines …
//!         ← END
//! ```
//!
//! MX and SRV content goes out as `prio` TAB `rest`: pdns joins exactly two
//! fields and answers SERVFAIL for any other split (reference §0.2, §3.6).

use std::fmt;
use std::io::{self, Write};
use std::net::IpAddr;

use crate::dns::{RType, Subnet};

/// Longest request line accepted. A Q line is at most a 255-byte name plus
/// four short fields and two addresses; anything near this size is garbage.
pub const MAX_LINE: usize = 2048;

/// The pipe ABI version negotiated by `HELO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AbiVersion {
    V1 = 1,
    V2 = 2,
    V3 = 3,
    V4 = 4,
    V5 = 5,
}

impl AbiVersion {
    fn from_number(n: &str) -> Option<Self> {
        Some(match n {
            "1" => Self::V1,
            "2" => Self::V2,
            "3" => Self::V3,
            "4" => Self::V4,
            "5" => Self::V5,
            _ => return None,
        })
    }

    /// Number of TAB fields in a Q line, including the `Q` itself.
    fn q_fields(self) -> usize {
        match self {
            Self::V1 => 6,
            Self::V2 => 7,
            _ => 8,
        }
    }

    /// ABI 3 and later carry scopebits and auth in every DATA line.
    fn has_scope(self) -> bool {
        self >= Self::V3
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", *self as u8)
    }
}

/// A query type. pdns mostly asks `ANY` and `SOA`; other types are matched
/// by their mnemonic, so record types this enum does not name still work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType<'a> {
    Any,
    Soa,
    Other(&'a str),
}

impl<'a> QType<'a> {
    pub fn parse(s: &'a str) -> Self {
        if s.eq_ignore_ascii_case("ANY") {
            Self::Any
        } else if s.eq_ignore_ascii_case("SOA") {
            Self::Soa
        } else {
            Self::Other(s)
        }
    }

    /// Whether a record of type `rtype` answers this question.
    pub fn matches(self, rtype: RType<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::Soa => rtype == RType::Soa,
            Self::Other(t) => rtype.as_str().eq_ignore_ascii_case(t),
        }
    }
}

impl fmt::Display for QType<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("ANY"),
            Self::Soa => f.write_str("SOA"),
            Self::Other(t) => f.write_str(t),
        }
    }
}

/// A `Q` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Question<'a> {
    pub qname: &'a str,
    pub qclass: &'a str,
    pub qtype: QType<'a>,
    pub id: i64,
    pub remote_ip: IpAddr,
    /// ABI 2+; `None` for ABI 1.
    pub local_ip: Option<IpAddr>,
    /// ABI 3+: pdns's "real remote", the ECS subnet when
    /// `edns-subnet-processing=yes` and the query had one, else `remote/32`.
    pub edns_subnet: Option<Subnet>,
}

impl Question<'_> {
    /// Who the answer is for: the ECS subnet when pdns passes a real one
    /// (ABI 3+ with `edns-subnet-processing=yes`), else the remote address.
    /// A `/0` (the client opted out, or a packet-less question) says nothing.
    pub fn client(&self) -> Subnet {
        match self.edns_subnet {
            Some(s) if s.prefix > 0 => s,
            _ => Subnet::host(self.remote_ip),
        }
    }
}

/// One request line from pdns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Helo(AbiVersion),
    Query(Question<'a>),
    /// Zone transfer of the zone with this id (and, ABI 4+, this name).
    Axfr {
        id: i64,
        zone: Option<&'a str>,
    },
    /// ABI 5 `pdnsutil backend-cmd`.
    Cmd(&'a str),
}

/// Why a line could not be understood. Each one is answered with `FAIL`.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    TooLong,
    NotUtf8,
    Empty,
    UnknownTag(String),
    NoHelo,
    UnsupportedAbi(String),
    FieldCount {
        tag: &'static str,
        abi: AbiVersion,
        expected: usize,
        got: usize,
    },
    BadField {
        field: &'static str,
        value: String,
    },
    CmdNeedsAbi5(AbiVersion),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => write!(f, "line longer than {MAX_LINE} bytes"),
            Self::NotUtf8 => f.write_str("line is not valid UTF-8"),
            Self::Empty => f.write_str("empty line"),
            Self::UnknownTag(t) => write!(f, "unknown request {:?}", t),
            Self::NoHelo => f.write_str("request before HELO"),
            Self::UnsupportedAbi(v) => {
                write!(f, "unsupported pipe ABI version {v:?} (supported: 1 to 5)")
            }
            Self::FieldCount {
                tag,
                abi,
                expected,
                got,
            } => {
                write!(
                    f,
                    "{tag} line for ABI {abi} needs {expected} fields, got {got}"
                )
            }
            Self::BadField { field, value } => write!(f, "bad {field} {value:?}"),
            Self::CmdNeedsAbi5(abi) => write!(f, "CMD needs ABI 5, negotiated ABI {abi}"),
        }
    }
}

/// Truncates what goes into an error message, so a garbage line cannot
/// flood the log.
fn excerpt(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn bad(field: &'static str, value: &str) -> ParseError {
    ParseError::BadField {
        field,
        value: excerpt(value),
    }
}

/// Parses one line (without its `\n`). `abi` is `None` until HELO.
pub fn parse<'a>(line: &'a str, abi: Option<AbiVersion>) -> Result<Request<'a>, ParseError> {
    if line.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut fields = line.split('\t');
    let tag = fields.next().unwrap_or("");
    if tag == "HELO" {
        let v = fields.next().unwrap_or("");
        return match (AbiVersion::from_number(v), fields.next()) {
            (Some(abi), None) => Ok(Request::Helo(abi)),
            _ => Err(ParseError::UnsupportedAbi(
                excerpt(&line[4..]).trim().to_owned(),
            )),
        };
    }
    if !matches!(tag, "Q" | "AXFR" | "CMD") {
        return Err(ParseError::UnknownTag(excerpt(tag)));
    }
    let abi = abi.ok_or(ParseError::NoHelo)?;
    match tag {
        "Q" => parse_q(line, abi).map(Request::Query),
        "AXFR" => parse_axfr(line, abi),
        _ if abi < AbiVersion::V5 => Err(ParseError::CmdNeedsAbi5(abi)),
        // The command is everything after the tag: pdnsutil passes one
        // argument per CMD line, spaces and all.
        _ => Ok(Request::Cmd(line.get(4..).unwrap_or(""))),
    }
}

fn parse_q(line: &str, abi: AbiVersion) -> Result<Question<'_>, ParseError> {
    let mut f = [""; 8];
    split_exact(line, &mut f[..abi.q_fields()]).map_err(|got| ParseError::FieldCount {
        tag: "Q",
        abi,
        expected: abi.q_fields(),
        got,
    })?;
    let qname = f[1];
    if qname.is_empty() || qname.len() > 255 || qname.contains(' ') {
        return Err(bad("qname", qname));
    }
    if f[2].is_empty() {
        return Err(bad("qclass", f[2]));
    }
    if f[3].is_empty() || f[3].len() > 16 || !f[3].bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad("qtype", f[3]));
    }
    let id = f[4].parse::<i64>().map_err(|_| bad("id", f[4]))?;
    let remote_ip = crate::dns::parse_ip(f[5]).ok_or_else(|| bad("remote-ip", f[5]))?;
    let local_ip = match abi {
        AbiVersion::V1 => None,
        _ => Some(crate::dns::parse_ip(f[6]).ok_or_else(|| bad("local-ip", f[6]))?),
    };
    let edns_subnet = match abi.has_scope() {
        false => None,
        true => Some(Subnet::parse(f[7]).ok_or_else(|| bad("edns-subnet", f[7]))?),
    };
    Ok(Question {
        qname,
        qclass: f[2],
        qtype: QType::parse(f[3]),
        id,
        remote_ip,
        local_ip,
        edns_subnet,
    })
}

fn parse_axfr(line: &str, abi: AbiVersion) -> Result<Request<'_>, ParseError> {
    let n = if abi >= AbiVersion::V4 { 3 } else { 2 };
    let mut f = [""; 3];
    split_exact(line, &mut f[..n]).map_err(|got| ParseError::FieldCount {
        tag: "AXFR",
        abi,
        expected: n,
        got,
    })?;
    let id = f[1].parse::<i64>().map_err(|_| bad("zone id", f[1]))?;
    let zone = (n == 3).then_some(f[2]);
    if zone.is_some_and(str::is_empty) {
        return Err(bad("zone name", f[2]));
    }
    Ok(Request::Axfr { id, zone })
}

/// Splits `line` on TABs into exactly `out.len()` fields, without allocating.
/// On a mismatch returns the number of fields found.
fn split_exact<'a>(line: &'a str, out: &mut [&'a str]) -> Result<(), usize> {
    let mut n = 0;
    for field in line.split('\t') {
        if n < out.len() {
            out[n] = field;
        }
        n += 1;
    }
    if n == out.len() {
        Ok(())
    } else {
        Err(n)
    }
}

/// One record as it goes out in a DATA line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Data<'a> {
    pub scopebits: u8,
    pub auth: bool,
    pub qname: &'a str,
    pub qtype: &'a str,
    pub ttl: u32,
    pub id: i64,
    /// MX/SRV priority, sent as its own field.
    pub prio: Option<i64>,
    /// A rewritten SRV weight, sent in front of `content` (then `port
    /// target`).
    pub weight: Option<u32>,
    pub content: &'a str,
}

/// Writes one DATA line in the format of `abi`.
pub fn write_data(out: &mut dyn Write, abi: AbiVersion, d: &Data<'_>) -> io::Result<()> {
    out.write_all(b"DATA\t")?;
    if abi.has_scope() {
        write!(out, "{}\t{}\t", d.scopebits, u8::from(d.auth))?;
    }
    write!(out, "{}\tIN\t{}\t{}\t{}\t", d.qname, d.qtype, d.ttl, d.id)?;
    if let Some(prio) = d.prio {
        write!(out, "{prio}\t")?;
    }
    if let Some(weight) = d.weight {
        write!(out, "{weight} ")?;
    }
    out.write_all(d.content.as_bytes())?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(line: &str, abi: AbiVersion) -> Question<'_> {
        match parse(line, Some(abi)) {
            Ok(Request::Query(q)) => q,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn helo_versions() {
        for n in 1..=5u8 {
            let line = format!("HELO\t{n}");
            let Ok(Request::Helo(v)) = parse(&line, None) else {
                panic!("{line}")
            };
            assert_eq!(v as u8, n);
        }
        for bad in [
            "HELO\t0",
            "HELO\t6",
            "HELO\tx",
            "HELO",
            "HELO\t1\t2",
            "HELO\t 1",
        ] {
            assert!(
                matches!(parse(bad, None), Err(ParseError::UnsupportedAbi(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn q_per_abi() {
        let v1 = q("Q\texample.com\tIN\tSOA\t-1\t0.0.0.0", AbiVersion::V1);
        assert_eq!((v1.qname, v1.qtype, v1.id), ("example.com", QType::Soa, -1));
        assert_eq!((v1.local_ip, v1.edns_subnet), (None, None));

        let v2 = q(
            "Q\twww.example.com\tIN\tANY\t1\t127.0.0.2\t127.0.0.1",
            AbiVersion::V2,
        );
        assert_eq!(v2.remote_ip.to_string(), "127.0.0.2");
        assert_eq!(v2.local_ip.unwrap().to_string(), "127.0.0.1");

        let line = "Q\tWwW.ExAmple.CoM\tIN\tA\t1\t127.0.0.1\t127.0.0.1\t203.0.113.0/24";
        for abi in [AbiVersion::V3, AbiVersion::V4, AbiVersion::V5] {
            let v3 = q(line, abi);
            assert_eq!(v3.qname, "WwW.ExAmple.CoM");
            assert_eq!(v3.qtype, QType::Other("A"));
            assert_eq!(v3.edns_subnet.unwrap().to_string(), "203.0.113.0/24");
        }
        let v6 = q(
            "Q\tx\tIN\tAAAA\t1\tfe80::1%eth0\t::1\t2001:db8::/56",
            AbiVersion::V3,
        );
        assert_eq!(v6.remote_ip.to_string(), "fe80::1");
        assert_eq!(v6.edns_subnet.unwrap().prefix, 56);
    }

    #[test]
    fn q_field_count_must_match_abi() {
        let abi1 = "Q\texample.com\tIN\tSOA\t-1\t0.0.0.0";
        assert!(matches!(
            parse(abi1, Some(AbiVersion::V3)),
            Err(ParseError::FieldCount {
                expected: 8,
                got: 6,
                ..
            })
        ));
        let abi3 = "Q\texample.com\tIN\tSOA\t-1\t0.0.0.0\t0.0.0.0\t0.0.0.0/0";
        assert!(matches!(
            parse(abi3, Some(AbiVersion::V1)),
            Err(ParseError::FieldCount {
                expected: 6,
                got: 8,
                ..
            })
        ));
    }

    #[test]
    fn bad_fields() {
        let cases = [
            ("Q\t\tIN\tA\t1\t127.0.0.1", "qname"),
            ("Q\tx\tIN\tA B\t1\t127.0.0.1", "qtype"),
            ("Q\tx\tIN\tA\tone\t127.0.0.1", "id"),
            ("Q\tx\tIN\tA\t1\t300.0.0.1", "remote-ip"),
        ];
        for (line, field) in cases {
            match parse(line, Some(AbiVersion::V1)) {
                Err(ParseError::BadField { field: f, .. }) => assert_eq!(f, field, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        let ecs = "Q\tx\tIN\tA\t1\t127.0.0.1\t127.0.0.1\t10.0.0.0/33";
        assert!(matches!(
            parse(ecs, Some(AbiVersion::V3)),
            Err(ParseError::BadField { .. })
        ));
    }

    #[test]
    fn axfr_and_cmd() {
        assert_eq!(
            parse("AXFR\t7", Some(AbiVersion::V3)),
            Ok(Request::Axfr { id: 7, zone: None })
        );
        assert_eq!(
            parse("AXFR\t7\texample.com", Some(AbiVersion::V4)),
            Ok(Request::Axfr {
                id: 7,
                zone: Some("example.com")
            })
        );
        assert!(parse("AXFR\t7", Some(AbiVersion::V4)).is_err());
        assert_eq!(
            parse("CMD\tstatus", Some(AbiVersion::V5)),
            Ok(Request::Cmd("status"))
        );
        assert_eq!(parse("CMD", Some(AbiVersion::V5)), Ok(Request::Cmd("")));
        assert_eq!(
            parse("CMD\tstatus", Some(AbiVersion::V4)),
            Err(ParseError::CmdNeedsAbi5(AbiVersion::V4))
        );
    }

    #[test]
    fn garbage() {
        assert_eq!(parse("", Some(AbiVersion::V1)), Err(ParseError::Empty));
        assert_eq!(
            parse("Q\tx\tIN\tA\t1\t127.0.0.1", None),
            Err(ParseError::NoHelo)
        );
        assert!(matches!(
            parse("PING", Some(AbiVersion::V1)),
            Err(ParseError::UnknownTag(_))
        ));
        assert!(matches!(
            parse("q\tx", Some(AbiVersion::V1)),
            Err(ParseError::UnknownTag(_))
        ));
        let long = "é".repeat(100);
        let Err(ParseError::UnknownTag(t)) = parse(&long, None) else {
            panic!()
        };
        assert!(t.len() <= 64);
    }

    #[test]
    fn data_lines() {
        let srv = Data {
            scopebits: 0,
            auth: true,
            qname: "_sip._udp.example.com",
            qtype: "SRV",
            ttl: 300,
            id: 1,
            prio: Some(10),
            weight: None,
            content: "50 5060 sip1.example.com.",
        };
        let mut v1 = Vec::new();
        write_data(&mut v1, AbiVersion::V1, &srv).unwrap();
        assert_eq!(
            String::from_utf8(v1).unwrap(),
            "DATA\t_sip._udp.example.com\tIN\tSRV\t300\t1\t10\t50 5060 sip1.example.com.\n"
        );
        let a = Data {
            scopebits: 24,
            prio: None,
            qtype: "A",
            content: "192.0.2.1",
            ..srv
        };
        let mut v3 = Vec::new();
        write_data(&mut v3, AbiVersion::V3, &a).unwrap();
        assert_eq!(
            String::from_utf8(v3).unwrap(),
            "DATA\t24\t1\t_sip._udp.example.com\tIN\tA\t300\t1\t192.0.2.1\n"
        );
    }
}
