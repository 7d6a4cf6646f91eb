//! Trust boundaries, second round (issue 19), each attack replayed as the review ran it: a
//! planted 1 MB monitors list and a drain written back after `undrain` in a real memcached
//! under pdns_server, memcached without a key file, control bytes and 10 MB in a record shown
//! by `explain`, megabytes of garbage on the pipe, a dangling `-wal`, one subscriber with four
//! registered contacts against three honest callers (real Kamailio and sipp phones), and a
//! local user's directory handed to `scripts/demo.sh`.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::e2e::memcached::Memcached;
use crate::e2e::trust::{key_file, mc_get, mc_set, run, SRV};
use crate::monitor::kamailio::{poll, tails, Server};
use crate::observe::keepalive::{start_phone, start_registrar};
use crate::pdns::{free_port, require, Backend, DigResult, Pdns, TempDir};
use crate::udp_relay::UdpRelay;
use crate::util::{init_db, run_pipe, Pipe, BIN, REPO};

/// The targets in an SRV answer, sorted.
fn targets(r: &DigResult) -> Vec<String> {
    let mut t: Vec<String> = r
        .answer()
        .iter()
        .filter_map(|l| l.split(' ').nth(7).map(str::to_owned))
        .collect();
    t.sort();
    t
}

fn pipe_command(db: &Path, servers: &str, key: &str) -> String {
    let bin = Path::new(BIN).canonicalize().unwrap();
    format!(
        "{} --db {} --algorithm least-latency --memcached {servers} --memcached-key-file {key}",
        bin.display(),
        db.display()
    )
}

/// Digs until `ok` holds for an answer, for at most `within`; the last answer.
fn dig_until(pdns: &Pdns, within: Duration, ok: impl Fn(&DigResult) -> bool) -> DigResult {
    let t = Instant::now();
    loop {
        let r = pdns.dig(&[SRV, "SRV"]);
        if ok(&r) || t.elapsed() > within {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The whole list: 150,000 ids, 1 MB, as in the review (memcached's item limit is 1 MiB).
fn planted_list() -> Vec<u8> {
    let mut v = Vec::with_capacity(1_000_000);
    for i in 0..150_000 {
        if i > 0 {
            v.push(b' ');
        }
        v.extend_from_slice(format!("m{i:05}").as_bytes());
    }
    v.truncate(1_000_000);
    v
}

#[test]
fn a_planted_monitors_list_costs_no_answer_and_a_monitor_heals_it() {
    if !(require("memcached") && require("pdns_server") && require("dig")) {
        return;
    }
    let dir = TempDir::new("attack-list");
    let key = key_file(&dir);
    let key_s = key.to_str().unwrap();
    let mcd = Memcached::start(Memcached::free_port());
    let servers = format!("127.0.0.1:{}", mcd.port);
    let (site, node) = (dir.path().join("site.db"), dir.path().join("node.db"));
    for db in [&site, &node] {
        init_db(db, &["sql/example.sql"]);
    }
    // Planted before pdns starts: the review saw pdns exit ("Timeout waiting for data
    // from coprocess") and every dig SERVFAIL.
    let list = planted_list();
    assert_eq!(list.len(), 1_000_000);
    mc_set(mcd.port, "pdns-ha:monitors", &list);
    let pdns = Pdns::options(Backend::Pipe {
        command: pipe_command(&node, &servers, key_s),
        abi: 3,
    })
    .start();
    for _ in 0..20 {
        let r = pdns.dig(&[SRV, "SRV"]);
        assert_eq!(
            r.status(),
            Some("NOERROR"),
            "{}\n{}",
            r.raw,
            pdns.log_tail(20)
        );
        assert_eq!(r.answer().len(), 8, "{}", r.raw);
    }
    // A monitor's round (here `metric health`, which registers its id first) rewrites the
    // list from its verified entries: its sealed entry alone.
    let (ok, _, err) = run(&[
        "metric",
        "health",
        "--db",
        site.to_str().unwrap(),
        "--target",
        "sip1.example.com",
        "down",
        "--monitor-id",
        "site",
        "--memcached",
        &servers,
        "--memcached-key-file",
        key_s,
    ]);
    assert!(ok, "{err}");
    let healed = mc_get(mcd.port, "pdns-ha:monitors");
    let healed = String::from_utf8(healed).unwrap();
    assert!(
        healed.starts_with("site/") && healed.len() == 5 + 64 && !healed.contains(' '),
        "{healed}"
    );
    // The pipes use that monitor's verdict: sip1 leaves the answer.
    let r = dig_until(&pdns, Duration::from_secs(15), |r| r.answer().len() == 7);
    assert!(
        !targets(&r).contains(&"sip1.example.com.".to_owned()),
        "{}\n{}",
        r.raw,
        pdns.log_tail(20)
    );
    // 4,000 unsealed ids appended after it (16 KB, over the bound again): the list is
    // refused unread, the last one read stays in use, the answer does not move.
    let mut more = String::new();
    for i in 0..4_000 {
        more.push_str(&format!(" x{i:04}"));
    }
    let appended = crate::e2e::trust::mc(
        mcd.port,
        format!("append pdns-ha:monitors 0 0 {}\r\n{more}\r\n", more.len()).as_bytes(),
    );
    assert_eq!(appended, b"STORED\r\n");
    for _ in 0..10 {
        let r = pdns.dig(&[SRV, "SRV"]);
        assert_eq!(r.answer().len(), 7, "{}", r.raw);
    }
    let log = pdns.log();
    assert!(log.contains("too large to read"), "{log}");
}

#[test]
fn a_drain_written_back_after_undrain_is_refused() {
    if !(require("memcached") && require("pdns_server") && require("dig")) {
        return;
    }
    let dir = TempDir::new("attack-drain");
    let key = key_file(&dir);
    let key_s = key.to_str().unwrap();
    let mcd = Memcached::start(Memcached::free_port());
    let servers = format!("127.0.0.1:{}", mcd.port);
    let db = dir.path().join("node.db");
    init_db(&db, &["sql/example.sql"]);
    let db_s = db.to_str().unwrap();
    let shared = ["--memcached", &servers, "--memcached-key-file", key_s];
    let drain = |cmd: &str, target: &str| {
        let mut args = vec![cmd, "--db", db_s, "--target", target];
        args.extend_from_slice(&shared);
        let (ok, out, err) = run(&args);
        assert!(ok, "{cmd}: {err}");
        out
    };
    drain("drain", "sip7.example.com");
    let captured = mc_get(mcd.port, "pdns-ha:drain:sip7.example.com");
    assert!(captured.starts_with(b"v1 1 "), "{captured:?}");
    drain("undrain", "sip7.example.com");
    let undrained = mc_get(mcd.port, "pdns-ha:drain:sip7.example.com");
    assert!(undrained.starts_with(b"v1 0 "), "{undrained:?}");

    // A pipe that saw the undrain, then the old drain written back.
    let mut args = vec!["--algorithm", "least-latency"];
    args.extend_from_slice(&shared);
    let mut running = Pipe::start_with_log(&db, &args, Stdio::null());
    running.ask("HELO\t5");
    let ask = format!("Q\t{SRV}\tIN\tSRV\t1\t127.0.0.1\t127.0.0.1\t127.0.0.1/32");
    let sip7 = |a: &[String]| a.iter().any(|l| l.ends_with(" sip7.example.com."));
    assert!(sip7(&running.ask(&ask)));
    mc_set(mcd.port, "pdns-ha:drain:sip7.example.com", &captured);

    // Pipes started after the replay, on the node whose database holds the undrain.
    let pdns = Pdns::options(Backend::Pipe {
        command: pipe_command(&db, &servers, key_s),
        abi: 3,
    })
    .start();
    let t = Instant::now();
    let mut replayed = 0;
    while t.elapsed() < Duration::from_secs(4) {
        let r = pdns.dig(&[SRV, "SRV"]);
        assert!(
            targets(&r).contains(&"sip7.example.com.".to_owned()),
            "the replayed drain took sip7 out: {}\n{}",
            r.raw,
            pdns.log_tail(20)
        );
        assert!(sip7(&running.ask(&ask)));
        let status = running.ask("CMD\tstatus").join("\n");
        replayed = status
            .split("replayed ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        replayed >= 1,
        "the running pipe counted no replay:\n{}",
        running.ask("CMD\tstatus").join("\n")
    );
    // A new drain (the next generation) is taken at once, by all of them.
    drain("drain", "sip7.example.com");
    let r = dig_until(&pdns, Duration::from_secs(15), |r| r.answer().len() == 7);
    assert!(
        !targets(&r).contains(&"sip7.example.com.".to_owned()),
        "{}",
        r.raw
    );
    let generations: i64 = Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT generation FROM ha_drain_generation WHERE target = 'sip7.example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(generations, 3, "drain, undrain, drain");
}

#[test]
fn memcached_without_a_key_file_is_said_once_at_start() {
    let dir = TempDir::new("attack-nokey");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let db_s = db.to_str().unwrap();
    // Nothing listens there: the warning is about configuration, not about a server.
    let servers = format!("127.0.0.1:{}", free_port());
    let warning = "memcached without --memcached-key-file";
    let key = key_file(&dir);
    for args in [
        vec!["drain", "--db", db_s, "--target", "sip1.example.com"],
        vec!["undrain", "--db", db_s, "--target", "sip1.example.com"],
        vec![
            "metric",
            "load",
            "--db",
            db_s,
            "--target",
            "sip4.example.com",
            "--sessions",
            "1",
        ],
        vec!["status", "--db", db_s],
    ] {
        let mut all = args.clone();
        all.extend_from_slice(&["--memcached", &servers]);
        let (ok, _, err) = run(&all);
        assert!(ok, "{args:?}: {err}");
        assert_eq!(err.matches(warning).count(), 1, "{args:?}:\n{err}");
        all.extend_from_slice(&["--memcached-key-file", key.to_str().unwrap()]);
        let (ok, _, err) = run(&all);
        assert!(ok, "{args:?}: {err}");
        assert!(!err.contains(warning), "with a key file, {args:?}:\n{err}");
    }
    // The pipe: once, however many questions.
    let mut input = b"HELO\t5\n".to_vec();
    for _ in 0..50 {
        input
            .extend_from_slice(format!("Q\t{SRV}\tIN\tANY\t-1\t127.0.0.1\t127.0.0.1\n").as_bytes());
    }
    let out = run_pipe(&db, &["--memcached", &servers], input);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches(warning).count(), 1, "{err}");
}

#[test]
fn explain_escapes_and_cuts_record_content() {
    let dir = TempDir::new("attack-explain");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let big = format!("\"\x1b]0;owned\x07\x1b[2J{}\"", "x".repeat(10_000_000));
    let c = Connection::open(&db).unwrap();
    c.execute(
        "INSERT INTO records (domain_id, name, type, content, ttl, auth)
         SELECT id, 'big.example.com', 'TXT', ?1, 300, 1 FROM domains WHERE name = 'example.com'",
        [&big],
    )
    .unwrap();
    drop(c);
    let out = Command::new(BIN)
        .args(["explain", "--db"])
        .arg(&db)
        .args(["big.example.com", "TXT"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.len() < 4096, "{} bytes of explain", text.len());
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    // Once per algorithm, escaped, cut with the count of what was left out.
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(" IN TXT ")).collect();
    assert_eq!(lines.len(), 3, "{text}");
    for l in lines {
        assert!(
            l.contains("\"\\u{1b}]0;owned\\u{7}\\u{1b}[2Jxxx") && l.contains("…(+"),
            "{l}"
        );
    }
}

#[test]
fn garbage_on_the_pipe_costs_a_few_lines_of_log() {
    let dir = TempDir::new("attack-garbage");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    // 10 MB of lines pdns would never send: each gets its FAIL, the log a line per 30 s.
    let mut input = b"HELO\t5\n".to_vec();
    let mut n = 0;
    while input.len() < 10_000_000 {
        input.extend_from_slice(format!("garbage line {n} \x1b[2J\tQ\n").as_bytes());
        n += 1;
    }
    let out = run_pipe(&db, &[], input);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().filter(|l| *l == "FAIL").count(), n);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines().count() <= 3,
        "{} lines:\n{err}",
        err.lines().count()
    );
    assert!(err.len() < 1000, "{err}");
    assert!(err.contains("answered FAIL"), "{err}");
}

#[test]
fn a_dangling_wal_is_named_as_what_is_wrong() {
    let dir = TempDir::new("attack-wal");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let wal = dir.path().join("ha.db-wal");
    let _ = fs::remove_file(&wal);
    symlink(dir.path().join("nowhere/x"), &wal).unwrap();
    let (ok, _, err) = run(&["status", "--db", db.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("ha.db-wal is a symbolic link to nothing"),
        "{err}"
    );
    assert!(!err.contains("No such file"), "{err}");
}

/// The honest phones, registered as three subscribers; and one subscriber's four contacts.
const HONEST: [&str; 3] = ["127.1.0.11", "127.1.0.12", "127.1.0.13"];
const MALLORY: [&str; 4] = ["127.1.0.31", "127.1.0.32", "127.1.0.33", "127.1.0.34"];

#[test]
fn one_subscriber_with_four_contacts_counts_once_under_pdns() {
    let tools = [
        require("kamailio"),
        require("sipp"),
        require("pdns_server"),
        require("dig"),
    ];
    if tools.contains(&false) {
        return;
    }
    let _alone = crate::util::timing_lock();
    let scratch = TempDir::new("attack-aor");
    let dir = scratch.path();
    let db: PathBuf = dir.join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "UPDATE ha_targets SET probe = 'none', load_source = 'none';
             INSERT INTO ha_networks (cidr, name) VALUES ('127.1.0.0/16', 'montreal');",
        )
        .unwrap();
    // sip7 (Montreal) is near the honest phones, sip8 (Vancouver) far; Mallory registers
    // four contacts with Vancouver directly, answering its keepalives at once.
    let (montreal, m_sip, m_rpc) = start_registrar(dir, "kamailio-montreal");
    let (vancouver, v_sip, v_rpc) = start_registrar(dir, "kamailio-vancouver");
    let near = UdpRelay::start(m_sip, Duration::from_millis(5));
    let far = UdpRelay::start(v_sip, Duration::from_millis(50));
    let ready = poll(Duration::from_secs(10), || {
        let up = |port| crate::observe::keepalive::rpc(port, "ul.dump").is_some();
        Some(()).filter(|_| up(m_rpc) && up(v_rpc))
    });
    assert!(ready.is_some(), "{}", tails(&[&montreal, &vancouver]));
    let mut phones: Vec<Server> = Vec::new();
    for (i, ip) in HONEST.iter().enumerate() {
        for (s, relay) in [&near, &far].iter().enumerate() {
            let name: &'static str = Box::leak(format!("sipp-{ip}-{s}").into_boxed_str());
            phones.push(start_phone(
                dir,
                name,
                ip,
                &format!("honest{i}"),
                relay.addr,
            ));
        }
    }
    for ip in MALLORY {
        let name: &'static str = Box::leak(format!("sipp-{ip}").into_boxed_str());
        phones.push(start_phone(dir, name, ip, "mallory", v_sip));
    }
    let observe = |target: &str, rpc: u16| {
        let out = Command::new(BIN)
            .args(["observe", "--once", "--db"])
            .arg(&db)
            .args(["--target", target, "--kamailio"])
            .arg(format!("http://127.0.0.1:{rpc}/RPC"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let reading = |target: &str| -> Option<(f64, i64)> {
        Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT ewma_ms, callers FROM ha_latency
                 WHERE network = '127.1.0.0/16' AND target = ?1",
                [target],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok()
    };
    // Until Vancouver sees all seven contacts answer (four of them Mallory's, one AOR).
    let counted = poll(Duration::from_secs(30), || {
        let t = Instant::now();
        observe("sip7.example.com", m_rpc);
        observe("sip8.example.com", v_rpc);
        std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
        let m = reading("sip7.example.com")?;
        let v = reading("sip8.example.com").filter(|v| v.1 == 4)?;
        Some((m, v))
    });
    let ((m_ms, m_callers), (v_ms, _)) = counted.unwrap_or_else(|| {
        panic!(
            "no readings with four callers: {:?} {:?}\n{}",
            reading("sip7.example.com"),
            reading("sip8.example.com"),
            tails(&[&montreal, &vancouver])
        )
    });
    assert_eq!(m_callers, 3);
    // Vancouver: the median of (Mallory ~0 ms, 3 x ~100 ms), not Mallory's 0 ms.
    assert!(
        v_ms > 50.0,
        "Vancouver read {v_ms} ms: Mallory outvoted the callers"
    );
    assert!(m_ms < v_ms, "Montreal {m_ms} ms, Vancouver {v_ms} ms");

    let pdns = Pdns::options(Backend::pdns_ha(&db, "--algorithm least-latency"))
        .setting("edns-subnet-processing", "yes")
        .start();
    let r = pdns.dig(&["+subnet=127.1.0.0/16", SRV, "SRV"]);
    let prio = |target: &str| {
        r.answer()
            .iter()
            .find_map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
                [_, _, _, "SRV", p, _, _, t] if t == target => p.parse::<u16>().ok(),
                _ => None,
            })
    };
    let (m, v) = (prio("sip7.example.com."), prio("sip8.example.com."));
    assert!(
        matches!((m, v), (Some(m), Some(v)) if m < v),
        "Montreal must rank first for 127.1/16: {}",
        r.raw
    );
}

/// `scripts/demo.sh` with `PDNS_HA_DEMO_DIR` and a prebuilt binary; its status and stderr.
fn demo(dir: &Path, port: u16) -> (bool, String, String) {
    let out = Command::new("bash")
        .arg(Path::new(REPO).join("scripts/demo.sh"))
        .env("PDNS_HA_DEMO_DIR", dir)
        .env("PDNS_HA_DEMO_BIN", Path::new(BIN).canonicalize().unwrap())
        .env("PDNS_HA_DEMO_PORT", port.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_refuses_a_directory_someone_else_can_write() {
    if !require("pdns_server") || !require("dig") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let scratch = TempDir::new("attack-demo");
    let victim = scratch.path().join("victim");
    fs::write(&victim, "precious\n").unwrap();
    // Another user's directory, as a local user would prepare it for root: a symlinked
    // pdns.conf and a planted pid.
    let theirs = scratch.path().join("theirs");
    fs::create_dir(&theirs).unwrap();
    symlink(&victim, theirs.join("pdns.conf")).unwrap();
    fs::write(theirs.join("pdns.pid"), "1\n").unwrap();
    let mut cases = vec![];
    if root {
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        cases.push((theirs.clone(), "belongs to uid 65534"));
    }
    let open = scratch.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    symlink(&victim, open.join("pdns.conf")).unwrap();
    cases.push((open, "writable by group or others"));
    let link = scratch.path().join("link");
    symlink(&theirs, &link).unwrap();
    cases.push((link, "is a symbolic link"));
    for (dir, why) in cases {
        let (ok, _, err) = demo(&dir, free_port());
        assert!(!ok && err.contains(why), "{}: {err}", dir.display());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    }

    // A directory of its own: made private, every file its own, pdns answers.
    let mine = scratch.path().join("mine");
    let port = free_port();
    let (ok, out, err) = demo(&mine, port);
    let pid_file = mine.join("pdns.pid");
    let stop = || {
        if let Ok(pid) = fs::read_to_string(&pid_file) {
            crate::util::kill(pid.trim().parse().unwrap());
        }
    };
    if !ok {
        stop();
        panic!("demo failed:\n{out}\n{err}");
    }
    let m = fs::symlink_metadata(&mine).unwrap();
    let conf = fs::symlink_metadata(mine.join("pdns.conf")).unwrap();
    stop();
    assert!(out.contains("IN\tSRV") || out.contains(" SRV "), "{out}");
    assert_eq!(m.mode() & 0o777, 0o700);
    assert!(conf.file_type().is_file());
    assert_eq!(conf.mode() & 0o077, 0, "pdns.conf mode {:o}", conf.mode());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
}
