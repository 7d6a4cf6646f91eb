//! Paths that must name a regular file: the database (and its `-wal` and
//! `-shm` companions) and the memcached key file. Anything else swapped in
//! at the path is refused before it is opened for real: a FIFO would block
//! SQLite's `open(2)` forever (the pipe would hang until pdns kills it,
//! then hang again in the next coprocess), a device node could have side
//! effects on open, a directory is never a database.
//!
//! The check is `stat(2)` first (never blocks, opens nothing), then an
//! `open(2)` with `O_NONBLOCK | O_NOCTTY` and an `fstat(2)` of what was
//! actually opened, in case the path changed in between. SQLite then opens
//! the path itself (it has no way to take our descriptor), so a swap in the
//! microseconds between our check and its open is not covered; only
//! someone who can write the database's directory can make one, and that
//! is the operator.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a path cannot be opened as a database (or key file). The I/O error is part of the
/// message, not a `source`: the pipe logs these with `{}`, and `{:#}` would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path itself could not be looked at or opened; the caller names it.
    #[error("{0}")]
    Io(io::Error),
    /// A `-wal` or `-shm` beside the database could not be; named, as the caller names
    /// only the database.
    #[error("{}: {error}", path.display())]
    Companion { path: PathBuf, error: io::Error },
    /// A FIFO, device, directory or socket where a regular file belongs.
    #[error("{} is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    /// A companion that is a symbolic link to nothing: SQLite would say only "No such file"
    /// of the database itself.
    #[error("{} is a symbolic link to nothing (dangling); remove it", path.display())]
    Dangling { path: PathBuf },
    /// `init` refuses a link: a dangling one would have SQLite create its target.
    #[error("{} is a symbolic link; give init the real path", path.display())]
    Link { path: PathBuf },
}

/// `open_regular`'s callers read the file next, so they take one `io::Error` for both.
impl From<FileError> for io::Error {
    fn from(e: FileError) -> Self {
        match e {
            FileError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidInput, other),
        }
    }
}

/// What a path holds, in words for an error message.
pub(crate) fn kind(m: &Metadata) -> &'static str {
    let t = m.file_type();
    match () {
        _ if t.is_dir() => "a directory",
        _ if t.is_fifo() => "a FIFO",
        _ if t.is_char_device() => "a character device",
        _ if t.is_block_device() => "a block device",
        _ if t.is_socket() => "a socket",
        _ if t.is_symlink() => "a symbolic link",
        _ => "not a regular file",
    }
}

/// Opens `path` for reading if it is a regular file or a symbolic link to
/// one, without ever blocking. The error says what is there instead.
pub fn open_regular(path: &Path) -> io::Result<File> {
    Ok(regular(path)?)
}

fn regular(path: &Path) -> Result<File, FileError> {
    let refuse = |m: &Metadata| FileError::NotRegular {
        path: path.to_owned(),
        kind: kind(m),
    };
    let m = std::fs::metadata(path).map_err(FileError::Io)?;
    if !m.is_file() {
        return Err(refuse(&m));
    }
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(FileError::Io)?;
    let m = f.metadata().map_err(FileError::Io)?;
    match m.is_file() {
        true => Ok(f),
        false => Err(refuse(&m)),
    }
}

/// Checks that a SQLite database at `path` can be opened without
/// blocking: the file is regular, and so are its `-wal` and `-shm`
/// companions where they exist (SQLite opens those too).
pub fn check_database(path: &Path) -> Result<(), FileError> {
    regular(path)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = PathBuf::from(side);
        let companion = |error| FileError::Companion {
            path: side.clone(),
            error,
        };
        match std::fs::symlink_metadata(&side) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(companion(e)),
            // SQLite would follow it, fail, and say only "No such file"
            // of the database itself: name the file that is wrong.
            Ok(m) if m.file_type().is_symlink() && std::fs::metadata(&side).is_err() => {
                return Err(FileError::Dangling { path: side })
            }
            Ok(_) => match regular(&side) {
                Err(FileError::Io(e)) => return Err(companion(e)),
                Err(e) => return Err(e),
                Ok(_) => {}
            },
        }
    }
    Ok(())
}

/// For `init`, which creates the file: the path must be absent or a
/// regular file, and not a symbolic link (a dangling one would make
/// SQLite create its target, wherever it points).
pub fn check_new_database(path: &Path) -> Result<(), FileError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileError::Io(e)),
        Ok(m) if m.file_type().is_symlink() => Err(FileError::Link {
            path: path.to_owned(),
        }),
        Ok(m) if !m.is_file() => Err(FileError::NotRegular {
            path: path.to_owned(),
            kind: kind(&m),
        }),
        Ok(_) => check_database(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::time::{Duration, Instant};

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pdns-ha-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// What `NotRegular` says is there instead.
    fn found(e: FileError) -> &'static str {
        match e {
            FileError::NotRegular { kind, .. } => kind,
            other => panic!("{other}"),
        }
    }

    fn mkfifo(p: &Path) {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn only_regular_files_and_never_blocking() {
        let d = dir("regular");
        let file = d.join("ha.db");
        std::fs::write(&file, b"x").unwrap();
        assert!(check_database(&file).is_ok());
        let link = d.join("link.db");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(check_database(&link).is_ok(), "a symlink to a file is fine");

        let fifo = d.join("fifo.db");
        mkfifo(&fifo);
        let t = Instant::now();
        let e = check_database(&fifo).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(
            e.to_string(),
            format!("{} is a FIFO, not a regular file", fifo.display())
        );
        let e = check_database(Path::new("/dev/null")).unwrap_err();
        assert_eq!(found(e), "a character device");
        assert_eq!(found(check_database(&d).unwrap_err()), "a directory");
        let e = check_database(&d.join("missing")).unwrap_err();
        assert!(matches!(e, FileError::Io(ref e) if e.kind() == io::ErrorKind::NotFound));

        // A FIFO posing as the WAL would block SQLite just the same.
        let wal = d.join("ha.db-wal");
        mkfifo(&wal);
        let e = check_database(&file).unwrap_err();
        assert!(matches!(e, FileError::NotRegular { ref path, kind: "a FIFO" } if *path == wal));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn init_refuses_links_and_odd_files() {
        let d = dir("new");
        assert!(check_new_database(&d.join("new.db")).is_ok());
        let dangling = d.join("dangling.db");
        std::os::unix::fs::symlink(d.join("elsewhere.db"), &dangling).unwrap();
        let e = check_new_database(&dangling).unwrap_err();
        assert!(matches!(e, FileError::Link { .. }), "{e}");
        assert!(!d.join("elsewhere.db").exists());
        let fifo = d.join("fifo.db");
        mkfifo(&fifo);
        assert_eq!(found(check_new_database(&fifo).unwrap_err()), "a FIFO");
        assert_eq!(found(check_new_database(&d).unwrap_err()), "a directory");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
