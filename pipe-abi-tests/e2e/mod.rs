//! End-to-end tests: pdns_server + dig, pdns-ha against gsqlite3.

mod attacks;
mod dnsdist;
mod live;
pub(crate) mod memcached;
pub(crate) mod networks;
pub(crate) mod reliability;
mod startup;
pub(crate) mod trust;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::pdns::{diff, require_all, Backend, DigResult, Pdns, TempDir};

/// The SRV RRset of sql/example.sql, as dig prints it.
const SIP_SRV: [&str; 8] = [
    "10 50 5060 sip1.example.com.",
    "10 25 5060 sip2.example.com.",
    "10 25 5060 sip3.example.com.",
    "20 20 5060 sip4.example.com.",
    "20 20 5060 sip5.example.com.",
    "20 10 5060 sip6.example.com.",
    "30 10 5060 sip7.example.com.",
    "30 10 5060 sip8.example.com.",
];

/// The SRV targets' addresses, which pdns puts in the additional section.
const SIP_A: [(&str, &str); 8] = [
    ("sip1", "192.0.2.11"),
    ("sip2", "192.0.2.12"),
    ("sip3", "192.0.2.13"),
    ("sip4", "198.51.100.14"),
    ("sip5", "198.51.100.15"),
    ("sip6", "198.51.100.16"),
    ("sip7", "203.0.113.17"),
    ("sip8", "203.0.113.18"),
];

/// The SOA rdata; the NXDOMAIN authority carries it with the SOA minimum (300) as TTL.
const SOA: &str = "ns1.example.com. hostmaster.example.com. 2026112201 10800 3600 604800 300";

/// ABI 1 is the plain protocol, 3 adds scopebits/auth and ECS, 5 adds CMD; 2 and 4 only add
/// fields that 3 and 5 also carry.
const ABIS: [u8; 3] = [1, 3, 5];

fn tools_present() -> bool {
    require_all(&["pdns_server", "dig"])
}

fn pdns_ha() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_pdns-ha"));
    bin.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()))
}

/// pdns splits pipe-command on spaces, so a path with a space cannot be passed at all.
fn no_spaces(path: &Path) -> String {
    let s = path.display().to_string();
    assert!(
        !s.contains(' '),
        "path has a space, pdns cannot pass it in pipe-command: {s}"
    );
    s
}

/// A database with the schema and sql/example.sql, made by `pdns-ha init`.
fn example_db(dir: &TempDir) -> PathBuf {
    let db = dir.path().join("ha.db");
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/example.sql");
    let out = Command::new(pdns_ha())
        .arg("init")
        .arg("--db")
        .arg(&db)
        .arg(&seed)
        .output()
        .expect("run pdns-ha init");
    assert!(
        out.status.success(),
        "pdns-ha init --db {} {} failed ({}):\n{}{}",
        db.display(),
        seed.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    db
}

fn pipe(db: &Path, abi: u8) -> Backend {
    let command = format!(
        "{} --db {} --algorithm static",
        no_spaces(&pdns_ha()),
        no_spaces(db)
    );
    Backend::Pipe { command, abi }
}

/// Panics with everything needed to tell a harness problem from a backend bug.
fn fail(pdns: &Pdns, r: &DigResult, what: &str) -> ! {
    panic!(
        "[{}] dig {}: {what}\n--- dig output ---\n{}{}--- pdns log (last 60 lines) ---\n{}",
        pdns.describe(),
        r.query,
        r.raw,
        r.stderr,
        pdns.log_tail(60)
    );
}

fn assert_status(pdns: &Pdns, r: &DigResult, status: &str) {
    if r.status() != Some(status) {
        fail(
            pdns,
            r,
            &format!("expected status {status}, got {:?}", r.status()),
        );
    }
}

/// Status, the aa flag, and the exact answer section (sorted, as `DigResult` keeps it).
fn assert_answer(pdns: &Pdns, r: &DigResult, want: &[String]) {
    assert_status(pdns, r, "NOERROR");
    if !r.has_flag("aa") {
        fail(pdns, r, "aa flag not set");
    }
    if r.answer() != want {
        fail(
            pdns,
            r,
            &format!("answer differs, expected:\n{}", want.join("\n")),
        );
    }
}

fn sorted(lines: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut v: Vec<String> = lines.into_iter().map(Into::into).collect();
    v.sort();
    v
}

fn sip_srv_answer() -> Vec<String> {
    sorted(SIP_SRV.map(|d| format!("_sip._udp.example.com. 300 IN SRV {d}")))
}

/// Plain positive answers of the example: query, then each answer record as owner, TTL,
/// class and type, followed by one of the rdata.
#[rustfmt::skip]
const POSITIVE: [(&str, &str, &[&str]); 5] = [
    ("www.example.com A", "www.example.com. 3600 IN A", &["192.0.2.80"]),
    ("www.example.com AAAA", "www.example.com. 3600 IN AAAA", &["2001:db8::80"]),
    ("example.com SOA", "example.com. 3600 IN SOA", &[SOA]),
    ("example.com NS", "example.com. 3600 IN NS", &["ns1.example.com.", "ns2.example.com."]),
    ("example.com MX", "example.com. 3600 IN MX", &["10 mail.example.com."]),
];

/// The example zone as pdns should serve it, over UDP and TCP.
fn check_example_zone(pdns: &Pdns, db: &Path) {
    for dig in [Pdns::dig, Pdns::dig_tcp] {
        let q = |query: &str| dig(pdns, &query.split(' ').collect::<Vec<_>>());

        let r = q("_sip._udp.example.com SRV");
        assert_answer(pdns, &r, &sip_srv_answer());
        for (host, addr) in SIP_A {
            let glue = format!("{host}.example.com. 300 IN A {addr}");
            if !r.additional().contains(&glue) {
                fail(pdns, &r, &format!("additional section lacks {glue}"));
            }
        }

        for (query, head, rdata) in POSITIVE {
            let want = sorted(rdata.iter().map(|d| format!("{head} {d}")));
            assert_answer(pdns, &q(query), &want);
        }

        let r = q("nonexist.example.com A");
        assert_status(pdns, &r, "NXDOMAIN");
        let soa = format!("example.com. 300 IN SOA {SOA}");
        if !r.has_flag("aa") || !r.answer().is_empty() || r.authority() != [soa] {
            fail(
                pdns,
                &r,
                "expected aa, no answer and the zone's SOA as authority",
            );
        }

        assert_status(pdns, &q("www.example.org A"), "REFUSED");

        // pdns echoes the query's case, and name compression can carry it into the rdata.
        let r = q("_SIP._UDP.ExAmPlE.cOm SRV");
        assert_status(pdns, &r, "NOERROR");
        let lower = |lines: &[String]| sorted(lines.iter().map(|l| l.to_lowercase()));
        if lower(r.answer()) != lower(&sip_srv_answer()) {
            fail(pdns, &r, "case-mangled query answered differently");
        }
    }
    check_axfr(pdns, db);
}

/// AXFR returns every enabled record of the zone, each once, plus the closing SOA.
fn check_axfr(pdns: &Pdns, db: &Path) {
    let r = pdns.dig(&["AXFR", "example.com"]);
    let mut got = r.answer().to_vec();
    let closing_soa = got
        .iter()
        .position(|rr| rr.split(' ').nth(3) == Some("SOA"));
    match closing_soa {
        Some(i) => drop(got.remove(i)),
        None => fail(pdns, &r, "AXFR has no SOA"),
    }
    let want = zone_rows(db, "example.com");
    if got != want {
        let (want, got) = (want.join("\n") + "\n", got.join("\n") + "\n");
        let why = format!(
            "AXFR differs from the records table:\n{}",
            diff("database", &want, "AXFR", &got)
        );
        fail(pdns, &r, &why);
    }
}

/// The zone's rows as dig prints records, sorted.
fn zone_rows(db: &Path, zone: &str) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database read-only");
    let mut stmt = conn
        .prepare(
            "SELECT r.name, r.ttl, r.type, r.content, r.prio FROM records r \
             JOIN domains d ON d.id = r.domain_id \
             WHERE d.name = ?1 AND r.disabled = 0 AND r.type IS NOT NULL AND r.type != ''",
        )
        .expect("prepare the zone query");
    let rows = stmt
        .query_map([zone], |row| {
            let (name, ttl, rtype): (String, i64, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
            let (content, prio): (String, Option<i64>) = (row.get(3)?, row.get(4)?);
            // pdns keeps MX/SRV priority in its own column; on the wire it leads the rdata.
            let rdata = match (rtype.as_str(), prio) {
                ("MX" | "SRV", Some(p)) => format!("{p} {content}"),
                _ => content,
            };
            Ok(format!("{name}. {ttl} IN {rtype} {rdata}"))
        })
        .expect("query the zone");
    let mut lines: Vec<String> = rows.map(|r| r.expect("read a record row")).collect();
    lines.sort();
    lines
}

#[test]
fn e2e_example_zone_on_every_abi() {
    if !tools_present() {
        return;
    }
    let dir = TempDir::new("e2e-abi");
    let db = example_db(&dir);
    let servers = Pdns::start_all(
        ABIS.iter()
            .map(|&abi| Pdns::options(pipe(&db, abi)))
            .collect(),
    );
    for pdns in &servers {
        check_example_zone(pdns, &db);
    }
}

/// Every name of the example with each type, names that do not exist, names below existing
/// ones, the empty non-terminal, names outside the zone, and case variants.
fn differential_queries() -> Vec<String> {
    let names = [
        "example.com",
        "www.example.com",
        "mail.example.com",
        "ns1.example.com",
        "ns2.example.com",
        "sip.example.com",
        "_sip._udp.example.com",
        "sip1.example.com",
        "sip2.example.com",
        "sip3.example.com",
        "sip4.example.com",
        "sip5.example.com",
        "sip6.example.com",
        "sip7.example.com",
        "sip8.example.com",
    ];
    let types = ["SRV", "A", "AAAA", "MX", "NS", "SOA", "TXT", "CNAME"];
    let mut queries = Vec::new();
    for name in names {
        // pdns answers ANY over UDP with an empty TC response (any-to-tcp); dig 9.18 asks ANY
        // over TCP anyway, +tcp only makes that explicit.
        queries.push(format!("+tcp {name} ANY"));
        queries.extend(types.iter().map(|t| format!("{name} {t}")));
    }
    let others = [
        // The truncated UDP answer itself, not dig's TCP retry.
        "+notcp +ignore example.com ANY",
        "+notcp +ignore nonexist.example.com ANY",
        "nonexist.example.com A",
        "+tcp nonexist.example.com ANY",
        "sip9.example.com SRV",
        "foo.www.example.com A",
        "x._sip._udp.example.com SRV",
        "a.b.sip1.example.com A",
        "_tcp.example.com SRV",
        "_sip._tcp.example.com SRV",
        "_udp.example.com SRV",
        "_udp.example.com A",
        "+tcp _udp.example.com ANY",
        "www.example.org A",
        "example.org SOA",
        "_sip._udp.example.net SRV",
        "com SOA",
        "com NS",
        ". SOA",
        "WWW.EXAMPLE.COM A",
        "Www.Example.Com AAAA",
        "_SIP._UDP.ExAmPlE.cOm SRV",
        "Example.Com SOA",
        "EXAMPLE.com NS",
        "example.COM MX",
        "+tcp ExAmPlE.CoM ANY",
        "SIP.example.com A",
        "NonExist.Example.Com A",
        "WWW.EXAMPLE.ORG A",
        "www.example.com PTR",
        "example.com CAA",
        "+subnet=192.0.2.0/24 _sip._udp.example.com SRV",
        "+subnet=198.51.100.0/24 sip.example.com A",
        "+subnet=2001:db8::/56 www.example.com AAAA",
        "+subnet=203.0.113.0/24 nonexist.example.com A",
        "+norecurse www.example.com A",
    ];
    queries.extend(others.iter().map(|q| q.to_string()));
    queries
}

#[test]
fn e2e_pipe_answers_like_gsqlite3() {
    if !tools_present() {
        return;
    }
    let dir = TempDir::new("e2e-diff");
    let db = example_db(&dir);
    // ECS processing on everywhere, as in production, so the +subnet queries mean something.
    let backends = [
        Backend::Gsqlite3 { db: db.clone() },
        pipe(&db, 1),
        pipe(&db, 3),
    ];
    let options = backends
        .into_iter()
        .map(|b| Pdns::options(b).setting("edns-subnet-processing", "yes"))
        .collect();
    let servers = Pdns::start_all(options);
    let queries = differential_queries();
    let answers: Vec<Vec<DigResult>> = thread::scope(|s| {
        let handles: Vec<_> = servers
            .iter()
            .map(|p| s.spawn(|| p.dig_batch(&queries)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });

    let (reference, pipes) = (&answers[0], &answers[1..]);
    // A failed dig on the reference side would make every comparison meaningless.
    for r in reference {
        assert!(
            r.status().is_some(),
            "gsqlite3 did not answer {}:\n{}",
            r.query,
            r.raw
        );
    }
    let mut report = String::new();
    let mut mismatches = 0;
    for (server, answers) in servers[1..].iter().zip(pipes) {
        for (want, got) in reference.iter().zip(answers) {
            let (w, g) = (want.normalized(), got.normalized());
            if w != g {
                mismatches += 1;
                report += &format!("\n=== dig {} ===\n", want.query);
                report += &diff("gsqlite3", &w, server.describe(), &g);
            }
        }
    }
    if mismatches > 0 {
        let logs: String = servers[1..]
            .iter()
            .map(|p| {
                format!(
                    "\n--- pdns log, {} (last 200 lines) ---\n{}",
                    p.describe(),
                    p.log_tail(200)
                )
            })
            .collect();
        panic!(
            "{mismatches} of {} responses differ from gsqlite3:{report}{logs}",
            queries.len() * pipes.len()
        );
    }
    eprintln!(
        "{} queries, identical on gsqlite3, pipe ABI 1 and pipe ABI 3",
        queries.len()
    );
}

const LIVE_WITHIN: Duration = Duration::from_secs(3);
const LIVE_STEP: Duration = Duration::from_millis(50);

/// Answers in a row that must agree before a change counts as served: with several
/// coprocesses, consecutive queries reach different ones (pdns picks the distributor thread by
/// query id), and each coprocess notices the change on its own.
const LIVE_STREAK: usize = 8;

/// Polls until `ready` holds for `LIVE_STREAK` answers in a row, within `LIVE_WITHIN`.
/// Queries alternate between UDP and TCP, because pdns keeps a coprocess apart for TCP.
fn wait_for(pdns: &Pdns, args: &[&str], what: &str, ready: impl Fn(&DigResult) -> bool) {
    let started = Instant::now();
    let mut first_seen = None;
    let mut streak = 0;
    let mut sent = 0;
    while streak < LIVE_STREAK {
        sent += 1;
        let r = if sent % 2 == 0 {
            pdns.dig(args)
        } else {
            pdns.dig_tcp(args)
        };
        if ready(&r) {
            first_seen.get_or_insert(started.elapsed());
            streak += 1;
        } else {
            streak = 0;
        }
        if streak < LIVE_STREAK && started.elapsed() > LIVE_WITHIN {
            let why = match first_seen {
                None => format!("{what}: not served within {LIVE_WITHIN:?}"),
                Some(t) => format!(
                    "{what}: first served after {t:?}, but answers still flap after {LIVE_WITHIN:?}"
                ),
            };
            fail(pdns, &r, &why);
        }
        if streak == 0 {
            thread::sleep(LIVE_STEP);
        }
    }
    eprintln!(
        "[{}] {what}: first served after {:?}, by every coprocess after {:?}",
        pdns.describe(),
        first_seen.unwrap_or_default(),
        started.elapsed()
    );
}

#[test]
fn e2e_operator_changes_are_served_at_once() {
    if !tools_present() {
        return;
    }
    let dir = TempDir::new("e2e-live");
    let db = example_db(&dir);
    // pdns's default of three distributor threads: three UDP coprocesses and the TCP one
    // must all see the change.
    let pdns = Pdns::options(pipe(&db, 3)).distributor_threads(3).start();
    let conn = rusqlite::Connection::open(&db).expect("open the database");
    // The pipe processes read concurrently; wait for them instead of failing with SQLITE_BUSY.
    conn.busy_timeout(Duration::from_secs(5))
        .expect("set busy timeout");
    let query = ["live.example.com", "A"];
    let has = |addr: &'static str| {
        move |r: &DigResult| {
            r.status() == Some("NOERROR") && r.answer().iter().any(|rr| rr.ends_with(addr))
        }
    };

    let r = pdns.dig(&query);
    assert_status(&pdns, &r, "NXDOMAIN");

    let inserted = conn
        .execute(
            "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth) \
             SELECT id, 'live.example.com', 'A', '192.0.2.99', 60, NULL, 0, 1 \
             FROM domains WHERE name = 'example.com'",
            [],
        )
        .expect("insert a record");
    assert_eq!(inserted, 1);
    wait_for(&pdns, &query, "inserted A record", has("192.0.2.99"));

    conn.execute(
        "UPDATE records SET content = '192.0.2.98' WHERE name = 'live.example.com'",
        [],
    )
    .expect("update the record");
    wait_for(&pdns, &query, "updated A record", |r| {
        has("192.0.2.98")(r) && r.answer().len() == 1
    });

    conn.execute("DELETE FROM records WHERE name = 'live.example.com'", [])
        .expect("delete");
    wait_for(&pdns, &query, "deleted A record", |r| {
        r.status() == Some("NXDOMAIN")
    });
}
