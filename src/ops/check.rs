//! `pdns-ha check`: lints a database for what the pipe and the monitor will
//! do with it, one line per problem naming the row. `init` runs the same
//! lint before it commits a seed script and refuses the [`Kind::Invalid`]
//! findings; the [`Kind::Unused`] ones (served, but probably not what was
//! meant) it only prints, since a later script may add the missing half.
//!
//! Names are not resolved here: `check` runs wherever the operator is, and
//! a name that resolves there may not resolve on the monitor's host (the
//! monitor reports its own failures as configuration problems).

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use rusqlite::{Connection, OpenFlags};

use super::Sql;
use crate::dns::Subnet;
use crate::net::kamailio::connect_target;
use crate::pipe::zone::{Builder, Row, Skip};
use crate::state::codes::AcceptCodes;
use crate::state::reading::target_key;
use crate::text::shown;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A row the pipe or the monitor cannot use as written: `init` refuses
    /// to commit it.
    Invalid,
    /// Used, but not as the operator probably meant: a target nothing names,
    /// a record no target measures, a secret where the pipe's user reads it.
    Unused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub text: String,
}

/// `pdns-ha check --db DB`: prints one line per problem on stdout; an
/// error (exit 1) when there is any.
pub fn run(db: &Path) -> anyhow::Result<()> {
    let at = || format!("database {}", db.display());
    crate::files::check_database(db).with_context(at)?;
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(Sql)
        .with_context(at)?;
    let findings = lint(&conn).map_err(Sql).with_context(at)?;
    let mut out = io::stdout().lock();
    let w = |out: &mut dyn Write, line: &str| writeln!(out, "{line}");
    for f in &findings {
        w(&mut out, &f.text)?;
    }
    match findings.len() {
        0 => w(
            &mut out,
            &format!("{}: no problems found ({})", db.display(), counts(&conn)?),
        )?,
        n => bail!("{}: {n} problem(s)", db.display()),
    }
    Ok(())
}

/// What the database holds, in a few words, as `init` and `check` say it.
pub fn counts(conn: &Connection) -> anyhow::Result<String> {
    let n = |table: &str| -> anyhow::Result<i64> {
        match table_exists(conn, table).map_err(Sql)? {
            false => Ok(0),
            true => Ok(conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .map_err(Sql)?),
        }
    };
    Ok(format!(
        "{} zones, {} records, {} targets, {} networks",
        n("domains")?,
        n("records")?,
        n("ha_targets")?,
        n("ha_networks")?
    ))
}

pub(super) fn table_exists(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get(0),
    )
}

/// Every finding, zones first, then networks, then targets.
pub fn lint(conn: &Connection) -> rusqlite::Result<Vec<Finding>> {
    let mut l = Lint::default();
    for table in ["domains", "records", "ha_targets", "ha_networks"] {
        if !table_exists(conn, table)? {
            l.invalid(format!(
                "table {table} is missing: run pdns-ha init on this database"
            ));
        }
    }
    if !l.found.is_empty() {
        return Ok(l.found);
    }
    let targets = l.targets(conn)?;
    l.unservable(conn)?;
    l.zones(conn, &targets)?;
    l.networks(conn)?;
    Ok(l.found)
}

#[derive(Default)]
struct Lint {
    found: Vec<Finding>,
}

impl Lint {
    fn invalid(&mut self, text: String) {
        self.found.push(Finding {
            kind: Kind::Invalid,
            text,
        });
    }

    fn unused(&mut self, text: String) {
        self.found.push(Finding {
            kind: Kind::Unused,
            text,
        });
    }

    /// Checks each `ha_targets` row on its own; returns their names by key.
    fn targets(&mut self, conn: &Connection) -> rusqlite::Result<HashMap<String, String>> {
        let has = |c: &str| -> rusqlite::Result<bool> {
            conn.query_row(
                "SELECT count(*) > 0 FROM pragma_table_info('ha_targets') WHERE name = ?1",
                [c],
                |r| r.get(0),
            )
        };
        // Columns added since the first release: an older database lacks them.
        let opt = |c: &str| -> rusqlite::Result<String> {
            Ok(match has(c)? {
                true => c.to_owned(),
                false => "NULL".to_owned(),
            })
        };
        let sql = format!(
            "SELECT name, probe, probe_address, load_source, load_address, load_secret, {}, {}, \
             max_sessions FROM ha_targets ORDER BY name",
            opt("probe_ok_codes")?,
            opt("load_secret_file")?
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        let mut all = HashMap::new();
        while let Some(r) = rows.next()? {
            let Ok(name) = r.get::<_, String>(0) else {
                self.invalid("ha_targets: a row whose name is not text".into());
                continue;
            };
            let row = format!("ha_targets '{}'", shown(&name));
            let text = |i: usize| r.get::<_, Option<String>>(i).ok().flatten();
            let probe = text(1).unwrap_or_default();
            if !["none", "sip-udp", "sip-tcp", "tcp"].contains(&probe.as_str()) {
                self.invalid(format!(
                    "{row}: probe '{}' is not none, sip-udp, sip-tcp or tcp",
                    shown(&probe)
                ));
            }
            if let Some(a) = text(2) {
                if let Err(why) = host_port(&a) {
                    self.invalid(format!(
                        "{row}: probe_address '{}' {why} (host:port, [v6]:port)",
                        shown(&a)
                    ));
                }
            }
            let (source, address) = (text(3).unwrap_or_default(), text(4));
            match (source.as_str(), &address) {
                ("freeswitch", Some(a)) => {
                    if let Err(why) = host_port(a) {
                        self.invalid(format!(
                            "{row}: load_address '{}' {why} (the Event Socket's host:port)",
                            shown(a)
                        ));
                    }
                }
                ("kamailio", Some(a)) => {
                    if connect_target(a).is_none_or(|hp| host_port(&hp).is_err()) {
                        self.invalid(format!(
                            "{row}: load_address '{}' is not an http://host:port/path URL \
                             without credentials (Kamailio's JSON-RPC)",
                            shown(a)
                        ));
                    }
                }
                ("freeswitch" | "kamailio", None) => self.invalid(format!(
                    "{row}: load_source {source} needs a load_address; the load is never read"
                )),
                ("none", Some(_)) => self.unused(format!(
                    "{row}: load_address is set but load_source is 'none': the load is never read"
                )),
                ("none", None) => {}
                (other, _) => self.invalid(format!(
                    "{row}: load_source '{}' is not none, freeswitch or kamailio",
                    shown(other)
                )),
            }
            if text(5).is_some_and(|s| !s.is_empty()) {
                self.unused(format!(
                    "{row}: load_secret holds the Event Socket password in the database, which \
                     pdns's user reads and every DNS node copies: put it in a file only the \
                     monitor's user reads, name it in load_secret_file, and set load_secret \
                     to NULL"
                ));
            }
            if let Err(e) = AcceptCodes::parse(text(6).as_deref()) {
                self.invalid(format!("{row}: {e}"));
            }
            if let Some(f) = text(7) {
                if let Err(why) = secret_file(Path::new(&f)) {
                    self.invalid(format!("{row}: load_secret_file {}: {why}", shown(&f)));
                }
            }
            if let Ok(Some(n)) = r.get::<_, Option<i64>>(8) {
                if !(1..=i64::from(crate::state::validate::MAX_SESSIONS)).contains(&n) {
                    self.invalid(format!(
                        "{row}: max_sessions {n} out of range (1 to {})",
                        crate::state::validate::MAX_SESSIONS
                    ));
                }
            }
            if all.insert(target_key(&name), name).is_some() {
                self.invalid(format!(
                    "{row}: the same target twice (names differ only in case or a trailing dot)"
                ));
            }
        }
        Ok(all)
    }

    /// Records the pipe leaves out, judged by the pipe's own index builder
    /// (fresh every few thousand rows, so a large zone costs no memory).
    fn unservable(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare(
            "SELECT id, CAST(name AS TEXT), CAST(type AS TEXT), CAST(content AS TEXT), ttl, prio,
                    domain_id
             FROM records
             WHERE NOT coalesce(disabled, 0) AND type IS NOT NULL AND type != ''
               AND name IS NOT NULL AND domain_id IS NOT NULL
             ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        let mut b = Builder::default();
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let (Ok(Some(name)), Ok(Some(rtype))) = (
                r.get_ref(1)?.as_str_or_null(),
                r.get_ref(2)?.as_str_or_null(),
            ) else {
                continue;
            };
            let row = Row {
                name,
                rtype,
                content: r.get_ref(3)?.as_str_or_null().ok().flatten().unwrap_or(""),
                ttl: r.get(4).ok().flatten(),
                prio: r.get(5).ok().flatten(),
                domain_id: r.get(6).unwrap_or(0),
                auth: true,
            };
            if let Err(why) = b.record(&row) {
                let why = match why {
                    Skip::Unservable => "a TAB or line break cannot be sent to pdns",
                    Skip::NoPriority => "MX/SRV without a priority",
                    Skip::BadPriority => "priority out of range (0 to 65535)",
                };
                self.unused(format!(
                    "record id {id} ({} {}): not served: {why}",
                    shown(name),
                    shown(rtype)
                ));
            }
            n += 1;
            if n % 10_000 == 0 {
                b = Builder::default();
            }
        }
        Ok(())
    }

    /// Zones without SOA, and records and targets that do not meet.
    fn zones(
        &mut self,
        conn: &Connection,
        targets: &HashMap<String, String>,
    ) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare(
            "SELECT d.id, d.name FROM domains d WHERE NOT EXISTS (
               SELECT 1 FROM records r WHERE r.domain_id = d.id AND r.type = 'SOA'
                 AND lower(r.name) = lower(d.name) AND NOT coalesce(r.disabled, 0))
             ORDER BY d.name",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (id, name): (i64, Option<String>) = (r.get(0)?, r.get(1).ok());
            let name = shown(name.as_deref().unwrap_or("?"));
            // Not refused by init: a secondary zone has none until its
            // first transfer.
            self.unused(format!(
                "zone '{name}' (domains id {id}): no SOA record at its apex: pdns answers \
                 REFUSED for every name in it"
            ));
        }
        drop(rows);
        let mut named: HashSet<String> = HashSet::new();
        // RRsets pdns-ha ranks: SRV, A and AAAA with two records or more.
        let mut stmt = conn.prepare(
            "SELECT id, lower(name), type, content, prio FROM records
             WHERE type IN ('SRV', 'A', 'AAAA') AND NOT coalesce(disabled, 0)
               AND (lower(name), type) IN (
                 SELECT lower(name), type FROM records
                 WHERE type IN ('SRV', 'A', 'AAAA') AND NOT coalesce(disabled, 0)
                 GROUP BY lower(name), type HAVING count(*) > 1)
             ORDER BY lower(name), type, id",
        )?;
        let mut rows = stmt.query([])?;
        // (record id, name, type, key), grouped into RRsets below.
        let mut ranked: Vec<(i64, String, String, Option<String>)> = Vec::new();
        while let Some(r) = rows.next()? {
            let (id, name, rtype): (i64, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let content = r
                .get::<_, Option<String>>(3)
                .ok()
                .flatten()
                .unwrap_or_default();
            let no_prio = r.get::<_, Option<i64>>(4).ok().flatten().is_none();
            let key = match rtype.as_str() {
                "SRV" => srv_target(&content, no_prio).map(target_key),
                _ => content
                    .trim()
                    .parse::<IpAddr>()
                    .ok()
                    .map(|ip| ip.to_string()),
            };
            if key.is_none() {
                let what = match rtype.as_str() {
                    "SRV" => "'weight port target'",
                    _ => "an address",
                };
                self.invalid(format!(
                    "record id {id} ({} {rtype} '{}'): content is not {what}: its RRset is \
                     served as stored, never ranked",
                    shown(&name),
                    shown(&content)
                ));
            }
            ranked.push((id, name, rtype, key));
        }
        drop(rows);
        for set in ranked.chunk_by(|a, b| (&a.1, &a.2) == (&b.1, &b.2)) {
            let keys: Vec<&str> = set.iter().filter_map(|r| r.3.as_deref()).collect();
            named.extend(keys.iter().map(|k| (*k).to_owned()));
            let is_srv = set[0].2 == "SRV";
            // An address RRset with no row at all is plain round robin, on purpose.
            if !is_srv && !keys.iter().any(|k| targets.contains_key(*k)) {
                continue;
            }
            for (id, name, rtype, key) in set {
                let Some(key) = key else { continue };
                if targets.contains_key(key) {
                    continue;
                }
                let fix = match is_srv {
                    true => "never probed, so a dead server stays in the answer",
                    false => "the other addresses have rows: this one is never probed",
                };
                self.unused(format!(
                    "record id {id} ({} {rtype}): target {key} has no ha_targets row: {fix} \
                     (add a row, with probe 'none' if it must not be probed)",
                    shown(name)
                ));
            }
        }
        // Single SRV and address records name targets too (a row there is
        // probed, and shown by status, though a lone record is not ranked).
        let mut stmt = conn.prepare(
            "SELECT type, content, prio FROM records
             WHERE type IN ('SRV', 'A', 'AAAA') AND NOT coalesce(disabled, 0)",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (rtype, content): (String, Option<String>) = (r.get(0)?, r.get(1).ok().flatten());
            let content = content.unwrap_or_default();
            let no_prio = r.get::<_, Option<i64>>(2).ok().flatten().is_none();
            let key = match rtype.as_str() {
                "SRV" => srv_target(&content, no_prio).map(target_key),
                _ => Some(target_key(&content)),
            };
            named.extend(key);
        }
        let mut unnamed: Vec<&String> = targets
            .iter()
            .filter(|(k, _)| !named.contains(*k))
            .map(|(_, name)| name)
            .collect();
        unnamed.sort();
        for name in unnamed {
            self.unused(format!(
                "ha_targets '{}': no SRV record names it and no A/AAAA record holds it: it is \
                 probed, but no answer uses it (a typo in the name?)",
                shown(name)
            ));
        }
        Ok(())
    }

    /// Networks that do not parse, and ones listed twice.
    fn networks(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare("SELECT cidr, name FROM ha_networks ORDER BY cidr")?;
        let mut rows = stmt.query([])?;
        let mut good: Vec<(Subnet, String, String)> = Vec::new();
        while let Some(r) = rows.next()? {
            let cidr = r
                .get::<_, Option<String>>(0)
                .ok()
                .flatten()
                .unwrap_or_default();
            let name = r
                .get::<_, Option<String>>(1)
                .ok()
                .flatten()
                .unwrap_or_default();
            let row = format!("ha_networks '{}' ({})", shown(&cidr), shown(&name));
            if name.trim().is_empty() {
                self.invalid(format!("{row}: no name"));
            }
            match Subnet::parse(cidr.trim()) {
                None => self.invalid(format!(
                    "{row}: not an address/prefix such as 10.1.0.0/16 or 2001:db8::/32: the \
                     pipe skips it"
                )),
                Some(s) if !s.is_network() => self.invalid(format!(
                    "{row}: host bits set beyond the /{} prefix (write the network address): \
                     the pipe skips it",
                    s.prefix
                )),
                Some(s) => good.push((s, cidr, name)),
            }
        }
        for (i, (a, ac, an)) in good.iter().enumerate() {
            for (b, bc, bn) in &good[i + 1..] {
                let row = format!("ha_networks '{}' ({})", shown(bc), shown(bn));
                if a == b {
                    self.invalid(format!(
                        "{row}: the same network as '{}' ({}): which name a client gets is \
                         undefined",
                        shown(ac),
                        shown(an)
                    ));
                } else if an == bn && (a.contains(b.addr) || b.contains(a.addr)) {
                    let (outer, inner) = match a.prefix <= b.prefix {
                        true => (ac, bc),
                        false => (bc, ac),
                    };
                    self.unused(format!(
                        "ha_networks '{}' ({an}): inside '{}', which has the same name: \
                         redundant",
                        shown(inner),
                        shown(outer)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The target of an SRV content (`weight port target`, after the priority
/// when `prio` is NULL and a hand-written row carries it in front), as the
/// pipe reads it; `None` when it does not parse, or for the "no service"
/// target `.`.
pub(super) fn srv_target(content: &str, no_prio: bool) -> Option<&str> {
    let mut f = content.split_whitespace();
    if no_prio {
        f.next()?;
    }
    let _weight = f.next()?.parse::<u16>().ok()?;
    let _port = f.next()?.parse::<u16>().ok()?;
    let target = f.next()?;
    (f.next().is_none() && target != ".").then_some(target)
}

/// Whether `s` is `host:port` as the monitor resolves it: a name or IPv4
/// address, or an IPv6 address in brackets, and a port 1-65535.
pub fn host_port(s: &str) -> Result<(), &'static str> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (v6, port) = rest.split_once("]:").ok_or("has no ]:port")?;
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| "has no IPv6 address in its brackets")?;
            (None, port)
        }
        None => {
            let (host, port) = s.rsplit_once(':').ok_or("has no :port")?;
            (Some(host), port)
        }
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err("has no port 1-65535"),
    }
    let Some(host) = host else { return Ok(()) };
    if host.contains(':') {
        return Err("holds an IPv6 address without brackets");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    match !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) {
        true => Ok(()),
        false => Err("has no valid host name"),
    }
}

/// A secret file as the monitor will read it: an absolute path, and where
/// it exists here, a regular file no other local user can read. (It may
/// exist only on the monitor's host.)
pub fn secret_file(path: &Path) -> anyhow::Result<()> {
    if !path.is_absolute() {
        bail!("not an absolute path");
    }
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
        Ok(m) if !m.is_file() => Err(anyhow!("{}, not a regular file", crate::files::kind(&m))),
        Ok(m) if m.permissions().mode() & 0o004 != 0 => Err(anyhow!(
            "readable by every local user (mode {:04o}): chmod o-r, and make it readable by \
             the monitor's user only",
            m.permissions().mode() & 0o7777
        )),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(extra: &str) -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(include_str!("../../sql/schema.sql"))
            .unwrap();
        crate::ops::init::upgrade(&c).unwrap();
        c.execute_batch(extra).unwrap();
        c
    }

    fn texts(c: &Connection) -> Vec<String> {
        lint(c).unwrap().into_iter().map(|f| f.text).collect()
    }

    #[test]
    fn the_example_is_clean() {
        let c = db(include_str!("../../sql/example.sql"));
        assert_eq!(texts(&c), Vec::<String>::new());
    }

    #[test]
    fn each_problem_is_one_line_naming_the_row() {
        let c = db(include_str!("../../sql/example.sql"));
        c.execute_batch(
            "INSERT INTO ha_networks (cidr, name) VALUES ('10.1.0.0/33', 'x'),
               ('montreal', 'montreal'), ('10.2.0.1/16', 'y'), ('192.0.2.0/25', 'site-a');
             INSERT INTO records (domain_id, name, type, content, ttl, prio)
               SELECT id, '_sip._udp.example.com', 'SRV', '10 5060 sip9.example.com.', 300, 30
               FROM domains;
             INSERT INTO ha_targets (name, probe_address, probe_ok_codes) VALUES
               ('sip-typo.example.com', 'sip:5060', '2xx,700');
             UPDATE ha_targets SET load_secret = 'ClueCon', load_address = '192.0.2.11'
               WHERE name = 'sip1.example.com';
             INSERT INTO domains (name, type) VALUES ('nosoa.example', 'NATIVE');",
        )
        .unwrap();
        let got = texts(&c).join("\n");
        for want in [
            "ha_targets 'sip-typo.example.com': probe_ok_codes '2xx,700': '700' is not a code",
            "ha_targets 'sip1.example.com': load_address '192.0.2.11' has no :port",
            "ha_targets 'sip1.example.com': load_secret holds the Event Socket password",
            "zone 'nosoa.example' (domains id 2): no SOA record at its apex",
            "_sip._udp.example.com SRV): target sip9.example.com has no ha_targets row",
            "ha_targets 'sip-typo.example.com': no SRV record names it",
            "ha_networks '10.1.0.0/33' (x): not an address/prefix",
            "ha_networks 'montreal' (montreal): not an address/prefix",
            "ha_networks '10.2.0.1/16' (y): host bits set",
            "ha_networks '192.0.2.0/25' (site-a): inside '192.0.2.0/24', which has the same name",
        ] {
            assert!(got.contains(want), "{want:?} not in:\n{got}");
        }
        assert_eq!(got.lines().count(), 10, "{got}");
    }

    #[test]
    fn records_the_pipe_leaves_out() {
        let c = db(include_str!("../../sql/example.sql"));
        c.execute_batch(
            "INSERT INTO records (domain_id, name, type, content, ttl, prio)
               SELECT id, 'tab.example.com', 'TXT', 'a	b', 60, NULL FROM domains;
             INSERT INTO records (domain_id, name, type, content, ttl, prio)
               SELECT id, 'example.com', 'MX', 'mx9.example.com.', 60, 70000 FROM domains;
             INSERT INTO records (domain_id, name, type, content, ttl, prio)
               SELECT id, '_sips._tcp.example.com', 'SRV', '10 20 5061 sip1.example.com.', 60, NULL
               FROM domains;",
        )
        .unwrap();
        let got = texts(&c).join("\n");
        assert!(
            got.contains("(tab.example.com TXT): not served: a TAB"),
            "{got}"
        );
        assert!(
            got.contains("(example.com MX): not served: priority out of range"),
            "{got}"
        );
        // The priority in front of the content, as the pipe reads it: no finding.
        assert_eq!(got.lines().count(), 2, "{got}");
    }

    #[test]
    fn addresses() {
        for ok in [
            "sip1.example.com:5060",
            "192.0.2.1:8021",
            "[2001:db8::1]:5060",
            "h:1",
        ] {
            assert_eq!(host_port(ok), Ok(()), "{ok}");
        }
        for bad in [
            "sip1",
            "sip1:0",
            "2001:db8::1:5060",
            "[2001:db8::1]",
            "a b:5060",
            ":5060",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
        assert!(secret_file(Path::new("relative")).is_err());
        assert!(secret_file(Path::new("/nonexistent/secret")).is_ok());
    }
}
