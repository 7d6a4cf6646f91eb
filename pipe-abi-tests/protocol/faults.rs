//! Bad input and faults at the pipe level: garbage, start-up errors, a
//! closed stdout, and a database that changes, vanishes, locks or rots while
//! the pipe runs.

use std::io::Write;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::pdns::TempDir;
use crate::util::{fixture_db, init_db, run_pipe, Pipe, BIN};

/// pdns's default `pipe-timeout`: an answer slower than this gets the
/// coprocess killed and the client a SERVFAIL.
const PIPE_TIMEOUT: Duration = Duration::from_millis(2000);

/// How long a test waits for a database change to show. The contract is one
/// second; the margin absorbs a loaded CI machine.
const CHANGE_DEADLINE: Duration = Duration::from_secs(3);

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn garbage_line(rng: &mut Rng) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        b"Q",
        b"AXFR",
        b"CMD",
        b"HELO",
        b"DATA",
        b"END",
        b"\t",
        b"\t\t",
        b"IN",
        b"ANY",
        b"SOA",
        b"-1",
        b"1",
        b"99999999999999999999",
        b"127.0.0.1",
        b"::1",
        b"0.0.0.0/0",
        b"/33",
        b"example.com",
        b"_sip._udp.example.com",
        b"*",
        b".",
        b" ",
        b"\r",
        b"\xff\xfe",
        b"\xc3",
        b"\xe2\x82\xac",
        b"%",
        b"'",
        b"\"",
        b"\\",
        b"\0",
    ];
    let mut line = Vec::new();
    match rng.below(10) {
        // Long lines, some far over the cap.
        0 => line.resize(rng.below(10_000), b'a' + rng.below(26) as u8),
        // Random bytes.
        1 => (0..rng.below(300)).for_each(|_| line.push(rng.next() as u8)),
        _ => {
            (0..rng.below(12)).for_each(|_| line.extend_from_slice(PIECES[rng.below(PIECES.len())]))
        }
    }
    line.retain(|&b| b != b'\n');
    line
}

/// Counts the answers in pipe output: every answer ends with END, FAIL or
/// an OK banner, so terminators and questions must match one to one.
fn terminators(stdout: &[u8]) -> usize {
    stdout
        .split(|&b| b == b'\n')
        .filter(|l| *l == b"END" || *l == b"FAIL" || l.starts_with(b"OK\t"))
        .count()
}

#[test]
fn garbage_gets_exactly_one_answer_per_line() {
    for abi in 1..=5 {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ abi);
        let mut input = format!("HELO\t{abi}\n").into_bytes();
        let mut lines = 1;
        for i in 0..3000 {
            if i % 10 == 0 {
                // Valid questions among the garbage must still be answered.
                input.extend_from_slice(b"Q\twww.example.com\tIN\tA\t1\t127.0.0.1");
                input.extend_from_slice(match abi {
                    1 => &b"\n"[..],
                    2 => b"\t127.0.0.1\n",
                    _ => b"\t127.0.0.1\t127.0.0.1/32\n",
                });
            } else {
                input.extend(garbage_line(&mut rng));
                input.push(b'\n');
            }
            lines += 1;
        }
        let out = run_pipe(fixture_db(), &[], input);
        assert!(out.status.success(), "ABI {abi}: exit {:?}", out.status);
        assert_eq!(
            terminators(&out.stdout),
            lines,
            "ABI {abi}: one answer per line"
        );
        let answered = String::from_utf8_lossy(&out.stdout)
            .matches("\t192.0.2.80\n")
            .count();
        assert_eq!(answered, 300, "ABI {abi}: every valid question answered");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "ABI {abi}: {stderr}");
    }
}

#[test]
fn last_line_without_newline_is_answered() {
    let out = run_pipe(
        fixture_db(),
        &[],
        b"HELO\t1\nQ\twww.example.com\tIN\tA\t1\t127.0.0.1".to_vec(),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.ends_with("192.0.2.80\nEND\n"), "{text}");
    assert!(out.status.success());
}

#[test]
fn bad_lines_are_logged_with_the_reason() {
    let out = run_pipe(
        fixture_db(),
        &[],
        b"HELO\t1\nHELO\t9\nQ\tx\tIN\tA\tone\t127.0.0.1\n".to_vec(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unsupported pipe ABI version \"9\""),
        "{stderr}"
    );
    assert!(stderr.contains("bad id \"one\""), "{stderr}");
}

#[test]
fn cmd_status_reports_the_backend() {
    let mut p = Pipe::start(fixture_db(), &[]);
    p.ask("HELO\t5");
    p.ask("Q\twww.example.com\tIN\tA\t1\t127.0.0.1\t127.0.0.1\t127.0.0.1/32");
    p.ask("Q\tnope.example.com\tIN\tA\t1\t127.0.0.1\t127.0.0.1\t127.0.0.1/32");
    let status = p.ask("CMD\tstatus").join("\n");
    for want in [
        &format!("database: {}", fixture_db().display()),
        "algorithm: static",
        "3 zones, 39 records",
        "lookups: 2 (1 with data, 1 empty)",
    ] {
        assert!(status.contains(want), "{want:?} not in:\n{status}");
    }
    assert!(status.ends_with("END"));
    assert!(p.finish().success());
}

fn stderr_of(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A database that cannot be read at start is no reason to exit (pdns
/// would exit with the pipe): the pipe says why, with the fix, and ends
/// cleanly when pdns closes its input.
#[test]
fn start_up_errors_name_the_problem() {
    let dir = TempDir::new("startup");
    let missing = dir.path().join("missing.db");
    let (ok, err) = stderr_of(&["--db", missing.to_str().unwrap()]);
    assert!(
        ok && err.contains(&format!("database {} does not exist", missing.display()))
            && err.contains("pdns-ha init --db"),
        "{err}"
    );

    let not_db = dir.path().join("not.db");
    std::fs::write(
        &not_db,
        "this is not sqlite at all, just text that is long enough",
    )
    .unwrap();
    let (ok, err) = stderr_of(&["--db", not_db.to_str().unwrap()]);
    assert!(
        ok && err.contains(not_db.to_str().unwrap())
            && err.contains("not a database")
            && err.contains("restore it from a backup"),
        "{err}"
    );

    let empty = dir.path().join("empty.db");
    Connection::open(&empty)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let (ok, err) = stderr_of(&["--db", empty.to_str().unwrap()]);
    assert!(ok && err.contains("pdns-ha init"), "{err}");

    let (ok, err) = stderr_of(&["--db", "x.db", "--algorithm", "fastest"]);
    assert!(
        !ok && err.contains("unknown algorithm \"fastest\""),
        "{err}"
    );
    let (ok, err) = stderr_of(&["--db", "x.db", "--colour", "blue"]);
    assert!(
        !ok && err.contains("unexpected argument '--colour'"),
        "{err}"
    );
    let (ok, err) = stderr_of(&["--algorithm", "static"]);
    assert!(
        !ok && err.contains("required") && err.contains("--db <PATH>"),
        "{err}"
    );
}

#[test]
fn closed_stdout_ends_quietly() {
    let mut child = Command::new(BIN)
        .args(["--db", fixture_db().to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"HELO\t1\n");
    for _ in 0..100 {
        if stdin
            .write_all(b"Q\twww.example.com\tIN\tA\t1\t127.0.0.1\n")
            .is_err()
        {
            break;
        }
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Polls until `query` gives `want` or the deadline passes.
fn wait_for(p: &mut Pipe, name: &str, want: usize) -> Duration {
    let start = Instant::now();
    loop {
        let got = p.query(name, "A").len();
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < CHANGE_DEADLINE,
            "{name}: still {got} records after {CHANGE_DEADLINE:?}, want {want}"
        );
        sleep(Duration::from_millis(50));
    }
}

fn add_a(db: &std::path::Path, name: &str, addr: &str) {
    Connection::open(db)
        .unwrap()
        .execute(
            "INSERT INTO records (domain_id, name, type, content, ttl) \
             SELECT id, ?1, 'A', ?2, 60 FROM domains WHERE name = 'example.com'",
            [name, addr],
        )
        .unwrap();
}

/// Puts a good database (the example plus fresh.example.com) at `db`'s
/// path, as an operator would with `mv`, and waits for the pipe to serve it.
fn replace_and_wait(dir: &TempDir, db: &std::path::Path, p: &mut Pipe) {
    let fresh = dir.path().join("fresh.db");
    init_db(&fresh, &["sql/example.sql"]);
    add_a(&fresh, "fresh.example.com", "192.0.2.201");
    std::fs::rename(&fresh, db).unwrap();
    wait_for(p, "fresh.example.com", 1);
}

fn started(tag: &str) -> (TempDir, std::path::PathBuf, Pipe) {
    started_with(tag, "WAL")
}

fn started_with(tag: &str, journal_mode: &str) -> (TempDir, std::path::PathBuf, Pipe) {
    let dir = TempDir::new(tag);
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    Connection::open(&db)
        .unwrap()
        .pragma_update(None, "journal_mode", journal_mode)
        .unwrap();
    let mut p = Pipe::start(&db, &[]);
    p.ask("HELO\t1");
    assert_eq!(p.query("www.example.com", "A").len(), 1);
    (dir, db, p)
}

#[test]
fn operator_changes_are_served_without_restart() {
    let (_dir, db, mut p) = started("change");
    add_a(&db, "new.example.com", "192.0.2.200");
    let took = wait_for(&mut p, "new.example.com", 1);
    eprintln!("insert visible after {took:?}");
    Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM records WHERE name = 'new.example.com'", [])
        .unwrap();
    wait_for(&mut p, "new.example.com", 0);
    assert!(p.finish().success());
}

#[test]
fn deleted_database_keeps_answering_and_comes_back() {
    let (dir, db, mut p) = started("deleted");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    for _ in 0..10 {
        assert_eq!(p.query("www.example.com", "A").len(), 1, "last good data");
        sleep(Duration::from_millis(60));
    }
    // A new file at the same path is picked up by itself.
    replace_and_wait(&dir, &db, &mut p);
    assert!(p.finish().success());
}

#[test]
fn corrupt_or_truncated_database_keeps_answering() {
    for damage in ["corrupt", "truncate"] {
        let (dir, db, mut p) = started(damage);
        // Folded into the main file first, so the damage is not masked by
        // a WAL that still holds good pages.
        Connection::open(&db)
            .unwrap()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        let len = std::fs::metadata(&db).unwrap().len() as usize;
        let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        match damage {
            "corrupt" => std::os::unix::fs::FileExt::write_all_at(&f, &vec![0x5a; len], 0).unwrap(),
            _ => f.set_len(0).unwrap(),
        }
        drop(f);
        for _ in 0..10 {
            let t = Instant::now();
            assert_eq!(
                p.query("www.example.com", "A").len(),
                1,
                "{damage}: last good data"
            );
            assert!(t.elapsed() < PIPE_TIMEOUT);
            sleep(Duration::from_millis(60));
        }
        replace_and_wait(&dir, &db, &mut p);
        assert!(p.finish().success());
    }
}

#[test]
fn locked_database_never_makes_a_lookup_wait() {
    let (_dir, db, mut p) = started_with("locked", "DELETE");
    // A rollback-journal database held under an exclusive lock is the worst
    // case: readers cannot even read the header until the writer commits.
    let writer = Connection::open(&db).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE").unwrap();
    writer
        .execute(
            "INSERT INTO records (domain_id, name, type, content, ttl) VALUES (1, 'late.example.com', 'A', '192.0.2.202', 60)",
            [],
        )
        .unwrap();
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(p.query("www.example.com", "A").len(), 1);
        assert!(
            t.elapsed() < PIPE_TIMEOUT,
            "a lookup waited {:?} on the lock",
            t.elapsed()
        );
        assert_eq!(
            p.query("late.example.com", "A").len(),
            0,
            "uncommitted data is not served"
        );
        sleep(Duration::from_millis(60));
    }
    writer.execute_batch("COMMIT").unwrap();
    wait_for(&mut p, "late.example.com", 1);
    assert!(p.finish().success());
}
