//! `pdns-ha init`: creates the schema (embedded from `sql/schema.sql`) and
//! runs seed scripts. Safe to run again: the schema only adds what is
//! missing, so it also upgrades a plain gsqlite3 database in place, and a
//! database made by an older pdns-ha gains the columns and tables added since
//! (SQLite has no `ADD COLUMN IF NOT EXISTS`, so the upgrades are listed here).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

const SCHEMA: &str = include_str!("../../sql/schema.sql");

/// Columns added after a table's first release: (table, column, definition
/// as in `sql/schema.sql`). Added where missing, after the schema ran, so the
/// rows stay.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("ha_targets", "probe_ok_codes", "TEXT DEFAULT NULL"),
    ("ha_targets", "probe_ca_file", "TEXT DEFAULT NULL"),
    ("ha_load", "monitor", "TEXT DEFAULT NULL"),
    ("ha_latency", "monitor", "TEXT DEFAULT NULL"),
];

/// Soft-state tables whose key changed: (table, a column only the new shape
/// has). Readings are disposable (the next monitor round writes them again),
/// so an old-shaped table is dropped and the schema creates it anew.
const RESHAPED: &[(&str, &str)] = &[("ha_health", "monitor"), ("ha_latency", "source")];

fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = stmt.query_map([table], |r| r.get(0))?;
    names.collect()
}

/// Brings an existing database to the current schema; a new one gets it all
/// from `SCHEMA`.
fn upgrade(conn: &Connection) -> rusqlite::Result<()> {
    for (table, marker) in RESHAPED {
        let have = columns(conn, table)?;
        if !have.is_empty() && !have.iter().any(|c| c == marker) {
            log::warn!("{table}: old layout, dropped (soft state; the monitor refills it)");
            conn.execute_batch(&format!("DROP TABLE {table}"))?;
        }
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

pub fn run(db: &Path, scripts: &[PathBuf]) -> Result<(), String> {
    let at = |e: &dyn std::fmt::Display| format!("database {}: {e}", db.display());
    // Not through a symbolic link (a dangling one would have SQLite create
    // its target, wherever it points) and not into a FIFO, device or
    // directory.
    crate::files::check_new_database(db).map_err(|e| at(&e))?;
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
            .map_err(|e| at(&e))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(at(&e)),
    }
    let conn = Connection::open(db).map_err(|e| at(&e))?;
    // WAL lets the monitor write metrics while pipe processes read, without
    // either waiting for the other.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| at(&e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("database {}: journal mode is {mode}, not WAL", db.display());
    }
    upgrade(&conn).map_err(|e| at(&e))?;
    for script in scripts {
        let sql = std::fs::read_to_string(script)
            .map_err(|e| format!("seed script {}: {e}", script.display()))?;
        conn.execute_batch(&sql)
            .map_err(|e| format!("seed script {}: {e}", script.display()))?;
    }
    let count = |table: &str| -> Result<i64, String> {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .map_err(|e| at(&e))
    };
    let line = format!(
        "{}: {} zones, {} records, {} targets, {} networks",
        db.display(),
        count("domains")?,
        count("records")?,
        count("ha_targets")?,
        count("ha_networks")?
    );
    writeln!(io::stdout(), "{line}").map_err(|e| e.to_string())
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
}
