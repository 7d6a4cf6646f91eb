//! The store's change watch: a fingerprint of the database file and its WAL
//! taken with `stat`, cheap enough to take every 250 ms. The same
//! fingerprint twice means nothing to read.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::StoreError;
use crate::files::FileError;

/// What `stat` says of one file: which file it is (a new inode means the
/// operator replaced the database) and its size and time of last write.
/// Not the status-change time: run as root, SQLite gives the `-wal` file the
/// database's owner at every open, so the pipe's own read would look like a
/// change and the next check would open the database again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) id: (u64, u64),
    size: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            id: (m.dev(), m.ino()),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }
}

/// The database file and its WAL as `stat` sees them. Every commit changes
/// one of the two: in WAL mode it appends to the `-wal` file (and a
/// checkpoint writes the database), with a rollback journal it writes the
/// database itself; each write stamps the file's modification time, which
/// Linux keeps in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fingerprint {
    pub(super) db: Stamp,
    wal: Option<Stamp>,
}

impl Fingerprint {
    /// Whether `self` is another file than `before` (the operator replaced
    /// the database rather than writing into it).
    pub(super) fn replaces(&self, before: &Fingerprint) -> bool {
        self.db.id != before.db.id
    }
}

/// The fingerprint of the database at `path`. Anything but a regular file
/// (a FIFO would block the open for ever, a directory or device is no
/// database) is refused before SQLite sees it.
pub(super) fn fingerprint(path: &Path) -> Result<Fingerprint, StoreError> {
    let m = std::fs::metadata(path).map_err(FileError::Io)?;
    if !m.is_file() {
        return Err(StoreError::NotAFile(crate::files::kind(&m)));
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    Ok(Fingerprint {
        db: Stamp::of(&m),
        wal: std::fs::metadata(&wal).ok().map(|w| Stamp::of(&w)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pdns-ha-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Every commit moves the fingerprint, in WAL mode (the `-wal` file)
    /// and with a rollback journal (the file itself); a read does not.
    #[test]
    fn every_commit_moves_the_fingerprint_and_a_read_does_not() {
        let dir = temp_dir("commits");
        for mode in ["WAL", "DELETE"] {
            let db = dir.join(format!("{mode}.db"));
            let conn = Connection::open(&db).unwrap();
            conn.pragma_update(None, "journal_mode", mode).unwrap();
            conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
            let mut last = fingerprint(&db).unwrap();
            for i in 0..20 {
                conn.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
                let now = fingerprint(&db).unwrap();
                assert_ne!(now, last, "{mode}: commit {i} not seen");
                assert!(!now.replaces(&last), "{mode}: same file");
                last = now;
                let n: i64 = conn
                    .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(n, i + 1);
                assert_eq!(fingerprint(&db).unwrap(), last, "{mode}: a read moved it");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The pipe's own read, a read-only connection opened and closed, moves
    /// nothing, even as root (SQLite then gives the `-wal` file the database's
    /// owner at every open, which stamps its status-change time).
    #[test]
    fn a_readers_own_open_does_not_move_it() {
        let dir = temp_dir("reader");
        let db = dir.join("ha.db");
        let conn = Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1)")
            .unwrap();
        let before = fingerprint(&db).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        for _ in 0..3 {
            let reader = super::super::open_read_only(&db, std::time::Duration::ZERO).unwrap();
            let n: i64 = reader
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 1);
            drop(reader);
            assert_eq!(fingerprint(&db).unwrap(), before);
        }
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A database swapped in by rename is another file, and anything but a
    /// regular file is refused with what it is.
    #[test]
    fn replaced_and_not_a_file() {
        let dir = temp_dir("replaced");
        let (db, new) = (dir.join("ha.db"), dir.join("new.db"));
        Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t (v)")
            .unwrap();
        Connection::open(&new)
            .unwrap()
            .execute_batch("CREATE TABLE t (v)")
            .unwrap();
        let before = fingerprint(&db).unwrap();
        std::fs::rename(&new, &db).unwrap();
        assert!(fingerprint(&db).unwrap().replaces(&before));
        let err = fingerprint(&dir).unwrap_err();
        assert_eq!(err.to_string(), "a directory, not a database file");
        assert!(matches!(
            fingerprint(&dir.join("missing.db")),
            Err(StoreError::File(FileError::Io(_)))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
