//! The pipes' own counters reach Prometheus: pdns_server runs the pipe, clients from two
//! known networks and from none ask through it (dig +subnet), and the monitor's
//! `/metrics` counts their questions by network, while the pipe runs and after pdns
//! stopped it.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::openmetrics::{get, value, Running};
use crate::pdns::{free_port, require_all, Backend, Pdns, TempDir};
use crate::util::{init_db, BIN};

use pdns_ha::state::pipe_counters::WRITE_EVERY;
const WITHIN: Duration = Duration::from_secs(20);

/// The monitor's text once `ready` holds for it, polled until [`WITHIN`].
fn scrape_until(addr: SocketAddr, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let body = get(addr, "/metrics", None)
            .map(|(_, b)| b)
            .unwrap_or_default();
        if ready(&body) {
            return body;
        }
        assert!(
            start.elapsed() < WITHIN,
            "{what}: not within {WITHIN:?}; last scrape:\n{body}"
        );
        sleep(Duration::from_millis(200));
    }
}

fn queries(body: &str, network: &str) -> f64 {
    value(
        body,
        &format!("pdns_ha_pipe_network_queries_total{{network=\"{network}\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn pipe_counters_reach_the_monitor_by_network() {
    if !require_all(&["pdns_server", "dig"]) {
        return;
    }
    let dir = TempDir::new("pipe-counters");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    // Nothing to probe: the monitor is here for its exporter.
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "UPDATE ha_targets SET probe = 'none', load_source = 'none', load_secret_file = NULL",
        )
        .unwrap();
    let files = dir.path().join("ha.db.pipes");
    let pdns = Pdns::options(Backend::pdns_ha(&db, "--algorithm least-latency"))
        .setting("edns-subnet-processing", "yes")
        .start();
    // Each pipe wrote its file at pdns's HELO, before the start-up check's digs.
    let started = Instant::now();
    let ask = |subnet: &str, times: usize| {
        for _ in 0..times {
            let r = pdns.dig(&[&format!("+subnet={subnet}"), "_sip._udp.example.com", "SRV"]);
            assert_eq!(r.status(), Some("NOERROR"), "{}", r.raw);
        }
    };
    // site-a and site-b are example.sql's networks; 100.64.0.0/24 is in none.
    ask("192.0.2.0/24", 3);
    ask("198.51.100.0/24", 2);
    ask("100.64.0.0/24", 1);
    // A busy pipe writes every 5 s, on a question: this one writes, and is counted after.
    sleep(WRITE_EVERY.saturating_sub(started.elapsed()) + Duration::from_millis(200));
    ask("192.0.2.0/24", 1);
    assert!(
        files.is_dir(),
        "no {} after {WRITE_EVERY:?}",
        files.display()
    );

    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _monitor = Running(
        Command::new(BIN)
            .args(["monitor", "--db"])
            .arg(&db)
            .args(["--interval", "1", "--metrics-listen"])
            .arg(listen.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // pdns runs a pipe per distributor thread and one more of its own; each wrote its
    // file at HELO.
    let pipes = pdns.coprocesses().len();
    assert!(pipes >= 1);
    let live = scrape_until(listen, "the running pipes' counters", |b| {
        value(b, "pdns_ha_pipes") == Some(pipes as f64) && queries(b, "site-a") > 0.0
    });
    // pdns asks the backend the same few questions for each dig (its SOA, then the name),
    // all with the client's subnet: per network, counts keep the digs' proportions.
    let (a, b) = (queries(&live, "site-a"), queries(&live, "site-b"));
    let unknown = value(&live, "pdns_ha_pipe_unknown_network_queries_total").unwrap();
    assert!(
        b > 0.0 && a * 2.0 == b * 3.0,
        "3 digs from site-a, 2 from site-b:\n{live}"
    );
    let per_dig = b / 2.0;
    // One dig from 100.64.0.0/24, and the start-up check's digs from 127.0.0.1 (no ECS).
    assert!(unknown >= per_dig, "1 dig from no known network:\n{live}");
    assert_eq!(queries(&live, "site-c"), 0.0, "{live}");
    let lookups = value(&live, "pdns_ha_pipe_lookups_total").unwrap();
    assert!(lookups >= 6.0 * per_dig, "{live}");
    assert_eq!(
        value(&live, "pdns_ha_pipe_fails_total"),
        Some(0.0),
        "{live}"
    );

    // status reads the same files: the operator's view without a Prometheus.
    let status = super::status(&db);
    assert!(
        status.contains(&format!("pipes: {pipes} running"))
            && status.contains(&format!("questions by network: site-a {a}, site-b {b}")),
        "{status}"
    );

    // pdns stops: its pipes write once more at end of input, and the monitor sums them
    // in with the ended pipes, removing their files; nothing counted goes backwards.
    drop(pdns);
    let ended = scrape_until(listen, "the ended pipes' last counters", |b| {
        value(b, "pdns_ha_pipes") == Some(0.0)
    });
    assert_eq!(queries(&ended, "site-a"), 4.0 * per_dig, "{ended}");
    assert_eq!(queries(&ended, "site-b"), b, "{ended}");
    assert!(
        value(&ended, "pdns_ha_pipe_lookups_total").unwrap() >= lookups,
        "{ended}"
    );
    let left: Vec<_> = std::fs::read_dir(&files)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "the ended pipes' files stay: {left:?}");
}
