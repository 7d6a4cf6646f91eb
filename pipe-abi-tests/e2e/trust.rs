//! Trust boundaries, tried as an attacker would: forged, re-dated, replayed
//! and oversized values in a real memcached, a 250+ byte key, a FIFO, a
//! device node and a directory swapped in for the database under a running
//! pdns_server, and hostile soft-state rows in SQLite. Answers through pdns
//! must not change; counters and logs must say why.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use pdns_ha::state::auth::Key;

use crate::e2e::memcached::Memcached;
use crate::e2e::reliability::Load;
use crate::pdns::{require_all, Backend, DigResult, Pdns, TempDir};
use crate::util::{init_db, run_pipe, Pipe, BIN};

pub(crate) const SECRET: &str = "trust-test-secret-0123456789";
const SITE_B: &str = "198.51.100.0/24";
pub(crate) const SRV: &str = "_sip._udp.example.com";

/// 234 characters: a legal DNS name whose latency key is 266 bytes.
fn long_name() -> String {
    format!(
        "{}.{}.{}.{}.example.com",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(30)
    )
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

pub(crate) fn key_file(dir: &TempDir) -> PathBuf {
    let path = dir.path().join("memcached.key");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A raw memcached text-protocol exchange: what an attacker on the
/// network can do.
pub(crate) fn mc(port: u16, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    r.read_line(&mut head).unwrap();
    if let Some(rest) = head.strip_prefix("VALUE ") {
        let len: usize = rest.split_whitespace().nth(2).unwrap().parse().unwrap();
        let mut v = vec![0; len];
        r.read_exact(&mut v).unwrap();
        return v;
    }
    head.into_bytes()
}

pub(crate) fn mc_set(port: u16, key: &str, value: &[u8]) {
    let mut req = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    let answer = mc(port, &req);
    assert_eq!(answer, b"STORED\r\n", "set {key}");
}

pub(crate) fn mc_get(port: u16, key: &str) -> Vec<u8> {
    mc(port, format!("get {key}\r\n").as_bytes())
}

pub(crate) fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn add_target(db: &Path, name: &str) {
    Connection::open(db)
        .unwrap()
        .execute("INSERT INTO ha_targets (name) VALUES (?1)", [name])
        .unwrap();
}

/// The SRV answer for site B, normalized (priorities carry the ranking).
fn site_b(pdns: &Pdns) -> DigResult {
    pdns.dig(&[&format!("+subnet={SITE_B}"), SRV, "SRV"])
}

fn first(r: &DigResult) -> String {
    let mut v: Vec<(u32, String)> = r
        .answer()
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((f.get(4)?.parse().ok()?, f.get(7)?.to_string()))
        })
        .collect();
    v.sort();
    v.first().map(|(_, t)| t.clone()).unwrap_or_default()
}

#[test]
fn forged_replayed_and_oversized_values_change_no_answer() {
    if !require_all(&["memcached", "pdns_server", "dig"]) {
        return;
    }
    let dir = TempDir::new("trust-mc");
    let key = key_file(&dir);
    let key_s = key.to_str().unwrap();
    let mcd = Memcached::start(Memcached::free_port());
    let servers = format!("127.0.0.1:{}", mcd.port);
    let long = long_name();
    // The monitoring site and the DNS node share nothing but memcached.
    let (site, node) = (dir.path().join("site.db"), dir.path().join("node.db"));
    for db in [&site, &node] {
        init_db(db, &["sql/example.sql"]);
        add_target(db, &long);
    }
    let metric = |args: &[&str]| {
        let mut all = vec!["metric", args[0], "--db", site.to_str().unwrap()];
        all.extend_from_slice(&["--memcached", &servers, "--memcached-key-file", key_s]);
        all.extend_from_slice(&args[1..]);
        let (ok, _, err) = run(&all);
        assert!(ok, "metric {args:?}: {err}");
    };
    let latency = |target: &str, ms: &str| {
        metric(&[
            "latency",
            "--network",
            SITE_B,
            "--target",
            target,
            "--ms",
            ms,
        ])
    };
    latency("sip7.example.com", "2");
    latency("sip4.example.com", "9");
    // The 266-byte key is hashed: published, read back, and it does not
    // switch sharing off for the other keys on its server.
    latency(&long, "3");
    // Health is one key per monitor (issue 12); the site is monitor "site".
    metric(&[
        "health",
        "--target",
        "sip1.example.com",
        "down",
        "--monitor-id",
        "site",
    ]);
    let captured = mc_get(mcd.port, "pdns-ha:health:sip1.example.com|site");
    assert!(captured.starts_with(b"v1 0 "), "sealed: {captured:?}");
    sleep(Duration::from_millis(20));
    metric(&[
        "health",
        "--target",
        "sip1.example.com",
        "up",
        "--monitor-id",
        "site",
    ]);

    let bin = Path::new(BIN).canonicalize().unwrap();
    let command = format!(
        "{} --db {} --algorithm least-latency --memcached {servers} --memcached-key-file {key_s}",
        bin.display(),
        node.display()
    );
    let pdns = Arc::new(
        Pdns::options(Backend::Pipe { command, abi: 3 })
            .setting("edns-subnet-processing", "yes")
            // A coprocess pdns kills for a slow answer on a loaded machine
            // would start afresh, without the good readings its forerunner
            // kept: the test is about forged values, not about that.
            .setting("pipe-timeout", "10000")
            .start(),
    );
    let before = site_b(&pdns);
    let coprocesses = pdns.coprocesses();
    assert_eq!(first(&before), "sip7.example.com.", "{}", before.raw);
    assert_eq!(before.answer().len(), 8, "sip1 is up: {}", before.raw);

    // A direct pipe on the same database, for CMD status.
    let log = dir.path().join("pipe.log");
    let mut pipe = Pipe::start_with_log(
        &node,
        &[
            "--algorithm",
            "least-latency",
            "--memcached",
            &servers,
            "--memcached-key-file",
            key_s,
        ],
        Stdio::from(File::create(&log).unwrap()),
    );
    pipe.ask("HELO\t5");
    // It must have read the good values before they are forged (its first
    // fetch may time out on a loaded machine, and a process that never saw
    // the newer "sip1 up" cannot tell the replayed "down" from news).
    let t = Instant::now();
    loop {
        let a = pipe.ask(&format!(
            "Q\t{SRV}\tIN\tSRV\t1\t127.0.0.1\t127.0.0.1\t{SITE_B}"
        ));
        let best = a
            .iter()
            .any(|l| l.ends_with("\t10\t10 5060 sip7.example.com."));
        if best && a.iter().any(|l| l.ends_with(" sip1.example.com.")) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{a:?}");
        sleep(Duration::from_millis(100));
    }

    let load = Load::start(&pdns);
    let t = now();
    let sealer = Key::new(SECRET.as_bytes()).unwrap();
    let lat = |target: &str| format!("pdns-ha:latency:{SITE_B}|{target}|metric");
    // No MAC: sip7 down.
    mc_set(
        mcd.port,
        "pdns-ha:health:sip7.example.com|site",
        format!("0 {t}").as_bytes(),
    );
    // A wrong MAC: sip4 at 0 ms.
    let forged = format!("v1 0 0 1 0 {t} - {}", "ab".repeat(32));
    mc_set(mcd.port, &lat("sip4.example.com"), forged.as_bytes());
    // Correctly sealed (a writer with the key but a clock an hour fast):
    // sip1 at 0 ms, stamped in the future.
    let k = lat("sip1.example.com");
    let future = sealer.seal(&k, &format!("0 0 1 0 {} -", t + 3600.0));
    mc_set(mcd.port, &k, future.as_bytes());
    // The old, authentic "sip1 down", written back.
    mc_set(mcd.port, "pdns-ha:health:sip1.example.com|site", &captured);
    // 1 MB where sip7's latency was.
    mc_set(mcd.port, &lat("sip7.example.com"), &vec![b'9'; 1_000_000]);

    // Once the pipe's counters name every planted value, it has read them all: only then
    // do answers that are what they were show that they were refused.
    let wants = [
        "memcached: sealed values only",
        "unauthenticated 1",
        "bad MAC 1",
        "too large 1",
        "future 1",
        "replayed 1",
    ];
    let start = Instant::now();
    let status = loop {
        let status = pipe.ask("CMD\tstatus").join("\n");
        if wants.iter().all(|w| status.contains(w)) {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "not every planted value was read:\n{status}"
        );
        sleep(Duration::from_millis(100));
    };
    load.check("forged, re-dated, replayed and 1 MB values in memcached");
    for _ in 0..5 {
        let after = site_b(&pdns);
        assert_eq!(
            after.normalized(),
            before.normalized(),
            "answer changed (coprocesses {coprocesses:?}, now {:?})\n{status}\n{}",
            pdns.coprocesses(),
            pdns.log()
                .lines()
                .filter(|l| !l.contains("Query:"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    drop(pipe);
    let log = std::fs::read_to_string(&log).unwrap();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("memcached: ignored"))
        .collect();
    assert_eq!(warned.len(), 1, "one warning per 30 s:\n{log}");
    assert!(pdns.log().contains("memcached: ignored"), "{}", pdns.log());

    // status shows the pipe's view and where each reading came from.
    let (ok, out, err) = run(&[
        "status",
        "--db",
        node.to_str().unwrap(),
        "--memcached",
        &servers,
        "--memcached-key-file",
        key_s,
    ]);
    assert!(ok, "{err}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not in:\n{out}"))
            .to_owned()
    };
    // A process that starts now has seen no newer value than the replayed
    // "down", so it takes it: replay protection covers running processes,
    // and --stale-after bounds what a fresh one can be fed (README).
    assert!(row("sip1.example.com").contains("(memcached)"), "{out}");
    assert!(!row("sip4.example.com").contains("0.0/"), "forged: {out}");
    assert!(
        row(&long).contains("site-b: 3.0 ms = metric 3.0/3.0"),
        "{out}"
    );
    assert!(out.contains("values ignored: "), "{out}");
    // Without --memcached: SQLite alone, where the node has no readings.
    let (_, plain, _) = run(&["status", "--db", node.to_str().unwrap()]);
    assert!(!plain.contains("(memcached)"), "{plain}");
}

/// `mknod` needs root; elsewhere a symlink to a device stands in.
fn device_at(path: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid path; /dev/null's numbers (1, 3).
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3)) };
        assert_eq!(rc, 0, "mknod {}", path.display());
    } else {
        std::os::unix::fs::symlink("/dev/null", path).unwrap();
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

#[test]
fn fifo_device_and_directory_at_the_database_path_under_pdns() {
    if !require_all(&["pdns_server", "dig"]) {
        return;
    }
    let dir = TempDir::new("trust-path");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let bin = Path::new(BIN).canonicalize().unwrap();
    let command = format!(
        "{} --db {} --algorithm least-latency",
        bin.display(),
        db.display()
    );
    let pdns = Arc::new(
        Pdns::options(Backend::Pipe { command, abi: 3 })
            .distributor_threads(2)
            .start(),
    );
    let load = Load::start(&pdns);
    let side = dir.path().join("side.db");
    let pause = || sleep(Duration::from_millis(1200));
    pause();
    std::fs::rename(&db, &side).unwrap();
    mkfifo(&db);
    pause();
    std::fs::remove_file(&db).unwrap();
    device_at(&db);
    pause();
    std::fs::remove_file(&db).unwrap();
    std::fs::create_dir(&db).unwrap();
    pause();
    std::fs::remove_dir(&db).unwrap();
    // A good file again, with one more record, as an operator's `mv`.
    // (A fresh file: the old one is still open in the coprocesses, and a
    // write to it behind their WAL index would go unseen.)
    let fresh = dir.path().join("fresh.db");
    init_db(&fresh, &["sql/example.sql"]);
    Connection::open(&fresh)
        .unwrap()
        .execute(
            "INSERT INTO records (domain_id, name, type, content, ttl) \
             SELECT id, 'back.example.com', 'A', '192.0.2.203', 60 FROM domains WHERE name = 'example.com'",
            [],
        )
        .unwrap();
    std::fs::rename(&fresh, &db).unwrap();
    let t = Instant::now();
    while pdns.dig(&["back.example.com", "A"]).answer().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the good file is not served again\n{}",
            pdns.log()
                .lines()
                .filter(|l| !l.contains("Query:"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        sleep(Duration::from_millis(50));
    }
    eprintln!("good file served again after {:?}", t.elapsed());
    load.check("FIFO, device node, directory at the database path");
    let log = pdns.log();
    // One error per outage (the FIFO came first), one line when it heals.
    for want in ["a FIFO, not a database file", "readable again"] {
        assert!(log.contains(want), "{want:?} not in the log:\n{log}");
    }
}

/// Reasons after `prefix` on each line of `text`.
fn reasons<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut v: Vec<&str> = text
        .lines()
        .filter_map(|l| Some(l.split_once(prefix)?.1.trim()))
        .collect();
    v.sort();
    v
}

#[test]
fn hostile_soft_state_rows_are_skipped_alike_everywhere() {
    let dir = TempDir::new("trust-rows");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let future = now() + 3600.0;
    let c = Connection::open(&db).unwrap();
    // What a careless or hostile writer can do: the schema's CHECKs are
    // advisory to whoever holds the file.
    c.execute_batch(&format!(
        "PRAGMA ignore_check_constraints = ON;
         INSERT INTO ha_health (target, up, ok_streak, fail_streak, updated) VALUES
           ('sip1.example.com', 0, 0, 0, {future}),
           ('sip2.example.com', 0, 0, 0, 9e999);
         INSERT INTO ha_latency (network, target, mean_ms, ewma_ms, samples, timeouts, updated) VALUES
           ('198.51.100.0/24', 'sip3.example.com', -50, -50, 1, 0, {n}),
           ('198.51.100.0/24', 'sip4.example.com', 1, 1, 1, 0, -1),
           ('198.51.100.0/24', 'sip5.example.com', 4, 4, 1, 0, {n});
         INSERT INTO ha_load (target, sessions, max_sessions, updated) VALUES
           ('sip6.example.com', 5, 0, {n});
         INSERT INTO records (domain_id, name, type, content, ttl, prio)
           SELECT id, 'mx.example.com', 'MX', 'mail.example.com.', 60, 99999999999
           FROM domains WHERE name = 'example.com';",
        n = now()
    ))
    .unwrap();
    // A name with a terminal escape, and a 10 MB unservable TXT.
    let evil = "evil\u{1b}[2J.example.com";
    c.execute(
        "INSERT INTO ha_health (target, up, ok_streak, fail_streak, updated) VALUES (?1, 1, 0, 0, 1e300)",
        [evil],
    )
    .unwrap();
    let huge = format!("x\t{}", "y".repeat(10_000_000));
    c.execute(
        "INSERT INTO records (domain_id, name, type, content, ttl) SELECT id, 'huge.example.com', 'TXT', ?1, 60 FROM domains WHERE name = 'example.com'",
        [&huge],
    )
    .unwrap();
    drop(c);

    let db_s = db.to_str().unwrap();
    let out = run_pipe(&db, &[], b"HELO\t1\n".to_vec());
    let pipe_log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{pipe_log}");
    let (ok, status, err) = run(&["status", "--db", db_s]);
    assert!(ok, "status fails whole on bad rows: {err}");
    let (ok, explain, err) = run(&["explain", "--db", db_s, SRV, "SRV"]);
    assert!(ok, "{err}");

    let from_pipe = reasons(&pipe_log, "not served: ");
    assert_eq!(from_pipe.len(), 8, "{pipe_log}");
    let section = |text: &str| -> String {
        let (_, rest) = text.split_once("as the pipe does):\n").unwrap_or(("", ""));
        rest.lines()
            .take_while(|l| l.starts_with("  "))
            .map(|l| format!("X {}\n", l.trim()))
            .collect()
    };
    assert_eq!(
        reasons(&section(&status), "X "),
        from_pipe,
        "status:\n{status}"
    );
    assert_eq!(
        reasons(&section(&explain), "X "),
        from_pipe,
        "explain:\n{explain}"
    );
    for want in [
        "a row of ha_health (sip1.example.com): updated ",
        "a row of ha_health (sip2.example.com): updated inf is not a time",
        "a row of ha_latency (198.51.100.0/24): latency -50 ms out of range",
        "a row of ha_latency (198.51.100.0/24): updated -1 is not a time",
        "a row of ha_load (sip6.example.com): max sessions 0 out of range",
        "record mx.example.com MX \"mail.example.com.\": priority out of range",
        "evil\\u{1b}[2J.example.com",
        "record huge.example.com TXT \"x\\ty",
    ] {
        assert!(
            from_pipe
                .iter()
                .any(|r| r.contains(want) || r.starts_with(want)),
            "{want:?} not among {from_pipe:#?}"
        );
    }
    let sip1 = from_pipe.iter().find(|r| r.contains("(sip1.example.com)"));
    assert!(
        sip1.is_some_and(|r| r.ends_with("is in the future (beyond --max-clock-skew)")),
        "{sip1:?}"
    );
    // Escaped and cut: no raw escape, no line near 10 MB.
    for (what, text) in [
        ("pipe", &pipe_log),
        ("status", &status),
        ("explain", &explain),
    ] {
        assert!(!text.contains('\u{1b}'), "{what} prints a raw escape");
        let longest = text.lines().map(str::len).max().unwrap_or(0);
        assert!(longest < 1000, "{what}: a {longest}-byte line");
    }
    // The valid row beside them is used: sip5 ranks first for site B.
    assert!(explain.contains("sip5.example.com"), "{explain}");
    let (ok, _, err) = run(&[
        "explain",
        "--db",
        db_s,
        "--client",
        "198.51.100.7",
        SRV,
        "SRV",
    ]);
    assert!(ok, "{err}");
}

#[test]
fn init_refuses_links_and_odd_files() {
    let dir = TempDir::new("trust-init");
    let target = dir.path().join("elsewhere.db");
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (ok, _, err) = run(&["init", "--db", link.to_str().unwrap()]);
    assert!(!ok && err.contains("symbolic link"), "{err}");
    assert!(!target.exists(), "a dangling symlink was followed");
    let (ok, _, err) = run(&["init", "--db", dir.path().to_str().unwrap()]);
    assert!(!ok && err.contains("directory"), "{err}");
    let fifo = dir.path().join("fifo.db");
    mkfifo(&fifo);
    let t = Instant::now();
    let (ok, _, err) = run(&["init", "--db", fifo.to_str().unwrap()]);
    assert!(!ok && err.contains("FIFO"), "{err}");
    // The pipe does not exit (pdns would exit with it): it says why, waits
    // for a database, and ends cleanly at the end of its input.
    let (ok, _, err) = run(&["--db", fifo.to_str().unwrap()]);
    assert!(ok && err.contains("FIFO"), "pipe start: {err}");
    let (ok, _, err) = run(&["status", "--db", fifo.to_str().unwrap()]);
    assert!(!ok && err.contains("FIFO"), "status: {err}");
    let fifo_s = fifo.to_str().unwrap();
    let (ok, _, err) = run(&["metric", "health", "--db", fifo_s, "--target", "a", "up"]);
    assert!(!ok && err.contains("FIFO"), "metric: {err}");
    assert!(t.elapsed() < Duration::from_secs(5), "nothing blocked");
    // A key file others may read is refused, and says why.
    let key = dir.path().join("key");
    std::fs::write(&key, SECRET).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let (ok, _, err) = run(&[
        "--db",
        db.to_str().unwrap(),
        "--memcached",
        "127.0.0.1:1",
        "--memcached-key-file",
        key.to_str().unwrap(),
    ]);
    assert!(
        ok && err.contains("mode 644") && err.contains("chmod 600"),
        "{err}"
    );
}
