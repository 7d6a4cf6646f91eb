//! `ul.dump` parsing on the reply a real Kamailio 5.6.3 sent, on variations of it, on garbage,
//! and at 10,000 contacts.

use super::*;

/// Four contacts: m1 and t1 (TCP) in 127.1/16, v1 in 127.2/16, and "mute", registered by a
/// sipp without `-aa`, which never answered a keepalive.
const REAL: &str = include_str!("../../../pipe-abi-tests/fixtures/kamailio-ul-dump.json");
/// A moment after the fixture was captured.
const NOW: f64 = 1_795_796_570.0;

fn callers(d: &Dump) -> Vec<(String, f64)> {
    d.samples
        .iter()
        .map(|s| (s.caller.to_string(), s.rtt_ms))
        .collect()
}

#[test]
fn the_real_reply() {
    let d = parse(REAL, NOW, 30.0, false).unwrap();
    assert_eq!(
        callers(&d),
        [
            ("127.1.0.21".into(), 1.168),
            ("127.2.0.7".into(), 0.703),
            ("127.1.0.22".into(), 0.333)
        ]
    );
    assert_eq!(
        d.skipped,
        Skipped {
            unanswered: 1,
            ..Skipped::default()
        }
    );
    // Two minutes later without new replies, every figure is stale.
    let d = parse(REAL, NOW + 120.0, 30.0, false).unwrap();
    assert!(d.samples.is_empty());
    assert_eq!((d.skipped.stale, d.skipped.unanswered), (3, 1));
}

/// The m1 contact of the real reply with some fields replaced.
fn with(replace: &[(&str, &str)]) -> String {
    let mut doc = REAL.to_string();
    for (from, to) in replace {
        assert!(doc.contains(from), "{from}");
        doc = doc.replacen(from, to, 1);
    }
    doc
}

#[test]
fn addresses_received_first_then_contact() {
    let d = parse(
        &with(&[("\"sip:127.1.0.21:6000\"", "\"[not set]\"")]),
        NOW,
        30.0,
        false,
    )
    .unwrap();
    assert_eq!(
        d.samples[0].caller.to_string(),
        "127.1.0.21",
        "from Address"
    );
    let d = parse(
        &with(&[(
            "\"sip:127.1.0.21:6000\"",
            "\"sip:[2001:db8::5]:5062;transport=tcp\"",
        )]),
        NOW,
        30.0,
        false,
    )
    .unwrap();
    assert_eq!(d.samples[0].caller.to_string(), "2001:db8::5");
    for (uri, want) in [
        ("sip:u@192.0.2.1:5060;transport=tcp", Some("192.0.2.1")),
        ("sips:u@[2001:db8::1]", Some("2001:db8::1")),
        ("sip:192.0.2.1", Some("192.0.2.1")),
        ("sip:u:pw@192.0.2.1?x=y", Some("192.0.2.1")),
        ("sip:u@phone.example.com:5060", None),
        ("tel:+15551234", None),
        ("sip:u@[2001:db8::1", None),
        ("", None),
    ] {
        assert_eq!(
            uri_host(uri).map(|h| h.to_string()).as_deref(),
            want,
            "{uri}"
        );
    }
}

#[test]
fn expired_hostnames_and_missing_fields_are_counted() {
    let doc = with(&[
        ("\"Expires\":\t3576", "\"Expires\":\t\"expired\""),
        ("\"sip:127.2.0.7:6002\"", "\"sip:phone.example.com:6002\""),
        ("\"KA-Roundtrip\":\t333", "\"KA-Roundtrip\":\t\"x\""),
    ]);
    let d = parse(&doc, NOW, 30.0, false).unwrap();
    assert!(d.samples.is_empty(), "{d:?}");
    assert_eq!(
        d.skipped,
        Skipped {
            expired: 1,
            unanswered: 1,
            unusable: 2,
            stale: 0,
            no_received: 0,
        }
    );
    // A permanent contact is measured like any other.
    let d = parse(
        &with(&[("\"Expires\":\t3576", "\"Expires\":\t\"permanent\"")]),
        NOW,
        30.0,
        false,
    )
    .unwrap();
    assert_eq!(d.samples.len(), 3);
}

#[test]
fn garbage_is_an_error_never_a_reading() {
    for body in [
        "",
        "not json",
        "{\"jsonrpc\":\"2.0\",\"result\":{},\"id\":1}",
        "{\"result\":{\"Domains\":{}}}",
        "{\"result\":{\"Domains\":[{\"Domain\":{\"AoRs\":[{\"Info\":{\"Contacts\":[1,}}]}}]}}",
        "{\"result\":{\"Domains\":[{\"Domain\":{}}]}}",
        &REAL[..REAL.len() / 2],
    ] {
        assert!(parse(body, NOW, 30.0, false).is_err(), "{body:?}");
    }
    let empty = "{\"result\":{\"Domains\":[{\"Domain\":{\"Domain\":\"location\",\"AoRs\":[]}}]}}";
    assert_eq!(parse(empty, NOW, 30.0, false).unwrap(), Dump::default());
    let junk_contact = "{\"result\":{\"Domains\":[{\"Domain\":{\"AoRs\":[{\"Info\":\
        {\"Contacts\":[7,{\"Contact\":[]}]}}]}}]}}";
    let d = parse(junk_contact, NOW, 30.0, false).unwrap();
    assert_eq!(d.skipped.unusable, 2);
}

/// A dump of `n` contacts built from the real one's first contact, callers spread over
/// 127.1/16 and 127.2/16.
pub(crate) fn big_dump(n: u32) -> String {
    let start = REAL.find("{\n\t\t\t\t\t\t\t\"Info\"").unwrap();
    let end = REAL[start..].find("\n\t\t\t\t\t\t}").unwrap() + start + 8;
    let aor = &REAL[start..end];
    let mut doc = String::from(
        "{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"result\":\t{\n\t\t\"Domains\":\t[{\n\t\t\t\t\"Domain\":\t{\n\
         \t\t\t\t\t\"Domain\":\t\"location\",\n\t\t\t\t\t\"Size\":\t1024,\n\t\t\t\t\t\"AoRs\":\t[",
    );
    for i in 0..n {
        if i > 0 {
            doc.push_str(", ");
        }
        let ip = format!("127.{}.{}.{}", 1 + i % 2, (i / 256) % 256, i % 256);
        doc.push_str(
            &aor.replace("127.1.0.21", &ip)
                .replace("1168", &(1000 + i % 5000).to_string()),
        );
    }
    doc.push_str("]}}]},\n\t\"id\":\t1\n}");
    doc
}

#[test]
fn ten_thousand_contacts_cost() {
    let doc = big_dump(10_000);
    // The cost is printed, never asserted: CI machines are shared and slow (docs/performance.md).
    let started = crate::observe::thread_cpu();
    let d = parse(&doc, NOW, 30.0, false).unwrap();
    let cost = crate::observe::thread_cpu() - started;
    eprintln!(
        "ul.dump of 10,000 contacts ({} bytes) parsed in {cost:?} of CPU",
        doc.len()
    );
    assert_eq!(d.samples.len(), 10_000);
    assert_eq!(d.samples[1].caller.to_string(), "127.2.0.1");
    assert_eq!(d.samples[1].rtt_ms, 1.001);
}

#[test]
fn callers_are_subscribers_and_received_can_be_required() {
    let d = parse(REAL, NOW, 30.0, false).unwrap();
    let who: Vec<Option<u64>> = d.samples.iter().map(|s| s.subscriber).collect();
    assert_eq!(
        who,
        [
            Some(subscriber("location", "m1")),
            Some(subscriber("location", "v1")),
            Some(subscriber("location", "t1"))
        ]
    );
    // m1 without Received: its Contact URI would decide its network.
    let doc = with(&[("\"sip:127.1.0.21:6000\"", "\"[not set]\"")]);
    let d = parse(&doc, NOW, 30.0, true).unwrap();
    assert_eq!(
        callers(&d),
        [("127.2.0.7".into(), 0.703), ("127.1.0.22".into(), 0.333)]
    );
    assert_eq!((d.skipped.no_received, d.skipped.unanswered), (1, 1));
    assert_eq!(parse(&doc, NOW, 30.0, false).unwrap().samples.len(), 3);
}
