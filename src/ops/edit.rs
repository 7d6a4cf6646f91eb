//! The configuration operators change most, as commands instead of SQL: known networks
//! (`network add|rm|list`) and measured targets (`target add|set|rm|list`). Each command
//! checks everything it is given before it writes, writes in one transaction, and says
//! what it did; what is valid but probably not meant (a target no record names, a network
//! inside another) is said as a note on stderr. SQL keeps working for those who prefer it.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::check::{host_port, srv_target, table_exists};
use super::Sql;
use crate::dns::Subnet;
use crate::net::kamailio::connect_target;
use crate::state::codes::AcceptCodes;
use crate::text::shown;

/// What `target add` and `target set` may change; `None` leaves a column as it is (set)
/// or at its default (add).
#[derive(Debug, Default, Clone)]
pub struct TargetFields {
    pub probe: Option<String>,
    pub probe_address: Option<String>,
    pub probe_ok_codes: Option<String>,
    pub max_sessions: Option<u32>,
    pub load_source: Option<String>,
    pub load_address: Option<String>,
}

const PROBES: [&str; 4] = ["sip-udp", "sip-tcp", "tcp", "none"];
const LOAD_SOURCES: [&str; 3] = ["none", "freeswitch", "kamailio"];

fn open(db: &Path) -> anyhow::Result<Connection> {
    crate::files::check_database(db)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags)
        .map_err(Sql)
        .with_context(|| format!("database {}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(2))
        .map_err(Sql)?;
    let has = |t: &str| table_exists(&conn, t).map_err(Sql);
    if !(has("ha_targets")? && has("ha_networks")?) {
        bail!(
            "database {} has no ha_ tables: create them with `pdns-ha init --db {}`",
            db.display(),
            db.display()
        );
    }
    Ok(conn)
}

fn say(text: &str) -> anyhow::Result<()> {
    Ok(io::stdout().write_all(text.as_bytes())?)
}

fn note(text: &str) {
    let _ = writeln!(io::stderr(), "note: {text}");
}

/// A known network's CIDR as it must be stored: an address with no host bits set past the
/// prefix, since the CIDR text is also the key of the network's readings.
pub fn network_cidr(text: &str) -> anyhow::Result<Subnet> {
    let parsed = Subnet::parse(text.trim()).filter(|_| text.contains('/'));
    let Some(s) = parsed else {
        bail!(
            "{} is not a CIDR (address/prefix, e.g. 198.51.100.0/24)",
            shown(text)
        );
    };
    if !s.is_network() {
        let fixed = s.network();
        bail!(
            "{} has host bits set past /{}: did you mean {fixed}?",
            shown(text),
            s.prefix
        );
    }
    Ok(s)
}

/// `network add NAME CIDR...`: every CIDR checked first; none is written if one is bad.
pub fn network_add(db: &Path, name: &str, cidrs: &[String]) -> anyhow::Result<()> {
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        bail!("{} is not a network name", shown(name));
    }
    let subnets: Vec<Subnet> = cidrs
        .iter()
        .map(|c| network_cidr(c))
        .collect::<Result<_, _>>()?;
    let mut conn = open(db)?;
    let tx = conn.transaction().map_err(Sql)?;
    let existing = networks(&tx)?;
    let mut out = String::new();
    for s in &subnets {
        let cidr = s.to_string();
        if let Some((_, other)) = existing.iter().find(|(c, _)| *c == cidr) {
            if other != name {
                bail!(
                    "{cidr} is already network {}: remove it first (pdns-ha network rm --db {} {cidr})",
                    shown(other),
                    db.display()
                );
            }
            let _ = writeln!(out, "{cidr}: already in {}", shown(name));
            continue;
        }
        for (c, n) in &existing {
            let Some(other) = Subnet::parse(c) else {
                continue;
            };
            if other.contains(s.addr) && other.prefix < s.prefix {
                note(&format!(
                    "{cidr} lies inside {c} ({}): its clients match {cidr}, the longer prefix",
                    shown(n)
                ));
            } else if s.contains(other.addr) && s.prefix < other.prefix {
                note(&format!(
                    "{c} ({}) lies inside {cidr}: its clients keep matching {c}",
                    shown(n)
                ));
            }
        }
        tx.execute(
            "INSERT INTO ha_networks (cidr, name) VALUES (?1, ?2)",
            params![cidr, name],
        )
        .map_err(Sql)?;
        let _ = writeln!(out, "{cidr}: added to network {}", shown(name));
    }
    tx.commit().map_err(Sql)?;
    say(&out)
}

/// `network rm NAME|CIDR...`: a name removes all of its CIDRs.
pub fn network_rm(db: &Path, which: &[String]) -> anyhow::Result<()> {
    let mut conn = open(db)?;
    let tx = conn.transaction().map_err(Sql)?;
    let mut out = String::new();
    for w in which {
        let n = tx
            .execute(
                "DELETE FROM ha_networks WHERE cidr = ?1 OR name = ?1",
                [w.trim()],
            )
            .map_err(Sql)?;
        if n == 0 {
            bail!(
                "no network named {} or with that CIDR (pdns-ha network list --db {})",
                shown(w),
                db.display()
            );
        }
        let _ = writeln!(out, "{}: removed ({n} CIDR{})", shown(w), plural(n));
    }
    tx.commit().map_err(Sql)?;
    say(&out)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn networks(conn: &Connection) -> anyhow::Result<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare("SELECT cidr, name FROM ha_networks ORDER BY name, cidr")
        .map_err(Sql)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(Sql)?;
    Ok(rows.collect::<Result<_, _>>().map_err(Sql)?)
}

pub fn network_list(db: &Path) -> anyhow::Result<()> {
    let conn = open(db)?;
    let mut out = String::new();
    for (cidr, name) in networks(&conn)? {
        let bad = match network_cidr(&cidr) {
            Ok(_) => String::new(),
            Err(e) => format!("   ; invalid, the pipe skips it: {e}"),
        };
        let _ = writeln!(out, "{:<20} {}{bad}", shown(&name), shown(&cidr));
    }
    say(&out)
}

/// Checks what a target row would hold. `current` is the row as stored (for `set`).
fn check_target(name: &str, f: &TargetFields, current: &TargetFields) -> anyhow::Result<()> {
    if name.is_empty() || name.contains(char::is_whitespace) || name.chars().any(char::is_control) {
        bail!("{} is not a host name or address", shown(name));
    }
    if let Some(p) = &f.probe {
        if !PROBES.contains(&p.as_str()) {
            bail!("--probe {}: one of {}", shown(p), PROBES.join(", "));
        }
    }
    if let Some(a) = f.probe_address.as_deref().filter(|a| !a.is_empty()) {
        host_port(a).map_err(|why| anyhow!("--probe-address {} {why}", shown(a)))?;
    }
    if let Some(c) = &f.probe_ok_codes {
        AcceptCodes::parse(Some(c))?;
    }
    let source = f.load_source.as_ref().or(current.load_source.as_ref());
    if let Some(s) = &f.load_source {
        if !LOAD_SOURCES.contains(&s.as_str()) {
            bail!(
                "--load-source {}: one of {}",
                shown(s),
                LOAD_SOURCES.join(", ")
            );
        }
    }
    let address = f
        .load_address
        .as_ref()
        .or(current.load_address.as_ref())
        .filter(|a| !a.is_empty());
    match (source.map(String::as_str), address) {
        (Some("freeswitch"), Some(a)) => {
            host_port(a).map_err(|why| {
                anyhow!(
                    "--load-address {} {why} (the Event Socket's host:port)",
                    shown(a)
                )
            })?;
        }
        // As `check` reads it, so that what one accepts the other does too.
        (Some("kamailio"), Some(a))
            if connect_target(a).is_none_or(|hp| host_port(&hp).is_err()) =>
        {
            bail!(
                "--load-address {}: Kamailio's JSON-RPC URL, e.g. http://10.0.0.5:5071/RPC",
                shown(a)
            );
        }
        (Some(s @ ("freeswitch" | "kamailio")), None) => {
            bail!("--load-source {s} needs --load-address");
        }
        _ => {}
    }
    Ok(())
}

fn stored(conn: &Connection, name: &str) -> anyhow::Result<Option<TargetFields>> {
    let row = conn
        .query_row(
            "SELECT probe, probe_address, probe_ok_codes, max_sessions, load_source, load_address \
         FROM ha_targets WHERE name = ?1",
            [name],
            |r| {
                Ok(TargetFields {
                    probe: r.get(0)?,
                    probe_address: r.get(1)?,
                    probe_ok_codes: r.get(2)?,
                    max_sessions: r.get(3)?,
                    load_source: r.get(4)?,
                    load_address: r.get(5)?,
                })
            },
        )
        .optional();
    Ok(row.map_err(Sql)?)
}

/// Whether any record names `target`: an SRV record's target, or an A/AAAA address.
fn named_by_records(conn: &Connection, target: &str) -> anyhow::Result<bool> {
    let mut stmt = conn
        .prepare("SELECT type, content, prio FROM records WHERE type IN ('SRV', 'A', 'AAAA')")
        .map_err(Sql)?;
    let mut rows = stmt.query([]).map_err(Sql)?;
    while let Some(r) = rows.next().map_err(Sql)? {
        let (t, c): (String, String) = (r.get(0).unwrap_or_default(), r.get(1).unwrap_or_default());
        let no_prio = r.get::<_, Option<i64>>(2).ok().flatten().is_none();
        let named = match t.as_str() {
            "SRV" => srv_target(&c, no_prio).map(|n| n.trim_end_matches('.')),
            _ => Some(c.trim()),
        };
        if named.is_some_and(|n| n.eq_ignore_ascii_case(target)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `target add NAME ...` (`replace` false) or `target set NAME ...` (true).
pub fn target_write(db: &Path, name: &str, f: &TargetFields, set: bool) -> anyhow::Result<()> {
    let name = name.trim().trim_end_matches('.');
    let mut conn = open(db)?;
    let tx = conn.transaction().map_err(Sql)?;
    let current = stored(&tx, name)?;
    match (&current, set) {
        (Some(_), false) => {
            bail!(
                "target {} exists: change it with `pdns-ha target set`",
                shown(name)
            )
        }
        (None, true) => {
            bail!(
                "no target {}: add it with `pdns-ha target add`",
                shown(name)
            )
        }
        _ => {}
    }
    let current = current.unwrap_or_default();
    check_target(name, f, &current)?;
    if !set {
        tx.execute("INSERT INTO ha_targets (name) VALUES (?1)", [name])
            .map_err(Sql)?;
    }
    let blank = |v: &Option<String>| v.as_ref().map(|s| (!s.is_empty()).then(|| s.clone()));
    let columns: [(&str, Option<Option<String>>); 5] = [
        ("probe", f.probe.clone().map(Some)),
        ("probe_address", blank(&f.probe_address)),
        ("probe_ok_codes", blank(&f.probe_ok_codes)),
        ("load_source", f.load_source.clone().map(Some)),
        ("load_address", blank(&f.load_address)),
    ];
    for (column, value) in columns {
        if let Some(v) = value {
            tx.execute(
                &format!("UPDATE ha_targets SET {column} = ?1 WHERE name = ?2"),
                params![v, name],
            )
            .map_err(Sql)?;
        }
    }
    if let Some(m) = f.max_sessions {
        let v = (m > 0).then_some(m);
        tx.execute(
            "UPDATE ha_targets SET max_sessions = ?1 WHERE name = ?2",
            params![v, name],
        )
        .map_err(Sql)?;
    }
    if !named_by_records(&tx, name)? {
        note(&format!(
            "no SRV, A or AAAA record names {}: the monitor probes it, no answer ranks it",
            shown(name)
        ));
    }
    tx.commit().map_err(Sql)?;
    let verb = if set { "changed" } else { "added" };
    say(&format!("target {}: {verb}\n", shown(name)))?;
    target_list_one(db, name)
}

pub fn target_rm(db: &Path, name: &str) -> anyhow::Result<()> {
    let mut conn = open(db)?;
    let tx = conn.transaction().map_err(Sql)?;
    let n = tx
        .execute("DELETE FROM ha_targets WHERE name = ?1", [name])
        .map_err(Sql)?;
    if n == 0 {
        bail!("no target {}", shown(name));
    }
    if named_by_records(&tx, name)? {
        note(&format!(
            "records still name {}: they are served as stored, unmeasured",
            shown(name)
        ));
    }
    tx.commit().map_err(Sql)?;
    say(&format!("target {}: removed\n", shown(name)))
}

fn target_rows(conn: &Connection, only: Option<&str>) -> anyhow::Result<Vec<Vec<String>>> {
    let mut stmt = conn
        .prepare(
            "SELECT name, probe, probe_address, probe_ok_codes, max_sessions, load_source, \
             load_address FROM ha_targets WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
        )
        .map_err(Sql)?;
    let rows = stmt
        .query_map([only], |r| {
            let text = |i| -> rusqlite::Result<String> {
                Ok(r.get::<_, Option<String>>(i)?
                    .map_or("-".into(), |v| shown(&v)))
            };
            let max = r.get::<_, Option<i64>>(4)?;
            Ok(vec![
                text(0)?,
                format!(
                    "{} {}",
                    text(1)?,
                    r.get::<_, Option<String>>(2)?
                        .map_or("(name:5060)".into(), |v| shown(&v))
                ),
                text(3)?,
                max.map_or("-".into(), |m| m.to_string()),
                format!("{} {}", text(5)?, text(6)?),
            ])
        })
        .map_err(Sql)?;
    Ok(rows.collect::<Result<_, _>>().map_err(Sql)?)
}

fn target_table(rows: Vec<Vec<String>>) -> String {
    let mut all = vec![vec![
        "target".into(),
        "probe".into(),
        "ok codes".into(),
        "max sessions".into(),
        "load".into(),
    ]];
    all.extend(rows);
    super::report::table(&all)
}

fn target_list_one(db: &Path, name: &str) -> anyhow::Result<()> {
    let conn = open(db)?;
    say(&target_table(target_rows(&conn, Some(name))?))
}

pub fn target_list(db: &Path) -> anyhow::Result<()> {
    let conn = open(db)?;
    say(&target_table(target_rows(&conn, None)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_checked_before_anything_is_written() {
        assert_eq!(
            network_cidr("10.1.0.0/16").unwrap().to_string(),
            "10.1.0.0/16"
        );
        for bad in ["10.1.0.0/33", "montreal", "10.1.0.0"] {
            assert_eq!(
                network_cidr(bad).unwrap_err().to_string(),
                format!("{bad} is not a CIDR (address/prefix, e.g. 198.51.100.0/24)")
            );
        }
        assert_eq!(
            network_cidr("10.1.2.3/16").unwrap_err().to_string(),
            "10.1.2.3/16 has host bits set past /16: did you mean 10.1.0.0/16?"
        );
        assert!(network_cidr("2001:db8::/32").is_ok());
    }

    #[test]
    fn addresses_and_sources_are_checked() {
        assert!(host_port("10.0.0.5:5060").is_ok());
        assert!(host_port("[2001:db8::5]:5061").is_ok());
        assert!(host_port("sip1.example.com:5060").is_ok());
        assert!(host_port("2001:db8::5:5060").is_err());
        assert!(host_port("sip1.example.com").is_err());
        assert!(host_port("sip1:0").is_err());
        let none = TargetFields::default();
        let fs = TargetFields {
            load_source: Some("freeswitch".into()),
            ..TargetFields::default()
        };
        assert_eq!(
            check_target("sip1", &fs, &none).unwrap_err().to_string(),
            "--load-source freeswitch needs --load-address"
        );
        let kam = TargetFields {
            load_source: Some("kamailio".into()),
            load_address: Some("10.0.0.5:5071".into()),
            ..TargetFields::default()
        };
        assert_eq!(
            check_target("sip1", &kam, &none).unwrap_err().to_string(),
            "--load-address 10.0.0.5:5071: Kamailio's JSON-RPC URL, e.g. http://10.0.0.5:5071/RPC"
        );
        let codes = TargetFields {
            probe_ok_codes: Some("200,7xx".into()),
            ..TargetFields::default()
        };
        let e = check_target("sip1", &codes, &none).unwrap_err();
        assert!(
            e.downcast_ref::<crate::state::codes::BadCode>().is_some(),
            "{e}"
        );
        assert!(check_target("two words", &none, &none).is_err());
    }
}
