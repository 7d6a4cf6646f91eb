//! Reading the database whole: the zones, and every reading into a fresh index, with the
//! row parsers the change log's reader shares ([`super::changes`]). What the store does at
//! start, after the file was replaced, and on a database without the change log
//! (`ha_log`); [`mod@super::read`] decides which in one read transaction.

use std::path::Path;
use std::time::Duration;

use log::warn;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::pipe::zone::{Builder, Row, Skip, Zones, WHOLE_LIMIT};
use crate::state::index::Metrics;
use crate::state::reading::{Drain, Health, Latency, Load, Source};
use crate::state::service::{Service, Transport};
use crate::state::validate::{Clock, Invalid};
use crate::text::shown;

use super::StoreError;

/// SQLite's page cache for this read-only connection, in KiB. Pages of a
/// large database are shared in the kernel's page cache anyway; this only
/// keeps the hot index pages private to the process.
const PAGE_CACHE_KIB: i64 = 1024;

const PIPE_SQL: &str = include_str!("../../../sql/pipe.sql");

/// Skipped rows whose reasons are kept (for `status` and `explain`) and
/// logged; the rest are only counted, so that a table full of bad rows
/// cannot fill the log or the memory of every pipe process.
pub(super) const SKIPPED_KEPT: usize = 20;

/// The statement under `-- name: NAME` in `sql/pipe.sql`. Every name the
/// code asks for is checked by a unit test, so a missing one fails there.
pub(super) fn named(name: &str) -> &'static str {
    let marker = format!("-- name: {name}\n");
    let Some(start) = PIPE_SQL.find(&marker) else {
        return "";
    };
    let body = &PIPE_SQL[start + marker.len()..];
    body.split(';').next().unwrap_or("")
}

/// Loading allocates and frees: SQLite's page cache fills with the pages
/// read, and the heap and stack keep their high-water marks. Four or more
/// pipe processes each keep that private, so it goes back after every load.
pub(super) fn give_back_memory(conn: Option<&Connection>) {
    if let Some(conn) = conn {
        let _ = conn.execute_batch("PRAGMA shrink_memory");
    }
    crate::pipe::lean::give_back();
}

pub(super) fn open_read_only(path: &Path, busy: Duration) -> Result<Connection, StoreError> {
    // The path (and the -wal and -shm beside it) must be regular files,
    // checked with stat and a non-blocking open: SQLite's own open would
    // hang for ever on a FIFO swapped in after `fingerprint` looked.
    crate::files::check_database(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy)?;
    conn.execute_batch(&format!("PRAGMA cache_size = -{PAGE_CACHE_KIB}"))?;
    Ok(conn)
}

/// The zones change counter, `None` on a database without `ha_changes`.
pub(super) fn zones_version(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    if !table_exists(conn, "ha_changes")? {
        return Ok(None);
    }
    conn.prepare_cached(named("zones_version"))?
        .query_row([], |r| r.get(0))
        .optional()
}

pub(super) fn table_exists(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
    )?
    .query_row([table], |r| r.get(0))
}

/// A record row in the shape every record statement of `sql/pipe.sql` has.
pub(super) fn read_row<'r>(r: &'r rusqlite::Row<'_>) -> rusqlite::Result<Row<'r>> {
    Ok(Row {
        name: r.get_ref(0)?.as_str()?,
        rtype: r.get_ref(1)?.as_str()?,
        content: r.get_ref(2)?.as_str_or_null()?.unwrap_or(""),
        ttl: r.get(3)?,
        prio: r.get(4)?,
        domain_id: r.get(5)?,
        auth: r.get(6)?,
    })
}

/// Why a record is not served, short: a 10 MB TXT must not make a 10 MB
/// log line on every start.
pub(super) fn skip_reason(row: &Row<'_>, why: &Skip) -> String {
    let what = format!(
        "{} {} \"{}\"",
        shown(row.name),
        shown(row.rtype),
        shown(row.content)
    );
    match why {
        Skip::Unservable => format!("{what}: a TAB or line break cannot be sent to pdns"),
        Skip::NoPriority => format!("{what}: MX/SRV without a priority"),
        Skip::BadPriority => format!("{what}: priority out of range (0 to 65535)"),
    }
}

/// Rows left out of a load: all counted, the first few with a reason.
#[derive(Default)]
pub(super) struct Skipped {
    pub(super) count: usize,
    pub(super) kept: Vec<String>,
}

impl Skipped {
    pub(super) fn push(&mut self, why: impl FnOnce() -> String) {
        self.count += 1;
        if self.kept.len() < SKIPPED_KEPT {
            self.kept.push(why());
        }
    }

    pub(super) fn log(&self) {
        for why in &self.kept {
            warn!("not served: {why}");
        }
        if self.count > self.kept.len() {
            warn!("not served: {} more rows", self.count - self.kept.len());
        }
    }
}

/// Every record when there are at most `WHOLE_LIMIT`, else an empty
/// per-name cache (what was cached before may be stale now).
pub(super) fn load_zones(tx: &Connection, skipped: &mut Skipped) -> rusqlite::Result<Zones> {
    let limit = i64::try_from(WHOLE_LIMIT + 1).unwrap_or(i64::MAX);
    let count: i64 = tx
        .prepare_cached(named("records_at_most"))?
        .query_row([limit], |r| r.get(0))?;
    if count > WHOLE_LIMIT as i64 {
        // The domains table is still read, so a database that is not
        // pdns's fails here at start-up rather than at the first question.
        tx.prepare_cached(named("domains"))?.exists([])?;
        return Ok(Zones::per_name());
    }
    let mut b = Builder::default();
    let mut stmt = tx.prepare_cached(named("domains"))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        match (r.get(0), r.get_ref(1)?.as_str()) {
            (Ok(id), Ok(name)) => b.domain(id, name),
            _ => skipped.push(|| "a domains row whose id or name is not readable".to_owned()),
        }
    }
    drop(rows);
    let mut stmt = tx.prepare_cached(named("records"))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        match read_row(r) {
            Err(e) => skipped.push(|| format!("a records row is not readable ({e})")),
            Ok(row) => {
                if let Err(why) = b.record(&row) {
                    skipped.push(|| format!("record {}", skip_reason(&row, &why)));
                }
            }
        }
    }
    Ok(b.finish())
}

/// Why a reading row is left out; [`row_problem`] adds its table and key.
#[derive(Debug, thiserror::Error)]
pub(super) enum BadRow {
    /// A column of the wrong type, or NULL where a value belongs.
    #[error("{0}")]
    Column(rusqlite::Error),
    /// A value out of range, or a time in the future (the one validation every path shares).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Network(#[from] crate::state::index::BadNetwork),
    #[error("column {column} is {value}, out of range")]
    Count { column: usize, value: i64 },
    #[error("transport {} is not udp, tcp or tls", shown(.0))]
    Transport(String),
    #[error("port {0} out of range")]
    Port(i64),
    #[error("negative generation")]
    Generation,
}

/// A `health` row (target, monitor, up, updated), validated.
pub(super) fn health_row(r: &rusqlite::Row<'_>, clock: &Clock) -> Result<Health, BadRow> {
    let h = Health {
        up: col(r, 2)?,
        updated: col(r, 3)?,
    };
    clock.health(&h)?;
    Ok(h)
}

/// An advertised service as the change log keys it: `tls/5061`.
pub(super) fn service_key(key: &str) -> Result<Service, BadRow> {
    let (transport, port) = key.split_once('/').unwrap_or((key, ""));
    service(transport, port.parse::<i64>().unwrap_or(0))
}

fn service(transport: &str, port: i64) -> Result<Service, BadRow> {
    Ok(Service {
        transport: Transport::parse(transport)
            .ok_or_else(|| BadRow::Transport(transport.to_owned()))?,
        port: u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or(BadRow::Port(port))?,
    })
}

/// A `service_health` row (target, transport, port, monitor, up, updated), validated.
fn service_health_row(r: &rusqlite::Row<'_>, clock: &Clock) -> Result<(Service, Health), BadRow> {
    let s = service(text(r, 1)?, col(r, 2)?)?;
    let h = Health {
        up: col(r, 4)?,
        updated: col(r, 5)?,
    };
    clock.health(&h)?;
    Ok((s, h))
}

/// A drain generation (`ha_drain_generation`), never negative.
pub(super) fn generation(r: &rusqlite::Row<'_>, i: usize) -> Result<u64, BadRow> {
    u64::try_from(col::<i64>(r, i)?).map_err(|_| BadRow::Generation)
}

/// A `load` row (target, sessions, max_sessions, updated), validated.
pub(super) fn load_row(r: &rusqlite::Row<'_>, clock: &Clock) -> Result<Load, BadRow> {
    let max_sessions = match col::<Option<i64>>(r, 2)? {
        Some(_) => Some(count(r, 2)?),
        None => None,
    };
    let l = Load {
        sessions: count(r, 1)?,
        max_sessions,
        updated: col(r, 3)?,
    };
    clock.load(&l)?;
    Ok(l)
}

/// A `latency` row (network, target, ewma, mean, samples, updated,
/// source, callers), validated.
pub(super) fn latency_row(
    r: &rusqlite::Row<'_>,
    clock: &Clock,
) -> Result<(Source, Latency), BadRow> {
    let callers = match col::<Option<i64>>(r, 7)? {
        Some(_) => Some(count(r, 7)?),
        None => None,
    };
    let l = Latency {
        ewma_ms: col(r, 2)?,
        mean_ms: col(r, 3)?,
        samples: u64::from(count(r, 4)?),
        updated: col(r, 5)?,
        callers,
    };
    clock.latency(&l)?;
    let source = crate::state::validate::source(&col::<String>(r, 6)?)?;
    Ok((source, l))
}

/// A `drains` row (target, reason, since), validated.
pub(super) fn drain_row(r: &rusqlite::Row<'_>, clock: &Clock) -> Result<Drain, BadRow> {
    let d = Drain {
        reason: col::<String>(r, 1)?.into(),
        since: col(r, 2)?,
    };
    clock.updated(d.since)?;
    Ok(d)
}

/// The networks, or the targets and their capacity: hard state read with
/// the readings, whole whenever it changed.
pub(super) fn load_networks(
    tx: &Connection,
    m: &mut Metrics,
    skipped: &mut Skipped,
    rows: &mut u64,
) -> rusqlite::Result<()> {
    each_row(tx, "ha_networks", "networks", skipped, rows, |r| {
        Ok(m.add_network(&col::<String>(r, 0)?, &col::<String>(r, 1)?)?)
    })
}

pub(super) fn load_targets(
    tx: &Connection,
    m: &mut Metrics,
    skipped: &mut Skipped,
    rows: &mut u64,
) -> rusqlite::Result<()> {
    each_row(tx, "ha_targets", "targets", skipped, rows, |r| {
        m.add_target(&col::<String>(r, 0)?);
        Ok(())
    })?;
    each_row(tx, "ha_targets", "capacity", skipped, rows, |r| {
        m.add_capacity(&col::<String>(r, 0)?, count(r, 1)?);
        Ok(())
    })
}

/// Reads the `ha_` tables. A row with a value of the wrong type or out of
/// range (the one validation every path shares, against `clock`) is left
/// out with a reason, like a bad record.
pub(super) fn load_metrics(
    tx: &Connection,
    clock: &Clock,
    skipped: &mut Skipped,
    rows: &mut u64,
) -> rusqlite::Result<Metrics> {
    let mut m = Metrics::default();
    load_networks(tx, &mut m, skipped, rows)?;
    load_targets(tx, &mut m, skipped, rows)?;
    each_row(tx, "ha_health", "health", skipped, rows, |r| {
        let h = health_row(r, clock)?;
        m.add_health(text(r, 0)?, text(r, 1)?, h);
        Ok(())
    })?;
    each_row(tx, "ha_load", "load", skipped, rows, |r| {
        m.add_load(&col::<String>(r, 0)?, load_row(r, clock)?);
        Ok(())
    })?;
    each_row(tx, "ha_latency", "latency", skipped, rows, |r| {
        let (source, l) = latency_row(r, clock)?;
        m.add_latency(text(r, 0)?, text(r, 1)?, source, l);
        Ok(())
    })?;
    each_row(tx, "ha_drain", "drains", skipped, rows, |r| {
        m.add_drain(&col::<String>(r, 0)?, drain_row(r, clock)?);
        Ok(())
    })?;
    // Newer tables, absent from older databases, which then serve as before.
    each_row(
        tx,
        "ha_service_health",
        "service_health",
        skipped,
        rows,
        |r| {
            let (s, h) = service_health_row(r, clock)?;
            m.add_service_health(text(r, 0)?, s, text(r, 3)?, h);
            Ok(())
        },
    )?;
    each_row(
        tx,
        "ha_drain_generation",
        "drain_generations",
        skipped,
        rows,
        |r| {
            m.set_drain_generation(text(r, 0)?, Some(generation(r, 1)?));
            Ok(())
        },
    )?;
    Ok(m.finish())
}

/// Runs the statement named `statement`, over `table`, if the table
/// exists, handing each row to `f`; rows `f` rejects are listed in
/// `skipped`.
pub(super) fn each_row(
    tx: &Connection,
    table: &str,
    statement: &str,
    skipped: &mut Skipped,
    rows_read: &mut u64,
    mut f: impl FnMut(&rusqlite::Row<'_>) -> Result<(), BadRow>,
) -> rusqlite::Result<()> {
    if !table_exists(tx, table)? {
        return Ok(());
    }
    // A table of an older layout (a column added since) must not stop the
    // zones from loading; `pdns-ha init` upgrades it.
    let mut stmt = match tx.prepare_cached(named(statement)) {
        Ok(stmt) => stmt,
        Err(e) => {
            skipped.push(|| format!("table {table}: {e} (run pdns-ha init to upgrade it)"));
            return Ok(());
        }
    };
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        *rows_read += 1;
        if let Err(why) = f(r) {
            skipped.push(|| row_problem(table, r, &why));
        }
    }
    Ok(())
}

/// A bad row, named by its key (target or network).
pub(super) fn row_problem(table: &str, r: &rusqlite::Row<'_>, why: &BadRow) -> String {
    let key = r.get_ref(0).ok().and_then(|v| v.as_str().ok()).map(shown);
    match key {
        Some(k) => format!("a row of {table} ({k}): {why}"),
        None => format!("a row of {table}: {why}"),
    }
}

pub(super) fn col<T: rusqlite::types::FromSql>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> Result<T, BadRow> {
    r.get(i).map_err(BadRow::Column)
}

/// A text column, borrowed from the row: no allocation per reading.
pub(super) fn text<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r str, BadRow> {
    r.get_ref(i)
        .and_then(|v| Ok(v.as_str()?))
        .map_err(BadRow::Column)
}

/// A column holding a count: sessions, capacity, samples.
fn count(r: &rusqlite::Row<'_>, i: usize) -> Result<u32, BadRow> {
    let n: i64 = col(r, i)?;
    u32::try_from(n).map_err(|_| BadRow::Count {
        column: i,
        value: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement the code names exists and compiles against the
    /// schema `init` creates.
    #[test]
    fn every_named_statement_prepares() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("../../../sql/schema.sql"))
            .unwrap();
        for name in [
            "zones_version",
            "records_at_most",
            "domains",
            "records",
            "records_named",
            "domain_by_id",
            "domain_by_name",
            "zone_records",
            "networks",
            "targets",
            "capacity",
            "health",
            "load",
            "latency",
            "drains",
            "hard_versions",
            "log_seq",
            "latency_changed",
            "health_changed",
            "load_changed",
            "drains_changed",
        ] {
            let sql = named(name);
            assert!(sql.contains("SELECT"), "no statement named {name}");
            conn.prepare(sql).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert_eq!(named("no_such_statement"), "");
    }

    /// The change queries go through the `seq` index: on the primary key
    /// (kind first) SQLite would read every key of the kind at each change.
    #[test]
    fn changes_are_read_through_the_seq_index() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("../../../sql/schema.sql"))
            .unwrap();
        for name in [
            "latency_changed",
            "health_changed",
            "load_changed",
            "drains_changed",
        ] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {}", named(name)))
                .unwrap()
                .query_map([0], |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter().any(|step| step.contains("ha_log_seq (seq>?)")),
                "{name}: {plan:?}"
            );
        }
    }
}
