//! `pdns-ha monitor --metrics-listen`: a real monitor probing loopback targets (one up,
//! one closed port, Event Socket stand-ins with and without the right password) serves
//! its figures; `promtool check metrics` lints the text, and a real Prometheus scrapes
//! the OpenMetrics form and stores what it says.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::esl_standin::{self, Config, Fault};
use crate::pdns::{find_tool, free_port, require, TempDir};
use crate::util::{init_db, kill, BIN};

/// What Prometheus 2.42 sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Long enough for a few one-second rounds, or Prometheus's start and two scrapes, on a
/// busy 2-core CI machine; polling ends as soon as the condition holds.
const WITHIN: Duration = Duration::from_secs(20);

/// A child process killed on drop.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        kill(self.0.id());
        let _ = self.0.wait();
    }
}

/// One HTTP/1.0 GET; returns the head and the body.
pub(crate) fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Option<(String, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n").ok()?;
    let mut got = String::new();
    s.read_to_string(&mut got).ok()?;
    let (head, body) = got.split_once("\r\n\r\n")?;
    Some((head.to_owned(), body.to_owned()))
}

/// Polls `f` until it returns Some, or fails naming `what` and the last value seen.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => assert!(
                start.elapsed() < WITHIN,
                "{what}: not within {WITHIN:?}; last:\n{last}"
            ),
        }
        sleep(Duration::from_millis(200));
    }
}

/// The value of the sample line that starts with `series` (name and labels).
pub(crate) fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn monitor_serves_openmetrics_that_promtool_and_prometheus_accept() {
    let have_promtool = require("promtool");
    let have_prometheus = require("prometheus");
    let dir = TempDir::new("openmetrics");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);

    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let standin = |sessions, password: &str| {
        esl_standin::start(Config {
            sessions,
            max_sessions: 1000,
            password: password.into(),
            fault: Fault::None,
            ..Config::default()
        })
    };
    let loaded = standin(420, "ClueCon");
    let wrong_password = standin(5, "not-ClueCon");
    Connection::open(&db)
        .unwrap()
        .execute_batch(&format!(
            "UPDATE ha_targets SET probe = 'none', load_source = 'none', load_secret_file = NULL;
             UPDATE ha_targets SET probe = 'tcp', probe_address = '{}',
               load_source = 'freeswitch', load_address = '{}', load_secret = 'ClueCon'
               WHERE name = 'sip1.example.com';
             UPDATE ha_targets SET probe = 'tcp', probe_address = '{closed}'
               WHERE name = 'sip2.example.com';
             UPDATE ha_targets SET load_source = 'freeswitch', load_address = '{}',
               load_secret = 'ClueCon' WHERE name = 'sip3.example.com';",
            up.local_addr().unwrap(),
            loaded.addr(),
            wrong_password.addr()
        ))
        .unwrap();

    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _monitor = Running(
        Command::new(BIN)
            .args(["monitor", "--db"])
            .arg(&db)
            .args(["--interval", "1", "--timeout", "500", "--metrics-listen"])
            .arg(listen.to_string())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // OpenMetrics, as Prometheus asks for it, once two rounds are done.
    let (head, om) = wait_for("two monitor rounds", || {
        let (head, body) = get(listen, "/metrics", Some(PROMETHEUS_ACCEPT))
            .ok_or_else(|| "no answer".to_owned())?;
        match value(&body, "pdns_ha_rounds_total") {
            Some(n) if n >= 2.0 => Ok((head, body)),
            _ => Err(body),
        }
    });
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(om.ends_with("\n# EOF\n"), "{om}");
    // docs/deployment.md shows it without the metadata lines but the first family's, and
    // without the services' and the pipes' families (this test has neither).
    let first = om.lines().position(|l| !l.starts_with('#')).unwrap_or(0);
    let shown: String = (om.lines().enumerate())
        .filter(|(i, l)| *i < first || *l == "# EOF" || !l.starts_with('#'))
        .map(|(_, l)| l)
        .filter(|l| {
            !["pdns_ha_pipe", "pdns_ha_service", "pdns_ha_tls"]
                .iter()
                .any(|f| l.starts_with(f))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::support::docs::sample("monitor-scrape", &shown);
    let t = |name: &str, rest: &str| format!("{name}{{target=\"{rest}");
    for (series, want) in [
        (t("pdns_ha_target_up", "sip1.example.com\"}"), Some(1.0)),
        (t("pdns_ha_target_up", "sip2.example.com\"}"), Some(0.0)),
        (
            t("pdns_ha_target_sessions", "sip1.example.com\"}"),
            Some(420.0),
        ),
        (
            t("pdns_ha_target_capacity_sessions", "sip1.example.com\"}"),
            Some(1000.0),
        ),
        // Unknown load is left out, never zero.
        (t("pdns_ha_target_sessions", "sip3.example.com\"}"), None),
        (
            t("pdns_ha_target_drained", "sip1.example.com\"}"),
            Some(0.0),
        ),
        // No load source: the capacity is the operator's ha_targets.max_sessions.
        (
            t("pdns_ha_target_capacity_sessions", "sip6.example.com\"}"),
            Some(500.0),
        ),
    ] {
        assert_eq!(value(&om, &series), want, "{series}\n{om}");
    }
    let positive = [
        t(
            "pdns_ha_target_latency_seconds",
            "sip1.example.com\",network=\"*\",source=\"monitor\"}",
        ),
        t(
            "pdns_ha_probe_errors_total",
            "sip2.example.com\",probe=\"health\",kind=\"io\"}",
        ),
        t(
            "pdns_ha_probe_errors_total",
            "sip3.example.com\",probe=\"load\",kind=\"auth_rejected\"}",
        ),
        "pdns_ha_round_duration_seconds".to_owned(),
    ];
    for series in positive {
        let v = value(&om, &series).unwrap_or_else(|| panic!("no {series} in\n{om}"));
        assert!(v > 0.0 && v < 5.0, "{series} = {v}");
    }
    let age = value(
        &om,
        &t(
            "pdns_ha_reading_age_seconds",
            "sip1.example.com\",reading=\"health\"}",
        ),
    )
    .unwrap();
    assert!((0.0..3.0).contains(&age), "a fresh reading is {age} s old");

    // The latency exported is the stored average the pipe ranks by: equal to ha_latency's
    // EWMA whenever no round wrote between two reads of the row around the scrape.
    let latency = t(
        "pdns_ha_target_latency_seconds",
        "sip1.example.com\",network=\"*\",source=\"monitor\"}",
    );
    let stored = || -> (f64, f64) {
        Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT ewma_ms, updated FROM ha_latency
                 WHERE network = '*' AND target = 'sip1.example.com'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    wait_for("a scrape between two rounds", || {
        let before = stored();
        let (_, body) = get(listen, "/metrics", None).ok_or("no answer")?;
        if stored() != before {
            return Err("a round wrote meanwhile".into());
        }
        assert_eq!(value(&body, &latency), Some(before.0 / 1000.0), "{body}");
        Ok(())
    });

    // The older text format for everyone else, linted by promtool.
    let (head, text) = get(listen, "/metrics", None).unwrap();
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    if have_promtool {
        promtool_check(&text);
    }

    if have_prometheus {
        prometheus_scrapes(
            dir.path(),
            listen,
            &[
                (
                    "pdns_ha_target_up",
                    &[
                        "\"target\":\"sip1.example.com\"",
                        "\"target\":\"sip2.example.com\"",
                    ],
                ),
                (
                    "pdns_ha_probe_errors_total",
                    &["\"kind\":\"auth_rejected\""],
                ),
            ],
            "pdns_ha_target_latency_seconds",
        );
    }
}

/// `promtool check metrics` must pass `text` (the older format, which it lints) without
/// a word: a lint warning fails too.
pub(crate) fn promtool_check(text: &str) {
    let mut p = Command::new(find_tool("promtool").unwrap())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\n--- text ---\n{text}",
        out.status
    );
}

/// A real Prometheus scrapes `target` every second and must store its series (each query
/// of `stored`, its answer holding every string listed) with the metadata only
/// OpenMetrics carries (the unit of `with_unit`), so the strict parser took the text.
fn prometheus_scrapes(dir: &Path, target: SocketAddr, stored: &[(&str, &[&str])], with_unit: &str) {
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
             - job_name: pdns-ha\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prometheus = Running(
        Command::new(find_tool("prometheus").unwrap())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    wait_for("Prometheus scraping pdns-ha", || {
        let (_, body) = get(web, "/api/v1/targets", None).ok_or_else(log)?;
        if body.contains("\"health\":\"up\"") && body.contains("\"lastError\":\"\"") {
            Ok(())
        } else {
            Err(body)
        }
    });
    for (query, want) in stored {
        wait_for(&format!("{query} stored"), || {
            let (_, body) =
                get(web, &format!("/api/v1/query?query={query}"), None).ok_or_else(log)?;
            want.iter()
                .all(|w| body.contains(w))
                .then_some(())
                .ok_or(body)
        });
    }
    let (_, meta) = get(web, &format!("/api/v1/metadata?metric={with_unit}"), None).unwrap();
    assert!(meta.contains("\"unit\":\"seconds\""), "metadata: {meta}");
}

/// `pdns-ha observe --metrics-listen`: a real `observe` reads the kernel's TCP round trips
/// of loopback connections from three networks (enough callers in one, too few in another,
/// one caller in no known network) and a Kamailio stand-in that first lists only stale
/// keepalives, then is gone; its figures are served, checked against the database, and
/// linted by promtool and scraped by a real Prometheus.
#[test]
fn observe_serves_openmetrics_that_promtool_and_prometheus_accept() {
    use crate::observe::{connect_from, dump, http, now, stand_in};
    let have_promtool = require("promtool");
    let have_prometheus = require("prometheus");
    let dir = TempDir::new("openmetrics-observe");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "INSERT INTO ha_networks (cidr, name) VALUES
               ('127.1.0.0/16', 'montreal'), ('127.2.0.0/16', 'vancouver')",
        )
        .unwrap();

    // The SIP server's TCP port: every connection is accepted, and a byte goes each way so
    // that the kernel has a fresh acknowledgement and round trip for it.
    let sip = TcpListener::bind("127.0.0.1:0").unwrap();
    let sip_addr = sip.local_addr().unwrap();
    let callers = [
        "127.1.0.11",
        "127.1.0.12",
        "127.1.0.13",
        "127.2.0.11",
        "127.2.0.12",
        "127.3.0.11",
    ];
    let mut held = Vec::new();
    for c in callers {
        let mut client = connect_from(c, sip_addr);
        let (mut server, _) = sip.accept().unwrap();
        client.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).unwrap();
        server.write_all(b"y").unwrap();
        client.read_exact(&mut b).unwrap();
        held.push((client, server));
    }
    let stale = dump(
        &[
            ("127.1.0.21", 5000),
            ("127.1.0.22", 5000),
            ("127.1.0.23", 5000),
        ],
        now() - 3600,
    );
    let kamailio = stand_in(vec![http(&stale)]);

    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _observe = Running(
        Command::new(BIN)
            .args(["observe", "--db"])
            .arg(&db)
            .args(["--target", "sip4.example.com", "--tcp-ports"])
            .arg(sip_addr.port().to_string())
            .args(["--kamailio", &kamailio, "--timeout", "1000"])
            .args(["--interval", "1", "--metrics-listen"])
            .arg(listen.to_string())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (head, om) = wait_for("two observe rounds", || {
        let (head, body) = get(listen, "/metrics", Some(PROMETHEUS_ACCEPT))
            .ok_or_else(|| "no answer".to_owned())?;
        match value(&body, "pdns_ha_rounds_total") {
            Some(n) if n >= 2.0 => Ok((head, body)),
            _ => Err(body),
        }
    });
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(om.ends_with("\n# EOF\n"), "{om}");
    eprintln!("--- observe, OpenMetrics:\n{om}");
    let s = |name: &str, labels: &str| format!("{name}{{target=\"sip4.example.com\",{labels}}}");
    let montreal = "network=\"127.1.0.0/16\"";
    let vancouver = "network=\"127.2.0.0/16\"";
    for (series, want) in [
        (s("pdns_ha_observe_callers", montreal), Some(3.0)),
        (s("pdns_ha_observe_callers", vancouver), Some(2.0)),
        // Too few callers: no figure, rather than a guess.
        (s("pdns_ha_observe_round_latency_seconds", vancouver), None),
        (
            s(
                "pdns_ha_target_latency_seconds",
                &format!("{vancouver},source=\"observe\""),
            ),
            None,
        ),
    ] {
        assert_eq!(value(&om, &series), want, "{series}\n{om}");
    }
    let at_least = |series: String, min: f64| {
        let v = value(&om, &series).unwrap_or_else(|| panic!("no {series} in\n{om}"));
        assert!(v >= min, "{series} = {v}, want at least {min}");
    };
    at_least(s("pdns_ha_observe_samples_total", "source=\"tcp\""), 12.0);
    at_least(
        s(
            "pdns_ha_observe_dropped_samples_total",
            "reason=\"unknown_network\"",
        ),
        2.0,
    );
    at_least(
        s(
            "pdns_ha_observe_dropped_samples_total",
            "reason=\"too_few_callers\"",
        ),
        4.0,
    );
    at_least(
        s("pdns_ha_observe_dropped_samples_total", "reason=\"stale\""),
        3.0,
    );
    // The stand-in answered once; then the port is closed.
    at_least(
        s(
            "pdns_ha_observe_source_errors_total",
            "source=\"keepalive\",kind=\"io\"",
        ),
        1.0,
    );
    let round = value(&om, &s("pdns_ha_observe_round_latency_seconds", montreal)).unwrap();
    assert!(round > 0.0 && round < 0.1, "loopback round trip {round} s");
    let duration = value(&om, "pdns_ha_round_duration_seconds").unwrap();
    assert!(duration > 0.0 && duration < 5.0, "{duration}");

    // The exported average is the stored one, as the pipe ranks by.
    let latency = s(
        "pdns_ha_target_latency_seconds",
        &format!("{montreal},source=\"observe\""),
    );
    let stored = || -> (f64, f64) {
        Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT ewma_ms, updated FROM ha_latency
                 WHERE network = '127.1.0.0/16' AND target = 'sip4.example.com'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    wait_for("a scrape between two rounds", || {
        let before = stored();
        let (_, body) = get(listen, "/metrics", None).ok_or("no answer")?;
        if stored() != before {
            return Err("a round wrote meanwhile".into());
        }
        assert_eq!(value(&body, &latency), Some(before.0 / 1000.0), "{body}");
        Ok(())
    });

    let (head, text) = get(listen, "/metrics", None).unwrap();
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    if have_promtool {
        promtool_check(&text);
    }
    if have_prometheus {
        prometheus_scrapes(
            dir.path(),
            listen,
            &[
                ("pdns_ha_observe_callers", &["\"network\":\"127.1.0.0/16\""]),
                (
                    "pdns_ha_observe_dropped_samples_total",
                    &["\"reason\":\"unknown_network\""],
                ),
            ],
            "pdns_ha_observe_round_latency_seconds",
        );
    }
    drop(held);
}
