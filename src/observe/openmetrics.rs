//! `observe --metrics-listen ADDR:PORT`: what `observe` reads and writes, as OpenMetrics
//! text, served by the daemons' listener ([`crate::net::openmetrics::serve`]) in the
//! same formats.
//!
//! One round of `observe` gives, per known network, the distinct callers seen and the
//! median round trip over them (written only with `--min-callers` of them); the writer
//! folds that figure into the stored average the pipe ranks by. Exported:
//!
//! ```text
//! pdns_ha_target_latency_seconds{target="sip1.example.com",network="192.0.2.0/24",source="observe"} 0.0231
//! pdns_ha_observe_round_latency_seconds{target="sip1.example.com",network="192.0.2.0/24"} 0.0225
//! pdns_ha_observe_callers{target="sip1.example.com",network="192.0.2.0/24"} 12
//! pdns_ha_observe_samples_total{target="sip1.example.com",source="keepalive"} 4810
//! pdns_ha_observe_dropped_samples_total{target="sip1.example.com",reason="unknown_network"} 37
//! ```
//!
//! `pdns_ha_target_latency_seconds` and `pdns_ha_latency_age_seconds` are the monitor's
//! families, with `source="observe"`, so that one query covers both exporters. The
//! per-network figure has no per-source value: a caller seen by both sources counts once,
//! with the median of all its round trips ([`mod@super::aggregate`]); the sources are told
//! apart in the sample and error counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::net::openmetrics::{age, escape, family, rounds_and_end, Format};
use crate::net::probe::error_kind;
use crate::net::probe::ProbeErrorKind;
use crate::state::reading::Latency;

use super::tcp_rtt::DiagError;

pub use crate::net::openmetrics::{
    LATENCY_AGE, ROUNDS, ROUND_DURATION, TARGET_LATENCY as STORED_LATENCY,
};
pub const ROUND_LATENCY: &str = "pdns_ha_observe_round_latency_seconds";
pub const CALLERS: &str = "pdns_ha_observe_callers";
pub const SAMPLES: &str = "pdns_ha_observe_samples";
pub const DROPPED: &str = "pdns_ha_observe_dropped_samples";
pub const SOURCE_ERRORS: &str = "pdns_ha_observe_source_errors";

/// Source labels: registrar keepalives (`ul.dump`) and the kernel's TCP RTT (sock_diag).
pub const KEEPALIVE: &str = "keepalive";
pub const TCP: &str = "tcp";
/// Calls that ended with an RTCP round trip (`--freeswitch`).
pub const FREESWITCH: &str = "freeswitch";

/// `--freeswitch` only: calls' figures per network (written as source `freeswitch`), and
/// what the Event Socket listener saw.
pub const CALL_ROUND_LATENCY: &str = "pdns_ha_observe_call_round_latency_seconds";
pub const CALL_CALLERS: &str = "pdns_ha_observe_call_callers";
pub const CALL_CALLS: &str = "pdns_ha_observe_call_round_calls";
pub const CALL_MOS: &str = "pdns_ha_observe_call_mos";
pub const CALL_LOSS: &str = "pdns_ha_observe_call_loss_ratio";
pub const FS_EVENTS: &str = "pdns_ha_observe_freeswitch_events";
pub const FS_CALLS: &str = "pdns_ha_observe_freeswitch_calls";
pub const FS_IN_FLIGHT: &str = "pdns_ha_observe_freeswitch_calls_in_flight";
pub const FS_CONNECTED: &str = "pdns_ha_observe_freeswitch_connected";
pub const FS_CONNECTS: &str = "pdns_ha_observe_freeswitch_connects";

/// One network's figures from calls in the last round, and its stored `freeswitch` reading.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallFigures {
    pub callers: usize,
    pub calls: usize,
    pub round_ms: Option<f64>,
    pub mos: Option<f64>,
    pub loss: Option<f64>,
    pub stored: Option<Latency>,
}

/// The FreeSWITCH listener's counters: what it has seen since it started (counters only
/// grow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Audio RTCP reports read.
    pub rtcp: u64,
    /// Video RTCP reports, passed over.
    pub video: u64,
    pub hangups: u64,
    /// Calls finished with a round trip and an address.
    pub measured: u64,
    /// Calls finished without a round trip (no RTCP, or never a non-zero one).
    pub no_rtt: u64,
    /// Calls with a round trip but no usable caller address.
    pub no_caller: u64,
    /// Calls in flight dropped to stay under [`super::freeswitch::MAX_CALLS`].
    pub evicted: u64,
    /// Finished calls dropped because a round already held [`super::freeswitch::MAX_DONE`].
    pub done_dropped: u64,
    /// Events longer than [`super::freeswitch::MAX_EVENT`], read past.
    pub oversized: u64,
    /// Connections that ended on a framing error (endless header, absurd length).
    pub malformed: u64,
    /// Successful subscriptions.
    pub connects: u64,
}

/// The listener's state at the end of a round.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Listener {
    pub counts: Counts,
    pub in_flight: usize,
    pub connected: bool,
}

/// What one network gave in the last round, and its stored average.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkFigures {
    /// Distinct callers in the last round (also when too few to write a figure).
    pub callers: usize,
    /// The last round's median over callers, milliseconds; `None` if it wrote nothing.
    pub round_ms: Option<f64>,
    /// The stored reading after the last write for this network: it stays (and ages)
    /// through rounds that write nothing, as in the database.
    pub stored: Option<Latency>,
}

/// What one round found, gathered while the round runs and added to [`Figures`] at its
/// end, so that a scrape never waits for a slow source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Round {
    /// Round trips each source gave (before grouping), by source.
    pub samples: BTreeMap<&'static str, u64>,
    /// Round trips or contacts left out, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Sources that could not be read, as (source, kind).
    pub errors: Vec<(&'static str, &'static str)>,
    /// Networks seen this round: callers, the written median, the stored reading.
    pub networks: BTreeMap<String, NetworkFigures>,
    /// The `ha_networks` keys of this round, `None` if they could not be read: a network
    /// the operator deleted stops being exported, the others keep their stored reading.
    pub known: Option<Vec<String>>,
    /// `--freeswitch`: networks with calls this round, and the listener's state.
    pub calls: BTreeMap<String, CallFigures>,
    pub freeswitch: Option<Listener>,
}

impl Round {
    pub fn drop_samples(&mut self, reason: &'static str, n: usize) {
        if n > 0 {
            *self.dropped.entry(reason).or_default() += n as u64;
        }
    }
}

/// Everything `observe` exports, as the round loop last left it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub target: String,
    pub networks: BTreeMap<String, NetworkFigures>,
    pub samples: BTreeMap<&'static str, u64>,
    pub dropped: BTreeMap<&'static str, u64>,
    pub source_errors: BTreeMap<(&'static str, &'static str), u64>,
    pub rounds: u64,
    pub last_round_seconds: Option<f64>,
    pub calls: BTreeMap<String, CallFigures>,
    pub freeswitch: Option<Listener>,
}

impl Figures {
    pub fn new(target: &str) -> Self {
        Figures {
            target: target.to_owned(),
            ..Figures::default()
        }
    }

    /// Adds a finished round (or one that failed half-way: what it read counts).
    pub fn add_round(&mut self, r: Round, seconds: f64) {
        if let Some(known) = &r.known {
            self.networks.retain(|n, _| known.contains(n));
            self.calls.retain(|n, _| known.contains(n));
        }
        for c in self.calls.values_mut() {
            *c = CallFigures {
                stored: c.stored,
                ..CallFigures::default()
            };
        }
        for (net, c) in r.calls {
            let old = self.calls.entry(net).or_default();
            let stored = c.stored.or(old.stored);
            *old = CallFigures { stored, ..c };
        }
        if r.freeswitch.is_some() {
            self.freeswitch = r.freeswitch;
        }
        for n in self.networks.values_mut() {
            n.callers = 0;
            n.round_ms = None;
        }
        for (net, f) in r.networks {
            let old = self.networks.entry(net).or_default();
            let stored = f.stored.or(old.stored);
            *old = NetworkFigures { stored, ..f };
        }
        for (k, n) in r.samples {
            *self.samples.entry(k).or_default() += n;
        }
        for (k, n) in r.dropped {
            *self.dropped.entry(k).or_default() += n;
        }
        for e in r.errors {
            *self.source_errors.entry(e).or_default() += 1;
        }
        self.rounds += 1;
        self.last_round_seconds = Some(seconds);
    }
}

/// The `kind` label of a Kamailio JSON-RPC failure (the monitor's kinds).
pub fn keepalive_error(kind: &ProbeErrorKind) -> &'static str {
    error_kind(kind)
}

/// The `kind` label of a sock_diag failure: a small, fixed set.
pub fn tcp_error(e: &DiagError) -> &'static str {
    match e {
        DiagError::Io { .. } => "io",
        DiagError::Kernel(_) => "kernel",
        DiagError::Truncated(_) => "truncated",
        DiagError::Malformed(_) => "protocol",
        DiagError::TooMany => "too_many",
    }
}

/// The figures as OpenMetrics text or the older Prometheus text, ages as of `now`.
pub fn render(f: &Figures, now: f64, fmt: Format) -> String {
    let mut out = String::with_capacity(1024 + f.networks.len() * 512);
    let target = escape(&f.target);
    let nets = &f.networks;
    family(
        &mut out,
        fmt,
        STORED_LATENCY,
        "gauge",
        "Average round trip to the target from a network (* = the monitor host), by source: the EWMA least-latency ranks by.",
    );
    for (net, n) in nets {
        if let Some(l) = n.stored {
            let _ = writeln!(
                out,
                "{STORED_LATENCY}{{target=\"{target}\",network=\"{}\",source=\"observe\"}} {}",
                escape(net),
                l.ewma_ms / 1000.0
            );
        }
    }
    for (net, l) in f.calls.iter().filter_map(|(n, c)| Some((n, c.stored?))) {
        let _ = writeln!(
            out,
            "{STORED_LATENCY}{{target=\"{target}\",network=\"{}\",source=\"freeswitch\"}} {}",
            escape(net),
            l.ewma_ms / 1000.0
        );
    }
    family(
        &mut out,
        fmt,
        LATENCY_AGE,
        "gauge",
        "Seconds since a latency figure was last updated.",
    );
    for (net, n) in nets {
        if let Some(l) = n.stored {
            let _ = writeln!(
                out,
                "{LATENCY_AGE}{{target=\"{target}\",network=\"{}\",source=\"observe\"}} {}",
                escape(net),
                age(now, l.updated)
            );
        }
    }
    for (net, l) in f.calls.iter().filter_map(|(n, c)| Some((n, c.stored?))) {
        let _ = writeln!(
            out,
            "{LATENCY_AGE}{{target=\"{target}\",network=\"{}\",source=\"freeswitch\"}} {}",
            escape(net),
            age(now, l.updated)
        );
    }
    family(
        &mut out,
        fmt,
        ROUND_LATENCY,
        "gauge",
        "Median over callers of each caller's median round trip in the last round, the sample written; absent when too few callers.",
    );
    for (net, n) in nets {
        if let Some(ms) = n.round_ms {
            let _ = writeln!(
                out,
                "{ROUND_LATENCY}{{target=\"{target}\",network=\"{}\"}} {}",
                escape(net),
                ms / 1000.0
            );
        }
    }
    family(
        &mut out,
        fmt,
        CALLERS,
        "gauge",
        "Distinct caller addresses with a round trip in the last round.",
    );
    for (net, n) in nets {
        let _ = writeln!(
            out,
            "{CALLERS}{{target=\"{target}\",network=\"{}\"}} {}",
            escape(net),
            n.callers
        );
    }
    family(
        &mut out,
        fmt,
        SAMPLES,
        "counter",
        "Round trips read, by source.",
    );
    for (source, n) in &f.samples {
        let _ = writeln!(
            out,
            "{SAMPLES}_total{{target=\"{target}\",source=\"{source}\"}} {n}"
        );
    }
    family(
        &mut out,
        fmt,
        DROPPED,
        "counter",
        "Round trips or contacts left out, by reason.",
    );
    for (reason, n) in &f.dropped {
        let _ = writeln!(
            out,
            "{DROPPED}_total{{target=\"{target}\",reason=\"{reason}\"}} {n}"
        );
    }
    family(
        &mut out,
        fmt,
        SOURCE_ERRORS,
        "counter",
        "Rounds in which a source could not be read, by source and why.",
    );
    for ((source, kind), n) in &f.source_errors {
        let _ = writeln!(
            out,
            "{SOURCE_ERRORS}_total{{target=\"{target}\",source=\"{source}\",kind=\"{kind}\"}} {n}"
        );
    }
    if let Some(l) = &f.freeswitch {
        render_calls(&mut out, fmt, &target, &f.calls, l);
    }
    rounds_and_end(
        &mut out,
        fmt,
        (f.rounds, "Rounds completed."),
        (
            f.last_round_seconds,
            "How long the last round took, sources read and written.",
        ),
    );
    out
}

/// The `--freeswitch` families: per network, the last round's figures from calls; for the
/// listener, its counters.
fn render_calls(
    out: &mut String,
    fmt: Format,
    target: &str,
    calls: &BTreeMap<String, CallFigures>,
    l: &Listener,
) {
    type Value = fn(&CallFigures) -> Option<f64>;
    let per_network: [(&str, &str, Value); 5] = [
        (
            CALL_ROUND_LATENCY,
            "Median over callers of each caller's median RTCP round trip of the calls that ended in the last round, the sample written as source freeswitch; absent when too few callers.",
            |c| c.round_ms.map(|ms| ms / 1000.0),
        ),
        (
            CALL_CALLERS,
            "Distinct caller addresses with a measured call that ended in the last round.",
            |c| Some(c.callers as f64),
        ),
        (
            CALL_CALLS,
            "Measured calls behind the last round's figures.",
            |c| (c.round_ms.is_some()).then_some(c.calls as f64),
        ),
        (
            CALL_MOS,
            "Median over callers of each caller's median MOS (FreeSWITCH's variable_rtp_audio_in_mos, 1 to 4.5) in the last round; absent when too few callers.",
            |c| c.mos,
        ),
        (
            CALL_LOSS,
            "Median over callers of each caller's median RTCP fraction lost (0 to 1) in the last round; absent when too few callers.",
            |c| c.loss,
        ),
    ];
    for (name, help, value) in per_network {
        family(out, fmt, name, "gauge", help);
        for (net, c) in calls {
            if let Some(v) = value(c) {
                let _ = writeln!(
                    out,
                    "{name}{{target=\"{target}\",network=\"{}\"}} {v}",
                    escape(net)
                );
            }
        }
    }
    let c = &l.counts;
    family(
        out,
        fmt,
        FS_EVENTS,
        "counter",
        "Event Socket events read, by kind; oversized ones are read past.",
    );
    for (kind, n) in [
        ("rtcp", c.rtcp),
        ("video_rtcp", c.video),
        ("hangup", c.hangups),
        ("oversized", c.oversized),
    ] {
        let _ = writeln!(
            out,
            "{FS_EVENTS}_total{{target=\"{target}\",kind=\"{kind}\"}} {n}"
        );
    }
    family(out, fmt, FS_CALLS, "counter", "Calls by what became of them: measured (a round trip and an address), no_rtt, no_caller, evicted (in flight past the cap), dropped (a round's cap).");
    for (outcome, n) in [
        ("measured", c.measured),
        ("no_rtt", c.no_rtt),
        ("no_caller", c.no_caller),
        ("evicted", c.evicted),
        ("dropped", c.done_dropped),
    ] {
        let _ = writeln!(
            out,
            "{FS_CALLS}_total{{target=\"{target}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    family(
        out,
        fmt,
        FS_IN_FLIGHT,
        "gauge",
        "Calls with RTCP reports and no hangup yet.",
    );
    let _ = writeln!(out, "{FS_IN_FLIGHT}{{target=\"{target}\"}} {}", l.in_flight);
    family(
        out,
        fmt,
        FS_CONNECTED,
        "gauge",
        "1 while subscribed to the Event Socket.",
    );
    let _ = writeln!(
        out,
        "{FS_CONNECTED}{{target=\"{target}\"}} {}",
        u8::from(l.connected)
    );
    family(
        out,
        fmt,
        FS_CONNECTS,
        "counter",
        "Event Socket subscriptions made, and connections that ended on broken framing.",
    );
    let _ = writeln!(
        out,
        "{FS_CONNECTS}_total{{target=\"{target}\",result=\"subscribed\"}} {}",
        c.connects
    );
    let _ = writeln!(
        out,
        "{FS_CONNECTS}_total{{target=\"{target}\",result=\"broken_stream\"}} {}",
        c.malformed
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(ms: f64, updated: f64) -> Latency {
        Latency {
            ewma_ms: ms,
            mean_ms: ms,
            samples: 1,
            updated,
            callers: Some(3),
        }
    }

    fn two_rounds() -> Figures {
        let mut f = Figures::new("sip1.example.com");
        let known = Some(vec![
            "192.0.2.0/24".to_owned(),
            "198.51.100.0/24".to_owned(),
        ]);
        let mut r = Round {
            known: known.clone(),
            ..Round::default()
        };
        r.samples.insert(KEEPALIVE, 40);
        r.samples.insert(TCP, 3);
        r.drop_samples("unknown_network", 2);
        r.drop_samples("stale", 0);
        r.networks.insert(
            "192.0.2.0/24".into(),
            NetworkFigures {
                callers: 4,
                round_ms: Some(22.5),
                stored: Some(latency(23.0, 990.0)),
            },
        );
        f.add_round(r, 0.5);
        // Second round: 192.0.2.0/24 has one caller left, nothing written; its stored
        // reading stays and ages. The keepalive source failed.
        let mut r = Round {
            known,
            ..Round::default()
        };
        r.samples.insert(TCP, 2);
        r.drop_samples("too_few_callers", 2);
        r.errors.push((KEEPALIVE, "timeout"));
        r.networks.insert(
            "192.0.2.0/24".into(),
            NetworkFigures {
                callers: 1,
                ..NetworkFigures::default()
            },
        );
        f.add_round(r, 0.25);
        f
    }

    #[test]
    fn renders_exact_text() {
        let want = r#"# TYPE pdns_ha_target_latency_seconds gauge
# UNIT pdns_ha_target_latency_seconds seconds
# HELP pdns_ha_target_latency_seconds Average round trip to the target from a network (* = the monitor host), by source: the EWMA least-latency ranks by.
pdns_ha_target_latency_seconds{target="sip1.example.com",network="192.0.2.0/24",source="observe"} 0.023
# TYPE pdns_ha_latency_age_seconds gauge
# UNIT pdns_ha_latency_age_seconds seconds
# HELP pdns_ha_latency_age_seconds Seconds since a latency figure was last updated.
pdns_ha_latency_age_seconds{target="sip1.example.com",network="192.0.2.0/24",source="observe"} 10
# TYPE pdns_ha_observe_round_latency_seconds gauge
# UNIT pdns_ha_observe_round_latency_seconds seconds
# HELP pdns_ha_observe_round_latency_seconds Median over callers of each caller's median round trip in the last round, the sample written; absent when too few callers.
# TYPE pdns_ha_observe_callers gauge
# HELP pdns_ha_observe_callers Distinct caller addresses with a round trip in the last round.
pdns_ha_observe_callers{target="sip1.example.com",network="192.0.2.0/24"} 1
# TYPE pdns_ha_observe_samples counter
# HELP pdns_ha_observe_samples Round trips read, by source.
pdns_ha_observe_samples_total{target="sip1.example.com",source="keepalive"} 40
pdns_ha_observe_samples_total{target="sip1.example.com",source="tcp"} 5
# TYPE pdns_ha_observe_dropped_samples counter
# HELP pdns_ha_observe_dropped_samples Round trips or contacts left out, by reason.
pdns_ha_observe_dropped_samples_total{target="sip1.example.com",reason="too_few_callers"} 2
pdns_ha_observe_dropped_samples_total{target="sip1.example.com",reason="unknown_network"} 2
# TYPE pdns_ha_observe_source_errors counter
# HELP pdns_ha_observe_source_errors Rounds in which a source could not be read, by source and why.
pdns_ha_observe_source_errors_total{target="sip1.example.com",source="keepalive",kind="timeout"} 1
# TYPE pdns_ha_rounds counter
# HELP pdns_ha_rounds Rounds completed.
pdns_ha_rounds_total 2
# TYPE pdns_ha_round_duration_seconds gauge
# UNIT pdns_ha_round_duration_seconds seconds
# HELP pdns_ha_round_duration_seconds How long the last round took, sources read and written.
pdns_ha_round_duration_seconds 0.25
# EOF
"#;
        let got = render(&two_rounds(), 1000.0, Format::OpenMetrics);
        assert_eq!(got, want);
    }

    #[test]
    fn a_deleted_network_stops_being_exported() {
        let mut f = two_rounds();
        // A round that could not read ha_networks keeps what is known.
        f.add_round(Round::default(), 0.1);
        assert_eq!(f.networks.len(), 1);
        let r = Round {
            known: Some(vec!["198.51.100.0/24".to_owned()]),
            ..Round::default()
        };
        f.add_round(r, 0.1);
        assert!(f.networks.is_empty());
        assert!(!render(&f, 1000.0, Format::PrometheusText).contains("network="));
    }

    #[test]
    fn freeswitch_families_render_exactly() {
        let mut f = Figures::new("media1.example.com");
        let mut r = Round::default();
        r.calls.insert(
            "192.0.2.0/24".into(),
            CallFigures {
                callers: 3,
                calls: 7,
                round_ms: Some(42.5),
                mos: Some(4.49),
                loss: Some(0.0125),
                stored: Some(latency(40.0, 995.0)),
            },
        );
        // Too few callers: only the count.
        r.calls.insert(
            "198.51.100.0/24".into(),
            CallFigures {
                callers: 1,
                ..CallFigures::default()
            },
        );
        let mut counts = Counts {
            rtcp: 120,
            hangups: 9,
            measured: 8,
            no_rtt: 1,
            connects: 2,
            ..Default::default()
        };
        counts.video = 4;
        r.freeswitch = Some(Listener {
            counts,
            in_flight: 11,
            connected: true,
        });
        f.add_round(r, 0.1);
        let got = render(&f, 1000.0, Format::OpenMetrics);
        for line in [
            r#"pdns_ha_target_latency_seconds{target="media1.example.com",network="192.0.2.0/24",source="freeswitch"} 0.04"#,
            r#"pdns_ha_latency_age_seconds{target="media1.example.com",network="192.0.2.0/24",source="freeswitch"} 5"#,
        ] {
            assert!(got.contains(&format!("{line}\n")), "{line}\n{got}");
        }
        let start = got
            .find("# TYPE pdns_ha_observe_call_round_latency_seconds")
            .unwrap();
        let end = got.find("# TYPE pdns_ha_rounds counter").unwrap();
        let want = r#"# TYPE pdns_ha_observe_call_round_latency_seconds gauge
# UNIT pdns_ha_observe_call_round_latency_seconds seconds
# HELP pdns_ha_observe_call_round_latency_seconds Median over callers of each caller's median RTCP round trip of the calls that ended in the last round, the sample written as source freeswitch; absent when too few callers.
pdns_ha_observe_call_round_latency_seconds{target="media1.example.com",network="192.0.2.0/24"} 0.0425
# TYPE pdns_ha_observe_call_callers gauge
# HELP pdns_ha_observe_call_callers Distinct caller addresses with a measured call that ended in the last round.
pdns_ha_observe_call_callers{target="media1.example.com",network="192.0.2.0/24"} 3
pdns_ha_observe_call_callers{target="media1.example.com",network="198.51.100.0/24"} 1
# TYPE pdns_ha_observe_call_round_calls gauge
# HELP pdns_ha_observe_call_round_calls Measured calls behind the last round's figures.
pdns_ha_observe_call_round_calls{target="media1.example.com",network="192.0.2.0/24"} 7
# TYPE pdns_ha_observe_call_mos gauge
# HELP pdns_ha_observe_call_mos Median over callers of each caller's median MOS (FreeSWITCH's variable_rtp_audio_in_mos, 1 to 4.5) in the last round; absent when too few callers.
pdns_ha_observe_call_mos{target="media1.example.com",network="192.0.2.0/24"} 4.49
# TYPE pdns_ha_observe_call_loss_ratio gauge
# HELP pdns_ha_observe_call_loss_ratio Median over callers of each caller's median RTCP fraction lost (0 to 1) in the last round; absent when too few callers.
pdns_ha_observe_call_loss_ratio{target="media1.example.com",network="192.0.2.0/24"} 0.0125
# TYPE pdns_ha_observe_freeswitch_events counter
# HELP pdns_ha_observe_freeswitch_events Event Socket events read, by kind; oversized ones are read past.
pdns_ha_observe_freeswitch_events_total{target="media1.example.com",kind="rtcp"} 120
pdns_ha_observe_freeswitch_events_total{target="media1.example.com",kind="video_rtcp"} 4
pdns_ha_observe_freeswitch_events_total{target="media1.example.com",kind="hangup"} 9
pdns_ha_observe_freeswitch_events_total{target="media1.example.com",kind="oversized"} 0
# TYPE pdns_ha_observe_freeswitch_calls counter
# HELP pdns_ha_observe_freeswitch_calls Calls by what became of them: measured (a round trip and an address), no_rtt, no_caller, evicted (in flight past the cap), dropped (a round's cap).
pdns_ha_observe_freeswitch_calls_total{target="media1.example.com",outcome="measured"} 8
pdns_ha_observe_freeswitch_calls_total{target="media1.example.com",outcome="no_rtt"} 1
pdns_ha_observe_freeswitch_calls_total{target="media1.example.com",outcome="no_caller"} 0
pdns_ha_observe_freeswitch_calls_total{target="media1.example.com",outcome="evicted"} 0
pdns_ha_observe_freeswitch_calls_total{target="media1.example.com",outcome="dropped"} 0
# TYPE pdns_ha_observe_freeswitch_calls_in_flight gauge
# HELP pdns_ha_observe_freeswitch_calls_in_flight Calls with RTCP reports and no hangup yet.
pdns_ha_observe_freeswitch_calls_in_flight{target="media1.example.com"} 11
# TYPE pdns_ha_observe_freeswitch_connected gauge
# HELP pdns_ha_observe_freeswitch_connected 1 while subscribed to the Event Socket.
pdns_ha_observe_freeswitch_connected{target="media1.example.com"} 1
# TYPE pdns_ha_observe_freeswitch_connects counter
# HELP pdns_ha_observe_freeswitch_connects Event Socket subscriptions made, and connections that ended on broken framing.
pdns_ha_observe_freeswitch_connects_total{target="media1.example.com",result="subscribed"} 2
pdns_ha_observe_freeswitch_connects_total{target="media1.example.com",result="broken_stream"} 0
"#;
        assert_eq!(&got[start..end], want);
        // A later round without the network's figure keeps the stored reading only.
        f.add_round(Round::default(), 0.1);
        let again = render(&f, 1000.0, Format::OpenMetrics);
        assert!(!again.contains("pdns_ha_observe_call_mos{"), "{again}");
        assert!(again.contains("source=\"freeswitch\"} 0.04"), "{again}");
    }

    #[test]
    fn error_kinds_are_a_fixed_set() {
        assert_eq!(tcp_error(&DiagError::Kernel(libc::EPERM)), "kernel");
        assert_eq!(tcp_error(&DiagError::TooMany), "too_many");
        assert_eq!(
            keepalive_error(&ProbeErrorKind::AuthRejected),
            "auth_rejected"
        );
    }
}
