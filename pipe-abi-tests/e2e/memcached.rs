//! The memcached layer with real memcached servers: two DNS nodes with
//! their own SQLite files answer from readings published by a third party,
//! and a killed, restarted or hanging memcached costs milliseconds, never
//! pdns's pipe-timeout.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use crate::pdns::{find_tool, require_all, TempDir};
use crate::util::{init_db, run_ok, Pipe};

/// Worst single lookup tolerated while memcached misbehaves: a quarter of
/// pdns's 2000 ms pipe-timeout, fifty times the 10 ms memcached timeout (a
/// debug build on a loaded CI machine needs the room).
const LOOKUP_BOUND: Duration = Duration::from_millis(500);

/// How long shared readings may take to show: one fetch interval (1 s),
/// or the longest back-off (5 s) after an outage, plus a margin for a
/// loaded 2-core machine (processes started by the test run slowly there).
const SHARED_WITHIN: Duration = Duration::from_secs(12);
/// `--stale-after` for every writer, pipe and `status` here: on a loaded machine the steps of
/// one test can take longer than the default 30 s, and a reading that expires halfway would
/// fail a test about sharing, not about expiry (e2e::live tests that).
const STALE_AFTER: &str = "600";

pub struct Memcached {
    child: Child,
    pub port: u16,
}

impl Memcached {
    pub fn start(port: u16) -> Self {
        let bin = find_tool("memcached").expect("memcached");
        let mut cmd = Command::new(bin);
        cmd.args([
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-m",
            "8",
            "-t",
            "1",
        ]);
        // memcached refuses to run as root unless told which user to be.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "root"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "memcached did not listen on {port}"
            );
            sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    pub fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A "memcached" that accepts connections and never says a word, for
/// `lifetime` at most.
pub fn silent_server(lifetime: Duration) -> (std::net::SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let holder = thread::spawn(move || {
        let mut held = Vec::new();
        let end = Instant::now() + lifetime;
        while Instant::now() < end {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => sleep(Duration::from_millis(5)),
            }
        }
    });
    (addr, holder)
}

fn node_db(dir: &TempDir, name: &str) -> PathBuf {
    let db = dir.path().join(name);
    init_db(&db, &["sql/example.sql"]);
    db
}

/// `pdns-ha metric ...` against `db`, published to `servers`.
fn metric(db: &Path, servers: &str, args: &[&str]) {
    let db = db.to_str().unwrap();
    run_ok(
        &[
            &[
                "metric",
                args[0],
                "--db",
                db,
                "--memcached",
                servers,
                "--stale-after",
                STALE_AFTER,
            ],
            &args[1..],
        ]
        .concat(),
    );
}

const SRV_FROM_SITE_B: &str =
    "Q\t_sip._udp.example.com\tIN\tANY\t1\t127.0.0.1\t127.0.0.1\t198.51.100.0/24";

/// SRV targets in the answer, as `prio target`, best first, and how long
/// the lookup took.
fn ask(p: &mut Pipe) -> (Vec<String>, Duration) {
    let t = Instant::now();
    let answer = p.ask(SRV_FROM_SITE_B);
    let took = t.elapsed();
    let mut srv: Vec<String> = answer
        .iter()
        .filter_map(|l| match l.split('\t').collect::<Vec<_>>()[..] {
            [_, _, _, _, _, "SRV", _, _, prio, rest] => Some(format!(
                "{prio:0>3} {}",
                rest.rsplit(' ').next()?.trim_end_matches(".example.com.")
            )),
            _ => None,
        })
        .collect();
    srv.sort();
    assert_eq!(answer.last().map(String::as_str), Some("END"));
    (srv, took)
}

/// Asks for `dur`: the worst lookup, how many took over `over`, and how
/// many there were. No answer may be empty.
fn timed_lookups(p: &mut Pipe, dur: Duration, over: Duration) -> (Duration, usize, usize) {
    let start = Instant::now();
    let (mut worst, mut slow, mut n) = (Duration::ZERO, 0, 0);
    while start.elapsed() < dur {
        let (srv, took) = ask(p);
        assert!(!srv.is_empty(), "never an empty answer");
        worst = worst.max(took);
        slow += usize::from(took > over);
        n += 1;
    }
    (worst, slow, n)
}

/// Lookups over `over` in two seconds from a pipe without memcached: what
/// the machine's own load costs, so that timing checks hold on two busy
/// cores without hiding a real stall.
fn machine_noise(db: &Path, over: Duration) -> usize {
    let mut p = Pipe::start(db, &["--algorithm", "least-latency"]);
    p.ask("HELO\t3");
    timed_lookups(&mut p, Duration::from_secs(2), over).1
}

fn pipe(db: &Path, servers: &str, log: &Path) -> Pipe {
    let args = [
        "--algorithm",
        "least-latency",
        "--memcached",
        servers,
        "--stale-after",
        STALE_AFTER,
    ];
    let mut p = Pipe::start_with_log(db, &args, Stdio::from(File::create(log).unwrap()));
    // ABI 5: the same question format as 3, and CMD status for counters.
    p.ask("HELO\t5");
    p
}

/// Asks until `ok` holds, bounded; every lookup must stay under the bound.
fn until(p: &mut Pipe, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
    let start = Instant::now();
    loop {
        let (srv, took) = ask(p);
        assert!(took < LOOKUP_BOUND, "{what}: a lookup took {took:?}");
        if ok(&srv) {
            return srv;
        }
        assert!(
            start.elapsed() < SHARED_WITHIN,
            "{what}: not seen within {SHARED_WITHIN:?}: {srv:?}"
        );
        sleep(Duration::from_millis(20));
    }
}

fn tools() -> bool {
    require_all(&["memcached"])
}

#[test]
fn two_nodes_share_readings_and_ride_out_an_outage() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("memcached-share");
    let (a, b) = (
        Memcached::start(Memcached::free_port()),
        Memcached::start(Memcached::free_port()),
    );
    let servers = format!("127.0.0.1:{},127.0.0.1:{}", a.port, b.port);
    // Three SQLite files: the monitoring site and two DNS nodes. Only
    // memcached connects them.
    let (site, node1, node2) = (
        node_db(&dir, "site.db"),
        node_db(&dir, "node1.db"),
        node_db(&dir, "node2.db"),
    );
    let (log1, log2) = (dir.path().join("node1.log"), dir.path().join("node2.log"));
    let mut p1 = pipe(&node1, &servers, &log1);
    let mut p2 = pipe(&node2, &servers, &log2);
    assert_eq!(
        ask(&mut p1).0[0],
        "010 sip1",
        "static answer without readings"
    );

    // The site measures: sip7 is closest to site B, sip1 is down.
    for (sip, ms) in [(7, "2"), (4, "9"), (1, "1")] {
        let target = format!("sip{sip}.example.com");
        metric(
            &site,
            &servers,
            &[
                "latency",
                "--network",
                "198.51.100.0/24",
                "--target",
                &target,
                "--ms",
                ms,
            ],
        );
    }
    metric(
        &site,
        &servers,
        &["health", "--target", "sip1.example.com", "down"],
    );
    let shared = |srv: &[String]| {
        srv.first().map(String::as_str) == Some("010 sip7")
            && !srv.iter().any(|s| s.ends_with("sip1"))
    };
    for p in [&mut p1, &mut p2] {
        until(p, "readings from memcached", shared);
    }

    // One memcached dies: lookups stay fast and correct for the share on
    // the other server; sip1's and sip7's keys may have been on either.
    let mut a = a;
    let over = Duration::from_millis(20);
    let noise = machine_noise(&node1, over);
    a.kill();
    let (worst, slow, n) = timed_lookups(&mut p1, Duration::from_secs(2), over);
    assert!(
        worst < LOOKUP_BOUND,
        "worst lookup during the outage: {worst:?}"
    );
    assert!(
        slow <= 3 + 2 * noise,
        "{slow} of {n} lookups over 20 ms during a 2 s outage ({noise} without memcached)"
    );

    // It comes back (empty, as a restarted memcached is): sharing resumes
    // for what is published from now on.
    let _a = Memcached::start(a.port);
    metric(
        &site,
        &servers,
        &["health", "--target", "sip1.example.com", "up"],
    );
    metric(
        &site,
        &servers,
        &[
            "latency",
            "--network",
            "198.51.100.0/24",
            "--target",
            "sip1.example.com",
            "--ms",
            "1",
        ],
    );
    for p in [&mut p1, &mut p2] {
        until(p, "sharing after the restart", |srv| {
            srv.first().map(String::as_str) == Some("010 sip1")
        });
    }
    // The new readings may all sit on the other server: node1 says the restarted one is
    // back once its back-off lets it ask again, which lookups drive.
    let back = || std::fs::read_to_string(&log1).is_ok_and(|l| l.contains("is back"));
    until(&mut p1, "the restarted memcached said to be back", |_| {
        back()
    });
    drop((p1, p2));
    let log = std::fs::read_to_string(&log1).unwrap();
    let warnings = log
        .lines()
        // The start-up warning about the missing key file is not about the outage.
        .filter(|l| l.contains("memcached") && l.contains("WARN"))
        .filter(|l| !l.contains("without --memcached-key-file"))
        .count();
    assert!(
        (1..=2).contains(&warnings),
        "one warning per outage, not a flood:\n{log}"
    );
    assert!(log.contains("is back"), "{log}");
}

#[test]
fn a_memcached_that_never_answers_costs_one_timeout() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("memcached-hang");
    let db = node_db(&dir, "node.db");
    let (addr, holder) = silent_server(Duration::from_secs(20));
    let log = dir.path().join("node.log");
    let mut p = pipe(&db, &addr.to_string(), &log);
    let (worst, _, n) = timed_lookups(&mut p, Duration::from_secs(3), LOOKUP_BOUND);
    // Each failed exchange costs one 10 ms timeout, and back-off (0.5 s,
    // 1 s, 2 s ...) keeps them to a handful in 3 s whatever the lookup rate:
    // counted by the pipe itself rather than timed, so a busy machine
    // cannot blur it.
    let status = p.ask("CMD\tstatus").join("\n");
    let failed: u64 = status
        .split("failed exchanges: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no memcached line in:\n{status}"));
    assert!(worst < LOOKUP_BOUND, "worst lookup: {worst:?}");
    assert!(
        (1..=4).contains(&failed),
        "{failed} failed exchanges in {n} lookups over 3 s"
    );
    drop(p);
    drop(holder);
}

/// Fusion across hosts (issue 11): a vantage monitor at site-b and an agent pushing with
/// `metric` write different sources of the same (site-b, sip7) from their own SQLite files;
/// a DNS node with no readings of its own fetches both keys and ranks by the fused figure.
/// Either source alone would put sip7 first (the probe: about 1 ms; the push: the only
/// measured target), the two together put sip4 first.
#[test]
fn sources_written_on_two_hosts_fuse_on_a_dns_node() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("memcached-fusion");
    let mc = Memcached::start(Memcached::free_port());
    let servers = format!("127.0.0.1:{}", mc.port);
    let (vantage, agent, node) = (
        node_db(&dir, "vantage.db"),
        node_db(&dir, "agent.db"),
        node_db(&dir, "node.db"),
    );
    let near = crate::monitor::Responder::start("127.0.0.1:0", Duration::ZERO);
    let far = crate::monitor::Responder::start("127.0.0.1:0", Duration::from_millis(60));
    crate::monitor::sql(
        &vantage,
        &format!(
            "UPDATE ha_targets SET probe = 'none', load_source = 'none';
             UPDATE ha_targets SET probe = 'sip-udp', probe_address = '{}' WHERE name = 'sip7.example.com';
             UPDATE ha_targets SET probe = 'sip-udp', probe_address = '{}' WHERE name = 'sip4.example.com';",
            near.addr, far.addr
        ),
    );
    run_ok(&[
        "monitor",
        "--once",
        "--timeout",
        "1000",
        "--network",
        "site-b",
        "--stale-after",
        STALE_AFTER,
        "--monitor-id",
        "site-b-probe",
        "--memcached",
        &servers,
        "--db",
        vantage.to_str().unwrap(),
    ]);
    let log = dir.path().join("node.log");
    let mut p = pipe(&node, &servers, &log);
    until(&mut p, "the vantage probe alone", |srv| {
        srv.first().map(String::as_str) == Some("010 sip7")
    });
    metric(
        &agent,
        &servers,
        &[
            "latency",
            "--network",
            "198.51.100.0/24",
            "--target",
            "sip7.example.com",
            "--ms",
            "200",
        ],
    );
    let fused = until(&mut p, "probe and push fused", |srv| {
        srv.first().map(String::as_str) == Some("010 sip4")
    });
    assert_eq!(fused[1], "020 sip7", "{fused:?}");
    let node_s = node.to_str().unwrap();
    let out = run_ok(&[
        "status",
        "--memcached",
        &servers,
        "--stale-after",
        STALE_AFTER,
        "--db",
        node_s,
    ]);
    let status = String::from_utf8_lossy(&out.stdout);
    let sip7 = status.lines().find(|l| l.starts_with("sip7")).unwrap();
    assert!(
        sip7.contains("site-b: ")
            && sip7.contains(" = monitor ")
            && sip7.contains(" + metric 200.0/200.0"),
        "{status}"
    );
    assert_eq!(sip7.matches("(memcached)").count(), 3, "{status}");
}
