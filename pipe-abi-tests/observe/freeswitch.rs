//! `pdns-ha observe --freeswitch`: calls' RTCP round trips over the Event Socket, against the
//! stand-in (Debian 12 has no FreeSWITCH) speaking the reference's bytes: the stand-in's own
//! events checked byte for byte against the reference's examples; every kind of call (NAT,
//! a proxy in front, no RTCP, video, receiver-only reports, json); Montreal and Vancouver end
//! to end under pdns_server, the answers swapping when the round trips swap; and hostile
//! Event Sockets that must cost bounded memory and time while the round is still written.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::esl_standin::{self, url_encode, Config, Hangup, Rtcp, StandIn};
use crate::monitor::kamailio::poll;
use crate::pdns::{require, Backend, Pdns, TempDir};
use crate::util::{init_db, BIN};

/// A database with the example zone, no probes, and the two client networks.
fn database(dir: &Path) -> PathBuf {
    let db = dir.join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "UPDATE ha_targets SET probe = 'none', load_source = 'none';
             INSERT INTO ha_networks (cidr, name) VALUES
               ('127.1.0.0/16', 'montreal'), ('127.2.0.0/16', 'vancouver');",
        )
        .unwrap();
    db
}

/// A running `pdns-ha observe`, killed when dropped; its log goes to a file.
struct Observer {
    child: Child,
    log: PathBuf,
}

impl Observer {
    fn start(db: &Path, log: PathBuf, args: &[&str]) -> Observer {
        let child = Command::new(BIN)
            .args(["observe", "--db"])
            .arg(db)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Observer { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a `--once` run to end; its exit status.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Peak resident memory so far, in kB (VmHWM).
    fn peak_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (network, target, ewma_ms, callers) of the `freeswitch` latency rows.
fn rows(db: &Path) -> Vec<(String, String, f64, i64)> {
    let c = Connection::open(db).unwrap();
    let mut s = c
        .prepare(
            "SELECT network, target, ewma_ms, callers FROM ha_latency
             WHERE source = 'freeswitch' ORDER BY network, target",
        )
        .unwrap();
    let r = s
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap();
    r.map(Result::unwrap).collect()
}

/// (network, target, mos, loss, callers, calls) of ha_quality.
type QualityRow = (String, String, Option<f64>, Option<f64>, i64, i64);

fn quality(db: &Path) -> Vec<QualityRow> {
    let c = Connection::open(db).unwrap();
    let mut s = c
        .prepare(
            "SELECT network, target, mos, loss, callers, calls FROM ha_quality
             ORDER BY network, target",
        )
        .unwrap();
    let r = s
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
        .unwrap();
    r.map(Result::unwrap).collect()
}

/// Waits until `fs` has `n` subscribers.
fn subscribed(fs: &StandIn, n: usize, why: impl Fn() -> String) {
    let ok = poll(Duration::from_secs(20), || {
        (fs.subscribed() >= n).then_some(())
    });
    assert!(ok.is_some(), "observe never subscribed\n{}", why());
}

static CALL: AtomicU64 = AtomicU64::new(1);

/// One plain call from `phone`: a first report without a round trip, one with `rtt_ms`,
/// then the hangup with the MOS of quality 99.
fn call(phone: &str, rtt_ms: f64, fraction: u8) -> Vec<esl_standin::Event> {
    let n = CALL.fetch_add(1, Ordering::SeqCst);
    let uuid = format!("00000000-0000-4000-8000-{n:012x}");
    vec![
        Rtcp::of(&uuid, n * 10, 0.0, 0).event(),
        Rtcp::of(&uuid, n * 10 + 1, rtt_ms / 1000.0, fraction).event(),
        Hangup::of(&uuid, n * 10 + 2, phone, 99, true).event(),
    ]
}

#[test]
fn standin_events_are_the_references_bytes() {
    let fixture =
        |f: &str| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(f)).unwrap();
    let hangup = Hangup::example().event();
    assert_eq!(
        hangup.plain(),
        fixture("pipe-abi-tests/fixtures/freeswitch-hangup-plain.txt")
    );
    assert_eq!(
        hangup.json(),
        fixture("pipe-abi-tests/fixtures/freeswitch-hangup-json.txt")
    );
    assert_eq!(
        Rtcp::example().event().plain(),
        fixture("pipe-abi-tests/fixtures/freeswitch-rtcp-plain.txt")
    );
    // switch_url_encode: uppercase hex, UTF-8 bytes, and "%XX" left alone.
    assert_eq!(
        url_encode("a%20b 100% café+x"),
        "a%20b%20100%25%20caf%C3%A9%2Bx"
    );
    assert_eq!(
        url_encode("a%2fb"),
        "a%252fb",
        "lowercase hex is no escape to it"
    );
    let empty = esl_standin::Event(vec![("Empty".into(), String::new())]);
    assert!(empty.plain().ends_with("\n\nEmpty: _undef_\n\n"));
}

#[test]
fn observe_files_every_kind_of_call_under_its_caller() {
    let scratch = TempDir::new("freeswitch-kinds");
    let dir = scratch.path();
    let db = database(dir);
    let fs = esl_standin::start(Config {
        password: "not ClueCon".into(),
        ..Config::default()
    });
    let pw = dir.join("fs-password");
    std::fs::write(&pw, "not ClueCon\n").unwrap();
    let addr = fs.addr().to_string();
    let obs = Observer::start(
        &db,
        dir.join("observe.log"),
        &[
            "--target",
            "sip7.example.com",
            "--freeswitch",
            &addr,
            "--freeswitch-password-file",
            pw.to_str().unwrap(),
            "--freeswitch-caller-header",
            "X-AUTH-IP",
            "--interval",
            "1",
        ],
    );
    subscribed(&fs, 1, || obs.log());
    assert!(fs
        .commands()
        .contains(&"event plain CHANNEL_HANGUP_COMPLETE RECV_RTCP_MESSAGE".to_string()));
    let mut events = Vec::new();
    // Montreal (127.1/16): a phone behind NAT (SDP says 10.0.0.x, RTP comes from 127.1.0.11),
    // one signalling through a Kamailio at 127.9.9.9 that adds X-AUTH-IP, one direct whose
    // reports are receiver-only after the first (the SR fields repeat) and whose video
    // reports (RTP-Rate 90000) must not count.
    let n = |k: u64| format!("00000000-0000-4000-9000-{k:012x}");
    let mut nat = Hangup::of(&n(1), 1, "10.0.0.11", 99, true);
    nat.latched = Some(("127.1.0.11".into(), 31000));
    let mut proxied = Hangup::of(&n(2), 2, "127.1.0.12", 100, true);
    proxied.network_addr = "127.9.9.9".into();
    proxied.sip_headers = vec![("X-AUTH-IP".into(), "127.1.0.12".into())];
    // Only the header places this caller: its SDP address is a private one.
    proxied.media = ("10.0.0.12".into(), 40000);
    let direct = Hangup::of(&n(3), 3, "127.1.0.13", 98, true);
    let mut video = Rtcp::of(&n(3), 30, 0.900, 200);
    video.rate = 90000;
    // The phone's next report is receiver-only: FreeSWITCH refreshes the blocks and repeats
    // the last sender report's SSRC, NTP words and counts (process_rtcp_report).
    let sr = Rtcp::of(&n(3), 29, 0.030, 0);
    let mut rr = sr.clone();
    rr.seq = 31;
    rr.micros += 5_000_000;
    rr.blocks[0].highest_seq += 250;
    rr.blocks[0].lsr += 5 * 65536;
    rr.blocks[0].rtt = 0.031;
    for (uuid, rtt) in [(n(1), 0.010), (n(2), 0.020)] {
        events.push(Rtcp::of(&uuid, 10, rtt, 5).event());
    }
    events.push(sr.event());
    events.push(video.event());
    events.push(rr.event());
    events.extend([nat.event(), proxied.event(), direct.event()]);
    // Vancouver (127.2/16): two calls with round trips, one without RTCP at all, one whose
    // round trip never became non-zero: two callers, below --min-callers 3.
    events.extend(call("127.2.0.11", 80.0, 0));
    events.extend(call("127.2.0.12", 90.0, 0));
    events.push(Hangup::of(&n(4), 4, "127.2.0.13", 99, false).event());
    events.push(Rtcp::of(&n(5), 50, 0.0, 0).event());
    events.push(Hangup::of(&n(5), 51, "127.2.0.14", 99, true).event());
    assert_eq!(fs.emit(&events), 1);
    let got = poll(Duration::from_secs(20), || {
        let r = rows(&db);
        (!r.is_empty()).then_some(r)
    });
    let log = obs.log();
    let got = got.unwrap_or_else(|| panic!("nothing written\n{log}"));
    eprintln!("{got:?}\n{log}");
    // Median of 10, 20, 31 ms (the receiver-only report is the last): the video report's 900 ms counted for nothing.
    assert_eq!(
        got,
        [("127.1.0.0/16".into(), "sip7.example.com".into(), 20.0, 3)]
    );
    let q = quality(&db);
    assert_eq!(q.len(), 1, "{q:?}");
    let (_, _, mos, loss, callers, calls) = &q[0];
    // R 99, 100, 98: MOS 4.49, 4.50, 4.48; loss 5/256 twice and 0.
    assert_eq!((*mos, *callers, *calls), (Some(4.49), 3, 3));
    assert!((loss.unwrap() - 5.0 / 256.0 / 1.0).abs() < 1e-9, "{loss:?}");
    assert!(
        log.contains("network 127.2.0.0/16: 2 callers, fewer than --min-callers 3"),
        "{log}"
    );
    assert!(!log.contains("not ClueCon"), "the password is never logged");
    // status shows the source and the quality.
    let status = Command::new(BIN)
        .args(["status", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("freeswitch 20.0/20.0"), "{status}");
    // docs/freeswitch.md shows the quality lines.
    let quality = crate::support::docs::section(&status, "call quality");
    crate::support::docs::sample("freeswitch-quality", &quality);
    assert!(
        status.contains("sip7.example.com from montreal 127.1.0.0/16: MOS 4.49, loss 2.0 %"),
        "{status}"
    );
    // explain names the source of the figure sip7 is ranked by.
    let explain = Command::new(BIN)
        .args(["explain", "--db"])
        .arg(&db)
        .args(["--algorithm", "least-latency", "--client", "127.1.0.11"])
        .args(["_sip._udp.example.com", "SRV"])
        .output()
        .unwrap();
    let explain = String::from_utf8_lossy(&explain.stdout);
    assert!(explain.contains("freeswitch 20.0 ms"), "{explain}");
}

#[test]
fn a_wrong_password_is_said_once_and_writes_nothing() {
    let scratch = TempDir::new("freeswitch-password");
    let dir = scratch.path();
    let db = database(dir);
    let fs = esl_standin::start(Config::default());
    let pw = dir.join("fs-password");
    std::fs::write(&pw, "wrong secret\n").unwrap();
    let addr = fs.addr().to_string();
    let mut obs = Observer::start(
        &db,
        dir.join("observe.log"),
        &[
            "--target",
            "sip7.example.com",
            "--freeswitch",
            &addr,
            "--freeswitch-password-file",
            pw.to_str().unwrap(),
            "--interval",
            "3",
            "--once",
        ],
    );
    let status = obs.wait(Duration::from_secs(30));
    let log = obs.log();
    assert!(status.is_some_and(|s| s.success()), "{log}");
    assert!(log.contains("authentication refused"), "{log}");
    assert!(!log.contains("wrong secret"), "{log}");
    let said = log.matches("authentication refused").count();
    assert_eq!(said, 1, "one line for one problem, retries or not: {log}");
    assert!(fs.accepted() >= 2, "it retried");
    assert!(rows(&db).is_empty());
}

/// Feeds both stand-ins calls from every phone until stopped: each network's round trip to
/// Montreal and Vancouver as `swapped` says.
fn feeder(
    servers: [Arc<StandIn>; 2],
    swapped: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    const PHONES: [[&str; 3]; 2] = [
        ["127.1.0.11", "127.1.0.12", "127.1.0.13"],
        ["127.2.0.11", "127.2.0.12", "127.2.0.13"],
    ];
    thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            for (server, fs) in servers.iter().enumerate() {
                let mut events = Vec::new();
                for (net, phones) in PHONES.iter().enumerate() {
                    let near = (server == net) != swapped.load(Ordering::SeqCst);
                    for (i, phone) in phones.iter().enumerate() {
                        let ms = if near { 10.0 } else { 100.0 } + i as f64;
                        events.extend(call(phone, ms, 0));
                    }
                }
                fs.emit(&events);
            }
            thread::sleep(Duration::from_millis(100));
        }
    })
}

#[test]
fn observe_freeswitch_montreal_and_vancouver_end_to_end() {
    if [require("pdns_server"), require("dig")].contains(&false) {
        return;
    }
    let scratch = TempDir::new("freeswitch-e2e");
    let dir = scratch.path();
    let db = database(dir);
    // sip7 is the Montreal media server, sip8 the Vancouver one; Vancouver's events arrive
    // as json.
    let montreal = Arc::new(esl_standin::start(Config::default()));
    let vancouver = Arc::new(esl_standin::start(Config {
        json_events: true,
        ..Config::default()
    }));
    let swapped = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let feed = feeder(
        [Arc::clone(&montreal), Arc::clone(&vancouver)],
        Arc::clone(&swapped),
        Arc::clone(&stop),
    );
    let run = |target: &str, fs: &StandIn, log: &str| {
        let addr = fs.addr().to_string();
        Observer::start(
            &db,
            dir.join(log),
            &["--target", target, "--freeswitch", &addr, "--interval", "1"],
        )
    };
    let m = run("sip7.example.com", &montreal, "montreal.log");
    let v = run("sip8.example.com", &vancouver, "vancouver.log");
    let logs = || format!("{}\n{}", m.log(), v.log());
    let measured = poll(Duration::from_secs(30), || {
        (rows(&db).len() == 4).then_some(())
    });
    assert!(measured.is_some(), "{:?}\n{}", rows(&db), logs());
    // A few rounds, so that the averages have a history to overcome after the swap.
    thread::sleep(Duration::from_secs(3));

    let bin = Path::new(BIN).canonicalize().unwrap();
    let command = format!(
        "{} --db {} --algorithm least-latency",
        bin.display(),
        db.display()
    );
    let pdns = Pdns::options(Backend::Pipe { command, abi: 3 })
        .setting("edns-subnet-processing", "yes")
        .start();
    let first = |net: &str| {
        let r = pdns.dig(&[&format!("+subnet={net}"), "_sip._udp.example.com", "SRV"]);
        let prio = |t: &str| {
            r.answer()
                .iter()
                .find_map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
                    [_, _, _, "SRV", p, _, _, x] if x == t => p.parse::<u16>().ok(),
                    _ => None,
                })
        };
        let scope = r.client_subnet().map(str::to_owned);
        match (prio("sip7.example.com."), prio("sip8.example.com.")) {
            (Some(a), Some(b)) if a < b => ("montreal", scope),
            (Some(a), Some(b)) if b < a => ("vancouver", scope),
            _ => ("neither", scope),
        }
    };
    let status = Command::new(BIN)
        .args(["status", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    eprintln!(
        "$ pdns-ha status\n{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let at_first = [first("127.1.0.0/16"), first("127.2.0.0/16")];
    assert_eq!(
        at_first,
        [
            ("montreal", Some("127.1.0.0/16/16".into())),
            ("vancouver", Some("127.2.0.0/16/16".into()))
        ],
        "each network its near server; readings {:?}",
        rows(&db)
    );

    // The round trips trade places; the answers follow within a bounded time.
    swapped.store(true, Ordering::SeqCst);
    let after = poll(Duration::from_secs(60), || {
        let now = [first("127.1.0.0/16").0, first("127.2.0.0/16").0];
        (now == ["vancouver", "montreal"]).then_some(now)
    });
    stop.store(true, Ordering::SeqCst);
    feed.join().unwrap();
    assert!(
        after.is_some(),
        "answers did not swap: {:?}\n{}",
        rows(&db),
        logs()
    );
    eprintln!("after the swap: {:?}", rows(&db));
}

/// What a hostile Event Socket sends after three good calls.
#[derive(Debug, Clone, Copy)]
enum Hostile {
    /// An event announcing a gibibyte of body.
    Gigabyte,
    /// A header line that never ends.
    EndlessHeader,
    /// An event one byte at a time, never finished within the round.
    Drip,
}

#[test]
fn hostile_event_sockets_cost_bounded_time_and_the_round_is_written() {
    for hostile in [Hostile::Gigabyte, Hostile::EndlessHeader, Hostile::Drip] {
        let scratch = TempDir::new("freeswitch-hostile");
        let dir = scratch.path();
        let db = database(dir);
        let fs = Arc::new(esl_standin::start(Config::default()));
        let addr = fs.addr().to_string();
        let started = Instant::now();
        let mut obs = Observer::start(
            &db,
            dir.join("observe.log"),
            &[
                "--target",
                "sip7.example.com",
                "--freeswitch",
                &addr,
                "--interval",
                "4",
                "--once",
            ],
        );
        subscribed(&fs, 1, || obs.log());
        let mut good = Vec::new();
        for (i, phone) in ["127.1.0.11", "127.1.0.12", "127.1.0.13"]
            .iter()
            .enumerate()
        {
            good.extend(call(phone, 10.0 + i as f64, 0));
        }
        fs.emit(&good);
        // The hostile part, sent until observe is done with it (every reconnection gets it
        // again).
        let stop = Arc::new(AtomicBool::new(false));
        let (fs2, stop2) = (Arc::clone(&fs), Arc::clone(&stop));
        let bully = thread::spawn(move || {
            let mut sent = 0u64;
            while !stop2.load(Ordering::SeqCst) {
                match hostile {
                    Hostile::Gigabyte => {
                        fs2.emit_raw(
                            b"Content-Length: 1073741824\nContent-Type: text/event-plain\n\n",
                        );
                        fs2.emit_raw(&[b'x'; 65536]);
                        thread::sleep(Duration::from_millis(50));
                    }
                    Hostile::EndlessHeader => {
                        // At most 64 MiB in all, whatever observe does with it.
                        if sent < 64 << 20 && fs2.emit_raw(&[b'A'; 65536]) > 0 {
                            sent += 65536;
                        } else {
                            thread::sleep(Duration::from_millis(20));
                        }
                    }
                    Hostile::Drip => {
                        let e = call("127.1.0.14", 5.0, 0)[0].plain();
                        for b in e.as_bytes() {
                            if stop2.load(Ordering::SeqCst) {
                                break;
                            }
                            fs2.emit_raw(std::slice::from_ref(b));
                            thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            }
        });
        let status = obs.wait(Duration::from_secs(60));
        stop.store(true, Ordering::SeqCst);
        bully.join().unwrap();
        let log = obs.log();
        eprintln!("--- {hostile:?}: {:?}\n{log}", started.elapsed());
        assert!(status.is_some_and(|s| s.success()), "{hostile:?}: {log}");
        assert_eq!(
            rows(&db),
            [("127.1.0.0/16".into(), "sip7.example.com".into(), 11.0, 3)],
            "{hostile:?}: the round is written from the calls that came whole\n{log}"
        );
        let said = match hostile {
            Hostile::Gigabyte => "content-length 1073741824 is no event",
            Hostile::EndlessHeader => "header block longer than",
            // The dripped call never came whole: the three before it are the round.
            Hostile::Drip => "freeswitch: 3 measured calls ended",
        };
        assert!(log.contains(said), "{hostile:?}: {log}");
    }
}

/// One HTTP/1.0 GET of `/metrics`; the body.
fn metrics(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut got = String::new();
    s.read_to_string(&mut got).ok()?;
    Some(got.split_once("\r\n\r\n")?.1.to_owned())
}

fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_hundred_thousand_calls_in_flight_stay_capped_and_exported() {
    let scratch = TempDir::new("freeswitch-flood");
    let dir = scratch.path();
    let db = database(dir);
    let fs = esl_standin::start(Config::default());
    let addr = fs.addr().to_string();
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let obs = Observer::start(
        &db,
        dir.join("observe.log"),
        &[
            "--target",
            "sip7.example.com",
            "--freeswitch",
            &addr,
            "--interval",
            "1",
            "--metrics-listen",
            &listen,
        ],
    );
    subscribed(&fs, 1, || obs.log());
    // 100,000 calls that report and never hang up, in batches, then three that do.
    for batch in 0..100u64 {
        let events: Vec<esl_standin::Event> = (0..1000u64)
            .map(|i| {
                let uuid = format!("10000000-0000-4000-8000-{:012x}", batch * 1000 + i);
                Rtcp::of(&uuid, 1, 0.05, 0).event()
            })
            .collect();
        assert_eq!(fs.emit(&events), 1, "{}", obs.log());
    }
    let mut good = Vec::new();
    for phone in ["127.1.0.11", "127.1.0.12", "127.1.0.13"] {
        good.extend(call(phone, 30.0, 0));
    }
    fs.emit(&good);
    let body = poll(Duration::from_secs(120), || {
        let m = metrics(&listen)?;
        let done = value(&m, "pdns_ha_observe_freeswitch_calls_total{target=\"sip7.example.com\",outcome=\"measured\"}");
        (done == Some(3.0) && !rows(&db).is_empty()).then_some(m)
    });
    let peak = obs.peak_kb();
    let body = body.unwrap_or_else(|| panic!("{:?}\n{}", metrics(&listen), obs.log()));
    eprintln!("{body}\npeak resident {peak:?} kB");
    let series = |name: &str, label: &str| {
        let labels = match label {
            "" => "target=\"sip7.example.com\"".to_owned(),
            l => format!("target=\"sip7.example.com\",{l}"),
        };
        value(&body, &format!("{name}{{{labels}}}"))
    };
    // The cap is 50,000: the oldest 50,000 went, then one more for the first measured call;
    // each hangup freed the place the next call took.
    assert_eq!(
        series(
            "pdns_ha_observe_freeswitch_calls_total",
            "outcome=\"evicted\""
        ),
        Some(50_001.0)
    );
    assert_eq!(
        series("pdns_ha_observe_freeswitch_calls_in_flight", ""),
        Some(49_999.0)
    );
    assert_eq!(
        series("pdns_ha_observe_freeswitch_events_total", "kind=\"rtcp\""),
        Some(100_006.0)
    );
    assert_eq!(
        series("pdns_ha_observe_freeswitch_connected", ""),
        Some(1.0)
    );
    assert_eq!(
        series(
            "pdns_ha_observe_call_round_latency_seconds",
            "network=\"127.1.0.0/16\""
        ),
        Some(0.03)
    );
    assert_eq!(
        series("pdns_ha_observe_call_mos", "network=\"127.1.0.0/16\""),
        Some(4.49)
    );
    assert_eq!(
        series(
            "pdns_ha_target_latency_seconds",
            "network=\"127.1.0.0/16\",source=\"freeswitch\""
        ),
        Some(0.03)
    );
    assert_eq!(
        rows(&db),
        [("127.1.0.0/16".into(), "sip7.example.com".into(), 30.0, 3)]
    );
    // Bounded: a debug build holding 50,000 calls, far under what 100,000 unbounded would
    // take with their event bodies.
    assert!(peak.is_some_and(|kb| kb < 256 * 1024), "peak {peak:?} kB");
    if require("promtool") {
        crate::monitor::openmetrics::promtool_check(&body);
    }
}

#[test]
fn calls_in_flight_outlive_a_reconnection_and_an_oversized_event() {
    let scratch = TempDir::new("freeswitch-reconnect");
    let dir = scratch.path();
    let db = database(dir);
    let fs = esl_standin::start(Config::default());
    let addr = fs.addr().to_string();
    let obs = Observer::start(
        &db,
        dir.join("observe.log"),
        &[
            "--target",
            "sip7.example.com",
            "--freeswitch",
            &addr,
            "--interval",
            "1",
        ],
    );
    subscribed(&fs, 1, || obs.log());
    let phones = ["127.1.0.11", "127.1.0.12", "127.1.0.13"];
    let uuid = |i: usize| format!("00000000-0000-4000-a000-{i:012x}");
    let reports: Vec<esl_standin::Event> = (0..3)
        .map(|i| Rtcp::of(&uuid(i), i as u64, 0.025, 0).event())
        .collect();
    assert_eq!(fs.emit(&reports), 1);
    // FreeSWITCH restarts its Event Socket listener: observe comes back on its own.
    let before = fs.accepted();
    thread::sleep(Duration::from_millis(300));
    fs.drop_subscribers();
    let back = poll(Duration::from_secs(30), || {
        (fs.accepted() > before && fs.subscribed() == 1).then_some(())
    });
    assert!(back.is_some(), "no new subscription\n{}", obs.log());
    // An event of 2 MiB, longer than observe keeps: read past, the stream goes on.
    let mut big = Hangup::of(&uuid(99), 99, "127.1.0.99", 99, true).event();
    big.0.push(("variable_huge".into(), "x".repeat(2 << 20)));
    let mut events = vec![big];
    events.extend((0..3).map(|i| Hangup::of(&uuid(i), 10 + i as u64, phones[i], 99, true).event()));
    assert_eq!(fs.emit(&events), 1);
    let got = poll(Duration::from_secs(30), || {
        let r = rows(&db);
        (!r.is_empty()).then_some(r)
    });
    let log = obs.log();
    assert_eq!(
        got,
        Some(vec![(
            "127.1.0.0/16".into(),
            "sip7.example.com".into(),
            25.0,
            3
        )]),
        "{log}"
    );
    let last = poll(Duration::from_secs(10), || {
        let log = obs.log();
        log.contains("1 oversized events").then_some(log)
    });
    assert!(last.is_some(), "{}", obs.log());
    assert_eq!(obs.log().matches("subscribed to call events").count(), 2);
}
