//! `network` and `target`: the configuration operators change most, checked before it is
//! written, written whole or not at all, and seen at once by `explain` as by the pipe.

use std::process::Command;

use crate::pdns::TempDir;
use crate::util::{init_db, run_ok, BIN};

fn fails(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8(run_ok(args).stdout).unwrap()
}

#[test]
fn networks_are_checked_and_written_whole() {
    let dir = TempDir::new("edit-networks");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let db = db.to_str().unwrap();
    // One bad CIDR among good ones: nothing is written.
    let err = fails(&[
        "network",
        "add",
        "--db",
        db,
        "montreal",
        "10.1.0.0/16",
        "10.2.0.0/33",
    ]);
    assert!(err.contains("10.2.0.0/33 is not a CIDR"), "{err}");
    let err = fails(&["network", "add", "--db", db, "montreal", "10.1.2.3/16"]);
    assert!(err.contains("did you mean 10.1.0.0/16?"), "{err}");
    assert!(!stdout(&["network", "list", "--db", db]).contains("montreal"));

    let out = stdout(&[
        "network",
        "add",
        "--db",
        db,
        "montreal",
        "10.1.0.0/16",
        "2001:db8:100::/48",
    ]);
    assert_eq!(
        out,
        "10.1.0.0/16: added to network montreal\n2001:db8:100::/48: added to network montreal\n"
    );
    let err = fails(&["network", "add", "--db", db, "quebec", "10.1.0.0/16"]);
    assert!(err.contains("already network montreal"), "{err}");
    // Seen by the ranking at once: a reading for montreal puts sip7 first there.
    run_ok(&[
        "metric",
        "latency",
        "--db",
        db,
        "--network",
        "10.1.0.0/16",
        "--target",
        "sip7.example.com",
        "--ms",
        "3",
    ]);
    let who = stdout(&[
        "explain",
        "--db",
        db,
        "--networks",
        "_sip._udp.example.com",
        "SRV",
    ]);
    let line = who
        .lines()
        .find(|l| l.starts_with("montreal ") && l.contains("10.1.0.0/16"));
    assert!(
        line.is_some_and(|l| l.contains(" sip7.example.com ")),
        "{who}"
    );

    let out = stdout(&["network", "rm", "--db", db, "montreal"]);
    assert_eq!(out, "montreal: removed (2 CIDRs)\n");
    assert!(fails(&["network", "rm", "--db", db, "montreal"]).contains("no network named"));
}

#[test]
fn targets_are_checked_and_say_what_they_changed() {
    let dir = TempDir::new("edit-targets");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let db = db.to_str().unwrap();
    let err = fails(&["target", "add", "--db", db, "sip1.example.com"]);
    assert!(err.contains("exists"), "{err}");
    let err = fails(&[
        "target",
        "set",
        "--db",
        db,
        "sip9.example.com",
        "--probe",
        "tcp",
    ]);
    assert!(err.contains("no target sip9.example.com"), "{err}");
    let err = fails(&[
        "target",
        "set",
        "--db",
        db,
        "sip1.example.com",
        "--probe-ok-codes",
        "200,7xx",
    ]);
    assert!(err.contains("'7xx' is not a code"), "{err}");
    let err = fails(&[
        "target",
        "set",
        "--db",
        db,
        "sip1.example.com",
        "--load-source",
        "kamailio",
        "--load-address",
        "10.0.0.1:5071",
    ]);
    assert!(err.contains("JSON-RPC URL"), "{err}");

    let out = Command::new(BIN)
        .args([
            "target",
            "add",
            "--db",
            db,
            "sip9.example.com",
            "--probe",
            "sip-tcp",
        ])
        .args([
            "--probe-address",
            "192.0.2.99:5060",
            "--max-sessions",
            "250",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (said, noted) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        said.starts_with("target sip9.example.com: added\n"),
        "{said}"
    );
    assert!(
        said.contains("sip-tcp 192.0.2.99:5060") && said.contains(" 250 "),
        "{said}"
    );
    assert!(
        noted.contains("no SRV, A or AAAA record names sip9.example.com"),
        "{noted}"
    );

    let out = stdout(&[
        "target",
        "set",
        "--db",
        db,
        "sip9.example.com",
        "--probe-address",
        "",
    ]);
    assert!(out.contains("sip-tcp (name:5060)"), "{out}");
    let list = stdout(&["target", "list", "--db", db]);
    assert!(
        list.contains("sip9.example.com") && !list.contains("ClueCon"),
        "{list}"
    );
    assert_eq!(
        stdout(&["target", "rm", "--db", db, "sip9.example.com"]),
        "target sip9.example.com: removed\n"
    );
    assert!(!stdout(&["target", "list", "--db", db]).contains("sip9"));
}
