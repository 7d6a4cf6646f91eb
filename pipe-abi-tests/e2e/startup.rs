//! A pipe whose database cannot be read at start keeps pdns up (DESIGN.md,
//! "Never take pdns down"): pdns_server starts, other backends' zones
//! answer, and pdns-ha's zones are served once the database appears, with
//! no restart of pdns. Errors name the fix.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::pdns::{require, Backend, Pdns, TempDir};
use crate::util::{init_db, BIN};

/// A gsqlite3 zone served by the same pdns: it must not notice the pipe's
/// trouble.
fn other_zone(db: &Path) {
    let c = Connection::open(db).unwrap();
    c.execute_batch(include_str!("../../sql/schema.sql"))
        .unwrap();
    c.execute_batch(
        "INSERT INTO domains (id, name, type) VALUES (7, 'other.test', 'NATIVE');
         INSERT INTO records (domain_id, name, type, content, ttl) VALUES
           (7, 'other.test', 'SOA', 'ns.other.test. host.other.test. 1 3600 600 86400 60', 60),
           (7, 'www.other.test', 'A', '192.0.2.7', 60);",
    )
    .unwrap();
}

#[test]
fn pdns_stays_up_without_the_database_and_serves_it_after_init() {
    if !(require("pdns_server") && require("dig")) {
        return;
    }
    let dir = TempDir::new("startup-pdns");
    let (db, other) = (dir.path().join("ha.db"), dir.path().join("other.db"));
    other_zone(&other);
    let command = format!("{BIN} --db {} --algorithm least-latency", db.display());
    // The pipe first in launch: pdns then asks it every question before
    // gsqlite3, so any FAIL from it would reach the other zone.
    let pdns = Pdns::options(Backend::Pipe { command, abi: 3 })
        .setting("launch", "pipe,gsqlite3")
        .setting("gsqlite3-database", other.to_str().unwrap())
        .start();
    let other_answers = |when: &str| {
        let r = pdns.dig(&["www.other.test", "A"]);
        assert_eq!(
            (r.status(), r.answer().len()),
            (Some("NOERROR"), 1),
            "{when}: the gsqlite3 zone must answer\n{}",
            pdns.log_tail(40)
        );
        assert!(r.answer()[0].ends_with("192.0.2.7"), "{:?}", r.answer());
    };
    other_answers("without the pipe's database");
    let r = pdns.dig(&["www.example.com", "A"]);
    assert_eq!(r.status(), Some("REFUSED"), "{}", pdns.log_tail(40));

    init_db(&db, &["sql/example.sql"]);
    let t = Instant::now();
    loop {
        let r = pdns.dig(&["www.example.com", "A"]);
        if r.status() == Some("NOERROR") && r.answer().iter().any(|a| a.ends_with("192.0.2.80")) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "not served after init: {:?}\n{}",
            r.answer(),
            pdns.log_tail(60)
        );
        sleep(Duration::from_millis(100));
    }
    eprintln!("served {:?} after init", t.elapsed());
    other_answers("with the pipe's database");
    let log = pdns.log();
    for want in [
        "does not exist: create it with pdns-ha init --db",
        "readable after",
    ] {
        assert!(log.contains(want), "{want:?} not in the log:\n{log}");
    }
    // Once per coprocess (3 here: UDP, TCP and the one pdns starts first):
    // a pipe that pdns killed and respawned at every question would log
    // the problem once per question, and the digs here ask dozens.
    let said = log.matches("not serving: database").count();
    eprintln!("the reason was logged {said} times");
    assert!((1..=6).contains(&said), "logged {said} times:\n{log}");
}

/// The pipe alone, run as `nobody` when the test runs as root (root may
/// read anything, so nothing would be refused).
fn pipe_as_unprivileged(bin: &Path, db: &Path) -> (String, String) {
    let mut cmd = Command::new(bin);
    cmd.arg("--db")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::geteuid() == 0 && (libc::setgid(65534) != 0 || libc::setuid(65534) != 0) {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(
        &mut stdin,
        b"HELO\t3\nQ\twww.example.com\tIN\tA\t-1\t127.0.0.1\t127.0.0.1\t127.0.0.1/32\n",
    )
    .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn permission_problems_name_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    let top = TempDir::new("startup-perm");
    mode(top.path(), 0o755).unwrap();
    // nobody may not reach the build's own binary (a checkout under a 0700
    // directory): a copy in the test's directory.
    let bin = top.path().join("pdns-ha");
    std::fs::copy(BIN, &bin).unwrap();
    mode(&bin, 0o755).unwrap();
    let dir = top.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    let db = dir.join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    // What the package's first version did: the directory not writable by
    // the pipe's user, so SQLite cannot create the WAL index (-shm).
    mode(&dir, 0o555).unwrap();
    let (out, log) = pipe_as_unprivileged(&bin, &db);
    let restore = mode(&dir, 0o755);
    let want = format!("cannot create {}-shm: the directory", db.display());
    assert!(
        log.contains(&want) && log.contains("must be writable by group"),
        "{log}"
    );
    assert!(out.starts_with("OK\t") && out.ends_with("\nEND\n"), "{out}");
    restore.unwrap();
    mode(&db, 0o600).unwrap();
    if unsafe { libc::geteuid() } == 0 {
        // Owned by root: nobody reads it only through the mode.
        let (_, log) = pipe_as_unprivileged(&bin, &db);
        assert!(
            log.contains("cannot read database") && log.contains("chmod g+r"),
            "{log}"
        );
    } else {
        mode(&db, 0o000).unwrap();
        let (_, log) = pipe_as_unprivileged(&bin, &db);
        assert!(log.contains("cannot read database"), "{log}");
    }
}
