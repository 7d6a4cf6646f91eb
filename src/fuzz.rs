//! Fuzzing on stable Rust: seeded mutation of known-good inputs against the
//! pipe's line parser and answer path, the Event Socket and JSON-RPC
//! readers (fed from a loopback socket, so framing and deadlines are
//! exercised too), and the parsers of `metric` input and memcached values.
//! Each target runs for `PDNS_HA_FUZZ_SECS` seconds (default 0.2, a smoke
//! run that keeps `cargo test` quick); `fuzz/run.sh` runs them long. A failing input is
//! printed in hex to become a regression test.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::cli;
use crate::config::{PipeOptions, Secs};
use crate::dns::Subnet;
use crate::pipe::backend::Backend;
use crate::pipe::store::Store;
use crate::select::Algorithm;
use crate::state::reading::Reading;
use clap::Parser;

fn budget() -> Duration {
    let secs = std::env::var("PDNS_HA_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.2);
    Duration::from_secs_f64(secs)
}

/// xorshift64*, seeded per target so that runs replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Flips, inserts, deletes, duplicates or splices in interesting bytes.
    fn mutate(&mut self, input: &mut Vec<u8>, dictionary: &[&[u8]]) {
        for _ in 0..=self.below(4) {
            let at = self.below(input.len() + 1);
            match self.below(6) {
                0 if !input.is_empty() => {
                    let i = at.min(input.len() - 1);
                    input[i] ^= 1 << self.below(8);
                }
                1 => input.insert(at, self.next() as u8),
                2 if at < input.len() => {
                    drop(input.drain(at..(at + self.below(16)).min(input.len())))
                }
                3 if at < input.len() => {
                    let end = (at + self.below(64)).min(input.len());
                    let piece = input[at..end].to_vec();
                    input.splice(at..at, piece);
                }
                _ => {
                    let word = dictionary[self.below(dictionary.len())];
                    input.splice(at..at, word.iter().copied());
                }
            }
        }
        input.truncate(16 * 1024);
    }
}

/// Runs `check` on mutants of `seeds` until the budget is spent.
fn fuzz(
    name: &str,
    seed: u64,
    seeds: &[Vec<u8>],
    dictionary: &[&[u8]],
    mut check: impl FnMut(&[u8]),
) {
    let mut rng = Rng(seed);
    let (start, budget) = (Instant::now(), budget());
    let mut runs = 0u64;
    while start.elapsed() < budget || runs < seeds.len() as u64 {
        let mut input = seeds[runs as usize % seeds.len()].clone();
        if runs >= seeds.len() as u64 {
            rng.mutate(&mut input, dictionary);
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        if result.is_err() {
            panic!(
                "{name}: failing input (hex): {}",
                input.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
        }
        runs += 1;
    }
    eprintln!("fuzz {name}: {runs} inputs in {:.1?}", start.elapsed());
}

/// The example database in a directory of its own, removed on drop.
struct FixtureDb(PathBuf);

impl FixtureDb {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("pdns-ha-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("fuzz.db");
        let _ = std::fs::remove_file(&db);
        let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql/example.sql");
        crate::ops::init::run(&db, &[example]).unwrap();
        Self(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.join("fuzz.db")
    }
}

impl Drop for FixtureDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn fuzz_pipe_lines() {
    let fixture = FixtureDb::new();
    let db = fixture.path();
    let seeds: Vec<Vec<u8>> = [
        "HELO\t1\nQ\t_sip._udp.example.com\tIN\tANY\t1\t127.0.0.1\nAXFR\t1\n",
        "HELO\t3\nQ\texample.com\tIN\tSOA\t-1\t0.0.0.0\t0.0.0.0\t0.0.0.0/0\nQ\tsip.example.com\tIN\tA\t1\t198.51.100.7\t127.0.0.1\t198.51.100.0/24\n",
        "HELO\t5\nCMD\tstatus\nQ\t*.example.com\tIN\tANY\t1\t::1\t::1\t2001:db8::/56\nAXFR\t1\texample.com\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let dictionary: &[&[u8]] = &[
        b"\t", b"\n", b"Q\t", b"HELO\t", b"ANY", b"SRV", b"/", b"%eth0", b"\xff", b"\r", b"-1",
        b"IN",
    ];
    for alg in [
        Algorithm::Static,
        Algorithm::LeastLatency,
        Algorithm::LeastLoad,
    ] {
        let opts = PipeOptions {
            db: db.clone(),
            algorithm: alg,
            dynamic_ttl: Secs(30),
            stale_after: Secs(30),
            cache: None,
            max_clock_skew: 5,
            pipe_counters: None,
        };
        let mut backend = Backend::new(
            Store::open(&db).unwrap(),
            crate::pipe::answer::Ranker::from_options(&opts),
        );
        let mut out = Vec::new();
        fuzz(
            &format!("pipe ({alg})"),
            0x5eed ^ alg as u64,
            &seeds,
            dictionary,
            |input| {
                out.clear();
                backend.run(&mut &input[..], &mut out).unwrap();
                // Exactly one answer per line, whatever the line.
                let lines = match input.is_empty() {
                    true => 0,
                    false => {
                        input.split(|&b| b == b'\n').count() - usize::from(input.ends_with(b"\n"))
                    }
                };
                let ends = out
                    .split(|&b| b == b'\n')
                    .filter(|l| *l == b"END" || *l == b"FAIL" || l.starts_with(b"OK\t"))
                    .count();
                assert_eq!(ends, lines, "{}", String::from_utf8_lossy(&out));
            },
        );
    }
}

/// Serves each connection the bytes sent on `replies`, then closes.
fn reply_server() -> (String, mpsc::Sender<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    thread::spawn(move || {
        for reply in rx {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let _ = conn.set_read_timeout(Some(Duration::from_millis(20)));
            let mut sink = [0u8; 4096];
            // Writes in two pieces, as FreeSWITCH does, and drains what the
            // client sends so a close does not reset the connection early.
            let half = reply.len() / 2;
            let _ = conn.write_all(&reply[..half]);
            let _ = conn.read(&mut sink);
            let _ = conn.write_all(&reply[half..]);
            let _ = conn.read(&mut sink);
        }
    });
    (addr, tx)
}

const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

#[test]
fn fuzz_event_socket_reader() {
    let (addr, tx) = reply_server();
    let status = "UP 0 years, 3 days\nFreeSWITCH (Version 1.10.12-release 64bit) is ready\n\
                  1234 session(s) since startup\n42 session(s) - peak 57, last 5min 44 \n\
                  3 session(s) per Sec out of max 30, peak 9, last 5min 4 \n1000 session(s) max\n";
    let json = r#"{"command":"status","data":"","status":"success","response":{"sessions":{"count":{"total":1234,"active":42,"peak":57,"peak5Min":44,"limit":1000}}}}"#;
    let seeds: Vec<Vec<u8>> = [status, json]
        .iter()
        .map(|body| {
            format!(
                "Content-Type: auth/request\n\nContent-Type: command/reply\nReply-Text: +OK accepted\n\n\
                 Content-Type: api/response\nContent-Length: {}\n\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .collect();
    let dictionary: &[&[u8]] = &[
        b"\n\n",
        b"Content-Length: ",
        b"Content-Type: text/disconnect-notice\n",
        b"-ERR ",
        b"session(s)",
        b"99999999999",
        b"{",
        b"\"",
        b"Reply-Text: ",
    ];
    fuzz("event socket", 0xe51, &seeds, dictionary, |input| {
        tx.send(input.to_vec()).unwrap();
        let t = Instant::now();
        let result = crate::monitor::esl::read_load(&addr, "ClueCon", PROBE_TIMEOUT);
        assert!(t.elapsed() < PROBE_TIMEOUT * 5, "took {:?}", t.elapsed());
        if let Ok(load) = result {
            assert!(load.max_sessions.is_none_or(|m| m > 0));
        }
    });
}

#[test]
fn fuzz_json_rpc_reader() {
    let (addr, tx) = reply_server();
    let body = "{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"result\":\t{\n\t\t\"starting\":\t0,\n\t\t\"all\":\t7\n\t},\n\t\"id\":\t1\n}";
    let seeds = vec![
        format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            .into_bytes(),
        b"HTTP/1.0 500 Method Not Found\r\nContent-Length: 60\r\n\r\n{\"jsonrpc\":\"2.0\",\"error\":{\"code\":500,\"message\":\"x\"},\"id\":1}"
            .to_vec(),
    ];
    let dictionary: &[&[u8]] = &[
        b"\r\n",
        b"Content-Length: ",
        b"\"all\":",
        b"\"error\"",
        b"{",
        b"}",
        b"[",
        b"\\\"",
        b"4294967296",
    ];
    let url = format!("http://{addr}/RPC");
    fuzz("json-rpc", 0x4a5, &seeds, dictionary, |input| {
        tx.send(input.to_vec()).unwrap();
        let t = Instant::now();
        let _ = crate::net::kamailio::read_active_dialogs(&url, PROBE_TIMEOUT);
        assert!(t.elapsed() < PROBE_TIMEOUT * 5, "took {:?}", t.elapsed());
    });
}

#[test]
fn fuzz_metric_input_and_shared_values() {
    let seeds: Vec<Vec<u8>> = [
        "metric latency --db d --network 198.51.100.0/24 --target sip1.example.com --ms 12.5",
        "metric load --db d --target sip1 --sessions 42 --max 1000 --memcached 127.0.0.1:11211",
        "metric health --db d --target sip1 down",
        "explain --db d --client 2001:db8::/56 _sip._udp.example.com SRV",
        "p:latency:198.51.100.0/24|sip1|observe 1.5 2.5 9 0 1700000000.5 4",
        "p:load:sip1 42 - 1700000000",
        "p:health:sip1|mon-a 1 1700000000",
        "p:drain:sip1 1 1700000000 kernel upgrade",
        "p:health:sip1|mon-a v1 1 1700000000 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let dictionary: &[&[u8]] = &[
        b" --", b"=", b" -", b"/", b":", b"|", b"nan", b"1e999", b" ", b"\t",
    ];
    let secret = crate::state::auth::Key::new(b"fuzz secret, 16+ bytes").unwrap();
    fuzz("metric input", 0x3e7, &seeds, dictionary, |input| {
        let text = String::from_utf8_lossy(input);
        let mut args: Vec<std::ffi::OsString> = vec!["pdns-ha".into()];
        args.extend(text.split(' ').map(std::ffi::OsString::from));
        let _ = cli::PipeCli::try_parse_from(cli::with_default_command(args));
        if let Some((key, value)) = text.split_once(' ') {
            if let Some(r) = Reading::parse("p", key, value) {
                // What parses must print back to the same value.
                assert_eq!(Reading::parse("p", &r.key("p"), &r.value()), Some(r));
                // What is sealed opens again, under its own key only.
                let sealed = secret.seal(key, value);
                assert_eq!(secret.open(key, &sealed), Ok(value));
                assert!(secret.open(&format!("{key}x"), &sealed).is_err());
            }
            // Anything else is refused without a panic, and the wire key
            // always fits memcached.
            let _ = secret.open(key, value);
            let wire = crate::state::auth::wire_key("p", key);
            assert!(wire.len() <= 250 && wire.bytes().all(|b| b > b' ' && b != 0x7f));
        }
        for word in text.split(' ') {
            let _ = Subnet::parse(word);
        }
    });
}
