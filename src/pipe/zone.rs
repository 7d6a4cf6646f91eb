//! The records the pipe answers from, in one string arena with a hash index
//! by name, so a lookup is one hash probe with no allocation and no I/O.
//!
//! The index is filled one of two ways (see docs/performance.md, "Large zones"):
//! - **whole**: a database of up to [`WHOLE_LIMIT`] records is read at once
//!   ([`Builder`]). A name that is not here is not in the database, and the
//!   last good copy answers through any outage of the file.
//! - **per name**: a larger database is read one asked name at a time
//!   ([`Zones::start_name`]), with an indexed query as gsqlite3 makes, and the
//!   names asked are kept (with their absence, for the misses pdns asks so
//!   often) until [`NAME_LIMIT`] names or [`TEXT_LIMIT`] bytes, when the
//!   cache starts over. Records then cost memory only for the hot names.

use std::collections::HashMap;

use crate::dns::{cmp_name, RType};
use crate::pipe::abi::QType;

/// Up to this many records a database is held whole: a few megabytes at
/// most, read in milliseconds, and its answers survive any file outage.
pub const WHOLE_LIMIT: usize = 20_000;

/// Bounds of the per-name cache: past either, it is emptied and refilled by
/// the names asked next. Emptying keeps the capacity, so a steady state
/// allocates nothing.
pub const NAME_LIMIT: usize = 50_000;
pub const TEXT_LIMIT: usize = 4 << 20;

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

/// A record type as stored: the named ones need no text.
#[derive(Clone, Copy)]
enum StoredType {
    Named(RType<'static>),
    Other(Span),
}

struct Rec {
    name: Span,
    rtype: StoredType,
    content: Span,
    ttl: u32,
    prio: Option<i64>,
    domain_id: i64,
    auth: bool,
    /// The record sits at the name of its own zone: only then may a SOA
    /// answer a SOA question (pdns takes the asked name as the zone name).
    apex: bool,
}

/// The records of one name: `records[first..first + len]`, sorted by type.
/// `len` 0 records that the name has no records at all.
struct Entry {
    name: Span,
    first: u32,
    len: u32,
    /// The next entry whose name has the same hash.
    next: u32,
}

const NONE: u32 = u32::MAX;

struct Domain {
    id: i64,
    name: Span,
}

/// A record handed out by a lookup, borrowing from the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub name: &'a str,
    pub rtype: RType<'a>,
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

/// The zones and records the pipe knows, whole or per name.
#[derive(Default)]
pub struct Zones {
    text: String,
    records: Vec<Rec>,
    entries: Vec<Entry>,
    /// Name hash to the first entry of its chain.
    heads: HashMap<u64, u32>,
    /// Every domain, when held whole (AXFR and the apex check use them).
    domains: Vec<Domain>,
    /// Holds every servable record of the database.
    whole: bool,
}

/// FNV-1a over the lower-cased name, so that a lookup hashes the asked
/// name as it comes, in any case, without copying it.
fn hash_name(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Names lose the trailing dot, so that lookups compare bytes.
fn trim_dot(name: &str) -> &str {
    name.strip_suffix('.')
        .filter(|n| !n.is_empty())
        .unwrap_or(name)
}

/// Builds an index holding a whole database (or, for AXFR, a whole zone).
#[derive(Default)]
pub struct Builder {
    zones: Zones,
}

impl Builder {
    pub fn domain(&mut self, id: i64, name: &str) {
        let name = self.zones.push_name(name);
        self.zones.domains.push(Domain { id, name });
    }

    pub fn record(&mut self, row: &Row<'_>) -> Result<(), Skip> {
        self.zones.push_record(row, false)
    }

    pub fn finish(mut self) -> Zones {
        let z = &mut self.zones;
        z.text.shrink_to_fit();
        let text = &z.text;
        let s = |sp: Span| &text[sp.start as usize..(sp.start + sp.len) as usize];
        let ty = |t: StoredType| match t {
            StoredType::Named(t) => t.as_str(),
            StoredType::Other(sp) => s(sp),
        };
        // Stable: records of one name and type keep the database's order.
        z.records.sort_by(|a, b| {
            s(a.name)
                .cmp(s(b.name))
                .then_with(|| ty(a.rtype).cmp(ty(b.rtype)))
        });
        z.domains.sort_by_key(|d| d.id);
        for r in &mut z.records {
            r.apex = z
                .domains
                .binary_search_by_key(&r.domain_id, |d| d.id)
                .is_ok_and(|i| s(z.domains[i].name) == s(r.name));
        }
        let mut first = 0;
        while first < z.records.len() {
            let name = z.records[first].name;
            let len = z.records[first..]
                .iter()
                .take_while(|r| s(r.name) == s(name))
                .count();
            z.entries.push(Entry {
                name,
                first: first as u32,
                len: len as u32,
                next: NONE,
            });
            first += len;
        }
        for i in 0..z.entries.len() {
            z.link(i);
        }
        z.records.shrink_to_fit();
        z.entries.shrink_to_fit();
        z.domains.shrink_to_fit();
        z.whole = true;
        self.zones
    }
}

impl Zones {
    /// An empty per-name cache; it grows to its limits once, then is reused.
    pub fn per_name() -> Self {
        Self::default()
    }

    /// Whether every record of the database is here.
    pub fn is_whole(&self) -> bool {
        self.whole
    }

    /// Whether a lookup of `qname` can be answered from here alone.
    pub fn knows(&self, qname: &str) -> bool {
        self.whole || self.find(qname).is_some()
    }

    /// Starts caching the records of one name: push its rows with
    /// [`Zones::push_row`], then [`Zones::finish_name`] (or
    /// [`Zones::abort_name`] when reading them failed). Returns where the
    /// name's rows begin.
    pub fn start_name(&mut self) -> usize {
        if self.entries.len() >= NAME_LIMIT || self.text.len() >= TEXT_LIMIT {
            self.clear();
        }
        self.records.len()
    }

    /// Adds one row of the name being cached; `apex` says, from the row's
    /// zone name, whether it sits at its zone's apex.
    pub fn push_row(&mut self, row: &Row<'_>, apex: bool) -> Result<(), Skip> {
        self.push_record(row, apex)
    }

    /// Indexes the rows pushed since `first` under `qname`; none at all is
    /// an answer too (the name has no records), and is kept as one.
    pub fn finish_name(&mut self, qname: &str, first: usize) {
        let (text, records) = (&self.text, &mut self.records[first..]);
        let ty = |t: StoredType| match t {
            StoredType::Named(t) => t.as_str(),
            StoredType::Other(sp) => &text[sp.start as usize..(sp.start + sp.len) as usize],
        };
        // Stable: records of one type keep the database's order.
        records.sort_by(|a, b| ty(a.rtype).cmp(ty(b.rtype)));
        let name = self.push_name(qname);
        self.entries.push(Entry {
            name,
            first: first as u32,
            len: (self.records.len() - first) as u32,
            next: NONE,
        });
        self.link(self.entries.len() - 1);
    }

    /// Drops the rows pushed since `first`: the name stays unknown.
    pub fn abort_name(&mut self, first: usize) {
        self.records.truncate(first);
    }

    /// Empties the per-name cache, keeping its memory for what comes next.
    pub fn clear(&mut self) {
        self.text.clear();
        self.records.clear();
        self.entries.clear();
        self.heads.clear();
    }

    /// Records held: all of them when whole, else those of the cached names.
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// Names held, with their absence for names that have no records.
    pub fn name_count(&self) -> usize {
        self.entries.len()
    }

    /// Zones known (held whole only).
    pub fn zone_count(&self) -> usize {
        self.domains.len()
    }

    /// Records named `qname` (any case) of type `qtype`: every type for ANY,
    /// and for SOA only a SOA at the apex of its zone.
    pub fn lookup<'a>(
        &'a self,
        qname: &'a str,
        qtype: QType<'a>,
    ) -> impl Iterator<Item = Record<'a>> + 'a {
        let range = self
            .find(qname)
            .map_or(0..0, |e| e.first as usize..(e.first + e.len) as usize);
        let soa = qtype == QType::Soa;
        self.records[range]
            .iter()
            .filter(move |r| qtype.matches(self.rtype(r.rtype)) && (!soa || r.apex))
            .map(|r| self.view(r))
    }

    /// Every record of a zone held whole, for AXFR. The id is what pdns got
    /// with the SOA; ABI 4+ also names the zone, used when the id is unknown
    /// here (the database was replaced between the SOA question and the
    /// AXFR).
    pub fn zone_records<'a>(
        &'a self,
        id: i64,
        zone: Option<&str>,
    ) -> Option<impl Iterator<Item = Record<'a>> + 'a> {
        let domain = match self.domains.binary_search_by_key(&id, |d| d.id) {
            Ok(i) => &self.domains[i],
            Err(_) => {
                let zone = trim_dot(zone?);
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

    fn find(&self, qname: &str) -> Option<&Entry> {
        let qname = trim_dot(qname);
        let mut i = *self.heads.get(&hash_name(qname))?;
        while i != NONE {
            let e = &self.entries[i as usize];
            if cmp_name(self.str(e.name), qname).is_eq() {
                return Some(e);
            }
            i = e.next;
        }
        None
    }

    fn link(&mut self, i: usize) {
        let h = hash_name(self.str(self.entries[i].name));
        let head = self.heads.entry(h).or_insert(NONE);
        self.entries[i].next = *head;
        *head = i as u32;
    }

    fn push_record(&mut self, row: &Row<'_>, apex: bool) -> Result<(), Skip> {
        let unservable = |s: &str| s.bytes().any(|b| matches!(b, b'\t' | b'\r' | b'\n'));
        if [row.name, row.rtype, row.content]
            .into_iter()
            .any(unservable)
        {
            return Err(Skip::Unservable);
        }
        let parsed = RType::parse(row.rtype);
        let (prio, content) = match (parsed.has_priority(), row.prio) {
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
        let addr = match parsed {
            RType::A | RType::Aaaa => content
                .trim()
                .parse::<std::net::IpAddr>()
                .ok()
                .map(|a| a.to_string()),
            _ => None,
        };
        let name = self.push_name(row.name);
        let rtype = match parsed {
            RType::Other(t) => StoredType::Other(self.push(t, Case::Upper)),
            RType::A => StoredType::Named(RType::A),
            RType::Aaaa => StoredType::Named(RType::Aaaa),
            RType::Srv => StoredType::Named(RType::Srv),
            RType::Mx => StoredType::Named(RType::Mx),
            RType::Soa => StoredType::Named(RType::Soa),
        };
        let content = self.push(addr.as_deref().unwrap_or(content), Case::Keep);
        let ttl = row
            .ttl
            .map_or(DEFAULT_TTL, |t| t.clamp(0, i64::from(i32::MAX)) as u32);
        self.records.push(Rec {
            name,
            rtype,
            content,
            ttl,
            prio,
            domain_id: row.domain_id,
            auth: row.auth,
            apex,
        });
        Ok(())
    }

    fn push_name(&mut self, name: &str) -> Span {
        self.push(trim_dot(name), Case::Lower)
    }

    fn push(&mut self, s: &str, case: Case) -> Span {
        let start = self.text.len();
        self.text.push_str(s);
        let t = &mut self.text[start..];
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

    fn str(&self, sp: Span) -> &str {
        &self.text[sp.start as usize..(sp.start + sp.len) as usize]
    }

    fn rtype(&self, t: StoredType) -> RType<'_> {
        match t {
            StoredType::Named(t) => t,
            StoredType::Other(sp) => RType::Other(self.str(sp)),
        }
    }

    fn view(&self, r: &Rec) -> Record<'_> {
        Record {
            name: self.str(r.name),
            rtype: self.rtype(r.rtype),
            content: self.str(r.content),
            ttl: r.ttl,
            prio: r.prio,
            domain_id: r.domain_id,
            auth: r.auth,
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

/// Whether a record named `name` sits at the apex of the zone named `zone`,
/// both as stored (any case, maybe with a trailing dot).
pub fn is_apex(name: &str, zone: &str) -> bool {
    trim_dot(name).eq_ignore_ascii_case(trim_dot(zone))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn rows() -> Vec<Row<'static>> {
        vec![
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
        ]
    }

    fn whole() -> Zones {
        let mut b = Builder::default();
        b.domain(1, "Example.COM.");
        for r in &rows() {
            b.record(r).unwrap();
        }
        b.finish()
    }

    /// The same records, cached name by name as a large database is read.
    fn per_name(names: &[&str]) -> Zones {
        let mut z = Zones::per_name();
        for name in names {
            let first = z.start_name();
            for r in rows() {
                if trim_dot(r.name).eq_ignore_ascii_case(name) {
                    z.push_row(&r, is_apex(r.name, "example.com")).unwrap();
                }
            }
            z.finish_name(name, first);
        }
        z
    }

    fn names(z: &Zones, q: &str, t: &str) -> Vec<String> {
        z.lookup(q, QType::parse(t))
            .map(|r| format!("{} {} {:?} {}", r.name, r.rtype, r.prio, r.content))
            .collect()
    }

    #[test]
    fn lookups_fold_case_and_filter_type() {
        let asked = ["www.example.com", "ww.example.com", "www.example.co"];
        for z in [whole(), per_name(&asked)] {
            assert_eq!(
                names(&z, "wWw.Example.com", "A"),
                ["www.example.com A None 192.0.2.80"]
            );
            assert_eq!(names(&z, "www.example.com", "ANY").len(), 2);
            assert_eq!(names(&z, "www.example.com.", "ANY").len(), 2);
            assert_eq!(names(&z, "www.example.com", "MX").len(), 0);
            assert_eq!(names(&z, "ww.example.com", "ANY").len(), 0);
            assert_eq!(names(&z, "www.example.co", "ANY").len(), 0);
        }
    }

    #[test]
    fn absence_is_known_only_for_names_read() {
        let z = per_name(&["nothing.example.com"]);
        assert!(z.knows("NOTHING.example.com"));
        assert!(!z.knows("www.example.com"));
        assert!(whole().knows("anything.example.org"));
    }

    #[test]
    fn soa_only_at_apex() {
        for z in [whole(), per_name(&["example.com", "sub.example.com"])] {
            assert_eq!(names(&z, "EXAMPLE.com", "SOA").len(), 1);
            assert_eq!(names(&z, "sub.example.com", "SOA").len(), 0);
            assert_eq!(names(&z, "sub.example.com", "ANY").len(), 1);
        }
    }

    #[test]
    fn priorities_and_types() {
        let z = whole();
        assert_eq!(
            names(&z, "_sip._udp.example.com", "SRV"),
            ["_sip._udp.example.com SRV Some(10) 50 5060 sip1.example.com."]
        );
        assert_eq!(
            names(&z, "example.com", "MX"),
            ["example.com MX Some(10) mail.example.com."]
        );
        // Sorted by type within a name, the order pdns has always seen.
        assert_eq!(
            z.lookup("example.com", QType::Any)
                .map(|r| r.rtype.to_string())
                .collect::<Vec<_>>(),
            ["MX", "NS", "SOA"]
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
        let z = whole();
        assert_eq!(z.zone_records(1, None).unwrap().count(), 7);
        assert_eq!(z.zone_records(9, Some("example.com")).unwrap().count(), 7);
        assert!(z.zone_records(9, Some("example.org")).is_none());
        assert!(z.zone_records(9, None).is_none());
    }

    #[test]
    fn the_cache_starts_over_at_its_limit_and_keeps_its_memory() {
        let mut z = Zones::per_name();
        for i in 0..NAME_LIMIT + 10 {
            let name = format!("h{i}.example.com");
            let first = z.start_name();
            z.push_row(&row(&name, "A", "192.0.2.1", None), false)
                .unwrap();
            z.finish_name(&name, first);
        }
        assert_eq!(z.name_count(), 10);
        assert!(z.knows("h50009.example.com"));
        assert!(!z.knows("h0.example.com"));
        assert!(z.records.capacity() >= NAME_LIMIT);
    }
}
