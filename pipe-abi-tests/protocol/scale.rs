//! Large zones and frequent readings (issue 10): a database too large to
//! hold whole is read per name, and readings written several times a second
//! never make a pipe re-read the zones, whole or per name. The counters of
//! `CMD status` say what the pipe read; times are printed, not asserted
//! (benchmarks measure them: `bench/run.sh`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pdns_ha::state::reading::Source;
use pdns_ha::state::writer::Writer;
use rusqlite::Connection;

use crate::pdns::TempDir;
use crate::util::{fixture_db, init_db, Pipe};

/// More than `zone::WHOLE_LIMIT`, so the database is read per name.
const LARGE: u32 = 100_000;

/// `h0.big.example` .. `hN.big.example`, one A record each, in a zone of
/// their own, written in one transaction.
fn add_large_zone(db: &Path, n: u32) {
    let conn = Connection::open(db).unwrap();
    conn.execute_batch(&format!(
        "BEGIN;
         INSERT INTO domains (name, type) VALUES ('big.example', 'NATIVE');
         INSERT INTO records (domain_id, name, type, content, ttl)
         SELECT d.id, 'big.example', 'SOA', 'ns1.big.example. h.big.example. 1 2 3 4 5', 300
         FROM domains d WHERE d.name = 'big.example';
         WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < {last})
         INSERT INTO records (domain_id, name, type, content, ttl)
         SELECT d.id, 'h' || n || '.big.example', 'A',
                '10.' || (n / 65536) || '.' || (n / 256 % 256) || '.' || (n % 256), 300
         FROM i, domains d WHERE d.name = 'big.example';
         COMMIT;",
        last = n - 1
    ))
    .unwrap();
}

/// The `CMD status` counter `name`.
fn counter(p: &mut Pipe, name: &str) -> u64 {
    let status = p.ask("CMD\tstatus").join("\n");
    let at = status
        .find(&format!("{name}: "))
        .unwrap_or_else(|| panic!("no {name:?} in:\n{status}"));
    status[at + name.len() + 2..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The DATA lines of an answer to `Q name IN qtype` in ABI 5 format (the
/// tests need CMD, which is ABI 5 only).
fn query(p: &mut Pipe, name: &str, qtype: &str) -> Vec<String> {
    let mut a = p.ask(&format!(
        "Q\t{name}\tIN\t{qtype}\t-1\t127.0.0.1\t127.0.0.1\t127.0.0.1/32"
    ));
    assert_eq!(a.pop().as_deref(), Some("END"), "answer to {name} {qtype}");
    a
}

/// How many KiB of SQLite's own region (`pipe::lean`: an anonymous read-write mapping of
/// `SQLITE_HEAP_BYTES`) are resident in process `pid`; `None` without such a mapping.
fn sqlite_region_kib(pid: u32) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut in_region = false;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let Some((low, high)) = fields.first().and_then(|r| r.split_once('-')) {
            if let (Ok(low), Ok(high)) = (
                usize::from_str_radix(low, 16),
                usize::from_str_radix(high, 16),
            ) {
                in_region = high - low == pdns_ha::pipe::lean::SQLITE_HEAP_BYTES
                    && fields.get(1) == Some(&"rw-p")
                    && fields.len() == 5;
                continue;
            }
        }
        if in_region && fields.first() == Some(&"Rss:") {
            return Some(fields[1].parse().unwrap());
        }
    }
    None
}

/// Writes a latency reading every `every` until stopped, as a monitor does.
fn writing_readings(db: &Path, every: Duration) -> (Arc<AtomicBool>, thread::JoinHandle<u32>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (db, flag) = (db.to_owned(), stop.clone());
    let writer = thread::spawn(move || {
        let w = Writer::open(&db, None).unwrap();
        let mut n = 0;
        while !flag.load(Ordering::Relaxed) && n < 200 {
            w.latency(
                "*",
                "sip1.example.com",
                Source::Monitor,
                10.0 + f64::from(n % 7),
                None,
            )
            .unwrap();
            n += 1;
            thread::sleep(every);
        }
        n
    });
    (stop, writer)
}

/// Asks `name` for `dur`, returning the slowest answer.
fn ask_for(p: &mut Pipe, name: &str, dur: Duration) -> Duration {
    let mut worst = Duration::ZERO;
    let until = Instant::now() + dur;
    while Instant::now() < until {
        let t = Instant::now();
        assert!(!query(p, name, "ANY").is_empty(), "{name}");
        worst = worst.max(t.elapsed());
        thread::sleep(Duration::from_millis(5));
    }
    worst
}

#[test]
fn readings_never_reload_the_zones_held_whole() {
    let dir = TempDir::new("scale-whole");
    let db = dir.path().join("ha.db");
    std::fs::copy(fixture_db(), &db).unwrap();
    let mut p = Pipe::start(&db, &["--algorithm", "least-latency"]);
    p.ask("HELO\t5");
    let (stop, writer) = writing_readings(&db, Duration::from_millis(100));
    let worst = ask_for(&mut p, "www.example.com", Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    thread::sleep(Duration::from_millis(400));
    query(&mut p, "www.example.com", "A");
    let (zones, readings) = (
        counter(&mut p, "zone loads"),
        counter(&mut p, "reading loads"),
    );
    eprintln!(
        "whole: {written} readings written, {readings} reading loads, worst lookup {worst:?}"
    );
    assert_eq!(zones, 1, "a reading made the pipe re-read the zones");
    assert!(readings >= 5, "readings were not re-read: {readings}");
    // Every read went through SQLite's own region, and each gave all of it back.
    assert_eq!(sqlite_region_kib(p.pid()), Some(0));
}

#[test]
fn a_large_database_is_read_per_name_without_stalls() {
    let dir = TempDir::new("scale-large");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    add_large_zone(&db, LARGE);
    let started = Instant::now();
    let mut p = Pipe::start(&db, &["--algorithm", "least-latency"]);
    p.ask("HELO\t5");
    eprintln!("start-up on {LARGE} records: {:?}", started.elapsed());
    let status = p.ask("CMD\tstatus").join("\n");
    assert!(status.contains("read per name"), "{status}");
    // The connection kept for hours is on the process heap, which gives back page by page.
    assert_eq!(
        sqlite_region_kib(p.pid()),
        None,
        "SQLite's region is still mapped"
    );
    // Read per name, the connection stays open, and read-only.
    assert_eq!(
        crate::e2e::reliability::db_access_mode(p.pid(), &db),
        Some(libc::O_RDONLY as u32)
    );

    // Hits, misses (cached as absent), any case, and the example's ranked SRV.
    assert_eq!(
        query(&mut p, "h4242.big.example", "A"),
        ["DATA\t0\t1\th4242.big.example\tIN\tA\t300\t2\t10.0.16.146"]
    );
    assert_eq!(query(&mut p, "H4242.Big.Example", "ANY").len(), 1);
    assert!(query(&mut p, "nothing.big.example", "ANY").is_empty());
    assert!(query(&mut p, "nothing.big.example", "ANY").is_empty());
    assert_eq!(query(&mut p, "big.example", "SOA").len(), 1);
    assert!(
        query(&mut p, "h1.big.example", "SOA").is_empty(),
        "SOA only at the apex"
    );
    assert_eq!(query(&mut p, "_sip._udp.example.com", "SRV").len(), 8);
    assert_eq!(counter(&mut p, "names read"), 5, "each name read once");

    // AXFR streams the zone from the database.
    let axfr = p.ask("AXFR\t2\tbig.example");
    assert_eq!(axfr.len(), LARGE as usize + 2, "SOA, every A, END");

    // Readings ten times a second: the zones are never dropped.
    let (stop, writer) = writing_readings(&db, Duration::from_millis(100));
    let worst = ask_for(&mut p, "h77.big.example", Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    thread::sleep(Duration::from_millis(400));
    query(&mut p, "h77.big.example", "A");
    let zones = counter(&mut p, "zone loads");
    eprintln!("per name: {written} readings written, worst lookup {worst:?}");
    assert_eq!(zones, 1, "a reading made the pipe drop the zones");
    assert!(counter(&mut p, "reading loads") >= 5);

    // An operator's edit is served within a second.
    Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE records SET content = '192.0.2.77' WHERE name = 'h77.big.example'",
            [],
        )
        .unwrap();
    let edited = Instant::now();
    let mut seen = false;
    while edited.elapsed() < Duration::from_secs(3) && !seen {
        seen = query(&mut p, "h77.big.example", "A")[0].ends_with("192.0.2.77");
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("edit served after {:?}", edited.elapsed());
    assert!(seen, "the edit was not served within 3 s");
    assert_eq!(counter(&mut p, "zone loads"), 2);
    assert!(p.finish().success());
}

#[test]
fn a_large_database_deleted_keeps_answering_through_the_open_file() {
    let dir = TempDir::new("scale-deleted");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    add_large_zone(&db, LARGE);
    let mut p = Pipe::start(&db, &[]);
    p.ask("HELO\t5");
    std::fs::remove_file(&db).unwrap();
    thread::sleep(Duration::from_millis(400));
    // Never asked before the delete: read through the still-open file.
    assert_eq!(query(&mut p, "h99.big.example", "A").len(), 1);
    assert!(p.finish().success());
}
