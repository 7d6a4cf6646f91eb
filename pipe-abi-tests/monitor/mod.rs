//! `pdns-ha monitor` end to end: SIP OPTIONS responders with different
//! delays and a closed port, FreeSWITCH Event Socket stand-ins with faults,
//! and pdns_server answering from what the monitor wrote.

pub(crate) mod alerts;
mod esl;
mod health;
pub(crate) mod kamailio;
pub(crate) mod openmetrics;
mod pipe_counters;
mod service_tls;
mod vantage;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::esl_standin::{self, Config, Fault};
use crate::pdns::{require_all, Backend, DigResult, Pdns, TempDir};
use crate::util::{init_db, run_ok, BIN};

/// A UDP SIP endpoint that answers every OPTIONS after `delay` with the
/// code it is set to (200 OK to begin with). Stops when dropped.
pub(crate) struct Responder {
    pub(crate) addr: SocketAddr,
    code: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    pub(crate) fn start(addr: &str, delay: Duration) -> Self {
        let sock = UdpSocket::bind(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let (code, stop) = (
            Arc::new(AtomicU16::new(200)),
            Arc::new(AtomicBool::new(false)),
        );
        let (c, flag) = (Arc::clone(&code), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let req = String::from_utf8_lossy(&buf[..n]);
                // A response echoes the request's dialog headers (RFC 3261 §8.2.6).
                let echoed: String = req
                    .lines()
                    .filter(|l| {
                        ["via:", "from:", "to:", "call-id:", "cseq:"]
                            .iter()
                            .any(|h| l.to_ascii_lowercase().starts_with(h))
                    })
                    .map(|l| format!("{l}\r\n"))
                    .collect();
                thread::sleep(delay);
                let code = c.load(Ordering::Relaxed);
                // The phrases FreeSWITCH and Kamailio send.
                let reason = match code {
                    200 => "OK",
                    404 => "Not Found",
                    503 => "Maximum Calls In Progress",
                    _ => "Whatever",
                };
                let reply = format!("SIP/2.0 {code} {reason}\r\n{echoed}Content-Length: 0\r\n\r\n");
                let _ = sock.send_to(reply.as_bytes(), from);
            }
        });
        Self {
            addr,
            code,
            stop,
            thread: Some(thread),
        }
    }

    /// A responder on a free loopback port answering `code` at once.
    pub(crate) fn with_code(code: u16) -> Self {
        let r = Self::start("127.0.0.1:0", Duration::ZERO);
        r.set(code);
        r
    }

    /// Answers `code` from now on.
    pub(crate) fn set(&self, code: u16) {
        self.code.store(code, Ordering::Relaxed);
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A loopback UDP port with nothing behind it: probes see ICMP port
/// unreachable at once.
pub(crate) fn closed_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The example with every target unprobed, plus the loopback network, so
/// each test configures just the targets it drives.
pub(crate) fn db(dir: &TempDir) -> PathBuf {
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    sql(
        &db,
        "UPDATE ha_targets SET probe = 'none', load_source = 'none';
         INSERT INTO ha_networks (cidr, name) VALUES ('127.0.0.0/8', 'loopback');",
    );
    srv_ports_follow_probes(&db);
    db
}

/// The monitor probes each `_sip._udp` SRV record at its own port (issue 18), and the
/// tests' responders listen on ports the kernel picks: a target given a `probe_address`
/// gets its SRV record's port changed to that address's port, as a deployment's records
/// name the port its server listens on. A trigger, so every test that sets a
/// `probe_address` (also later, to a dead one) keeps its records in step.
pub(crate) fn srv_ports_follow_probes(db: &Path) {
    // content = 'weight port target': keep the weight and target, take the digits after
    // the address's last ':' as the port.
    sql(
        db,
        "CREATE TRIGGER test_srv_port_follows_probe AFTER UPDATE OF probe_address ON ha_targets
         WHEN NEW.probe_address IS NOT NULL
         BEGIN
           UPDATE records SET content =
             substr(content, 1, instr(content, ' '))
             || substr(NEW.probe_address, length(rtrim(NEW.probe_address, '0123456789')) + 1)
             || substr(substr(content, instr(content, ' ') + 1),
                       instr(substr(content, instr(content, ' ') + 1), ' '))
           WHERE type = 'SRV' AND name = '_sip._udp.example.com'
             AND lower(content) LIKE '% ' || NEW.name || '.';
         END;",
    );
}

pub(crate) fn sql(db: &Path, batch: &str) {
    Connection::open(db).unwrap().execute_batch(batch).unwrap();
}

fn monitor_once(db: &Path, timeout_ms: u32) -> (Output, Duration) {
    let start = Instant::now();
    let timeout = timeout_ms.to_string();
    let db = db.to_str().unwrap();
    let out = run_ok(&["monitor", "--once", "--timeout", &timeout, "--db", db]);
    (out, start.elapsed())
}

pub(crate) fn status(db: &Path) -> String {
    String::from_utf8(run_ok(&["status", "--db", db.to_str().unwrap()]).stdout).unwrap()
}

pub(crate) fn start_pdns(db: &Path, algorithm: &str) -> Pdns {
    Pdns::options(Backend::pdns_ha(db, &format!("--algorithm {algorithm}"))).start()
}

/// `prio weight target` for each SRV record, lowest priority first.
pub(crate) fn srv(r: &DigResult) -> Vec<(u16, u16, String)> {
    let mut v: Vec<_> = r
        .answer()
        .iter()
        .filter_map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
            [_, _, _, "SRV", p, w, _, t] => Some((
                p.parse().unwrap(),
                w.parse().unwrap(),
                t.trim_end_matches(".example.com.").to_owned(),
            )),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

pub(crate) fn find<'a>(
    answer: &'a [(u16, u16, String)],
    target: &str,
) -> Option<&'a (u16, u16, String)> {
    answer.iter().find(|(_, _, t)| t == target)
}

#[test]
fn monitor_health_and_latency_drive_the_answer() {
    if !require_all(&["pdns_server", "dig"]) {
        return;
    }
    let dir = TempDir::new("monitor-sip");
    let db = db(&dir);
    let fast = Responder::start("127.0.0.1:0", Duration::ZERO);
    let slow = Responder::start("127.0.0.1:0", Duration::from_millis(60));
    let dead = closed_port();
    sql(
        &db,
        &format!(
            "UPDATE ha_targets SET probe = 'sip-udp', probe_address = '{}' WHERE name = 'sip4.example.com';
             UPDATE ha_targets SET probe = 'sip-udp', probe_address = '{}' WHERE name = 'sip1.example.com';
             UPDATE ha_targets SET probe = 'sip-udp', probe_address = '{dead}' WHERE name = 'sip2.example.com';",
            fast.addr, slow.addr
        ),
    );
    monitor_once(&db, 500);
    let table = status(&db);
    let line = |t: &str| {
        table
            .lines()
            .find(|l| l.starts_with(t))
            .unwrap_or("")
            .to_owned()
    };
    assert!(line("sip4.example.com").contains(" up "), "{table}");
    assert!(line("sip1.example.com").contains(" up "), "{table}");
    assert!(line("sip2.example.com").contains("DOWN"), "{table}");
    assert!(line("sip3.example.com").contains("unknown"), "{table}");

    // From 127.0.0.1 (network `loopback`, no samples of its own, so the
    // monitor host's `*` samples): the fast server first, the slow one
    // after it, the dead one gone, the unmeasured after the measured.
    let pdns = start_pdns(&db, "least-latency");
    let a = srv(&pdns.dig(&["_sip._udp.example.com", "SRV"]));
    assert_eq!(a[0].2, "sip4", "{a:?}");
    assert!(find(&a, "sip1").unwrap().0 > a[0].0, "{a:?}");
    assert!(find(&a, "sip2").is_none(), "{a:?}");
    assert_eq!(a.len(), 7, "{a:?}");

    // The dead one recovers: back after --up-after (2) good probes.
    let _revived = Responder::start(&dead.to_string(), Duration::ZERO);
    monitor_once(&db, 500);
    assert!(
        find(&srv(&pdns.dig(&["_sip._udp.example.com", "SRV"])), "sip2").is_none(),
        "one good probe is not enough"
    );
    monitor_once(&db, 500);
    let deadline = Instant::now() + Duration::from_secs(5);
    while find(&srv(&pdns.dig(&["_sip._udp.example.com", "SRV"])), "sip2").is_none() {
        assert!(
            Instant::now() < deadline,
            "sip2 did not come back:\n{}",
            status(&db)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn monitor_reads_freeswitch_load_and_survives_broken_servers() {
    if !require_all(&["pdns_server", "dig"]) {
        return;
    }
    let dir = TempDir::new("monitor-esl");
    let db = db(&dir);
    let standin = |sessions, password: &str, fault| {
        esl_standin::start(Config {
            sessions,
            max_sessions: 1000,
            password: password.into(),
            fault,
            ..Config::default()
        })
    };
    let busy = standin(900, "ClueCon", Fault::None);
    let idle = standin(100, "ClueCon", Fault::None);
    let wrong_password = standin(5, "s3cret-other", Fault::None);
    let broken = [
        Fault::Silent,
        Fault::MidBodyClose,
        Fault::Silent,
        Fault::Silent,
    ]
    .map(|f| standin(5, "ClueCon", f));
    let mut set = vec![
        ("sip1.example.com", busy.addr()),
        ("sip2.example.com", idle.addr()),
        ("sip3.example.com", wrong_password.addr()),
    ];
    for (i, b) in broken.iter().enumerate() {
        set.push((
            [
                "sip4.example.com",
                "sip5.example.com",
                "sip6.example.com",
                "sip7.example.com",
            ][i],
            b.addr(),
        ));
    }
    // The password from a file only the monitor's user reads, not from
    // the database (ha_targets.load_secret_file).
    let secret = dir.path().join("esl-password");
    std::fs::write(&secret, "ClueCon\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    for (name, addr) in &set {
        sql(
            &db,
            &format!(
                "UPDATE ha_targets SET load_source = 'freeswitch', load_address = '{addr}', \
                 load_secret = NULL, load_secret_file = '{}' WHERE name = '{name}'",
                secret.display()
            ),
        );
    }
    // Three silent servers: one round must still take about one timeout,
    // not three; the rest of the 3 s is room for start-up on a loaded machine.
    let (out, took) = monitor_once(&db, 1000);
    assert!(
        took < Duration::from_millis(2500),
        "a round took {took:?} with 1000 ms probes"
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("authentication rejected"), "{log}");
    assert!(
        !log.contains("ClueCon") && !log.contains("s3cret"),
        "a password in the log:\n{log}"
    );

    let loads: Vec<(String, i64, Option<i64>)> = Connection::open(&db)
        .unwrap()
        .prepare("SELECT target, sessions, max_sessions FROM ha_load ORDER BY target")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        loads,
        [
            ("sip1.example.com".into(), 900, Some(1000)),
            ("sip2.example.com".into(), 100, Some(1000))
        ],
        "broken servers have unknown load, never zero"
    );
    assert!(!status(&db).contains("ClueCon"), "status shows no secret");

    let pdns = start_pdns(&db, "least-load");
    let a = srv(&pdns.dig(&["_sip._udp.example.com", "SRV"]));
    assert_eq!(
        find(&a, "sip2").map(|x| (x.0, x.1)),
        Some((10, 900)),
        "{a:?}"
    );
    assert_eq!(
        find(&a, "sip1").map(|x| (x.0, x.1)),
        Some((10, 100)),
        "{a:?}"
    );

    // Load moves; the next round moves the weights.
    busy.set_sessions(200);
    idle.set_sessions(700);
    monitor_once(&db, 500);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = srv(&pdns.dig(&["_sip._udp.example.com", "SRV"]));
        if find(&a, "sip1").map(|x| x.1) == Some(800) && find(&a, "sip2").map(|x| x.1) == Some(300)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "weights did not follow the load: {a:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// sip4's place in the pipe's least-latency answer from 127.0.0.1, or None.
fn sip4_in_answer(p: &mut crate::util::Pipe) -> bool {
    let a = p.ask("Q\t_sip._udp.example.com\tIN\tANY\t1\t127.0.0.1\t127.0.0.1\t127.0.0.1/32");
    a.iter().any(|l| l.ends_with(" sip4.example.com."))
}

#[test]
fn a_flapping_target_does_not_flap_the_answer() {
    let dir = TempDir::new("monitor-flap");
    let db = db(&dir);
    let port = closed_port();
    sql(
        &db,
        &format!("UPDATE ha_targets SET probe = 'sip-udp', probe_address = '{port}' WHERE name = 'sip4.example.com'"),
    );
    let mut p = crate::util::Pipe::start(&db, &["--algorithm", "least-latency"]);
    p.ask("HELO\t3");
    // (responder up?, sip4 served after this round?) with --down-after 3
    // and --up-after 2: blips shorter than the thresholds change nothing.
    let rounds = [
        (true, true),
        (false, true),
        (true, true),
        (false, true),
        (false, true),
        (true, true),
        (false, true),
        (false, true),
        (false, false),
        (true, false),
        (false, false),
        (true, false),
        (true, true),
    ];
    for (i, (up, served)) in rounds.into_iter().enumerate() {
        let responder = up.then(|| Responder::start(&port.to_string(), Duration::ZERO));
        monitor_once(&db, 300);
        drop(responder);
        // The pipe re-reads within 250 ms; allow a little more.
        let deadline = Instant::now() + Duration::from_secs(3);
        while sip4_in_answer(&mut p) != served {
            assert!(
                Instant::now() < deadline,
                "round {i}: sip4 served should be {served}\n{}",
                status(&db)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_monitor_killed_mid_write_leaves_no_torn_round() {
    let dir = TempDir::new("monitor-kill");
    let db = db(&dir);
    // Ten TCP-probed targets that all answer: every round writes ten rows.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    sql(
        &db,
        &format!(
            "UPDATE ha_targets SET probe = 'tcp', probe_address = '{addr}'; DELETE FROM ha_health;"
        ),
    );
    let targets: i64 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM ha_targets", [], |r| r.get(0))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, reader_db) = (Arc::clone(&stop), db.clone());
    // A reader sees either no round or a whole one, never part of one.
    let reader = thread::spawn(move || {
        let c = Connection::open(&reader_db).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10_000 {
            if flag.load(Ordering::Relaxed) {
                break;
            }
            if let Ok(n) = c.query_row("SELECT count(*) FROM ha_health", [], |r| r.get::<_, i64>(0))
            {
                seen.insert(n);
            }
            thread::sleep(Duration::from_millis(2));
        }
        seen
    });
    let mut rng = 0x2545_f491_u64;
    for _ in 0..6 {
        let mut child = Command::new(BIN)
            .args(["monitor", "--interval", "1", "--timeout", "200", "--db"])
            .arg(&db)
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        thread::sleep(Duration::from_millis(100 + rng % 1200));
        crate::util::kill(child.id());
        let _ = child.wait();
    }
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert!(
        seen.iter().all(|&n| n == 0 || n == targets),
        "row counts seen: {seen:?}"
    );
    assert!(
        seen.contains(&targets),
        "no round was ever written: {seen:?}"
    );
    let check: String = Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(listener);
}
