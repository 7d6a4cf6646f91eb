//! Unit tests of the algorithms on the enterprise SRV example.

use super::*;
use crate::state::reading::{Health, Latency, Load, Source};

const NOW: f64 = 1_000_000.0;

/// sip1..sip8 as in sql/example.sql.
fn example() -> Vec<Candidate<'static>> {
    [
        ("sip1.example.com", 10, 50),
        ("sip2.example.com", 10, 25),
        ("sip3.example.com", 10, 25),
        ("sip4.example.com", 20, 20),
        ("sip5.example.com", 20, 20),
        ("sip6.example.com", 20, 10),
        ("sip7.example.com", 30, 10),
        ("sip8.example.com", 30, 10),
    ]
    .into_iter()
    .map(|(target, prio, weight)| Candidate {
        target,
        prio,
        weight,
        service: None,
    })
    .collect()
}

fn networks() -> Metrics {
    let mut m = Metrics::default();
    m.add_network("192.0.2.0/24", "site-a").unwrap();
    m.add_network("198.51.100.0/24", "site-b").unwrap();
    m
}

fn lat(m: &mut Metrics, net: &str, target: u8, ms: f64, age: f64) {
    let l = Latency {
        ewma_ms: ms,
        mean_ms: ms,
        samples: 5,
        updated: NOW - age,
        callers: None,
    };
    m.add_latency(net, &format!("sip{target}.example.com"), Source::Metric, l);
}

fn cx(client: &str) -> Context {
    Context {
        client: Subnet::parse(client).unwrap(),
        now: NOW,
        stale_after: 30.0,
    }
}

/// The answer as `target prio weight` lines, left-out ones as `target -`.
fn run(alg: Algorithm, m: &Metrics, client: &str) -> (Vec<String>, Outcome) {
    let cands = example();
    let mut out = Vec::new();
    let outcome = select(alg, &cands, m, &cx(client), &mut out);
    assert_eq!(out.len(), cands.len());
    let lines = out
        .iter()
        .map(|p| {
            let t = &cands[p.idx].target[..4];
            match p.place {
                Some((prio, w)) => format!("{t} {prio} {w}"),
                None => format!("{t} -"),
            }
        })
        .collect();
    (lines, outcome)
}

#[test]
fn static_is_as_stored() {
    let mut m = networks();
    m.add_health(
        "sip1.example.com",
        "mon-a",
        Health {
            up: false,
            updated: NOW,
        },
    );
    let (lines, o) = run(Algorithm::Static, &m.finish(), "198.51.100.7");
    assert_eq!(lines[0], "sip1 10 50", "static ignores health");
    assert_eq!(lines[7], "sip8 30 10");
    assert_eq!(o, Outcome::default());
}

#[test]
fn least_latency_ranks_by_the_clients_network() {
    let mut m = networks();
    for (t, ms) in [(4, 5.0), (5, 6.0), (6, 30.0), (1, 40.0), (2, 41.0)] {
        lat(&mut m, "198.51.100.0/24", t, ms, 1.0);
    }
    // The other site sees it the other way round.
    for (t, ms) in [(1, 3.0), (2, 3.5), (4, 50.0)] {
        lat(&mut m, "192.0.2.0/24", t, ms, 1.0);
    }
    m.add_health(
        "sip3.example.com",
        "mon-a",
        Health {
            up: false,
            updated: NOW - 2.0,
        },
    );
    let m = m.finish();

    let (lines, o) = run(Algorithm::LeastLatency, &m, "198.51.100.7");
    assert_eq!(
        lines,
        [
            "sip4 10 20", // 5 ms and 6 ms share a rank and keep their weights
            "sip5 10 20",
            "sip6 20 10",
            "sip1 30 50", // 40 ms is past 30 ms + 20 % + 2 ms
            "sip2 30 25",
            "sip7 40 10", // unmeasured, in stored order
            "sip8 40 10",
            "sip3 -", // down
        ]
    );
    assert_eq!(
        o,
        Outcome {
            scopebits: 24,
            dynamic: true,
            fail_open: false,
            all_drained: false,
        }
    );

    let (lines, _) = run(Algorithm::LeastLatency, &m, "192.0.2.0/24");
    assert_eq!(&lines[..3], ["sip1 10 50", "sip2 10 25", "sip4 20 20"]);
}

#[test]
fn least_latency_falls_back_to_star_samples() {
    let mut m = networks();
    lat(&mut m, "*", 7, 2.0, 1.0);
    lat(&mut m, "198.51.100.0/24", 5, 9.0, 1.0);
    let (lines, o) = run(Algorithm::LeastLatency, &m.finish(), "192.0.2.9");
    assert_eq!(lines[0], "sip7 10 10");
    assert_eq!(
        lines[1], "sip1 20 50",
        "then the unmeasured in stored order"
    );
    assert!(o.dynamic);
}

#[test]
fn least_latency_without_fresh_samples_or_network_is_static() {
    let mut m = networks();
    lat(&mut m, "198.51.100.0/24", 8, 1.0, 31.0);
    m.add_health(
        "sip1.example.com",
        "mon-a",
        Health {
            up: false,
            updated: NOW - 60.0,
        },
    );
    let m = m.finish();
    let (lines, o) = run(Algorithm::LeastLatency, &m, "198.51.100.7");
    assert_eq!(lines[0], "sip1 10 50", "stale health is not down");
    assert_eq!(lines[7], "sip8 30 10", "stale latency is unknown");
    assert_eq!(
        o,
        Outcome {
            scopebits: 24,
            dynamic: false,
            fail_open: false,
            all_drained: false,
        }
    );

    // A client in no known network: stored order, scoped to itself.
    let (lines, o) = run(Algorithm::LeastLatency, &m, "203.0.113.5");
    assert_eq!(lines[0], "sip1 10 50");
    assert_eq!(o.scopebits, 32);
}

#[test]
fn everything_down_fails_open() {
    let mut m = networks();
    for t in 1..=8 {
        m.add_health(
            &format!("sip{t}.example.com"),
            "mon-a",
            Health {
                up: false,
                updated: NOW,
            },
        );
    }
    let m = m.finish();
    for alg in [Algorithm::LeastLatency, Algorithm::LeastLoad] {
        let (lines, o) = run(alg, &m, "198.51.100.7");
        assert!(lines.iter().all(|l| !l.ends_with('-')), "{alg}: {lines:?}");
        assert_eq!(lines[0], "sip1 10 50");
        assert!(o.fail_open);
    }
}

#[test]
fn least_load_weights_free_capacity_within_tiers() {
    let mut m = networks();
    let load = |m: &mut Metrics, t: u8, sessions: u32, max: Option<u32>| {
        let l = Load {
            sessions,
            max_sessions: max,
            updated: NOW - 1.0,
        };
        m.add_load(&format!("sip{t}.example.com"), l);
    };
    load(&mut m, 1, 900, Some(1000));
    load(&mut m, 2, 100, Some(1000));
    load(&mut m, 3, 1000, Some(1000));
    load(&mut m, 5, 500, None);
    m.add_capacity("sip5.example.com", 1000);
    load(&mut m, 6, 200, None);
    m.add_capacity("sip6.example.com", 500);
    m.add_health(
        "sip8.example.com",
        "mon-a",
        Health {
            up: false,
            updated: NOW,
        },
    );
    let (lines, o) = run(Algorithm::LeastLoad, &m.finish(), "198.51.100.7");
    assert_eq!(
        lines,
        [
            "sip2 10 900", // most free first
            "sip1 10 100",
            "sip3 20 25", // full: behind its tier, stored weight
            "sip5 30 500",
            "sip6 30 300",
            "sip4 30 400", // unknown load: the tier's average
            "sip7 40 10",  // a tier with no readings keeps its weights
            "sip8 -",
        ]
    );
    assert_eq!(
        o,
        Outcome {
            scopebits: 0,
            dynamic: true,
            fail_open: false,
            all_drained: false,
        }
    );
}

#[test]
fn least_load_scales_big_capacities_and_falls_back_when_unknown() {
    let mut m = networks();
    m.add_load(
        "sip1.example.com",
        Load {
            sessions: 0,
            max_sessions: Some(200_000),
            updated: NOW,
        },
    );
    m.add_load(
        "sip2.example.com",
        Load {
            sessions: 100_000,
            max_sessions: Some(200_000),
            updated: NOW,
        },
    );
    let (lines, _) = run(Algorithm::LeastLoad, &m.finish(), "192.0.2.1");
    assert_eq!(&lines[..2], ["sip1 10 65535", "sip2 10 32768"]);

    let (lines, o) = run(Algorithm::LeastLoad, &networks().finish(), "192.0.2.1");
    assert_eq!(lines[0], "sip1 10 50");
    assert!(!o.dynamic);
}

fn health(m: &mut Metrics, target: u8, monitor: &str, up: bool, age: f64) {
    let h = Health {
        up,
        updated: NOW - age,
    };
    m.add_health(&format!("sip{target}.example.com"), monitor, h);
}

fn drain(m: &mut Metrics, target: u8) {
    let d = crate::state::reading::Drain {
        reason: "maintenance".into(),
        since: NOW,
    };
    m.add_drain(&format!("sip{target}.example.com"), d);
}

#[test]
fn down_takes_a_majority_of_fresh_monitors() {
    let mut m = networks();
    // sip1: one of three says down. sip2: two of three. sip3: one of two
    // (a tie keeps it). sip4: one fresh "down", the other two stale.
    for (t, votes) in [
        (1, [false, true, true]),
        (2, [false, false, true]),
        (4, [false, true, true]),
    ] {
        for (mon, up) in ["a", "b", "c"].iter().zip(votes) {
            let age = if t == 4 && up { 60.0 } else { 1.0 };
            health(&mut m, t, mon, up, age);
        }
    }
    health(&mut m, 3, "a", false, 1.0);
    health(&mut m, 3, "b", true, 1.0);
    let m = m.finish();
    let c = cx("192.0.2.1");
    let down: Vec<bool> = (1..=4)
        .map(|t| c.down(&m, &format!("sip{t}.example.com")))
        .collect();
    assert_eq!(down, [false, true, false, true]);
}

#[test]
fn a_drained_target_leaves_every_algorithm() {
    let mut m = networks();
    drain(&mut m, 1);
    lat(&mut m, "192.0.2.0/24", 1, 1.0, 0.0);
    lat(&mut m, "192.0.2.0/24", 2, 9.0, 0.0);
    health(&mut m, 1, "a", true, 0.0);
    let m = m.finish();
    for alg in [
        Algorithm::Static,
        Algorithm::LeastLatency,
        Algorithm::LeastLoad,
    ] {
        let (lines, o) = run(alg, &m, "192.0.2.1");
        assert_eq!(lines.last().map(String::as_str), Some("sip1 -"), "{alg}");
        assert_eq!(
            lines.iter().filter(|l| l.ends_with(" -")).count(),
            1,
            "{alg}"
        );
        assert!(!o.fail_open && !o.all_drained, "{alg}");
    }
    let (lines, _) = run(Algorithm::Static, &m, "192.0.2.1");
    assert_eq!(lines[0], "sip2 10 25", "static keeps stored places");
}

#[test]
fn fail_open_serves_the_down_but_never_the_drained() {
    let mut m = networks();
    drain(&mut m, 1);
    drain(&mut m, 2);
    for t in 3..=8 {
        health(&mut m, t, "a", false, 0.0);
    }
    let m = m.finish();
    let (lines, o) = run(Algorithm::LeastLatency, &m, "192.0.2.1");
    assert!(o.fail_open);
    assert_eq!(&lines[6..], ["sip1 -", "sip2 -"]);
    assert_eq!(lines[0], "sip3 10 25");

    // Everything drained: an empty answer would be worse, so all are served.
    let mut m = networks();
    for t in 1..=8 {
        drain(&mut m, t);
    }
    let m = m.finish();
    for alg in [Algorithm::Static, Algorithm::LeastLoad] {
        let (lines, o) = run(alg, &m, "192.0.2.1");
        assert!(o.all_drained, "{alg}");
        assert!(lines.iter().all(|l| !l.ends_with(" -")), "{alg}: {lines:?}");
    }
}

#[test]
fn least_latency_puts_a_full_target_last() {
    let mut m = networks();
    lat(&mut m, "192.0.2.0/24", 1, 1.0, 0.0);
    lat(&mut m, "192.0.2.0/24", 2, 9.0, 0.0);
    m.add_load(
        "sip1.example.com",
        Load {
            sessions: 100,
            max_sessions: Some(100),
            updated: NOW,
        },
    );
    let (lines, _) = run(Algorithm::LeastLatency, &m.finish(), "192.0.2.1");
    assert_eq!(lines[0], "sip2 10 25");
    assert_eq!(lines[7], "sip1 50 50", "{lines:?}");
}

/// Two sources disagree on one (network, target): the fused figure is their
/// mean weighted by min(callers or samples, 10) and freshness, and it is
/// what ranks (see `latency`'s module docs).
#[test]
fn least_latency_fuses_sources_by_weight_and_freshness() {
    use super::latency::{fuse, weight};
    let l = |ms: f64, samples, callers, age: f64| Latency {
        ewma_ms: ms,
        mean_ms: ms,
        samples,
        updated: NOW - age,
        callers,
    };
    // observe: 40 ms from 12 callers (weighs 10), just written; a vantage
    // monitor: 10 ms from 2 probes (weighs 2), 15 s old (3/4 of that).
    let seen = l(40.0, 50, Some(12), 0.0);
    let probed = l(10.0, 2, None, 15.0);
    assert_eq!(weight(&seen, NOW, 30.0), Some(10.0));
    assert_eq!(weight(&probed, NOW, 30.0), Some(1.5));
    let f = fuse(
        [(Source::Observe, seen), (Source::Monitor, probed)].into_iter(),
        NOW,
        30.0,
    )
    .unwrap();
    assert_eq!(f.sources, 2);
    assert!((f.ms - 415.0 / 11.5).abs() < 1e-9, "{}", f.ms);
    // A stale source takes no part; with none fresh there is no figure.
    let old = l(1.0, 100, None, 31.0);
    assert_eq!(weight(&old, NOW, 30.0), None);
    let f = fuse(
        [(Source::Metric, old), (Source::Monitor, probed)].into_iter(),
        NOW,
        30.0,
    );
    assert_eq!(f.map(|f| (f.ms, f.sources)), Some((10.0, 1)));
    assert_eq!(fuse([(Source::Metric, old)].into_iter(), NOW, 30.0), None);

    // In the ranking: sip1 is fused to 36.1 ms, so sip4 (25 ms, one source)
    // beats it by more than the tolerance; the probe alone would have put
    // sip1 first.
    let mut m = networks();
    m.add_latency("192.0.2.0/24", "sip1.example.com", Source::Observe, seen);
    m.add_latency("192.0.2.0/24", "sip1.example.com", Source::Monitor, probed);
    lat(&mut m, "192.0.2.0/24", 4, 25.0, 0.0);
    let m = m.finish();
    let (lines, _) = run(Algorithm::LeastLatency, &m, "192.0.2.9");
    assert_eq!(&lines[..2], ["sip4 10 20", "sip1 20 50"]);
}

/// Counts the heap allocations made by the current thread, so the test
/// below can say the ranking path makes none (other tests run on other
/// threads and do not disturb the count).
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        pub static ALLOCS: Cell<u64> = const { Cell::new(0) };
    }

    pub struct Counting;

    // SAFETY: every call is passed to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCS.with(|n| n.set(n.get() + 1));
            // SAFETY: the caller's guarantees are System's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as above.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;
}

/// The fused ranking stays on the lookup path's budget: no allocation per
/// answer, with three sources per (network, target) and the `*` fallback.
#[test]
fn least_latency_with_fusion_does_not_allocate() {
    let mut m = networks();
    for (t, ms) in [(1, 40.0), (2, 9.0), (4, 20.0)] {
        for (source, callers) in [
            (Source::Observe, Some(7)),
            (Source::Monitor, None),
            (Source::Metric, None),
        ] {
            let l = Latency {
                ewma_ms: ms,
                mean_ms: ms,
                samples: 4,
                updated: NOW - 3.0,
                callers,
            };
            m.add_latency("192.0.2.0/24", &format!("sip{t}.example.com"), source, l);
        }
        lat(&mut m, "*", t + 4, ms, 1.0);
    }
    let m = m.finish();
    let cands = example();
    let cx = cx("192.0.2.9");
    let mut out = Vec::with_capacity(cands.len());
    let before = counting::ALLOCS.with(|n| n.get());
    for _ in 0..100 {
        out.clear();
        select(Algorithm::LeastLatency, &cands, &m, &cx, &mut out);
    }
    let after = counting::ALLOCS.with(|n| n.get());
    assert_eq!(after - before, 0);
    assert_eq!(cands[out[0].idx].target, "sip2.example.com");
    assert!(matches!(out[0].why, Why::Latency { ms, from_any: false } if (ms - 9.0).abs() < 1e-9));
}

#[test]
fn a_record_follows_its_own_service_not_the_hosts_other_services() {
    use crate::state::service::{Service, Transport};
    let udp = Service {
        transport: Transport::Udp,
        port: 5060,
    };
    let tls = Service {
        transport: Transport::Tls,
        port: 5061,
    };
    let cands = |s: Service| -> Vec<Candidate<'static>> {
        ["sip1.example.com", "sip2.example.com"]
            .into_iter()
            .map(|target| Candidate {
                target,
                prio: 10,
                weight: 50,
                service: Some(s),
            })
            .collect()
    };
    let h = |up| Health {
        up,
        updated: NOW - 1.0,
    };
    let mut m = networks();
    // sip1: TLS down, UDP up, and the host's own row (the 5060 probe) down.
    m.add_service_health("sip1.example.com", tls, "a", h(false));
    m.add_service_health("sip1.example.com", udp, "a", h(true));
    m.add_health("sip1.example.com", "a", h(false));
    // sip2: no service verdicts: its host row decides.
    m.add_health("sip2.example.com", "a", h(true));
    let m = m.finish();
    let kept = |s: Service| -> Vec<&str> {
        let c = cands(s);
        let mut out = Vec::new();
        select(Algorithm::LeastLoad, &c, &m, &cx("192.0.2.1"), &mut out);
        out.iter()
            .filter(|p| p.place.is_some())
            .map(|p| c[p.idx].target)
            .collect()
    };
    assert_eq!(kept(tls), ["sip2.example.com"]);
    assert_eq!(kept(udp), ["sip1.example.com", "sip2.example.com"]);
    // An A/AAAA-style candidate (no service) still follows the host row.
    let mut out = Vec::new();
    let host = example();
    select(
        Algorithm::LeastLoad,
        &host[..2],
        &m,
        &cx("192.0.2.1"),
        &mut out,
    );
    let kept: Vec<_> = out
        .iter()
        .filter(|p| p.place.is_some())
        .map(|p| host[p.idx].target)
        .collect();
    assert_eq!(kept, ["sip2.example.com"]);
    // A stale service verdict is unknown: the host row decides again.
    let c = cx("192.0.2.1");
    assert_eq!(c.service_down(&m, "sip1.example.com", tls), Some(true));
    let later = Context {
        now: NOW + 120.0,
        ..c
    };
    assert_eq!(later.service_down(&m, "sip1.example.com", tls), None);
}
