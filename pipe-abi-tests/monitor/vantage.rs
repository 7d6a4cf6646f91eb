//! Vantage points (issue 11): `pdns-ha monitor --network NAME` probes from a host inside a
//! known network and records latency, and timeouts, under that network instead of `*`, so the
//! network gets its own ranking through pdns_server while every other network keeps the
//! monitor host's. Health stays global: both monitors vote on it as before.
//!
//! On one loopback host the two vantage points see the same servers, so the view from the
//! second site is staged: the SIP OPTIONS responders swap their delays between the monitor
//! host's round and the vantage monitor's round, as if site-b were near sip4 and far from sip1.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::monitor::{db, sql, srv, status, Responder};
use crate::pdns::{require_all, Backend, Pdns, TempDir};
use crate::util::{run_ok, BIN};

const SRV: &str = "_sip._udp.example.com";
const SITE_B: &str = "198.51.100.0/24";

/// One `monitor --once` round with `extra` flags; it must succeed.
fn monitor(db: &Path, extra: &[&str]) -> Output {
    let db = db.to_str().unwrap();
    run_ok(
        &[
            &["monitor", "--once", "--timeout", "500", "--db", db],
            extra,
        ]
        .concat(),
    )
}

/// (network, target, source, samples, timeouts, monitor) of every latency row.
fn rows(db: &Path) -> Vec<(String, String, String, i64, i64, String)> {
    Connection::open(db)
        .unwrap()
        .prepare(
            "SELECT network, target, source, samples, timeouts, monitor FROM ha_latency
             ORDER BY network, target",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_vantage_monitor_gives_its_network_its_own_ranking() {
    if !require_all(&["pdns_server", "dig"]) {
        return;
    }
    let dir = TempDir::new("vantage");
    let db = db(&dir);
    let slow = Duration::from_millis(60);
    let near = Responder::start("127.0.0.1:0", Duration::ZERO);
    let far = Responder::start("127.0.0.1:0", slow);
    let (sip1, sip4) = (near.addr, far.addr);
    sql(
        &db,
        &format!(
            "UPDATE ha_targets SET probe = 'sip-udp', probe_address = '{sip1}' WHERE name = 'sip1.example.com';
             UPDATE ha_targets SET probe = 'sip-udp', probe_address = '{sip4}' WHERE name = 'sip4.example.com';"
        ),
    );

    // A network that is not in ha_networks stops the monitor before it writes anything.
    let out = Command::new(BIN)
        .args(["monitor", "--once", "--network", "site-z", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--network \"site-z\" is not a name or CIDR in ha_networks"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The monitor host: sip1 near, sip4 far.
    assert!(rows(&db).is_empty(), "{:?}", rows(&db));
    monitor(&db, &["--monitor-id", "central"]);
    // Site-b's view: the other way round. Same ports, delays swapped.
    drop((near, far));
    let far = Responder::start(&sip1.to_string(), slow);
    let near = Responder::start(&sip4.to_string(), Duration::ZERO);
    // By name here; the CIDR names the same network.
    let out = monitor(
        &db,
        &["--monitor-id", "site-b-probe", "--network", "site-b"],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(&format!("latency from {SITE_B}")), "{log}");

    let row = |network: &str, target: &str| {
        rows(&db)
            .into_iter()
            .find(|r| r.0 == network && r.1 == target)
            .unwrap_or_else(|| panic!("no {network} {target} row: {:?}", rows(&db)))
    };
    for t in ["sip1.example.com", "sip4.example.com"] {
        let (_, _, source, samples, _, by) = row("*", t);
        assert_eq!(
            (source.as_str(), samples, by.as_str()),
            ("monitor", 1, "central")
        );
        let (_, _, source, samples, _, by) = row(SITE_B, t);
        assert_eq!(
            (source.as_str(), samples, by.as_str()),
            ("monitor", 1, "site-b-probe")
        );
    }
    assert_eq!(rows(&db).len(), 4, "{:?}", rows(&db));

    let pdns = Pdns::options(Backend::pdns_ha(&db, "--algorithm least-latency"))
        .setting("edns-subnet-processing", "yes")
        .start();
    // Site-b ranks by its own readings, scoped to its prefix; site-a has none and takes the
    // monitor host's.
    for (subnet, best, other) in [(SITE_B, "sip4", "sip1"), ("192.0.2.0/24", "sip1", "sip4")] {
        let r = pdns.dig(&[&format!("+subnet={subnet}"), SRV, "SRV"]);
        let a = srv(&r);
        assert_eq!(a[0].2, best, "{subnet}: {a:?}\n{}", r.raw);
        let behind = a.iter().find(|x| x.2 == other).unwrap();
        assert!(behind.0 > a[0].0, "{subnet}: {a:?}");
        assert_eq!(
            r.client_subnet(),
            Some(format!("{subnet}/24").as_str()),
            "{}",
            r.raw
        );
    }
    let table = status(&db);
    let line = table.lines().find(|l| l.starts_with("sip4")).unwrap();
    assert!(line.contains("site-b: "), "{table}");
    assert!(line.contains("*: "), "{table}");
    assert!(line.contains("by central, site-b-probe"), "{table}");
    // What docs/deployment.md shows of it: the two probed targets, and how each network's
    // clients get them ranked.
    let mut shown = format!(
        "$ pdns-ha status --db ha.db\n{}",
        crate::support::docs::target_rows(&table, &["sip1.example.com", "sip4.example.com"])
    );
    for client in [SITE_B, "192.0.2.0/24"] {
        let args = [
            "--algorithm",
            "least-latency",
            "--client",
            client,
            SRV,
            "SRV",
        ];
        let out = run_ok(&[&["explain", "--db", db.to_str().unwrap()][..], &args].concat());
        shown += &format!("$ pdns-ha explain --db ha.db {}\n", args.join(" "));
        let explained = String::from_utf8_lossy(&out.stdout).into_owned();
        let ranked = |l: &&str| l.starts_with("  sip") && l.contains("  prio ");
        for l in explained.lines().filter(ranked).take(2) {
            shown += &format!("{l}\n");
        }
    }
    crate::support::docs::sample("vantage", &shown);

    // Silence from site-b's vantage counts as a timeout there, not at the monitor host.
    drop(far);
    let started = Instant::now();
    monitor(&db, &["--monitor-id", "site-b-probe", "--network", SITE_B]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(row(SITE_B, "sip1.example.com").4, 1, "{:?}", rows(&db));
    assert_eq!(row("*", "sip1.example.com").4, 0, "{:?}", rows(&db));
    drop(near);
}
