//! `pdns-ha init`: creates the schema (embedded from `sql/schema.sql`) and
//! runs seed scripts. Safe to run again: the schema only adds what is
//! missing, so it also upgrades a plain gsqlite3 database in place.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

const SCHEMA: &str = include_str!("../../sql/schema.sql");

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
    conn.execute_batch(SCHEMA).map_err(|e| at(&e))?;
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
