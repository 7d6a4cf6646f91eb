//! Live answers end to end: pdns_server with pdns-ha's least-latency and
//! least-load, metrics pushed with `pdns-ha metric`, answers read with dig
//! from different client networks (ECS and loopback source addresses).

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::pdns::{require_all, Backend, DigResult, Pdns, TempDir};
use crate::util::{init_db, run_ok};

/// How long a pushed reading may take to show in every coprocess's
/// answers: the contract is about a second; the margin is for CI.
const VISIBLE_WITHIN: Duration = Duration::from_secs(5);

fn tools() -> bool {
    require_all(&["pdns_server", "dig"])
}

/// The example plus two loopback "networks", so `dig -b 127.0.0.x` can
/// play clients of different sites without ECS.
fn live_db(dir: &TempDir) -> PathBuf {
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "INSERT INTO ha_networks (cidr, name) VALUES ('127.0.0.2/32', 'lo-two'), ('127.0.0.3/32', 'lo-three')",
        )
        .unwrap();
    db
}

fn metric(db: &Path, args: &[&str]) {
    run_ok(
        &[
            &["metric", args[0], "--db", db.to_str().unwrap()],
            &args[1..],
        ]
        .concat(),
    );
}

fn latency(db: &Path, network: &str, sip: u8, ms: f64) {
    let target = format!("sip{sip}.example.com");
    metric(
        db,
        &[
            "latency",
            "--network",
            network,
            "--target",
            &target,
            "--ms",
            &ms.to_string(),
        ],
    );
}

fn load(db: &Path, sip: u8, sessions: u32, max: Option<u32>) {
    let (target, sessions) = (format!("sip{sip}.example.com"), sessions.to_string());
    let mut args = vec!["load", "--target", &target, "--sessions", &sessions];
    let max = max.map(|m| m.to_string());
    if let Some(m) = &max {
        args.extend(["--max", m]);
    }
    metric(db, &args);
}

fn start(db: &Path, algorithm: &str) -> Pdns {
    // Three distributor threads: consecutive queries reach different
    // coprocesses, and every one of them must see the readings.
    Pdns::options(Backend::pdns_ha(db, &format!("--algorithm {algorithm}")))
        .setting("edns-subnet-processing", "yes")
        .distributor_threads(3)
        .start()
}

/// SRV answer lines as `prio weight target`, lowest priority first and
/// heaviest first within a priority.
fn srv(r: &DigResult) -> Vec<String> {
    let mut v: Vec<(u16, std::cmp::Reverse<u16>, String)> = r
        .answer()
        .iter()
        .filter_map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
            [_, _, _, "SRV", prio, weight, _, target] => Some((
                prio.parse().unwrap(),
                std::cmp::Reverse(weight.parse().unwrap()),
                format!(
                    "{prio} {weight} {}",
                    target.trim_end_matches(".example.com.")
                ),
            )),
            _ => None,
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, _, s)| s).collect()
}

/// Polls until `ok` holds for four answers in a row (so every coprocess
/// agrees), or fails with the last answer.
fn until(pdns: &Pdns, args: &[&str], what: &str, ok: impl Fn(&DigResult) -> bool) -> DigResult {
    let start = Instant::now();
    let mut streak = 0;
    loop {
        let r = pdns.dig(args);
        streak = if ok(&r) { streak + 1 } else { 0 };
        if streak == 4 {
            return r;
        }
        assert!(
            start.elapsed() < VISIBLE_WITHIN,
            "{what}: not seen within {VISIBLE_WITHIN:?}; last answer:\n{}\n--- pdns log ---\n{}",
            r.raw,
            pdns.log_tail(30)
        );
        sleep(Duration::from_millis(50));
    }
}

const SRV: &str = "_sip._udp.example.com";

#[test]
fn e2e_least_latency_follows_the_clients_network() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("live-latency");
    let db = live_db(&dir);
    // Site B is close to sip4, site C to sip7; the loopback clients each
    // have a favourite of their own.
    for (net, sip, ms) in [
        ("198.51.100.0/24", 4, 4.0),
        ("198.51.100.0/24", 1, 60.0),
        ("203.0.113.0/24", 7, 3.0),
        ("203.0.113.0/24", 4, 70.0),
        ("127.0.0.2/32", 5, 1.0),
        ("127.0.0.3/32", 6, 1.0),
    ] {
        latency(&db, net, sip, ms);
    }
    let pdns = start(&db, "least-latency");
    let first = |r: &DigResult| srv(r).first().cloned().unwrap_or_default();

    for (subnet, best, scope) in [
        ("198.51.100.0/24", "10 20 sip4", "24"),
        ("203.0.113.0/24", "10 10 sip7", "24"),
    ] {
        let arg = format!("+subnet={subnet}");
        let r = until(&pdns, &[&arg, SRV, "SRV"], subnet, |r| first(r) == best);
        assert_eq!(srv(&r).len(), 8, "the full set, best first: {:?}", srv(&r));
        assert_eq!(
            r.client_subnet(),
            Some(format!("{subnet}/{scope}").as_str()),
            "ECS scope = matched prefix"
        );
    }
    // A /25 inside site B still belongs to site B, and the scope says /24.
    let r = until(
        &pdns,
        &["+subnet=198.51.100.128/25", SRV, "SRV"],
        "/25",
        |r| first(r) == "10 20 sip4",
    );
    assert_eq!(r.client_subnet(), Some("198.51.100.128/25/24"));

    for (source, best) in [("127.0.0.2", "10 20 sip5"), ("127.0.0.3", "10 10 sip6")] {
        until(&pdns, &["-b", source, SRV, "SRV"], source, |r| {
            first(r) == best
        });
    }
    // A client in no known network gets the stored answer.
    let r = until(
        &pdns,
        &["+subnet=192.0.2.0/24", SRV, "SRV"],
        "unknown network",
        |r| first(r) == "10 50 sip1",
    );
    assert_eq!(srv(&r)[7], "30 10 sip8");
}

#[test]
fn e2e_least_load_and_health() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("live-load");
    let db = live_db(&dir);
    load(&db, 1, 900, Some(1000));
    load(&db, 2, 100, Some(1000));
    // No --max: the capacity comes from ha_targets (1000 for sip5).
    load(&db, 5, 600, None);
    let pdns = start(&db, "least-load");
    let args = [SRV, "SRV"];

    // The loaded server gets the smaller weight; tiers stay as stored.
    let r = until(&pdns, &args, "weights by free capacity", |r| {
        srv(r).first().map(String::as_str) == Some("10 900 sip2")
    });
    let answer = srv(&r);
    assert!(answer.contains(&"10 100 sip1".to_owned()), "{answer:?}");
    assert!(answer.contains(&"20 400 sip5".to_owned()), "{answer:?}");
    // Unknown load: the tier's average.
    assert!(answer.contains(&"20 400 sip4".to_owned()), "{answer:?}");
    assert!(answer.contains(&"30 10 sip7".to_owned()), "{answer:?}");

    // At capacity: behind the rest of its tier, before the next tier.
    load(&db, 3, 500, Some(500));
    until(&pdns, &args, "full target behind its tier", |r| {
        let a = srv(r);
        a.contains(&"20 25 sip3".to_owned()) && a.iter().any(|l| l.starts_with("30 400 sip5"))
    });

    // A dead target leaves the answer and comes back when it recovers.
    metric(&db, &["health", "--target", "sip2.example.com", "down"]);
    until(&pdns, &args, "dead target gone", |r| {
        srv(r).len() == 7 && !srv(r).iter().any(|l| l.ends_with("sip2"))
    });
    metric(&db, &["health", "--target", "sip2.example.com", "up"]);
    until(&pdns, &args, "target back", |r| {
        srv(r).first().map(String::as_str) == Some("10 900 sip2")
    });

    // Every target down: fail open, the stored set.
    for sip in 1..=8 {
        metric(
            &db,
            &[
                "health",
                "--target",
                &format!("sip{sip}.example.com"),
                "down",
            ],
        );
    }
    until(&pdns, &args, "fail open", |r| {
        srv(r).len() == 8 && srv(r)[0] == "10 50 sip1"
    });
}

#[test]
fn e2e_stale_metrics_give_the_static_answer() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("live-stale");
    let db = live_db(&dir);
    latency(&db, "198.51.100.0/24", 8, 1.0);
    metric(&db, &["health", "--target", "sip1.example.com", "down"]);
    let pdns = start(&db, "least-latency");
    let args = ["+subnet=198.51.100.0/24", SRV, "SRV"];
    until(&pdns, &args, "fresh readings rank", |r| {
        srv(r)[0] == "10 10 sip8" && srv(r).len() == 7
    });

    // The same readings, a minute old (the pipe's --stale-after is 30 s).
    Connection::open(&db)
        .unwrap()
        .execute_batch("UPDATE ha_latency SET updated = updated - 60; UPDATE ha_health SET updated = updated - 60;")
        .unwrap();
    let r = until(&pdns, &args, "stale readings ignored", |r| {
        srv(r).len() == 8 && srv(r)[0] == "10 50 sip1"
    });
    assert_eq!(srv(&r)[7], "30 10 sip8", "stored priorities and weights");
}
