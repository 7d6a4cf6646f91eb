//! The pipe before its database can be read: a missing, unreadable or
//! corrupt database (or key file) at start must not take pdns down
//! (DESIGN.md, "Never take pdns down"). A pipe that exits makes
//! pdns_server exit at start-up, and with it every zone it serves.
//!
//! So the pipe answers `HELO` with `OK`, logs why it cannot serve (with the
//! fix), and tries again before each line, at most every [`RETRY_EVERY`];
//! the first line after a successful open goes to the real backend, with
//! the ABI already negotiated, so no restart of pdns is needed.
//!
//! While waiting, every question is answered with no data (`END`), not
//! `FAIL`. Measured with pdns 4.7.3 (gsqlite3 and pipe in one `launch`):
//! pdns asks every backend for the SOA of every name it is asked, and a
//! `FAIL` there turns *every* zone's answer into SERVFAIL after two
//! `pipe-timeout`s (pdns drains the coprocess, then kills it); a `FAIL` to
//! `ANY` does the same to another backend's zone when the pipe comes first
//! in `launch`. With `END`, the other zones answer as before, and pdns-ha's
//! own zones are REFUSED at once (pdns knows no SOA for them): resolvers
//! treat that as a lame server and ask the next authoritative one. AXFR of
//! a zone the pipe cannot read is `FAIL`: no transfer beats an empty one.

use std::io::{self, BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use log::{error, warn};

use crate::pipe::abi::{self, AbiVersion, Request, MAX_LINE};
use crate::pipe::backend::{banner, read_line, LineRead};
use crate::pipe::store::{Store, StoreError};
use crate::select::Algorithm;
use crate::text::shown;

/// How often the database is tried again: as often as a running pipe
/// checks for a change, so that it serves within a second of `init`.
pub const RETRY_EVERY: Duration = Duration::from_millis(250);

/// While the same problem lasts, it is logged again at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// What the waiting loop hands to the backend once the database opened.
pub struct Opened {
    pub store: Store,
    /// The ABI pdns asked for in `HELO`, if it came while waiting.
    pub abi: Option<AbiVersion>,
    /// The line that arrived when the database opened, with its `\n`: the
    /// backend answers it first.
    pub pending: Vec<u8>,
}

/// Serves pdns without a database until `open` succeeds; `why` is the
/// reason the first try failed, already with its fix. `Ok(None)`: pdns
/// closed stdin before the database could be read.
pub fn serve(
    why: String,
    algorithm: Algorithm,
    open: &mut dyn FnMut() -> Result<Store, String>,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> io::Result<Option<Opened>> {
    let started = Instant::now();
    let mut log = Log::default();
    log.note(started, &why, started);
    let mut why = why;
    let mut abi = None;
    let mut next_try = started + RETRY_EVERY;
    let mut buf = Vec::with_capacity(MAX_LINE + 1);
    loop {
        let read = read_line(input, &mut buf)?;
        if matches!(read, LineRead::Eof) {
            return Ok(None);
        }
        let now = Instant::now();
        if matches!(read, LineRead::Line) && now >= next_try {
            next_try = now + RETRY_EVERY;
            match open() {
                Ok(store) => {
                    warn!(
                        "database {} readable after {:.0?}: serving",
                        store.path().display(),
                        started.elapsed()
                    );
                    buf.push(b'\n');
                    return Ok(Some(Opened {
                        store,
                        abi,
                        pending: buf,
                    }));
                }
                Err(e) => {
                    log.note(now, &e, started);
                    why = e;
                }
            }
        }
        let line = match read {
            LineRead::Line => std::str::from_utf8(&buf).ok(),
            _ => None,
        };
        let line = line.map(|l| l.strip_suffix('\r').unwrap_or(l));
        match line.map(|l| abi::parse(l, abi)) {
            Some(Ok(Request::Helo(v))) => {
                abi = Some(v);
                let note = format!("; not serving yet: {}", shown(&why));
                banner(out, v, algorithm, &note)?;
            }
            Some(Ok(Request::Query(_))) => out.write_all(b"END\n")?,
            Some(Ok(Request::Axfr { .. })) => out.write_all(b"FAIL\n")?,
            Some(Ok(Request::Cmd(_))) => {
                writeln!(out, "not serving: {}", shown(&why))?;
                out.write_all(b"END\n")?;
            }
            Some(Err(e)) => {
                warn!("answered FAIL: {e}");
                out.write_all(b"FAIL\n")?;
            }
            None => {
                warn!("answered FAIL: a line that is too long or not UTF-8");
                out.write_all(b"FAIL\n")?;
            }
        }
        out.flush()?;
    }
}

/// The reason last logged and when, so that one lasting problem makes one
/// line a minute, and a new problem is logged at once.
#[derive(Default)]
struct Log {
    last: Option<(Instant, String)>,
    failed: u64,
}

impl Log {
    fn note(&mut self, now: Instant, why: &str, started: Instant) {
        self.failed += 1;
        match &self.last {
            Some((at, said)) if said == why && now.duration_since(*at) < LOG_EVERY => return,
            Some((_, said)) if said == why => error!(
                "still not serving, for {:.0?} ({} tries): {why}",
                now.duration_since(started),
                self.failed
            ),
            _ => error!(
                "not serving: {why}; every question gets no data (other backends' zones \
                 answer as usual) until it can be read, tried every {RETRY_EVERY:?}"
            ),
        }
        self.last = Some((now, why.to_owned()));
    }
}

/// Who this process runs as, for messages: `pdns (uid 106)` and its group's
/// name.
fn identity() -> (String, String) {
    // SAFETY: getpwuid/getgrgid return a pointer into static storage or
    // null; the pipe is single-threaded, and the strings are copied at once.
    unsafe {
        let (uid, gid) = (libc::geteuid(), libc::getegid());
        let pw = libc::getpwuid(uid);
        let user = match pw.is_null() {
            true => format!("uid {uid}"),
            false => format!(
                "{} (uid {uid})",
                std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy()
            ),
        };
        let gr = libc::getgrgid(gid);
        let group = match gr.is_null() {
            true => format!("{gid}"),
            false => std::ffi::CStr::from_ptr((*gr).gr_name)
                .to_string_lossy()
                .into_owned(),
        };
        (user, group)
    }
}

/// Whether this process may do `mode` (`libc::R_OK`...) on `path`.
fn may(path: &Path, mode: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; access(2) has no other
    // preconditions.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// Turns why the database at `path` could not be opened (`error`, as the
/// store says it) into a sentence that names the fix, by looking at what
/// is on disk and what this process may do there.
pub fn diagnose(path: &Path, error: &StoreError) -> String {
    let (who, group) = identity();
    let p = path.display();
    let said = format!("database {p}: {error}");
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let d = dir.display();
    if std::fs::symlink_metadata(dir).is_err() {
        return format!(
            "directory {d} of database {p} does not exist: fix --db in pipe-command, \
             or create the database with pdns-ha init --db {p}"
        );
    }
    if !may(dir, libc::X_OK) {
        return format!(
            "{who} cannot reach database {p}: directory {d} must be searchable by group \
             {group} (chmod g+x {d})"
        );
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return format!(
                "database {p} does not exist: create it with pdns-ha init --db {p} (as the \
                 monitor's user), or fix --db in pipe-command"
            )
        }
        Ok(m) if m.file_type().is_symlink() && std::fs::metadata(path).is_err() => {
            return format!(
                "database {p} is a symbolic link to a missing file: fix the link or --db in \
                 pipe-command"
            )
        }
        _ => {}
    }
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return format!("{said}: put the database file there, or fix --db in pipe-command");
    }
    if !may(path, libc::R_OK) {
        return format!(
            "{who} cannot read database {p}: it must be readable by group {group} \
             (chgrp {group} {p}; chmod g+r {p})"
        );
    }
    let (wal, shm) = (with_suffix(path, "-wal"), with_suffix(path, "-shm"));
    if wal.exists() && !may(&wal, libc::R_OK) {
        return format!(
            "{who} cannot read {}: it must be readable by group {group}, as the database is \
             (chmod g+r {0})",
            wal.display()
        );
    }
    let wal_mode = is_wal(path);
    if wal_mode && shm.exists() && !may(&shm, libc::R_OK | libc::W_OK) {
        return format!(
            "{who} cannot write {}: readers of a WAL database write its -shm, so it must be \
             writable by group {group} (chmod g+rw {0})",
            shm.display()
        );
    }
    if wal_mode && !shm.exists() && !may(dir, libc::W_OK) {
        return format!(
            "{who} cannot create {}: the directory {d} must be writable by group {group} \
             (chgrp {group} {d}; chmod g+w {d}), because readers of a WAL database create \
             its -shm",
            shm.display()
        );
    }
    if error.is_damaged() {
        return format!(
            "{said}: the file is not an SQLite database or is damaged; restore it from a \
             backup, or move it aside and create it again with pdns-ha init --db {p}"
        );
    }
    said
}

/// Whether the file's header says WAL (bytes 18 and 19 are 2 in WAL mode).
fn is_wal(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 20];
    crate::files::open_regular(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head[18] == 2 && head[19] == 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pdns-ha-wait-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// What `diagnose` says of what `Store::open` found at `path`.
    fn diagnosed(path: &Path) -> String {
        match Store::open(path) {
            Ok(_) => panic!("{} opened", path.display()),
            Err(e) => diagnose(path, &e),
        }
    }

    #[test]
    fn diagnoses_name_the_fix() {
        let d = dir("diag");
        let missing = d.join("ha.db");
        let p = missing.display();
        assert_eq!(
            diagnosed(&missing),
            format!(
                "database {p} does not exist: create it with pdns-ha init --db {p} (as the \
                 monitor's user), or fix --db in pipe-command"
            )
        );
        let nope = d.join("nope/ha.db");
        assert_eq!(
            diagnosed(&nope),
            format!(
                "directory {}/nope of database {} does not exist: fix --db in pipe-command, \
                 or create the database with pdns-ha init --db {1}",
                d.display(),
                nope.display()
            )
        );
        std::fs::create_dir(&missing).unwrap();
        assert_eq!(
            diagnosed(&missing),
            format!(
                "database {p}: a directory, not a database file: put the database file there, \
                 or fix --db in pipe-command"
            )
        );
        std::fs::remove_dir(&missing).unwrap();
        std::fs::write(&missing, "not sqlite, just text long enough for a header").unwrap();
        assert_eq!(
            diagnosed(&missing),
            format!(
                "database {p}: file is not a database: the file is not an SQLite database or is \
                 damaged; restore it from a backup, or move it aside and create it again with \
                 pdns-ha init --db {p}"
            )
        );
        let link = d.join("link.db");
        std::os::unix::fs::symlink(d.join("gone"), &link).unwrap();
        assert_eq!(
            diagnosed(&link),
            format!(
                "database {} is a symbolic link to a missing file: fix the link or --db in \
                 pipe-command",
                link.display()
            )
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn waits_without_failing_then_hands_over_the_line() {
        let d = dir("serve");
        let db = d.join("ha.db");
        let tries = std::cell::Cell::new(0);
        let mut open = || {
            tries.set(tries.get() + 1);
            Store::open(&db).map_err(|e| diagnose(&db, &e))
        };
        let input = "HELO\t5\nQ\texample.com\tIN\tSOA\t-1\t0.0.0.0\t0.0.0.0\t0.0.0.0/0\n\
                     AXFR\t1\texample.com\nCMD\tstatus\nbogus\n";
        let mut out = Vec::new();
        let why = "database x does not exist".to_owned();
        let got = serve(
            why,
            Algorithm::Static,
            &mut open,
            &mut input.as_bytes(),
            &mut out,
        )
        .unwrap();
        assert!(got.is_none(), "end of input while waiting");
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("OK\tpdns-ha "), "{out}");
        assert!(lines[0].ends_with("; not serving yet: database x does not exist"));
        assert_eq!(lines[1..3], ["END", "FAIL"], "{out}");
        assert!(lines[3].starts_with("not serving: "), "{out}");
        assert_eq!(lines[4..], ["END", "FAIL"], "{out}");

        // The database appears: the next line after RETRY_EVERY opens it and
        // goes to the backend, with the ABI already negotiated.
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(include_str!("../../sql/schema.sql"))
            .unwrap();
        drop(c);
        /// Lines one per read; the second and later RETRY_EVERY apart, as
        /// pdns asks a while after its HELO.
        struct Slow<'a>(&'a [u8], bool);
        impl std::io::Read for Slow<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.1 {
                    std::thread::sleep(RETRY_EVERY);
                }
                self.1 = true;
                let n = self.0.iter().position(|&b| b == b'\n');
                let n = n.map_or(self.0.len(), |i| i + 1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let lines = b"HELO\t3\nQ\tx\tIN\tA\t1\t127.0.0.1\t127.0.0.1\t127.0.0.1/32\nrest\n";
        let mut input = io::BufReader::new(Slow(lines, false));
        let mut out = Vec::new();
        let w = serve(
            "x".into(),
            Algorithm::Static,
            &mut open,
            &mut input,
            &mut out,
        )
        .unwrap()
        .expect("opened");
        // The HELO normally comes before RETRY_EVERY has passed, so the
        // open happens on the question after it; a machine that stalls
        // longer hands the HELO itself to the backend, which is right too.
        match w.abi {
            Some(abi) => {
                assert_eq!(abi, AbiVersion::V3);
                assert!(w.pending.starts_with(b"Q\tx\tIN\tA"), "{:?}", w.pending);
                assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
            }
            None => assert!(w.pending.starts_with(b"HELO\t3"), "{:?}", w.pending),
        }
        assert!(w.pending.ends_with(b"\n"));
        assert!(tries.get() >= 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn one_line_a_minute_for_one_problem() {
        let t0 = Instant::now();
        let mut log = Log::default();
        log.note(t0, "a", t0);
        log.note(t0 + Duration::from_secs(1), "a", t0);
        assert_eq!(log.last.as_ref().unwrap().0, t0, "not logged again");
        log.note(t0 + Duration::from_secs(2), "b", t0);
        assert_eq!(log.last.as_ref().unwrap().0, t0 + Duration::from_secs(2));
        log.note(t0 + Duration::from_secs(63), "b", t0);
        assert_eq!(log.last.as_ref().unwrap().0, t0 + Duration::from_secs(63));
        assert_eq!(log.failed, 4);
    }
}
