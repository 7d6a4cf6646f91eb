//! Golden transcripts: `cases/<abi>-[<algorithm>-]<behaviour>.in` is fed to
//! the backend in-process, as pdns would send it, and what it writes must
//! equal `cases/<...>.out` byte for byte. The algorithm comes from the name
//! (`static` when the name does not give one).
//!
//! An `.in` file opens with a header: `#` lines say what the case shows,
//! `#sql` lines are run against a fresh copy of the fixture database before
//! the backend starts (readings, drains, edits). Readings are judged against
//! a fixed clock, [`NOW`], so a case pins ranked answers, stale readings and
//! TTL caps exactly. The version in banners is written as `VERSION`, so a
//! release does not rewrite every transcript.
//!
//! `BLESS=1 cargo test --test pipe-abi golden` rewrites the `.out` files after
//! a change whose new output you have read; it is refused under CI.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use pdns_ha::config::Secs;
use pdns_ha::pipe::backend::Backend;
use pdns_ha::pipe::store::Store;
use pdns_ha::select::Algorithm;

use crate::pdns::TempDir;
use crate::util::{diff, fixture_db, in_ci, REPO};

/// The golden clock: readings in the cases are stamped relative to it.
pub const NOW: f64 = 1_800_000_000.0;

/// The transcript for one case.
fn run_case(input: &Path, dir: &TempDir) -> String {
    let name = input.file_stem().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(input).unwrap();
    let (header, body): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| l.starts_with('#'));
    assert!(
        header.iter().any(|l| !l.starts_with("#sql")),
        "{name}: the .in file needs a `#` header line saying what the case shows"
    );
    let db = dir.path().join(format!("{name}.db"));
    std::fs::copy(fixture_db(), &db).unwrap();
    let sql: String = header
        .iter()
        .filter_map(|l| l.strip_prefix("#sql"))
        .collect::<Vec<_>>()
        .join("\n");
    if !sql.is_empty() {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(&sql)
            .unwrap_or_else(|e| panic!("{name}: #sql: {e}"));
    }
    let opts = pdns_ha::config::PipeOptions {
        db: db.clone(),
        algorithm: algorithm_of(&name),
        dynamic_ttl: Secs(30),
        stale_after: Secs(30),
        cache: None,
        max_clock_skew: 5,
        pipe_counters: None,
    };
    // Readings are judged at the golden clock too: stamped near NOW, they
    // are not in the future.
    let skew = pdns_ha::state::validate::DEFAULT_MAX_SKEW;
    let store = Store::open_with(&db, || NOW, skew).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut backend =
        Backend::new(store, pdns_ha::pipe::answer::Ranker::from_options(&opts)).with_clock(|| NOW);
    let mut input = body.join("\n");
    input.push('\n');
    let mut out = Vec::new();
    backend
        .run(&mut BufReader::new(input.as_bytes()), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap().replace(
        concat!("pdns-ha ", env!("CARGO_PKG_VERSION")),
        "pdns-ha VERSION",
    )
}

/// `3-least-latency-scope` runs least-latency; `3-srv-walk` runs static.
fn algorithm_of(name: &str) -> Algorithm {
    let rest = name.split_once('-').map_or("", |(_, r)| r);
    [
        Algorithm::LeastLatency,
        Algorithm::LeastLoad,
        Algorithm::Static,
    ]
    .into_iter()
    .find(|a| rest.starts_with(&format!("{a}-")))
    .unwrap_or(Algorithm::Static)
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(REPO).join("pipe-abi-tests/cases");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "in"))
        .collect();
    cases.sort();
    cases
}

#[test]
fn golden_transcripts() {
    let cases = cases();
    assert!(
        cases.len() >= 10,
        "expected the golden cases in pipe-abi-tests/cases"
    );
    let bless = std::env::var("BLESS").is_ok_and(|v| v == "1");
    assert!(
        !(bless && in_ci()),
        "BLESS=1 is refused under CI: bless on your machine and commit what you read"
    );
    let dir = TempDir::new("golden");
    let mut failures = Vec::new();
    for input in &cases {
        let got = run_case(input, &dir);
        let want_path = input.with_extension("out");
        if bless {
            std::fs::write(&want_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&want_path).unwrap_or_default();
        if got != want {
            let name = input.file_stem().unwrap().to_string_lossy();
            failures.push(format!("{name}:\n{}", diff(&want, &got)));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_algorithm_has_ranked_cases() {
    let names: Vec<String> = cases()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for alg in [Algorithm::LeastLatency, Algorithm::LeastLoad] {
        let n = names.iter().filter(|n| algorithm_of(n) == alg).count();
        assert!(n >= 3, "only {n} golden cases run {alg}");
    }
}

/// `explain` prints the records the pipe sends, in the same order with the
/// same TTL, priorities, weights and scope, for each algorithm.
#[test]
fn explain_shows_what_the_pipe_answers() {
    let dir = TempDir::new("explain");
    let db = dir.path().join("ha.db");
    std::fs::copy(fixture_db(), &db).unwrap();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "INSERT INTO ha_latency (network, target, mean_ms, ewma_ms, samples, updated) VALUES
               ('192.0.2.0/24', 'sip7.example.com', 3, 3, 20, strftime('%s', 'now')),
               ('192.0.2.0/24', 'sip1.example.com', 40, 40, 20, strftime('%s', 'now'));
             INSERT INTO ha_load (target, sessions, max_sessions, updated) VALUES
               ('sip2.example.com', 900, 1000, strftime('%s', 'now'));",
        )
        .unwrap();
    for alg in [
        Algorithm::LeastLatency,
        Algorithm::LeastLoad,
        Algorithm::Static,
    ] {
        let explained = std::process::Command::new(crate::util::BIN)
            .args(["explain", "--db"])
            .arg(&db)
            .args(["--algorithm", &alg.to_string(), "--client", "192.0.2.0/24"])
            .args(["_sip._udp.example.com", "SRV"])
            .output()
            .unwrap();
        assert!(explained.status.success(), "{alg}");
        let explained: Vec<String> = String::from_utf8(explained.stdout)
            .unwrap()
            .lines()
            .filter(|l| l.contains(" IN SRV "))
            .map(str::to_owned)
            .collect();
        let opts = pdns_ha::config::PipeOptions {
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
            pdns_ha::pipe::answer::Ranker::from_options(&opts),
        );
        let question =
            "HELO\t3\nQ\t_sip._udp.example.com\tIN\tSRV\t1\t127.0.0.1\t127.0.0.1\t192.0.2.0/24\n";
        let mut out = Vec::new();
        backend
            .run(&mut BufReader::new(question.as_bytes()), &mut out)
            .unwrap();
        let piped: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .filter_map(|l| match l.split('\t').collect::<Vec<_>>()[..] {
                ["DATA", scope, _, name, "IN", "SRV", ttl, _, prio, rest] => Some(format!(
                    "{name}. {ttl} IN SRV {prio} {rest}   ; scope /{scope}"
                )),
                _ => None,
            })
            .collect();
        assert_eq!(piped.len(), 8, "{alg}");
        assert_eq!(explained, piped, "{alg}");
    }
}
