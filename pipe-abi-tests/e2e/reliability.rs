//! Faults under a real pdns_server: whatever happens to the database, the
//! coprocesses or memcached, dig keeps getting correct answers, no SERVFAIL
//! that gsqlite3 would not give, and no lookup near pdns's pipe-timeout.
//! Also the security promises: no secret in any output, owner-only writes,
//! parameterised SQL under hostile names, a read-only pipe.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::e2e::memcached::{silent_server, Memcached};
use crate::pdns::{require_all, Backend, Pdns, TempDir};
use crate::util::{init_db, kill, run_ok, Pipe, BIN};

/// pdns's pipe-timeout in these tests; no answer may come near it.
const PIPE_TIMEOUT_MS: u64 = 2000;

fn tools() -> bool {
    require_all(&["pdns_server", "dig"])
}

fn start(db: &Path, algorithm: &str, extra: &str) -> Pdns {
    let bin = Path::new(BIN).canonicalize().unwrap();
    let command = format!(
        "{} --db {} --algorithm {algorithm}{extra}",
        bin.display(),
        db.display()
    );
    Pdns::options(Backend::Pipe { command, abi: 3 })
        .setting("pipe-timeout", &PIPE_TIMEOUT_MS.to_string())
        .distributor_threads(2)
        .start()
}

/// One dig outcome: status, SRV records in the answer, how long it took.
type Outcome = (String, usize, Duration);

/// Digs the SIP SRV record over and over in the background until stopped,
/// recording every outcome.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Outcome>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(pdns: &Arc<Pdns>) -> Self {
        let (stop, seen) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let (s, out, pdns) = (Arc::clone(&stop), Arc::clone(&seen), Arc::clone(pdns));
        let thread = thread::spawn(move || {
            // Bounded in count as well as by the stop flag.
            for _ in 0..5000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                let r = pdns.dig(&["+subnet=198.51.100.0/24", "_sip._udp.example.com", "SRV"]);
                let srv = r.answer().iter().filter(|l| l.contains(" SRV ")).count();
                out.lock().unwrap().push((
                    r.status().unwrap_or("no answer").to_owned(),
                    srv,
                    t.elapsed(),
                ));
                sleep(Duration::from_millis(10));
            }
        });
        Self {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stops and checks every answer: NOERROR with all eight records (the
    /// database never loses them), well under pipe-timeout.
    pub(crate) fn check(mut self, what: &str) -> (usize, Duration) {
        // A loaded machine digs slowly: let the load reach a count worth
        // judging (bounded in time) rather than fail on too few queries.
        let until = Instant::now() + Duration::from_secs(30);
        while self.seen.lock().unwrap().len() <= 20 && Instant::now() < until {
            sleep(Duration::from_millis(50));
        }
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let seen = self.seen.lock().unwrap();
        let worst = seen.iter().map(|o| o.2).max().unwrap_or_default();
        let bad: Vec<_> = seen
            .iter()
            .filter(|(status, srv, _)| status != "NOERROR" || *srv < 7)
            .collect();
        assert!(
            bad.is_empty(),
            "{what}: {} of {} answers wrong: {:?}",
            bad.len(),
            seen.len(),
            &bad[..bad.len().min(5)]
        );
        assert!(seen.len() > 20, "{what}: only {} queries", seen.len());
        assert!(
            worst < Duration::from_millis(PIPE_TIMEOUT_MS / 2),
            "{what}: a query took {worst:?}"
        );
        eprintln!("{what}: {} queries, worst {worst:?}", seen.len());
        (seen.len(), worst)
    }
}

#[test]
fn database_faults_under_pdns_keep_answers_correct() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("rel-db");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    // Rollback journal: a writer's exclusive lock then blocks readers too,
    // the worst case for the lock step below.
    Connection::open(&db)
        .unwrap()
        .pragma_update(None, "journal_mode", "DELETE")
        .unwrap();
    let pdns = Arc::new(start(&db, "least-latency", ""));
    let load = Load::start(&pdns);
    let side = dir.path().join("side.db");
    let pause = || sleep(Duration::from_millis(700));

    pause();
    std::fs::rename(&db, &side).unwrap(); // deleted
    pause();
    std::fs::rename(&side, &db).unwrap(); // back (replaced)
    pause();
    {
        let writer = Connection::open(&db).unwrap();
        writer
            .execute_batch("BEGIN EXCLUSIVE; DELETE FROM records WHERE type = 'A';")
            .unwrap();
        sleep(Duration::from_millis(1500)); // a long transaction holding the lock
        writer.execute_batch("ROLLBACK").unwrap();
    }
    pause();
    let len = std::fs::metadata(&db).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0xa5; len as usize / 2], 0).unwrap(); // corrupted
    pause();
    f.set_len(100).unwrap(); // truncated
    pause();
    drop(f);
    let fresh = dir.path().join("fresh.db");
    init_db(&fresh, &["sql/example.sql"]);
    std::fs::rename(&fresh, &db).unwrap(); // a good file again
    pause();
    load.check("database deleted, replaced, locked, corrupted, truncated");
    let log = pdns.log();
    assert!(
        log.contains("answering from the copy loaded"),
        "the outage is logged"
    );
    assert!(log.contains("readable again"), "recovery is logged:\n{log}");
}

#[test]
fn killed_coprocesses_are_replaced_and_answer_correctly() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("rel-kill");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let pdns = start(&db, "least-latency", "");
    let srv = |p: &Pdns| p.dig(&["_sip._udp.example.com", "SRV"]);
    assert_eq!(srv(&pdns).answer().len(), 8);
    for round in 0..3 {
        let before = pdns.coprocesses();
        assert!(!before.is_empty(), "no coprocesses found");
        for pid in &before {
            kill(*pid);
        }
        // pdns notices a dead coprocess only when it next uses it, and may
        // answer that one question with SERVFAIL (as it does for any
        // backend that dies); every later answer must be right.
        let (mut tries, t) = (0, Instant::now());
        while srv(&pdns).answer().len() != 8 {
            tries += 1;
            assert!(
                tries < 10,
                "round {round}: no correct answer after killing {before:?}"
            );
        }
        let took = t.elapsed();
        eprintln!("round {round}: {tries} wrong answers, {took:?} to the first right one");
        for _ in 0..10 {
            let r = srv(&pdns);
            assert_eq!(
                (r.status(), r.answer().len()),
                (Some("NOERROR"), 8),
                "round {round}"
            );
        }
        assert!(
            pdns.coprocesses().iter().all(|p| !before.contains(p)),
            "replaced"
        );
    }
}

#[test]
fn memcached_dying_under_pdns_costs_nothing_visible() {
    if !(tools() & require_all(&["memcached"])) {
        return;
    }
    let dir = TempDir::new("rel-mc");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let mut mc = Memcached::start(Memcached::free_port());
    let servers = format!("127.0.0.1:{}", mc.port);
    let pdns = Arc::new(start(
        &db,
        "least-latency",
        &format!(" --memcached {servers}"),
    ));
    let load = Load::start(&pdns);
    sleep(Duration::from_millis(800));
    mc.kill();
    sleep(Duration::from_millis(2500));
    let _back = Memcached::start(mc.port);
    sleep(Duration::from_millis(1500));
    load.check("memcached killed and restarted");
}

#[test]
fn a_hanging_memcached_under_pdns_costs_nothing_visible() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("rel-mc-hang");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let (addr, holder) = silent_server(Duration::from_secs(15));
    let pdns = Arc::new(start(&db, "least-latency", &format!(" --memcached {addr}")));
    let load = Load::start(&pdns);
    sleep(Duration::from_secs(4));
    load.check("memcached accepting and never answering");
    drop(pdns);
    drop(holder);
}

/// A short soak for CI (`bench/soak.sh` is the full one): dnsperf through
/// pdns with every algorithm while readings are written all along; no
/// SERVFAIL, nothing lost.
#[test]
fn short_soak_while_readings_are_written() {
    if !(tools() & require_all(&["dnsperf"])) {
        return;
    }
    let dir = TempDir::new("rel-soak");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let queries = dir.path().join("queries.txt");
    let mut q = String::from("_sip._udp.example.com SRV\n");
    q.extend((1..=8).map(|i| format!("sip{i}.example.com A\n")));
    std::fs::write(&queries, q).unwrap();
    for algorithm in ["static", "least-latency", "least-load"] {
        let pdns = start(&db, algorithm, "");
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, wdb) = (Arc::clone(&stop), db.clone());
        let writer = thread::spawn(move || {
            let mut n = 0u32;
            while !flag.load(Ordering::Relaxed) && n < 2000 {
                let sip = format!("sip{}.example.com", n % 8 + 1);
                let ms = format!("{}", 1 + n % 50);
                run_ok(&[
                    "metric",
                    "latency",
                    "--db",
                    wdb.to_str().unwrap(),
                    "--network",
                    "198.51.100.0/24",
                    "--target",
                    &sip,
                    "--ms",
                    &ms,
                ]);
                n += 1;
                sleep(Duration::from_millis(20));
            }
            n
        });
        let out = Command::new(crate::pdns::find_tool("dnsperf").unwrap())
            .args([
                "-s",
                "127.0.0.1",
                "-p",
                &pdns.port().to_string(),
                "-d",
                queries.to_str().unwrap(),
            ])
            .args([
                "-n",
                "2000",
                "-c",
                "4",
                "-q",
                "10",
                "-t",
                "2",
                "-e",
                "-E",
                "8:00011800c63364",
            ])
            .output()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        let writes = writer.join().unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            report
                .lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .unwrap_or("?")
                .trim()
                .to_owned()
        };
        eprintln!(
            "{algorithm}: sent {}, lost {}, codes {} ({writes} readings written)",
            field("Queries sent:"),
            field("Queries lost:"),
            field("Response codes:")
        );
        assert!(
            field("Queries lost:").starts_with("0 "),
            "{algorithm}: {report}"
        );
        let codes = field("Response codes:");
        assert!(
            codes.starts_with("NOERROR") && !codes.contains(','),
            "{algorithm}: {codes}"
        );
        assert!(writes > 0);
    }
}

#[test]
fn secrets_stay_secret_and_sql_stays_data() {
    let dir = TempDir::new("rel-sec");
    let db = dir.path().join("ha.db");
    // init sets the mode itself: owner may write, pdns's pipe processes (another
    // user) may read, whatever the umask: 0 would make a file created without
    // an explicit mode world-writable, 077 would lock pdns out.
    for umask in [0o000, 0o077] {
        let _ = std::fs::remove_file(&db);
        // SAFETY: umask(2) is async-signal-safe.
        let out = unsafe {
            Command::new(BIN)
                .args(["init", "--db"])
                .arg(&db)
                .arg(Path::new(crate::util::REPO).join("sql/example.sql"))
                .pre_exec(move || {
                    libc::umask(umask);
                    Ok(())
                })
                .output()
                .unwrap()
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mode = std::fs::metadata(&db).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o644,
            "database mode {mode:o} under umask {umask:o}"
        );
    }

    // Hostile names: quotes, LIKE wildcards, a 63-byte label, non-ASCII,
    // SQL in content. All are data, matched exactly.
    let label = "a".repeat(63);
    let hostile = [
        "o'brien.example.com".to_owned(),
        "we%rd_name.example.com".to_owned(),
        format!("{label}.example.com"),
        "xn--caf-dma.example.com".to_owned(),
    ];
    let c = Connection::open(&db).unwrap();
    for name in &hostile {
        c.execute(
            "INSERT INTO records (domain_id, name, type, content, ttl) VALUES (1, ?1, 'TXT', ?2, 60)",
            [name.as_str(), "\"'; DROP TABLE records; -- é\""],
        )
        .unwrap();
        c.execute("INSERT INTO ha_targets (name, load_source, load_secret) VALUES (?1, 'freeswitch', 'TopSecret-42')", [name])
            .unwrap();
    }
    drop(c);
    let mut p = Pipe::start(&db, &[]);
    p.ask("HELO\t5");
    for name in &hostile {
        let a = p.ask(&format!(
            "Q\t{name}\tIN\tTXT\t1\t127.0.0.1\t127.0.0.1\t127.0.0.1/32"
        ));
        assert_eq!(a.len(), 2, "{name}: {a:?}");
        assert!(a[0].ends_with("\"'; DROP TABLE records; -- é\""), "{a:?}");
        let out = Command::new(BIN)
            .args([
                "metric",
                "health",
                "--db",
                db.to_str().unwrap(),
                "--target",
                name,
                "down",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `%` and `_` matched nothing else: exactly the hostile targets are down.
    let down: i64 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM ha_health WHERE up = 0", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(down, hostile.len() as i64);
    let wild = p.ask("Q\twe_rd%name.example.com\tIN\tTXT\t1\t127.0.0.1\t127.0.0.1\t127.0.0.1/32");
    assert_eq!(wild, ["END"], "no pattern matching in lookups");

    // No output shows the secret.
    let status = p.ask("CMD\tstatus").join("\n");
    let run = |args: &[&str]| {
        let o = Command::new(BIN).args(args).output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let db_s = db.to_str().unwrap();
    for (what, text) in [
        ("CMD status", status),
        ("status", run(&["status", "--db", db_s])),
        ("explain", run(&["explain", "--db", db_s, &hostile[0]])),
        (
            "monitor",
            run(&["monitor", "--db", db_s, "--once", "--timeout", "200"]),
        ),
    ] {
        assert!(
            !text.contains("TopSecret"),
            "{what} shows the secret:\n{text}"
        );
    }

    // Held whole, the database is read through a connection closed after
    // each read: between reads the pipe holds no descriptor of it at all
    // (a per-name database's stays open read-only: scale.rs checks that).
    assert_eq!(db_access_mode(p.pid(), &db), None);
    assert!(p.finish().success());
}

/// How process `pid` holds `db` open: `Some(O_ACCMODE bits)`, or `None`
/// when it holds no descriptor of it.
pub(crate) fn db_access_mode(pid: u32, db: &Path) -> Option<u32> {
    let fd = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == db))?;
    let info = std::fs::read_to_string(format!(
        "/proc/{pid}/fdinfo/{}",
        fd.file_name().to_str().unwrap()
    ))
    .unwrap();
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap();
    Some(u32::from_str_radix(flags.trim(), 8).unwrap() & 0o3)
}
