//! `--metrics-listen ADDR:PORT`: the monitor's figures as OpenMetrics text (what Prometheus
//! scrapes), served on `GET /metrics`.
//!
//! [`Figures`] is a plain struct the round loop fills in; [`render`] turns it into text
//! with the clock passed in (ages are computed at scrape time), so the text is tested
//! byte for byte; [`serve`] answers HTTP: OpenMetrics to clients
//! that ask for it (Prometheus does), the older Prometheus text format to the rest.
//!
//! ```text
//! # TYPE pdns_ha_target_up gauge
//! # HELP pdns_ha_target_up Whether the target is up (1) or down (0) after anti-flap; absent while unknown.
//! pdns_ha_target_up{target="sip1.example.com"} 1
//! ...
//! # EOF
//! ```
//!
//! The HTTP side (many scrapers at once, a deadline per connection, a connection cap) is
//! [`crate::net::http`]'s.

use std::collections::BTreeMap;
use std::fmt::Write as _;

pub use crate::net::openmetrics::{
    age, escape, family, rounds_and_end, serve, Format, CONTENT_TYPE, CONTENT_TYPE_TEXT,
    LATENCY_AGE, ROUNDS, ROUND_DURATION, TARGET_LATENCY,
};
pub use crate::net::probe::error_kind;

use crate::net::probe::ProbeErrorKind;

use super::pipes::PipeFigures;
use crate::state::pipe_counters::Pair;

// Metric family names. Units in the name, base units only (seconds), as Prometheus's
// naming conventions ask; counters get `_total` on their samples.
pub const TARGET_UP: &str = "pdns_ha_target_up";
pub const TARGET_DRAINED: &str = "pdns_ha_target_drained";
pub const TARGET_SESSIONS: &str = "pdns_ha_target_sessions";
pub const TARGET_CAPACITY: &str = "pdns_ha_target_capacity_sessions";
pub const READING_AGE: &str = "pdns_ha_reading_age_seconds";
pub const PROBE_ERRORS: &str = "pdns_ha_probe_errors";
pub const SERVICE_UP: &str = "pdns_ha_service_up";
/// Prometheus's blackbox exporter's name, so that existing certificate alerts apply.
pub const CERT_EXPIRY: &str = "probe_ssl_earliest_cert_expiry";
pub const CERT_EXPIRING: &str = "pdns_ha_service_cert_expiring";
pub const TLS_FAILURES: &str = "pdns_ha_tls_verify_failures";
pub const PIPES: &str = "pdns_ha_pipes";
pub const PIPE_LOOKUPS: &str = "pdns_ha_pipe_lookups";
pub const PIPE_EMPTY: &str = "pdns_ha_pipe_empty_answers";
pub const PIPE_FAILS: &str = "pdns_ha_pipe_fails";
pub const PIPE_BAD_LINES: &str = "pdns_ha_pipe_bad_lines";
pub const PIPE_AXFRS: &str = "pdns_ha_pipe_axfrs";
pub const PIPE_NETWORK_QUERIES: &str = "pdns_ha_pipe_network_queries";
pub const PIPE_NETWORK_ANSWERS: &str = "pdns_ha_pipe_network_answers";
pub const PIPE_UNKNOWN_NETWORK: &str = "pdns_ha_pipe_unknown_network_queries";

/// A value and when it was read (Unix seconds), so that its age can be told at scrape time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stamped<T> {
    pub value: T,
    pub at: f64,
}

/// One latency figure: the average round trip from one network by one source, as stored
/// (the EWMA that least-latency ranks by), and when its last sample was written.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyFigure {
    /// A `ha_networks` CIDR, or `*` for the monitor host's own view.
    pub network: String,
    /// Who measured it: `monitor` (active probes), `observe`, `metric` (pushed).
    pub source: String,
    pub seconds: f64,
    pub at: f64,
}

/// One advertised service (an SRV record's target, transport and port).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceFigures {
    /// Up or down after anti-flap; `None` while unknown.
    pub health: Option<Stamped<bool>>,
    /// TLS: the earliest `notAfter` of the chain last seen, Unix seconds.
    pub cert_expiry: Option<i64>,
    /// TLS: valid, but within `--cert-warn-days` of its expiry.
    pub cert_expiring: bool,
    /// TLS verifications that failed since start, by reason (`expired`, `wrong_name`,
    /// `untrusted`, ...). Monotonic.
    pub tls_failures: BTreeMap<&'static str, u64>,
}

/// Everything known about one target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetFigures {
    /// Up or down after anti-flap; `None` while unknown (no sample is exported then).
    pub health: Option<Stamped<bool>>,
    /// Taken out of answers by the operator.
    pub drained: bool,
    /// Current sessions; `None` while unknown (never exported as zero).
    pub sessions: Option<Stamped<u32>>,
    /// Maximum sessions, from the load source or `ha_targets.max_sessions`.
    pub capacity: Option<u32>,
    pub latency: Vec<LatencyFigure>,
    /// Failed probes since start, by what was probed (`health`, `load`) and why
    /// ([`error_kind`]). Monotonic: a counter.
    pub probe_errors: BTreeMap<(&'static str, &'static str), u64>,
}

/// The monitor's figures, as the round loop last left them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// By target name, so the text comes out in a stable order.
    pub targets: BTreeMap<String, TargetFigures>,
    /// Advertised services, by (target, transport, port).
    pub services: BTreeMap<(String, &'static str, u16), ServiceFigures>,
    /// Rounds completed since start.
    pub rounds: u64,
    /// How long the last round took, probes and write together.
    pub last_round_seconds: Option<f64>,
    /// What this host's pipe processes answered (`--pipe-counters`).
    pub pipes: Option<PipeFigures>,
}

impl Figures {
    /// Counts one failed probe.
    pub fn probe_error(&mut self, target: &str, probe: &'static str, kind: &ProbeErrorKind) {
        let t = self.targets.entry(target.to_owned()).or_default();
        *t.probe_errors.entry((probe, error_kind(kind))).or_default() += 1;
    }

    /// Drops targets no longer in `ha_targets`, so a deleted one stops being exported.
    pub fn retain_targets<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        let keep: std::collections::HashSet<&str> = names.into_iter().collect();
        self.targets.retain(|name, _| keep.contains(name.as_str()));
    }
}

/// The figures as OpenMetrics text (ending in `# EOF`) or the older Prometheus text,
/// ages as of `now` (Unix seconds).
pub fn render(f: &Figures, now: f64, fmt: Format) -> String {
    let mut out = String::with_capacity(256 + f.targets.len() * 512);
    let t = &f.targets;

    family(
        &mut out,
        fmt,
        TARGET_UP,
        "gauge",
        "Whether the target is up (1) or down (0) after anti-flap; absent while unknown.",
    );
    for (name, x) in t {
        if let Some(h) = x.health {
            let _ = writeln!(
                out,
                "{TARGET_UP}{{target=\"{}\"}} {}",
                escape(name),
                u8::from(h.value)
            );
        }
    }
    family(
        &mut out,
        fmt,
        TARGET_DRAINED,
        "gauge",
        "Whether the operator took the target out of answers (1) or not (0).",
    );
    for (name, x) in t {
        let _ = writeln!(
            out,
            "{TARGET_DRAINED}{{target=\"{}\"}} {}",
            escape(name),
            u8::from(x.drained)
        );
    }
    family(
        &mut out,
        fmt,
        TARGET_SESSIONS,
        "gauge",
        "Current sessions; absent while unknown.",
    );
    for (name, x) in t {
        if let Some(s) = x.sessions {
            let _ = writeln!(
                out,
                "{TARGET_SESSIONS}{{target=\"{}\"}} {}",
                escape(name),
                s.value
            );
        }
    }
    family(
        &mut out,
        fmt,
        TARGET_CAPACITY,
        "gauge",
        "Maximum sessions the target takes.",
    );
    for (name, x) in t {
        if let Some(c) = x.capacity {
            let _ = writeln!(out, "{TARGET_CAPACITY}{{target=\"{}\"}} {c}", escape(name));
        }
    }
    family(
        &mut out,
        fmt,
        TARGET_LATENCY,
        "gauge",
        "Average round trip to the target from a network (* = the monitor host), by source: the EWMA least-latency ranks by.",
    );
    for (name, x) in t {
        for l in &x.latency {
            let _ = writeln!(
                out,
                "{TARGET_LATENCY}{{target=\"{}\",network=\"{}\",source=\"{}\"}} {}",
                escape(name),
                escape(&l.network),
                escape(&l.source),
                l.seconds
            );
        }
    }
    family(
        &mut out,
        fmt,
        READING_AGE,
        "gauge",
        "Seconds since the target's health or load was last read.",
    );
    for (name, x) in t {
        let readings = [
            ("health", x.health.map(|h| h.at)),
            ("load", x.sessions.map(|s| s.at)),
        ];
        for (reading, at) in readings {
            if let Some(at) = at {
                let _ = writeln!(
                    out,
                    "{READING_AGE}{{target=\"{}\",reading=\"{reading}\"}} {}",
                    escape(name),
                    age(now, at)
                );
            }
        }
    }
    family(
        &mut out,
        fmt,
        LATENCY_AGE,
        "gauge",
        "Seconds since a latency figure was last updated.",
    );
    for (name, x) in t {
        for l in &x.latency {
            let _ = writeln!(
                out,
                "{LATENCY_AGE}{{target=\"{}\",network=\"{}\",source=\"{}\"}} {}",
                escape(name),
                escape(&l.network),
                escape(&l.source),
                age(now, l.at)
            );
        }
    }
    family(
        &mut out,
        fmt,
        PROBE_ERRORS,
        "counter",
        "Probes that gave no reading, by what was probed and why.",
    );
    for (name, x) in t {
        for ((probe, kind), n) in &x.probe_errors {
            let _ = writeln!(
                out,
                "{PROBE_ERRORS}_total{{target=\"{}\",probe=\"{probe}\",kind=\"{kind}\"}} {n}",
                escape(name)
            );
        }
    }
    services(&mut out, f, fmt);
    if let Some(p) = &f.pipes {
        pipes(&mut out, p, fmt);
    }
    rounds_and_end(
        &mut out,
        fmt,
        (f.rounds, "Monitor rounds completed."),
        (
            f.last_round_seconds,
            "How long the last round took, probes and write.",
        ),
    );
    out
}

/// What the pipes answered: pdns runs them, so nobody else can ask them.
fn pipes(out: &mut String, p: &PipeFigures, fmt: Format) {
    let c = &p.counts;
    family(
        out,
        fmt,
        PIPES,
        "gauge",
        "Pipe processes running on this host that wrote counters.",
    );
    let _ = writeln!(out, "{PIPES} {}", p.running);
    let totals = [
        (
            PIPE_LOOKUPS,
            "Questions pdns asked the pipe processes.",
            c.lookups,
        ),
        (PIPE_EMPTY, "Questions answered with no data.", c.empty),
        (
            PIPE_FAILS,
            "FAIL answers sent to pdns: bad lines, names that could not be read, AXFRs not served.",
            c.fails,
        ),
        (
            PIPE_BAD_LINES,
            "Lines from pdns that were not a question the pipe understands.",
            c.bad_lines,
        ),
        (PIPE_AXFRS, "Zone transfers served.", c.axfrs),
        (
            PIPE_UNKNOWN_NETWORK,
            "Questions from clients in no known network (they get no per-network ranking).",
            c.unknown.queries,
        ),
    ];
    for (name, help, n) in totals {
        family(out, fmt, name, "counter", help);
        let _ = writeln!(out, "{name}_total {n}");
    }
    type Family = (&'static str, &'static str, fn(&Pair) -> u64);
    let by_network: [Family; 2] = [
        (
            PIPE_NETWORK_QUERIES,
            "Questions from clients in a known network, by ha_networks name.",
            |p| p.queries,
        ),
        (
            PIPE_NETWORK_ANSWERS,
            "Questions from clients in a known network answered with data, by ha_networks name.",
            |p| p.answered,
        ),
    ];
    for (name, help, count) in by_network {
        family(out, fmt, name, "counter", help);
        for (network, p) in &c.networks {
            let _ = writeln!(
                out,
                "{name}_total{{network=\"{}\"}} {}",
                escape(network),
                count(p)
            );
        }
    }
}

/// The families of advertised services (issue 18).
fn services(out: &mut String, f: &Figures, fmt: Format) {
    let s = &f.services;
    let labels = |(t, transport, port): &(String, &str, u16)| {
        format!(
            "target=\"{}\",transport=\"{transport}\",port=\"{port}\"",
            escape(t)
        )
    };
    family(
        out,
        fmt,
        SERVICE_UP,
        "gauge",
        "Whether an advertised service (SRV target, transport, port) is up (1) or down (0) after anti-flap; absent while unknown.",
    );
    for (k, x) in s {
        if let Some(h) = x.health {
            let _ = writeln!(out, "{SERVICE_UP}{{{}}} {}", labels(k), u8::from(h.value));
        }
    }
    family(
        out,
        fmt,
        CERT_EXPIRY,
        "gauge",
        "Earliest notAfter of the certificate chain a TLS service sent, Unix seconds (blackbox exporter's name).",
    );
    for (k, x) in s {
        if let Some(e) = x.cert_expiry {
            let _ = writeln!(out, "{CERT_EXPIRY}{{{}}} {e}", labels(k));
        }
    }
    family(
        out,
        fmt,
        CERT_EXPIRING,
        "gauge",
        "Whether a TLS service's valid certificate expires within --cert-warn-days (1) or not (0).",
    );
    for (k, x) in s {
        if x.cert_expiry.is_some() {
            let _ = writeln!(
                out,
                "{CERT_EXPIRING}{{{}}} {}",
                labels(k),
                u8::from(x.cert_expiring)
            );
        }
    }
    family(
        out,
        fmt,
        TLS_FAILURES,
        "counter",
        "TLS handshakes of a service that failed verification or negotiation, by reason.",
    );
    for (k, x) in s {
        for (reason, n) in &x.tls_failures {
            let _ = writeln!(
                out,
                "{TLS_FAILURES}_total{{{},reason=\"{reason}\"}} {n}",
                labels(k)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    fn example() -> Figures {
        let mut f = Figures {
            rounds: 7,
            last_round_seconds: Some(0.032),
            ..Figures::default()
        };
        f.targets.insert(
            "sip1.example.com".into(),
            TargetFigures {
                health: Some(Stamped {
                    value: true,
                    at: 995.0,
                }),
                sessions: Some(Stamped {
                    value: 850,
                    at: 990.0,
                }),
                capacity: Some(1000),
                latency: vec![LatencyFigure {
                    network: "*".into(),
                    source: "monitor".into(),
                    seconds: 0.0027,
                    at: 995.0,
                }],
                ..TargetFigures::default()
            },
        );
        f.targets.insert(
            "sip2.example.com".into(),
            TargetFigures {
                health: Some(Stamped {
                    value: false,
                    at: 1001.0,
                }),
                drained: true,
                ..TargetFigures::default()
            },
        );
        let refused = ProbeErrorKind::Io {
            during: "connect",
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        f.probe_error("sip2.example.com", "health", &refused);
        f.probe_error("sip2.example.com", "health", &refused);
        f.probe_error("sip2.example.com", "load", &ProbeErrorKind::AuthRejected);
        // A name a label must escape.
        f.targets
            .insert("odd\"name\\".into(), TargetFigures::default());
        f.services.insert(
            ("sip1.example.com".into(), "udp", 5060),
            ServiceFigures {
                health: Some(Stamped {
                    value: true,
                    at: 995.0,
                }),
                ..ServiceFigures::default()
            },
        );
        let mut tls = ServiceFigures {
            health: Some(Stamped {
                value: false,
                at: 995.0,
            }),
            cert_expiry: Some(1_795_996_800),
            ..ServiceFigures::default()
        };
        tls.tls_failures.insert("expired", 3);
        f.services
            .insert(("sip1.example.com".into(), "tls", 5061), tls);
        f
    }

    /// The whole text, byte for byte: the order, escaping, units, counters and `# EOF`.
    #[test]
    fn renders_exact_text() {
        let want = r#"# TYPE pdns_ha_target_up gauge
# HELP pdns_ha_target_up Whether the target is up (1) or down (0) after anti-flap; absent while unknown.
pdns_ha_target_up{target="sip1.example.com"} 1
pdns_ha_target_up{target="sip2.example.com"} 0
# TYPE pdns_ha_target_drained gauge
# HELP pdns_ha_target_drained Whether the operator took the target out of answers (1) or not (0).
pdns_ha_target_drained{target="odd\"name\\"} 0
pdns_ha_target_drained{target="sip1.example.com"} 0
pdns_ha_target_drained{target="sip2.example.com"} 1
# TYPE pdns_ha_target_sessions gauge
# HELP pdns_ha_target_sessions Current sessions; absent while unknown.
pdns_ha_target_sessions{target="sip1.example.com"} 850
# TYPE pdns_ha_target_capacity_sessions gauge
# HELP pdns_ha_target_capacity_sessions Maximum sessions the target takes.
pdns_ha_target_capacity_sessions{target="sip1.example.com"} 1000
# TYPE pdns_ha_target_latency_seconds gauge
# UNIT pdns_ha_target_latency_seconds seconds
# HELP pdns_ha_target_latency_seconds Average round trip to the target from a network (* = the monitor host), by source: the EWMA least-latency ranks by.
pdns_ha_target_latency_seconds{target="sip1.example.com",network="*",source="monitor"} 0.0027
# TYPE pdns_ha_reading_age_seconds gauge
# UNIT pdns_ha_reading_age_seconds seconds
# HELP pdns_ha_reading_age_seconds Seconds since the target's health or load was last read.
pdns_ha_reading_age_seconds{target="sip1.example.com",reading="health"} 5
pdns_ha_reading_age_seconds{target="sip1.example.com",reading="load"} 10
pdns_ha_reading_age_seconds{target="sip2.example.com",reading="health"} 0
# TYPE pdns_ha_latency_age_seconds gauge
# UNIT pdns_ha_latency_age_seconds seconds
# HELP pdns_ha_latency_age_seconds Seconds since a latency figure was last updated.
pdns_ha_latency_age_seconds{target="sip1.example.com",network="*",source="monitor"} 5
# TYPE pdns_ha_probe_errors counter
# HELP pdns_ha_probe_errors Probes that gave no reading, by what was probed and why.
pdns_ha_probe_errors_total{target="sip2.example.com",probe="health",kind="io"} 2
pdns_ha_probe_errors_total{target="sip2.example.com",probe="load",kind="auth_rejected"} 1
# TYPE pdns_ha_service_up gauge
# HELP pdns_ha_service_up Whether an advertised service (SRV target, transport, port) is up (1) or down (0) after anti-flap; absent while unknown.
pdns_ha_service_up{target="sip1.example.com",transport="tls",port="5061"} 0
pdns_ha_service_up{target="sip1.example.com",transport="udp",port="5060"} 1
# TYPE probe_ssl_earliest_cert_expiry gauge
# HELP probe_ssl_earliest_cert_expiry Earliest notAfter of the certificate chain a TLS service sent, Unix seconds (blackbox exporter's name).
probe_ssl_earliest_cert_expiry{target="sip1.example.com",transport="tls",port="5061"} 1795996800
# TYPE pdns_ha_service_cert_expiring gauge
# HELP pdns_ha_service_cert_expiring Whether a TLS service's valid certificate expires within --cert-warn-days (1) or not (0).
pdns_ha_service_cert_expiring{target="sip1.example.com",transport="tls",port="5061"} 0
# TYPE pdns_ha_tls_verify_failures counter
# HELP pdns_ha_tls_verify_failures TLS handshakes of a service that failed verification or negotiation, by reason.
pdns_ha_tls_verify_failures_total{target="sip1.example.com",transport="tls",port="5061",reason="expired"} 3
# TYPE pdns_ha_rounds counter
# HELP pdns_ha_rounds Monitor rounds completed.
pdns_ha_rounds_total 7
# TYPE pdns_ha_round_duration_seconds gauge
# UNIT pdns_ha_round_duration_seconds seconds
# HELP pdns_ha_round_duration_seconds How long the last round took, probes and write.
pdns_ha_round_duration_seconds 0.032
# EOF
"#;
        let got = render(&example(), 1000.0, Format::OpenMetrics);
        assert!(
            got == want,
            "{}",
            crate::monitor::openmetrics::tests::diff(want, &got)
        );
    }

    /// Line-by-line difference, for the assertion message.
    fn diff(want: &str, got: &str) -> String {
        let (w, g): (Vec<_>, Vec<_>) = (want.lines().collect(), got.lines().collect());
        (0..w.len().max(g.len()))
            .filter(|&i| w.get(i) != g.get(i))
            .map(|i| {
                format!(
                    "line {}: want {:?}\n         got  {:?}\n",
                    i + 1,
                    w.get(i),
                    g.get(i)
                )
            })
            .collect()
    }

    #[test]
    fn nothing_known_is_still_valid_text() {
        let got = render(&Figures::default(), 0.0, Format::OpenMetrics);
        assert!(got.ends_with("pdns_ha_rounds_total 0\n# TYPE pdns_ha_round_duration_seconds gauge\n# UNIT pdns_ha_round_duration_seconds seconds\n# HELP pdns_ha_round_duration_seconds How long the last round took, probes and write.\n# EOF\n"), "{got}");
        assert!(!got.contains("target="), "{got}");
    }

    /// The older format differs only where the formats do: counters' TYPE and HELP name
    /// their `_total` series, no UNIT lines, no `# EOF`.
    #[test]
    fn prometheus_text_is_the_same_figures() {
        let om = render(&example(), 1000.0, Format::OpenMetrics);
        let text = render(&example(), 1000.0, Format::PrometheusText);
        let want: String = om
            .lines()
            .filter(|l| !l.starts_with("# UNIT ") && *l != "# EOF")
            .map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
                ["#", kw @ ("TYPE" | "HELP"), name, ..]
                    if [PROBE_ERRORS, TLS_FAILURES, ROUNDS].contains(&name) =>
                {
                    l.replacen(
                        &format!("# {kw} {name}"),
                        &format!("# {kw} {name}_total"),
                        1,
                    ) + "\n"
                }
                _ => format!("{l}\n"),
            })
            .collect();
        assert_eq!(text, want);
        assert_eq!(Format::negotiate(None), Format::PrometheusText);
        assert_eq!(Format::negotiate(Some("*/*")), Format::PrometheusText);
    }

    #[test]
    fn retain_drops_deleted_targets() {
        let mut f = example();
        f.retain_targets(["sip1.example.com"]);
        assert_eq!(f.targets.keys().collect::<Vec<_>>(), ["sip1.example.com"]);
    }

    fn http(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    }

    #[test]
    fn serves_get_metrics_only() {
        let figures = Arc::new(Mutex::new(example()));
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&figures), render).unwrap();
        // What Prometheus 2.42 sends.
        let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                      version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let got = http(
            addr,
            &format!("GET /metrics HTTP/1.1\r\nHost: x\r\naccept: {accept}\r\n\r\n"),
        );
        let (head, body) = got.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains(&format!("\r\nContent-Type: {CONTENT_TYPE}\r\n")),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
            "{head}"
        );
        assert!(
            body.contains("pdns_ha_rounds_total 7\n") && body.ends_with("# EOF\n"),
            "{body}"
        );

        let plain = http(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(
            plain.contains(&format!("Content-Type: {CONTENT_TYPE_TEXT}\r\n")),
            "{plain}"
        );
        assert!(!plain.contains("# EOF"), "{plain}");
        // Figures change between scrapes: the next scrape shows the new ones.
        figures.lock().unwrap().rounds = 8;
        assert!(
            http(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n").contains("pdns_ha_rounds_total 8\n")
        );
        let head_only = http(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head_only.starts_with("HTTP/1.1 200 OK") && head_only.ends_with("\r\n\r\n"));
        assert!(http(addr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let post = http(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(
            post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD"),
            "{post}"
        );
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        assert!(http(addr, &huge).starts_with("HTTP/1.1 431 "));
        // A client that connects and says nothing is dropped after the timeout; the
        // listener then serves the next one.
        let _silent = TcpStream::connect(addr).unwrap();
        assert!(http(addr, "GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 OK"));
    }

    #[test]
    fn a_bad_address_is_an_error_naming_it() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = serve(addr, Arc::<Mutex<Figures>>::default(), render).unwrap_err();
        assert_eq!(e.to_string(), format!("--metrics-listen {addr}"));
        let cause = e.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
        assert_eq!(cause, Some(std::io::ErrorKind::AddrInUse), "{e:#}");
    }
}
