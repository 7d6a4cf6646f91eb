//! The servable records, held in memory: one string arena plus a sorted
//! index, so a lookup is a binary search with no allocation and no I/O, and
//! the last good copy keeps answering whatever happens to the database file.

use crate::dns::cmp_name;

/// A record as read from the `records` table (disabled rows already left out).
pub struct Row<'a> {
    pub name: &'a str,
    pub rtype: &'a str,
    pub content: &'a str,
    pub ttl: Option<i64>,
    pub prio: Option<i64>,
    pub domain_id: i64,
    pub auth: bool,
}

/// TTL for rows whose `ttl` is NULL: pdns's own `default-ttl`.
const DEFAULT_TTL: u32 = 3600;

#[derive(Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

struct Rec {
    name: Span,
    rtype: Span,
    content: Span,
    ttl: u32,
    prio: Option<i64>,
    domain_id: i64,
    auth: bool,
    /// The record sits at the name of its own zone: only then may a SOA
    /// answer a SOA question (pdns takes the asked name as the zone name).
    apex: bool,
}

struct Domain {
    id: i64,
    name: Span,
}

/// A record handed out by a lookup, borrowing from the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub name: &'a str,
    pub rtype: &'a str,
    pub content: &'a str,
    pub ttl: u32,
    pub prio: Option<i64>,
    pub domain_id: i64,
    pub auth: bool,
}

/// Why a row was not loaded. Counted and logged by the loader.
#[derive(Debug, PartialEq, Eq)]
pub enum Skip {
    /// TAB, CR or LF cannot travel in a pipe DATA line.
    Unservable,
    /// MX/SRV without a priority, in `prio` or at the front of `content`.
    NoPriority,
    /// A priority outside 0..=65535, which no DNS message can carry.
    BadPriority,
}

/// The zones and records of one database snapshot.
#[derive(Default)]
pub struct Zones {
    text: String,
    records: Vec<Rec>,
    domains: Vec<Domain>,
}

/// Builds a snapshot row by row.
#[derive(Default)]
pub struct Builder {
    zones: Zones,
}

impl Builder {
    pub fn domain(&mut self, id: i64, name: &str) {
        let name = self.push_name(name);
        self.zones.domains.push(Domain { id, name });
    }

    pub fn record(&mut self, row: &Row<'_>) -> Result<(), Skip> {
        let unservable = |s: &str| s.bytes().any(|b| matches!(b, b'\t' | b'\r' | b'\n'));
        if [row.name, row.rtype, row.content]
            .into_iter()
            .any(unservable)
        {
            return Err(Skip::Unservable);
        }
        let has_prio =
            row.rtype.eq_ignore_ascii_case("MX") || row.rtype.eq_ignore_ascii_case("SRV");
        let (prio, content) = match (has_prio, row.prio) {
            (false, _) => (None, row.content),
            (true, Some(p)) => (Some(p), row.content),
            // pdns's own tools keep the priority in `prio`; a row written by
            // hand may carry it at the front of the content instead.
            (true, None) => {
                let (p, rest) = row
                    .content
                    .trim_start()
                    .split_once(' ')
                    .ok_or(Skip::NoPriority)?;
                (
                    Some(p.parse().map_err(|_| Skip::NoPriority)?),
                    rest.trim_start(),
                )
            }
        };
        if prio.is_some_and(|p| !(0..=crate::state::validate::MAX_PRIORITY).contains(&p)) {
            return Err(Skip::BadPriority);
        }
        // Addresses in canonical form, the form `ha_targets` keys take.
        let addr = match row.rtype.to_ascii_uppercase().as_str() {
            "A" | "AAAA" => content
                .trim()
                .parse::<std::net::IpAddr>()
                .ok()
                .map(|a| a.to_string()),
            _ => None,
        };
        let name = self.push_name(row.name);
        let rtype = self.push(row.rtype, Case::Upper);
        let content = self.push(addr.as_deref().unwrap_or(content), Case::Keep);
        let ttl = row
            .ttl
            .map_or(DEFAULT_TTL, |t| t.clamp(0, i64::from(i32::MAX)) as u32);
        self.zones.records.push(Rec {
            name,
            rtype,
            content,
            ttl,
            prio,
            domain_id: row.domain_id,
            auth: row.auth,
            apex: false,
        });
        Ok(())
    }

    pub fn finish(mut self) -> Zones {
        let z = &mut self.zones;
        z.text.shrink_to_fit();
        let text = &z.text;
        let s = |sp: Span| &text[sp.start as usize..(sp.start + sp.len) as usize];
        // Stable: records of one name and type keep the database's order.
        z.records.sort_by(|a, b| {
            s(a.name)
                .cmp(s(b.name))
                .then_with(|| s(a.rtype).cmp(s(b.rtype)))
        });
        z.domains.sort_by_key(|d| d.id);
        for r in &mut z.records {
            r.apex = z
                .domains
                .binary_search_by_key(&r.domain_id, |d| d.id)
                .is_ok_and(|i| s(z.domains[i].name) == s(r.name));
        }
        z.records.shrink_to_fit();
        z.domains.shrink_to_fit();
        self.zones
    }

    /// Names lose the trailing dot too, so that lookups compare bytes.
    fn push_name(&mut self, name: &str) -> Span {
        let name = name
            .strip_suffix('.')
            .filter(|n| !n.is_empty())
            .unwrap_or(name);
        self.push(name, Case::Lower)
    }

    fn push(&mut self, s: &str, case: Case) -> Span {
        let start = self.zones.text.len();
        self.zones.text.push_str(s);
        let t = &mut self.zones.text[start..];
        match case {
            Case::Lower => t.make_ascii_lowercase(),
            Case::Upper => t.make_ascii_uppercase(),
            Case::Keep => {}
        }
        Span {
            start: start as u32,
            len: s.len() as u32,
        }
    }
}

/// How a field is stored: names lowercase (the form pdns asks in), record
/// types uppercase (the form pdns prints), content as written.
#[derive(Clone, Copy)]
enum Case {
    Lower,
    Upper,
    Keep,
}

impl Zones {
    fn str(&self, sp: Span) -> &str {
        &self.text[sp.start as usize..(sp.start + sp.len) as usize]
    }

    fn view(&self, r: &Rec) -> Record<'_> {
        Record {
            name: self.str(r.name),
            rtype: self.str(r.rtype),
            content: self.str(r.content),
            ttl: r.ttl,
            prio: r.prio,
            domain_id: r.domain_id,
            auth: r.auth,
        }
    }

    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    pub fn zone_count(&self) -> usize {
        self.domains.len()
    }

    /// Records named `qname` (any case) of type `qtype`: every type for ANY,
    /// and for SOA only a SOA at the apex of its zone.
    pub fn lookup<'a>(
        &'a self,
        qname: &'a str,
        qtype: crate::pipe::abi::QType<'a>,
    ) -> impl Iterator<Item = Record<'a>> + 'a {
        let lo = self
            .records
            .partition_point(|r| cmp_name(self.str(r.name), qname).is_lt());
        let soa = qtype == crate::pipe::abi::QType::Soa;
        self.records[lo..]
            .iter()
            .take_while(move |r| cmp_name(self.str(r.name), qname).is_eq())
            .filter(move |r| qtype.matches(self.str(r.rtype)) && (!soa || r.apex))
            .map(|r| self.view(r))
    }

    /// Every record of a zone, for AXFR. The id is what pdns got with the
    /// SOA; ABI 4+ also names the zone, used when the id is unknown here
    /// (the database was replaced between the SOA question and the AXFR).
    pub fn zone_records<'a>(
        &'a self,
        id: i64,
        zone: Option<&str>,
    ) -> Option<impl Iterator<Item = Record<'a>> + 'a> {
        let domain = match self.domains.binary_search_by_key(&id, |d| d.id) {
            Ok(i) => &self.domains[i],
            Err(_) => {
                let zone = zone?;
                let zone = zone.strip_suffix('.').unwrap_or(zone);
                self.domains
                    .iter()
                    .find(|d| cmp_name(self.str(d.name), zone).is_eq())?
            }
        };
        let id = domain.id;
        Some(
            self.records
                .iter()
                .filter(move |r| r.domain_id == id)
                .map(|r| self.view(r)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipe::abi::QType;

    fn row<'a>(name: &'a str, rtype: &'a str, content: &'a str, prio: Option<i64>) -> Row<'a> {
        Row {
            name,
            rtype,
            content,
            ttl: Some(300),
            prio,
            domain_id: 1,
            auth: true,
        }
    }

    fn zones() -> Zones {
        let mut b = Builder::default();
        b.domain(1, "Example.COM.");
        let rows = [
            row(
                "example.com",
                "SOA",
                "ns1.example.com. h.example.com. 1 2 3 4 5",
                None,
            ),
            row("example.com", "NS", "ns1.example.com.", None),
            row("WWW.example.com.", "a", "192.0.2.80", None),
            row("www.example.com", "AAAA", "2001:db8::80", None),
            row(
                "_sip._udp.example.com",
                "SRV",
                "50 5060 sip1.example.com.",
                Some(10),
            ),
            row("example.com", "MX", "10 mail.example.com.", None),
            row("sub.example.com", "SOA", "not an apex", None),
        ];
        for r in &rows {
            b.record(r).unwrap();
        }
        b.finish()
    }

    fn names(z: &Zones, q: &str, t: &str) -> Vec<String> {
        z.lookup(q, QType::parse(t))
            .map(|r| format!("{} {} {:?} {}", r.name, r.rtype, r.prio, r.content))
            .collect()
    }

    #[test]
    fn lookups_fold_case_and_filter_type() {
        let z = zones();
        assert_eq!(
            names(&z, "wWw.Example.com", "A"),
            ["www.example.com A None 192.0.2.80"]
        );
        assert_eq!(names(&z, "www.example.com", "ANY").len(), 2);
        assert_eq!(names(&z, "www.example.com", "MX").len(), 0);
        assert_eq!(names(&z, "ww.example.com", "ANY").len(), 0);
        assert_eq!(names(&z, "www.example.co", "ANY").len(), 0);
    }

    #[test]
    fn soa_only_at_apex() {
        let z = zones();
        assert_eq!(names(&z, "EXAMPLE.com", "SOA").len(), 1);
        assert_eq!(names(&z, "sub.example.com", "SOA").len(), 0);
        assert_eq!(names(&z, "sub.example.com", "ANY").len(), 1);
    }

    #[test]
    fn priorities() {
        let z = zones();
        assert_eq!(
            names(&z, "_sip._udp.example.com", "SRV"),
            ["_sip._udp.example.com SRV Some(10) 50 5060 sip1.example.com."]
        );
        assert_eq!(
            names(&z, "example.com", "MX"),
            ["example.com MX Some(10) mail.example.com."]
        );
        let mut b = Builder::default();
        assert_eq!(
            b.record(&row("x", "MX", "mail.example.com.", None)),
            Err(Skip::NoPriority)
        );
        assert_eq!(
            b.record(&row("x", "TXT", "a\tb", None)),
            Err(Skip::Unservable)
        );
        for bad in [-1, 65_536, 99_999_999_999] {
            assert_eq!(
                b.record(&row("x", "MX", "mail.example.com.", Some(bad))),
                Err(Skip::BadPriority)
            );
        }
        assert_eq!(
            b.record(&row("x", "SRV", "99999999999 1 5060 a.", None)),
            Err(Skip::BadPriority)
        );
        assert!(b.record(&row("x", "MX", "m.", Some(65_535))).is_ok());
    }

    #[test]
    fn axfr_by_id_or_name() {
        let z = zones();
        assert_eq!(z.zone_records(1, None).unwrap().count(), 7);
        assert_eq!(z.zone_records(9, Some("example.com")).unwrap().count(), 7);
        assert!(z.zone_records(9, Some("example.org")).is_none());
        assert!(z.zone_records(9, None).is_none());
    }
}
