//! `pdns-ha init`: creates the schema (embedded from `sql/schema.sql`) and
//! runs seed scripts. Safe to run again: the schema only adds what is
//! missing, so it also upgrades a plain gsqlite3 database in place, and a
//! database made by an older pdns-ha gains the columns and tables added since
//! (SQLite has no `ADD COLUMN IF NOT EXISTS`, so the upgrades are listed here).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use rusqlite::Connection;

use super::Sql;

const SCHEMA: &str = include_str!("../../sql/schema.sql");

/// Columns added after a table's first release: (table, column, definition
/// as in `sql/schema.sql`). Added where missing, after the schema ran, so the
/// rows stay.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("ha_targets", "probe_ok_codes", "TEXT DEFAULT NULL"),
    ("ha_load", "monitor", "TEXT DEFAULT NULL"),
    ("ha_latency", "monitor", "TEXT DEFAULT NULL"),
    // In the schema's order, so that an upgraded table is shaped like a new one.
    ("ha_targets", "load_secret_file", "TEXT DEFAULT NULL"),
    ("ha_targets", "probe_ca_file", "TEXT DEFAULT NULL"),
];

/// Soft-state tables whose key changed: (table, a column only the new shape
/// has). Readings are disposable (the next monitor round writes them again),
/// so an old-shaped table is dropped and the schema creates it anew.
const RESHAPED: &[(&str, &str)] = &[("ha_health", "monitor"), ("ha_latency", "source")];

/// The `CREATE TABLE` statement of `table` in `sql/schema.sql`, without its `;`.
fn schema_table(table: &str) -> &'static str {
    let start = SCHEMA
        .find(&format!("CREATE TABLE IF NOT EXISTS {table} ("))
        .expect("the table is in sql/schema.sql");
    let len = SCHEMA[start..].find("\n);").expect("a table ends with );") + 2;
    &SCHEMA[start..start + len + 1]
}

fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = stmt.query_map([table], |r| r.get(0))?;
    names.collect()
}

/// Brings an existing database to the current schema; a new one gets it all
/// from `SCHEMA`.
pub(crate) fn upgrade(conn: &Connection) -> rusqlite::Result<()> {
    for (table, marker) in RESHAPED {
        let have = columns(conn, table)?;
        if !have.is_empty() && !have.iter().any(|c| c == marker) {
            log::warn!("{table}: old layout, dropped (soft state; the monitor refills it)");
            conn.execute_batch(&format!("DROP TABLE {table}"))?;
        }
    }
    // A CHECK cannot be altered: an ha_latency that refuses the newest source is
    // rebuilt with its rows (SQLite's own recipe, "ALTER TABLE", section 7).
    if crate::state::writer::latency_predates_freeswitch(conn)? {
        let cols = columns(conn, "ha_latency")?.join(", ");
        conn.execute_batch(&format!(
            "BEGIN;
             ALTER TABLE ha_latency RENAME TO ha_latency_old;
             {};
             INSERT INTO ha_latency ({cols}) SELECT {cols} FROM ha_latency_old;
             DROP TABLE ha_latency_old;
             COMMIT;",
            schema_table("ha_latency")
        ))?;
    }
    conn.execute_batch(SCHEMA)?;
    for (table, column, definition) in ADDED_COLUMNS {
        if !columns(conn, table)?.iter().any(|c| c == column) {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}

/// `pdns-ha init --db DB [SQL_FILE...]`: the schema, then the seed scripts
/// all or nothing, then what the database holds.
pub fn run(db: &Path, scripts: &[PathBuf]) -> anyhow::Result<()> {
    let at = || format!("database {}", db.display());
    // Not through a symbolic link (a dangling one would have SQLite create
    // its target, wherever it points) and not into a FIFO, device or
    // directory.
    crate::files::check_new_database(db).with_context(at)?;
    // Created here rather than by SQLite so that the mode is explicit and
    // the same under any umask: operators write it, pdns (another user)
    // only reads it. A umask of 077 would otherwise lock pdns out.
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(db)
    {
        Ok(f) => f
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(at)?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(at),
    }
    let conn = Connection::open(db).map_err(Sql).with_context(at)?;
    // WAL lets the monitor write metrics while pipe processes read, without
    // either waiting for the other.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(Sql)
        .with_context(at)?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("database {}: journal mode is {mode}, not WAL", db.display());
    }
    upgrade(&conn).map_err(Sql).with_context(at)?;
    let before = counts(&conn).with_context(at)?;
    load(&conn, scripts)?;
    let line = format!("{}: {}", db.display(), counts(&conn).with_context(at)?);
    let mut out = io::stdout().lock();
    if !scripts.is_empty() {
        writeln!(out, "loaded {} script(s); was {before}", scripts.len())?;
    }
    Ok(writeln!(out, "{line}")?)
}

fn counts(conn: &Connection) -> anyhow::Result<String> {
    crate::ops::check::counts(conn)
}

/// Runs every seed script in one transaction, then lints the result
/// (`pdns-ha check`) and commits only if no row is invalid: a failing
/// statement or a bad row leaves the database as it was. The scripts' own
/// `BEGIN`/`COMMIT` (example.sql has them, so that it also runs through the
/// sqlite3 shell) are left out, as the whole load is one transaction.
fn load(conn: &Connection, scripts: &[PathBuf]) -> anyhow::Result<()> {
    if scripts.is_empty() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction().map_err(Sql)?;
    for script in scripts {
        let name = script.display();
        let sql = std::fs::read_to_string(script).with_context(|| format!("seed script {name}"))?;
        run_script(&tx, &sql).map_err(|e| {
            anyhow!("seed script {name}: {e:#}; nothing of the seed scripts was applied")
        })?;
    }
    let findings = crate::ops::check::lint(&tx).map_err(Sql)?;
    let (invalid, unused): (Vec<_>, Vec<_>) = findings
        .into_iter()
        .partition(|f| f.kind == crate::ops::check::Kind::Invalid);
    for f in &unused {
        log::warn!("{}", f.text);
    }
    if !invalid.is_empty() {
        let lines: Vec<String> = invalid.into_iter().map(|f| f.text).collect();
        bail!(
            "nothing of the seed scripts was applied, because of {} invalid row(s):\n{}",
            lines.len(),
            lines.join("\n")
        );
    }
    Ok(tx.commit().map_err(Sql)?)
}

/// Runs each statement of `sql` but transaction control, which the caller
/// owns. A statement that fails is named by its number and start.
fn run_script(conn: &Connection, sql: &str) -> anyhow::Result<()> {
    use rusqlite::fallible_iterator::FallibleIterator;
    let mut batch = rusqlite::Batch::new(conn, sql);
    let mut n = 0;
    loop {
        let mut stmt = match batch.next() {
            Ok(Some(stmt)) => stmt,
            Ok(None) => return Ok(()),
            // Preparing the next statement failed: name it.
            Err(e) => bail!("statement {}: {e}", n + 1),
        };
        n += 1;
        let text = stmt.expanded_sql().unwrap_or_default();
        let body = without_comments(&text);
        let first = body
            .split(|c: char| !c.is_ascii_alphabetic())
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match first.as_str() {
            "BEGIN" | "COMMIT" | "END" => continue,
            "ROLLBACK" => {
                bail!(
                    "statement {n}: ROLLBACK in a seed script is not supported (init \
                     applies all of the scripts or nothing)"
                )
            }
            _ => {}
        }
        // Stepped to the end, as execute_batch does: a SELECT or PRAGMA in
        // a script returns rows, which are not an error.
        let mut rows = stmt.raw_query();
        let ran = loop {
            match rows.next() {
                Ok(Some(_)) => {}
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = ran {
            let start: String = body.chars().take(60).collect();
            bail!(
                "statement {n} ({}...): {e}",
                crate::text::shown(start.trim())
            );
        }
    }
}

/// `sql` from its first token on: SQLite hands each statement of a batch
/// over with the comments and blank lines before it.
fn without_comments(mut sql: &str) -> &str {
    loop {
        sql = sql.trim_start();
        if let Some(rest) = sql.strip_prefix("--") {
            sql = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = sql.strip_prefix("/*") {
            sql = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return sql;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ha_targets`, `ha_health` and `ha_load` as the first release created
    /// them.
    const FIRST_RELEASE: &str = "
        CREATE TABLE ha_targets (name TEXT PRIMARY KEY COLLATE NOCASE,
          probe TEXT NOT NULL DEFAULT 'sip-udp', probe_address TEXT DEFAULT NULL,
          max_sessions INTEGER DEFAULT NULL, load_source TEXT NOT NULL DEFAULT 'none',
          load_address TEXT DEFAULT NULL, load_secret TEXT DEFAULT NULL);
        CREATE TABLE ha_health (target TEXT PRIMARY KEY COLLATE NOCASE, up INTEGER NOT NULL,
          ok_streak INTEGER NOT NULL DEFAULT 0, fail_streak INTEGER NOT NULL DEFAULT 0,
          updated REAL NOT NULL);
        CREATE TABLE ha_load (target TEXT PRIMARY KEY COLLATE NOCASE, sessions INTEGER NOT NULL,
          max_sessions INTEGER DEFAULT NULL, updated REAL NOT NULL);
        INSERT INTO ha_load (target, sessions, updated) VALUES ('sip1.example.com', 7, 1.0);
        INSERT INTO ha_targets (name) VALUES ('sip1.example.com');
        INSERT INTO ha_health (target, up, updated) VALUES ('sip1.example.com', 1, 1.0);
        CREATE TABLE ha_latency (network TEXT NOT NULL, target TEXT NOT NULL COLLATE NOCASE,
          mean_ms REAL NOT NULL, ewma_ms REAL NOT NULL, samples INTEGER NOT NULL,
          timeouts INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL,
          PRIMARY KEY (network, target));
        INSERT INTO ha_latency (network, target, mean_ms, ewma_ms, samples, updated)
          VALUES ('*', 'sip1.example.com', 5, 5, 3, 1.0);";

    #[test]
    fn upgrade_keeps_targets_and_reshapes_readings() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(FIRST_RELEASE).unwrap();
        upgrade(&conn).unwrap();
        // Twice: init must stay re-runnable on an upgraded database.
        upgrade(&conn).unwrap();
        let codes: Option<String> = conn
            .query_row("SELECT probe_ok_codes FROM ha_targets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(codes, None);
        assert!(columns(&conn, "ha_health")
            .unwrap()
            .contains(&"monitor".to_owned()));
        assert!(columns(&conn, "ha_drain")
            .unwrap()
            .contains(&"reason".to_owned()));
        let kept: (i64, Option<String>) = conn
            .query_row("SELECT sessions, monitor FROM ha_load", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(kept, (7, None), "an added column keeps the rows");
        // The latency key gained the source: the table is rebuilt with it,
        // and two sources of one (network, target) now fit side by side.
        let have = columns(&conn, "ha_latency").unwrap();
        assert!(["source", "callers", "monitor"]
            .iter()
            .all(|c| have.contains(&(*c).to_owned())));
        conn.execute_batch(
            "INSERT INTO ha_latency (network, target, source, mean_ms, ewma_ms, samples, updated)
             VALUES ('*', 'sip1.example.com', 'monitor', 5, 5, 3, 1.0),
                    ('*', 'sip1.example.com', 'observe', 9, 9, 3, 1.0);",
        )
        .unwrap();
        // Issue 18: the per-target CA file and the per-service health table.
        let ca: Option<String> = conn
            .query_row("SELECT probe_ca_file FROM ha_targets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ca, None);
        assert!(columns(&conn, "ha_service_health")
            .unwrap()
            .contains(&"cert_expiry".to_owned()));
        let fresh = Connection::open_in_memory().unwrap();
        upgrade(&fresh).unwrap();
        assert_eq!(
            columns(&fresh, "ha_targets").unwrap(),
            columns(&conn, "ha_targets").unwrap()
        );
    }

    #[test]
    fn upgrade_lets_the_freeswitch_source_in_and_keeps_the_rows() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        // ha_latency as the release before issue 20 made it.
        let old = schema_table("ha_latency").replace(", 'freeswitch'", "");
        assert_ne!(old, schema_table("ha_latency"));
        conn.execute_batch(&format!(
            "DROP TABLE ha_latency; {old};
             INSERT INTO ha_latency (network, target, source, mean_ms, ewma_ms, samples, updated,
               callers) VALUES ('*', 'sip1.example.com', 'observe', 9, 9, 3, 1.0, 4);"
        ))
        .unwrap();
        let refused = "INSERT INTO ha_latency (network, target, source, mean_ms, ewma_ms, samples,
               updated) VALUES ('*', 'sip1.example.com', 'freeswitch', 5, 5, 1, 1.0)";
        assert!(conn.execute_batch(refused).is_err());
        upgrade(&conn).unwrap();
        upgrade(&conn).unwrap();
        conn.execute_batch(refused).unwrap();
        let kept: (f64, i64) = conn
            .query_row(
                "SELECT ewma_ms, callers FROM ha_latency WHERE source = 'observe'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(kept, (9.0, 4));
        assert!(columns(&conn, "ha_quality")
            .unwrap()
            .contains(&"mos".to_owned()));
    }
}
