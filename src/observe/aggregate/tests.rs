//! Grouping by network with the pipe's own longest-prefix lookup, robust medians, and what is
//! dropped; plus the cost of a 10,000-caller round.

use super::*;
use crate::dns::Subnet;
use crate::state::index::Metrics;

fn networks() -> Metrics {
    let mut m = Metrics::default();
    m.add_network("127.1.0.0/16", "montreal").unwrap();
    m.add_network("127.2.0.0/16", "vancouver").unwrap();
    m.add_network("127.2.9.0/24", "vancouver-lab").unwrap();
    m.add_network("2001:db8::/32", "v6").unwrap();
    m.finish()
}

fn run(samples: &[(&str, f64)], policy: Policy) -> (Vec<NetworkRtt>, Dropped) {
    let m = networks();
    let samples: Vec<Sample> = samples
        .iter()
        .map(|(ip, ms)| Sample {
            caller: ip.parse().unwrap(),
            subscriber: None,
            rtt_ms: *ms,
        })
        .collect();
    aggregate(
        &samples,
        |ip| m.network_for(Subnet::host(ip)).map(|n| &*n.cidr),
        &policy,
    )
}

fn figures(out: &[NetworkRtt]) -> Vec<(&str, f64, usize, usize)> {
    out.iter()
        .map(|n| (n.network.as_str(), n.ms, n.callers, n.samples))
        .collect()
}

#[test]
fn median_of_caller_medians_per_network() {
    let (out, dropped) = run(
        &[
            ("127.1.0.1", 10.0),
            ("127.1.0.2", 12.0),
            ("127.1.0.3", 11.0),
            // One broken link: whatever its value, the median stays among the others.
            ("127.1.0.4", 4000.0),
            ("127.2.0.1", 60.0),
            ("127.2.0.2", 61.0),
            ("127.2.0.3", 62.0),
            // The /24 inside vancouver is its own network (longest prefix).
            ("127.2.9.1", 1.0),
        ],
        Policy::default(),
    );
    assert_eq!(
        figures(&out),
        [("127.1.0.0/16", 11.5, 4, 4), ("127.2.0.0/16", 61.0, 3, 3)]
    );
    assert_eq!(dropped.too_few_callers, [("127.2.9.0/24".to_string(), 1)]);
    assert_eq!(dropped.too_few_samples, 1);
    assert_eq!(dropped.unknown_network + dropped.implausible, 0);
}

#[test]
fn a_caller_with_many_contacts_counts_once() {
    // A PBX at 127.1.0.9 with 100 contacts, all slow, and three phones.
    let mut s: Vec<(&str, f64)> = vec![("127.1.0.9", 300.0); 100];
    s.extend([
        ("127.1.0.1", 20.0),
        ("127.1.0.2", 22.0),
        ("127.1.0.3", 21.0),
    ]);
    // Each caller's own median: one stray sample of 127.1.0.1 does not count.
    s.extend([("127.1.0.1", 19.0), ("127.1.0.1", 900.0)]);
    let (out, _) = run(&s, Policy::default());
    assert_eq!(figures(&out), [("127.1.0.0/16", 21.5, 4, 105)]);
}

#[test]
fn implausible_values_and_unknown_callers_are_dropped_and_counted() {
    let (out, dropped) = run(
        &[
            ("127.1.0.1", 0.0),
            ("127.1.0.1", -3.0),
            ("127.1.0.1", f64::NAN),
            ("127.1.0.1", f64::INFINITY),
            ("127.1.0.1", 10_000.1),
            ("127.1.0.2", 10_000.0),
            ("192.0.2.1", 5.0),
            ("192.0.2.1", 6.0),
            ("192.0.2.2", 5.0),
            ("::ffff:127.1.0.3", 7.0),
            ("2001:db8::1", 7.0),
        ],
        Policy {
            min_callers: 1,
            ..Policy::default()
        },
    );
    assert_eq!(dropped.implausible, 5);
    assert_eq!((dropped.unknown_network, dropped.unknown_callers), (3, 2));
    // Where they are, for the operator to add to ha_networks.
    assert_eq!(dropped.unknown_prefixes, [("192.0.2.0/24".to_string(), 2)]);
    assert_eq!(
        dropped.unknown_where(),
        "; most from 192.0.2.0/24 (2 callers)"
    );
    assert_eq!(
        figures(&out),
        [("127.1.0.0/16", 5003.5, 2, 2), ("2001:db8::/32", 7.0, 1, 1)],
        "a v4-mapped caller is an IPv4 caller"
    );
    let (out, dropped) = run(&[], Policy::default());
    assert!(out.is_empty());
    assert_eq!(dropped, Dropped::default());
}

#[test]
fn min_callers_is_a_floor() {
    let s = [("127.1.0.1", 10.0), ("127.1.0.2", 30.0)];
    let two = Policy {
        min_callers: 2,
        ..Policy::default()
    };
    assert_eq!(figures(&run(&s, two).0), [("127.1.0.0/16", 20.0, 2, 2)]);
    let (out, dropped) = run(&s, Policy::default());
    assert!(out.is_empty());
    assert_eq!(dropped.too_few_callers, [("127.1.0.0/16".to_string(), 2)]);
    assert_eq!(dropped.too_few_samples, 2);
}

/// 10,000 callers over 20 networks plus 1,000 unknown: the round must cost well under
/// 100 ms of CPU (debug build here; release is several times faster).
#[test]
fn a_subscriber_counts_once_however_many_contacts() {
    let m = networks();
    let honest = [
        ("127.1.0.1", 40.0),
        ("127.1.0.2", 42.0),
        ("127.1.0.3", 44.0),
    ];
    let mut samples: Vec<Sample> = honest
        .iter()
        .enumerate()
        .map(|(i, (ip, ms))| Sample {
            caller: ip.parse().unwrap(),
            subscriber: Some(subscriber("location", &format!("honest{i}"))),
            rtt_ms: *ms,
        })
        .collect();
    // One subscriber, four contacts at 1 µs on four addresses.
    samples.extend((0..4).map(|i| Sample {
        caller: format!("127.1.9.{i}").parse().unwrap(),
        subscriber: Some(subscriber("location", "mallory")),
        rtt_ms: 0.001,
    }));
    // In IPv6, four addresses of one /64: one subscriber, alone in its /32.
    samples.extend((1..=4).map(|i| Sample {
        caller: format!("2001:db8::{i}").parse().unwrap(),
        subscriber: Some(subscriber("location", "mallory6")),
        rtt_ms: 9_999.0,
    }));
    let policy = Policy {
        min_callers: 3,
        ..Policy::default()
    };
    let (out, dropped) = aggregate(
        &samples,
        |ip| m.network_for(Subnet::host(ip)).map(|n| &*n.cidr),
        &policy,
    );
    // Montreal: 4 callers (3 honest + mallory once), median of 0.001, 40, 42, 44.
    assert_eq!(figures(&out), [("127.1.0.0/16", 41.0, 4, 7)]);
    assert_eq!(dropped.too_few_callers, [("2001:db8::/32".to_owned(), 1)]);
    // Without subscribers (TCP connections), four addresses of one /64 are one caller too.
    let tcp: Vec<Sample> = samples[7..]
        .iter()
        .map(|s| Sample {
            subscriber: None,
            ..*s
        })
        .chain(["2001:db8:0:1::1", "2001:db8:0:2::1"].map(|ip| Sample {
            caller: ip.parse().unwrap(),
            subscriber: None,
            rtt_ms: 30.0,
        }))
        .collect();
    let (out, _) = aggregate(
        &tcp,
        |ip| m.network_for(Subnet::host(ip)).map(|n| &*n.cidr),
        &policy,
    );
    assert_eq!(figures(&out), [("2001:db8::/32", 30.0, 3, 6)]);
    // The same domain and AOR is the same subscriber; another is not.
    assert_eq!(subscriber("location", "a"), subscriber("location", "a"));
    assert_ne!(subscriber("location", "a"), subscriber("locationa", ""));
}

#[test]
fn ten_thousand_callers_cost() {
    let mut m = Metrics::default();
    for n in 0..20 {
        m.add_network(&format!("10.{n}.0.0/16"), "n").unwrap();
    }
    let m = m.finish();
    let mut samples: Vec<Sample> = (0..10_000u32)
        .map(|i| Sample {
            caller: IpAddr::from([10, (i % 20) as u8, (i / 256) as u8, i as u8]),
            subscriber: None,
            rtt_ms: 10.0 + f64::from(i % 97),
        })
        .collect();
    samples.extend((0..1000u32).map(|i| Sample {
        caller: IpAddr::from([192, 0, 2, i as u8]),
        subscriber: None,
        rtt_ms: 5.0,
    }));
    // The cost is printed, never asserted: CI machines are shared and slow (docs/performance.md).
    let started = crate::observe::thread_cpu();
    let (out, dropped) = aggregate(
        &samples,
        |ip| m.network_for(Subnet::host(ip)).map(|n| &*n.cidr),
        &Policy::default(),
    );
    let cost = crate::observe::thread_cpu() - started;
    eprintln!("aggregate of 11,000 samples: {cost:?} of CPU");
    assert_eq!(out.len(), 20);
    assert!(out.iter().all(|n| n.callers == 500));
    assert_eq!(dropped.unknown_network, 1000);
}
