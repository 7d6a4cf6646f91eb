//! `explain --networks`: who gets what, per known network, through the pipe's own ranking;
//! summarized past `--limit` so that thousands of networks stay readable.

use crate::pdns::TempDir;
use crate::util::{init_db, run_ok};

fn explain(db: &str, extra: &[&str]) -> String {
    let mut args = vec!["explain", "--db", db, "--networks"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["_sip._udp.example.com", "SRV"]);
    String::from_utf8(run_ok(&args).stdout).unwrap()
}

fn row<'a>(out: &'a str, network: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(network))
        .unwrap_or_else(|| panic!("no row for {network}:\n{out}"))
}

#[test]
fn each_network_gets_its_nearest_first_and_the_rest_the_stored_order() {
    let dir = TempDir::new("explain-networks");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let db = db.to_str().unwrap();
    for (net, target, ms) in [
        ("198.51.100.0/24", "sip7.example.com", "4"),
        ("198.51.100.0/24", "sip8.example.com", "61"),
        ("203.0.113.0/24", "sip8.example.com", "3"),
        ("203.0.113.0/24", "sip7.example.com", "58"),
    ] {
        run_ok(&[
            "metric",
            "latency",
            "--db",
            db,
            "--network",
            net,
            "--target",
            target,
            "--ms",
            ms,
        ]);
    }
    let out = explain(db, &[]);
    assert!(
        out.starts_with("_sip._udp.example.com SRV under least-latency"),
        "{out}"
    );
    let b = row(&out, "site-b");
    assert!(
        b.contains(" sip7.example.com ") && b.contains("4.0 ms from the client's network"),
        "{b}"
    );
    assert!(!b.contains("sip8"), "{b}");
    let c = row(&out, "site-c");
    assert!(
        c.contains(" sip8.example.com ") && c.contains("3.0 ms"),
        "{c}"
    );
    let nowhere = row(&out, "(no known network)");
    assert!(
        nowhere.contains("sip1.example.com, sip2.example.com, sip3.example.com"),
        "{nowhere}"
    );
    assert!(nowhere.ends_with("as stored"), "{nowhere}");

    // A drain takes the nearest out: site-b's first tier is then the next measured.
    run_ok(&[
        "drain",
        "--db",
        db,
        "--target",
        "sip7.example.com",
        "--reason",
        "upgrade",
    ]);
    let b = explain(db, &[]);
    let b = row(&b, "site-b");
    assert!(
        b.contains(" sip8.example.com ") && !b.contains("sip7"),
        "{b}"
    );

    // Under static every network gets the stored first tier, drains left out.
    let s = explain(db, &["--algorithm", "static"]);
    assert!(
        row(&s, "site-b").contains("sip1.example.com, sip2.example.com, sip3.example.com"),
        "{s}"
    );
}

#[test]
fn thousands_of_networks_are_summarized() {
    let dir = TempDir::new("explain-many");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let mut batch = String::from("BEGIN;");
    for i in 0..3000 {
        batch += &format!(
            "INSERT INTO ha_networks (cidr, name) VALUES ('10.{}.{}.0/24', 'n{i}');",
            i / 256,
            i % 256
        );
    }
    batch += "COMMIT;";
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&batch)
        .unwrap();
    let db = db.to_str().unwrap();
    run_ok(&[
        "metric",
        "latency",
        "--db",
        db,
        "--network",
        "10.0.5.0/24",
        "--target",
        "sip8.example.com",
        "--ms",
        "2",
    ]);
    let out = explain(db, &["--limit", "10"]);
    // The example's three networks, then the first seven of the 3,000.
    let rows = out
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('('))
        .count();
    assert_eq!(rows, 10, "{out}");
    assert!(row(&out, "n6 ").contains("10.0.6.0/24"), "{out}");
    assert!(
        out.contains("... and 2993 more networks (--limit 0 shows all)"),
        "{out}"
    );
    assert!(
        out.contains("        1 network: sip8.example.com\n"),
        "{out}"
    );
    assert!(
        out.contains("     3002 networks: sip1.example.com, sip2.example.com, sip3.example.com\n"),
        "{out}"
    );
}
