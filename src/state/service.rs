//! Advertised services: the SIP transport an SRV record's owner name stands for
//! (`_sip._udp`, `_sip._tcp`, `_sips._tcp`), which with the record's target and port names
//! the service whose health decides that record (issue 18).

use std::fmt;

/// How a SIP client reaches an advertised service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    /// TLS over TCP: `_sips._tcp`.
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    pub fn parse(s: &str) -> Option<Transport> {
        match s {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            _ => None,
        }
    }

    /// The transport an SRV owner name advertises and the SIP domain it is for (the name
    /// without its service labels); `None` for any other service.
    pub fn of_owner(owner: &str) -> Option<(Transport, &str)> {
        const PREFIXES: [(&str, Transport); 3] = [
            ("_sip._udp.", Transport::Udp),
            ("_sip._tcp.", Transport::Tcp),
            ("_sips._tcp.", Transport::Tls),
        ];
        PREFIXES.iter().find_map(|&(p, t)| {
            let head = owner.get(..p.len())?;
            let domain = owner[p.len()..].trim_end_matches('.');
            (head.eq_ignore_ascii_case(p) && !domain.is_empty()).then_some((t, domain))
        })
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One advertised service of a target: how and on which port it is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Service {
    pub transport: Transport,
    pub port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_name_their_transport_and_domain() {
        assert_eq!(
            Transport::of_owner("_sip._udp.example.com"),
            Some((Transport::Udp, "example.com"))
        );
        assert_eq!(
            Transport::of_owner("_SIPS._TCP.Example.com."),
            Some((Transport::Tls, "Example.com"))
        );
        assert_eq!(
            Transport::of_owner("_sip._tcp.example.com"),
            Some((Transport::Tcp, "example.com"))
        );
        for other in [
            "_xmpp._tcp.example.com",
            "_sip._udp.",
            "_sip._udp",
            "sip.example.com",
        ] {
            assert_eq!(Transport::of_owner(other), None, "{other}");
        }
        for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            assert_eq!(Transport::parse(t.as_str()), Some(t));
        }
    }
}
