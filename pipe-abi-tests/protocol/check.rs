//! `pdns-ha check` and `init`'s all-or-nothing load, through the binary as
//! an operator runs them.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use rusqlite::Connection;

use crate::pdns::TempDir;
use crate::util::{init_db, BIN, REPO};

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn count(db: &Path, sql: &str) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

#[test]
fn check_passes_the_example_and_names_each_bad_row() {
    let dir = TempDir::new("check");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let d = db.to_str().unwrap();
    let out = run(&["check", "--db", d]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("no problems found (1 zones, 28 records, 10 targets"),
        "{}",
        text(&out.stdout)
    );
    // What the issue saw `init` accept without a word, written behind its
    // back as an operator's SQL would be.
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "INSERT INTO ha_networks (cidr, name) VALUES ('10.1.0.0/33', 'x'), ('montreal', 'montreal');
             INSERT INTO records (domain_id, name, type, content, ttl, prio)
               SELECT id, '_sip._udp.example.com', 'SRV', '10 5060 sip9.example.com.', 300, 30
               FROM domains;
             INSERT INTO ha_targets (name) VALUES ('sip-9.example.com');
             UPDATE ha_targets SET load_secret = 'ClueCon' WHERE name = 'sip2.example.com';
             UPDATE ha_targets SET probe_ok_codes = '2xx,999' WHERE name = 'sip4.example.com';",
        )
        .unwrap();
    let out = run(&["check", "--db", d]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let want = [
        "ha_networks '10.1.0.0/33' (x): not an address/prefix",
        "ha_networks 'montreal' (montreal): not an address/prefix",
        "(_sip._udp.example.com SRV): target sip9.example.com has no ha_targets row",
        "ha_targets 'sip-9.example.com': no SRV record names it",
        "ha_targets 'sip2.example.com': load_secret holds the Event Socket password",
        "ha_targets 'sip4.example.com': probe_ok_codes '2xx,999'",
    ];
    for w in want {
        assert!(stdout.contains(w), "{w:?} not in:\n{stdout}");
    }
    assert_eq!(
        stdout.lines().count(),
        want.len(),
        "one line per problem:\n{stdout}"
    );
    assert!(stderr.contains("6 problem(s)"), "{stderr}");

    // Not a pdns-ha database at all.
    let plain = dir.path().join("plain.db");
    Connection::open(&plain)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let out = run(&["check", "--db", plain.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("table domains is missing: run pdns-ha init"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn init_applies_all_of_the_scripts_or_nothing() {
    let dir = TempDir::new("init-atomic");
    let db = dir.path().join("ha.db");
    let example = Path::new(REPO).join("sql/example.sql");
    let out = run(&[
        "init",
        "--db",
        db.to_str().unwrap(),
        example.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("loaded 1 script(s); was 0 zones, 0 records, 0 targets, 0 networks")
            && said.contains("1 zones, 28 records, 10 targets, 3 networks"),
        "{said}"
    );
    let before = count(&db, "SELECT count(*) FROM records");

    // A good statement, then a failing one: the first must not stay.
    let failing = dir.path().join("failing.sql");
    std::fs::write(
        &failing,
        "BEGIN;
         INSERT INTO records (domain_id, name, type, content, ttl)
           SELECT id, 'half.example.com', 'A', '192.0.2.99', 60 FROM domains;
         INSERT INTO no_such_table VALUES (1);
         COMMIT;",
    )
    .unwrap();
    let out = run(&[
        "init",
        "--db",
        db.to_str().unwrap(),
        failing.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("statement 3") && err.contains("no such table: no_such_table"),
        "{err}"
    );
    assert!(
        err.contains("nothing of the seed scripts was applied"),
        "{err}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM records"), before);

    // Every statement runs, but a row is invalid: refused before commit,
    // with the row named, and the good script before it is not applied
    // either.
    let good = dir.path().join("good.sql");
    std::fs::write(
        &good,
        "INSERT INTO ha_networks (cidr, name) VALUES ('10.9.0.0/16', 'toronto');",
    )
    .unwrap();
    let bad = dir.path().join("bad.sql");
    std::fs::write(
        &bad,
        "INSERT INTO ha_networks (cidr, name) VALUES ('montreal', 'montreal');",
    )
    .unwrap();
    let args = [
        "init",
        "--db",
        db.to_str().unwrap(),
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ];
    let out = run(&args);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("ha_networks 'montreal' (montreal): not an address/prefix"),
        "{err}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM ha_networks"), 3, "{err}");

    // Unused rows are only warned about: a later script may add the rest.
    let partial = dir.path().join("partial.sql");
    std::fs::write(
        &partial,
        "INSERT INTO ha_targets (name) VALUES ('sip10.example.com');",
    )
    .unwrap();
    let out = run(&[
        "init",
        "--db",
        db.to_str().unwrap(),
        partial.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("'sip10.example.com': no SRV record names it"));
    assert_eq!(count(&db, "SELECT count(*) FROM ha_targets"), 11);
}
