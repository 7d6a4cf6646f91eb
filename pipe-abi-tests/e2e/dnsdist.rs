//! The cached front for per-network answers: a real dnsdist with a packet cache (the
//! deployment guide's config) in front of a real pdns_server running pdns-ha least-latency. Checks
//! that the cache never hands one network's answer to another, for resolvers that send
//! ECS and for stubs that dnsdist gives an ECS of their own, and that a change of readings
//! reaches clients within the dynamic TTL.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::pdns::{find_tool, free_port, require_all, Backend, DigResult, Pdns, TempDir};
use crate::util::{init_db, run_ok, BIN};

/// The deployment guide's dnsdist configuration ("A cached front for per-network answers"), with
/// the addresses left as `{listen}` and `{backend}`. Kept word for word in step with it:
/// `readme_shows_this_config` checks.
pub const CONFIG: &str = r#"setLocal('{listen}')
setACL({'0.0.0.0/0', '::/0'})
-- Stub resolvers send no ECS: dnsdist adds their address, cut to these prefixes.
setECSSourcePrefixV4(24)
setECSSourcePrefixV6(56)
-- useClientSubnet: add that ECS; a resolver's own ECS is kept (setECSOverride(false)).
newServer({address='{backend}', useClientSubnet=true})
-- The cache key hashes the query with its ECS option; parseECS also compares the
-- subnets, so two networks whose queries hash alike never share an entry.
pc = newPacketCache(100000, {parseECS=true})
getPool(''):setCache(pc)
"#;

/// Test-only additions: the statistics API, to see that the cache is used at all.
const STATS: &str = r#"webserver('127.0.0.1:{web}')
setWebserverConfig({apiKey='pdns-ha-test', acl='127.0.0.0/8'})
"#;

const SRV: &str = "_sip._udp.example.com";

/// Short, so that the test can wait for one: the contract is "within the dynamic TTL".
const DYNAMIC_TTL: u64 = 2;

fn tools() -> bool {
    require_all(&["pdns_server", "dig", "dnsdist"])
}

/// A running dnsdist, stopped on drop.
pub struct Dnsdist {
    child: Child,
    port: u16,
    web: u16,
    dig: PathBuf,
    dir: TempDir,
}

const READY_WITHIN: Duration = Duration::from_secs(10);

impl Dnsdist {
    /// dnsdist with `CONFIG` on a free loopback port, in front of `backend_port`.
    pub fn start(backend_port: u16) -> Dnsdist {
        let dnsdist = find_tool("dnsdist").expect("dnsdist (apt-get install dnsdist)");
        let dig = find_tool("dig").expect("dig (apt-get install dnsutils)");
        let mut last_log = String::new();
        // Another test may take the port between free_port and dnsdist's bind.
        for _ in 0..3 {
            let (port, web) = (free_port(), free_port());
            let dir = TempDir::new("dnsdist");
            let conf = dir.path().join("dnsdist.conf");
            let text = CONFIG
                .replace("{listen}", &format!("127.0.0.1:{port}"))
                .replace("{backend}", &format!("127.0.0.1:{backend_port}"))
                + &STATS.replace("{web}", &web.to_string());
            fs::write(&conf, text).unwrap();
            let log = File::create(dir.path().join("dnsdist.log")).unwrap();
            let child = Command::new(&dnsdist)
                .args(["--supervised", "--disable-syslog", "-C"])
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", dnsdist.display()));
            let mut d = Dnsdist {
                child,
                port,
                web,
                dig: dig.clone(),
                dir,
            };
            let deadline = Instant::now() + READY_WITHIN;
            loop {
                if d.child.try_wait().unwrap().is_some() {
                    last_log = d.log();
                    break;
                }
                // dnsdist answers SERVFAIL until its health check marks pdns up.
                if d.dig(&["+time=1", "+tries=1", "example.com", "SOA"])
                    .status()
                    == Some("NOERROR")
                {
                    return d;
                }
                assert!(
                    Instant::now() < deadline,
                    "dnsdist not answering after {READY_WITHIN:?}\n{}",
                    d.log()
                );
                sleep(Duration::from_millis(100));
            }
        }
        panic!("dnsdist failed to start 3 times; last log:\n{last_log}");
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dnsdist.log")).unwrap_or_default()
    }

    /// One dig through dnsdist (UDP), bounded by +time/+tries.
    pub fn dig(&self, args: &[&str]) -> DigResult {
        self.dig_batch(&[args.join(" ")]).pop().unwrap()
    }

    /// Many queries in one dig process (dig's batch mode: one line of arguments per
    /// query, `-b ADDR` included), answers in order.
    pub fn dig_batch(&self, queries: &[String]) -> Vec<DigResult> {
        let file = self.dir.path().join("batch.txt");
        fs::write(&file, queries.join("\n") + "\n").unwrap();
        let out = Command::new(&self.dig)
            .args([
                "@127.0.0.1",
                "-p",
                &self.port.to_string(),
                "+time=3",
                "+tries=1",
            ])
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut blocks: Vec<String> = Vec::new();
        for line in stdout.lines() {
            if line.starts_with("; <<>> DiG ") {
                blocks.push(String::new());
            }
            if let Some(b) = blocks.last_mut() {
                b.push_str(line);
                b.push('\n');
            }
        }
        assert_eq!(blocks.len(), queries.len(), "dig batch: {stdout}\n{stderr}");
        queries
            .iter()
            .zip(blocks)
            .map(|(q, b)| DigResult::parse(q.clone(), b, stderr.clone()))
            .collect()
    }

    /// A counter from dnsdist's statistics (`/jsonstat?command=stats`).
    pub fn stat(&self, name: &str) -> u64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.web)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /jsonstat?command=stats HTTP/1.0\r\nX-API-Key: pdns-ha-test\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        let key = format!("\"{name}\":");
        let at = body
            .find(&key)
            .unwrap_or_else(|| panic!("no {name} in dnsdist stats: {body}"));
        body[at + key.len()..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} is not a number in {body}"))
    }
}

impl Drop for Dnsdist {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example, four client networks with a favourite each, readings that stay fresh for
/// the whole test. Two networks are what ECS-sending resolvers claim; two are loopback
/// /24s, whose stubs dnsdist tags with ECS (`dig -b 127.0.1.2`).
fn db(dir: &TempDir) -> PathBuf {
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "INSERT INTO ha_networks (cidr, name) VALUES ('127.0.1.0/24', 'lo-one'), ('127.0.2.0/24', 'lo-two')",
        )
        .unwrap();
    for (net, sip, ms) in [
        ("198.51.100.0/24", 4, 4.0),
        ("203.0.113.0/24", 7, 3.0),
        ("127.0.1.0/24", 5, 1.0),
        ("127.0.2.0/24", 6, 1.0),
    ] {
        latency(&db, net, sip, ms);
    }
    db
}

fn latency(db: &Path, network: &str, sip: u8, ms: f64) {
    let target = format!("sip{sip}.example.com");
    let db = db.to_str().unwrap();
    let ms = ms.to_string();
    run_ok(&[
        "metric",
        "latency",
        "--db",
        db,
        "--network",
        network,
        "--target",
        &target,
        "--ms",
        &ms,
    ]);
}

/// The SRV target(s) with the lowest priority, e.g. `["sip4"]`.
fn best(r: &DigResult) -> Vec<String> {
    let recs: Vec<(u16, String)> = r
        .answer()
        .iter()
        .filter_map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
            [_, _, _, "SRV", prio, _, _, target] => Some((
                prio.parse().ok()?,
                target.trim_end_matches(".example.com.").to_owned(),
            )),
            _ => None,
        })
        .collect();
    let top = recs.iter().map(|r| r.0).min().unwrap_or(0);
    let mut v: Vec<String> = recs
        .into_iter()
        .filter(|r| r.0 == top)
        .map(|r| r.1)
        .collect();
    v.sort();
    v
}

/// pdns as the deployment guide recommends behind dnsdist: least-latency, ABI 3, ECS processing,
/// pdns's own caches at their defaults.
fn pdns(db: &Path) -> Pdns {
    let bin = Path::new(BIN).canonicalize().unwrap();
    let command = format!(
        "{} --db {} --algorithm least-latency --dynamic-ttl {DYNAMIC_TTL} --stale-after 3600",
        bin.display(),
        db.display()
    );
    Pdns::options(Backend::Pipe { command, abi: 3 })
        .setting("edns-subnet-processing", "yes")
        .setting("cache-ttl", "20")
        .setting("query-cache-ttl", "20")
        .setting("negquery-cache-ttl", "60")
        .setting("query-logging", "no")
        .distributor_threads(3)
        .start()
}

#[test]
fn e2e_dnsdist_cache_keeps_each_networks_answer() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("dnsdist");
    let db = db(&dir);
    let pdns = pdns(&db);
    let front = Dnsdist::start(pdns.port());

    // (dig arguments, the network's own best target, the ECS scope the client must see).
    // The /25 and the second address of each loopback /24 must share their network's
    // answer; the stubs get no ECS back (dnsdist removes the option it added).
    let clients: [(&str, &str, Option<&str>); 6] = [
        (
            "+subnet=198.51.100.0/24",
            "sip4",
            Some("198.51.100.0/24/24"),
        ),
        (
            "+subnet=198.51.100.128/25",
            "sip4",
            Some("198.51.100.128/25/24"),
        ),
        ("+subnet=203.0.113.0/24", "sip7", Some("203.0.113.0/24/24")),
        ("-b 127.0.1.2", "sip5", None),
        ("-b 127.0.1.3", "sip5", None),
        ("-b 127.0.2.2", "sip6", None),
    ];
    const ROUNDS: usize = 3;
    const PER_CLIENT: usize = 40;
    let mut asked = 0;
    let hits_before = front.stat("cache-hits");
    for round in 0..ROUNDS {
        // Interleaved, so that every network's entry sits in the cache while the others
        // ask; the rounds straddle the dynamic TTL, so entries expire and refill too.
        let queries: Vec<String> = (0..PER_CLIENT)
            .flat_map(|_| clients.iter().map(|c| format!("{} {SRV} SRV", c.0)))
            .collect();
        let answers = front.dig_batch(&queries);
        for (i, r) in answers.iter().enumerate() {
            let (args, want, ecs) = clients[i % clients.len()];
            assert_eq!(
                r.status(),
                Some("NOERROR"),
                "round {round}, {args}:\n{}",
                r.raw
            );
            assert_eq!(
                r.answer().len(),
                8,
                "round {round}, {args}: the full set\n{}",
                r.raw
            );
            assert_eq!(
                best(r),
                [want],
                "round {round}, query {i} ({args}) got another network's answer:\n{}",
                r.raw
            );
            assert_eq!(r.client_subnet(), ecs, "round {round}, {args}:\n{}", r.raw);
        }
        asked += answers.len() as u64;
        sleep(Duration::from_millis(1100));
    }
    let hits = front.stat("cache-hits") - hits_before;
    // At most one miss per cache key (6 keys) per TTL period: nearly all are hits.
    assert!(
        hits * 10 >= asked * 8,
        "only {hits} of {asked} answers came from dnsdist's cache"
    );

    // Site B's readings change: sip8 becomes its fastest. Clients see it once the cached
    // answer's TTL runs out (the pipe itself re-reads the database within a second). The
    // worst case is a change just after the entry was filled, so fill it first: wait out
    // the old entry, then one query caches a fresh answer for the whole TTL.
    sleep(Duration::from_secs(DYNAMIC_TTL) + Duration::from_millis(200));
    let r = front.dig(&["+subnet=198.51.100.0/24", SRV, "SRV"]);
    assert_eq!(best(&r), ["sip4"], "{}", r.raw);
    latency(&db, "198.51.100.0/24", 8, 1.0);
    let changed = Instant::now();
    let limit = Duration::from_secs(DYNAMIC_TTL) + Duration::from_secs(2);
    loop {
        let r = front.dig(&["+subnet=198.51.100.0/24", SRV, "SRV"]);
        if best(&r) == ["sip8"] {
            break;
        }
        assert_eq!(
            best(&r),
            ["sip4"],
            "neither the old nor the new answer:\n{}",
            r.raw
        );
        assert!(
            changed.elapsed() < limit,
            "new readings not served through dnsdist within {limit:?} (dynamic TTL {DYNAMIC_TTL} s)"
        );
        sleep(Duration::from_millis(100));
    }
    eprintln!(
        "dnsdist: {hits} of {asked} answers from the cache; a change reached clients in {:?}",
        changed.elapsed()
    );
    // The other networks keep their own answers.
    for (args, want, _) in [clients[2], clients[3], clients[5]] {
        let q: Vec<&str> = args.split(' ').chain([SRV, "SRV"]).collect();
        assert_eq!(best(&front.dig(&q)), [want], "{args} after site B's change");
    }
}

#[test]
fn readme_shows_this_config() {
    let readme =
        fs::read_to_string(Path::new(crate::util::REPO).join("docs/deployment.md")).unwrap();
    let shown = CONFIG
        .replace("{listen}", "0.0.0.0:53")
        .replace("{backend}", "127.0.0.1:5300");
    assert!(
        readme.contains(&shown),
        "docs/deployment.md's dnsdist config differs from the tested one; it should read:\n{shown}"
    );
}
