//! Sample outputs in the docs come from the commands they show, not from a paste. A fenced
//! block right after `<!-- sample: NAME -->` is a console transcript: every `$ ` line is
//! a command, the lines after it up to the next `$ ` its output. The blocks of one NAME in
//! one file run in order, in one scratch directory that holds copies of `sql/*.sql`, with
//! this build's `pdns-ha` first on `PATH`; what each command prints (stdout, then stderr)
//! must be the output shown. Ages (`0s`, `12s`) and process ids are compared as `Ns` and
//! `[PID]`: the clock moves between runs. `BLESS=1` writes what the commands printed into
//! the docs (refused under CI).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::pdns::{require, TempDir};
use crate::util::{in_ci, BIN, REPO};

const MARK: &str = "<!-- sample: ";

/// One transcript block: where its lines sit in the file, and its commands with the
/// output shown for each.
struct Block {
    /// Line index of the first line inside the fence, and one past the last.
    lines: (usize, usize),
    commands: Vec<(String, String)>,
}

/// The sample blocks of one file, by NAME, in file order.
fn blocks(text: &str) -> BTreeMap<String, Vec<Block>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: BTreeMap<String, Vec<Block>> = BTreeMap::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = lines[i]
            .strip_prefix(MARK)
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            i += 1;
            continue;
        };
        assert!(
            lines.get(i + 1).is_some_and(|l| l.starts_with("```")),
            "line {}: {MARK}{name} --> is not followed by a fence",
            i + 1
        );
        let start = i + 2;
        let end = start
            + lines[start..]
                .iter()
                .position(|l| *l == "```")
                .unwrap_or_else(|| panic!("line {}: sample {name} never ends", i + 1));
        let mut commands: Vec<(String, String)> = Vec::new();
        for line in &lines[start..end] {
            match line.strip_prefix("$ ") {
                Some(cmd) => commands.push((cmd.to_owned(), String::new())),
                None => {
                    let (_, shown) = commands.last_mut().unwrap_or_else(|| {
                        panic!("line {}: sample {name} starts with output", start + 1)
                    });
                    shown.push_str(line);
                    shown.push('\n');
                }
            }
        }
        out.entry(name.to_owned()).or_default().push(Block {
            lines: (start, end),
            commands,
        });
        i = end + 1;
    }
    out
}

/// Ages and process ids as the comparison sees them.
fn normalized(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let starts_word = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.');
        if b[i].is_ascii_digit() && starts_word {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let ends_word = b.get(j + 1).is_none_or(|c| !c.is_ascii_alphanumeric());
            if b.get(j) == Some(&b's') && ends_word {
                out.push_str("Ns");
                i = j + 1;
                continue;
            }
        }
        if text[i..].starts_with("pdns-ha[") {
            if let Some(close) = text[i..].find(']') {
                out.push_str("pdns-ha[PID]");
                i += close + 1;
                continue;
            }
        }
        let c = text[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

fn run(dir: &Path, cmd: &str) -> String {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn sample_outputs_are_what_the_commands_print() {
    if !require("sqlite3") {
        return;
    }
    let bless = std::env::var_os("BLESS").is_some();
    assert!(!(bless && in_ci()), "BLESS is refused under CI");
    let mut wrong = Vec::new();
    let mut samples = 0;
    for file in crate::support::docs::files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let mut edits: Vec<((usize, usize), Vec<String>)> = Vec::new();
        for (name, blocks) in blocks(&text) {
            let dir = TempDir::new(&format!("sample-{name}"));
            for sql in std::fs::read_dir(Path::new(REPO).join("sql")).unwrap() {
                let sql = sql.unwrap().path();
                std::fs::copy(&sql, dir.path().join(sql.file_name().unwrap())).unwrap();
            }
            for block in blocks {
                let mut printed = Vec::new();
                for (cmd, shown) in &block.commands {
                    samples += 1;
                    let got = run(dir.path(), cmd);
                    if normalized(&got) != normalized(shown) {
                        wrong.push(format!(
                            "{} ({name}): $ {cmd}\n{}",
                            file.display(),
                            crate::util::diff(shown, &got)
                        ));
                    }
                    printed.push(format!("$ {cmd}"));
                    printed.extend(got.lines().map(str::to_owned));
                }
                edits.push((block.lines, printed));
            }
        }
        if bless && !edits.is_empty() {
            let _writing = crate::support::docs::WRITING
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Read again under the lock: a test's sample may have been written meanwhile.
            let now = std::fs::read_to_string(&file).unwrap();
            assert_eq!(
                now,
                text,
                "{} changed while its samples ran",
                file.display()
            );
            for ((start, end), printed) in edits.into_iter().rev() {
                lines.splice(start..end, printed);
            }
            std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        }
    }
    assert!(samples >= 5, "only {samples} sample commands in the docs");
    assert!(
        bless || wrong.is_empty(),
        "sample outputs differ from what the commands print (BLESS=1 rewrites them):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn ages_and_pids_are_compared_loosely() {
    assert_eq!(
        normalized("pdns-ha[4711] up 12s (sqlite), 4.0 ms, 30s STALE, 5s1 x12s"),
        "pdns-ha[PID] up Ns (sqlite), 4.0 ms, Ns STALE, 5s1 x12s"
    );
}

/// Fusion as `explain` and `status` show it (docs/deployment.md), on the readings the golden
/// case `3-least-latency-issue11-fusion` seeds, stamped relative to now instead of its fixed
/// clock: sip1 has two sources that disagree, sip7 a stale one beside a fresh one.
#[test]
fn fusion_as_explain_and_status_show_it() {
    let dir = TempDir::new("sample-fusion");
    let db = dir.path().join("ha.db");
    crate::util::init_db(&db, &["sql/example.sql"]);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "WITH r(network, target, source, ms, samples, callers, age) AS (VALUES
               ('192.0.2.0/24', 'sip1.example.com', 'observe', 40, 30, 12, 0),
               ('192.0.2.0/24', 'sip1.example.com', 'monitor', 10, 2, NULL, 15),
               ('192.0.2.0/24', 'sip4.example.com', 'observe', 25, 9, 5, 0),
               ('192.0.2.0/24', 'sip7.example.com', 'monitor', 5, 50, NULL, 40),
               ('192.0.2.0/24', 'sip7.example.com', 'metric', 60, 3, NULL, 0))
             INSERT INTO ha_latency
               (network, target, source, mean_ms, ewma_ms, samples, callers, updated)
             SELECT network, target, source, ms, ms, samples, callers, strftime('%s', 'now') - age
             FROM r;",
        )
        .unwrap();
    let db = db.to_str().unwrap();
    let explain = ["--algorithm", "least-latency", "--client", "192.0.2.0/24"];
    let query = ["_sip._udp.example.com", "SRV"];
    let out = crate::util::run_ok(&[&["explain", "--db", db][..], &explain, &query].concat());
    let mut shown = format!(
        "$ pdns-ha explain --db ha.db {} {}\n{}",
        explain.join(" "),
        query.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    let out = crate::util::run_ok(&["status", "--db", db]);
    shown += "$ pdns-ha status --db ha.db\n";
    let status = String::from_utf8_lossy(&out.stdout);
    let measured = ["sip1.example.com", "sip4.example.com", "sip7.example.com"];
    shown += &crate::support::docs::target_rows(&status, &measured);
    crate::support::docs::sample("fusion", &shown);
}
