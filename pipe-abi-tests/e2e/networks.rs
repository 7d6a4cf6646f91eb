//! Thousands of known networks (issue 22): a change costs the rows it
//! changed, and memcached is asked for the networks a pipe answers, not
//! for every one that exists. Counts are asserted (the pipe's `CMD status`
//! counters and memcached's own `stats`), never times: those are measured
//! by `bench/run.sh --only networks`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use pdns_ha::state::reading::Source;
use pdns_ha::state::writer::Writer;
use rusqlite::Connection;

use crate::e2e::memcached::Memcached;
use crate::pdns::{require, TempDir};
use crate::util::{init_db, Pipe};

const TARGETS: u32 = 8;

/// `10.A.B.0/24` for network `i`.
fn cidr(i: u32) -> String {
    format!("10.{}.{}.0/24", i / 256, i % 256)
}

/// The example plus `n` networks, each with an `observe` latency reading
/// for every target (the slower the higher the target's number), written
/// in one transaction as `observe` writes a round.
fn with_networks(db: &Path, n: u32) {
    init_db(db, &["sql/example.sql"]);
    let conn = Connection::open(db).unwrap();
    conn.execute_batch(&format!(
        "WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < {})
         INSERT INTO ha_networks (cidr, name)
         SELECT '10.' || (n / 256) || '.' || (n % 256) || '.0/24', 'site' || n FROM i",
        n - 1
    ))
    .unwrap();
    let w = Writer::open(db, None).unwrap();
    let started = Instant::now();
    w.transaction(|w| {
        for i in 0..n {
            for t in 1..=TARGETS {
                let target = format!("sip{t}.example.com");
                w.latency(
                    &cidr(i),
                    &target,
                    Source::Observe,
                    f64::from(t * 10),
                    Some(5),
                )?;
            }
        }
        Ok(())
    })
    .unwrap();
    eprintln!(
        "{} readings written in one transaction in {:?}",
        n * TARGETS,
        started.elapsed()
    );
}

/// The `CMD status` figure that follows `label`.
fn figure(p: &mut Pipe, label: &str) -> u64 {
    let status = p.ask("CMD\tstatus").join("\n");
    let at = status
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in:\n{status}"));
    status[at + label.len()..]
        .trim_start_matches([':', ' '])
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The SRV targets of the example, best first, for `client`.
fn srv_from(p: &mut Pipe, client: &str) -> Vec<String> {
    let answer = p.ask(&format!(
        "Q\t_sip._udp.example.com\tIN\tSRV\t-1\t127.0.0.1\t127.0.0.1\t{client}/32"
    ));
    answer
        .iter()
        .filter_map(|l| match l.split('\t').collect::<Vec<_>>()[..] {
            [_, _, _, _, _, "SRV", _, _, _, rest] => Some(
                rest.rsplit(' ')
                    .next()?
                    .trim_end_matches(".example.com.")
                    .to_owned(),
            ),
            _ => None,
        })
        .collect()
}

#[test]
fn a_change_reads_the_rows_it_changed() {
    let dir = TempDir::new("networks-change");
    let db = dir.path().join("ha.db");
    let n = 2_000;
    with_networks(&db, n);
    let mut p = Pipe::start(
        &db,
        &["--algorithm", "least-latency", "--stale-after", "3600"],
    );
    p.ask("HELO\t5");
    assert!(figure(&mut p, "reading rows read") >= u64::from(n * TARGETS));
    assert_eq!(figure(&mut p, "full reading loads"), 1);
    assert_eq!(srv_from(&mut p, "10.0.77.9")[0], "sip1", "fastest first");

    // One reading among 16,000 changes: sip8 becomes the fastest from
    // network 77, and the pipe reads that one row.
    Writer::open(&db, None)
        .unwrap()
        .transaction(|w| {
            for _ in 0..12 {
                w.latency(&cidr(77), "sip8.example.com", Source::Observe, 0.5, Some(5))?;
            }
            Ok(())
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv_from(&mut p, "10.0.77.9")[0] != "sip8" {
        assert!(Instant::now() < deadline, "the change was not served");
        sleep(Duration::from_millis(50));
    }
    assert_eq!(figure(&mut p, "(last load"), 1, "rows read for one change");
    assert_eq!(figure(&mut p, "full reading loads"), 1, "a full re-read");
    assert_eq!(figure(&mut p, "zone loads"), 1);
    // Other networks are untouched by it.
    assert_eq!(srv_from(&mut p, "10.0.78.9")[0], "sip1");

    // A deleted reading is taken out, through the same log: one row.
    Connection::open(&db)
        .unwrap()
        .execute(
            "DELETE FROM ha_latency WHERE network = ?1 AND target = 'sip8.example.com'",
            [cidr(77)],
        )
        .unwrap();
    while srv_from(&mut p, "10.0.77.9")[0] == "sip8" {
        assert!(Instant::now() < deadline, "the deletion was not served");
        sleep(Duration::from_millis(50));
    }
    assert_eq!(figure(&mut p, "(last load"), 1);

    // A new network (hard state) re-reads the networks, not the readings.
    Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO ha_networks (cidr, name) VALUES ('192.0.2.128/25', 'new')",
            [],
        )
        .unwrap();
    let loads = figure(&mut p, "reading loads");
    while figure(&mut p, "reading loads") == loads {
        assert!(Instant::now() < deadline, "the new network was not read");
        srv_from(&mut p, "10.0.1.1");
        sleep(Duration::from_millis(50));
    }
    let networks = figure(&mut p, "(last load");
    assert!(
        networks > u64::from(n) && networks < u64::from(n) + 10,
        "the networks table and nothing else: {networks} rows"
    );
    assert_eq!(figure(&mut p, "full reading loads"), 1);
    assert!(p.finish().success());
}

/// memcached's `stats` counter `name`.
fn stat(port: u16, name: &str) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"stats\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "stats ended early");
        if line.starts_with("END") {
            panic!("no stat {name}");
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 3 && f[1] == name {
            return f[2].parse().unwrap();
        }
    }
}

#[test]
fn memcached_is_asked_for_the_networks_answered() {
    if !require("memcached") {
        return;
    }
    let dir = TempDir::new("networks-memcached");
    let db = dir.path().join("ha.db");
    let n = 500;
    with_networks(&db, n);
    let mc = Memcached::start(Memcached::free_port());
    let servers = format!("127.0.0.1:{}", mc.port);
    let mut p = Pipe::start(
        &db,
        &["--algorithm", "least-latency", "--memcached", &servers],
    );
    p.ask("HELO\t5");
    // Before any lookup: per target its drain and load (no monitor is
    // listed, so no health keys) and `*` latency from every source.
    let targets: u32 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM ha_targets", [], |r| r.get(0))
        .unwrap();
    let sources = pdns_ha::state::reading::Source::ALL.len() as u32;
    let per_target = targets * (2 + sources);
    assert_eq!(figure(&mut p, "(last fetch"), u64::from(per_target));
    for client in ["10.0.5.1", "10.1.9.1"] {
        srv_from(&mut p, client);
    }
    // The next fetches (at most a second apart while the pipe answers)
    // add the latency of the two networks asked for, and no others.
    let want = u64::from(per_target + 2 * targets * sources);
    let deadline = Instant::now() + Duration::from_secs(10);
    while figure(&mut p, "(last fetch") != want {
        assert!(
            Instant::now() < deadline,
            "the asked networks were not fetched"
        );
        srv_from(&mut p, "10.0.5.1");
        srv_from(&mut p, "10.1.9.1");
        sleep(Duration::from_millis(50));
    }
    // memcached agrees: over a few fetches, each key is asked at most
    // twice (its size, then its value) plus the monitors list once.
    let (gets, keys, fetches) = (
        stat(mc.port, "cmd_get"),
        figure(&mut p, "keys fetched"),
        figure(&mut p, "memcached fetches"),
    );
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        srv_from(&mut p, "10.0.5.1");
        sleep(Duration::from_millis(20));
    }
    let (gets2, keys2, fetches2) = (
        stat(mc.port, "cmd_get"),
        figure(&mut p, "keys fetched"),
        figure(&mut p, "memcached fetches"),
    );
    assert!(fetches2 > fetches, "no fetch in 2.5 s of lookups");
    assert!(
        gets2 - gets <= 2 * (keys2 - keys) + (fetches2 - fetches),
        "memcached saw {} gets for {} keys in {} fetches",
        gets2 - gets,
        keys2 - keys,
        fetches2 - fetches
    );
    assert!(
        keys2 - keys <= (fetches2 - fetches) * want,
        "a fetch asked for more than the networks answered"
    );
    assert!(p.finish().success());
}
